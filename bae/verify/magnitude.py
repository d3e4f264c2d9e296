"""An exact pre-check for huge numbers: bounds on |x| of a parsed real number, without computing x.

Measured with math-verify 0.9.0 and sympy 1.14 (pure-Python integers, no gmpy2): a power tower such
as 9^{9^{9^{9}}} parses in milliseconds into an unevaluated tree (Pow(9, Pow(9, Pow(9, 9)))), and
math-verify's comparison then evaluates it (safe_sympy_doit, evalf, simplify). It does not end in
MemoryError under the worker's 4 GiB address-space cap: sympy first computes the inner integer
9^(9^9), which fits (150 MB) but would take CPython's int power about an hour (9^(4 x 10^6) takes 2 s
and 9^(1.6 x 10^7) 22 s on the development machine; each 4x in the exponent costs about 10x). So
every such pair used to run to its time limit. The bounds here come from the tree in microseconds.

`provably_unequal` says when math-verify's verify(gold, prediction) cannot return True, by the
values alone: the prediction is a real number of more than HUGE_DIGITS digits (more than a
MAX_ANSWER_CHARS-character answer can write out as digits) and the gold is a number at most a
millionth of it in absolute value, a finite set or tuple of such numbers, an interval between
such numbers (or infinities), a union of such intervals and sets, or an assignment `x = g` of
any of these (math-verify compares a prediction that is no relation with g). math-verify
compares numbers by value (exactly, rounded to 6 decimals, or to 15 significant digits), sets
and tuples element by element or as sets, intervals by their endpoints or as sets, and extracted
strings by equality; none of these can match a single number of more than HUGE_DIGITS digits with
anything that small. So the answer it would give given the time (False) is the answer at once; a
pair outside these cases (a symbolic gold, a prediction holding a symbol, a relation, a
cancellation such as a - a) is left to math-verify and its time limit. Of the shipped gold
answers the pre-check covers all of GSM8K's and AIME's and 461 of MATH500's 500; against a tower,
23 of the other 39 (symbolic and complex answers, `y = 2x + 3`) run to the limit, while matrices
and \text{} answers are quick in math-verify anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sympy

from bae.verify import MAX_ANSWER_CHARS

HUGE_DIGITS = MAX_ANSWER_CHARS  # log10|prediction| above which the pre-check applies
GAP_DIGITS = 6  # the gold is at most 10^-GAP_DIGITS of the prediction in absolute value
CAP = 1e300  # log10 bounds saturate here: a lower bound above CAP is kept as CAP (still a bound)
LOG10_E = math.log10(math.e)


@dataclass(frozen=True)
class Magnitude:
    """A nonzero real number known by its sign and bounds low <= log10|x| <= high, with low in
    [-inf, CAP] and high in [-CAP, inf] (so a sum of lows or of highs is never nan)."""

    sign: int
    low: float
    high: float


def _bounded(sign: int, low: float, high: float) -> Magnitude | None:
    """A Magnitude widened outwards by far more than floating-point rounding; None for nan."""
    if math.isnan(low) or math.isnan(high):
        return None

    def slack(v: float) -> float:
        return 1e-9 * abs(v) + 1e-9 if math.isfinite(v) else 0.0

    return Magnitude(sign, min(low - slack(low), CAP), max(high + slack(high), -CAP))


def _pow10(x: float) -> float:
    if x > 308:
        return math.inf
    if x < -330:
        return 0.0
    return 10.0**x


def _values(m: Magnitude) -> tuple[float, float]:
    """Bounds on the number itself."""
    a, b = _pow10(m.low), _pow10(m.high)
    return (a, b) if m.sign > 0 else (-b, -a)


def _times(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float] | None:
    products = [x * y for x in a for y in b]
    if any(math.isnan(p) for p in products):  # 0 x inf: nothing known
        return None
    return min(products), max(products)


def _log10_factorial(x: float) -> float:
    if math.isinf(x):
        return math.inf
    try:
        return math.lgamma(x + 1) / math.log(10)
    except OverflowError:
        return math.inf


def magnitude(expr) -> Magnitude | None:
    """Sign and log10-bounds of a real number given as an unevaluated sympy tree of integers,
    rationals, floats, pi, E, sums, products, powers, exp and factorials; None for anything else
    (zero, symbols, the imaginary unit, other functions, a complex power) or when the bounds
    cannot tell (a sum whose terms may cancel). Never evaluates a power or a factorial."""
    if isinstance(expr, sympy.Integer):
        if expr == 0:
            return None
        n = int(expr)
        return _bounded(1 if n > 0 else -1, math.log10(abs(n)), math.log10(abs(n)))
    if isinstance(expr, sympy.Rational):
        p, q = int(expr.p), int(expr.q)
        log = math.log10(abs(p)) - math.log10(q)
        return _bounded(1 if p > 0 else -1, log, log)
    if isinstance(expr, sympy.Float):
        f = float(expr)
        if f == 0 or not math.isfinite(f):
            return None
        return _bounded(1 if f > 0 else -1, math.log10(abs(f)), math.log10(abs(f)))
    if expr is sympy.pi or expr is sympy.E:
        log = math.log10(float(expr))
        return _bounded(1, log, log)
    if isinstance(expr, (sympy.Mul, sympy.Add)):
        parts = [magnitude(a) for a in expr.args]
        if any(p is None for p in parts):
            return None
        return _product(parts) if isinstance(expr, sympy.Mul) else _sum(parts)
    if isinstance(expr, sympy.Pow):
        return _power(expr)
    if isinstance(expr, sympy.exp):
        x = magnitude(expr.args[0])
        if x is None:
            return None
        low, high = _values(x)
        return _bounded(1, low * LOG10_E, high * LOG10_E)
    if isinstance(expr, sympy.factorial):
        n = magnitude(expr.args[0])
        if n is None or n.sign < 0:
            return None
        low, high = _values(n)
        if low < 2:  # the gamma function increases from 2 on
            return None
        return _bounded(1, _log10_factorial(low), _log10_factorial(high))
    return None


def _product(parts: list[Magnitude]) -> Magnitude | None:
    return _bounded(math.prod(p.sign for p in parts), sum(p.low for p in parts), sum(p.high for p in parts))


def _sum(parts: list[Magnitude]) -> Magnitude | None:
    lead = max(parts, key=lambda p: p.low)
    others = [p for p in parts if p is not lead]
    # the others together are at most (count) x 10^(largest high): a tenth of the lead at most
    if lead.low > math.log10(len(others)) + max(p.high for p in others) + 1:
        return _bounded(lead.sign, lead.low + math.log10(0.9), lead.high + math.log10(1.1))
    if len({p.sign for p in parts}) == 1:
        return _bounded(lead.sign, lead.low, max(p.high for p in parts) + math.log10(len(parts)))
    return None


def _power(expr: sympy.Pow) -> Magnitude | None:
    base, exponent = magnitude(expr.base), magnitude(expr.exp)
    if base is None or exponent is None:
        return None
    if base.sign > 0:
        sign = 1
    elif isinstance(expr.exp, sympy.Integer):  # a negative base only to an integer: still real
        sign = -1 if int(expr.exp) % 2 else 1
    else:
        return None
    # |b^e| = |b|^e for real e: log10|b^e| = e log10|b|
    log = _times(_values(exponent), (base.low, base.high))
    return None if log is None else _bounded(sign, *log)


def _log10_upper(expr) -> float | None:
    """An upper bound on log10|x| (-inf for zero), or None. Looser than magnitude but defined for
    sums whose terms may cancel, and for zero: all a gold needs."""
    if isinstance(expr, sympy.Number) and expr.is_zero:
        return -math.inf
    if isinstance(expr, (sympy.Add, sympy.Mul)):
        parts = [_log10_upper(a) for a in expr.args]
        if any(p is None for p in parts):
            return None
        if isinstance(expr, sympy.Mul):
            return -math.inf if -math.inf in parts else sum(parts)
        return max(parts) + math.log10(len(parts)) + 1e-9  # |a + b| <= |a| + |b|
    m = magnitude(expr)
    return None if m is None else m.high


def _at_most(expr, ceiling: float) -> bool:
    """Whether a number is provably at most 10^ceiling in absolute value."""
    upper = _log10_upper(expr)
    return upper is not None and upper <= ceiling


def _gold_below(gold, ceiling: float) -> bool:
    if isinstance(gold, sympy.Eq) and isinstance(gold.lhs, sympy.Symbol):
        # an assignment (x = 5): math-verify compares a prediction that is no relation with its
        # right-hand side
        return _gold_below(gold.rhs, ceiling)
    if isinstance(gold, sympy.Interval):
        return all(end in (sympy.oo, -sympy.oo) or _at_most(end, ceiling) for end in (gold.start, gold.end))
    if isinstance(gold, sympy.Union):  # of intervals and finite sets: never a single number
        return all(_gold_below(part, ceiling) for part in gold.args)
    if isinstance(gold, (sympy.FiniteSet, sympy.Tuple)):
        return all(_at_most(element, ceiling) for element in gold.args)
    return _at_most(gold, ceiling)


def provably_unequal(gold_parsed: list, pred_parsed: list) -> bool:
    """Whether math_verify.verify(gold_parsed, pred_parsed) (strict, as bae.verify.worker calls
    it) cannot be True because the prediction is a number too large to match the gold (see the
    module docstring). False means "not known": the pair goes to math-verify."""
    try:
        numbers = [p for p in pred_parsed if not isinstance(p, str)]
        texts = {p.strip() for p in pred_parsed if isinstance(p, str)}
        magnitudes = [magnitude(p) for p in numbers]
        if not numbers or any(m is None or m.low <= HUGE_DIGITS for m in magnitudes):
            return False
        ceiling = min(m.low for m in magnitudes) - GAP_DIGITS
        return all(
            g.strip() not in texts if isinstance(g, str) else _gold_below(g, ceiling) for g in gold_parsed
        )
    except RecursionError:  # a tree deeper than the stack: leave it to math-verify
        return False
