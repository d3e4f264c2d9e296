"""Verifiers (bae.verify): math_equal and its batch form over the worker pool, exact_match, the
worker process and its exact pre-check for huge numbers.

Timings are asserted only as generous bounds (the machines are shared), or as lower bounds where a
test must show that a pair really ran to its time limit.
"""

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import sympy
from math_verify import LatexExtractionConfig, parse
from math_verify import verify as math_verify

from bae import verify
from bae.evaluation.sets import EVAL_SETS
from bae.evaluation.sets import path as eval_set
from bae.verify import exact_match, math_equal, math_equal_many, verify_many
from bae.verify.magnitude import HUGE_DIGITS, magnitude, provably_unequal
from bae.verify.pool import WORKERS_ENV, Worker, default_workers, shared_pool

# The gold is symbolic, so the pre-check leaves the pair to math-verify, which evaluates the tower
# until the time limit: the slow pair of these tests.
SLOW_TOWER = "9^{9^{9^{9}}}"
SLOW_GOLD = "x + 1"


def gold_answers():
    for name in EVAL_SETS:
        with open(eval_set(name)) as f:
            for line in f:
                yield name, json.loads(line)["answer"]


def math500_pairs(rows: int) -> list[tuple[str, str]]:
    """Distinct real pairs none of which the string fast path decides: each gold of the first
    `rows` MATH500 rows against its rewritings (\\dfrac for \\frac; n.0 and x = n for an integer
    n), the last \\boxed{} of its solution, and the next row's gold (mostly different)."""
    with open(eval_set("math500")) as f:
        data = [json.loads(line) for line in f][: rows + 1]
    pairs = []
    for row, following in zip(data, data[1:]):
        gold = row["answer"]
        boxed = row["solution"][row["solution"].rfind("\\boxed{") + len("\\boxed{"):]
        depth, end = 1, 0
        while depth and end < len(boxed):
            depth += {"{": 1, "}": -1}.get(boxed[end], 0)
            end += 1
        rewritings = [gold.replace("\\frac", "\\dfrac")]
        if gold.isdigit():
            rewritings += [gold + ".0", "x = " + gold]
        for prediction in (*rewritings, boxed[: end - 1], following["answer"]):
            if verify._decided_without_worker(prediction, gold) is None:
                pairs.append((prediction, gold))
    return list(dict.fromkeys(pairs))


@pytest.fixture
def calls(monkeypatch):
    """Every pair a worker is given (prediction, gold, worker), and the most given at once."""
    record = {"pairs": [], "running": 0, "most_at_once": 0}
    lock = threading.Lock()
    original = Worker.equal

    def spy(self, prediction, gold, timeout):
        with lock:
            record["pairs"].append((prediction, gold, id(self)))
            record["running"] += 1
            record["most_at_once"] = max(record["most_at_once"], record["running"])
        try:
            return original(self, prediction, gold, timeout)
        finally:
            with lock:
                record["running"] -= 1

    monkeypatch.setattr(Worker, "equal", spy)
    verify.clear_cache()
    return record


# ---------------------------------------------------------------------------------------------
# math_equal on single pairs


def test_every_real_gold_answer_equals_itself_through_math_verify():
    """The workers' math-verify comparison (not the string fast path) on all 1909 gold answers."""
    answers = list(gold_answers())
    results = shared_pool().map([(a, a) for _, a in answers], timeout=20, workers=2)
    assert [a for (_, a), equal in zip(answers, results) if not equal] == []


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
    ("2^{4000}", "4^{2000}"),  # huge but equal: the pre-check must leave it to math-verify
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
    shared_pool().map([("1", "1")], timeout=30, workers=1)  # a worker is up: time the calls, not its start
    start = time.perf_counter()
    assert shared_pool().map([(prediction, "1")], timeout=limit, workers=1) == [False]
    assert math_equal(prediction, "1", timeout=limit) is False
    assert time.perf_counter() - start < 2 * limit + 30  # slack for worker restarts on a loaded machine; a tower runs for hours
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


