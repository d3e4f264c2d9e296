"""bae.fidelity: the exact simulator checks the estimators' bias and RMSE properties statistically
(many prompts and seeds, tolerances from standard errors); a tiny end-to-end run checks the
Monte-Carlo pipeline on the warm-started tiny policy."""

import json
import math

import numpy as np
import pytest

from bae.advantages import BASELINES, NEEDS_OUTCOMES
from bae.tasks import MALFORMED_OUTCOME
from bae.fidelity import (
    STRATA,
    FidelityConfig,
    brier_values,
    confidence_policy,
    estimator_errors,
    run_fidelity,
    simulate,
    stratum_sizes,
    summarize_errors,
)

SEEDS = range(6)
PROMPTS = 400


def _pooled(feature_effect: float, group: int, **kw):
    """Simulated batches over SEEDS, concatenated, with exact-reference errors of every estimator."""
    parts = []
    for seed in SEEDS:
        sim = simulate(PROMPTS, group, seed=seed, feature_effect=feature_effect, **kw)
        errs = estimator_errors(sim.rewards, sim.groups, sim.outcomes, sim.reference_advantages)
        parts.append((sim, errs, sim.groups + seed * PROMPTS))
    return parts


def _expected_fraction_others(group: int, p_same: np.ndarray) -> np.ndarray:
    """E[(|S| - 1) / |S|] when the other G - 1 members each share the outcome with prob p_same."""
    k = np.arange(group)  # others in the stratum
    comb = np.array([math.comb(group - 1, j) for j in k], dtype=float)
    pmf = comb * p_same[:, None] ** k * (1 - p_same[:, None]) ** (group - 1 - k)  # [N, G]
    return (pmf * (k / (k + 1))[None, :]).sum(axis=1)


def _cell_mean(x, clusters, mask):
    """Mean of x over mask and its cluster-robust standard error."""
    s = summarize_errors({"x": np.asarray(x)}, clusters, mask, bootstrap=0, reference=None)["x"]
    return s["bias"], s["bias_se"]


def test_simulator_values_are_exact():
    """V_2 is the expectation of r_2 given the prefix: the mean of many fresh draws matches it."""
    sim = simulate(200, 4, seed=3, continuations=4000, feature_effect=0.4, calibration=0.2)
    assert np.abs(sim.mc_values - sim.values[:, 1]).max() < 6 * np.sqrt(sim.mc_noise.max()) + 1e-9
    assert np.all(sim.values[:, 1] <= 0) and np.all(sim.values[:, 1] >= -1)
    probs = confidence_policy(np.array([0.5]))
    assert probs.sum() == pytest.approx(1.0)
    assert brier_values(probs, 1)[0] == pytest.approx(brier_values(probs, 0)[0])  # symmetric around 0.5


@pytest.mark.parametrize("group", [4, 8])
def test_ocb_unbiased_when_value_depends_on_outcome_only(group):
    """Appendix B: with V_2 = V_2(x, c), E[A_ocb - A | prefix] = 0, in every (stratum, feature) cell."""
    for sim, errs, clusters in _pooled(0.0, group, calibration=0.3):
        for c in (0, 1):
            for z in (0, 1):
                mask = (sim.outcomes[:, 1] == c) & (sim.feature == z)
                for name in ("ocb", "ocb_loo"):
                    mean, se = _cell_mean(errs[name], clusters, mask)
                    assert abs(mean) < 4.5 * se, (name, c, z, mean, se)


