"""Blockwise advantage estimators against a direct, loop-by-loop implementation of the paper's
formulas (Algorithm 1, Eq. 5), plus the properties OCB must have."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from bae.advantages import (BASELINES, MIN_PRETEST, MIN_REST_FIT, blockwise_advantages, check_options, eb_weights,
                            ocb_eb, register_baseline, rest_prediction)

EPS = 1e-6


def eb_reference(r, g, o, pool="others", pretest=None):
    """ocb_eb's lam_i, member by member: the one-way ANOVA estimates of sigma2 and tau2 from the
    groups in the pool (every group but i's own, or all), lam = tau2 n_s / (tau2 n_s + sigma2),
    1 where they are undefined or sigma2 = 0; with pretest = alpha, tau2 = 0 unless
    F = (SSB / df_B) / sigma2 > F_{1 - alpha}(df_B, df_W)."""
    n = len(r)
    lam = np.ones(n)
    for i in range(n):
        ssw = dfw = ssb = dfb = d = 0.0
        mixed = 0
        for h in sorted(set(g.tolist())):
            if pool == "others" and h == g[i]:
                continue
            members = [j for j in range(n) if g[j] == h]
            values = sorted({o[j] for j in members})
            m_g = np.mean([r[j] for j in members])
            squares = 0.0
            for v in values:
                s = [r[j] for j in members if o[j] == v]
                ssw += sum((x - np.mean(s)) ** 2 for x in s)
                dfw += len(s) - 1
                ssb += len(s) * (np.mean(s) - m_g) ** 2
                squares += len(s) ** 2
            if len(values) > 1:  # a group of one stratum says nothing about tau2
                dfb += len(values) - 1
                d += len(members) - squares / len(members)
                mixed += 1
        if dfw == 0 or mixed == 0:
            continue
        sigma2 = ssw / dfw
        tau2 = max(ssb - sigma2 * dfb, 0.0) / d
        if pretest is not None:
            f_stat = (ssb / dfb) / sigma2 if sigma2 > 0 else (np.inf if ssb > 0 else 0.0)
            if not f_stat > scipy_stats.f.ppf(1 - pretest, dfb, dfw):
                tau2 = 0.0
        n_s = sum(1 for j in range(n) if g[j] == g[i] and o[j] == o[i])
        if sigma2 > 0:
            lam[i] = tau2 * n_s / (tau2 * n_s + sigma2)
    return lam


def reference(r, g, o, baseline, scale="none", shrink=1.0, eps=EPS, pool="others"):
    """A[i, k] = (r_ik - b_ik) / s_ik, computed member by member with Python loops."""
    n, k_all = r.shape
    out = np.zeros((n, k_all))
    for i in range(n):
        group = [j for j in range(n) if g[j] == g[i]]
        for k in range(k_all):
            group_mean = np.mean([r[j, k] for j in group])
            stratum = [j for j in group if o is not None and o[j, k] == o[i, k]]
            if k == 0 or baseline == "group_mean":
                b = group_mean
            elif baseline == "none":
                b = 0.0
            elif baseline == "batch_mean":
                b = np.mean(r[:, k])
            elif baseline == "ocb":
                b = np.mean([r[j, k] for j in stratum])
            elif baseline == "ocb_loo":
                others = [r[j, k] for j in stratum if j != i]
                b = np.mean(others) if others else r[i, k]
            elif baseline == "ocb_shrink":
                lam = len(stratum) / (len(stratum) + shrink)
                b = lam * np.mean([r[j, k] for j in stratum]) + (1 - lam) * group_mean
            elif baseline == "ocb_eb":
                lam = eb_reference(r[:, k], g, o[:, k], pool)[i]
                b = lam * np.mean([r[j, k] for j in stratum]) + (1 - lam) * group_mean
            a = r[i, k] - b
            if scale == "group":
                a /= (np.std([r[j, k] for j in group], ddof=1) if len(group) > 1 else 0.0) + eps
            elif scale == "batch":
                a /= np.std(r[:, k], ddof=1) + eps
            out[i, k] = a
    return out


def random_batch(seed, k=2, outcome_values=2):
    """Groups of random sizes 1..9 (so groups and strata of one occur), shuffled rows, string ids."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 10, size=rng.integers(1, 6))
    g = np.concatenate([[f"prompt-{p}"] * s for p, s in enumerate(sizes)])
    n = len(g)
    r = rng.normal(size=(n, k)) * rng.uniform(0.1, 3)
    r[:, 0] = rng.integers(0, 2, size=n)  # solution block: correctness
    o = rng.integers(0, outcome_values, size=(n, k))
    perm = rng.permutation(n)
    return r[perm], g[perm], o[perm]


@pytest.mark.parametrize("baseline", ["none", "batch_mean", "group_mean", "ocb", "ocb_loo", "ocb_shrink", "ocb_eb"])
@pytest.mark.parametrize("scale", ["none", "group", "batch"])
@pytest.mark.parametrize("seed", range(8))
def test_every_estimator_matches_the_direct_formula(baseline, scale, seed):
    r, g, o = random_batch(seed, k=3, outcome_values=1 + seed % 4)  # multi-bin outcomes too
    got = blockwise_advantages(r, g, o, baseline=baseline, scale=scale)
    np.testing.assert_allclose(got, reference(r, g, o, baseline, scale), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shrink", [0.0, 0.5, 3.0, 100.0])
def test_ocb_shrink_strength(shrink):
    r, g, o = random_batch(11)
    got = blockwise_advantages(r, g, o, baseline="ocb_shrink", shrink=shrink)
    np.testing.assert_allclose(got, reference(r, g, o, "ocb_shrink", shrink=shrink), atol=1e-12)
    if shrink == 0.0:  # no prior weight: plain OCB
        np.testing.assert_allclose(got, blockwise_advantages(r, g, o, baseline="ocb"), atol=1e-12)


@pytest.mark.parametrize("baseline", sorted(BASELINES))
def test_permuting_a_group_permutes_its_advantages(baseline):
    r, g, o = random_batch(3)
    perm = np.random.default_rng(0).permutation(len(g))
    a = blockwise_advantages(r, g, o, baseline=baseline)
    b = blockwise_advantages(r[perm], g[perm], o[perm], baseline=baseline)
    np.testing.assert_allclose(b, a[perm], atol=1e-12)


def test_shifting_one_stratum_leaves_its_ocb_advantages_unchanged():
    r, g, o = random_batch(4)
    a = blockwise_advantages(r, g, o, baseline="ocb")
    stratum = (g == g[0]) & (o[:, 1] == o[0, 1])
    shifted = r.copy()
    shifted[stratum, 1] += 7.5
    b = blockwise_advantages(shifted, g, o, baseline="ocb")
    np.testing.assert_allclose(b, a, atol=1e-12)  # that stratum and every other one
    # group_mean is not invariant to it (the group's other stratum sees the shift), unless the
    # stratum is the whole group
    c = blockwise_advantages(shifted, g, o, baseline="group_mean")
    if stratum.sum() < (g == g[0]).sum():
        assert not np.allclose(c[:, 1], blockwise_advantages(r, g, o, baseline="group_mean")[:, 1])


@pytest.mark.parametrize("baseline", ["ocb", "ocb_loo"])
def test_advantages_of_a_stratum_sum_to_zero(baseline):
    r, g, o = random_batch(5, outcome_values=3)
    a = blockwise_advantages(r, g, o, baseline=baseline)
    for key in {(gi, oi) for gi, oi in zip(g, o[:, 1])}:
        members = (g == key[0]) & (o[:, 1] == key[1])
        assert abs(a[members, 1].sum()) < 1e-9
    for gi in set(g):  # block 1 uses the group mean: sums to zero per group
        assert abs(a[g == gi, 0].sum()) < 1e-9


def grpo_advantages(scores, group_size, normalise):
    """TRL / verl GRPO: (s - mean_g) / (std_g + eps) with torch.std (unbiased), or s - mean_g
    (Dr.GRPO) when not normalised."""
    s = torch.as_tensor(scores, dtype=torch.float64).view(-1, group_size)
    a = s - s.mean(1, keepdim=True)
    if normalise:
        a = a / (s.std(1, keepdim=True) + EPS)
    return a.view(-1).numpy()


@pytest.mark.parametrize("normalise", [True, False])
def test_one_block_is_grpo(normalise):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 2, size=8 * 6).astype(float) + rng.normal(size=48) * 0.1
    groups = np.repeat(np.arange(6), 8)
    got = blockwise_advantages(scores[:, None], groups, baseline="ocb", scale="group" if normalise else "none")
    np.testing.assert_allclose(got[:, 0], grpo_advantages(scores, 8, normalise), atol=1e-12)


def test_group_of_one_and_stratum_of_one():
    r = np.array([[1.0, -0.3], [0.0, -0.5], [1.0, -0.1], [1.0, -0.9]])
    g = np.array([0, 1, 1, 1])  # prompt 0 has one completion
    o = np.array([[0, 1], [0, 0], [0, 1], [0, 1]])  # in group 1, row 1 is alone in its stratum
    for baseline in ("ocb", "ocb_loo", "ocb_shrink", "ocb_eb", "group_mean"):
        a = blockwise_advantages(r, g, o, baseline=baseline)
        assert a[0, 0] == 0.0 and a[0, 1] == 0.0  # a group of one: nothing to compare with
    assert blockwise_advantages(r, g, o, baseline="ocb")[1, 1] == 0.0
    assert blockwise_advantages(r, g, o, baseline="ocb_loo")[1, 1] == 0.0
    # shrink=1: lam = 1/2, so A = r - (r/2 + m_g/2) = (r - m_g)/2
    m_g = r[1:, 1].mean()
    assert blockwise_advantages(r, g, o, baseline="ocb_shrink")[1, 1] == pytest.approx((r[1, 1] - m_g) / 2)
    # ocb_loo for the others: mean of the other members of the stratum {2, 3}
    assert blockwise_advantages(r, g, o, baseline="ocb_loo")[2, 1] == pytest.approx(r[2, 1] - r[3, 1])


def test_one_stratum_for_the_whole_group_equals_group_mean():
    r, g, _ = random_batch(6)
    o = np.zeros_like(r, dtype=int)
    expected = blockwise_advantages(r, g, o, baseline="group_mean")
    for baseline in ("ocb", "ocb_shrink", "ocb_eb"):
        np.testing.assert_allclose(blockwise_advantages(r, g, o, baseline=baseline), expected, atol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rewards_name_the_rows(bad):
    r = np.zeros((5, 2))
    r[3, 1] = bad
    r[1, 0] = bad
    with pytest.raises(ValueError, match=r"rows \[1, 3\]"):
        blockwise_advantages(r, np.zeros(5), np.zeros((5, 2), int))


@pytest.mark.parametrize(
    "rewards, groups, outcomes, message",
    [
        (np.zeros(4), np.zeros(4), None, "rewards must be"),
        (np.zeros((4, 2)), np.zeros(3), np.zeros((4, 2), int), "group_ids must be"),
        (np.zeros((4, 2)), np.zeros(4), np.zeros((4, 3), int), "outcomes must be"),
        (np.zeros((4, 2)), np.zeros(4), np.full((4, 2), 0.5), "integers"),
        (np.zeros((4, 2)), np.zeros(4), None, "needs outcomes"),
    ],
)
def test_bad_shapes_and_types_are_clear_errors(rewards, groups, outcomes, message):
    with pytest.raises(ValueError, match=message):
        blockwise_advantages(rewards, groups, outcomes)


def test_bad_names_and_options_are_clear_errors():
    r, g, o = random_batch(0)
    with pytest.raises(ValueError, match="unknown baseline"):
        blockwise_advantages(r, g, o, baseline="ocbb")
    with pytest.raises(ValueError, match="unknown scale"):
        blockwise_advantages(r, g, o, scale="std")
    with pytest.raises(ValueError, match="'ocb' takes no option 'shrink'; 'shrink' is an option of ocb_shrink; "
                                         "'ocb' takes no options"):
        blockwise_advantages(r, g, o, baseline="ocb", shrink=2.0)
    with pytest.raises(ValueError, match="shrink must be"):
        blockwise_advantages(r, g, o, baseline="ocb_shrink", shrink=-1.0)
    with pytest.raises(ValueError, match="pool must be"):
        blockwise_advantages(r, g, o, baseline="ocb_eb", pool="group")
    with pytest.raises(ValueError, match="'ocb_eb' takes 'pool', 'pretest', 'history'"):
        blockwise_advantages(r, g, o, baseline="ocb_eb", shrink=1.0)
    with pytest.raises(ValueError, match=r"takes no option 'histroy' \(did you mean 'history'\?\)"):
        blockwise_advantages(r, g, o, baseline="ocb_eb", histroy=3)


def test_empty_batch():
    assert blockwise_advantages(np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2), int)).shape == (0, 2)


