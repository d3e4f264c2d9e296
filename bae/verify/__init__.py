"""Verifiers: whether a model's final answer equals the gold answer (paper Section 4.1).

    math_equal(prediction, gold, timeout=5.0) -> bool               one pair, by math-verify
    math_equal_many(pairs, *, timeout=5.0, workers=None) -> list    a batch, over worker processes
    exact_match(prediction, gold) -> bool                           stripped text; integers by value
    verify_many(verifier, pairs, *, timeout=5.0, workers=None)      a batch for any verifier
    start_workers(workers=None)                                     start the processes ahead
    stop_workers()                                                  end them (the next batch restarts)
    VERIFIERS = {"math": math_equal, "exact": exact_match}

Task scoring should call `verify_many(task.verify, [(answer, gold), ...])` once per batch: with
math_equal its pairs run in parallel, each under its own time limit.

Model text is data: it is never evaluated as code. math_equal parses with math-verify's LaTeX
extractor only (its plain-expression extractor calls sympy's parse_expr, which evaluates Python),
in worker processes (bae.verify.worker) that are killed when a pair runs past its time limit, so
the limit holds in any thread and a hostile input (a power tower, a 100 KB string) costs at most
`timeout`, in one worker while the others go on; most power towers cost nothing, answered by an
exact pre-check (bae.verify.magnitude) instead of the limit.

Workers: a batch runs on `workers` processes (default: the BAE_VERIFY_WORKERS environment
variable, else one per core this process may use; see bae.verify.pool.default_workers). Several
training processes on one machine each start their own, so set BAE_VERIFY_WORKERS to share the
cores. Processes start on first use (about a second each; start_workers starts them ahead, e.g.
while a trainer sets up), are kept between batches and end at exit.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Callable, Iterable

from bae.verify.pool import default_workers, shared_pool

DEFAULT_TIMEOUT = 5.0
MAX_ANSWER_CHARS = 1000  # longer answers are not parsed: no real final answer is that long
CACHE_SIZE = 65536  # pairs whose worker result is remembered


def _normalise(answer: str) -> str:
    """Whitespace-free text with an outer \\boxed{...} and $...$ removed (for the fast path)."""
    s = re.sub(r"\s+", "", answer)
    s = s.strip("$")
    m = re.fullmatch(r"\\boxed\{(.*)\}", s)
    return m.group(1) if m else s


def _decided_without_worker(prediction, gold) -> bool | None:
    """The answer when no comparison is needed (non-strings, empty, the same text up to whitespace,
    $...$ and an outer \\boxed{}, or too long to parse); None otherwise."""
    if not isinstance(prediction, str) or not isinstance(gold, str):
        return False
    if not prediction.strip() or not gold.strip():
        return False
    if _normalise(prediction) == _normalise(gold):
        return True
    if len(prediction) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    return None


class _Cache:
    """Least-recently-used results of worker comparisons, by (prediction, gold, timeout): a pair
    that ran past its limit may finish under a longer one. Thread-safe."""

    def __init__(self, size: int):
        self._size = size
        self._results: OrderedDict[tuple[str, str, float], bool] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, float]) -> bool | None:
        with self._lock:
            if key not in self._results:
                return None
            self._results.move_to_end(key)
            return self._results[key]

    def put(self, key: tuple[str, str, float], result: bool) -> None:
        with self._lock:
            self._results[key] = result
            self._results.move_to_end(key)
            while len(self._results) > self._size:
                self._results.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._results.clear()


_cache = _Cache(CACHE_SIZE)


def clear_cache() -> None:
    """Forget every remembered result (for benchmarks and tests)."""
    _cache.clear()


def start_workers(workers: int | None = None) -> None:
    """Start `workers` worker processes (default: default_workers()) now, in parallel, so that
    the first batch does not wait for them."""
    shared_pool().start(default_workers() if workers is None else workers)


def stop_workers() -> None:
    """End the worker processes (each holds sympy and math-verify, a few hundred MB; one lent to
    a running batch ends when that batch is done); the next batch starts new ones."""
    shared_pool().stop()


def math_equal_many(
    pairs: Iterable[tuple[str, str]], *, timeout: float = DEFAULT_TIMEOUT, workers: int | None = None
) -> list[bool]:
    """math_equal of every (prediction, gold) pair, in order; thread-safe, from any thread.

    Pairs decided without a comparison (see math_equal) and pairs remembered from earlier calls
    are answered at once; the other distinct pairs, each sent once however often it repeats, are
    spread over `workers` worker processes (default: default_workers()), each pair under its own
    hard limit of `timeout` seconds. A pair past its limit is False, its worker is killed and
    replaced, and the other pairs go on in the other workers, so a batch with h hostile pairs
    over W workers costs about (honest work) / W + (h / W) x (timeout + a replacement's start,
    about a second) at most; the worker's exact pre-check (bae.verify.magnitude) answers most
    power towers at once instead. Results are remembered
    (CACHE_SIZE pairs), timed-out ones too, keyed with `timeout`. Two threads verifying the same
    new pair at the same moment may both compare it. ValueError for `timeout` <= 0 or `workers` < 1.
    """
    if not timeout > 0 or (workers is not None and workers < 1):
        raise ValueError(f"expected timeout > 0 and workers >= 1, got timeout={timeout}, workers={workers}")
    pairs = list(pairs)
    results: list[bool | None] = [None] * len(pairs)
    pending: dict[tuple[str, str], list[int]] = {}
    for i, (prediction, gold) in enumerate(pairs):
        results[i] = _decided_without_worker(prediction, gold)
        if results[i] is None:
            results[i] = _cache.get((prediction, gold, timeout))
        if results[i] is None:
            pending.setdefault((prediction, gold), []).append(i)
    if pending:
        workers = default_workers() if workers is None else workers
        answers = shared_pool().map(list(pending), timeout=timeout, workers=workers)
        for (pair, indices), answer in zip(pending.items(), answers, strict=True):
            _cache.put((*pair, timeout), answer)
            for i in indices:
                results[i] = answer
    return results


def math_equal(prediction: str, gold: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether `prediction` is mathematically equal to `gold`, by math-verify (paper 4.1).

    The prediction is wrapped in \\boxed{} unless it already holds one, the gold in $...$; both are
    parsed as LaTeX and compared by math_verify.verify. True at once for the same text up to
    whitespace, $...$ and an outer \\boxed{}. False for a non-string, an empty or unparseable
    prediction, one longer than MAX_ANSWER_CHARS, or a comparison that runs past `timeout`
    seconds. Thread-safe and remembered, as for math_equal_many (this is a batch of one).
    """
    return math_equal_many([(prediction, gold)], timeout=timeout)[0]


