"""bae.metrics: accuracy, AUROC, Brier, ECE, standard errors."""

import itertools
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import brier_score_loss, roc_auc_score

from bae import metrics as M

# Confidences on a 0.05 grid (ties are frequent, as with parsed confidences) with their labels.
pairs = st.lists(
    st.tuples(st.integers(0, 20).map(lambda i: i / 20), st.booleans()), min_size=1, max_size=60
)


@settings(max_examples=150, deadline=None)
@given(pairs)
def test_auroc_and_brier_equal_sklearn(data):
    """AUROC == sklearn.roc_auc_score and Brier == sklearn.brier_score_loss, to 1e-12."""
    q = np.array([x for x, _ in data])
    c = np.array([y for _, y in data])
    assert M.brier(q, c) == pytest.approx(brier_score_loss(c, q), abs=1e-12)
    if 0 < c.sum() < c.size:
        assert M.auroc(q, c) == pytest.approx(roc_auc_score(c, q), abs=1e-12)
    else:
        assert M.auroc(q, c) == 0.5


def test_auroc_equals_pair_counting():
    """AUROC = P(q_pos > q_neg) + 0.5 P(q_pos = q_neg): pos {0.9, 0.8}, neg {0.3, 0.8} ->
    pairs (0.9,0.3)=1, (0.9,0.8)=1, (0.8,0.3)=1, (0.8,0.8)=0.5, so 3.5 / 4."""
    q, c = [0.9, 0.8, 0.3, 0.8], [1, 1, 0, 0]
    pos = [a for a, y in zip(q, c) if y]
    neg = [a for a, y in zip(q, c) if not y]
    by_pairs = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)) / (len(pos) * len(neg))
    assert by_pairs == 3.5 / 4
    assert M.auroc(q, c) == by_pairs


def test_degenerate_inputs_have_defined_values():
    """Empty: accuracy 0, Brier 0, ECE 0, AUROC 0.5; one class only: AUROC 0.5."""
    assert (M.accuracy([]), M.brier([], []), M.ece([], []), M.auroc([], [])) == (0.0, 0.0, 0.0, 0.5)
    assert M.auroc([0.1, 0.9, 0.5], [1, 1, 1]) == 0.5
    assert M.auroc([0.1, 0.9, 0.5], [0, 0, 0]) == 0.5
    # all correct at confidence 1 is perfectly calibrated; all wrong at 1 is maximally wrong
    assert M.brier([1.0, 1.0], [1, 1]) == 0.0 and M.ece([1.0, 1.0], [1, 1]) == 0.0
    assert M.brier([1.0, 1.0], [0, 0]) == 1.0 and M.ece([1.0, 1.0], [0, 0]) == 1.0
    assert M.mean_se([]) == 0.0 and M.mean_se([0.3]) == 0.0


