"""Verifiers, confidence parsing and scoring rules."""

import json
import math
import os
import threading
import time
from pathlib import Path

import pytest

from bae import rewards
from bae.evaluation.sets import EVAL_SETS
from bae.evaluation.sets import path as eval_set
from bae.rewards import (
    bce_reward,
    brier_reward,
    exact_match,
    math_equal,
    parse_confidence,
    rlcr_reward,
    two_attempt_reward,
)

def gold_answers():
    for name in EVAL_SETS:
        with open(eval_set(name)) as f:
            for line in f:
                yield name, json.loads(line)["answer"]


def test_every_real_gold_answer_equals_itself_through_math_verify():
    """The worker's math-verify comparison (not the string fast path) on all 1909 gold answers."""
    failures = [(name, a) for name, a in gold_answers() if not rewards._worker.equal(a, a, timeout=20)]
    assert failures == []


EQUIVALENT = [
    ("0.5", "\\frac{1}{2}"),
    ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ("\\frac12", "\\frac{1}{2}"),
    ("\\boxed{\\frac{3}{4}}", "0.75"),
    ("  3 ", "3"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"),
    ("\\left(3, \\frac{\\pi}{2}\\right)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("2\\pi", "2 \\pi"),
    ("1,000", "1000"),
    ("x = 5", "5"),
    ("-\\frac{1}{3}", "-1/3"),
]
DIFFERENT = [("3", "4"), ("0.5", "\\frac{1}{3}"), ("\\frac{\\pi}{2}", "\\pi"), ("", "1"), ("abc", "1")]


@pytest.mark.parametrize("prediction, gold", EQUIVALENT)
def test_equivalent_rewritings_are_equal(prediction, gold):
    assert math_equal(prediction, gold)


@pytest.mark.parametrize("prediction, gold", DIFFERENT)
def test_different_answers_are_not_equal(prediction, gold):
    assert not math_equal(prediction, gold)


@pytest.mark.parametrize(
    "hostile",
    [
        "9" * 100_000,
        "x" * 100_000 + "1",
        "9^{9^{9^{9}}}",
        "10^{10^{10^{10}}}",
        "__import__('os').system('touch {sentinel}')",
        "exec(\"open('{sentinel}', 'w').write('ran')\")",
    ],
)
def test_hostile_predictions_return_within_the_limit_and_run_nothing(hostile, tmp_path):
    sentinel = tmp_path / "ran"
    prediction = hostile.replace("{sentinel}", str(sentinel))
    limit = 2.0
    rewards._worker.equal("1", "1", timeout=30)  # the worker is up: time the call, not its start
    start = time.perf_counter()
    assert rewards._worker.equal(prediction, "1", timeout=limit) is False
    assert math_equal(prediction, "1", timeout=limit) is False
    assert time.perf_counter() - start < 2 * limit + 1.0
    assert not sentinel.exists()


def test_math_equal_works_outside_the_main_thread():
    results = {}

    def check(i):
        results[i] = (math_equal(f"\\frac{{{i}}}{{2}}", str(i / 2)), math_equal(str(i), str(i + 1)))

    threads = [threading.Thread(target=check, args=(i,)) for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {i: (True, False) for i in range(1, 5)}


def test_a_killed_worker_is_restarted():
    rewards._worker.equal("1", "1", timeout=30)
    rewards._worker._proc.kill()
    rewards._worker._proc.wait()
    assert rewards._worker.equal("\\frac{1}{2}", "0.5", timeout=30)


@pytest.mark.parametrize(
    "prediction, gold, expected",
    [("19", "19", True), (" 19 ", "19", True), ("007", "7", True), ("+3", "3", True), ("-0", "0", True),
     ("19.0", "19", False), ("20", "19", False), ("", "19", False), ("nineteen", "19", False)],
)
def test_exact_match(prediction, gold, expected):
    assert exact_match(prediction, gold) is expected


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
    assert rlcr_reward(q, c) == pytest.approx(c - (q - c) ** 2)
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


def test_no_eval_of_model_text_in_the_sources():
    """The verifier never reaches sympy's parse_expr / sympify, nor eval or exec."""
    source = (Path(rewards.__file__).read_text() + Path(rewards.__file__).with_name("_verify.py").read_text())
    for forbidden in ("eval(", "exec(", "sympify(", "parse_expr(", "ExprExtractionConfig("):
        assert forbidden not in source
    assert os.path.exists(Path(rewards.__file__).with_name("_verify.py"))


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
