"""bae.evaluation.tts: Pass@k, voting strategies, answer grouping, test-time-scaling curves."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bae.evaluation import tts
from bae.rewards import math_equal


def test_pass_at_k_equals_brute_force_enumeration():
    """pass@k = fraction of the C(n, k) k-subsets of the n samples holding a correct one."""
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert tts.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_special_values_and_bad_arguments():
    """pass@1 = c/n; pass@n = 1[c > 0]; large n stays finite (product form)."""
    assert tts.pass_at_k(16, 5, 1) == pytest.approx(5 / 16, abs=1e-15)
    assert tts.pass_at_k(16, 0, 16) == 0.0 and tts.pass_at_k(16, 1, 16) == 1.0
    big = tts.pass_at_k(10_000, 10, 100)
    assert big == pytest.approx(1 - math.comb(9_990, 100) / math.comb(10_000, 100), abs=1e-12)
    for n, c, k in [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5), (4, 2.0, 1), (True, 1, 1)]:
        with pytest.raises(ValueError):
            tts.pass_at_k(n, c, k)


def test_weighted_majority_hand_cases_and_ties():
    # sums: "3" 0.9+0.1 = 1.0, "5" 0.4+0.4 = 0.8, "7" 0.95 -> "3" (majority alone would tie 3/5)
    assert tts.weighted_majority(["3", "5", "5", "3", "7"], [0.9, 0.4, 0.4, 0.1, 0.95]) == "3"
    # one very confident sample outweighs two unsure ones: "b" 0.75 > "a" 0.25 + 0.25
    assert tts.weighted_majority(["a", "b", "a"], [0.25, 0.75, 0.25]) == "b"
    # tie in the sum (0.5 = 0.25 + 0.25, exact in binary) -> more votes wins: "a"
    assert tts.weighted_majority(["b", "a", "a"], [0.5, 0.25, 0.25]) == "a"
    # tie in sum and votes -> the group that appears first
    assert tts.weighted_majority(["a", "b"], [0.5, 0.5]) == "a"
    assert tts.weighted_majority(["b", "a"], [0.5, 0.5]) == "b"
    # a missing confidence counts 0.0; a missing answer never votes; nothing to choose -> None
    assert tts.weighted_majority(["a", "b"], [None, 0.1]) == "b"
    assert tts.weighted_majority([None, None, "x"], [1.0, 1.0, 0.1]) == "x"
    assert tts.weighted_majority([None, None], [1.0, 1.0]) is None
    assert tts.weighted_majority([], []) is None
    with pytest.raises(ValueError):
        tts.weighted_majority(["a", "b"], [0.5])


def test_majority_vote_and_max_confidence_hand_cases():
    assert tts.majority_vote(["1", "2", "2", "3"]) == "2"
    assert tts.majority_vote(["1", "2", "2", "1"]) == "1"  # tie: first group to appear
    assert tts.majority_vote([None, "4", None]) == "4"
    assert tts.max_confidence(["1", "2", "3"], [0.2, 0.9, 0.9]) == "2"  # tie: first sample
    assert tts.max_confidence([None, "2"], [1.0, 0.1]) == "2"  # an answerless sample is never chosen


def test_answers_are_grouped_by_verifier_equivalence_not_strings():
    """1/2, 0.5 and \\frac{1}{2} are one answer under math_equal, the default: its 0.9 beats "3"'s
    0.8; grouped by strings, "3" would win."""
    answers = ["1/2", "0.5", "\\frac{1}{2}", "3"]
    confidences = [0.3, 0.3, 0.3, 0.8]
    assert tts.weighted_majority(answers, confidences, math_equal) == "1/2"
    assert tts.weighted_majority(answers, confidences) == "1/2"  # math-verify by default
    assert tts.weighted_majority(answers, confidences, str.__eq__) == "3"
    assert tts.majority_vote(["7", "0.5", "1/2"], math_equal) == "0.5"
    assert tts.majority_vote(["7", "0.5", "1/2"]) == "0.5"
    assert tts.group_answers(answers, math_equal).tolist() == [0, 0, 0, 1]


def test_group_answers_reuses_correctness_and_only_compares_wrong_answers():
    """Correct answers form one group without calls; correct never joins wrong; the equivalence
    is called only between wrong answers; None gets -1."""
    calls = []

    def equivalent(a, b):
        calls.append((a, b))
        return a.rstrip("0").rstrip(".") == b.rstrip("0").rstrip(".")

    answers = ["10", "ten", "4", "4.0", None, "X"]
    correct = [True, True, False, False, False, False]
    groups = tts.group_answers(answers, equivalent, correct)
    assert groups.tolist() == [0, 0, 1, 1, -1, 2]
    assert all(a not in ("10", "ten") and b not in ("10", "ten") for a, b in calls)
    assert ("4.0", "4") in calls


def reference_choice(groups, conf, strategy):
    """The tie rules of the tts docstring, written as a plain loop."""
    answered = [i for i, g in enumerate(groups) if g >= 0]
    if not answered:
        return -1
    if strategy == "max_confidence":
        best = max(conf[i] for i in answered)
        return next(i for i in answered if conf[i] == best)
    order = list(dict.fromkeys(groups[i] for i in answered))  # groups by first appearance
    votes = {g: sum(1 for i in answered if groups[i] == g) for g in order}
    weight = {g: sum(conf[i] for i in answered if groups[i] == g) for g in order}
    if strategy == "majority":
        key = lambda g: (votes[g], -order.index(g))  # noqa: E731
    else:
        key = lambda g: (weight[g], votes[g], -order.index(g))  # noqa: E731
    winner = max(order, key=key)
    return next(i for i in answered if groups[i] == winner)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-1, 3), st.integers(0, 4).map(lambda i: i / 4)), min_size=1, max_size=8),
    st.sampled_from(["majority", "max_confidence", "weighted_majority"]),
)
def test_vectorised_choice_equals_the_loop(samples, strategy):
    """choose() over [m, k] arrays == the rules applied sample by sample (quarter confidences,
    so equal sums are exactly equal in floating point)."""
    groups = np.array([g for g, _ in samples])
    conf = np.array([q for _, q in samples])
    got = tts.choose(groups[None], conf[None], strategy)[0]
    assert got == reference_choice(groups.tolist(), conf.tolist(), strategy)


def test_prompt_curves_against_enumeration():
    """With all C(n, k) subsets enumerated, each point is the plain average over subsets; at
    k = 1 every strategy is Pass@1 (all samples answered); Pass@k follows pass_at_k."""
    answers = ["a", "b", "b", "c", "b", "a"]
    correct = np.array([1, 0, 0, 0, 0, 1], dtype=float)
    conf = np.array([0.9, 0.2, 0.3, 0.5, 0.1, 0.4])
    groups = tts.group_answers(answers, str.__eq__)
    ks = list(range(1, 7))
    curves = tts.prompt_curves(groups, conf, correct, ks, max_subsets=10**6)
    for j, k in enumerate(ks):
        subsets = list(itertools.combinations(range(6), k))
        for strategy in ("majority", "max_confidence", "weighted_majority"):
            hits = []
            for s in subsets:
                pos = reference_choice([groups[i] for i in s], [conf[i] for i in s], strategy)
                hits.append(correct[s[pos]] if pos >= 0 else 0.0)
            assert curves[strategy][j] == pytest.approx(np.mean(hits), abs=1e-12), (strategy, k)
        assert curves["pass@k"][j] == tts.pass_at_k(6, 2, k)
        assert curves["pass@1"][j] == pytest.approx(2 / 6)
    for strategy in ("majority", "weighted_majority", "max_confidence"):
        assert curves[strategy][0] == pytest.approx(2 / 6)
    # all six: "b" has 3 votes (wrong) but "a" has weight 1.3 > 0.6; max confidence is "a" (0.9)
    assert (curves["majority"][-1], curves["weighted_majority"][-1], curves["max_confidence"][-1]) == (0.0, 1.0, 1.0)


def test_random_subsets_are_seeded_sorted_k_subsets():
    rng = np.random.default_rng(0)
    idx = tts.subsets(16, 5, 64, rng)
    assert idx.shape == (64, 5)
    assert all(len(set(row)) == 5 and list(row) == sorted(row) for row in idx.tolist())
    assert np.array_equal(idx, tts.subsets(16, 5, 64, np.random.default_rng(0)))
    assert tts.subsets(4, 2, 64, rng).shape == (6, 2)  # C(4, 2) = 6 <= 64: all of them


def test_tts_curves_average_prompts_and_give_standard_errors():
    """Two prompts, one always right, one always wrong: every strategy's value is 1/2 with
    SE = std([1, 0], ddof=1) / sqrt(2) = 1/2; prompts with more samples use subsets of theirs."""
    prompts = [
        {"groups": [0, 0, 0], "confidence": [0.5, 0.5, 0.5], "correct": [1, 1, 1]},
        {"groups": [0, 1], "confidence": [0.5, 0.5], "correct": [0, 0]},
    ]
    curves = tts.tts_curves(prompts)
    assert curves["k"] == [1, 2]
    for s in tts.STRATEGIES:
        assert curves[s]["value"] == [0.5, 0.5] and curves[s]["se"] == pytest.approx([0.5, 0.5])
    assert tts.tts_curves([])["k"] == []
