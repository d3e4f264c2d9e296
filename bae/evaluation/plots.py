"""The report's figures as PNG (matplotlib, Agg backend), each written atomically."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bae.io import atomic_path  # noqa: E402

LABELS = {
    "pass@1": "Pass@1",
    "pass@k": "Pass@k",
    "majority": "Majority vote",
    "max_confidence": "Max confidence",
    "weighted_majority": "Confidence-weighted majority",
}


def figure(*args, **kwargs):
    """plt.subplots(*args, **kwargs): (figure, axes) on the Agg backend."""
    return plt.subplots(*args, **kwargs)


def save(fig, path: str | os.PathLike) -> None:
    """Write `fig` as a PNG at `path` atomically, then close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


def bin_error(table: dict[str, np.ndarray]) -> np.ndarray:
    """Per-bin standard error of the accuracy, sqrt(a (1 - a) / n), with a floored at 1 / (n + 1)
    and 1 - 1 / (n + 1) so that a bin of 3 samples that are all right is not drawn as certain; 0
    for an empty bin. [B]"""
    n, a = table["count"], table["accuracy"]
    floor = 1.0 / (n + 1.0)
    shrunk = np.clip(a, floor, 1.0 - floor)
    return np.where(n > 0, np.sqrt(shrunk * (1.0 - shrunk) / np.maximum(n, 1.0)), 0.0)


def reliability_panel(top, bottom, table: dict[str, np.ndarray], title: str = "", legend: bool = True) -> None:
    """A reliability diagram on two axes: on ``top`` the accuracy of each non-empty confidence bin
    as a bar with its standard error (``bin_error``: wide for a bin of 3 samples, narrow for 300),
    each bar shaded by its share of the samples and labelled with its count, the bin's mean
    confidence as a dot, and the diagonal; on ``bottom`` the number of samples per bin."""
    edges, count = table["edges"], table["count"]
    left, width = edges[:-1], np.diff(edges)
    filled = count > 0
    total = max(count.sum(), 1.0)
    mids = left + width / 2
    for j in np.flatnonzero(filled):
        top.bar(left[j], table["accuracy"][j], width=width[j], align="edge", edgecolor="black", color="C0",
                alpha=0.25 + 0.65 * float(count[j] / count.max()))
    top.errorbar(mids[filled], table["accuracy"][filled], yerr=bin_error(table)[filled], fmt="none", ecolor="black",
                 elinewidth=1, capsize=2, label="accuracy ± se")
    for j in np.flatnonzero(filled):
        top.annotate(f"{int(count[j])}", (mids[j], 1.0), ha="center", va="bottom", fontsize=6, color="dimgray")
    top.plot(table["confidence"][filled], table["accuracy"][filled], "o", color="C1", markersize=3,
             label="(mean confidence, accuracy)")
    diagonal = [edges[0], min(edges[-1], 1.0)]
    top.plot(diagonal, diagonal, "--", color="gray", label="perfect calibration")
    top.set_ylim(0, 1.08)
    top.set_title(title)
    if legend:
        top.legend(loc="upper left", fontsize=6)
    bottom.bar(left, count, width=width, align="edge", edgecolor="black", color="C2")
    bottom.set_xlabel("confidence")
    bottom.annotate(f"{int(total)} samples", (0.98, 0.9), xycoords="axes fraction", ha="right", va="top", fontsize=7)


def reliability_diagram(table: dict[str, np.ndarray], path: str | os.PathLike, title: str = "") -> None:
    """Accuracy per confidence bin against the diagonal, with the bin counts below
    (``reliability_panel``).

    ``table`` is ``metrics.reliability(...)``: edges [B+1], count [B], confidence [B], accuracy [B].
    """
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    reliability_panel(top, bottom, table, title or "Reliability diagram")
    top.set_ylabel("accuracy")
    bottom.set_ylabel("samples")
    save(fig, path)


def smoothed(values, window: int) -> np.ndarray:
    """Centred moving average of ``values`` over ``window`` points (shrinking at the ends, so the
    result has one value per input and the first and last points average only what exists). [N]"""
    v = np.asarray(values, dtype=float)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if v.size == 0:
        return v
    half = window // 2
    sums = np.concatenate([[0.0], np.cumsum(v)])
    lo = np.clip(np.arange(v.size) - half, 0, v.size)
    hi = np.clip(np.arange(v.size) + (window - half), 0, v.size)
    return (sums[hi] - sums[lo]) / (hi - lo)


def raw_and_smoothed(ax, x, y, label: str, window: int = 9, **style):
    """The raw points of a training curve, faint, and their centred moving average (``smoothed``)
    over ``window`` points as a line in the same colour; returns the line."""
    line, = ax.plot(x, smoothed(y, window), label=label, linewidth=1.6, **style)
    ax.plot(x, y, color=line.get_color(), alpha=0.25, linewidth=0.6, marker=".", markersize=2)
    return line


def tts_plot(curves: dict, path: str | os.PathLike, title: str = "") -> None:
    """Each strategy's accuracy against k, with a band of one standard error.

    ``curves`` is ``tts.tts_curves(...)``: {"k": [K], strategy: {"value": [K], "se": [K]}}; a
    strategy left out of it (the confidence-based ones, without any confidence) is not drawn.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    k = np.asarray(curves["k"], dtype=float)
    for name, label in LABELS.items():
        if name not in curves:
            continue
        value = np.asarray(curves[name]["value"], dtype=float)
        se = np.asarray(curves[name]["se"], dtype=float)
        ax.plot(k, value, marker="o", markersize=3, label=label)
        ax.fill_between(k, value - se, value + se, alpha=0.15)
    ax.set_xlabel("k (samples per prompt)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "Test-time scaling")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)


def risk_coverage_plot(curve: dict[str, np.ndarray], path: str | os.PathLike, aurc: float, title: str = "") -> None:
    """Risk (error rate of accepted samples) against coverage, as a step curve.

    ``curve`` is ``selective.risk_coverage(...)``: threshold, coverage, risk, each [U].
    """
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.step(np.concatenate([[0.0], curve["coverage"]]),
            np.concatenate([[curve["risk"][0] if curve["risk"].size else 0.0], curve["risk"]]),
            where="pre", label=f"AURC = {aurc:.4f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(1e-3, float(curve["risk"].max()) * 1.05 if curve["risk"].size else 1.0))
    ax.set_xlabel("coverage")
    ax.set_ylabel("risk (error rate)")
    ax.set_title(title or "Risk-coverage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)