def test_ocb_biased_when_value_depends_on_more_than_outcome():
    """A prefix feature z that moves the confidence policy breaks the condition: conditional on the
    prefix, OCB's error is E[(|S|-1)/|S|] (V_i - mean over z of V), nonzero and matched exactly."""
    group = 8
    for sim, errs, clusters in _pooled(0.6, group):
        c = sim.outcomes[:, 1]
        p = sim.p_correct[sim.groups]
        # the stratum value (z averaged out) and the closed-form conditional error of OCB
        v = sim.values[:, 1]
        p_other_z = confidence_policy(np.clip(sim.mean_confidence[sim.groups] + 0.6 * (0.5 - sim.feature), 0, 1))
        v_stratum = 0.5 * (v + brier_values(p_other_z, c))
        expected = _expected_fraction_others(group, np.where(c == 1, p, 1 - p)) * (v - v_stratum)
        for cc in (0, 1):
            for z in (0, 1):
                mask = (c == cc) & (sim.feature == z)
                mean, se = _cell_mean(errs["ocb"], clusters, mask)
                target = float(expected[mask].mean())
                assert abs(target) > 10 * se  # really biased
                assert abs(mean - target) < 4.5 * se, (cc, z, mean, target, se)
                loo_mean, loo_se = _cell_mean(errs["ocb_loo"], clusters, mask)
                assert abs(loo_mean - float((v - v_stratum)[mask].mean())) < 4.5 * loo_se


def test_group_mean_biased_when_strata_differ():
    """group_mean's conditional error is (G-1)/G (V_i - E[r_2 | x]): nonzero per stratum whenever
    the strata differ in value, and zero when they do not (confidence centred at 0.5)."""
    group = 8
    for sim, errs, clusters in _pooled(0.0, group):
        c = sim.outcomes[:, 1]
        p = sim.p_correct[sim.groups]
        probs = confidence_policy(sim.mean_confidence[sim.groups])
        v_x = p * brier_values(probs, 1) + (1 - p) * brier_values(probs, 0)
        expected = (group - 1) / group * (sim.values[:, 1] - v_x)
        for cc in (0, 1):
            mask = c == cc
            mean, se = _cell_mean(errs["group_mean"], clusters, mask)
            assert abs(expected[mask].mean()) > 5 * se
            assert abs(mean - expected[mask].mean()) < 4.5 * se
    # equal strata values: the policy centred at 0.5 gives V(c=1) = V(c=0), group_mean unbiased
    for seed in SEEDS:
        sim = simulate(PROMPTS, group, seed=seed, confidence_range=(0.5, 0.5))
        errs = estimator_errors(sim.rewards, sim.groups, sim.outcomes, sim.reference_advantages)
        for cc in (0, 1):
            mean, se = _cell_mean(errs["group_mean"], sim.groups, sim.outcomes[:, 1] == cc)
            assert abs(mean) < 4.5 * se


@pytest.mark.parametrize("group", [4, 8, 16])
def test_rmse_ordering(group):
    """Under the condition, in both strata: ocb < group_mean < batch_mean < none, each gap many
    paired bootstrap standard errors wide; and ocb (sample included) beats its leave-one-out.
    The prompts' stated confidences vary widely (0.05 to 0.95), so prompts differ in value."""
    parts = _pooled(0.0, group, confidence_range=(0.05, 0.95))
    errs = {name: np.concatenate([e[name] for _, e, _ in parts]) for name in BASELINES}
    clusters = np.concatenate([cl for _, _, cl in parts])
    outcome = np.concatenate([s.outcomes[:, 1] for s, _, _ in parts])
    order = ["ocb", "group_mean", "batch_mean", "none"]
    for cc in (0, 1):
        for better, worse in zip(order, order[1:]):
            s = summarize_errors({better: errs[better], worse: errs[worse]}, clusters, outcome == cc,
                                 bootstrap=200, seed=0, reference=better)[worse]
            gap, se = s[f"rmse_minus_{better}"], s[f"rmse_minus_{better}_se"]
            assert gap > 4 * se, (cc, better, worse, gap, se)
        s = summarize_errors(errs, clusters, outcome == cc, bootstrap=200, seed=0)
        assert s["ocb_loo"]["rmse_minus_ocb"] > 4 * s["ocb_loo"]["rmse_minus_ocb_se"]


