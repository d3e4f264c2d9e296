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
