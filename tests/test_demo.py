"""`bae demo`: the four methods from one warm start, evaluated the same way, with a full report."""

import json
import shutil
from pathlib import Path

import yaml

from bae.embedded import DEMO_CONFIG, demo, demo_config
from bae.runs.config import parse


def test_the_demo_is_defined_once_in_demo_yaml():
    """configs/demo.yaml is the package's demo.yaml (a link, not a copy), `bae demo` trains with
    exactly its settings, and `bae train --config configs/demo.yaml` validates the same file."""
    shipped = Path(__file__).parents[1] / "configs" / "demo.yaml"
    assert shipped.is_symlink() and shipped.resolve() == DEMO_CONFIG
    method = demo.method_config("bae+ocb", Path("out"), steps=100, seed=0, policy="p")
    assert method.model_dump(exclude={"output_dir", "model", "checkpoint_interval"}) == parse(
        yaml.safe_load(shipped.read_text())).model_dump(exclude={"output_dir", "model", "checkpoint_interval"})
    assert demo.settings(overrides={"eval": {"limit": 8}})["eval"] == {**demo_config()["eval"], "limit": 8}


def test_demo_runs_every_method_from_one_warm_start(warm_policy, tmp_path):
    shutil.copytree(warm_policy, tmp_path / "warm_start")  # the demo reuses a warm start it finds
    summary = demo.run_demo(str(tmp_path), steps=2, seed=0, overrides={"eval": {"limit": 8, "n": 2, "bootstrap": 20}})

    assert list(summary["methods"]) == list(demo.METHODS)
    assert list(summary["policies"]) == [demo.WARM, *demo.METHODS]  # the warm start is evaluated alike
    for name, result in summary["policies"].items():
        for figure in demo.FIGURES:
            value = result["metrics"][figure]["value"]
            assert 0.0 <= value <= 1.0, (name, figure, value)
        rows = (tmp_path / result["eval"] / "generations.jsonl").read_text().splitlines()
        assert len(rows) == 8 * 2  # the same held-out prompts and samples per prompt for every policy
    for name, result in summary["methods"].items():
        config = json.loads((Path(result["folder"]) / "config.json").read_text())
        # the methods differ only in the advantage: same start, data, budget and seed
        assert config["model"] == str(tmp_path / "warm_start") and config["steps"] == 2
        assert {k: v for k, v in config.items() if k not in ("method", "baseline", "output_dir")} == {
            k: v for k, v in json.loads((Path(summary["methods"]["rlvr"]["folder"]) / "config.json").read_text()).items()
            if k not in ("method", "baseline", "output_dir")}
        logged = [json.loads(line) for line in (Path(result["folder"]) / "log.jsonl").read_text().splitlines()]
        assert max(r["step"] for r in logged) == 2
    report = (tmp_path / "report.md").read_text()
    assert all(name in report for name in summary["policies"])
    assert json.loads((tmp_path / "metrics.json").read_text())["methods"].keys() == demo.METHODS.keys()
    for png in ("curves.png", "reliability.png"):
        assert (tmp_path / png).stat().st_size > 10_000


def test_an_optional_method_runs_only_when_named(warm_policy, tmp_path):
    """OPTIONAL_METHODS (bae+ocb_eb) are not in either task's default comparison; named, the method
    trains with its baseline and options only (all else as bae+ocb's config), and ocb_eb's history
    is carried over the steps: the run's checkpoint holds the pooled sums of its batches."""
    assert "bae+ocb_eb" in demo.OPTIONAL_METHODS and all("bae+ocb_eb" not in m for m in demo.TASKS.values())
    ocb, eb = (demo.method_config(n, Path("out"), steps=3, seed=0, policy="p").model_dump(exclude={"output_dir"})
               for n in ("bae+ocb", "bae+ocb_eb"))
    assert {k for k in eb if eb[k] != ocb[k]} == {"baseline", "baseline_options"}
    assert (eb["baseline"], eb["baseline_options"]) == ("ocb_eb", {"pretest": 0.05, "history": 3})

    # the CLI names the optional methods among those it takes, and refuses a misspelt one before any work
    from typer.testing import CliRunner

    from bae.cli import app

    result = CliRunner().invoke(app, ["demo", "--methods", "bae+ocb,bae+ocb_ebb", "--out-dir", str(tmp_path / "d")])
    assert result.exit_code == 2 and "'bae+ocb_ebb'" in result.output and "'bae+ocb_eb'" in result.output
    assert not (tmp_path / "d").exists()
    result = CliRunner().invoke(app, ["demo", "--methods", " , ", "--out-dir", str(tmp_path / "d")])
    assert result.exit_code == 2 and "names no method" in result.output  # not the whole default demo
    assert not (tmp_path / "d").exists()

    shutil.copytree(warm_policy, tmp_path / "warm_start")
    summary = demo.run_demo(str(tmp_path), steps=2, seed=0, methods=("bae+ocb_eb",),
                            overrides={"eval": {"limit": 4, "n": 1, "bootstrap": 10}})
    assert list(summary["policies"]) == [demo.WARM, "bae+ocb_eb"] and summary["reference"] == "bae+ocb_eb"
    state = json.loads((Path(summary["methods"]["bae+ocb_eb"]["folder"]) / "checkpoint-2"
                        / "bae_baseline_state.json").read_text())
    # one later block (the confidence); at most one pooled entry per step before, each six sums
    sums = state["1"]["eb_sums"]
    assert 1 <= len(sums) <= 2 and all(len(entry) == 6 for entry in sums)


def _scored(confidence, correct, prompts):
    """Scored rows: sample i belongs to prompt i % prompts."""
    return [{"prompt_id": str(i % prompts), "confidence": q, "correct": c} for i, (q, c) in enumerate(zip(confidence, correct))]


