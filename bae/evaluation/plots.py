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


def reliability_diagram(table: dict[str, np.ndarray], path: str | os.PathLike, title: str = "") -> None:
    """Accuracy per confidence bin against the diagonal, with the bin counts below.

    ``table`` is ``metrics.reliability(...)``: edges [B+1], count [B], confidence [B], accuracy [B].
    """
    edges, count = table["edges"], table["count"]
    left, width = edges[:-1], np.diff(edges)
    filled = count > 0
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.bar(left[filled], table["accuracy"][filled], width=width[filled], align="edge",
            edgecolor="black", alpha=0.7, label="accuracy")
    top.plot(table["confidence"][filled], table["accuracy"][filled], "o", color="C1",
             label="(mean confidence, accuracy)")
    top.plot([edges[0], min(edges[-1], 1.0)], [edges[0], min(edges[-1], 1.0)], "--", color="gray",
             label="perfect calibration")
    top.set_ylim(0, 1.02)
    top.set_ylabel("accuracy")
    top.set_title(title or "Reliability diagram")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(left, count, width=width, align="edge", edgecolor="black", color="C2")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("samples")
    save(fig, path)


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
