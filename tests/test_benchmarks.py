"""The benchmark scripts keep up with the package: every name a script imports from bae exists.

The scripts are run by hand (their figures go to benchmarks/RESULTS.md, never into timed tests),
so nothing else would notice a module they import from moving or a name being renamed."""

import ast
import importlib
import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).parents[1] / "benchmarks").glob("*.py"))


def _bae_imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for each `from bae... import name` and (module, None) for each `import bae...`,
    anywhere in the script (also inside functions, where the heavy imports live)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bae":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "bae"]
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_bae_name_a_benchmark_imports_exists(script):
    missing = []
    for module, name in _bae_imports(script):
        imported = importlib.import_module(module)
        if name is not None and not hasattr(imported, name):
            try:  # `from package import submodule`
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{module}.{name}")
    assert not missing, f"{script.name} imports names that do not exist: {missing}"


def test_the_scan_sees_imports_inside_functions(tmp_path):
    """The property the test above relies on: a stale import inside main() is found."""
    script = tmp_path / "stale.py"
    script.write_text("import os\n\ndef main():\n    from bae.embedded.demo import DEMO\n    import bae.metrics\n")
    assert _bae_imports(script) == [("bae.embedded.demo", "DEMO"), ("bae.metrics", None)]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_seeds_pairs_each_seed_and_uses_the_student_t_interval():
    """demo_seeds.aggregate: d_s = figure(method) - figure(reference) per seed, and the interval
    mean ± t_{0.975, S-1} sd(d) / sqrt(S) (S = 5: t = 2.7764); the target sentences follow it."""
    seeds = _script("demo_seeds")
    ece_ref, ece_gm = [0.10, 0.12, 0.08, 0.11, 0.09], [0.11, 0.14, 0.11, 0.15, 0.14]
    per_seed = {s: {"task": "arithmetic", "policies": {
        "bae+ocb": {"metrics": {"accuracy": {"value": 0.5}, "auroc": None, "ece": {"value": ece_ref[s]}, "brier": None}},
        "bae+group_mean": {"metrics": {"accuracy": {"value": 0.5}, "auroc": None, "ece": {"value": ece_gm[s]},
                                       "brier": None}},
    }} for s in range(5)}
    result = seeds.aggregate(per_seed, "bae+ocb")
    d = result["differences"]["bae+group_mean"]["ece"]
    diffs = [0.01, 0.02, 0.03, 0.04, 0.05]
    assert d["per_seed"] == pytest.approx(diffs)
    half = 2.776445 * math.sqrt(sum((x - 0.03) ** 2 for x in diffs) / 4) / math.sqrt(5)
    assert (d["mean"], d["low"], d["high"]) == pytest.approx((0.03, 0.03 - half, 0.03 + half), abs=1e-6)
    assert "auroc" not in result["differences"]["bae+group_mean"]  # not reported: not compared
    sentence = seeds.target(result, "bae+ocb")[0]
    assert ": met (the target: bae+ocb lower" in sentence
    # five differences, all above zero: each sign pattern has probability 1/32 under the null, so both
    # two-sided p-values are 2/32 (the signed-rank statistic's extreme too)
    assert "above on 5 of 5 seeds, sign test p = 0.062, Wilcoxon signed-rank p = 0.062" in sentence
    assert seeds.rank_tests([0.0, 0.0]) == {"above": 0, "n": 2, "sign_p": 1.0, "wilcoxon_p": 1.0}
    assert seeds.rank_tests([0.1, -0.2, 0.0])["above"] == 1
    assert seeds.t_interval([0.2]) == {"mean": 0.2, "sd": 0.0, "low": 0.2, "high": 0.2, "n": 1}
    # a policy that states no confidence on one seed: its calibration figures are left out, and said so
    for s in range(5):
        per_seed[s]["policies"]["rlvr"] = {"metrics": {"accuracy": {"value": 0.4},
                                                       "auroc": None, "brier": None,
                                                       "ece": None if s == 2 else {"value": 0.3}}}
    result = seeds.aggregate(per_seed, "bae+ocb")
    assert list(result["differences"]["rlvr"]) == ["accuracy"] and result["missing"] == {"rlvr": ["ece"]}
    assert "rlvr: ece not reported on some seed" in seeds.markdown(
        result, {s: {**per_seed[s], "steps": 1, "eval_prompts": 1, "total_seconds": 1.0} for s in range(5)},
        "bae+ocb", "arithmetic")