def test_torch_in_torch_out_and_same_values():
    r, g, o = random_batch(7)
    expected = blockwise_advantages(r, g, o)
    got = blockwise_advantages(torch.tensor(r, dtype=torch.float32), torch.tensor(np.unique(g, return_inverse=True)[1]),
                               torch.tensor(o))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    assert isinstance(blockwise_advantages(r, g, o), np.ndarray)


def test_a_user_baseline_registers_by_name():
    name = "median_of_group_test"

    @register_baseline(name)
    def median(r, group, outcome):
        return np.array([np.median(r[group == gi]) for gi in group])

    try:
        r, g, o = random_batch(8)
        a = blockwise_advantages(r, g, o, baseline=name)
        for i in range(len(g)):
            assert a[i, 1] == pytest.approx(r[i, 1] - np.median(r[g == g[i], 1]))
        with pytest.raises(ValueError, match="already registered"):
            register_baseline(name)(median)
    finally:
        del BASELINES[name]


def test_a_baseline_with_open_options_takes_any_option():
    """check_options follows the signature: a baseline with **options accepts what its signature does."""
    name = "open_options_test"

    @register_baseline(name)
    def open_options(r, group, outcome, **options):
        return np.full(len(r), float(options.get("level", 0.0)))

    try:
        r, g, o = random_batch(9)
        a = blockwise_advantages(r, g, o, baseline=name, level=0.5)
        np.testing.assert_allclose(a[:, 1], r[:, 1] - 0.5)
    finally:
        del BASELINES[name]


