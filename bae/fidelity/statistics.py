"""Errors of the advantage estimators against a reference, and their summaries (pure numpy).

e[name] = A_hat[:, block] - A_ref for every registered baseline (bae.advantages.BASELINES); per
stratum: RMSE with a bootstrap standard error over prompts (paired across estimators), RMSE with the
Monte-Carlo noise removed, and the bias with a cluster-robust standard error.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from bae.advantages import BASELINES, blockwise_advantages, check_options, strata

def estimator_errors(
    rewards: Any,
    groups: Any,
    outcomes: Any,
    reference_advantages: Any,
    *,
    block: int = 1,
    batches: Any = None,
    baselines: Sequence[str] | None = None,
    variants: Mapping[str, tuple[str, dict[str, Any]]] | None = None,
) -> dict[str, np.ndarray]:
    """Error of every estimator's advantage against a reference: e[name] = A_hat[:, block] - A_ref.

    Args:
        rewards: [N, K] block rewards. groups: [N] group ids (completions of one prompt).
        outcomes: [N, K] outcome ids (column k: the outcome of the prefix before block k).
        reference_advantages: [N] the reference advantage of `block` (A_MC, or r - V exactly).
        block: the block whose advantage is compared (0-based; 1 = the second block).
        batches: [N] optional batch ids; each batch is estimated on its own (batch_mean averages
            within it), as a training step sees one batch, in the order of the ids, each estimator
            with a memory of its own (ocb_eb with history pools over the batches before). None: one batch.
        baselines: names in BASELINES (default: all registered, in registration order).
        variants: more estimators under names of their own: {name: (baseline, options)}, e.g.
            {"ocb_eb[pretest]": ("ocb_eb", {"pretest": 0.05})}; after `baselines` in the result.

    Returns: {name: [N] float64 errors}, rows in input order.
    """
    r = np.asarray(rewards, dtype=np.float64)
    g = np.asarray(groups)
    o = np.asarray(outcomes)
    ref = np.asarray(reference_advantages, dtype=np.float64)
    n = r.shape[0]
    if ref.shape != (n,):
        raise ValueError(f"reference_advantages must be [N] = [{n}], got shape {ref.shape}")
    specs = {name: (name, {}) for name in (list(BASELINES) if baselines is None else list(baselines))}
    for name, (baseline, options) in (variants or {}).items():
        if name in specs:
            raise ValueError(f"variant {name!r} has the name of a compared estimator; give it a name of its own")
        check_options(baseline, dict(options))  # before any batch (also for N = 0): a clear ValueError
        specs[name] = (baseline, dict(options))
    b = np.zeros(n, dtype=np.int64) if batches is None else np.unique(np.asarray(batches), return_inverse=True)[1]
    out = {name: np.empty(n, dtype=np.float64) for name in specs}
    memory = {name: {} for name in specs}
    for batch in np.unique(b):
        rows = np.nonzero(b == batch)[0]
        for name, (baseline, options) in specs.items():
            a = blockwise_advantages(r[rows], g[rows], o[rows], baseline=baseline, state=memory[name], **options)  # [n_b, K]
            out[name][rows] = a[:, block] - ref[rows]
    return out


def _bootstrap_weights(clusters: int, bootstrap: int, seed: int) -> np.ndarray:
    """[B, C] multiplicities of the clusters in each bootstrap resample (with replacement)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, clusters, size=(bootstrap, clusters))
    return np.stack([np.bincount(d, minlength=clusters) for d in draws]).astype(np.float64)


def summarize_errors(
    errors: dict[str, np.ndarray],
    clusters: Any,
    mask: Any = None,
    *,
    mc_noise: Any = None,
    bootstrap: int = 1000,
    seed: int = 0,
    reference: str | None = "ocb",
) -> dict[str, dict]:
    """Per estimator: n, rmse, rmse_se (bootstrap over clusters), rmse_exact (MC noise removed),
    bias (mean error), bias_se (cluster-robust), and rmse_minus_<reference> with its paired
    bootstrap se. `clusters` [N]: prompt ids; `mask` [N]: the rows of the stratum; `mc_noise` [N]:
    per-row Var(V_MC) estimates s^2/M (0 for exact references)."""
    cl = np.unique(np.asarray(clusters), return_inverse=True)[1].reshape(-1)
    keep = np.ones(len(cl), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    noise = np.zeros(len(cl)) if mc_noise is None else np.asarray(mc_noise, dtype=np.float64)
    c = len(np.unique(cl)) if len(cl) else 0
    counts = np.bincount(cl[keep], minlength=c).astype(np.float64)  # [C]
    n = int(counts.sum())
    weights = _bootstrap_weights(c, bootstrap, seed) if c and bootstrap > 0 else np.zeros((0, c))  # [B, C]
    boot_n = weights @ counts  # [B]
    ok = boot_n > 0
    mean_noise = float(noise[keep].mean()) if n else math.nan
    out, boot_rmse = {}, {}
    for name, e in errors.items():
        e = np.asarray(e, dtype=np.float64)
        if not n:
            out[name] = {"n": 0, "rmse": math.nan, "rmse_se": math.nan, "rmse_exact": math.nan, "bias": math.nan,
                         "bias_se": math.nan, "mc_noise": math.nan}
            continue
        sq = np.bincount(cl[keep], weights=e[keep] ** 2, minlength=c)  # [C] per-cluster sums
        lin = np.bincount(cl[keep], weights=e[keep], minlength=c)
        mse = sq.sum() / n
        bias = lin.sum() / n
        used = counts > 0
        k = int(used.sum())
        resid = lin[used] - bias * counts[used]
        bias_se = math.sqrt(k / (k - 1) * float((resid ** 2).sum())) / n if k > 1 else math.nan
        boot = np.sqrt((weights[ok] @ sq) / boot_n[ok])  # [B]
        boot_rmse[name] = boot
        out[name] = {
            "n": n,
            "rmse": math.sqrt(mse),
            "rmse_se": float(boot.std(ddof=1)) if len(boot) > 1 else math.nan,
            "rmse_exact": math.sqrt(max(mse - mean_noise, 0.0)),
            "bias": float(bias),
            "bias_se": bias_se,
            "mc_noise": mean_noise,
        }
    if reference in boot_rmse:
        for name in boot_rmse:
            d = boot_rmse[name] - boot_rmse[reference]
            out[name][f"rmse_minus_{reference}"] = out[name]["rmse"] - out[reference]["rmse"]
            out[name][f"rmse_minus_{reference}_se"] = float(d.std(ddof=1)) if len(d) > 1 else math.nan
    return out


def stratum_sizes(groups: Any, outcomes: Any, batches: Any = None) -> np.ndarray:
    """[N] size of each row's stratum (same batch, group and outcome)."""
    g = np.asarray(groups)
    b = np.zeros(len(g), dtype=np.int64) if batches is None else np.asarray(batches)
    batch_group = strata(b, g)[0]  # one id per (batch, group)
    return strata(batch_group, outcomes)[1]
