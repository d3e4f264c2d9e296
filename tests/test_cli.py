"""The `bae` command line: eval on a generations file, clear errors for bad input, the core demo."""

import json

from typer.testing import CliRunner

from bae.cli import app

runner = CliRunner()
ROWS = [
    {"prompt_id": "p1", "completion": "<reasoning>r</reasoning><answer>4</answer><analysis>a</analysis><confidence>0.9</confidence>", "gold": "4"},
    {"prompt_id": "p1", "completion": "<reasoning>r</reasoning><answer>5</answer><analysis>a</analysis><confidence>0.3</confidence>", "gold": "4"},
    {"prompt_id": "p2", "completion": "<reasoning>r</reasoning><answer>9</answer><analysis>a</analysis><confidence>1</confidence>", "gold": "9"},
    {"prompt_id": "p2", "completion": "<reasoning>r</reasoning><answer>9", "gold": "9"},
]


def test_eval_scores_a_generations_file(tmp_path):
    path = tmp_path / "gen.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    result = runner.invoke(app, ["eval", "--task", "arithmetic", "--generations", str(path), "--out-dir", str(tmp_path / "rep"), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())["metrics"]
    # correct = [1, 0, 1, 0] (the truncated one has no answer); confidence = [0.9, 0.3, 1.0, 0.0 (missing)]
    assert metrics["accuracy"]["value"] == 0.5
    assert abs(metrics["brier"]["value"] - (0.1**2 + 0.3**2 + 0.0 + 0.0) / 4) < 1e-12
    for name in ("report.md", "reliability.png", "tts.png", "risk_coverage.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 0


def test_eval_names_the_bad_line_and_exits_2(tmp_path):
    path = tmp_path / "gen.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    result = runner.invoke(app, ["eval", "--generations", str(path), "--out-dir", str(tmp_path / "rep")])
    assert result.exit_code == 2 and ":2:" in result.output
    assert not (tmp_path / "rep" / "metrics.json").exists()


def test_eval_refuses_a_config_without_input(tmp_path):
    result = runner.invoke(app, ["eval", "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "model" in result.output


def test_baselines_prints_every_baseline_and_writes_a_report(tmp_path):
    from bae.advantages import BASELINES

    result = runner.invoke(app, ["baselines", "--prompts", "4", "--group", "4", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in BASELINES:
        assert name in result.output
    assert "accuracy" in result.output and (tmp_path / "metrics.json").exists()
