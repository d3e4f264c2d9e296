"""bae.evaluation.selective: risk-coverage, AURC, accuracy at coverage, thresholds."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bae.evaluation import selective as S

# q = (0.9 right, 0.8 wrong, 0.8 right, 0.2 wrong): thresholds 0.9, 0.8, 0.2 accept 1, 3, 4.
Q, C = [0.9, 0.8, 0.8, 0.2], [1, 0, 1, 0]


def test_risk_coverage_hand_case_with_a_tie():
    curve = S.risk_coverage(Q, C)
    assert curve["threshold"].tolist() == [0.9, 0.8, 0.2]
    assert curve["coverage"].tolist() == [0.25, 0.75, 1.0]
    assert curve["risk"].tolist() == pytest.approx([0.0, 1 / 3, 0.5])


def test_aurc_hand_case():
    """sum_j (cov_j - cov_{j-1}) risk_j = .25 * 0 + .5 * (1/3) + .25 * .5 = 1/6 + 1/8."""
    assert S.aurc(Q, C) == pytest.approx(1 / 6 + 1 / 8, abs=1e-15)
    assert S.aurc([], []) == 0.0
    assert S.aurc([0.3, 0.7], [1, 1]) == 0.0  # never wrong: no risk anywhere
    assert S.aurc([0.3, 0.7], [0, 0]) == 1.0  # always wrong


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_aurc_without_ties_is_the_mean_risk_of_the_top_i(correct, random):
    """Distinct confidences: AURC = (1/N) sum_{i=1}^{N} errors(top i) / i."""
    n = len(correct)
    q = np.array(random.sample(range(1000), n)) / 1000
    c = np.array(correct, dtype=float)
    order = np.argsort(-q)
    direct = np.mean([(1 - c[order[:i]]).mean() for i in range(1, n + 1)])
    assert S.aurc(q, c) == pytest.approx(direct, abs=1e-12)


def test_accuracy_at_coverage_splits_a_boundary_tie_by_its_mean():
    """Coverage .5 -> 2 places: 0.9 (right) takes one, the tie {0.8 wrong, 0.8 right} fills the
    other with its mean accuracy .5, so (1 + .5) / 2 = .75."""
    assert S.accuracy_at_coverage(Q, C, 0.5) == 0.75
    assert S.accuracy_at_coverage(Q, C, 0.25) == 1.0
    assert S.accuracy_at_coverage(Q, C, 1.0) == 0.5  # full coverage is plain accuracy
    assert S.accuracy_at_coverage([], [], 0.9) == 0.0
    # 0.07 * 100 = 7.000000000000001 in floating point must still mean 7 places, not 8
    q = np.arange(100, 0, -1) / 100
    c = np.r_[np.ones(7), np.zeros(93)]
    assert S.accuracy_at_coverage(q, c, 0.07) == 1.0
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="coverage"):
            S.accuracy_at_coverage(Q, C, bad)


def test_threshold_for_accuracy_takes_the_most_coverage_reaching_the_target():
    """Accepted accuracy at 0.9 / 0.8 / 0.2 is 1, 2/3, 1/2: target .6 -> 0.8 (coverage .75);
    target 1 -> 0.9; an unreachable target abstains on everything."""
    t = S.threshold_for_accuracy(Q, C, 0.6)
    assert (t.threshold, t.coverage, t.accuracy) == (0.8, 0.75, pytest.approx(2 / 3))
    assert S.threshold_for_accuracy(Q, C, 1.0).threshold == 0.9
    assert S.threshold_for_accuracy(Q, C, 0.5).threshold == 0.2
    none = S.threshold_for_accuracy([0.9, 0.5], [0, 0], 0.5)
    assert (none.threshold, none.coverage, none.accuracy) == (None, 0.0, None)
    assert S.threshold_for_accuracy([], [], 0.5).threshold is None
    with pytest.raises(ValueError, match="target"):
        S.threshold_for_accuracy(Q, C, 1.5)


def test_apply_threshold_on_held_out_data():
    assert S.apply_threshold(Q, C, 0.8) == {"coverage": 0.75, "accuracy": pytest.approx(2 / 3)}
    assert S.apply_threshold(Q, C, None) == {"coverage": 0.0, "accuracy": None}
    assert S.apply_threshold(Q, C, 0.95) == {"coverage": 0.0, "accuracy": None}
