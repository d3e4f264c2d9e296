"""Verifiers: whether a model's final answer equals the gold answer (paper Section 4.1).

Model text is data: it is never evaluated as code. `math_equal` parses with math-verify's LaTeX
extractor only (its plain-expression extractor calls sympy's parse_expr, which evaluates Python),
in a separate worker process that is killed when a call runs past its time limit, so the limit
holds in any thread and a hostile input (a power tower, a 100 KB string) costs at most `timeout`.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
from functools import lru_cache

DEFAULT_TIMEOUT = 5.0
MAX_ANSWER_CHARS = 1000  # longer answers are not parsed: no real final answer is that long


def _normalise(answer: str) -> str:
    """Whitespace-free text with an outer \\boxed{...} and $...$ removed (for the fast path)."""
    s = re.sub(r"\s+", "", answer)
    s = s.strip("$")
    m = re.fullmatch(r"\\boxed\{(.*)\}", s)
    return m.group(1) if m else s


class _Worker:
    """One long-lived `python -m bae.verify.worker` process, spoken to in JSON lines, killed on time-out."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        atexit.register(self.close)

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bae.verify.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        if self._read(timeout=120.0) != "ready":  # imports sympy and math-verify once
            self.close()
            raise RuntimeError("the math-verify worker did not start")

    def _read(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self._proc.stdout.readline()
        return line.decode().strip() if line else None

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def equal(self, prediction: str, gold: str, timeout: float) -> bool:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            try:
                self._proc.stdin.write((json.dumps([prediction, gold]) + "\n").encode())
                self._proc.stdin.flush()
            except BrokenPipeError:
                self.close()
                return False
            answer = self._read(timeout)
            if answer is None:  # too slow (or crashed): kill it; the next call starts a new one
                self.close()
                return False
            return answer == "1"


_worker = _Worker()


@lru_cache(maxsize=65536)
def math_equal(prediction: str, gold: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether `prediction` is mathematically equal to `gold`, by math-verify (paper 4.1).

    The prediction is wrapped in \\boxed{} unless it already holds one, the gold in $...$; both are
    parsed as LaTeX and compared by math_verify.verify. Returns False for an empty or unparseable
    prediction, one longer than MAX_ANSWER_CHARS, or a call that runs past `timeout` seconds.
    Thread-safe (calls are serialised through one worker process) and cached.
    """
    if not isinstance(prediction, str) or not isinstance(gold, str):
        return False
    if not prediction.strip() or not gold.strip():
        return False
    if _normalise(prediction) == _normalise(gold):
        return True
    if len(prediction) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    return _worker.equal(prediction, gold, timeout)


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
