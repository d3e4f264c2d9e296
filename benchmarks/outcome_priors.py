"""Shrinkage targets other than ocb_eb's group mean, tried on `bae fidelity` draws (issue 15, part 1).

    python benchmarks/outcome_priors.py runs/fidelity_pre512/s0/metrics.json [more metrics.json ...]

ocb_eb shrinks a stratum's mean m_S toward its group's mean m_g: b = lam m_S + (1 - lam) m_g. A
stratum of one in a group of 32 then borrows from 31 rows of the other outcome, so its weight
1 - lam has to stay small (about 0.12 on the checkpoints). The first two candidates below replace
m_g by a prediction of the stratum's own value, fitted on the other groups of the batch, and
estimate lam around that prediction (empirical Bayes: lam = tau2 n_s / (tau2 n_s + sigma2), tau2 the spread of
the strata's true values around the prediction, sigma2 the within-stratum noise):

- offsets: the two-way model r_j = a_g + c_o + u_(g,o) + e_j. The outcome offsets c are the least
  squares fit over the other groups (C c = q with C = sum_g diag(n_g) - n_g n_g^T / N_g and
  q = sum_g t_g - n_g m_g, n_g / t_g the group's counts / sums by outcome; min-norm solution), the
  prior of stratum (g, o) is m_g + c_o - sum_t p_(g,t) c_t (a_g fitted on the group's own rows), and
  tau2 is the interaction's variance: ocb_eb's one-way estimate on the rewards less their offsets,
  whose pooled between-strata sum of squares is the fit's residual, SSB - q^T C^+ q, on
  df_B - rank(C).
- rest: the stratum's value predicted from the mean x_s of its group's other rows, per outcome:
  m_S = alpha_o + beta_o x_s + u_s + noise, fitted by least squares over the strata of the other
  groups (one point per stratum); tau2 = max(0, RSS / (m - 2) - sigma2 mean(1 / n_s)), sigma2 the
  outcome's pooled within-stratum variance. Where fewer than 4 strata fit (or sigma2 = 0, or the
  stratum is its whole group): lam = 1, OCB.
- eb_rest: ocb_eb's own lam (pool "others", pretest 0.05) with rest's prediction as the target in
  place of the group mean (the group mean where rest has none): the two above showed rest's target
  helping strata of one and its lam hurting large strata.

All three are as valid as OCB in its own sense: the fitted parameters come from other groups only and
x_s from the rest of the row's group, so b_i's weight on r_i is lam / |S(i)| <= 1 / |S(i)|.

Printed per run and G: the difference of RMSE from ocb in the small strata (one or two members)
with its paired bootstrap se ('*': below zero by more than two se, the target's "strictly
below"), and y / N per correct and incorrect stratum: within one se of the better of ocb and
group_mean. Recomputed from the run's samples.jsonl as benchmarks/baselines_fidelity.py does
(which checks ocb, group_mean and ocb_eb against metrics.json). offsets and rest are not part of
bae (benchmarks/RESULTS.md, "Two other shrinkage targets", records why); eb_rest, as frozen here
before the draw that judged it (commit 6b5acb0), is bae's ocb_eb(pretest=0.05, toward="rest") but
for bae's floor of 16 strata per line and its clamps ("The rest of the group as the target").
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines_fidelity import recomputed  # noqa: E402

from bae.advantages import (anova_sums, eb_weights, pooled_weights, register_baseline, shrink_weight,  # noqa: E402
                            strata)


def _by_group_outcome(values: np.ndarray, s_group: np.ndarray, s_out: np.ndarray, shape: tuple) -> np.ndarray:
    """[G, K, ...] sums of per-stratum `values` [S, ...] by (group, outcome)."""
    out = np.zeros(shape + values.shape[1:])
    np.add.at(out, (s_group, s_out), values)
    return out


def _others(per_group: np.ndarray) -> np.ndarray:
    """Leave-one-group-out sums: the total over groups minus each group's own (axis 0)."""
    return per_group.sum(axis=0, keepdims=True) - per_group


def _layout(r, group, outcome):
    num_g, num_k = int(group.max()) + 1, int(outcome.max()) + 1
    ids, _ = strata(group, outcome)
    num_s = int(ids.max()) + 1
    s_group, s_out = np.zeros(num_s, np.int64), np.zeros(num_s, np.int64)
    s_group[ids], s_out[ids] = group, outcome
    s_n = np.bincount(ids, minlength=num_s).astype(np.float64)
    s_sum = np.bincount(ids, weights=r, minlength=num_s)
    g_n = np.bincount(group, minlength=num_g).astype(np.float64)
    g_sum = np.bincount(group, weights=r, minlength=num_g)
    return num_g, num_k, ids, s_group, s_out, s_n, s_sum, g_n, g_sum


def offsets(r, group, outcome, *, pretest: float | None = 0.05):
    """ocb_eb (pool "others", its F pretest at `pretest`) around the additive prior (module docstring)."""
    if len(r) == 0:
        return np.zeros(0)
    num_g, num_k, ids, s_group, s_out, s_n, s_sum, g_n, g_sum = _layout(r, group, outcome)
    s_mean, g_mean = s_sum / s_n, g_sum / g_n
    counts = _by_group_outcome(s_n, s_group, s_out, (num_g, num_k))  # [G, K]
    sums = _by_group_outcome(s_sum, s_group, s_out, (num_g, num_k))
    c_mat = np.eye(num_k) * counts[:, :, None] - counts[:, :, None] * counts[:, None, :] / g_n[:, None, None]
    q = sums - counts * g_mean[:, None]
    c_o, q_o = _others(c_mat), _others(q)  # [G, K, K], [G, K]
    offset = np.einsum("gkl,gl->gk", np.linalg.pinv(c_o, rcond=1e-10, hermitian=True), q_o)  # [G, K]
    _, _, parts = anova_sums(r, group, outcome)  # ocb_eb's one-way sums [6, G]
    pooled = _others(parts.T).T  # the other groups'
    pooled[2] -= np.einsum("gk,gk->g", q_o, offset)  # the two-way fit's residual
    pooled[3] -= np.linalg.matrix_rank(c_o, hermitian=True)
    lam = pooled_weights(pooled, group, ids, s_n, pretest)
    share = counts / g_n[:, None]
    prior = g_mean[group] + offset[group, outcome] - np.einsum("gk,gk->g", share, offset)[group]
    return lam * s_mean[ids] + (1.0 - lam) * prior


