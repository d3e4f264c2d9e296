"""`bae train` configs mean what they say: a task defined in the YAML (inline or a task file),
the `trl:` pass-through never overriding a validated key, and a model that does not exist refused
in one line before any compute."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bae import tasks
from bae.runs.config import TRL_OVERLAP, ConfigError, load, parse

ROOT = Path(__file__).resolve().parents[1]
RLCR_FILE = ROOT / "configs" / "tasks" / "rlcr.yaml"
RLCR = yaml.safe_load(RLCR_FILE.read_text())


def test_shipped_task_files_load_and_score():
    files = sorted((ROOT / "configs" / "tasks").glob("*.yaml"))
    assert {f.name for f in files} >= {"rlcr.yaml", "boxed_confidence.yaml"}
    for path in files:
        task = tasks.load(str(path))
        assert task.num_blocks == 2 and task.states_confidence and task.system_prompt
    rlcr = tasks.load(str(RLCR_FILE))
    text = "<think>6 * 7 = 42</think><answer>42</answer><analysis>simple</analysis><confidence>0.9</confidence>"
    assert rlcr.score(text, "42").rewards == pytest.approx((1.0, -0.01)) and rlcr.score(text, "41").outcomes == (0, 0)


def test_a_task_defined_inline_in_the_train_config_is_the_task_of_the_file():
    """The RLCR task written inline, as a file path, as the `task: PATH` shorthand and as
    {file, options}: the same task; options override a key (here the system prompt)."""
    inline = parse({"task": RLCR}).task.build()
    from_file = parse({"task": {"file": str(RLCR_FILE)}}).task.build()
    shorthand = parse({"task": str(RLCR_FILE)}).task.build()
    assert inline.config == from_file.config == shorthand.config == tasks.load(str(RLCR_FILE)).config
    again = parse({"task": {"file": str(RLCR_FILE), "options": {"system_prompt": ""}}}).task.build()
    assert again.system_prompt == "" and again.config.blocks == inline.config.blocks
    override = parse({"task": {**RLCR, "options": {"malformed": "all_worst"}}}).task.build()
    assert override.config.malformed == "all_worst"
    # built-in tasks work as before
    assert parse({"task": {"name": "self_confidence", "options": {"confidence_reward": "bce"}}}
                 ).task.build().config.blocks[1].reward == "bce"
    assert parse({}).task.build().name == "arithmetic"


def blocks(reward="brier", fields=("analysis", "confidence")):
    return [{"name": "solution", "fields": ["think", "answer"], "reward": "correct"},
            {"name": "confidence", "fields": list(fields), "reward": reward}]


@pytest.mark.parametrize(
    "task, key",
    [
        ({"name": "rlcr", "blocks": blocks("brierr"), "outcomes": ["correct"]}, "task.blocks.1.reward: unknown block reward 'brierr'"),
        ({"name": "rlcr", "blocks": [{**blocks()[0], "colour": "red"}, blocks()[1]], "outcomes": ["correct"]},
         "task.blocks.0.colour: unknown key"),
        ({"name": "rlcr", "blocks": blocks()}, "task.outcomes: need one per later block"),
        ({"name": "rlcr", "blocks": blocks(), "outcomes": ["right"]}, "task.outcomes: unknown outcome 'right'"),
        ({"name": "rlcr", "blocks": blocks(fields=()), "outcomes": ["correct"]}, "task.blocks.1.fields: block 'confidence'"),
        ({"name": "rlcr", "blocks": blocks(fields=("1x",)), "outcomes": ["correct"]}, "task.blocks.1.fields.*valid tag name"),
        ({"name": "rlcr", "blocks": blocks(), "outcomes": ["correct"], "verifier": "llm"}, "task.verifier"),
        ({"name": "rlcr", "blocks": blocks(), "outcomes": ["correct"], "options": {"confidence_reward": "bce"}},
         "task.options: \\['confidence_reward'\\] are not keys of a defined task"),
        ({"name": "arithmetic", "verifier": "math"}, "task.verifier: defines a task only together with task.blocks"),
        ({"name": "rlcr"}, "task.name: unknown task 'rlcr'.*task.blocks.*task.file"),
        ({"file": "configs/tasks/nope.yaml"}, "task.file: no such task file"),
        ({"file": str(RLCR_FILE), "verifier": "exact"}, "task.verifier: the task comes from task.file"),
        ({"file": str(RLCR_FILE), "options": {"colour": 1}}, "task.file: .*colour"),
        ({"name": "arithmetic", "options": {"confidence": "bce"}}, "task.options: task 'arithmetic': unknown option"),
    ],
)
def test_bad_task_definitions_name_the_key(task, key):
    with pytest.raises(ConfigError, match=key):
        parse({"task": task})


def test_a_bad_task_file_names_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**RLCR, "blocks": blocks("nope")}))
    with pytest.raises(ConfigError, match=rf"task.file: task file {bad}: .*unknown block reward 'nope'"):
        parse({"task": str(bad)})


def test_a_train_config_file_with_an_inline_task_round_trips(tmp_path):
    """What `bae train` writes into the run folder (config.json) reads back as the same config."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"task": RLCR, "group_size": 4, "batch_size": 8}))
    config = load(path)
    again = parse(yaml.safe_load(config.model_dump_json()))
    assert again == config and again.task.build().config == config.task.build().config


