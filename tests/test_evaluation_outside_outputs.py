"""`bae eval` on outputs of any system: MATH500's own solutions (plain \\boxed{} answers, no bae
tags) as completions, confidences given per row (probabilities, or raw scores with a transform),
and what the report says when the completions do not fit the task or state no confidence."""

import json
import math
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bae import tasks
from bae.cli import app
from bae.evaluation import EvalConfig, confidence_from, evaluate_generations, read_generations, score_rows
from bae.evaluation.generations import InputError
from bae.evaluation.sets import resolve

runner = CliRunner()
MATH500 = [json.loads(line) for line in resolve("math500").read_text().splitlines()[:30]]


def wrong(solution: str) -> str:
    """The solution with its last \\boxed{...} answer replaced by a wrong one."""
    start = solution.rindex("\\boxed{")
    depth, end = 0, start + len("\\boxed")
    for end in range(start + len("\\boxed"), len(solution)):
        depth += solution[end] == "{"
        depth -= solution[end] == "}"
        if depth == 0:
            break
    return solution[:start] + "\\boxed{-98765}" + solution[end + 1:]


def generations(tmp_path: Path, confidence=None, name="gens.jsonl") -> Path:
    """Two samples per problem: the reference solution (right) and the same with a wrong box;
    `confidence(right) -> value` adds a confidence key."""
    rows = []
    for r in MATH500:
        for right, text in ((True, r["solution"]), (False, wrong(r["solution"]))):
            row = {"prompt_id": r["id"], "problem": r["problem"], "completion": text, "gold": r["answer"]}
            if confidence is not None:
                row["confidence"] = confidence(right)
            rows.append(row)
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def bae_eval(*args: str):
    return runner.invoke(app, ["eval", *args, "--bootstrap", "20"])


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_boxed_outputs_under_a_tag_task_are_flagged_not_reported_as_zeros(tmp_path):
    """The issue's case: plain \\boxed{} outputs given to the default task. The console says
    that all are malformed and points to --task boxed, and that nothing states a confidence; ECE,
    AUROC and Brier are 'not reported' (null with the reason in metrics.json), never 0.0000; no
    reliability or risk-coverage PNG is drawn."""
    out = tmp_path / "rep"
    result = bae_eval("--generations", str(generations(tmp_path)), "--out-dir", str(out))
    assert result.exit_code == 0, result.output
    assert "60 of 60 completions (100%) are malformed for task 'self_confidence'" in result.output
    assert "60 of them hold a \\boxed{} answer: --task boxed scores those" in result.output
    assert "no completion states a parseable confidence for task 'self_confidence' and no generations row" in result.output
    assert re.search(r"ece\s+│\s+not reported", result.output), result.output
    assert "0.0000" not in result.output.split("ece")[1].split("\n")[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["ece"] is None and metrics["not_reported"]["reason"].startswith("no completion")
    assert not (out / "reliability.png").exists() and not (out / "risk_coverage.png").exists()
    assert (out / "tts.png").stat().st_size > 0


def test_the_boxed_task_scores_them_and_given_confidences_are_used(tmp_path):
    """--task boxed: accuracy exactly 1/2 (each reference solution right, its corrupted copy
    wrong). Without confidences the calibration is not reported; with a confidence per row
    (0.8 for the right ones, 0.3 for the wrong) ECE = 0.5 * 0.2 + 0.5 * 0.3 = 0.25,
    Brier = (0.04 + 0.09) / 2, AUROC 1; and the scores say where each confidence came from."""
    out = tmp_path / "plain"
    result = bae_eval("--task", "boxed", "--generations", str(generations(tmp_path)), "--out-dir", str(out))
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["accuracy"]["value"] == 0.5 and metrics["counts"]["malformed"] == 0
    assert metrics["metrics"]["brier"] is None and "are malformed" not in result.output
    assert "task 'boxed' states no confidence and no generations row gives one" in result.output

    out = tmp_path / "given"
    path = generations(tmp_path, lambda right: 0.8 if right else 0.3, "conf.jsonl")
    result = bae_eval("--task", "boxed", "--generations", str(path), "--out-dir", str(out))
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    m = metrics["metrics"]
    assert m["accuracy"]["value"] == 0.5 and m["auroc"]["value"] == 1.0
    assert m["ece"]["value"] == pytest.approx(0.25) and m["brier"]["value"] == pytest.approx(0.065)
    assert metrics["counts"]["confidence_given"] == 60 and metrics["not_reported"] is None
    assert (out / "reliability.png").stat().st_size > 0 and (out / "risk_coverage.png").stat().st_size > 0
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert {s["confidence_source"] for s in scores} == {"given"}
    assert [s["confidence"] for s in scores[:2]] == [0.8, 0.3]


def test_a_given_confidence_replaces_the_stated_one():
    """A self-confidence completion states 0.9; the row gives 0.2: 0.2 is used. A row without one
    keeps the stated confidence."""
    text = "<reasoning>r</reasoning><answer>4</answer><analysis>a</analysis><confidence>0.9</confidence>"
    scored = score_rows([{"prompt_id": "p", "completion": text, "gold": "4", "confidence": 0.2},
                         {"prompt_id": "p", "completion": text, "gold": "4"}], tasks.get("self_confidence"))
    assert [(s["confidence"], s["confidence_source"]) for s in scored] == [(0.2, "given"), (0.9, "stated")]
    with pytest.raises(ValueError, match=r"row 0 \(prompt_id 'p'\): 'confidence' 3.5 is not a probability"):
        score_rows([{"prompt_id": "p", "completion": text, "gold": "4", "confidence": 3.5}], tasks.get("boxed"))


@pytest.mark.parametrize(
    "value, transform, expected",
    [(0.25, "none", 0.25), (0, "none", 0.0), (1, "none", 1.0), (None, "none", None),
     (3.5, "sigmoid", 1 / (1 + math.exp(-3.5))), (-2.0, "sigmoid", 1 / (1 + math.exp(2.0))),
     (-800.0, "sigmoid", 0.0), (800.0, "sigmoid", 1.0), (80, "percent", 0.8), (0, "percent", 0.0)],
)
def test_confidence_transforms(value, transform, expected):
    got = confidence_from(value, transform)
    assert got == expected if expected is None else got == pytest.approx(expected, abs=1e-300)
    if got is not None:
        assert 0.0 <= got <= 1.0


@pytest.mark.parametrize(
    "value, transform, message",
    [(3.5, "none", "not a probability in \\[0, 1\\]; for a raw score .* sigmoid"),  # never read as 3.5 %
     (-2.0, "none", "not a probability"),  # never clipped to 0
     (1.0000001, "none", "not a probability"),
     ("0.8", "none", "must be a number"), (True, "none", "must be a number"), ([0.5], "sigmoid", "must be a number"),
     (float("nan"), "sigmoid", "finite"), (150, "percent", "not a percentage"), (-1, "percent", "not a percentage")],
)
def test_bad_confidences_are_refused_not_guessed(value, transform, message):
    with pytest.raises(ValueError, match=message):
        confidence_from(value, transform)


def test_a_reward_model_score_through_the_command_line(tmp_path):
    """Raw scores (right: +2, wrong: -1) are refused as they are, naming the line, in one line
    and exit 2; with --confidence-transform sigmoid they become sigmoid(2) and sigmoid(-1)."""
    path = generations(tmp_path, lambda right: 2.0 if right else -1.0)
    refused = bae_eval("--task", "boxed", "--generations", str(path), "--out-dir", str(tmp_path / "no"))
    assert refused.exit_code == 2
    lines = error_lines(refused.output)
    assert len(lines) == 1 and f"{path}:1: 'confidence' 2.0 is not a probability in [0, 1]" in lines[0], lines
    assert not (tmp_path / "no").exists()

    out = tmp_path / "rm"
    done = bae_eval("--task", "boxed", "--generations", str(path), "--confidence-transform", "sigmoid",
                    "--out-dir", str(out))
    assert done.exit_code == 0, done.output
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert scores[0]["confidence"] == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert scores[1]["confidence"] == pytest.approx(1 / (1 + math.exp(1.0)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["confidence_transform"] == "sigmoid" and metrics["metrics"]["auroc"]["value"] == 1.0

    bad = bae_eval("--task", "boxed", "--generations", str(path), "--confidence-transform", "softmax",
                   "--out-dir", str(tmp_path / "x"))
    assert bad.exit_code == 2 and "confidence_transform" in bad.output


def test_generations_confidence_errors_name_the_line(tmp_path):
    lines = [{"prompt_id": "a", "completion": "x", "gold": "1", "confidence": 0.5},
             {"prompt_id": "a", "completion": "y", "gold": "1", "confidence": "high"}]
    path = tmp_path / "g.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(InputError, match=r"g.jsonl:2: 'confidence' must be a number"):
        read_generations(path)
    path.write_text(json.dumps({"prompt_id": "a", "completion": "x", "gold": "1"}) + "\n")
    with pytest.raises(InputError, match="confidence transform 'sigmoid' given, but no line has a 'confidence'"):
        read_generations(path, "sigmoid")
    path.write_text(json.dumps({"prompt_id": "a", "completion": "x", "gold": "1", "confidence": None}) + "\n")
    assert read_generations(path)[0]["confidence"] is None  # null: no confidence for that line
    with pytest.raises(ValueError, match="EvalConfig.confidence_transform=.*generations"):
        EvalConfig(model="m", data="math500", confidence_transform="sigmoid")


def test_most_malformed_with_some_confidences_warns_but_reports(tmp_path):
    """3 of 4 completions malformed, one states a confidence: a warning, and the calibration is
    reported under the documented rule (missing counts as 0.0)."""
    good = "<reasoning>r</reasoning><answer>4</answer><analysis>a</analysis><confidence>0.9</confidence>"
    rows = [{"prompt_id": "p", "completion": t, "gold": "4"} for t in (good, "4", "four", "<answer>4</answer>")]
    result = evaluate_generations(rows, tasks.get("self_confidence"), tmp_path, bootstrap=10)
    assert result["warnings"] == [result["warnings"][0]] and "3 of 4 completions (75%) are malformed" in result["warnings"][0]
    assert result["metrics"]["brier"]["value"] == pytest.approx((0.1 ** 2) / 4)
    assert "**Warning:** 3 of 4" in (tmp_path / "report.md").read_text()


def test_the_readme_generations_example_is_what_the_reader_and_the_boxed_task_accept(tmp_path):
    """Docs match the code: the README's generations line is valid, its boxed answer is correct
    under --task boxed and its confidence is used."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Generations format", 1)[1]
    line = section.split("```json\n", 1)[1].split("\n```", 1)[0]
    path = tmp_path / "readme.jsonl"
    path.write_text(line + "\n")
    scored = score_rows(read_generations(path), tasks.get("boxed"))
    assert scored[0]["correct"] and scored[0]["confidence"] == 0.82 and scored[0]["confidence_source"] == "given"


def test_the_malformed_warning_says_which_answers_accuracy_still_scores():
    """malformed="partial": a completion whose solution block is complete but whose confidence
    block is missing is malformed, yet its answer is scored; the warning says how many of the
    malformed ones accuracy scores and how many it counts as wrong (not "all wrong")."""
    from bae.evaluation.report import warnings_for

    scored = [{"malformed": True, "answer": "7"}] * 3 + [{"malformed": True, "answer": None}] + [
        {"malformed": False, "answer": "7"}]
    result = {"counts": {"completions": 5, "malformed": 4}, "task": "arithmetic"}
    (line,) = warnings_for(result, scored)
    assert line.startswith("4 of 5 completions (80%) are malformed for task 'arithmetic'")
    assert line.endswith("accuracy scores the answer of the 3 whose solution block is complete and counts the other 1 "
                         "as wrong.")
    (line,) = warnings_for(result, [{"malformed": True, "answer": None}] * 4 + [{"malformed": False, "answer": "7"}])
    assert line.endswith("; accuracy counts them as wrong.")