def _rest_fit(r, group, outcome):
    """Per stratum (ids [N] -> 0..S-1): its mean, rest's prediction, rest's lam, and whether the
    prediction exists (the stratum has other rows in its group and its outcome's line was fitted)."""
    num_g, num_k, ids, s_group, s_out, s_n, s_sum, g_n, g_sum = _layout(r, group, outcome)
    s_mean = s_sum / s_n
    rest_n = g_n[s_group] - s_n
    fits = (rest_n > 0).astype(np.float64)  # a stratum that is its whole group has no x
    x = np.where(rest_n > 0, (g_sum[s_group] - s_sum) / np.maximum(rest_n, 1.0), 0.0)
    s_ss = np.bincount(ids, weights=(r - s_mean[ids]) ** 2, minlength=len(s_n))
    per = [fits, fits * x, fits * s_mean, fits * x * x, fits * x * s_mean, fits * s_mean ** 2, fits / s_n, s_ss, s_n - 1.0]
    m, sx, sy, sxx, sxy, syy, inv_n, ssw, dfw = (_others(_by_group_outcome(v, s_group, s_out, (num_g, num_k)))
                                                 for v in per)  # each [G, K]
    det = m * sxx - sx * sx
    ok = (m >= 4) & (det > 1e-12 * np.maximum(m * sxx, 1e-300))
    beta = np.where(ok, (m * sxy - sx * sy) / np.where(ok, det, 1.0), 0.0)  # [G, K]
    alpha = np.where(ok, (sy - beta * sx) / np.maximum(m, 1.0), 0.0)
    rss = syy - 2 * alpha * sy - 2 * beta * sxy + alpha ** 2 * m + 2 * alpha * beta * sx + beta ** 2 * sxx
    sigma2 = np.where(dfw > 0, ssw / np.maximum(dfw, 1.0), np.nan)
    tau2 = np.where(ok, np.maximum(rss / np.maximum(m - 2, 1.0) - sigma2 * inv_n / np.maximum(m, 1.0), 0.0), np.nan)
    prior = alpha[s_group, s_out] + beta[s_group, s_out] * x
    lam = np.where(rest_n > 0, shrink_weight(tau2[s_group, s_out], sigma2[s_group, s_out], s_n), 1.0)
    return ids, s_mean, prior, lam, (rest_n > 0) & ok[s_group, s_out]


def rest(r, group, outcome):
    """The stratum mean shrunk toward its value predicted from the rest of its group (module docstring)."""
    if len(r) == 0:
        return np.zeros(0)
    ids, s_mean, prior, lam, _ = _rest_fit(r, group, outcome)
    return (lam * s_mean + (1.0 - lam) * prior)[ids]


def eb_rest(r, group, outcome, *, history: int = 0, state: dict | None = None):
    """ocb_eb's own weight (pool "others", pretest 0.05, `history` batches before in `state`:
    bae.advantages.eb_weights) with rest's prediction as the target in place of the group mean; the
    group mean where rest has none. rest's line is fitted on this batch's other groups only."""
    if len(r) == 0:
        return np.zeros(0)
    ids, s_mean, prior, _, fitted = _rest_fit(r, group, outcome)
    lam = eb_weights(r, group, outcome, pool="others", pretest=0.05, history=history, state=state)
    target = np.where(fitted[ids], prior[ids], np.bincount(group, weights=r)[group] / np.bincount(group)[group])
    return lam * s_mean[ids] + (1.0 - lam) * target


VARIANTS = {"ocb_eb[pretest]": ("ocb_eb", {"pretest": 0.05}), "offsets": ("offsets", {}), "rest": ("rest", {}),
            "eb_rest": ("eb_rest", {})}


def row(groups: dict, name: str) -> str:
    cells = []
    for g, v in groups.items():
        e = v["estimators"]
        small = e[name]["small_strata"]
        d, se = small["rmse_minus_ocb"], small["rmse_minus_ocb_se"]
        within = ""
        for stratum in ("correct", "incorrect"):
            better = min(("ocb", "group_mean"), key=lambda b: e[b][stratum]["rmse"])
            within += "y" if e[name][stratum]["rmse"] - e[better][stratum]["rmse"] <= e[better][stratum]["rmse_se"] else "N"
        cells.append(f"{d:+.4f} ({se:.4f}){'*' if d < -2 * se else ''} {within}")
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    # registered here, not at import: a test importing the script leaves bae's registry as it was
    register_baseline("offsets", needs_outcomes=True)(offsets)
    register_baseline("rest", needs_outcomes=True)(rest)
    register_baseline("eb_rest", needs_outcomes=True, stateful=True)(eb_rest)
    for path in sys.argv[1:]:
        groups = recomputed(path, variants=VARIANTS)
        print(f"{path}\n\n| estimator | " + " | ".join(f"G = {g}" for g in groups) + " |\n|---|" + "---|" * len(groups))
        for name in VARIANTS:
            print(row(groups, name))
        print()


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    main()