@pytest.mark.parametrize(
    "confidence, correct, why",
    [
        ([0.5, 0.5], [1], "has 2 values but correct has 1"),
        ([1.2], [1], "must lie in [0, 1]"),
        ([-0.1], [0], "must lie in [0, 1]"),
        ([float("nan")], [1], "must be finite"),
        ([0.5], [2], "only 0/1"),
        ([[0.5]], [[1]], "must be 1-D"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(confidence, correct, why):
    for fn in (M.brier, M.auroc, M.ece):
        with pytest.raises(ValueError, match=re.escape(why)):
            fn(confidence, correct)


def test_paper_bins_are_eleven_with_one_for_confidence_one():
    """Edges 0, .1, ..., 1.1: q = 0.0 in [0, .1), q = .1 in [.1, .2), q = .9999 in [.9, 1),
    q = 1.0 alone in [1.0, 1.1)."""
    assert M.PAPER_BINS.size == 12 and M.PAPER_BINS[-1] == 1.1
    table = M.reliability([0.0, 0.1, 0.3, 0.9999, 1.0], [0, 0, 0, 0, 0])
    expected = np.zeros(11)
    expected[[0, 1, 3, 9, 10]] = 1
    assert table["count"].tolist() == expected.tolist()


def test_ece_hand_cases_with_confidence_zero_and_one():
    # q=1.0 twice (one right) and q=0.0 twice (one right): each bin has |0.5 - q| = 0.5 -> 0.5
    assert M.ece([1.0, 1.0, 0.0, 0.0], [1, 0, 0, 1]) == 0.5
    # q = 0.95 (right) and q = 1.0 (wrong) sit in different bins:
    # (1/2)|1 - 0.95| + (1/2)|0 - 1.0| = 0.525 (one shared bin would give |0.5 - 0.975| = 0.475)
    assert M.ece([0.95, 1.0], [1, 0]) == pytest.approx(0.525, abs=1e-15)
    # always-0.0 confidence on wrong answers is calibrated; on right answers the gap is 1
    assert M.ece([0.0, 0.0, 0.0], [0, 0, 0]) == 0.0
    assert M.ece([0.0, 0.0, 0.0, 0.0], [1, 0, 0, 0]) == 0.25
    # a parsed "0.3" lands in [0.3, 0.4): with 0.35 (right) the bin's gap is |0.5 - 0.325|
    assert M.ece([0.3, 0.35], [0, 1]) == pytest.approx(0.175, abs=1e-15)


def test_ece_with_custom_bins():
    """Custom edges [0, .5, 1]: bins [0, .5) and [.5, 1] (last closed, so q = 1.0 fits).
    q = (.2, .4) right, wrong: |.5 - .3| = .2; q = (.6, 1.0) right, right: |1 - .8| = .2;
    ECE = (2/4)(.2) + (2/4)(.2) = .2."""
    assert M.ece([0.2, 0.4, 0.6, 1.0], [1, 0, 1, 1], bins=[0, 0.5, 1.0]) == pytest.approx(0.2, abs=1e-15)
    with pytest.raises(ValueError, match="outside the bins"):
        M.ece([0.1], [1], bins=[0.2, 1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        M.ece([0.1], [1], bins=[0.5, 0.5, 1.0])


@settings(max_examples=100, deadline=None)
@given(pairs)
def test_ece_properties(data):
    """One bin [0, 1]: ECE = |mean q - mean c|. Always 0 <= ECE <= 1, and ECE (paper bins)
    equals the bin-by-bin sum computed directly with bin = floor(10 q)."""
    q = np.array([x for x, _ in data])
    c = np.array([y for _, y in data], dtype=float)
    assert M.ece(q, c, bins=[0.0, 1.0]) == pytest.approx(abs(q.mean() - c.mean()), abs=1e-12)
    direct = 0.0
    for b in range(11):
        members = [i for i in range(q.size) if math.floor(round(q[i] * 10, 9)) == b]
        if members:
            direct += len(members) / q.size * abs(c[members].mean() - q[members].mean())
    assert M.ece(q, c) == pytest.approx(direct, abs=1e-12)
    assert 0.0 <= M.ece(q, c) <= 1.0


def test_mean_se_is_sample_std_over_sqrt_n():
    """[1, 0, 1, 0]: var (ddof 1) = 1/3, so SE = sqrt(1/3) / 2."""
    assert M.mean_se([1, 0, 1, 0]) == pytest.approx(math.sqrt(1 / 3) / 2, abs=1e-15)


def test_bootstrap_se_of_a_mean_matches_the_analytic_standard_error():
    """For the mean of N Bernoulli(p) values the bootstrap SE tends to sqrt(p(1-p)/N)."""
    rng = np.random.default_rng(1)
    c = (rng.random(400) < 0.3).astype(float)
    q = rng.random(400)
    se = M.bootstrap_se({"acc": lambda a, b: b.mean(), "const": lambda a, b: 0.7}, q, c, 1000, seed=0)
    p = c.mean()
    assert se["acc"] == pytest.approx(math.sqrt(p * (1 - p) / c.size), rel=0.1)
    assert se["const"] == pytest.approx(0.0, abs=1e-12)  # a constant metric has no spread


def test_bootstrap_se_is_seeded_and_defined_for_tiny_inputs():
    rng = np.random.default_rng(2)
    q, c = rng.random(50), rng.random(50) < 0.5
    metrics = {"auroc": M.auroc, "ece": M.ece, "brier": M.brier}
    first = M.bootstrap_se(metrics, q, c, 200, seed=3)
    assert first == M.bootstrap_se(metrics, q, c, 200, seed=3)
    assert first != M.bootstrap_se(metrics, q, c, 200, seed=4)
    assert all(v > 0 for v in first.values())
    assert M.bootstrap_se(metrics, [0.4], [1], 200) == {"auroc": 0.0, "ece": 0.0, "brier": 0.0}
    assert M.bootstrap_se(metrics, q, c, 1) == {"auroc": 0.0, "ece": 0.0, "brier": 0.0}


# ---------------------------------------------------------------------------------------------
# paired_bootstrap: differences between two policies on the same prompts


def _policy(rng, sizes, p):
    """Per-prompt (confidence, correct) tuples: prompt i has sizes[i] samples, right with probability p[i]."""
    return [(rng.integers(0, 11, n) / 10, (rng.random(n) < pi).astype(float)) for n, pi in zip(sizes, p)]


def test_paired_bootstrap_resamples_prompts_as_the_naive_loop_does():
    """Against a plain loop over the same draws: the R resamples are rng.integers(0, P, P) of
    default_rng(seed), each drawn prompt contributes all its samples to both policies (whatever
    their counts), and se / interval are the std (ddof 1) / percentiles of the differences."""
    rng = np.random.default_rng(0)
    a = _policy(rng, [3, 1, 4, 2, 5], [0.9, 0.2, 0.5, 0.7, 0.4])
    b = _policy(rng, [2, 2, 1, 3, 4], [0.5, 0.5, 0.5, 0.5, 0.5])  # other sample counts per prompt
    metrics = {"ece": M.ece, "auroc": M.auroc, "accuracy": lambda q, c: M.accuracy(c)}
    got = M.paired_bootstrap(metrics, a, b, n_resamples=300, seed=7)

    draws = np.random.default_rng(7)
    diffs = {name: [] for name in metrics}
    for _ in range(300):
        chosen = draws.integers(0, 5, size=5)
        qa = [x for i in chosen for x in a[i][0]]
        ca = [x for i in chosen for x in a[i][1]]
        qb = [x for i in chosen for x in b[i][0]]
        cb = [x for i in chosen for x in b[i][1]]
        for name, fn in metrics.items():
            diffs[name].append(fn(np.array(qa), np.array(ca)) - fn(np.array(qb), np.array(cb)))
    for name, fn in metrics.items():
        whole = [np.concatenate([p[j] for p in x]) for x in (a, b) for j in (0, 1)]
        assert got[name]["a"] == fn(*whole[:2]) and got[name]["b"] == fn(*whole[2:])
        assert got[name]["diff"] == got[name]["a"] - got[name]["b"]
        assert got[name]["se"] == pytest.approx(np.std(diffs[name], ddof=1), abs=1e-12)
        assert (got[name]["low"], got[name]["high"]) == pytest.approx(tuple(np.quantile(diffs[name], [0.025, 0.975])),
                                                                      abs=1e-12)


def test_paired_bootstrap_tends_to_the_exact_bootstrap_distribution():
    """Three prompts: all 3^3 = 27 ordered draws are equally likely, so the exact bootstrap
    standard deviation of the ECE difference is the std of its 27 values; for the accuracy of
    equal-size prompts it is also the hand formula sqrt(mean_p (d_p - mean d)^2 / P)."""
    a = [([0.9, 0.9], [1, 1]), ([0.2, 0.8], [0, 1]), ([0.5, 0.5], [0, 0])]
    b = [([0.5, 0.6], [1, 0]), ([0.3, 0.3], [0, 0]), ([0.9, 0.1], [1, 1])]
    metrics = {"ece": M.ece, "accuracy": lambda q, c: M.accuracy(c)}
    exact = {name: [] for name in metrics}
    for chosen in itertools.product(range(3), repeat=3):
        for name, fn in metrics.items():
            qa, ca = (np.concatenate([a[i][j] for i in chosen]) for j in (0, 1))
            qb, cb = (np.concatenate([b[i][j] for i in chosen]) for j in (0, 1))
            exact[name].append(fn(qa, ca) - fn(qb, cb))
    got = M.paired_bootstrap(metrics, a, b, n_resamples=20000, seed=1)
    for name in metrics:
        assert got[name]["se"] == pytest.approx(np.std(exact[name]), rel=0.03), name
    d = np.array([1 - 0.5, 0.5 - 0, 0 - 1])  # per-prompt accuracy differences
    assert np.std(exact["accuracy"]) == pytest.approx(math.sqrt(np.mean((d - d.mean()) ** 2) / 3), abs=1e-12)
    assert got["accuracy"]["diff"] == pytest.approx(d.mean(), abs=1e-12)


def test_paired_bootstrap_counts_only_what_differs_between_the_policies():
    """Two policies that agree on all but a few of 200 prompts: the paired se of their accuracy
    difference is far below the unpaired sqrt(se_a^2 + se_b^2) (each over prompt means: the
    standard error of two independent evaluations of the same prompts), and an identical policy differs
    by exactly 0 with se 0 and the interval [0, 0]."""
    rng = np.random.default_rng(3)
    a = _policy(rng, [4] * 200, rng.random(200))
    b = [(q, c.copy()) for q, c in a]
    for i in range(10):  # b is right on 10 more samples
        b[i][1][b[i][1] == 0] = 1.0
        b[i][1][:1] = 1.0
    acc = {"accuracy": lambda q, c: M.accuracy(c)}
    same = M.paired_bootstrap(acc, a, a, n_resamples=200, seed=0)["accuracy"]
    assert (same["diff"], same["se"], same["low"], same["high"]) == (0.0, 0.0, 0.0, 0.0)
    paired = M.paired_bootstrap(acc, b, a, n_resamples=500, seed=0)["accuracy"]
    unpaired = math.hypot(M.mean_se([c.mean() for _, c in a]), M.mean_se([c.mean() for _, c in b]))
    assert paired["diff"] > 0 and paired["se"] < unpaired / 3
    assert 0 < paired["low"] <= paired["diff"] <= paired["high"]  # distinguishable from zero


def test_paired_bootstrap_checks_its_input_and_handles_tiny_cases():
    a = [([0.5], [1]), ([0.5], [0])]
    with pytest.raises(ValueError, match="a has 2 prompts but b has 1"):
        M.paired_bootstrap({"ece": M.ece}, a, a[:1])
    with pytest.raises(ValueError, match="different lengths"):
        M.paired_bootstrap({"ece": M.ece}, [([0.5, 0.4], [1])], [([0.5], [1])])
    with pytest.raises(ValueError, match="level"):
        M.paired_bootstrap({"ece": M.ece}, a, a, level=1.0)
    one = M.paired_bootstrap({"ece": M.ece}, a[:1], [([0.9], [1])], n_resamples=100)["ece"]
    assert one["se"] == 0.0 and one["low"] == one["high"] == one["diff"] == pytest.approx(0.5 - 0.1)
    assert M.paired_bootstrap({"ece": M.ece}, a, a, n_resamples=1)["ece"]["se"] == 0.0
