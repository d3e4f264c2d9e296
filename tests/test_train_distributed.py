"""`bae train` on two processes (torchrun, gloo, CPU), as README's `accelerate launch` runs it on
GPUs: tests/train_two_processes.py runs the command on each rank, rank 1 late to the final save."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

import bae
from bae.runs.checkpoints import MARKER, last_checkpoint

SCRIPT = Path(__file__).parent / "train_two_processes.py"
RANKS = 2
STEPS = 2


def torchrun(config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    root = str(Path(bae.__file__).parents[1])  # the bae under test, in the subprocesses too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(RANKS),
               str(SCRIPT), str(config), str(out), *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def calls(out: Path) -> list[dict]:
    return [json.loads((out / f"calls{r}.json").read_text()) for r in range(RANKS)]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """A 2-step run of the tiny policy (warm-started by the run itself), a checkpoint every step."""
    root = tmp_path_factory.mktemp("train_two_processes")
    config = {
        "model": "tiny", "task": {"name": "arithmetic", "options": {"system_prompt": ""}},
        "data": {"levels": [1], "size": 64, "eval_size": 4}, "group_size": 4, "batch_size": 8, "steps": STEPS,
        "learning_rate": 1e-3, "max_completion_length": 24, "checkpoint_interval": 1,
        "output_dir": str(root / "run"), "eval": {"every": 0, "n": 1, "limit": 4, "bootstrap": 0},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = torchrun(path, root / "calls")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return path, root / "run", root / "calls", result


def test_the_main_process_alone_warm_starts_writes_and_reports(two_process_run):
    """One warm start (in a child process of rank 0), one evaluation written, one report and one
    progress bar printed; every rank reached the final save."""
    _, run, out, result = two_process_run
    ranks = calls(out)
    assert [r["warm_start_alone"] for r in ranks] == [1, 0]
    assert [r["warm_start"] for r in ranks] == [0, 0]  # not in the ranks: their SFTTrainer would join the group
    assert [r["sample_rows"] for r in ranks] == [1, 1]  # both sample (ZeRO-3's generate needs every rank)
    assert [r["write_generations"] for r in ranks] == [1, 0]
    assert [r["final_save"] for r in ranks] == [1, 1]
    assert result.stdout.count("final evaluation:") == 1
    bars = [line for line in result.stdout.splitlines() if line.startswith("train ")]
    assert len(bars) == 1 and f" {STEPS}/{STEPS} " in bars[0], result.stdout  # rank 1's would stay at 0/2
    assert json.loads((run / "eval" / "final" / "metrics.json").read_text())["counts"]["prompts"] == 4


def test_the_warm_start_is_the_one_process_warm_start(two_process_run, tmp_path):
    """The tiny policy warm-started under the launcher has exactly the weights of the warm start a
    one-process `bae train` of the same config makes (resolve_model in a process of its own, with
    the ranks' thread count: CPU reductions over 2 threads round differently from 1)."""
    config_path, run, _, _ = two_process_run
    code = ("import sys; from bae.runs.config import load; from bae.embedded import resolve_model; "
            "c = load(sys.argv[1]); resolve_model('tiny', sys.argv[2], c.task.build(), levels=c.data.levels, seed=c.seed)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code, str(config_path), str(tmp_path / "warm")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    mine, alone = load_file(run / "warm_start" / "model.safetensors"), load_file(tmp_path / "warm" / "model.safetensors")
    assert mine.keys() == alone.keys() and all((mine[k] == alone[k]).all() for k in mine)


def test_final_holds_the_trained_weights_although_rank_1_saved_last(two_process_run):
    """final/ = the weights of the last checkpoint (the same trained policy), with its tokenizer and
    task record: a process other than the main one never swaps in its own, weightless folder."""
    _, run, _, _ = two_process_run
    final = load_file(run / "final" / "model.safetensors")
    last = load_file(run / f"checkpoint-{STEPS}" / "model.safetensors")
    assert final.keys() == last.keys() and all((final[k] == last[k]).all() for k in final)
    assert (run / "final" / "tokenizer.json").is_file() and (run / "final" / "bae_task.json").is_file()
    assert not any(p.name.startswith(".final") for p in run.iterdir())  # no staging folder left behind


def test_resume_on_two_processes_skips_an_unmarked_checkpoint_once(two_process_run, tmp_path):
    """A copy of the run as if killed during the last checkpoint's save (no marker, no final/):
    --resume on two processes resumes from checkpoint-1 (its optimizer state loaded to "cpu:0",
    bae.engines.trl._restore_to_indexed_cpu), the main process alone removes the unmarked checkpoint
    (two removing it crash one), and the run ends with one log line a step and the weights of the
    uninterrupted run."""
    config, run, _, _ = two_process_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "final")
    shutil.rmtree(copy / "eval")
    (copy / f"checkpoint-{STEPS}" / MARKER).unlink()
    moved = tmp_path / "config.yaml"
    moved.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "output_dir": str(copy)}))
    assert Path(last_checkpoint(copy).checkpoint).name == "checkpoint-1"
    result = torchrun(moved, tmp_path / "calls", "--resume")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (result.stdout + result.stderr).count(f"skipping checkpoint-{STEPS}") == 1
    assert Path(last_checkpoint(copy).checkpoint).name == f"checkpoint-{STEPS}"
    logged = [json.loads(line) for line in (copy / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in logged if "loss" in line] == list(range(1, STEPS + 1))
    # CPU, the same seed, every rank's RNG state restored: the uninterrupted run's weights exactly
    resumed, uninterrupted = load_file(copy / "final" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    assert all((resumed[k] == uninterrupted[k]).all() for k in uninterrupted)
    assert [r["warm_start_alone"] + r["warm_start"] for r in calls(tmp_path / "calls")] == [0, 0]  # warm_start/ reused


def test_resume_of_a_finished_run_evaluates_on_every_rank_and_writes_once(two_process_run, tmp_path):
    """A finished run whose final evaluation is missing: --resume on two processes trains nothing,
    each rank samples it on its own (no rank waits long in a barrier), the main one alone writes."""
    config, run, _, _ = two_process_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "eval")
    moved = tmp_path / "config.yaml"
    moved.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "output_dir": str(copy)}))
    result = torchrun(moved, tmp_path / "calls", "--resume")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = calls(tmp_path / "calls")
    assert [r["sample_rows"] for r in ranks] == [1, 1]
    assert [r["write_generations"] for r in ranks] == [1, 0]
    assert [r["final_save"] for r in ranks] == [0, 0]  # nothing trained, final/ kept
    assert (copy / "eval" / "final" / "metrics.json").is_file()
    assert result.stdout.count("final evaluation:") == 1


def test_a_failed_warm_start_is_one_line_on_each_rank(tmp_path):
    """model tiny with a task the warm start cannot teach (boxed): the main process's child fails;
    rank 0 says why in one line (the child's own error), rank 1 that the warm start is missing."""
    config = {"model": "tiny", "task": {"name": "boxed"}, "group_size": 4, "batch_size": 8, "steps": 1,
              "output_dir": str(tmp_path / "run")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = torchrun(path, tmp_path / "calls")
    assert result.returncode != 0
    lines = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(lines) == 2, result.stdout
    assert any("warm start of the tiny policy" in line and "block formats only" in line for line in lines)
    assert any("the main process did not warm-start it" in line for line in lines)