@pytest.mark.parametrize("key", sorted(TRL_OVERLAP))
def test_trl_may_not_override_a_validated_key(key):
    """learning_rate, max_steps, num_generations, loss_type, ... in `trl:` silently overrode the
    checked top-level keys (and let through loss types the top-level key rejects)."""
    with pytest.raises(ConfigError, match=rf"trl: {key} is set by the top-level key '{TRL_OVERLAP[key]}'"):
        parse({"trl": {key: 1}})


def test_trl_keys_bae_does_not_set_still_pass_through():
    from bae.runs.train import grpo_args

    config = parse({"group_size": 4, "batch_size": 8, "learning_rate": 0.5, "steps": 3,
                    "trl": {"weight_decay": 0.1, "beta": 0.0, "per_device_train_batch_size": 4}})
    args = grpo_args(config)
    assert (args.learning_rate, args.max_steps, args.num_generations, args.weight_decay) == (0.5, 3, 4, 0.1)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 2)


def test_a_model_that_does_not_exist_is_refused_before_any_compute(tmp_path):
    for model, message in ((str(tmp_path / "no" / "such" / "model"), "model: no such model folder"),
                           ("runs/demo-train/final-typo", "model: no such model folder"),
                           (str(tmp_path), "model: .* is not a model folder \\(it holds no config.json\\)")):
        with pytest.raises(ConfigError, match=message):
            parse({"model": model}).check_files()
    parse({"model": "Qwen/Qwen2.5-3B-Instruct"}).check_files()  # a hub id is looked up when loaded
    parse({"model": "tiny"}).check_files()


def bae_train(config: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bae.cli", "train", "--config", str(config)], capture_output=True,
                          text=True, env=env, timeout=600)


def test_bae_train_with_a_missing_model_says_so_in_one_line(tmp_path):
    """A folder path: refused by the config check; a hub id that cannot be reached (offline):
    refused when loaded. Each one line, exit 2, no traceback."""
    base = {"group_size": 2, "batch_size": 2, "steps": 1, "data": {"size": 4, "eval_size": 2},
            "output_dir": str(tmp_path / "run")}
    for model, message in ((str(tmp_path / "missing"), "config.yaml: model: no such model folder"),
                           ("nobody/no-such-model", "error: model 'nobody/no-such-model' cannot be loaded")):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({**base, "model": model}))
        done = bae_train(path, tmp_path)
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        assert done.returncode == 2, done.stdout + done.stderr
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in lines[0], lines


def test_tiny_with_a_format_it_was_never_warm_started_on_is_a_clear_error(tmp_path):
    """model "tiny" warm-starts in the self-confidence and two-attempt formats only: an RLCR task
    is refused in one line, exit 2, before any warm start."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": "tiny", "task": str(RLCR_FILE), "group_size": 2, "batch_size": 2,
                                    "steps": 1, "output_dir": str(tmp_path / "run")}))
    done = bae_train(path, tmp_path)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stdout + done.stderr
    assert "model 'tiny' is warm-started in the self-confidence and two-attempt block formats only" in lines[0]
    assert "task 'rlcr'" in lines[0] and not (tmp_path / "run" / "warm_start").exists()