def test_the_time_limit_holds_in_a_thread():
    """A pair math-verify cannot finish returns False at its limit from a non-main thread (no
    signals), and it did run to the limit (so the limit, not the pre-check, decided it)."""
    verify.clear_cache()
    math_equal("1", "2")  # a worker is up
    limit, outcome = 2.0, {}

    def check():
        start = time.perf_counter()
        outcome["result"] = math_equal(SLOW_TOWER, SLOW_GOLD, timeout=limit)
        outcome["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=check)
    thread.start()
    thread.join(timeout=120)
    assert outcome["result"] is False
    assert limit <= outcome["seconds"] < limit + 30


# ---------------------------------------------------------------------------------------------
# math_equal_many and the pool


def test_a_batch_gives_each_pair_the_answer_math_equal_gives_it():
    """Real pairs, repeated and shuffled, over two workers: each gets its own answer back."""
    pairs = math500_pairs(rows=100)
    reference = [math_equal(p, g) for p, g in pairs]
    assert 0.3 < sum(reference) / len(pairs) < 0.7  # an answer put on the wrong pair would show
    verify.clear_cache()
    order = list(range(len(pairs))) * 2
    random.Random(0).shuffle(order)
    batch = math_equal_many([pairs[i] for i in order], workers=2)
    assert batch == [reference[i] for i in order]


def test_a_hostile_pair_costs_its_limit_while_the_others_go_on(calls):
    """One pair runs to its limit in one worker while the other worker goes on: the batch ends
    within the limit plus slack, with every other answer right, and used both workers."""
    honest = math500_pairs(rows=15)
    reference = [math_equal(p, g) for p, g in honest]
    verify.clear_cache()
    verify.start_workers(2)
    limit = 2.0
    start = time.perf_counter()
    calls["pairs"].clear()
    results = math_equal_many([(SLOW_TOWER, SLOW_GOLD), *honest], timeout=limit, workers=2)
    seconds = time.perf_counter() - start
    assert results == [False, *reference]
    assert limit <= seconds < limit + 30
    assert len({worker for *_, worker in calls["pairs"]}) == 2


def test_a_covered_tower_is_answered_by_the_pre_check_not_the_limit():
    """Without the pre-check this pair would run its whole 60 s limit."""
    shared_pool().map([("1", "1")], timeout=30, workers=1)
    start = time.perf_counter()
    assert shared_pool().map([("9^{9^{9^{9^{9}}}}", "\\frac{3}{4}")], timeout=60, workers=1) == [False]
    assert time.perf_counter() - start < 30


def test_a_worker_killed_while_idle_is_replaced():
    pairs = math500_pairs(rows=30)
    reference = [math_equal(p, g) for p, g in pairs]
    verify.start_workers(2)
    pids = shared_pool().pids()
    assert len(pids) >= 2
    os.kill(pids[0], signal.SIGKILL)
    verify.clear_cache()
    assert math_equal_many(pairs, workers=len(pids)) == reference
    assert pids[0] not in shared_pool().pids()


def test_a_worker_killed_during_a_batch_changes_no_answer(monkeypatch):
    """The pair its worker was given when killed is sent again to a replacement."""
    pairs = math500_pairs(rows=200)
    reference = [math_equal(p, g) for p, g in pairs]
    verify.clear_cache()
    original, done, killed = Worker.equal, [], []
    lock = threading.Lock()

    def equal_then_kill_the_other(self, prediction, gold, timeout):
        result = original(self, prediction, gold, timeout)
        with lock:
            done.append(self)
            others = [worker for worker in done if worker is not self]
            # once both workers answer, well inside the batch, kill the other one from outside
            if not killed and others and len(done) >= 10 and len(done) < len(pairs) - 30:
                killed.append((others[0], others[0].pid))
                os.kill(others[0].pid, signal.SIGKILL)
        return result

    monkeypatch.setattr(Worker, "equal", equal_then_kill_the_other)
    assert math_equal_many(pairs, workers=2) == reference
    [(victim, pid)] = killed
    assert victim.pid not in (None, pid)  # replaced, and used again


@pytest.mark.parametrize("workers", [2, 3])
def test_the_worker_count_is_honoured(calls, workers):
    """workers + 1 pairs that each hold a worker for its whole limit: exactly `workers` at once."""
    towers = [(f"{d}^{{9^{{9^{{9}}}}}}", SLOW_GOLD) for d in range(3, 3 + workers + 1)]
    assert math_equal_many(towers, timeout=1.0, workers=workers) == [False] * len(towers)
    assert calls["most_at_once"] == workers


def test_the_environment_sets_the_default_worker_count(calls, monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "3")
    towers = [(f"{d}^{{9^{{9^{{9}}}}}}", SLOW_GOLD) for d in range(3, 7)]
    assert math_equal_many(towers, timeout=1.0) == [False] * 4
    assert calls["most_at_once"] == 3


def test_start_workers_starts_them_ahead(calls):
    verify.start_workers(3)
    pids = shared_pool().pids()
    assert len(pids) >= 3 and calls["pairs"] == []
    for pid in pids:
        os.kill(pid, 0)  # running
    math_equal_many([(f"\\frac{{{i}}}{{3}}", f"{i / 3:.6f}") for i in range(1, 10)], workers=3)
    assert set(shared_pool().pids()) == set(pids)  # the batch started none


def test_stop_workers_ends_them_and_the_next_batch_starts_new_ones():
    verify.start_workers(2)
    old = shared_pool().pids()
    verify.stop_workers()
    assert shared_pool().pids() == []
    for pid in old:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert math_equal_many([("\\dfrac{5}{7}", "\\frac{10}{14}")], timeout=30) == [True]
    assert shared_pool().pids() and not set(shared_pool().pids()) & set(old)


def test_default_workers(monkeypatch):
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert default_workers() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(WORKERS_ENV, "5")
    assert default_workers() == 5
    for bad in ("0", "-1", "two", ""):
        monkeypatch.setenv(WORKERS_ENV, bad)
        with pytest.raises(ValueError, match=WORKERS_ENV):
            default_workers()
    monkeypatch.delenv(WORKERS_ENV)
    for options in ({"workers": 0}, {"timeout": 0}, {"timeout": -1.0}, {"timeout": float("nan")}):
        with pytest.raises(ValueError, match="expected timeout > 0 and workers >= 1"):
            math_equal_many([("1", "1")], **options)  # even when no pair needs a worker


def test_duplicates_and_remembered_pairs_are_not_sent_to_workers(calls):
    a, b, c = ("\\dfrac{2}{3}", "\\frac{2}{3}"), ("0.25", "\\frac{1}{3}"), ("2\\sqrt{2}", "\\sqrt{8}")
    fast = ("\\boxed{5}", " 5 ")  # the same text: decided without a worker
    assert math_equal_many([a, a, b, fast, a], workers=2) == [True, True, False, True, True]
    assert sorted(pair[:2] for pair in calls["pairs"]) == sorted([a, b])
    calls["pairs"].clear()
    assert math_equal_many([b, a, c], workers=2) == [False, True, True]
    assert [pair[:2] for pair in calls["pairs"]] == [c]
    calls["pairs"].clear()
    assert math_equal(*c) is True and calls["pairs"] == []


def test_verify_many_batches_any_verifier(calls):
    pairs = [("007", "7"), ("\\frac{1}{2}", "0.5"), ("8", "9")]
    assert verify_many(exact_match, pairs) == [True, False, False]
    assert verify_many("exact", pairs) == [True, False, False]
    assert calls["pairs"] == []  # exact_match needs no worker
    assert verify_many("math", pairs) == verify_many(math_equal, pairs) == [True, True, False]
    with pytest.raises(ValueError, match="unknown verifier"):
        verify_many("fuzzy", pairs)


def test_a_forked_child_starts_its_own_workers_and_leaves_its_parents_alone():
    """A child must not speak to its parent's workers over the pipes it inherited, nor end them
    when it exits (it inherits the parent's atexit handler that closes the parent's pool)."""
    math_equal_many([("\\frac{6}{8}", "0.75")])
    parent_pool = shared_pool()
    parent_pids = set(parent_pool.pids())
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            result = math_equal("\\frac{9}{12}", "0.75")
            os.write(write_end, json.dumps([result, shared_pool().pids()]).encode())
            shared_pool().close()
            parent_pool.close()  # what the inherited atexit handler does
        finally:
            os._exit(0)
    os.close(write_end)
    result, child_pids = json.loads(os.read(read_end, 4096))
    os.waitpid(child, 0)
    assert result is True
    assert child_pids and not set(child_pids) & parent_pids
    assert set(shared_pool().pids()) == parent_pids
    for pid in parent_pids:
        os.kill(pid, 0)  # still running
    verify.clear_cache()
    assert math_equal_many([("\\frac{6}{8}", "0.75")]) == [True]
    assert set(shared_pool().pids()) == parent_pids


# ---------------------------------------------------------------------------------------------
# The pre-check for huge numbers (bae.verify.magnitude)


def parsed(latex: str) -> list:
    return parse("$" + latex + "$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)


@pytest.mark.parametrize(
    "latex",
    ["2^{100}", "3^{3^{3}}", "\\left(\\frac{7}{9}\\right)^{40}", "(-2)^{11}", "10! + 3", "e^{20}",
     "\\pi^{12}", "2^{100} - 3^{50}", "\\sqrt{8}", "1.5^{300}", "-\\frac{5}{3} \\cdot 2^{-30}",
     "(4!)! - 10^{20}", "0.001"],
)
def test_magnitude_bounds_hold_the_true_value(latex):
    """On numbers small enough to compute: low <= log10|x| <= high, and the bounds are tight."""
    expr = parsed(latex)[0]
    value = expr.doit()
    true_log = float(sympy.log(abs(value), 10).evalf(30))
    m = magnitude(expr)
    assert m is not None and m.sign == (1 if value > 0 else -1)
    assert m.low <= true_log <= m.high
    assert m.high - m.low < 0.1 + 1e-6 * abs(true_log)


@pytest.mark.parametrize("latex", ["x + 1", "2 - 2", "0 \\cdot 9^{9^{9}}", "9i", "2^{9^{9}} - 2^{9^{9}}",
                                    "(-2)^{\\frac{1}{3}}", "10\\%", "\\sin 3"])
def test_magnitude_is_unknown_where_it_cannot_be_proved(latex):
    assert magnitude(parsed(latex)[0]) is None


COMPUTABLE_DECIDED = [  # big enough for the pre-check, small enough for math-verify to finish
    ("2^{4000}", "1"), ("7^{7^{4}}", "(1, 2)"), ("3^{3^{7}}", "[0, 5]"), ("(500)!", "\\{1, 2\\}"),
    ("10^{1010}", "-\\frac{\\pi}{6}"), ("3 \\cdot 2^{5000} + 7", "\\left(-\\infty, 2\\right]"),
    ("2^{4000}", "x = 5"), ("7^{7^{4}}", "x \\in [-2,7]"), ("3^{3^{7}}", "1 \\pm \\sqrt{19}"),
    ("10^{1010}", "(0,9) \\cup (9,36)"), ("2^{4000}", "\\{1\\pm\\sqrt{5},-2\\}"), ("5^{5^{5}}", "(0, 3)"),
]


@pytest.mark.parametrize("prediction, gold", COMPUTABLE_DECIDED)
def test_the_pre_check_agrees_with_math_verify_where_math_verify_finishes(prediction, gold):
    assert provably_unequal(parsed(gold), parsed(prediction))
    assert math_verify(parsed(gold), parsed(prediction), timeout_seconds=None) is False


@pytest.mark.parametrize(
    "prediction, gold",
    [(SLOW_TOWER, SLOW_GOLD),  # a symbolic gold
     ("3^{2 \\cdot 9^{9^{9}}}", SLOW_TOWER),  # a huge gold, and equal
     ("9^{9^{9^{9}}} - 9^{9^{9^{9}}} + 1", "1"),  # cancellation: it is 1
     ("0 \\cdot 9^{9^{9^{9}}}", "0"),
     ("2^{4000}", "4^{2000}"),  # equal
     ("2^{4000}", "x = 4^{2000}"),  # equal to the right-hand side
     (SLOW_TOWER, "y = 2x + 3"),
     ("10^{999}", "1"),  # not more than HUGE_DIGITS digits
     ("x = 9^{9^{9^{9}}}", "5"),  # a relation
     ("\\{9^{9^{9^{9}}}\\}", "5")],  # a set
)
def test_the_pre_check_decides_nothing_it_cannot_prove(prediction, gold):
    assert not provably_unequal(parsed(gold), parsed(prediction))


def test_the_pre_check_covers_the_towers_of_the_issue():
    assert HUGE_DIGITS == verify.MAX_ANSWER_CHARS
    for tower in ["9^{9^{9^{9^{9}}}}", "9^{9^{9^{9}}}", "10^{10^{10^{10}}}", "2^{2^{2^{2^{2^{2}}}}}",
                  "((9!)!)!", "e^{e^{e^{e^{e}}}}"]:
        for gold in ["1", "\\frac{3}{4}", "3\\sqrt{13}", "(6,31,-1)", "(2,\\infty)", "1.25"]:
            assert provably_unequal(parsed(gold), parsed(tower)), (tower, gold)


# ---------------------------------------------------------------------------------------------


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
    assert {p.name for p in sources} >= {"__init__.py", "worker.py", "pool.py", "magnitude.py"}
    for source in sources:
        text = source.read_text()
        for forbidden in ("eval(", "exec(", "sympify(", "parse_expr(", "ExprExtractionConfig("):
            assert forbidden not in text, (source.name, forbidden)
