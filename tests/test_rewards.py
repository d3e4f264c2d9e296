"""Confidence parsing and scoring rules (the verifiers: test_verify.py)."""

import math

import pytest

import bae.verify
from bae import rewards
from bae.rewards import (
    bce_reward,
    brier_reward,
    exact_match,
    parse_confidence,
    two_attempt_reward,
)


def test_the_verifiers_are_re_exported():
    """bae.tasks and older callers import the verifiers from bae.rewards."""
    assert (rewards.math_equal, rewards.exact_match, rewards.VERIFIERS) == (
        bae.verify.math_equal, bae.verify.exact_match, bae.verify.VERIFIERS)

@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.8", 0.8), (" .25 ", 0.25), ("1", 1.0), ("0", 0.0), ("1.0", 1.0), ("0.80.", 0.8),
        ("80%", 0.8), ("80 %", 0.8), ("80", 0.8), ("100", 1.0), ("0.5%", 0.005), ("1.5", 0.015),
        ("101", None), ("-0.2", None), ("0.8 maybe", None), ("high", None), ("", None), ("3/4", None),
        ("0.2 0.3", None), (None, None), ("1e-3", None), ("nan", None), ("inf", None),
    ],
)
def test_parse_confidence(text, expected):
    got = parse_confidence(text)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("c", [0.0, 1.0])
def test_scoring_rules(q, c):
    assert brier_reward(q, c) == pytest.approx(-((q - c) ** 2))
    eps = rewards.BCE_EPS
    qc = min(max(q, eps), 1 - eps)
    assert bce_reward(q, c) == pytest.approx(c * math.log(qc) + (1 - c) * math.log(1 - qc))
    assert math.isfinite(bce_reward(q, c))


def test_scoring_rules_are_proper():
    """Expected score under belief p is maximised by reporting q = p (Brier and log are proper)."""
    grid = [i / 100 for i in range(101)]
    for p in (0.1, 0.3, 0.7):
        for rule in (brier_reward, bce_reward):
            best = max(grid, key=lambda q: p * rule(q, 1.0) + (1 - p) * rule(q, 0.0))
            assert best == pytest.approx(p)


def test_two_attempt_reward():
    same = exact_match
    assert two_attempt_reward(True, "5", "5", same) == 1.0
    assert two_attempt_reward(False, "6", "5", same) == 0.1
    assert two_attempt_reward(False, "5", "5", same) == 0.0
    assert two_attempt_reward(False, "05", "5", same) == 0.0  # the same answer, written differently
    assert two_attempt_reward(False, None, "5", same) == 0.0
    assert two_attempt_reward(False, "6", None, same) == 0.1


def test_refusing_beats_answering_under_a_scalar_log_score_only():
    """Why RLCR with a BCE term collapses (paper 5.4) and RLCR with Brier does not. For a problem
    solved with probability p, answering with the expectation-maximising confidence q = p earns
    E[c + BCE(p, c)] = p - H(p) (H in nats) and E[c - (p - c)^2] = p^2; refusing (c = 0 surely)
    with q = 0 earns log(1 - eps) under BCE and 0 under Brier. So refusing wins under BCE exactly
    for p below the root of p = H(p), 0.648, and never wins under Brier."""

    def expected(rule, p, q):
        return p * (1 + rule(q, 1.0)) + (1 - p) * rule(q, 0.0)

    refuse_bce, refuse_brier = bce_reward(0.0, 0.0), brier_reward(0.0, 0.0)
    assert refuse_bce == pytest.approx(0.0, abs=2e-4) and refuse_brier == 0.0
    for i in range(1, 100):
        p = i / 100
        grid = [j / 100 for j in range(101)]
        best_bce = max(expected(bce_reward, p, q) for q in grid)
        best_brier = max(expected(brier_reward, p, q) for q in grid)
        entropy = -p * math.log(p) - (1 - p) * math.log(1 - p)
        assert best_bce == pytest.approx(p - entropy, abs=1e-9)  # attained at q = p on the grid
        assert best_brier == pytest.approx(p * p, abs=1e-12)
        assert (best_bce < refuse_bce) == (p < 0.6484)
        assert best_brier >= refuse_brier
