"""Accuracy and calibration metrics, with the standard errors of the paper's evaluation protocol.

Inputs are 1-D arrays over (prompt, sample) pairs: ``confidence`` q_i in [0, 1] and ``correct``
c_i in {0, 1}. Every function is pure numpy and checks its input first: unequal lengths, a
confidence outside [0, 1], a non-finite value or a ``correct`` that is not 0/1 raise ValueError
before any computation.

Degenerate inputs have defined, finite results (never an exception, never a silent NaN):

- empty input: accuracy 0.0, Brier 0.0, ECE 0.0, AUROC 0.5;
- only one class present (all correct or all wrong): AUROC 0.5 (a ranking that cannot be judged
  is scored as chance); accuracy, Brier and ECE are computed as usual;
- a standard error of fewer than two values (or of zero resamples) is 0.0.

Missing confidences are not handled here: the caller decides. ``bae.evaluation.report`` counts a
completion whose confidence could not be parsed with confidence 0.0 (it claimed nothing), and
reports how many there were.

Comparing two policies evaluated on the same prompts: ``paired_bootstrap`` resamples the prompts
(the unit that was sampled; a prompt's samples are correlated) and recomputes each metric of both
policies on the same resample, so the standard error of a difference counts only what differs
between them, not the luck of which prompts were drawn.

Departures from the paper: none in the metrics. The Pass@1 standard error is the paper's (over
the (prompt, sample) combinations); ``mean_se`` over per-prompt means is also offered, because the
samples of one prompt are correlated and the per-combination value understates the uncertainty.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

PAPER_BINS = np.arange(12) / 10.0
"""The paper's ECE bin edges: [0, .1), [.1, .2), ..., [.9, 1.0), [1.0, 1.1): 11 fixed-width bins.
Built as k / 10 so that each edge is exactly the float a parsed "0.3" becomes."""


def as_pairs(confidence: Sequence[float], correct: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert (confidence, correct) to float arrays of shape [N].

    Raises ValueError naming the problem: not 1-D, unequal lengths, a non-finite confidence, a
    confidence outside [0, 1], or a ``correct`` value other than 0/1 (booleans are fine).
    """
    q = np.asarray(confidence, dtype=float)
    c = np.asarray(correct, dtype=float)
    if q.ndim != 1 or c.ndim != 1:
        raise ValueError(f"confidence and correct must be 1-D, got shapes {q.shape} and {c.shape}")
    if q.shape != c.shape:
        raise ValueError(f"confidence has {q.size} values but correct has {c.size}")
    if not np.all(np.isfinite(q)):
        raise ValueError(f"confidence must be finite, got {q[~np.isfinite(q)][0]!r}")
    if np.any((q < 0.0) | (q > 1.0)):
        bad = q[(q < 0.0) | (q > 1.0)][0]
        raise ValueError(f"confidence must lie in [0, 1], got {bad!r}")
    if not np.all((c == 0.0) | (c == 1.0)):
        raise ValueError("correct must hold only 0/1 (or booleans)")
    return q, c


def as_correct(correct: Sequence[float]) -> np.ndarray:
    """Validate a 1-D 0/1 (or boolean) array and return it as floats [N]."""
    return as_pairs(np.zeros(len(correct)), correct)[1]


def accuracy(correct: Sequence[float]) -> float:
    """Accuracy (Pass@1 over all (prompt, sample) pairs): mean_i c_i. Empty input: 0.0."""
    c = as_correct(correct)
    return float(c.mean()) if c.size else 0.0


def brier(confidence: Sequence[float], correct: Sequence[float]) -> float:
    """Brier score: (1/N) sum_i (q_i - c_i)^2 (lower is better). Empty input: 0.0.

    Equals sklearn.metrics.brier_score_loss(correct, confidence).
    """
    q, c = as_pairs(confidence, correct)
    return float(np.mean((q - c) ** 2)) if q.size else 0.0