def test_demo_differences_are_paired_over_prompts_and_said_in_words():
    """confidence_differences: policy - reference of each figure on the same prompts (the point
    difference is the difference of the figures on all rows: ECE(a) - ECE(b)), zero with a zero
    interval for an identical policy, only accuracy for a policy without confidences, and the
    sentence calls a difference whose interval excludes 0 better or worse by the figure's direction."""
    import numpy as np

    from bae import metrics as M

    rng = np.random.default_rng(0)
    correct = (rng.random(400) < 0.5).astype(float)
    calibrated = np.clip(correct * 0.8 + 0.1 + rng.normal(0, 0.05, 400), 0, 1)  # knows when it is right
    overconfident = np.full(400, 0.95)
    scored = {"ref": _scored(calibrated, correct, 100), "same": _scored(calibrated, correct, 100),
              "over": _scored(overconfident, correct, 100), "silent": _scored([None] * 400, correct, 100)}
    policies = {name: {"metrics": {"ece": None if name == "silent" else {"value": 0.0}}} for name in scored}
    d = demo.confidence_differences(scored, policies, "ref", n_resamples=300, seed=0)

    assert list(d) == ["same", "over", "silent"]
    assert {k: d["same"]["ece"][k] for k in ("diff", "se", "low", "high")} == {"diff": 0.0, "se": 0.0, "low": 0.0,
                                                                                "high": 0.0}
    assert d["over"]["ece"]["diff"] == M.ece(overconfident, correct) - M.ece(calibrated, correct)
    assert d["over"]["ece"]["low"] > 0 and d["over"]["auroc"]["high"] < 0
    assert list(d["silent"]) == ["accuracy"] and d["silent"]["accuracy"]["diff"] == 0.0
    words = dict(line.split(": ", 1) for line in demo.distinguishable(d))
    assert "distinguishable from zero: over +" in words["- ece"] and "(worse)" in words["- ece"]
    assert words["- accuracy"].startswith("not distinguishable from zero: same +0.000")
    table = "\n".join(demo.differences_markdown(d, "ref"))
    assert "## Differences from ref" in table and "| silent | +0.000" in table


def test_demo_attempt_differences_count_fixes_and_breaks_per_prompt():
    """attempt_differences on two-attempt generations: first/second pass@1, gain = second - first,
    fixed = P(first wrong, second right), broken = P(first right, second wrong), policy - reference."""
    from bae import tasks

    task = tasks.load("arithmetic_two_attempt")
    right_right = "<reasoning>1+1=2</reasoning><answer>2</answer><reasoning>check</reasoning><answer>2</answer>"
    wrong_right = "<reasoning>1+1=3</reasoning><answer>3</answer><reasoning>check</reasoning><answer>2</answer>"
    right_wrong = "<reasoning>1+1=2</reasoning><answer>2</answer><reasoning>check</reasoning><answer>5</answer>"
    rows = lambda texts: [{"prompt_id": str(i // 2), "completion": t, "gold": "2"} for i, t in enumerate(texts)]
    generations = {"ref": rows([right_right, right_wrong, right_right, right_wrong]),
                   "fixer": rows([wrong_right, wrong_right, right_right, right_right])}
    d = demo.attempt_differences(generations, task, "ref", n_resamples=50, seed=0)["fixer"]
    # ref: first 1.0, second 0.5, fixed 0, broken 0.5; fixer: first 0.5, second 1.0, fixed 0.5, broken 0
    expected = {"first": -0.5, "second": 0.5, "gain": 1.0, "fixed": 0.5, "broken": -0.5}
    assert {k: d[k]["diff"] for k in expected} == expected
    assert "(better)" in demo.distinguishable({"fixer": {"broken": {"diff": -0.5, "low": -0.6, "high": -0.4}}})[0]


def test_reliability_grid_draws_a_policy_that_states_no_confidence(tmp_path):
    """A method can stop stating confidences (rlvr's confidence block is never rewarded): its ECE
    is None (not reported) and its panel says so instead of failing the whole demo at the end."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = [{"confidence": float(q), "correct": bool(c)} for q, c in zip(rng.random(50), rng.random(50) < 0.5)]
    scored = {"bae+ocb": rows, "rlvr": [{"confidence": None, "correct": r["correct"]} for r in rows]}
    results = {"bae+ocb": {"metrics": {"ece": {"value": 0.1}}}, "rlvr": {"metrics": {"ece": None}}}
    demo.reliability_grid(scored, results, tmp_path / "reliability.png")
    assert (tmp_path / "reliability.png").stat().st_size > 10_000


def test_demo_notes_name_a_policy_without_or_with_a_collapsed_confidence():
    """confidence_notes: a policy with no confidence at all is "not reported"; one whose samples
    state one value at least 95% of the time (a missing one counting as 0.0) is called collapsed;
    a policy with spread confidences gets no note."""
    rows = lambda qs: [{"confidence": q, "correct": i % 2 == 0} for i, q in enumerate(qs)]
    metrics = lambda ece: {"metrics": {"ece": ece, "auroc": {"value": 0.5}, "malformed_rate": {"value": 1.0}}}
    scored = {"silent": rows([None] * 20), "collapsed": rows([0.0] * 18 + [None, 0.7]),
              "spread": rows([i / 20 for i in range(20)])}
    policies = {"silent": metrics(None), "collapsed": metrics({"value": 0.5}), "spread": metrics({"value": 0.2})}
    notes = demo.confidence_notes(scored, policies)
    assert len(notes) == 2
    assert notes[0].startswith("silent: no held-out sample states a confidence (malformed 1.000)")
    assert notes[1].startswith("collapsed: 19 of 20 samples state confidence 0: the confidence has collapsed")