def test_mc_noise_correction_recovers_exact_rmse():
    """With a noisy MC reference (M = 4), rmse_exact (MSE minus mean s^2/M) matches the RMSE against
    the exact advantage; the raw RMSE is inflated."""
    sim = simulate(3000, 8, seed=11, continuations=4)
    a_mc = sim.rewards[:, 1] - sim.mc_values
    noisy = estimator_errors(sim.rewards, sim.groups, sim.outcomes, a_mc, baselines=["ocb", "group_mean"])
    exact = estimator_errors(sim.rewards, sim.groups, sim.outcomes, sim.reference_advantages,
                             baselines=["ocb", "group_mean"])
    for cc in (0, 1):
        mask = sim.outcomes[:, 1] == cc
        n = summarize_errors(noisy, sim.groups, mask, mc_noise=sim.mc_noise, bootstrap=200)
        e = summarize_errors(exact, sim.groups, mask, bootstrap=200)
        for name in ("ocb", "group_mean"):
            assert n[name]["rmse"] > e[name]["rmse"]
            assert abs(n[name]["rmse_exact"] - e[name]["rmse"]) < 4 * n[name]["rmse_se"], (name, n[name], e[name])


def test_estimator_errors_batches_and_summaries():
    """Batches are estimated on their own (batch_mean averages within one); stratum sizes; a stratum
    with no rows gives NaNs; errors of a perfect reference (exact V as baseline) are zero for none
    when V = 0."""
    r = np.array([[1, -0.1], [0, -0.5], [1, -0.3], [0, -0.9]], dtype=float)
    o = np.array([[0, 1], [0, 0], [0, 1], [0, 0]])
    g = np.array([0, 0, 1, 1])
    ref = np.zeros(4)
    one = estimator_errors(r, g, o, ref, baselines=["batch_mean"])["batch_mean"]
    two = estimator_errors(r, g, o, ref, baselines=["batch_mean"], batches=[0, 0, 1, 1])["batch_mean"]
    np.testing.assert_allclose(one, r[:, 1] - r[:, 1].mean())
    np.testing.assert_allclose(two, r[:, 1] - np.repeat([r[:2, 1].mean(), r[2:, 1].mean()], 2))
    np.testing.assert_array_equal(stratum_sizes(g, o[:, 1]), [1, 1, 1, 1])
    np.testing.assert_array_equal(stratum_sizes([0, 0, 0, 0], [1, 1, 0, 1]), [3, 3, 1, 3])
    s = summarize_errors({"none": one}, g, np.zeros(4, dtype=bool), bootstrap=10)
    assert s["none"]["n"] == 0 and math.isnan(s["none"]["rmse"])
    s = summarize_errors({"ocb": one, "none": 2 * one}, g, None, bootstrap=50)
    assert s["none"]["rmse"] == pytest.approx(2 * s["ocb"]["rmse"])
    assert s["ocb"]["rmse_minus_ocb"] == 0.0
    with pytest.raises(ValueError, match="reference_advantages"):
        estimator_errors(r, g, o, np.zeros(3))


def test_estimator_errors_variants_carry_their_options():
    """A variant (name -> (baseline, options)) is the baseline run with those options, batch by batch:
    ocb_shrink with shrink 0 is OCB and with a huge shrink the group mean (lam = n_s / (n_s + shrink));
    a bad option, an option the baseline does not take, and a name that is already taken are refused."""
    sim = simulate(16, 8, seed=3, confidence_range=(0.05, 0.95))
    batches = sim.groups // 4
    errs = estimator_errors(sim.rewards, sim.groups, sim.outcomes, sim.reference_advantages, batches=batches,
                            baselines=["ocb", "group_mean"],
                            variants={"no_shrink": ("ocb_shrink", {"shrink": 0.0}),
                                      "all_shrink": ("ocb_shrink", {"shrink": 1e12})})
    assert list(errs) == ["ocb", "group_mean", "no_shrink", "all_shrink"]
    np.testing.assert_allclose(errs["no_shrink"], errs["ocb"], atol=1e-12)
    np.testing.assert_allclose(errs["all_shrink"], errs["group_mean"], atol=1e-9)
    assert not np.allclose(errs["ocb"], errs["group_mean"])
    with pytest.raises(ValueError, match="pretest"):  # checked before any batch, even with no rows
        estimator_errors(sim.rewards[:0], sim.groups[:0], sim.outcomes[:0], sim.reference_advantages[:0],
                         baselines=[], variants={"bad": ("ocb_eb", {"pretest": 2.0})})
    with pytest.raises(ValueError, match="takes no option 'scale'"):  # an option the baseline does not take
        estimator_errors(sim.rewards, sim.groups, sim.outcomes, sim.reference_advantages, baselines=[],
                         variants={"bad": ("ocb_eb", {"scale": "group"})})
    with pytest.raises(ValueError, match="name of its own"):  # would silently replace ocb's column
        estimator_errors(sim.rewards, sim.groups, sim.outcomes, sim.reference_advantages, baselines=["ocb"],
                         variants={"ocb": ("ocb_eb", {"pretest": 0.05})})


