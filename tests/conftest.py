"""Shared fixtures: a short warm start of the tiny policy, built once per test session."""

import pytest


@pytest.fixture(scope="session")
def warm_policy(tmp_path_factory):
    """A tiny policy after a short supervised warm start on arithmetic (no system prompt, levels 1-2):
    it follows the block format, so RL steps see varied rewards and non-zero advantages."""
    from bae.embedded.warmstart import WarmStartConfig, warm_start

    return str(warm_start(WarmStartConfig(examples=2400, max_steps=150, seed=0), tmp_path_factory.mktemp("warm") / "policy"))


@pytest.fixture(scope="session")
def two_attempt_policy(tmp_path_factory):
    """The same short warm start on the two-attempt format of arithmetic (task arithmetic_two_attempt,
    no system prompt, levels 1-2): an attempt, then a check that fixes some errors and breaks a few."""
    from bae.embedded.warmstart import WarmStartConfig, warm_start

    config = WarmStartConfig(task="arithmetic_two_attempt", examples=2400, max_steps=150, seed=0)
    return str(warm_start(config, tmp_path_factory.mktemp("warm_two") / "policy"))
