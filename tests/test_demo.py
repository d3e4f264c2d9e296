"""`bae demo`: the four methods from one warm start, evaluated the same way, with a full report."""

import json
import shutil
from pathlib import Path

import yaml

from bae.embedded import demo
from bae.runs.config import parse


def test_configs_demo_yaml_is_the_embedded_default():
    """The user-facing configs/demo.yaml and the demo's embedded default hold the same values."""
    shipped = yaml.safe_load((Path(__file__).parents[1] / "configs" / "demo.yaml").read_text())
    assert parse(shipped).model_dump(exclude={"output_dir"}) == parse(demo.DEMO).model_dump(exclude={"output_dir"})


def test_demo_runs_every_method_from_one_warm_start(warm_policy, tmp_path, monkeypatch):
    monkeypatch.setitem(demo.DEMO, "eval", {**demo.DEMO["eval"], "limit": 8, "n": 2, "bootstrap": 20})
    shutil.copytree(warm_policy, tmp_path / "warm_start")  # the demo reuses a warm start it finds
    summary = demo.run_demo(str(tmp_path), steps=2, seed=0)

    assert list(summary["methods"]) == list(demo.METHODS)
    for name, result in summary["methods"].items():
        for figure in demo.FIGURES:
            value = result["metrics"][figure]["value"]
            assert 0.0 <= value <= 1.0, (name, figure, value)
        config = json.loads((Path(result["folder"]) / "config.json").read_text())
        # the methods differ only in the advantage: same start, data, budget and seed
        assert config["model"] == str(tmp_path / "warm_start") and config["steps"] == 2
        assert {k: v for k, v in config.items() if k not in ("method", "baseline", "output_dir")} == {
            k: v for k, v in json.loads((Path(summary["methods"]["rlvr"]["folder"]) / "config.json").read_text()).items()
            if k not in ("method", "baseline", "output_dir")}
        logged = [json.loads(line) for line in (Path(result["folder"]) / "log.jsonl").read_text().splitlines()]
        assert max(r["step"] for r in logged) == 2
    report = (tmp_path / "report.md").read_text()
    assert all(name in report for name in demo.METHODS)
    assert json.loads((tmp_path / "metrics.json").read_text())["methods"].keys() == demo.METHODS.keys()
    for png in ("curves.png", "reliability.png"):
        assert (tmp_path / png).stat().st_size > 10_000
