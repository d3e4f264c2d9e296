"""End to end from the command line, as a user runs it: what `bae train` produced, `bae eval` and
`bae fidelity` evaluate with the task and prompt format the run recorded; a task of the user's own
(the RLCR format, from a YAML file) through train, eval and fidelity; prompts from their own files
(.json with a question key, a parquet held-out set)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from bae import tasks
from bae.evaluation.sets import resolve
from bae.tasks.arithmetic import generate

ROOT = Path(__file__).resolve().parents[1]
RLCR_FILE = ROOT / "configs" / "tasks" / "rlcr.yaml"


def bae(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bae.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def train_run(folder: Path, model: str, task, data: dict | None = None) -> Path:
    """A one-step `bae train` run (the settings of tests/test_train.py); returns its folder."""
    config = {
        "model": model, "task": task, "data": data or {"levels": [1, 2], "size": 16, "eval_size": 2},
        "group_size": 4, "batch_size": 8, "steps": 1, "learning_rate": 1e-3, "warmup_steps": 0,
        "max_completion_length": 32, "checkpoint_interval": 1, "output_dir": str(folder / "run"), "seed": 0,
        "eval": {"every": 0, "n": 1, "limit": 2, "bootstrap": 0},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    done = bae("train", "--config", str(path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder / "run"


@pytest.fixture(scope="module")
def demo_like_run(warm_policy, tmp_path_factory):
    """Trained as configs/demo.yaml trains: the arithmetic task with system_prompt ""."""
    return train_run(tmp_path_factory.mktemp("demo_like"), warm_policy,
                     {"name": "arithmetic", "options": {"system_prompt": ""}})


def test_bae_eval_uses_the_task_and_prompt_format_a_train_run_recorded(demo_like_run, tmp_path):
    """`bae eval --model RUN/final` without --task: the run's task (arithmetic) and its prompt
    format (no system prompt), so the policy's completions keep their format; under the default
    self_confidence prompt the same model loses it (the issue: accuracy 0, all malformed)."""
    final = demo_like_run / "final"
    record = tasks.load_record(final)
    assert record is not None and record.name == "arithmetic" and record.system_prompt == ""
    args = ["--data", "synthetic", "--n", "2", "--limit", "6", "--max-new-tokens", "32", "--bootstrap", "10"]
    done = bae("eval", "--model", str(final), *args, "--out-dir", str(tmp_path / "recorded"))
    assert done.returncode == 0, done.stdout + done.stderr
    recorded = json.loads((tmp_path / "recorded" / "metrics.json").read_text())
    assert recorded["task"] == "arithmetic" and recorded["metrics"]["malformed_rate"]["value"] < 0.5

    done = bae("eval", "--model", str(final), "--task", "self_confidence", *args, "--out-dir", str(tmp_path / "other"))
    assert done.returncode == 0, done.stdout + done.stderr
    other = json.loads((tmp_path / "other" / "metrics.json").read_text())
    assert other["task"] == "self_confidence"
    assert other["metrics"]["malformed_rate"]["value"] > recorded["metrics"]["malformed_rate"]["value"]


def test_task_options_on_the_command_line_apply_to_the_recorded_task(demo_like_run, tmp_path):
    from bae.cli import parse_task_options
    from bae.evaluation import EvalConfig, eval_task

    final = str(demo_like_run / "final")
    options = parse_task_options(["malformed=all_worst", "abstain=unknown"])
    task = eval_task(EvalConfig(model=final, data="synthetic", task_options=options))
    assert (task.name, task.system_prompt, task.config.malformed, task.config.abstain) == ("arithmetic", "", "all_worst",
                                                                                          "unknown")
    done = bae("eval", "--model", final, "--data", "synthetic", "--n", "1", "--limit", "2", "--max-new-tokens", "16",
               "--bootstrap", "0", "--task-option", "malformed=all_worst", "--out-dir", str(tmp_path / "opt"))
    assert done.returncode == 0, done.stdout + done.stderr
    config = json.loads((tmp_path / "opt" / "metrics.json").read_text())["config"]
    assert config["task"] is None and config["task_options"] == {"malformed": "all_worst"}
    refused = bae("eval", "--model", final, "--data", "synthetic", "--task-option", "confidence_reward=bce",
                  "--out-dir", str(tmp_path / "bad"))
    lines = [line for line in refused.stdout.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and "do not apply to the defined task 'arithmetic'" in lines[0]


def prompt_files(folder: Path) -> tuple[Path, Path]:
    """Training prompts as a JSON list keyed question / final, and a parquet held-out set."""
    rows = generate(16, seed=5, levels=(1, 2))
    train = folder / "prompts.json"
    train.write_text(json.dumps([{"question": r["problem"], "final": r["answer"]} for r in rows]))
    held = folder / "held.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": f"h{i}", "problem": r["problem"], "answer": r["answer"]}
                                         for i, r in enumerate(generate(4, seed=6, levels=(1, 2)))]), held)
    return train, held


@pytest.fixture(scope="module")
def rlcr_run(warm_policy, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rlcr")
    train, held = prompt_files(folder)
    run = train_run(folder, warm_policy, {"file": str(RLCR_FILE), "options": {"system_prompt": ""}},
                    {"source": str(train), "problem_key": "question", "answer_key": "final",
                     "eval_source": str(held)})
    return run, held


def test_an_rlcr_task_from_yaml_trains_and_is_recorded(rlcr_run):
    run, _ = rlcr_run
    record = tasks.load_record(run / "final")
    expected = tasks.load(str(RLCR_FILE), system_prompt="")
    assert record.config == expected.config
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    step = next(r for r in logged if "bae/accuracy" in r)
    assert {"bae/solution/reward_mean", "bae/confidence/reward_mean"} <= set(step)  # the RLCR blocks' names
    held_out = json.loads((run / "eval" / "final" / "metrics.json").read_text())
    assert held_out["task"] == "rlcr" and held_out["counts"]["prompts"] == 2  # data.eval_source, eval.limit


def test_bae_eval_and_bae_fidelity_use_the_recorded_rlcr_task(rlcr_run, tmp_path):
    run, held = rlcr_run
    final = str(run / "final")
    done = bae("eval", "--model", final, "--data", str(held), "--n", "2", "--limit", "2", "--max-new-tokens", "24",
               "--bootstrap", "0", "--out-dir", str(tmp_path / "eval"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["task"] == "rlcr"
    done = bae("fidelity", "--model", final, "--data", str(held), "--prompts", "2", "--group", "2",
               "--continuations", "2", "--sweep", "2", "--max-new-tokens", "24", "--bootstrap", "10",
               "--out-dir", str(tmp_path / "fid"))
    assert done.returncode == 0, done.stdout + done.stderr
    setup = json.loads((tmp_path / "fid" / "metrics.json").read_text())["setup"]
    assert setup["task"] == "rlcr" and setup["system_prompt"] == ""
    done = bae("fidelity", "--model", final, "--task", str(RLCR_FILE), "--data", str(held), "--prompts", "2",
               "--group", "2", "--continuations", "2", "--sweep", "2", "--max-new-tokens", "16", "--bootstrap", "0",
               "--out-dir", str(tmp_path / "fid2"))
    assert done.returncode == 0, done.stdout + done.stderr
    setup = json.loads((tmp_path / "fid2" / "metrics.json").read_text())["setup"]
    assert setup["task"] == "rlcr" and setup["system_prompt"].startswith("Think the problem through")


def test_bae_eval_scores_real_looking_rlcr_outputs_from_the_yaml_task(tmp_path):
    """MATH500 reference solutions written in the RLCR format, one right (confidence 0.7) and one
    with a wrong answer (confidence 0.6) per problem: accuracy 1/2, ECE = 0.5 * 0.3 + 0.5 * 0.6."""
    rows = []
    for r in [json.loads(line) for line in resolve("math500").read_text().splitlines()[:20]]:
        for answer, q in ((r["answer"], "0.7"), ("-98765", "0.6")):
            text = (f"<think>{r['solution']}</think><answer>{answer}</answer>"
                    f"<analysis>I checked the last step.</analysis><confidence>{q}</confidence>")
            rows.append({"prompt_id": r["id"], "completion": text, "gold": r["answer"]})
    path = tmp_path / "rlcr.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    done = bae("eval", "--task", str(RLCR_FILE), "--generations", str(path), "--bootstrap", "20",
               "--out-dir", str(tmp_path / "rep"))
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["task"] == "rlcr" and metrics["counts"]["malformed"] == 0
    assert metrics["metrics"]["accuracy"]["value"] == 0.5
    assert metrics["metrics"]["ece"]["value"] == pytest.approx(0.45)
    assert "warning" not in done.stdout