def test_demo_seeds_joins_a_variant_with_the_run_it_is_paired_with(tmp_path):
    """--against: the variant's trained policies join the full run's seed as "NAME[label]" (its warm
    start is the full run's, not added twice), and a run of other steps or prompts is refused."""
    seeds = _script("demo_seeds")
    full = {"steps": 200, "eval_prompts": 200, "policies": {"warm start": {"m": 0}, "bae+ocb": {"m": 1}, "rlcr": {"m": 2}}}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(full))
    variant = {"steps": 200, "eval_prompts": 200, "policies": {"warm start": {"m": 9}, "bae+ocb": {"m": 3}}}
    joined = seeds.joined(path, variant, "malformed=carry")
    assert joined["policies"] == {"warm start": {"m": 0}, "bae+ocb": {"m": 1}, "rlcr": {"m": 2},
                                  "bae+ocb[malformed=carry]": {"m": 3}}
    with pytest.raises(SystemExit, match="not paired"):
        seeds.joined(path, {**variant, "steps": 100}, "malformed=carry")
    with pytest.raises(SystemExit, match="no "):
        seeds.joined(tmp_path / "missing.json", variant, "malformed=carry")
    # an optional method run alone keeps its name; the same name twice would overwrite: refused
    extra = {**variant, "policies": {"warm start": {"m": 9}, "bae+ocb_eb": {"m": 4}}}
    assert seeds.joined(path, extra, "")["policies"]["bae+ocb_eb"] == {"m": 4}
    with pytest.raises(SystemExit, match=r"already has the policies \['bae\+ocb'\]"):
        seeds.joined(path, variant, "")


def test_demo_seeds_joins_a_two_attempt_variant_into_the_figures_it_reads(tmp_path):
    """Two-attempt runs: the report reads the per-policy "attempts" figures, so the variant joins
    them too (else it silently vanished from the report), and figures_of sees it."""
    seeds = _script("demo_seeds")

    def attempt(first, second):
        return {"first": {"value": [first]}, "second": {"value": [second]}, "fixed": 0.01, "broken": 0.04}

    full = {"task": "two_attempt", "steps": 100, "eval_prompts": 200,
            "policies": {"warm start": {}, "bae+ocb": {}},
            "attempts": {"warm start": attempt(0.27, 0.24), "bae+ocb": attempt(0.30, 0.27)}}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(full))
    variant = {"task": "two_attempt", "steps": 100, "eval_prompts": 200, "policies": {"warm start": {}, "bae+ocb_eb": {}},
               "attempts": {"warm start": attempt(0.0, 0.0), "bae+ocb_eb": attempt(0.31, 0.29)}}
    figures = seeds.figures_of(seeds.joined(path, variant, ""))
    assert list(figures) == ["warm start", "bae+ocb", "bae+ocb_eb"]
    assert figures["bae+ocb_eb"]["gain"] == pytest.approx(0.29 - 0.31)
    assert figures["warm start"]["first"] == 0.27  # the full run's warm start, not the variant's
    with pytest.raises(SystemExit, match="already has the policies"):
        seeds.joined(path, {**variant, "attempts": {"bae+ocb": attempt(0.1, 0.1)}}, "")


