"""`bae demo --task two_attempt`: two-attempt demonstrations follow their rates, the attempt curves
are Pass@k curves, and a tiny end-to-end demo writes the report (paper Section 5.5, Figure 3)."""

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bae import tasks
from bae.embedded import demo
from bae.cli import app
from bae.embedded.warmstart import WarmStartConfig, make_demonstrations, task_of


def test_two_attempt_demonstrations_follow_the_configured_rates():
    cfg = WarmStartConfig(task="arithmetic_two_attempt", examples=1000, levels=(1, 2, 3, 4),
                          wrong_rates=(0.1, 0.25, 0.5, 0.9), fix_rate=0.4, break_rate=0.2, seed=5)
    task = task_of(cfg)
    assert task.name == "arithmetic_two_attempt" and task.system_prompt == ""
    demos = make_demonstrations(cfg)
    assert len(demos) == 1000
    count, wrong, fixed, broken = Counter(), Counter(), Counter(), Counter()
    for d in demos:
        split = task.split(d["completion"])
        assert split.well_formed, d["completion"]
        first, second = split.fields
        assert first["answer"] == d["stated"] and second["answer"] == d["second"]
        expression = d["problem"][len("What is "):-1].replace(" ", "")
        assert first["reasoning"] == f"{expression}={d['stated']}"
        assert second["reasoning"] == f"check {expression}={d['second']}"
        assert d["prompt"] == task.format_prompt(d["problem"]) and len(d["prompt"]) == 1  # no system prompt
        # the task's verifier and shaped reward agree with the design's bookkeeping
        score = task.score(d["completion"], d["answer"])
        assert score.rewards[0] == float(not d["wrong"])
        assert score.rewards[1] == (1.0 if not d["second_wrong"] else 0.1 if d["second"] != d["stated"] else 0.0)
        assert score.correct == (not d["second_wrong"])
        if d["wrong"]:
            assert d["change"] in ("fixed", "kept")
            assert (d["change"] == "fixed") == (not d["second_wrong"])
            assert d["change"] == "fixed" or d["second"] == d["stated"]  # an unfixed error is repeated
        else:
            assert d["change"] in ("broken", "kept")
            assert (d["change"] == "broken") == d["second_wrong"]
            assert d["change"] == "kept" or (d["second"] != d["stated"] and int(d["second"]) >= 0)
        count[d["level"]] += 1
        wrong[d["level"]] += d["wrong"]
        fixed[d["level"]] += d["change"] == "fixed"
        broken[d["level"]] += d["change"] == "broken"
    for level in cfg.levels:  # exactly the configured fractions (rounded), level by level
        assert wrong[level] == round(cfg.wrong_rates[level - 1] * count[level]), level
        assert fixed[level] == round(cfg.fix_rate * wrong[level]), level
        assert broken[level] == round(cfg.break_rate * (count[level] - wrong[level])), level
    assert all(fixed[lv] > 0 and broken[lv] > 0 for lv in cfg.levels)

    # the first attempts are the self-confidence demonstrations' answers of the same seed, whatever
    # the second-attempt rates
    plain = make_demonstrations(WarmStartConfig(examples=1000, levels=cfg.levels, wrong_rates=cfg.wrong_rates, seed=5))
    assert [d["stated"] for d in demos] == [d["stated"] for d in plain]
    other = make_demonstrations(WarmStartConfig(task="arithmetic_two_attempt", examples=1000, levels=cfg.levels,
                                                wrong_rates=cfg.wrong_rates, fix_rate=1.0, break_rate=0.0, seed=5))
    assert [d["stated"] for d in other] == [d["stated"] for d in demos]
    assert all(not d["second_wrong"] for d in other)
    with pytest.raises(ValueError, match="fix_rate"):
        WarmStartConfig(task="arithmetic_two_attempt", fix_rate=1.5)



def test_steps_checks_split_the_second_operand_and_slip_only_in_the_last_step():
    """check="steps": a two-digit second operand b = 10 t + u (u != 0) is checked as
    a op 10t = m, m op u = second, with m the true value of a op 10t; anything else is restated;
    the demonstrations are otherwise those of check="restate" (same answers, same rates)."""
    base = dict(task="arithmetic_two_attempt", examples=400, levels=(1, 2), seed=3)
    steps, restate = make_demonstrations(WarmStartConfig(**base, check="steps")), make_demonstrations(WarmStartConfig(**base))
    task = task_of(WarmStartConfig(**base))
    split_some = 0
    for d, r in zip(steps, restate):
        assert {k: d[k] for k in ("stated", "second", "change")} == {k: r[k] for k in ("stated", "second", "change")}
        second = task.split(d["completion"]).fields[1]
        expression = d["problem"][len("What is "):-1].replace(" ", "")
        op = "+" if "+" in expression else "-"
        a, b = (int(x) for x in expression.split(op))
        if b >= 10 and b % 10:
            first_step, last_step = second["reasoning"].removeprefix("check ").split(",")
            middle = a + b // 10 * 10 if op == "+" else a - b // 10 * 10
            assert first_step == f"{a}{op}{b // 10 * 10}={middle}"
            assert last_step == f"{middle}{op}{b % 10}={d['second']}"
            split_some += 1
        else:
            assert second["reasoning"] == f"check {expression}={d['second']}"
    assert split_some > 100  # most level-2 problems
    with pytest.raises(ValueError, match="check must be one of"):
        WarmStartConfig(task="arithmetic_two_attempt", check="twice")