def test_every_registered_baseline_has_the_shared_signature():
    rng = np.random.default_rng(1)
    r, group, outcome = rng.normal(size=10), np.repeat([0, 1], 5), rng.integers(0, 2, 10)
    for name, fn in BASELINES.items():
        b = np.asarray(fn(r, group, outcome))
        assert b.shape == r.shape and np.all(np.isfinite(b)), name


# -- ocb_eb: the stratum mean shrunk toward the group mean by an empirical-Bayes weight ----------


@pytest.mark.parametrize("pool", ["others", "batch"])
@pytest.mark.parametrize("seed", range(12))
def test_ocb_eb_weights_match_the_anova_formula(pool, seed):
    """lam_i from the vectorised totals equals the per-row pooled ANOVA estimate, for groups and
    strata of one, multi-bin outcomes and batches where some pools cannot estimate the ratio."""
    r, g, o = random_batch(seed, k=2, outcome_values=1 + seed % 4)
    gid = np.unique(g, return_inverse=True)[1]
    oid = np.unique(o[:, 1], return_inverse=True)[1]
    np.testing.assert_allclose(eb_weights(r[:, 1], gid, oid, pool), eb_reference(r[:, 1], g, o[:, 1], pool),
                               rtol=1e-9, atol=1e-12)
    got = blockwise_advantages(r, g, o, baseline="ocb_eb", pool=pool)
    np.testing.assert_allclose(got, reference(r, g, o, "ocb_eb", pool=pool), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("pool", ["others", "batch"])
@pytest.mark.parametrize("seed", range(12))
def test_ocb_eb_pretest_weights_match_the_f_test(pool, seed):
    """pretest = alpha: lam_i is the plain weight where the pool's F statistic exceeds the F(df_B,
    df_W) quantile 1 - alpha and 0 elsewhere, row by row (the loop reference runs the test itself)."""
    r, g, o = random_batch(seed, k=2, outcome_values=1 + seed % 4)
    gid = np.unique(g, return_inverse=True)[1]
    oid = np.unique(o[:, 1], return_inverse=True)[1]
    for alpha in (0.05, 0.5):
        np.testing.assert_allclose(eb_weights(r[:, 1], gid, oid, pool, pretest=alpha),
                                   eb_reference(r[:, 1], g, o[:, 1], pool, pretest=alpha), rtol=1e-9, atol=1e-12)


def _two_strata_batch(seed, groups=40, size=8, gap=0.0, noise=1.0):
    """groups x size rows; outcome 1 with prob 1/2; block-2 reward = gap * outcome + prompt effect + noise."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), size)
    o = rng.integers(0, 2, len(g))
    r2 = gap * o + rng.normal(size=groups)[g] + noise * rng.normal(size=len(g))
    return np.stack([rng.integers(0, 2, len(g)).astype(float), r2], 1), g, np.stack([np.zeros_like(o), o], 1)


@pytest.mark.parametrize("pool", ["others", "batch"])
def test_ocb_eb_is_ocb_without_noise_within_strata(pool):
    """sigma2 = 0 (every stratum constant, strata different): lam = 1, exactly OCB."""
    r, g, o = _two_strata_batch(0, gap=1.0, noise=0.0)
    r[:, 1] = np.round(r[:, 1], 3)
    assert np.all(eb_weights(r[:, 1], g, o[:, 1], pool) == 1.0)
    np.testing.assert_allclose(blockwise_advantages(r, g, o, baseline="ocb_eb", pool=pool),
                               blockwise_advantages(r, g, o, baseline="ocb"), atol=1e-12)


def test_ocb_eb_tends_to_ocb_when_strata_differ_much_more_than_noise():
    """tau2 / sigma2 -> inf: lam -> 1, the advantages -> OCB's (the gap between them shrinks with it)."""
    gaps = []
    for gap in (1.0, 10.0, 100.0):
        r, g, o = _two_strata_batch(1, gap=gap, noise=0.1)
        gaps.append(np.abs(blockwise_advantages(r, g, o, baseline="ocb_eb")
                           - blockwise_advantages(r, g, o, baseline="ocb")).max())
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3


@pytest.mark.parametrize("pool", ["others", "batch"])
def test_ocb_eb_is_group_mean_when_strata_have_equal_means(pool):
    """Strata whose means spread less than noise would make them (here: within each group, both
    strata hold the same multiset of rewards, so SSB = 0): tau2 = 0, lam = 0, exactly group_mean,
    although every stratum's own mean is noisy."""
    rng = np.random.default_rng(2)
    half = rng.normal(size=(30, 4))  # [groups, 4] rewards of each stratum (the same in both)
    r2 = np.concatenate([half, half[:, rng.permutation(4)]], axis=1).reshape(-1)  # [groups * 8]
    g = np.repeat(np.arange(30), 8)
    o = np.tile(np.repeat([0, 1], 4), 30)
    r = np.stack([np.zeros_like(r2), r2], 1)
    oo = np.stack([np.zeros_like(o), o], 1)
    assert np.all(eb_weights(r2, g, o, pool) == 0.0)
    np.testing.assert_allclose(blockwise_advantages(r, g, oo, baseline="ocb_eb", pool=pool),
                               blockwise_advantages(r, g, oo, baseline="group_mean"), atol=1e-12)


def test_ocb_eb_is_group_mean_when_strata_carry_no_signal():
    """No stratum effect at all (the flat regime): over many batches the weight is small and the
    advantages sit between group_mean's and OCB's, much nearer group_mean (RMSE to each, summed)."""
    to_gm = to_ocb = 0.0
    lams = []
    for seed in range(20):
        r, g, o = _two_strata_batch(seed, gap=0.0)
        lams.append(eb_weights(r[:, 1], g, o[:, 1]).mean())
        a = blockwise_advantages(r, g, o, baseline="ocb_eb")[:, 1]
        to_gm += ((a - blockwise_advantages(r, g, o, baseline="group_mean")[:, 1]) ** 2).sum()
        to_ocb += ((a - blockwise_advantages(r, g, o, baseline="ocb")[:, 1]) ** 2).sum()
    assert np.mean(lams) < 0.25 and to_gm < to_ocb / 10


def test_ocb_eb_pretest_keeps_flat_strata_at_the_group_mean():
    """No stratum effect: the plain estimate gives lam > 0 to about half of the rows (tau2's
    positive part: SSB exceeds its null mean about half of the time), the pretest at alpha = 0.05
    to about 5% of them (F exceeds its 95% quantile with probability alpha under the null); the
    squared distance of the advantages to group_mean's follows."""
    plain, tested = [], []
    gap_plain = gap_tested = 0.0
    for seed in range(200):
        r, g, o = _two_strata_batch(seed, groups=16, gap=0.0)
        plain.append((eb_weights(r[:, 1], g, o[:, 1]) > 0).mean())
        tested.append((eb_weights(r[:, 1], g, o[:, 1], pretest=0.05) > 0).mean())
        gm = blockwise_advantages(r, g, o, baseline="group_mean")[:, 1]
        gap_plain += ((blockwise_advantages(r, g, o, baseline="ocb_eb")[:, 1] - gm) ** 2).sum()
        gap_tested += ((blockwise_advantages(r, g, o, baseline="ocb_eb", pretest=0.05)[:, 1] - gm) ** 2).sum()
    assert 0.35 < np.mean(plain) < 0.65 and 0.01 < np.mean(tested) < 0.09
    assert gap_tested < gap_plain / 3


def test_ocb_eb_pretest_changes_nothing_when_strata_clearly_differ():
    """A stratum gap of 3 noise sd over 40 groups: F is far above any quantile, so the pretest
    passes for every row and the weights equal the plain ones."""
    r, g, o = _two_strata_batch(5, gap=3.0)
    np.testing.assert_array_equal(eb_weights(r[:, 1], g, o[:, 1], pretest=0.01), eb_weights(r[:, 1], g, o[:, 1]))
    assert eb_weights(r[:, 1], g, o[:, 1]).min() > 0.5


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, True, "0.05", float("nan"), float("inf"), 1e-17])
def test_ocb_eb_refuses_a_bad_pretest_level(bad):
    r, g, o = _two_strata_batch(0)
    with pytest.raises(ValueError, match="pretest"):
        blockwise_advantages(r, g, o, baseline="ocb_eb", pretest=bad)


