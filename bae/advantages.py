"""Blockwise advantage estimators (paper Algorithm 1) as pure functions over arrays.

A completion is split into K blocks; block k of completion i has reward r[i, k]. Its advantage is

    A[i, k] = (r[i, k] - b[i, k]) / s[i, k]

where the baseline b of block 1 is always the group mean (completions of the same prompt), and the
baseline of every later block is chosen by name from BASELINES. s is 1 (scale="none", the paper:
centred, never divided) or a standard deviation plus eps (scale="group" / "batch", GRPO style).

Departures from the paper, all opt-in by name:
- "ocb_loo": the stratum mean without the sample itself (RLOO style), so the baseline does not
  depend on the sample's own reward.
- "ocb_shrink": the stratum mean shrunk toward the group mean, for small strata (the paper names
  small strata as OCB's limitation).
- "ocb_eb": the same shrinkage with its strength estimated from the batch (empirical Bayes),
  optionally also from the batches before (history=H, a memory kept in `state`), and optionally
  toward a prediction of the stratum's value from the rest of its group (toward="rest").
- outcomes may take any number of integer values (multi-bin outcomes, the paper's future work).

Every baseline is a function `(r, group, outcome, **options) -> b` over one block's column:
r [N] float64, group [N] int64 dense ids 0..G-1, outcome [N] int64 dense ids 0..S-1 (or None),
returning b [N]. Register your own with `@register_baseline("name")`.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Protocol

import numpy as np

try:  # torch is a dependency, but the estimators themselves only need numpy
    import torch
except ImportError:  # pragma: no cover
    torch = None

SCALES = ("none", "group", "batch")
DEFAULT_EPS = 1e-6  # verl's GRPO epsilon; TRL uses 1e-4. Only used when scale != "none".


class Baseline(Protocol):
    def __call__(self, r: np.ndarray, group: np.ndarray, outcome: np.ndarray | None, **options: Any) -> np.ndarray: ...


BASELINES: dict[str, Baseline] = {}
NEEDS_OUTCOMES: set[str] = set()
STATEFUL: set[str] = set()
_OPTION_CHECKS: dict[str, Callable[..., None]] = {}


def register_baseline(name: str, *, needs_outcomes: bool = False, check: Callable[..., None] | None = None,
                      stateful: bool = False) -> Callable[[Baseline], Baseline]:
    """Register a baseline for blocks k >= 2 under `name` (usable as `baseline=name`).

    check: an optional `check(**options)` that raises ValueError for a bad option value, so that
    `check_options` (called by the engines at construction) refuses it before any compute.
    stateful: the baseline also takes `state=`, a dict of its own for the block's column that
    persists from one batch to the next (see blockwise_advantages' `state`)."""

    def decorate(fn: Baseline) -> Baseline:
        if name in BASELINES:
            raise ValueError(f"baseline {name!r} is already registered")
        if stateful and "state" not in _parameters(fn):
            raise ValueError(f"baseline {name!r} is registered as stateful but takes no `state` keyword")
        BASELINES[name] = fn
        if needs_outcomes:
            NEEDS_OUTCOMES.add(name)
        if stateful:
            STATEFUL.add(name)
        if check is not None:
            _OPTION_CHECKS[name] = check
        return fn

    return decorate


def _parameters(fn: Callable) -> list[str]:
    import inspect

    return list(inspect.signature(fn).parameters)


def _options_of(name: str) -> list[str]:
    """The keyword options a registered baseline takes (its parameters after r, group, outcome; not state)."""
    return [p for p in _parameters(BASELINES[name])[3:] if p != "state"]


def check_options(baseline: str, options: dict[str, Any]) -> None:
    """Raise ValueError for an unknown baseline, an option it does not take (saying which options it
    takes, and which baselines take that one), or a bad option value."""
    import difflib
    import inspect

    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; registered: {sorted(BASELINES)}")
    if "state" in options:
        raise ValueError(f"baseline {baseline!r}: 'state' is not an option: a baseline that pools over batches "
                         "(ocb_eb with history: H) has its memory kept and checkpointed by the trainers; a direct "
                         "call passes blockwise_advantages(state=...)")
    try:  # the signature decides (a baseline with **options takes any option)
        inspect.signature(BASELINES[baseline]).bind(None, None, None, **options)
    except TypeError as err:
        accepted = _options_of(baseline)
        key = next((k for k in options if k not in accepted), None)
        if key is None:
            raise ValueError(f"baseline {baseline!r}: {err}") from None
        elsewhere = sorted(name for name in BASELINES if key in _options_of(name))
        close = difflib.get_close_matches(str(key), accepted, n=1)
        raise ValueError(f"baseline {baseline!r} takes no option {key!r}"
                         + (f" (did you mean {close[0]!r}?)" if close else "")
                         + (f"; {key!r} is an option of {', '.join(elsewhere)}" if elsewhere else "")
                         + f"; {baseline!r} takes {', '.join(map(repr, accepted)) if accepted else 'no options'}") from None
    if baseline in _OPTION_CHECKS:
        _OPTION_CHECKS[baseline](**options)


def _segment_mean(values: np.ndarray, ids: np.ndarray, num: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment sum and count, broadcast back to rows: (sum[ids], count[ids])."""
    sums = np.bincount(ids, weights=values, minlength=num)
    counts = np.bincount(ids, minlength=num).astype(np.float64)
    return sums[ids], counts[ids]


def strata(group: Any, outcome: Any) -> tuple[np.ndarray, np.ndarray]:
    """The OCB strata S(i) = {j : g_j = g_i, o_j = o_i}: (stratum id of each row [N] int64, dense
    0..S-1, and the size |S(i)| of each row's stratum [N] int64). group and outcome [N]: any
    comparable values (ints, strings; outcome may be negative, e.g. MALFORMED_OUTCOME)."""
    g = _dense_ids(np.asarray(group), "group_ids")
    o = _dense_ids(np.asarray(outcome), "outcomes")
    ids = _dense_ids(g * (int(o.max(initial=0)) + 1) + o, "strata")
    return ids, np.bincount(ids)[ids] if len(ids) else np.zeros(0, np.int64)


@register_baseline("none")
def no_baseline(r, group, outcome):
    """b = 0."""
    return np.zeros_like(r)


@register_baseline("batch_mean")
def batch_mean(r, group, outcome):
    """b = (1/N) sum_j r_j over the whole batch."""
    return np.full_like(r, r.mean() if len(r) else 0.0)


@register_baseline("group_mean")
def group_mean(r, group, outcome):
    """b_i = mean of r_j over j in the group of i (the sample included)."""
    sums, counts = _segment_mean(r, group, int(group.max(initial=-1)) + 1)
    return sums / counts


@register_baseline("ocb", needs_outcomes=True)
def ocb(r, group, outcome):
    """Outcome-Conditioned Baseline (paper Eq. 5): b_i = mean of r_j over the stratum
    S(i) = {j : g_j = g_i, o_j = o_i}, the sample included. A stratum of one gives A_i = 0."""
    ids, _ = strata(group, outcome)
    sums, counts = _segment_mean(r, ids, int(ids.max(initial=-1)) + 1)
    return sums / counts


@register_baseline("ocb_loo", needs_outcomes=True)
def ocb_loo(r, group, outcome):
    """Leave-one-out OCB: b_i = (sum_{j in S(i)} r_j - r_i) / (|S(i)| - 1).

    A stratum of one has no other member to compare with: b_i = r_i, so A_i = 0 (as plain OCB).
    """
    ids, _ = strata(group, outcome)
    sums, counts = _segment_mean(r, ids, int(ids.max(initial=-1)) + 1)
    others = counts - 1
    return np.where(others > 0, (sums - r) / np.maximum(others, 1), r)


def _check_shrink(shrink: float = 1.0) -> None:
    if not isinstance(shrink, (int, float)) or not np.isfinite(shrink) or shrink < 0:
        raise ValueError(f"ocb_shrink: shrink must be a finite number >= 0, got {shrink!r}")


@register_baseline("ocb_shrink", needs_outcomes=True, check=_check_shrink)
def ocb_shrink(r, group, outcome, *, shrink: float = 1.0):
    """OCB shrunk toward the group mean: b_i = lam_i * m_S(i) + (1 - lam_i) * m_g(i),
    lam_i = |S(i)| / (|S(i)| + shrink).

    This is the posterior mean of the stratum's value under a prior centred on the group mean worth
    `shrink` pseudo-samples (empirical-Bayes style). The default shrink = 1 gives a stratum of one
    half the weight, a stratum of 8 about 0.89 of it; shrink = 0 is plain OCB, shrink -> inf the
    group mean. A stratum that is the whole group is unchanged (m_S = m_g).
    """
    _check_shrink(shrink)
    ids, _ = strata(group, outcome)
    s_sums, s_counts = _segment_mean(r, ids, int(ids.max(initial=-1)) + 1)
    lam = s_counts / (s_counts + shrink)
    return lam * (s_sums / s_counts) + (1.0 - lam) * group_mean(r, group, outcome)


EB_POOLS = ("others", "batch")
EB_TARGETS = ("group_mean", "rest")
"""What ocb_eb shrinks a stratum's mean toward (see ocb_eb: `toward`)."""
MIN_PRETEST = 1e-12
"""The smallest level of ocb_eb's pretest: below about 1e-16 the F quantile is not finite in double
precision, and the test would then never keep tau2 whatever the data."""


def _check_eb(pool: str = "others", pretest: float | None = None, history: int = 0, toward: str = "group_mean") -> None:
    if toward not in EB_TARGETS:
        raise ValueError(f"ocb_eb: toward must be one of {EB_TARGETS}, got {toward!r}")
    if isinstance(history, bool) or not isinstance(history, numbers.Integral) or history < 0:
        raise ValueError(f"ocb_eb: history must be a whole number of earlier batches >= 0, got {history!r}")
    if pool not in EB_POOLS:
        raise ValueError(f"ocb_eb: pool must be one of {EB_POOLS}, got {pool!r}")
    if pretest is not None and (isinstance(pretest, bool) or not isinstance(pretest, numbers.Real)
                                or not MIN_PRETEST <= pretest < 1):
        raise ValueError(f"ocb_eb: pretest must be None or a level in [{MIN_PRETEST:g}, 1), e.g. 0.05, got {pretest!r}")


def eb_weights(r: np.ndarray, group: np.ndarray, outcome: np.ndarray, pool: str = "others",
               pretest: float | None = None, history: int = 0, state: dict | None = None) -> np.ndarray:
    """[N] the empirical-Bayes weight lam_i of ocb_eb (see there): lam = tau2 n_s / (tau2 n_s + sigma2),
    with sigma2 (within-stratum noise) and tau2 (between-strata variance) pooled over the batch's
    groups ("batch") or over every group but the row's own ("others"), plus the `history` earlier
    batches kept in `state`; 1 where they cannot be estimated or sigma2 = 0. pretest = alpha:
    tau2 = 0 where the pool's F statistic does not exceed its 1 - alpha quantile. With history, this
    batch's sums join `state` (so call it once per batch and state: ocb_eb calls it)."""
    _check_eb(pool, pretest, history)
    history = int(history)  # a numpy unsigned int would wrap around in -history
    if history and state is None:
        raise ValueError(f"ocb_eb: history={history} pools over earlier batches, so it needs their sums: pass the "
                         "same dict as blockwise_advantages(state=...) at every step (the engines keep one per run)")
    if len(r) == 0:
        return np.zeros(0)
    ids, s_n, parts = anova_sums(r, group, outcome)
    total = parts.sum(axis=1, keepdims=True)  # [6, 1]
    pooled = total - parts if pool == "others" else np.broadcast_to(total, parts.shape)  # [6, G]
    if history:
        # the sums of the last `history` batches: other prompts, sampled before this batch
        window = _eb_window(state)
        if window:
            pooled = pooled + np.asarray(window, dtype=np.float64).sum(axis=0)[:, None]
        if np.all(np.isfinite(total)):  # rewards near the float limit overflow SS: such a batch is not kept
            window.append(total[:, 0].tolist())  # plain floats (and string keys above): JSON-safe
        del window[: max(len(window) - history, 0)]
    return pooled_weights(pooled, group, ids, s_n, pretest)


def anova_sums(r: np.ndarray, group: np.ndarray, outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stratum id of each row [N], n_s of each stratum [S], the per-group sums of ocb_eb's one-way
    ANOVA [6, G]: within SS and its df, between SS and its df, the tau2 coefficient
    D_g = n_g - sum_s n_s^2 / n_g, and 1 for a group of two strata or more)."""
    num_g = int(group.max()) + 1
    ids, _ = strata(group, outcome)
    num_s = int(ids.max()) + 1
    s_group = np.zeros(num_s, np.int64)
    s_group[ids] = group  # the group of each stratum
    s_n = np.bincount(ids, minlength=num_s).astype(np.float64)  # [S] n_s
    s_mean = np.bincount(ids, weights=r, minlength=num_s) / s_n  # [S]
    g_n = np.bincount(group, minlength=num_g).astype(np.float64)  # [G] n_g
    g_mean = np.bincount(group, weights=r, minlength=num_g) / g_n  # [G]
    ssw = np.bincount(group, weights=(r - s_mean[ids]) ** 2, minlength=num_g)
    dfw = g_n - np.bincount(s_group, minlength=num_g)
    ssb = np.bincount(s_group, weights=s_n * (s_mean - g_mean[s_group]) ** 2, minlength=num_g)
    dfb = np.bincount(s_group, minlength=num_g) - 1.0
    d = g_n - np.bincount(s_group, weights=s_n * s_n, minlength=num_g) / g_n
    mixed = (dfb > 0).astype(np.float64)  # groups of two strata or more: the only ones with d > 0
    return ids, s_n, np.stack([ssw, dfw, ssb, dfb, d, mixed])


def pooled_weights(pooled: np.ndarray, group: np.ndarray, ids: np.ndarray, s_n: np.ndarray,
                   pretest: float | None = None) -> np.ndarray:
    """[N] lam = tau2 n_s / (tau2 n_s + sigma2) from the pooled ANOVA sums [6, G] of each row's group
    (anova_sums' order), with pretest = alpha as in ocb_eb; 1 where sigma2 or tau2 cannot be
    estimated or sigma2 = 0."""
    ssw_p, dfw_p, ssb_p, dfb_p, d_p, mixed_p = np.maximum(pooled, 0.0)  # rounding in total - own: never < 0
    # dfw_p and mixed_p are counts (exact in float64): 0 exactly when the pool has no such stratum / group
    sigma2 = np.where(dfw_p > 0, ssw_p / np.maximum(dfw_p, 1.0), np.nan)  # [G]
    tau2 = np.where(mixed_p > 0, np.maximum(ssb_p - sigma2 * dfb_p, 0.0) / np.where(mixed_p > 0, d_p, 1.0), np.nan)  # [G]
    if pretest is not None:
        tau2 = np.where(_strata_differ(ssb_p, dfb_p, sigma2, dfw_p, pretest) | np.isnan(tau2), tau2, 0.0)
    return shrink_weight(tau2[group], sigma2[group], s_n[ids])


def shrink_weight(tau2: np.ndarray, sigma2: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The posterior weight of a mean of n noisy values: tau2 n / (tau2 n + sigma2); 1 (the mean
    itself) where tau2 or sigma2 is not finite or sigma2 = 0."""
    known = np.isfinite(sigma2) & np.isfinite(tau2) & (sigma2 > 0)
    return np.where(known, tau2 * n / np.where(known, tau2 * n + sigma2, 1.0), 1.0)


def _eb_window(state: Any) -> list:
    """state["eb_sums"] (created empty), checked: a list whose entries are each the six finite,
    non-negative sums of one earlier batch; a clear ValueError for anything else (a hand-edited or
    foreign state)."""
    if not isinstance(state, dict):
        raise ValueError(f"ocb_eb: state must be a dict, got {type(state).__name__}")
    window = state.setdefault("eb_sums", [])
    if not isinstance(window, list):
        raise ValueError(f"ocb_eb: state['eb_sums'] must be a list of earlier batches' sums, got {type(window).__name__}")
    for entry in window:
        try:
            values = np.asarray(entry, dtype=np.float64)
        except (TypeError, ValueError):
            values = None
        if values is None or values.shape != (6,) or not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"ocb_eb: state['eb_sums'] holds {entry!r}; each entry must be the six finite, non-negative "
                             "sums (SSW, df_W, SSB, df_B, tau2 coefficient, mixed groups) of one earlier batch")
    return window


def _strata_differ(ssb: np.ndarray, dfb: np.ndarray, sigma2: np.ndarray, dfw: np.ndarray, alpha: float) -> np.ndarray:
    """[G] True where the pooled one-way ANOVA rejects "no between-strata variance" at level alpha:
    F = (SSB / df_B) / sigma2 > F_{1 - alpha}(df_B, df_W). sigma2 = 0 with SSB > 0 rejects; where
    there is nothing to test (df_B = 0 or df_W = 0) the result is unused (tau2 or sigma2 is NaN)."""
    from scipy import stats  # the F quantile; scipy is a dependency of bae

    ok = (dfb > 0) & (dfw > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(ok, ssb / np.maximum(dfb, 1.0) / sigma2, 0.0)
    f = np.where(ok & (sigma2 == 0), np.where(ssb > 0, np.inf, 0.0), f)
    return ok & (f > stats.f.isf(float(alpha), np.maximum(dfb, 1.0), np.maximum(dfw, 1.0)))


MIN_REST_FIT = 16
"""ocb_eb(toward="rest"): the fewest strata (of other groups) a line per outcome is fitted on."""


def _min_of_others(values: np.ndarray) -> np.ndarray:
    """[G, O] -> [G, O]: per column, the smallest value over the *other* rows (NaN = absent; +inf
    where no other row has one)."""
    filled = np.where(np.isnan(values), np.inf, values)
    if len(filled) < 2:
        return np.full_like(filled, np.inf)
    order = np.argsort(filled, axis=0, kind="stable")[:2]  # [2, O] the rows of the two smallest
    first, second = np.take_along_axis(filled, order, axis=0)
    return np.where(np.arange(len(filled))[:, None] == order[0], second, first)


def rest_prediction(r: np.ndarray, group: np.ndarray, outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([N] predicted value of each row's stratum, [N] bool: whether there is one) for
    ocb_eb(toward="rest"): per outcome, the line m_S = alpha_o + beta_o x_S fitted by least squares
    over the strata of the *other* groups (one point per stratum), x_S the mean reward of the rows
    of S's group outside S, evaluated at the row's own x_S clamped to the range of the x the line
    was fitted on, and the value clamped to the range of their m_S' (a line is not extrapolated,
    nor trusted beyond the values it was fitted on: one outlying stratum can tilt it steeply). None
    (False) where the stratum is its whole group (no x), where fewer than MIN_REST_FIT strata of the
    outcome in other groups have an x, where their x do not spread (a vertical fit), or where the
    fit is not finite (rewards near the float limit). The line depends on the row's own group only
    through rounding (the other groups' sums are the batch's minus the group's own)."""
    n = len(r)
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    group, outcome = _dense_ids(np.asarray(group), "group_ids"), _dense_ids(np.asarray(outcome), "outcomes")
    num_g, num_o = int(group.max()) + 1, int(outcome.max()) + 1
    ids, _ = strata(group, outcome)
    num_s = int(ids.max()) + 1
    s_group, s_out = np.zeros(num_s, np.int64), np.zeros(num_s, np.int64)
    s_group[ids], s_out[ids] = group, outcome  # a group holds at most one stratum per outcome
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite sums: no line
        shift = r.mean()  # a line is shift-equivariant: centring only keeps its sums well conditioned
        rc = r - shift
        s_n = np.bincount(ids, minlength=num_s).astype(np.float64)  # [S]
        s_sum = np.bincount(ids, weights=rc, minlength=num_s)
        g_n = np.bincount(group, minlength=num_g).astype(np.float64)  # [G]
        g_sum = np.bincount(group, weights=rc, minlength=num_g)
        rest_n = g_n[s_group] - s_n  # [S] rows of the group outside the stratum
        has_x = rest_n > 0
        x = np.where(has_x, (g_sum[s_group] - s_sum) / np.maximum(rest_n, 1.0), 0.0)  # [S]
        y = s_sum / s_n
        w = has_x.astype(np.float64)
        cell = (s_group, s_out)  # [G, O] -> [S]: one stratum per cell at most
        sums = np.zeros((5, num_g, num_o))  # per (group, outcome): count, x, y, x^2, x y of its stratum
        sums[:, s_group, s_out] = np.stack((w, w * x, w * y, w * x * x, w * x * y))
        m, sx, sy, sxx, sxy = sums.sum(axis=1, keepdims=True) - sums  # each [G, O]: the other groups'
        det = m * sxx - sx * sx  # m^2 var(x): > 0 when the x spread
        beta = (m * sxy - sx * sy) / det
        alpha = (sy - beta * sx) / m
        xs, ys = np.full((2, num_g, num_o), np.nan)
        xs[s_group[has_x], s_out[has_x]], ys[s_group[has_x], s_out[has_x]] = x[has_x], y[has_x]
        # the ranges of the points the line was fitted on
        x_low, x_high = _min_of_others(xs)[cell], -_min_of_others(-xs)[cell]
        y_low, y_high = _min_of_others(ys)[cell], -_min_of_others(-ys)[cell]
        pred = np.clip(alpha[cell] + beta[cell] * np.clip(x, x_low, x_high), y_low, y_high) + shift  # [S]
        spread = det > 1e-12 * np.abs(m * sxx)  # rounding in m sxx - sx^2 is no spread
    fitted = has_x & (m[cell] >= MIN_REST_FIT) & spread[cell] & np.isfinite(pred)
    return np.where(fitted, pred, 0.0)[ids], fitted[ids]


@register_baseline("ocb_eb", needs_outcomes=True, check=_check_eb, stateful=True)
def ocb_eb(r, group, outcome, *, pool: str = "others", pretest: float | None = None, history: int = 0,
           toward: str = "group_mean", state: dict | None = None):
    """OCB shrunk toward the group mean (or, with toward="rest", a prediction of the stratum's value:
    below) by a strength estimated from the batch (empirical Bayes):

        b_i = lam_i * m_S(i) + (1 - lam_i) * m_g(i),    lam_i = tau2 |S(i)| / (tau2 |S(i)| + sigma2),

    i.e. ocb_shrink with shrink = sigma2 / tau2, the posterior mean of the stratum's value in the
    one-way random-effects model r_j = mu_g + delta_s + eps_j, delta_s ~ (0, tau2) the stratum's
    offset from its group, eps_j ~ (0, sigma2) the noise within a stratum. Both variances are the
    ANOVA (method-of-moments) estimates of an unbalanced design, pooled over groups:

        sigma2 = sum_g SSW_g / sum_g (n_g - S_g),    SSW_g = sum_{j in g} (r_j - m_S(j))^2
        tau2   = max(0, sum_g SSB_g - sigma2 sum_g (S_g - 1)) / sum_g (n_g - sum_{s in g} n_s^2 / n_g),
                 SSB_g = sum_{s in g} n_s (m_s - m_g)^2

    (S_g strata in group g; E[SSB_g] = (S_g - 1) sigma2 + tau2 (n_g - sum n_s^2 / n_g)). The sums run
    over every group of the batch except the row's own (pool="others", the default) or over all of
    them (pool="batch").

    Why "others": then lam_i does not depend on the rewards of i's group at all (other groups are
    other prompts, sampled independently), so b_i is a fixed linear function of its group's rewards
    whose weight on r_i is lam/|S(i)| + (1 - lam)/n_g <= 1/|S(i)|, OCB's own. The expected policy
    gradient of sample i is then scaled by 1 - that weight (>= OCB's 1 - 1/|S(i)|, which is 0 for a
    stratum of one) and not otherwise biased: a valid baseline in the sense OCB is. With "batch" the
    weight also moves with r_i, by O(1 / number of groups).

    Limits: sigma2 = 0 (no noise within any stratum: the stratum means are exact) gives lam = 1,
    plain OCB; tau2 = 0 (the strata means spread no more than noise would make them) gives lam = 0,
    the group mean; lam -> 1 as tau2 / sigma2 -> inf. Where the pooled groups cannot estimate the
    ratio (no stratum of two or more: no sigma2; no group of two strata or more: no tau2; a batch of
    one group under "others") lam = 1, OCB. A stratum that is the whole group is unchanged (m_S = m_g),
    a group of one gets A = 0, N = 0 gives [].

    pretest=alpha (opt-in; None, the default, is the plain estimate above): tau2 is set to 0 (the
    group mean) unless the pool's ANOVA F statistic, F = (sum_g SSB_g / sum_g (S_g - 1)) / sigma2,
    exceeds its 1 - alpha quantile under "no between-strata variance", F(sum_g (S_g - 1),
    sum_g (n_g - S_g)). Why: where the strata truly have one value, the positive part above makes
    tau2 > 0 for about half of the batches and that noise costs RMSE against the group mean; the
    test keeps it for about alpha of them (the F test assumes one noise variance in every group:
    where the noise differs from group to group it keeps tau2 more often). The price: where strata
    differ but the pool is small (few groups), the test sometimes misses and falls back to the
    group mean (benchmarks/RESULTS.md, "Beyond OCB", measures both). lam still depends on other
    groups only, so the validity argument above is unchanged (up to rounding: the pool's sums are
    the batch's minus the row's group's, and where F lies within rounding of its quantile a change
    of the group's own rewards can flip the test). alpha: at least MIN_PRETEST, below 1.

    history=H (opt-in; 0, the default, pools over this batch only): the six sums above (SSW, its df,
    SSB, its df, the tau2 coefficient, the number of groups with two strata or more) of each of the
    H batches before are added to the pool, so that a small batch (8 groups, say) estimates lam from
    (H + 1) x as many groups. The sums are kept in `state` (the block's entry of the dict passed as
    blockwise_advantages(state=...); history > 0 without one is refused). Earlier batches hold other
    prompts sampled before this one, so lam still does not depend on the row's own group: the
    validity argument is unchanged. The price: lam is estimated partly from older policies (a window
    of H batches; the policy moves little in H updates, but nothing checks that). A batch whose sums
    are not finite (rewards near the float limit) is not kept.

    toward="rest" (opt-in; "group_mean", the default, is the estimator above): the same lam, with
    the group mean replaced by a prediction of the stratum's own value from the rest of its group,

        b_i = lam_i * m_S(i) + (1 - lam_i) * (alpha_o + beta_o * x_S(i)),    x_S: mean of g's rows outside S,

    (alpha_o, beta_o) the least-squares line of m_S' on x_S' over the strata S' of outcome o in the
    other groups of the batch, x_S clamped to the range of their x_S' and the value to the range of
    their m_S' (rest_prediction; so b stays within the rewards' range). Why: a stratum of one in a
    group of 32 is otherwise pulled toward 31 rows of the other outcome, whose mean is far from its
    value when outcomes and block-2 rewards go together (a lone right answer on a prompt the policy
    rates as hard comes with a low confidence); across prompts, a stratum's value moves with the
    rest of its group's mean, and the line reads that off the other prompts. Validity: the line and
    its ranges come from other groups and x_S from rows outside S, so where there is a line b_i's
    weight on r_i is lam / |S(i)|, below OCB's 1 / |S(i)| and below the group-mean target's
    lam / |S(i)| + (1 - lam) / n_g. Where there is none (a stratum that is its whole group; fewer
    than MIN_REST_FIT strata of the outcome with an x in the other groups; x that do not spread; a
    fit that is not finite) the target is the group mean. The line is fitted on this batch alone
    (history pools only lam's sums), so in batches of MIN_REST_FIT groups or fewer it is plain
    ocb_eb. Measured in benchmarks/RESULTS.md ("The rest of the group as the target").
    """
    _check_eb(pool, pretest, history, toward)
    lam = eb_weights(r, group, outcome, pool, pretest, history, state)
    if not len(r):
        return np.zeros(0)
    ids, _ = strata(group, outcome)
    s_sums, s_counts = _segment_mean(r, ids, int(ids.max(initial=-1)) + 1)
    target = group_mean(r, group, outcome)
    if toward == "rest":
        predicted, fitted = rest_prediction(r, group, outcome)
        target = np.where(fitted, predicted, target)
    return lam * (s_sums / np.maximum(s_counts, 1)) + (1.0 - lam) * target


def _column_memory(state: dict | None, col: int) -> tuple[str, dict | None]:
    """(key, the column's memory) for a stateful baseline: state[str(col)], a new dict if absent
    (stored by the caller only once the baseline put something in it), None without a state."""
    if state is None:
        return str(col), None
    memory = state.get(str(col), {})
    if not isinstance(memory, dict):
        raise ValueError(f"state[{str(col)!r}] (block {col + 1}'s memory) must be a dict, got {type(memory).__name__}")
    return str(col), memory


def _group_std(r: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Unbiased standard deviation (ddof=1, as torch.std in TRL and verl) of r within each group,
    broadcast to rows; a group of one has std 0."""
    num = int(group.max(initial=-1)) + 1
    sums, counts = _segment_mean(r, group, num)
    sq = np.bincount(group, weights=r * r, minlength=num)[group]
    var = (sq - sums * sums / counts) / np.maximum(counts - 1, 1)
    return np.sqrt(np.maximum(var, 0.0))


def _to_numpy(x: Any) -> np.ndarray:
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _dense_ids(values: np.ndarray, name: str) -> np.ndarray:
    try:
        return np.unique(values, return_inverse=True)[1].reshape(-1).astype(np.int64)
    except TypeError as err:
        raise ValueError(f"{name} must hold comparable values (ints or strings): {err}") from None


def blockwise_advantages(
    rewards: Any,
    group_ids: Any,
    outcomes: Any = None,
    baseline: str = "ocb",
    scale: str = "none",
    *,
    eps: float = DEFAULT_EPS,
    state: dict | None = None,
    **options: Any,
) -> Any:
    """Per-block advantages A[i, k] = (r[i, k] - b[i, k]) / s[i, k] (paper Algorithm 1).

    Args:
        rewards: [N, K] floats, reward of block k of completion i. Every value must be finite:
            a non-finite reward raises ValueError naming the rows, since a NaN would silently
            poison the baselines of every other member of its group.
        group_ids: [N], completions of the same prompt share an id (ints or strings; order free).
        outcomes: [N, K] ints; column k is the intermediate outcome of the prefix before block k
            (column 0 is unused). Any number of distinct integer values. Required by the ocb*
            baselines when K >= 2.
        baseline: the baseline of blocks k >= 2, a name in BASELINES. Block 1 always uses the
            group mean.
        scale: "none" (the paper), "group" (divide by the std of that block's rewards within the
            group, ddof=1, plus eps: GRPO) or "batch" (the std over the whole batch plus eps).
        eps: added to the std when scaling.
        state: the memory of a baseline that pools over batches (ocb_eb with history > 0): a dict
            the caller keeps for the run and passes with every batch, once (one dict per estimator);
            column col >= 1 (block k = col + 1) reads and updates its own entry state[str(col)], and
            state["num_blocks"] records K (a state of another block layout is refused). Plain
            strings, lists and floats: json.dumps can save it. Untouched by the other baselines and
            by ocb_eb without history.
        **options: passed to the baseline (e.g. shrink=... for "ocb_shrink").

    Returns:
        [N, K] advantages; numpy in -> numpy float64 out, torch in -> torch out (rewards' dtype
        and device).

    Edge cases: N = 0 gives an empty [0, K]; a group of one gets advantage 0 in block 1 (its own
    mean); a stratum of one gets 0 under ocb and ocb_loo and a shrunken group-mean advantage under
    ocb_shrink; a stratum holding the whole group equals group_mean.
    """
    check_options(baseline, options)
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {SCALES}")

    r = _to_numpy(rewards).astype(np.float64, copy=False)
    if r.ndim != 2:
        raise ValueError(f"rewards must be [N, K], got shape {r.shape}")
    n, k = r.shape
    g = _to_numpy(group_ids)
    if g.shape != (n,):
        raise ValueError(f"group_ids must be [N] = [{n}] to match rewards, got shape {g.shape}")
    bad = ~np.isfinite(r)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(f"non-finite rewards in rows {rows[:20].tolist()}{' ...' if len(rows) > 20 else ''}")

    o = None
    if outcomes is not None:
        o = _to_numpy(outcomes)
        if o.shape != (n, k):
            raise ValueError(f"outcomes must be [N, K] = [{n}, {k}] to match rewards, got shape {o.shape}")
        if o.size and not (np.issubdtype(o.dtype, np.integer) or np.issubdtype(o.dtype, np.bool_)):
            if not (np.issubdtype(o.dtype, np.floating) and np.all(np.isfinite(o)) and np.all(o == np.round(o))):
                raise ValueError("outcomes must be integers (one intermediate-outcome id per block)")
        o = o.astype(np.int64)
    elif baseline in NEEDS_OUTCOMES and k > 1:
        raise ValueError(f"baseline {baseline!r} needs outcomes ([N, K] ints) for blocks k >= 2")

    if state is not None and baseline in STATEFUL and k > 1:
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict the caller keeps, got {type(state).__name__}")
        if "num_blocks" in state and state["num_blocks"] != k:
            raise ValueError(f"state['num_blocks'] is {state['num_blocks']!r}: it holds the memory of another block "
                             f"layout than this batch's {k} blocks; keep one state per block layout")

    adv = np.zeros((n, k), dtype=np.float64)
    if n:
        group = _dense_ids(g, "group_ids")
        for col in range(k):
            rc = r[:, col]
            if col == 0:
                b = group_mean(rc, group, None)
            else:
                oc = _dense_ids(o[:, col], "outcomes") if o is not None else None
                kwargs = dict(options)
                if baseline in STATEFUL:
                    key, memory = _column_memory(state, col)
                    kwargs["state"] = memory
                b = np.asarray(BASELINES[baseline](rc, group, oc, **kwargs), dtype=np.float64)
                if baseline in STATEFUL and memory:  # kept only once the baseline stored something
                    state[key] = memory
                    state["num_blocks"] = k
                if b.shape != (n,):
                    raise ValueError(f"baseline {baseline!r} returned shape {b.shape}, expected ({n},)")
            a = rc - b
            if scale == "group":
                a = a / (_group_std(rc, group) + eps)
            elif scale == "batch":
                a = a / ((rc.std(ddof=1) if n > 1 else 0.0) + eps)
            adv[:, col] = a

    if torch is not None and isinstance(rewards, torch.Tensor):
        dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
        return torch.as_tensor(adv, dtype=dtype, device=rewards.device)
    return adv