def test_estimator_errors_feed_a_history_variant_the_batches_in_order():
    """ocb_eb with history = H, batch by batch in the order of the batch ids, is ocb_eb on the stack
    of each batch and its H predecessors (groups of the earlier batches join the pool), batch 0 alone."""
    sim = simulate(12, 4, seed=5, confidence_range=(0.05, 0.95))
    batches = 2 - sim.groups // 4  # ids 2, 1, 0: batch 0 holds the last groups and comes first
    errs = estimator_errors(sim.rewards, sim.groups, sim.outcomes, sim.reference_advantages, batches=batches,
                            baselines=["ocb_eb"], variants={"window": ("ocb_eb", {"history": 1})})
    first, second = batches == 0, batches == 1
    np.testing.assert_allclose(errs["window"][first], errs["ocb_eb"][first], atol=1e-12)
    both = first | second
    stacked = estimator_errors(sim.rewards[both], sim.groups[both], sim.outcomes[both],
                               sim.reference_advantages[both], baselines=["ocb_eb"])["ocb_eb"]
    np.testing.assert_allclose(errs["window"][second], stacked[second[both]], atol=1e-12)
    assert not np.allclose(errs["window"][second], errs["ocb_eb"][second])


def test_config_validation():
    with pytest.raises(ValueError, match="continuations"):
        FidelityConfig(continuations=1)
    with pytest.raises(ValueError, match="prompts"):
        FidelityConfig(prompts=0)
    assert FidelityConfig(group=8, sweep=(4, 16)).group_sizes == (4, 8, 16)
    assert FidelityConfig().pool == 32


def test_pipeline_on_tiny_policy(warm_policy, tmp_path):
    """End to end on the warm-started tiny policy (P=2, G=4, M=4): the report files, MC values in
    the reward range, and A_MC = r_2 - mean of the continuations' block-2 rewards, recomputed."""
    from bae import tasks

    out = tmp_path / "fid"
    config = FidelityConfig(model=warm_policy, prompts=2, group=4, continuations=4, sweep=(2, 4),
                            max_new_tokens=48, bootstrap=20, out_dir=str(out))
    result = run_fidelity(config, quiet=True)
    for name in ("metrics.json", "report.md", "fidelity.png", "fidelity_sweep.png", "samples.jsonl"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["groups"]) == {"2", "4"}
    by_class = {f"{b}@answer_class" for b in NEEDS_OUTCOMES}  # the default outcome_strata
    assert set(metrics["groups"]["4"]["estimators"]) == set(BASELINES) | by_class
    assert metrics["setup"]["outcome_strata"] == ["answer_class"] and "@answer_class" in (out / "report.md").read_text()
    assert metrics["setup"]["system_prompt"] == ""  # the warm start's record
    report = (out / "report.md").read_text()
    assert "## Block 2 at G = 4" in report and "Command: `bae fidelity --model " in report
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 4
    task = tasks.get("arithmetic", system_prompt="")
    lo, hi = task.worst_rewards[1], 0.0
    assert all(lo <= row["mc_value"] <= hi for row in rows)
    lo_mc, hi_mc = result["setup"]["mc_value_range"]
    assert lo <= lo_mc <= hi_mc <= hi
    # recompute A_MC for a sample with continuations, independently of the pipeline
    continued = [row for row in rows if row["continuations"]]
    assert continued, "the warm-started policy should complete its solution block"
    row = continued[0]
    assert row["completion"].startswith(row["prefix"])
    assert task.score(row["completion"], row["gold"]).rewards[1] == pytest.approx(row["rewards"][1])
    r2 = [task.score(row["prefix"] + c, row["gold"]).rewards[1] for c in row["continuations"]]
    assert len(r2) == 4
    assert row["a_mc"] == pytest.approx(row["rewards"][1] - float(np.mean(r2)))
    # the strata (correct / incorrect / malformed prefix) partition the samples
    per = metrics["groups"]["4"]["estimators"]["ocb"]
    assert sum(per[s]["n"] for s in STRATA) == per["all"]["n"] == 8
    # a completion without a complete solution block has A_MC = 0 exactly
    for other in rows:
        if other["prefix"] is None:
            assert other["a_mc"] == 0.0 and other["mc_value"] == other["rewards"][1]
    # the answer classes recorded per sample are those of each prompt's completions
    for p in range(2):
        mine = [r for r in rows if r["prompt_id"] == rows[0]["prompt_id"]] if p == 0 else \
            [r for r in rows if r["prompt_id"] != rows[0]["prompt_id"]]
        scores = [task.score(r["completion"], r["gold"]) for r in mine]
        classes = tasks.answer_classes([s.prefix_answers[1] for s in scores], [0] * len(mine), task.equivalent,
                                       malformed=[s.outcomes[1] == MALFORMED_OUTCOME for s in scores])
        assert [r["outcomes@answer_class"][1] for r in mine] == classes.tolist()