def test_ocb_eb_pretest_takes_any_real_level_down_to_its_floor():
    """numpy scalars are levels like floats; at the smallest accepted level (MIN_PRETEST) the F
    quantile is finite, so a clear stratum gap still passes the test (lam as without it)."""
    r, g, o = _two_strata_batch(5, gap=30.0)
    plain = eb_weights(r[:, 1], g, o[:, 1])
    np.testing.assert_array_equal(eb_weights(r[:, 1], g, o[:, 1], pretest=np.float32(0.05)), plain)
    np.testing.assert_array_equal(eb_weights(r[:, 1], g, o[:, 1], pretest=MIN_PRETEST), plain)


def test_ocb_eb_weight_grows_with_stratum_size_and_gap():
    """lam = tau2 n_s / (tau2 n_s + sigma2): larger strata and larger between-strata spread trust
    the stratum mean more (shrink less)."""
    r, g, o = _two_strata_batch(3, gap=1.0)
    lam = eb_weights(r[:, 1], g, o[:, 1])
    sizes = np.array([np.sum((g == g[i]) & (o[:, 1] == o[i, 1])) for i in range(len(g))])
    within = g == g[0]  # one group: one lam per stratum size, increasing in it
    order = np.argsort(sizes[within])
    assert np.all(np.diff(lam[within][order]) >= -1e-15)
    r_big, g_big, o_big = _two_strata_batch(3, gap=3.0)
    assert eb_weights(r_big[:, 1], g_big, o_big[:, 1]).mean() > lam.mean()