def exact_match(prediction: str, gold: str) -> bool:
    """Exact-match verifier: equal after stripping whitespace; integers compare by value
    ("007" == "7", "+3" == "3", "-0" == "0")."""
    if not isinstance(prediction, str) or not isinstance(gold, str):
        return False
    p, g = prediction.strip(), gold.strip()
    if not p:
        return False
    integer = re.compile(r"[+-]?\d{1,100}")
    if integer.fullmatch(p) and integer.fullmatch(g):
        return int(p) == int(g)
    return p == g


VERIFIERS = {"math": math_equal, "exact": exact_match}

_BATCH_FORMS = {math_equal: math_equal_many}


def verify_many(
    verifier: Callable[[str, str], bool] | str,
    pairs: Iterable[tuple[str, str]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    workers: int | None = None,
) -> list[bool]:
    """`verifier(prediction, gold)` of every pair, in order, as bools, in one call per batch.

    `verifier` is a callable or a VERIFIERS name. math_equal runs as math_equal_many (parallel,
    `timeout` and `workers` as there); any other verifier, exact_match included, runs pair by pair
    in this thread and ignores `timeout` and `workers`.
    """
    if isinstance(verifier, str):
        if verifier not in VERIFIERS:
            raise ValueError(f"unknown verifier {verifier!r}; known: {', '.join(VERIFIERS)}")
        verifier = VERIFIERS[verifier]
    if verifier in _BATCH_FORMS:
        return _BATCH_FORMS[verifier](pairs, timeout=timeout, workers=workers)
    return [bool(verifier(prediction, gold)) for prediction, gold in pairs]
