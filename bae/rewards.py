"""Confidence parsing and scoring rules (paper Section 4.1 and Appendix C).

The verifiers (math_equal, exact_match, VERIFIERS) live in bae.verify and are re-exported here.
"""

from __future__ import annotations

import math
import re

from bae.verify import VERIFIERS, exact_match, math_equal  # noqa: F401  (re-exported)

BCE_EPS = 1e-4

# ---------------------------------------------------------------------------------------------
# Confidence

_CONFIDENCE = re.compile(r"\s*([0-9]{1,3}(?:\.[0-9]*)?|\.[0-9]+)\s*(%?)\s*\.?\s*")


def parse_confidence(text: str | None) -> float | None:
    """A confidence in [0, 1] from the text of a <confidence> field, or None when unparseable.

    Accepted: one decimal number with optional surrounding whitespace and a trailing period,
    e.g. "0.8", ".8", "1", "0.80.". A percent sign divides by 100 ("80%" -> 0.8). A bare number in
    (1, 100] is read as a percentage too ("80" -> 0.8), as the RLCR reference evaluation does.
    Anything else is None: trailing words ("0.8 maybe"), several numbers, negative values,
    values above 100, fractions, words ("high"). A task gives a None confidence the worst reward
    of its block, so an unparseable confidence is never better than a parseable one.
    """
    if not isinstance(text, str):
        return None
    m = _CONFIDENCE.fullmatch(text)
    if not m:
        return None
    value = float(m.group(1))
    if m.group(2) or value > 1.0:
        value /= 100.0
    return value if 0.0 <= value <= 1.0 else None


# ---------------------------------------------------------------------------------------------
# Scoring rules (q: stated confidence in [0, 1], c: correctness in {0, 1})


def brier_reward(q: float, c: float) -> float:
    """Brier reward -(q - c)^2; in [-1, 0]."""
    return -((q - c) ** 2)


def bce_reward(q: float, c: float, eps: float = BCE_EPS) -> float:
    """Log-score reward c log q + (1 - c) log(1 - q), q clipped to [eps, 1 - eps]; in [log eps, 0)."""
    q = min(max(q, eps), 1.0 - eps)
    return c * math.log(q) + (1.0 - c) * math.log(1.0 - q)


def two_attempt_reward(correct: bool, answer: str | None, previous: str | None, same) -> float:
    """Shaped reward of the second attempt (paper Appendix C):
    1 if correct; 0.1 if wrong but a different answer from the first attempt; 0 if wrong and the
    same answer (or no answer). `same(a, b)` is the task's verifier equivalence."""
    if correct:
        return 1.0
    if answer and (not previous or not same(answer, previous)):
        return 0.1
    return 0.0