@pytest.mark.parametrize("pretest", [None, 0.5])
@pytest.mark.parametrize("seed", range(6))
def test_ocb_eb_depends_on_its_own_reward_at_most_as_much_as_ocb(seed, pretest):
    """The validity property (pool="others", with or without the pretest): lam of group g does not
    depend on g's rewards, so b_i is linear in them; its weight on r_i is lam/|S(i)| + (1 - lam)/n_g <= 1/|S(i)|, OCB's weight.
    Checked by moving r_i alone, by a large amount, and reading the change of b_i."""
    r, g, o = random_batch(seed, k=2, outcome_values=2 + seed % 2)
    gid = np.unique(g, return_inverse=True)[1]
    oid = np.unique(o[:, 1], return_inverse=True)[1]
    base = ocb_eb(r[:, 1], gid, oid, pretest=pretest)
    lam = eb_weights(r[:, 1], gid, oid, pretest=pretest)
    for i in range(len(g)):
        moved = r[:, 1].copy()
        moved[i] += 50.0
        b = ocb_eb(moved, gid, oid, pretest=pretest)
        same_group = gid == gid[i]
        np.testing.assert_allclose(eb_weights(moved, gid, oid, pretest=pretest)[same_group], lam[same_group], atol=1e-12)
        n_s = np.sum(same_group & (oid == oid[i]))
        n_g = np.sum(same_group)
        w = (b[i] - base[i]) / 50.0
        assert w == pytest.approx(lam[i] / n_s + (1 - lam[i]) / n_g, abs=1e-9)
        assert w <= 1.0 / n_s + 1e-12  # OCB's self-weight


def test_ocb_eb_pooled_over_the_whole_batch_moves_with_its_own_reward():
    """Under pool="batch" the weight of i's group does move with r_i (by little, O(1 / groups)):
    the exact property above holds for the default pool only."""
    r, g, o = _two_strata_batch(4, gap=1.0)
    moved = r[:, 1].copy()
    moved[0] += 1.0
    own = g == g[0]
    before, after = eb_weights(r[:, 1], g, o[:, 1], "batch"), eb_weights(moved, g, o[:, 1], "batch")
    assert 0 < before[0] < 1 and 0 < np.abs(after[own] - before[own]).max() < 0.05


def test_ocb_eb_edge_cases():
    """N = 0; a batch of one group (pool="others" has nothing to pool: OCB); all strata of one
    (no sigma2: OCB); a group of one gets 0."""
    assert ocb_eb(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (0,)
    r = np.array([0.1, 0.5, -0.3, 0.9, 0.2])
    one_group = np.zeros(5, np.int64)
    o = np.array([0, 0, 1, 1, 1])
    np.testing.assert_allclose(ocb_eb(r, one_group, o), BASELINES["ocb"](r, one_group, o))
    assert not np.allclose(ocb_eb(r, one_group, o, pool="batch"), BASELINES["ocb"](r, one_group, o))
    singletons = np.arange(5) % 2  # two groups, every stratum of one
    g = np.array([0, 0, 1, 1, 1])
    o = np.array([0, 1, 0, 1, 2])
    np.testing.assert_allclose(ocb_eb(r, g, o), r)  # = OCB: A = 0
    a = blockwise_advantages(np.stack([r, r], 1), np.array([0, 1, 1, 1, 1]), np.stack([singletons, singletons], 1),
                             baseline="ocb_eb")
    assert a[0, 0] == 0.0 and a[0, 1] == 0.0


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    values=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    pool=st.sampled_from(["others", "batch"]),
)
def test_ocb_eb_properties_on_any_batch(sizes, values, seed, pool):
    """For any batch: lam in [0, 1] and constant on a stratum; b_i between the stratum mean and the
    group mean; the loop reference agrees; shifting every reward by a constant shifts b by it."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(len(sizes)), sizes)
    o = rng.integers(0, values, len(g))
    r = np.round(rng.normal(size=len(g)) * rng.uniform(0.01, 5), 4)
    lam = eb_weights(r, g, o, pool)
    assert np.all((lam >= 0) & (lam <= 1))
    np.testing.assert_allclose(lam, eb_reference(r, g, o, pool), rtol=1e-9, atol=1e-12)
    b = ocb_eb(r, g, o, pool=pool)
    m_s = BASELINES["ocb"](r, g, o)
    m_g = BASELINES["group_mean"](r, g, o)
    assert np.all(b >= np.minimum(m_s, m_g) - 1e-9) and np.all(b <= np.maximum(m_s, m_g) + 1e-9)
    np.testing.assert_allclose(ocb_eb(r + 3.0, g, o, pool=pool), b + 3.0, atol=1e-9)


# -- ocb_eb history: the pool also holds the last H batches' sums ---------------------------------


def _stacked(batches):
    """One batch holding `batches` (lists of (r [n, K], g [n] int, o [n, K])) with their groups renumbered
    apart: pooling earlier batches' sums is pooling over their groups as if they were in this batch."""
    rs, gs, os_, offset = [], [], [], 0
    for r, g, o in batches:
        rs.append(r), gs.append(g + offset), os_.append(o)
        offset += int(g.max()) + 1
    return np.concatenate(rs), np.concatenate(gs), np.concatenate(os_)


