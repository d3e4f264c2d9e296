"""Selective prediction: answer only when confident enough (beyond the paper, which does not
evaluate it).

A threshold t accepts the samples with q_i >= t. Its coverage is the accepted fraction and its
risk the error rate among them. Inputs are 1-D (confidence, correct) pairs, validated by
``metrics.as_pairs``.

Rules chosen here:
- Tied confidences are accepted or refused together: the risk-coverage curve has one point per
  distinct confidence value (thresholds in decreasing order).
- AURC integrates that step curve: sum_j (cov_j - cov_{j-1}) risk_j with cov_0 = 0. Without
  ties this is the usual (1/N) sum_{i=1}^{N} risk(top i). Empty input: 0.0.
- Accuracy at coverage x accepts the m = ceil(x N) most confident samples; when the m-th place
  falls inside a group of tied confidences, the tied group fills the remaining places with its
  mean accuracy (the expectation under a uniformly random tie-break), so coverage is exactly m/N.
  Empty input: accuracy 0.0.
- The threshold for a target accuracy is the lowest distinct confidence t whose accepted set has
  accuracy >= target (the most coverage that reaches the target). When no threshold reaches it,
  the answer is to abstain on everything: threshold None, coverage 0.0, accuracy None.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from bae.metrics import as_pairs


def risk_coverage(confidence: Sequence[float], correct: Sequence[float]) -> dict[str, np.ndarray]:
    """Risk-coverage curve: for each distinct confidence t (decreasing), the accepted set
    {i : q_i >= t} gives coverage |accepted| / N and risk = errors / |accepted|.

    Returns ``threshold``, ``coverage`` and ``risk``, each [U] (U distinct confidences; all empty
    for empty input).
    """
    q, c = as_pairs(confidence, correct)
    values, inverse = np.unique(-q, return_inverse=True)  # ascending -q = descending q
    count = np.bincount(inverse, minlength=values.size)  # [U]
    errors = np.bincount(inverse, weights=1.0 - c, minlength=values.size)  # [U]
    accepted = np.cumsum(count)  # [U]
    return {
        "threshold": -values,
        "coverage": accepted / max(q.size, 1),
        "risk": np.cumsum(errors) / np.maximum(accepted, 1),
    }


def aurc(confidence: Sequence[float], correct: Sequence[float]) -> float:
    """Area under the risk-coverage curve: sum_j (cov_j - cov_{j-1}) risk_j (lower is better).

    Without ties in confidence: (1/N) sum_{i=1}^{N} (errors among the i most confident) / i.
    Empty input: 0.0.
    """
    curve = risk_coverage(confidence, correct)
    if curve["coverage"].size == 0:
        return 0.0
    width = np.diff(curve["coverage"], prepend=0.0)  # [U]
    return float(np.sum(width * curve["risk"]))


def accuracy_at_coverage(
    confidence: Sequence[float], correct: Sequence[float], coverage: float
) -> float:
    """Accuracy of the m = ceil(coverage N) most confident samples, 0 < coverage <= 1.

    A tie group straddling place m contributes its mean accuracy for the places it fills (the
    expected accuracy under a random tie-break). Empty input: 0.0. Coverage outside (0, 1]:
    ValueError.
    """
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must lie in (0, 1], got {coverage!r}")
    q, c = as_pairs(confidence, correct)
    if q.size == 0:
        return 0.0
    m = max(1, math.ceil(coverage * q.size - 1e-9))  # 1e-9: 0.07 * 100 is 7.000000000000001
    values, inverse = np.unique(-q, return_inverse=True)
    count = np.bincount(inverse, minlength=values.size).astype(float)  # [U]
    hits = np.bincount(inverse, weights=c, minlength=values.size)  # [U]
    before = np.cumsum(count) - count  # [U] places taken by more confident groups
    places = np.clip(m - before, 0.0, count)  # [U] places each group fills
    return float(np.sum(places * hits / count) / m)


@dataclass(frozen=True)
class Threshold:
    """A confidence threshold chosen for a target accuracy, and what it gives on its data."""

    target: float
    threshold: float | None
    coverage: float
    accuracy: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def threshold_for_accuracy(
    confidence: Sequence[float], correct: Sequence[float], target: float
) -> Threshold:
    """The lowest threshold t (most coverage) with accuracy({i : q_i >= t}) >= target.

    Meant for a validation split; apply it with ``apply_threshold`` to held-out data. No
    threshold reaches the target (or empty input): Threshold(target, None, 0.0, None).
    """
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target accuracy must lie in [0, 1], got {target!r}")
    curve = risk_coverage(confidence, correct)
    reached = np.nonzero(1.0 - curve["risk"] >= target - 1e-12)[0]
    if reached.size == 0:
        return Threshold(target, None, 0.0, None)
    j = reached[-1]
    return Threshold(
        target, float(curve["threshold"][j]), float(curve["coverage"][j]), float(1.0 - curve["risk"][j])
    )


def apply_threshold(
    confidence: Sequence[float], correct: Sequence[float], threshold: float | None
) -> dict[str, float | None]:
    """Coverage and accuracy of {i : q_i >= threshold}; threshold None abstains on everything.
    An empty accepted set has accuracy None."""
    q, c = as_pairs(confidence, correct)
    accepted = np.zeros(q.size, dtype=bool) if threshold is None else q >= threshold
    n = int(accepted.sum())
    return {
        "coverage": n / q.size if q.size else 0.0,
        "accuracy": float(c[accepted].mean()) if n else None,
    }
