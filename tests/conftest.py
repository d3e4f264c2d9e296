"""Shared fixtures: a short warm start of the tiny policy, built once per test session."""

import pytest


@pytest.fixture(scope="session")
def warm_policy(tmp_path_factory):
    """A tiny policy after a short supervised warm start on arithmetic (no system prompt, levels 1-2):
    it follows the block format, so RL steps see varied rewards and non-zero advantages."""
    from bae.warmstart import WarmStartConfig, warm_start

    return str(warm_start(WarmStartConfig(examples=2400, max_steps=150, seed=0), tmp_path_factory.mktemp("warm") / "policy"))