@pytest.mark.parametrize("pool", ["others", "batch"])
@pytest.mark.parametrize("pretest", [None, 0.05])
@pytest.mark.parametrize("history", [1, 3])
def test_ocb_eb_history_pools_the_last_batches_as_if_they_were_this_one(pool, pretest, history):
    """history = H: the pooled sums of batch t are those of batch t (all but the row's group under
    "others") plus every group of batches t-H .. t-1, so lam of batch t equals lam computed on the
    stack of those H + 1 batches, restricted to batch t's rows; older batches drop out."""
    batches = [_two_strata_batch(seed, groups=5, size=4, gap=0.4 * seed) for seed in range(6)]
    state = {}
    for t, (r, g, o) in enumerate(batches):
        got = blockwise_advantages(r, g, o, baseline="ocb_eb", pool=pool, pretest=pretest, history=history, state=state)
        window = batches[max(0, t - history): t + 1]
        sr, sg, so = _stacked(window)
        own = slice(len(sr) - len(r), len(sr))
        expected = blockwise_advantages(sr, sg, so, baseline="ocb_eb", pool=pool, pretest=pretest)[own]
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        assert len(state["1"]["eb_sums"]) == min(t + 1, history)
    assert history < 5 and not np.allclose(  # the window matters: without it batch 5 gets other advantages
        got, blockwise_advantages(r, g, o, baseline="ocb_eb", pool=pool, pretest=pretest))


def test_ocb_eb_history_keeps_the_weight_independent_of_the_own_group():
    """The validity property with a window: lam of group g reads other groups of this batch and
    earlier batches only, so moving g's rewards leaves its lam unchanged (and earlier batches are
    sampled before it)."""
    earlier = [_two_strata_batch(s, groups=6, size=4, gap=0.5) for s in range(2)]
    r, g, o = _two_strata_batch(9, groups=6, size=4, gap=0.5)
    state = {}
    for er, eg, eo in earlier:
        eb_weights(er[:, 1], eg, eo[:, 1], history=2, state=state)
    lam = eb_weights(r[:, 1], g, o[:, 1], history=2, state=dict(state, eb_sums=list(state["eb_sums"])))
    moved = r[:, 1].copy()
    moved[g == 0] += np.random.default_rng(0).normal(scale=5.0, size=(g == 0).sum())
    lam_moved = eb_weights(moved, g, o[:, 1], history=2, state=dict(state, eb_sums=list(state["eb_sums"])))
    np.testing.assert_allclose(lam_moved[g == 0], lam[g == 0], atol=1e-12)
    assert not np.allclose(lam_moved[g != 0], lam[g != 0])  # the others do read group 0


def test_ocb_eb_history_keeps_one_memory_per_block_and_skips_empty_batches():
    """K = 3: blocks 2 and 3 pool their own sums (state["1"], state["2"]); an empty batch adds nothing; a state of another K is refused."""
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(4), 5)
    r = rng.normal(size=(20, 3))
    o = rng.integers(0, 2, size=(20, 3))
    state = {}
    blockwise_advantages(r, g, o, baseline="ocb_eb", history=2, state=state)
    blockwise_advantages(np.zeros((0, 3)), np.zeros(0, int), np.zeros((0, 3), int), baseline="ocb_eb", history=2,
                         state=state)
    assert sorted(state) == ["1", "2", "num_blocks"] and all(len(state[k]["eb_sums"]) == 1 for k in ("1", "2"))
    assert state["1"]["eb_sums"] != state["2"]["eb_sums"]  # each block's own rewards and outcomes
    with pytest.raises(ValueError, match="state\\['num_blocks'\\] is 3: it holds the memory of another block layout"):
        blockwise_advantages(r[:, :2], g, o[:, :2], baseline="ocb_eb", history=2, state=state)


