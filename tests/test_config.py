"""Training configs: every key is checked before any compute, errors name the key."""

import pytest
import yaml

from bae.runs.config import ConfigError, TrainConfig, load, parse


def test_paper_defaults():
    """Table 4: group 32, batch 2048, lr 1e-6, warmup 64, temperature 1.0, max length 4096, no scaling."""
    c = TrainConfig()
    assert (c.group_size, c.batch_size, c.learning_rate, c.warmup_steps, c.temperature, c.max_completion_length, c.scale) == (
        32, 2048, 1e-6, 64, 1.0, 4096, "none")


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"grup_size": 8}, r"grup_size: unknown key \(did you mean group_size\?\)"),
        ({"eval": {"limt": 3}}, r"eval.limt: unknown key \(did you mean limit\?\)"),  # the closest key of that section
        ({"eval": {"every": 1, "n_samples": 3}}, "eval.n_samples: unknown key"),
        ({"task": {"name": "chess"}}, "task.name: unknown task"),
        ({"task": {"name": "arithmetic", "options": {"confidence": "bce"}}}, "task.options: task .arithmetic.: unknown option"),
        ({"method": "ppo"}, "method: unknown method"),
        ({"baseline": "ocbb"}, "baseline: unknown baseline"),
        ({"group_size": 1}, "group_size"),
        ({"group_size": 8, "batch_size": 12}, "multiple of group_size"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"trl": {"bf17": True}}, "trl: not GRPOConfig fields: ['bf17']"),
        ({"data": {"source": "prompts.txt"}}, "data.source"),
        ({"scale": "std"}, "scale"),
        ({"baseline": "ocb_eb", "baseline_options": {"history": -1}}, "history must be"),  # at load, before any model
        ({"baseline": "ocb", "baseline_options": {"history": 3}}, "'history' is an option of ocb_eb"),
        ({"baseline": "ocb_eb", "baseline_options": {"state": {}}}, "'state' is not an option"),
        # a scalar method has no baseline to take options: refused, not silently run without them
        ({"method": "rlcr", "baseline_options": {"history": 3}}, "apply to method 'bae' only"),
    ],
)
def test_bad_values_name_the_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse(raw)


def test_yaml_files(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"group_size": 4, "batch_size": 8, "steps": 3}))
    assert load(path).steps == 3
    path.write_text("group_size: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(path)
    with pytest.raises(ConfigError, match="no such config"):
        load(tmp_path / "nope.yaml")
    path.write_text("- a list")
    with pytest.raises(ConfigError, match="mapping"):
        load(path)


def test_shipped_configs_are_valid():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert configs, "configs/ holds no YAML"
    for path in configs:
        load(path)


def test_missing_data_files_are_caught_before_training():
    config = parse({"data": {"source": "missing.jsonl"}})  # the form is fine: recipes load before their data exist
    with pytest.raises(ConfigError, match="data.source: no such file"):
        config.check_files()


@pytest.mark.parametrize(
    "batch, trl, world, layout",
    [(32, {}, 1, (32, 1)), (2048, {"per_device_train_batch_size": 4}, 8, (4, 64)),
     (2048, {"gradient_accumulation_steps": 64}, 8, (4, 64)), (64, {}, 2, (32, 1))],
)
def test_batch_layout_gives_batch_size_completions_per_step(batch, trl, world, layout, monkeypatch):
    """per_device x accumulation x processes == batch_size."""
    from bae.runs.train import batch_layout

    monkeypatch.setenv("WORLD_SIZE", str(world))
    assert batch_layout(parse({"group_size": 8, "batch_size": batch, "trl": trl})) == layout


def test_batch_layout_refuses_what_does_not_add_up(monkeypatch):
    from bae.runs.train import batch_layout

    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="batch_size 64"):
        batch_layout(parse({"group_size": 8, "batch_size": 64}))
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ValueError, match="steps_per_generation"):
        batch_layout(parse({"group_size": 8, "batch_size": 64, "trl": {"steps_per_generation": 2}}))