def test_attempt_figures_are_pass_at_k_curves():
    """Hand-built samples: per prompt, c1 / c2 right first / second attempts out of n = 4."""
    task = tasks.get("arithmetic_two_attempt", system_prompt="")
    plan = {"p0": [(1, 1), (0, 1), (0, 0), (0, 0)],   # first 1/4, second 2/4 (one fix)
            "p1": [(1, 0), (1, 1), (1, 1), (1, 1)],   # first 4/4, second 3/4 (one break)
            "p2": [(0, 0), (0, 0), (0, 0), (0, 0)]}   # never (repeats the same wrong answer)
    rows = []
    for pid, marks in plan.items():
        for a, b in marks:
            first, second = ("7" if a else "8"), ("7" if b else ("9" if a else "8"))
            rows.append({"prompt_id": pid, "gold": "7", "completion":
                         f"<reasoning>3+4={first}</reasoning><answer>{first}</answer>"
                         f"<reasoning>check 3+4={second}</reasoning><answer>{second}</answer>"})
    rows.append({"prompt_id": "p3", "gold": "7", "completion": "<reasoning>3+4=7</reasoning><answer>7</answer><reas"})
    rows += [{"prompt_id": "p3", "gold": "7", "completion": "<reasoning>3+4=8</reasoning><answer>8</answer>"}] * 3
    fig = demo.attempt_figures(rows, task)
    assert fig["k"] == [1, 2, 3, 4] and fig["prompts"] == 4 and fig["samples_per_prompt"] == 4
    # pass@1 = mean accuracy; pass@4 = share of prompts with any right sample; a truncated second
    # block counts as wrong (p3: first 1/4, second 0/4)
    assert fig["first"]["value"][0] == pytest.approx((1 / 4 + 1 + 0 + 1 / 4) / 4)
    assert fig["second"]["value"][0] == pytest.approx((2 / 4 + 3 / 4 + 0 + 0) / 4)
    assert fig["first"]["value"][-1] == pytest.approx(3 / 4) and fig["second"]["value"][-1] == pytest.approx(2 / 4)
    assert fig["first"]["value"][1] == pytest.approx((1 - 3 / 6 + 1 + 0 + 1 - 3 / 6) / 4)  # 1 - C(3,2)/C(4,2)
    assert fig["fixed"] == pytest.approx(1 / 16) and fig["broken"] == pytest.approx(2 / 16)  # p1's break, p3's cut
    assert fig["changed"] == pytest.approx(2 / 16)  # p0's fix, p1's break (a missing second answer is no change)
    assert fig["malformed"] == pytest.approx(4 / 16)
    for attempt in demo.ATTEMPTS:
        values = fig[attempt]["value"]
        assert all(a <= b + 1e-12 for a, b in zip(values, values[1:])), (attempt, values)
        assert all(se >= 0 for se in fig[attempt]["se"])


def test_cli_rejects_an_unknown_demo_task(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--task", "nope", "--out-dir", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "unknown --task 'nope'" in result.output and "two_attempt" in result.output
    assert not (tmp_path / "d").exists()
    with pytest.raises(ValueError, match="unknown demo task"):
        demo.run_demo(str(tmp_path / "d"), task="nope")
    with pytest.raises(ValueError, match="rlvr"):  # the scalar method of two_attempt is scalar_sum
        demo.run_demo(str(tmp_path / "d"), task="two_attempt", methods=("rlvr",))


def test_two_attempt_demo_end_to_end(two_attempt_policy, tmp_path):
    shutil.copytree(two_attempt_policy, tmp_path / "warm_start")  # the demo reuses a warm start it finds
    summary = demo.run_demo(str(tmp_path), steps=2, seed=0, task="two_attempt",  # 4 prompts x 8 per step: short
                            overrides={"eval": {"limit": 8, "n": 4, "bootstrap": 20}, "batch_size": 32})

    assert list(summary["methods"]) == list(demo.TWO_ATTEMPT_METHODS)
    assert list(summary["attempts"]) == ["warm start", *demo.TWO_ATTEMPT_METHODS]
    for name, a in summary["attempts"].items():
        assert a["k"] == [1, 2, 3, 4] and a["prompts"] == 8
        for attempt in demo.ATTEMPTS:
            values = a[attempt]["value"]
            assert all(0.0 <= v <= 1.0 for v in values), (name, attempt, values)
            assert all(x <= y + 1e-12 for x, y in zip(values, values[1:])), (name, attempt, values)  # pass@k
        assert all(0.0 <= a[f] <= 1.0 for f in ("fixed", "broken", "changed", "malformed"))
    for name, result in summary["methods"].items():
        folder = Path(result["folder"])
        # the attempt figures come from the final evaluation's own generations
        rows = [json.loads(line) for line in (folder / "eval" / "final" / "generations.jsonl").read_text().splitlines()]
        assert len(rows) == 8 * 4
        config = json.loads((folder / "config.json").read_text())
        assert config["task"]["name"] == "arithmetic_two_attempt" and config["model"] == str(tmp_path / "warm_start")
        assert config["steps"] == 2 and config["method"] == demo.TWO_ATTEMPT_METHODS[name]["method"]
        logged = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        assert max(r["step"] for r in logged) == 2 and any("rewards/second_reward/mean" in r for r in logged)
    report = (tmp_path / "report.md").read_text()
    assert "first attempt pass@1" in report and "scalar (sum)" in report
    assert all(name in report for name in summary["attempts"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["attempts"]["bae+ocb"]["second"]["value"] == summary["attempts"]["bae+ocb"]["second"]["value"]
    for png in ("attempts.png", "curves.png"):
        assert (tmp_path / png).stat().st_size > 10_000