def test_ocb_eb_history_state_survives_json_and_refuses_a_broken_one():
    """The memory is plain JSON: a state saved with json and loaded back gives the same advantages
    (a resumed run keeps its window). A broken state (wrong length, not finite, negative counts,
    not a list) is refused with a message naming state['eb_sums']; a batch whose sums overflow is
    not kept; a numpy unsigned history keeps its window (no wrap-around of -history)."""
    import json

    batches = [_two_strata_batch(seed, groups=5, size=4, gap=0.5) for seed in range(3)]
    state = {}
    for r, g, o in batches[:2]:
        blockwise_advantages(r, g, o, baseline="ocb_eb", history=2, state=state)
    restored = json.loads(json.dumps(state))
    r, g, o = batches[2]
    np.testing.assert_array_equal(blockwise_advantages(r, g, o, baseline="ocb_eb", history=2, state=restored),
                                  blockwise_advantages(r, g, o, baseline="ocb_eb", history=2, state=state))
    for broken in ([[1.0] * 5], [[np.nan] * 6], [[1.0, -1.0, 1.0, 1.0, 1.0, 1.0]], [["a"] * 6], "sums"):
        with pytest.raises(ValueError, match=r"state\['eb_sums'\]"):
            blockwise_advantages(r, g, o, baseline="ocb_eb", history=2, state={"1": {"eb_sums": broken}})
    with pytest.raises(ValueError, match="state must be a dict"):
        blockwise_advantages(r, g, o, baseline="ocb_eb", history=2, state=[])
    kept = {}
    huge = r.copy()
    huge[:, 1] *= 1e160  # SSW and SSB overflow to inf
    with np.errstate(all="ignore"):
        blockwise_advantages(huge, g, o, baseline="ocb_eb", history=2, state=kept)
    assert kept["1"]["eb_sums"] == []
    unsigned = {}
    for r, g, o in batches:
        blockwise_advantages(r, g, o, baseline="ocb_eb", history=np.uint8(2), state=unsigned)
    assert len(unsigned["1"]["eb_sums"]) == 2


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2", None])
def test_ocb_eb_refuses_a_bad_history(bad):
    r, g, o = random_batch(0)
    with pytest.raises(ValueError, match="history must be"):
        blockwise_advantages(r, g, o, baseline="ocb_eb", history=bad, state={})


def test_ocb_eb_history_needs_a_state_and_state_is_no_option():
    r, g, o = random_batch(0)
    with pytest.raises(ValueError, match="needs their sums"):
        blockwise_advantages(r, g, o, baseline="ocb_eb", history=2)
    with pytest.raises(ValueError, match="'state' is not an option"):
        check_options("ocb_eb", {"state": {}})
    # history = 0 with a state is the plain estimate and leaves the state empty; so do the other baselines
    state = {}
    np.testing.assert_array_equal(blockwise_advantages(r, g, o, baseline="ocb_eb", state=state),
                                  blockwise_advantages(r, g, o, baseline="ocb_eb"))
    np.testing.assert_array_equal(blockwise_advantages(r, g, o, baseline="ocb", state=state),
                                  blockwise_advantages(r, g, o, baseline="ocb"))
    assert state == {}
    with pytest.raises(ValueError, match=r"state\['1'\] \(block 2's memory\) must be a dict"):
        blockwise_advantages(r, g, o, baseline="ocb_eb", history=2, state={"1": []})
    with pytest.raises(ValueError, match=r"state\['num_blocks'\] is '2'"):
        blockwise_advantages(r, g, o, baseline="ocb_eb", history=2, state={"num_blocks": "2"})


def test_a_stateful_baseline_must_take_a_state():
    with pytest.raises(ValueError, match="stateful but takes no `state`"):
        register_baseline("stateless_test", stateful=True)(lambda r, group, outcome: r)
    assert "stateless_test" not in BASELINES


# -- ocb_eb toward="rest": the target predicted from the rest of the group --------------------------


