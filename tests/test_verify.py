"""Verifiers (bae.verify): math_equal, exact_match, the worker process."""

import json
import threading
import time
from pathlib import Path

import pytest

from bae import verify
from bae.evaluation.sets import EVAL_SETS
from bae.evaluation.sets import path as eval_set
from bae.verify import exact_match, math_equal


def gold_answers():
    for name in EVAL_SETS:
        with open(eval_set(name)) as f:
            for line in f:
                yield name, json.loads(line)["answer"]


def test_every_real_gold_answer_equals_itself_through_math_verify():
    """The worker's math-verify comparison (not the string fast path) on all 1909 gold answers."""
    failures = [(name, a) for name, a in gold_answers() if not verify._worker.equal(a, a, timeout=20)]
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
    verify._worker.equal("1", "1", timeout=30)  # the worker is up: time the call, not its start
    start = time.perf_counter()
    assert verify._worker.equal(prediction, "1", timeout=limit) is False
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
    verify._worker.equal("1", "1", timeout=30)
    verify._worker._proc.kill()
    verify._worker._proc.wait()
    assert verify._worker.equal("\\frac{1}{2}", "0.5", timeout=30)


@pytest.mark.parametrize(
    "prediction, gold, expected",
    [("19", "19", True), (" 19 ", "19", True), ("007", "7", True), ("+3", "3", True), ("-0", "0", True),
     ("19.0", "19", False), ("20", "19", False), ("", "19", False), ("nineteen", "19", False)],
)
def test_exact_match(prediction, gold, expected):
    assert exact_match(prediction, gold) is expected


def test_no_eval_of_model_text_in_the_sources():
    """The verifier never reaches sympy's parse_expr / sympify, nor eval or exec."""
    sources = sorted(Path(verify.__file__).parent.glob("*.py"))
    assert {p.name for p in sources} >= {"__init__.py", "worker.py"}
    for source in sources:
        text = source.read_text()
        for forbidden in ("eval(", "exec(", "sympify(", "parse_expr(", "ExprExtractionConfig("):
            assert forbidden not in text, (source.name, forbidden)