def auroc(confidence: Sequence[float], correct: Sequence[float]) -> float:
    """Area under the ROC curve of confidence as a score for correctness.

    AUROC = P(q_pos > q_neg) + 0.5 P(q_pos = q_neg), computed by the Mann-Whitney statistic with
    average ranks for ties: U = sum_{i: c_i=1} rank_i - P(P+1)/2, AUROC = U / (P N_neg), where P
    and N_neg count correct and wrong samples. Equals sklearn.metrics.roc_auc_score(correct,
    confidence). Only one class present (including empty input): 0.5.
    """
    q, c = as_pairs(confidence, correct)
    n_pos = int(c.sum())
    n_neg = q.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    _, inverse, counts = np.unique(q, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # [U] 1-based mean rank of each value
    ranks = average_rank[inverse]  # [N]
    u = ranks[c == 1.0].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _bin_index(q: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each confidence: bins are [e_j, e_{j+1}), the last one closed on the right."""
    index = np.searchsorted(edges, q, side="right") - 1  # [N]
    index[q == edges[-1]] = edges.size - 2
    outside = (index < 0) | (index > edges.size - 2)
    if np.any(outside):
        raise ValueError(
            f"confidence {q[outside][0]!r} lies outside the bins [{edges[0]}, {edges[-1]}]"
        )
    return index


def _edges(bins: Sequence[float] | None) -> np.ndarray:
    edges = PAPER_BINS if bins is None else np.asarray(bins, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError(f"bins must be at least two strictly increasing edges, got {bins!r}")
    return edges


def reliability(
    confidence: Sequence[float], correct: Sequence[float], bins: Sequence[float] | None = None
) -> dict[str, np.ndarray]:
    """Per-bin statistics of a reliability diagram.

    Returns ``edges`` [B+1], ``count`` [B], ``confidence`` [B] (mean q in the bin) and
    ``accuracy`` [B] (mean c in the bin); the means of an empty bin are 0.0. Bins are
    [e_j, e_{j+1}) with the last one closed on the right; default edges ``PAPER_BINS``.
    """
    q, c = as_pairs(confidence, correct)
    edges = _edges(bins)
    n_bins = edges.size - 1
    index = _bin_index(q, edges)
    count = np.bincount(index, minlength=n_bins).astype(float)  # [B]
    sum_q = np.bincount(index, weights=q, minlength=n_bins)  # [B]
    sum_c = np.bincount(index, weights=c, minlength=n_bins)  # [B]
    safe = np.maximum(count, 1.0)
    return {"edges": edges, "count": count, "confidence": sum_q / safe, "accuracy": sum_c / safe}


def ece(
    confidence: Sequence[float], correct: Sequence[float], bins: Sequence[float] | None = None
) -> float:
    """Expected calibration error: sum_b (|B_b| / N) |mean_{i in B_b} c_i - mean_{i in B_b} q_i|.

    Default bins are the paper's 11: [0, .1), ..., [.9, 1.0), [1.0, 1.1), so q = 1.0 has a bin of
    its own and q = 0.0 falls in [0, .1). Any other strictly increasing edges may be passed; their
    bins are [e_j, e_{j+1}) with the last closed on the right, and a confidence outside
    [e_0, e_B] raises ValueError. Empty input: 0.0.
    """
    table = reliability(confidence, correct, bins)
    total = table["count"].sum()
    if total == 0:
        return 0.0
    gap = np.abs(table["accuracy"] - table["confidence"])  # [B]
    return float(np.sum(table["count"] / total * gap))


def mean_se(values: Sequence[float]) -> float:
    """Standard error of a mean: std(values, ddof=1) / sqrt(n). Fewer than two values: 0.0.

    The paper's Pass@1 standard error is this over the per-combination (prompt, sample) values
    c_i; over per-prompt mean accuracies it is the prompt-clustered standard error.
    """
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return 0.0
    return float(np.std(v, ddof=1) / np.sqrt(v.size))


Metric = Callable[[np.ndarray, np.ndarray], float]


def bootstrap_se(
    metrics: Mapping[str, Metric],
    confidence: Sequence[float],
    correct: Sequence[float],
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Bootstrap standard errors of several metrics of (confidence, correct) pairs (paper: 1000).

    Each of the R resamples draws N pairs with replacement (numpy Generator seeded by ``seed``;
    all metrics share the same resamples); the standard error of metric m is
    std_r(m(resample_r), ddof=1). Fewer than two resamples, or N < 2: 0.0 for every metric.
    """
    q, c = as_pairs(confidence, correct)
    if n_resamples < 2 or q.size < 2:
        return {name: 0.0 for name in metrics}
    rng = np.random.default_rng(seed)
    values = {name: np.empty(n_resamples) for name in metrics}
    for r in range(n_resamples):
        idx = rng.integers(0, q.size, size=q.size)  # [N]
        for name, fn in metrics.items():
            values[name][r] = fn(q[idx], c[idx])
    return {name: float(np.std(v, ddof=1)) for name, v in values.items()}


def _flatten(per_prompt: Sequence[Sequence[Sequence[float]]], where: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(fields [F] of arrays [N], start [P], count [P]) of per-prompt tuples of F equal-length arrays."""
    if not per_prompt:
        raise ValueError(f"{where}: no prompts")
    widths = {len(p) for p in per_prompt}
    if len(widths) != 1:
        raise ValueError(f"{where}: every prompt must give the same number of fields, got {sorted(widths)}")
    rows = [[np.asarray(f, dtype=float).ravel() for f in p] for p in per_prompt]
    for i, fields in enumerate(rows):
        if len({f.size for f in fields}) != 1:
            raise ValueError(f"{where}: prompt {i}: its fields have different lengths {[f.size for f in fields]}")
    count = np.array([fields[0].size for fields in rows], dtype=np.int64)  # [P]
    start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)  # [P]
    fields = [np.concatenate([r[j] for r in rows]) for j in range(widths.pop())]
    return fields, start, count


def _resampled_rows(start: np.ndarray, count: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The row indices of the prompts ``chosen`` (with repeats), prompt after prompt."""
    lengths = count[chosen]  # [P]
    offsets = np.cumsum(lengths) - lengths  # first position of each chosen prompt in the output
    return np.repeat(start[chosen] - offsets, lengths) + np.arange(lengths.sum())


def paired_bootstrap(
    metrics: Mapping[str, Callable[..., float]],
    a: Sequence[Sequence[Sequence[float]]],
    b: Sequence[Sequence[Sequence[float]]],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Paired bootstrap over prompts of metric(a) - metric(b), for two policies evaluated on the
    same P prompts.

    ``a[p]`` and ``b[p]`` hold prompt p's samples of each policy (the same prompt at the same index
    p), as a tuple of equal-length 1-D arrays: the fields the metrics take, e.g. (confidence,
    correct); the two policies may have different numbers of samples per prompt. Each of the R
    resamples draws P prompt indices with replacement (numpy Generator seeded by ``seed``; the draws
    depend only on seed, P and R, so several comparisons against one reference share them), takes
    every sample of the drawn prompts, for both policies alike, and evaluates each metric
    ``fn(*fields)`` on each policy's concatenated rows.

    Returns per metric: ``a`` and ``b`` (the metric on all prompts), ``diff`` = a - b, ``se`` =
    std_r(diff_r, ddof=1), and ``low`` / ``high``: the percentile interval of the resampled
    differences at ``level`` (default 95%). Fewer than two resamples, or P < 2: se 0 and the
    interval [diff, diff]. Raises ValueError when a and b differ in their number of prompts.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap: a has {len(a)} prompts but b has {len(b)}: pair the same prompts")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    fa, start_a, count_a = _flatten(a, "a")
    fb, start_b, count_b = _flatten(b, "b")
    point = {name: (float(fn(*fa)), float(fn(*fb))) for name, fn in metrics.items()}
    n_prompts = len(a)
    diffs = {name: np.empty(max(n_resamples, 0)) for name in metrics}
    if n_resamples >= 2 and n_prompts >= 2:
        rng = np.random.default_rng(seed)
        for r in range(n_resamples):
            chosen = rng.integers(0, n_prompts, size=n_prompts)  # [P], the same prompts for both policies
            ia, ib = _resampled_rows(start_a, count_a, chosen), _resampled_rows(start_b, count_b, chosen)
            xa, xb = [f[ia] for f in fa], [f[ib] for f in fb]
            for name, fn in metrics.items():
                diffs[name][r] = fn(*xa) - fn(*xb)
    out = {}
    tail = (1.0 - level) / 2.0
    for name, (va, vb) in point.items():
        d = va - vb
        if n_resamples >= 2 and n_prompts >= 2:
            se = float(np.std(diffs[name], ddof=1))
            low, high = (float(x) for x in np.quantile(diffs[name], [tail, 1.0 - tail]))
        else:
            se, low, high = 0.0, d, d
        out[name] = {"a": va, "b": vb, "diff": d, "se": se, "low": low, "high": high}
    return out