def _rest_batch(groups: int, size: int, seed: int):
    """Brier-like block-2 rewards: each prompt has a confidence level c; a right answer scores
    -(1 - c')^2 and a wrong one -c'^2 (c' = c plus noise), so a stratum's value moves with the rest
    of its group's mean (the situation the line is for). Pass rates spread over (0.02, 0.98)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), size)
    o = (rng.random(len(g)) < rng.uniform(0.02, 0.98, groups)[g]).astype(np.int64)
    c = np.clip(rng.uniform(0.05, 0.95, groups)[g] + rng.normal(0, 0.15, len(g)), 0, 1)
    return -(c - o) ** 2, g, o


def test_rest_prediction_is_the_line_fitted_on_the_other_groups():
    """rest_prediction: for a stratum S of group g with outcome o, alpha + beta x_S, where (alpha,
    beta) is the least-squares line of m_S' on x_S' over the strata S' of outcome o in the other
    groups (x: the mean of the group's rows outside the stratum), x_S clamped to the range of those
    x_S' and the value to the range of those m_S'; checked against np.polyfit."""
    r, g, o = _rest_batch(40, 8, seed=0)
    predicted, fitted = rest_prediction(r, g, o)
    means = {(gi, oi): r[(g == gi) & (o == oi)].mean() for gi, oi in set(zip(g, o))}
    rests = {(gi, oi): r[(g == gi) & (o != oi)].mean() for gi, oi in means if np.any((g == gi) & (o != oi))}
    checked = 0
    for i in range(0, len(r), 7):
        key = (g[i], o[i])
        points = [(rests[k], means[k]) for k in rests if k[1] == o[i] and k[0] != g[i]]
        assert fitted[i] == (key in rests and len(points) >= MIN_REST_FIT)
        if fitted[i]:
            xs, ys = zip(*points)
            beta, alpha = np.polyfit(xs, ys, 1)
            line = alpha + beta * np.clip(rests[key], min(xs), max(xs))
            assert predicted[i] == pytest.approx(np.clip(line, min(ys), max(ys)), abs=1e-9)
            checked += 1
    assert checked > 20


def test_ocb_eb_toward_rest_recovers_strata_on_a_line_and_keeps_the_validity_bound():
    """toward="rest": b = lam m_S + (1 - lam) (alpha + beta x_S), lam as toward="group_mean" (the
    same eb_weights). Where the strata's values lie exactly on a line in x, the target is the
    stratum's own mean. b_i is linear in its own group's rewards (lam and the line come from the
    other groups) with weight lam / |S(i)| on r_i, below OCB's 1 / |S(i)| and below the group-mean
    target's lam / |S(i)| + (1 - lam) / n_g."""
    r, g, o = _rest_batch(60, 8, seed=1)
    lam = eb_weights(r, g, o, pretest=0.05)
    b = ocb_eb(r, g, o, pretest=0.05, toward="rest")
    predicted, fitted = rest_prediction(r, g, o)
    m_s = BASELINES["ocb"](r, g, o)
    np.testing.assert_allclose(b, np.where(fitted, lam * m_s + (1 - lam) * predicted,
                                           ocb_eb(r, g, o, pretest=0.05)), atol=1e-12)
    assert fitted.mean() > 0.5  # the line is what is checked below
    for i in range(0, len(r), 11):
        moved = r.copy()
        moved[i] += 10.0
        n_s, n_g = np.sum((g == g[i]) & (o == o[i])), np.sum(g == g[i])
        w = (ocb_eb(moved, g, o, pretest=0.05, toward="rest")[i] - b[i]) / 10.0
        expected = lam[i] / n_s if fitted[i] else lam[i] / n_s + (1 - lam[i]) / n_g
        assert w == pytest.approx(expected, abs=1e-9) and w <= 1.0 / n_s + 1e-12
    # right strata whose value is exactly 0.5 - x (x: the group's wrong rows' mean): the target is it
    x = np.array([r[(g == gi) & (o == 0)].mean() if np.any((g == gi) & (o == 0)) else 0.0 for gi in g])
    exact = np.where(o == 1, 0.5 - x, r)
    predicted, fitted = rest_prediction(exact, g, o)
    x_right = {gi: x[g == gi][0] for gi in set(g[fitted & (o == 1)])}
    ends = [min(x_right, key=x_right.get), max(x_right, key=x_right.get)]  # clamped to the others' x range
    right = fitted & (o == 1) & ~np.isin(g, ends)
    assert right.sum() > 100
    np.testing.assert_allclose(predicted[right], exact[right], atol=1e-9)
    lowest = (g == ends[0]) & (o == 1)  # below every other x: the line's value at the others' lowest x
    np.testing.assert_allclose(predicted[lowest], 0.5 - sorted(x_right.values())[1], atol=1e-9)


def test_ocb_eb_toward_rest_falls_back_to_the_group_mean_without_a_line():
    """Fewer than MIN_REST_FIT strata of an outcome in the other groups, or a stratum that is its
    whole group, or x that do not spread: the target is the group mean (plain ocb_eb); N = 0 gives
    []; a bad `toward` is refused by name before any compute."""
    r, g, o = _rest_batch(MIN_REST_FIT // 2, 8, seed=2)  # too few groups for any line
    np.testing.assert_array_equal(ocb_eb(r, g, o, toward="rest"), ocb_eb(r, g, o))
    r, g, o = _rest_batch(60, 8, seed=3)
    o[g == 0] = 1  # group 0 is one stratum
    b = ocb_eb(r, g, o, toward="rest")
    np.testing.assert_allclose(b[g == 0], r[g == 0].mean())
    same_x = np.where(o == 1, -0.25, r)  # every wrong stratum's x is -0.25: no spread, no line for them
    wrong = o == 0
    assert not rest_prediction(same_x, g, o)[1][wrong].any() and rest_prediction(same_x, g, o)[1][~wrong].any()
    np.testing.assert_allclose(ocb_eb(same_x, g, o, toward="rest")[wrong], ocb_eb(same_x, g, o)[wrong], atol=1e-12)
    assert ocb_eb(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), toward="rest").shape == (0,)
    with pytest.raises(ValueError, match=r"toward must be one of \('group_mean', 'rest'\), got 'rests'"):
        check_options("ocb_eb", {"toward": "rests"})
    with pytest.raises(ValueError, match="toward must be one of"):
        blockwise_advantages(np.column_stack([r, r]), g, np.column_stack([o, o]), baseline="ocb_eb", toward="line")


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=40), values=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
def test_ocb_eb_toward_rest_is_finite_and_shift_equivariant_on_any_batch(sizes, values, seed):
    """For any batch: b is finite and within the batch's reward range (the target is clamped to the
    values the line was fitted on); shifting every reward by a constant shifts b by it (the line's
    intercept absorbs it); where no line is fitted b equals plain ocb_eb; raw outcome ids (a
    negative one, as MALFORMED_OUTCOME) give what their dense ids give."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(len(sizes)), sizes)
    o = rng.integers(0, values, len(g))
    r = np.round(rng.normal(size=len(g)) * rng.uniform(0.01, 5), 4)
    b = ocb_eb(r, g, o, toward="rest")
    assert np.all(np.isfinite(b)) and np.all((b >= r.min() - 1e-9) & (b <= r.max() + 1e-9))
    np.testing.assert_allclose(ocb_eb(r + 3.0, g, o, toward="rest"), b + 3.0, atol=1e-7)
    np.testing.assert_array_equal(rest_prediction(r, g, 2 * o - 1)[0], rest_prediction(r, g, o)[0])
    fitted = rest_prediction(r, g, o)[1]
    np.testing.assert_allclose(b[~fitted], ocb_eb(r, g, o)[~fitted], atol=1e-12)
