"""Blockwise advantage estimators against a direct, loop-by-loop implementation of the paper's
formulas (Algorithm 1, Eq. 5), plus the properties OCB must have."""

import numpy as np
import pytest
import torch

from bae.advantages import BASELINES, blockwise_advantages, register_baseline

EPS = 1e-6


def reference(r, g, o, baseline, scale="none", shrink=1.0, eps=EPS):
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


@pytest.mark.parametrize("baseline", ["none", "batch_mean", "group_mean", "ocb", "ocb_loo", "ocb_shrink"])
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
    for baseline in ("ocb", "ocb_loo", "ocb_shrink", "group_mean"):
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
    for baseline in ("ocb", "ocb_shrink"):
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
    with pytest.raises(ValueError, match="unexpected keyword"):
        blockwise_advantages(r, g, o, baseline="ocb", shrink=2.0)
    with pytest.raises(ValueError, match="shrink must be"):
        blockwise_advantages(r, g, o, baseline="ocb_shrink", shrink=-1.0)


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


def test_every_registered_baseline_has_the_shared_signature():
    rng = np.random.default_rng(1)
    r, group, outcome = rng.normal(size=10), np.repeat([0, 1], 5), rng.integers(0, 2, 10)
    for name, fn in BASELINES.items():
        b = np.asarray(fn(r, group, outcome))
        assert b.shape == r.shape and np.all(np.isfinite(b)), name