def test_stratified_outcomes_and_reporting_by_correctness():
    """stratified_outcomes scores the samples under another outcome (answer classes assigned per
    group, no gold); with a task whose own outcome is answer_class, the rows are still reported by
    the correctness of the prefix (the "correct" stratification)."""
    from bae import tasks
    from bae.fidelity.montecarlo import stratified_outcomes

    text = "<reasoning>w</reasoning><answer>{}</answer><analysis>a</analysis><confidence>0.5</confidence>"
    samples = [{"completion": text.format(a), "gold": "7"} for a in ("7", "8", "08", "9")]
    samples += [{"completion": "<reasoning>cut", "gold": "7"}, {"completion": text.format("7"), "gold": "3"}]
    groups = np.array([0, 0, 0, 0, 0, 1])
    task = tasks.get("arithmetic")
    np.testing.assert_array_equal(stratified_outcomes(task, "answer_class", samples, groups)[:, 1],
                                  [0, 1, 1, 2, MALFORMED_OUTCOME, 0])
    np.testing.assert_array_equal(stratified_outcomes(task, "correct", samples, groups)[:, 1],
                                  [1, 0, 0, 0, MALFORMED_OUTCOME, 0])
    own = tasks.get("arithmetic", outcome="answer_class")
    np.testing.assert_array_equal(stratified_outcomes(own, "correct", samples, groups)[:, 1],
                                  [1, 0, 0, 0, MALFORMED_OUTCOME, 0])
    with pytest.raises(ValueError, match="outcome_strata"):
        FidelityConfig(outcome_strata=("answer_clas",))


def test_malformed_prefixes_are_a_stratum_of_their_own():
    """A malformed prefix (outcome -1) has a known value, the worst block-2 reward, and A_MC = 0.
    OCB's baseline over that stratum is the worst reward itself, so its error is exactly 0; the
    group mean mixes in the well-formed members and errs by (worst - group mean)."""
    assert STRATA["malformed"] == MALFORMED_OUTCOME
    worst = -1.0
    r2 = np.array([-0.04, -0.09, -0.36, -0.25, worst, worst, -0.16, worst])
    outcomes = np.array([1, 1, 0, 0, MALFORMED_OUTCOME, MALFORMED_OUTCOME, 0, MALFORMED_OUTCOME])
    rewards = np.stack([(outcomes == 1).astype(float), r2], axis=1)  # [8, 2]
    o = np.stack([np.zeros(8, dtype=int), outcomes], axis=1)
    malformed = outcomes == MALFORMED_OUTCOME
    a_mc = np.where(malformed, 0.0, r2 - np.where(outcomes == 1, -0.05, -0.3))
    errs = estimator_errors(rewards, np.zeros(8, dtype=int), o, a_mc)
    assert np.all(errs["ocb"][malformed] == 0.0)
    np.testing.assert_allclose(errs["group_mean"][malformed], worst - r2.mean())