def test_fidelity_rebatching_cuts_each_replicate_into_training_steps():
    """baselines_fidelity.step_batches: with B groups per batch, each group (prompt, replicate) lies
    in one batch, a batch holds at most B prompts of one replicate, batches run replicate-major, and
    a baseline that reads one group (ocb) gives the same errors as with the run's batches, while
    ocb_eb, which pools over the batch, does not."""
    import numpy as np

    from bae.fidelity import estimator_errors

    fid = _script("baselines_fidelity")
    prompts, gmax, g, b = 20, 8, 4, 8
    prompt = np.repeat(np.arange(prompts), gmax)
    sample = np.tile(np.arange(gmax), prompts)
    ids = fid.step_batches(sample, prompt, g, b)
    assert (ids == fid.step_batches(sample, prompt, g) * 3 + prompt // b).all()  # ceil(20 / 8) = 3 chunks
    for batch in np.unique(ids):
        rows = ids == batch
        assert len(set(prompt[rows])) <= b and len(set(sample[rows] // g)) == 1
        assert rows.sum() == g * len(set(prompt[rows]))  # whole groups only
    assert (np.diff(ids[np.lexsort((prompt, sample // g))]) >= 0).all()  # replicate 0's chunks, then 1's
    rng = np.random.default_rng(0)
    rewards = np.column_stack([rng.integers(0, 2, len(prompt)), -rng.random(len(prompt))])
    outcomes = np.column_stack([np.zeros(len(prompt), int), rewards[:, 0].astype(int)])
    a_ref = rng.normal(size=len(prompt))
    group = prompt * 2 + sample // g  # one group id per (prompt, replicate)
    whole = estimator_errors(rewards, group, outcomes, a_ref, batches=fid.step_batches(sample, prompt, g),
                             baselines=["ocb", "ocb_eb"])
    cut = estimator_errors(rewards, group, outcomes, a_ref, batches=ids, baselines=["ocb", "ocb_eb"])
    np.testing.assert_allclose(cut["ocb"], whole["ocb"])
    assert not np.allclose(cut["ocb_eb"], whole["ocb_eb"])


def _own_weights(baseline, r, group, outcome):
    """[N] d b_i / d r_i by a unit step in r_i alone (both candidates are linear in the rewards of
    the row's own group once the other groups are fixed, so the step is exact)."""
    import numpy as np

    base = baseline(r, group, outcome)
    out = np.empty(len(r))
    for i in range(len(r)):
        moved = r.copy()
        moved[i] += 1.0
        out[i] = baseline(moved, group, outcome)[i] - base[i]
    return out


@pytest.mark.parametrize("name", ["offsets", "rest", "eb_rest"])
def test_the_other_shrinkage_targets_are_as_valid_as_ocb(name):
    """benchmarks/outcome_priors.py: b_i = lam m_S + (1 - lam) prior, with lam and the prior's fitted
    parameters from the other groups, so b_i is a fixed linear function of its group's rewards
    (zero second difference in them) whose weight on r_i is at most 1 / |S(i)| (OCB's own); and
    registering the candidates is left to main(): importing the script adds no baseline."""
    import numpy as np

    from bae.advantages import BASELINES, strata

    before = set(BASELINES)
    priors = _script("outcome_priors")
    assert set(BASELINES) == before
    rng = np.random.default_rng(3)
    groups, size = 12, 8
    group = np.repeat(np.arange(groups), size)
    outcome = rng.integers(0, 2, len(group))
    outcome[group == 0] = 1  # a group that is one stratum
    lone = np.nonzero(group == 1)[0]
    outcome[lone] = 1
    outcome[lone[0]] = 0  # and one with a stratum of one
    r = -(rng.random(len(group)) - outcome * 0.5) ** 2 + rng.normal(0, 0.05, len(group)) * (group % 3)
    baseline = getattr(priors, name)
    for g in (1, 5):  # b on group g is a fixed linear function of g's rewards: lam and the fit ignore them
        rows = group == g
        u, v = np.where(rows, rng.normal(size=len(r)), 0.0), np.where(rows, rng.normal(size=len(r)), 0.0)
        curvature = baseline(r + u + v, group, outcome) - baseline(r + u, group, outcome) \
            - baseline(r + v, group, outcome) + baseline(r, group, outcome)
        np.testing.assert_allclose(curvature[rows], 0.0, atol=1e-9)
    weights = _own_weights(baseline, r, group, outcome)
    sizes = strata(group, outcome)[1]
    assert np.all(weights <= 1.0 / sizes + 1e-9)
    assert np.all(weights >= -1e-9)
    whole = group == 0  # its stratum is its group: the group mean, OCB's baseline there
    np.testing.assert_allclose(baseline(r, group, outcome)[whole], r[whole].mean())


def test_the_offsets_prior_is_the_two_way_fit_of_the_other_groups():
    """offsets: with rewards a_g + c_o + noise (no interaction) the prior m_g + c_o - sum_t p_t c_t
    recovers each stratum's value a_g + c_o; on such data the estimate of a stratum of one is
    closer to its value than ocb_eb's group-mean shrinkage (RMSE over many strata of one)."""
    import numpy as np

    from bae.advantages import blockwise_advantages

    priors = _script("outcome_priors")
    rng = np.random.default_rng(0)
    groups, size = 400, 16
    group = np.repeat(np.arange(groups), size)
    outcome = (rng.random(len(group)) < rng.uniform(0.02, 0.98, groups)[group]).astype(int)
    value = rng.normal(0, 0.3, groups)[group] + np.where(outcome == 1, 0.5, -0.5)
    r = value + rng.normal(0, 0.3, len(group))
    single = np.bincount(group * 2 + outcome, minlength=2 * groups)[group * 2 + outcome] == 1
    rmse = {}
    rmse["offsets"] = np.sqrt(np.mean((priors.offsets(r, group, outcome) - value)[single] ** 2))
    eb = r - blockwise_advantages(np.column_stack([r, r]), group, np.column_stack([outcome, outcome]),
                                  baseline="ocb_eb", pretest=0.05)[:, 1]
    rmse["ocb_eb"] = np.sqrt(np.mean((eb - value)[single] ** 2))
    assert single.sum() > 50
    assert rmse["offsets"] < 0.8 * rmse["ocb_eb"], rmse


def test_the_library_s_rest_target_is_the_judged_eb_rest_where_a_line_has_enough_strata():
    """bae's ocb_eb(pretest=0.05, toward="rest") is the eb_rest of benchmarks/outcome_priors.py (the
    estimator frozen before the draw that judged it) wherever each outcome has at least
    MIN_REST_FIT strata in the other groups and the row's x and predicted value lie within the
    ranges of the points its line was fitted on (bae clamps to them; the script does not); with
    fewer strata (the script fits from 4) bae keeps the group mean, i.e. plain ocb_eb."""
    import numpy as np

    from bae.advantages import MIN_REST_FIT, ocb_eb, rest_prediction

    priors = _script("outcome_priors")
    rng = np.random.default_rng(7)
    for groups in (60, 120):
        group = np.repeat(np.arange(groups), 8)
        outcome = (rng.random(len(group)) < rng.uniform(0.05, 0.95, groups)[group]).astype(int)
        r = -(np.clip(rng.uniform(0, 1, groups)[group] + rng.normal(0, 0.2, len(group)), 0, 1) - outcome) ** 2
        ids, s_mean, prior, _, fitted = priors._rest_fit(r, group, outcome)
        points = {}  # (group, outcome) -> (x, m_S) of each stratum with an x
        for g, o in set(zip(group, outcome)):
            inside, outside = (group == g) & (outcome == o), (group == g) & (outcome != o)
            if outside.any():
                points[g, o] = (r[outside].mean(), r[inside].mean())
        inner = np.zeros(len(r), dtype=bool)
        for i in range(len(r)):
            others = [p for (g, o), p in points.items() if o == outcome[i] and g != group[i]]
            if (group[i], outcome[i]) in points and others:
                xs, ys = zip(*others)
                x = points[group[i], outcome[i]][0]
                inner[i] = min(xs) < x < max(xs) and min(ys) < prior[ids[i]] < max(ys)
        predicted, bae_fitted = rest_prediction(r, group, outcome)
        np.testing.assert_array_equal(bae_fitted, fitted[ids])
        assert (inner & bae_fitted).mean() > 0.5
        np.testing.assert_allclose(predicted[inner], prior[ids][inner], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ocb_eb(r, group, outcome, pretest=0.05, toward="rest")[inner],
                                   priors.eb_rest(r, group, outcome)[inner], rtol=1e-9, atol=1e-12)
    few = group < MIN_REST_FIT // 2 + 2  # about 10 groups: the script fits lines, the library does not
    r, group, outcome = r[few], group[few], outcome[few]
    np.testing.assert_allclose(ocb_eb(r, group, outcome, pretest=0.05, toward="rest"),
                               ocb_eb(r, group, outcome, pretest=0.05), atol=1e-12)
    assert not np.allclose(priors.eb_rest(r, group, outcome), ocb_eb(r, group, outcome, pretest=0.05))
