"""`bae train` end to end on the tiny offline model: checkpoints, and resuming after a kill at any
point of a save, which ends with exactly the weights of an uninterrupted run (CPU, same seed).

No test races a polling loop against a save: tests/savepoints.py intercepts every write of a save
and either records the folder as it is on disk at that point or ends the process there
(os._exit(137), as SIGKILL: no clean-up runs)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from bae.runs.checkpoints import MARKER, last_checkpoint, mark_complete

STEPS = 4
HERE = Path(__file__).resolve().parent


def write_config(folder: Path, model: str) -> Path:
    config = {
        "model": model, "task": {"name": "arithmetic", "options": {"system_prompt": ""}},
        "data": {"levels": [1, 2], "size": 64, "eval_size": 4}, "group_size": 4, "batch_size": 8, "steps": STEPS,
        "learning_rate": 1e-2, "warmup_steps": 0, "max_completion_length": 40, "checkpoint_interval": 2,
        "output_dir": str(folder / "run"), "seed": 3, "eval": {"every": 0, "n": 1, "limit": 2, "bootstrap": 0},
    }
    path = folder / "config.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                          timeout=600, text=True)


def bae_train(config: Path, *extra: str) -> subprocess.CompletedProcess:
    return run("-m", "bae.cli", "train", "--config", str(config), *extra)


def watched_train(config: Path, folder: Path, *how: str) -> subprocess.CompletedProcess:
    return run(str(HERE / "savepoints.py"), "--folder", str(folder), *how, "--", "train", "--config", str(config))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "final" / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(warm_policy, tmp_path_factory):
    """Run A: STEPS steps without interruption, every point of checkpoint-4's save recorded."""
    root = tmp_path_factory.mktemp("uninterrupted")
    config = write_config(root, warm_policy)
    states = root / "states"
    done = watched_train(config, root / "run" / "checkpoint-4", "--record", str(states))
    assert done.returncode == 0, done.stdout[-3000:]
    return root / "run", sorted(states.iterdir())


def test_a_save_killed_at_any_write_is_never_resumed_from(uninterrupted, tmp_path):
    """For the folder as it was on disk at every write of checkpoint-4's save, resume picks
    checkpoint-2 and says why checkpoint-4 was passed over; after the marker, checkpoint-4."""
    run_a, states = uninterrupted
    points = [s.name.split("-", 1)[1] for s in states]
    # the save really went through every kind of write, the reported one included
    for point in ("trainer_state.json-opened", "model.safetensors-half", "optimizer.pt-half", "scheduler.pt-half",
                  "rng_state.pth-half", "config.json-opened", "entropy_ctrl_state.json-opened",
                  f"{MARKER}-unmarked", f"{MARKER}-before-rename"):
        assert point in points, points
    for state in states:
        folder = tmp_path / state.name
        shutil.copytree(run_a / "checkpoint-2", folder / "checkpoint-2")
        shutil.copytree(state, folder / "checkpoint-4")
        found = last_checkpoint(folder)
        assert found.checkpoint == str(folder / "checkpoint-2"), state.name
        assert [Path(f).name for f, _ in found.skipped] == ["checkpoint-4"], state.name
        assert found.skipped[0][1], state.name  # a reason is given
    assert last_checkpoint(run_a).checkpoint == str(run_a / "checkpoint-4")


def test_resume_after_a_kill_mid_save_ends_with_the_uninterrupted_weights(uninterrupted, warm_policy, tmp_path):
    """Run B dies (os._exit, no clean-up) with checkpoint-4's trainer_state.json created but empty,
    the state that crashed `--resume` before; resumed, it ends with run A's weights exactly."""
    run_a, _ = uninterrupted
    config = write_config(tmp_path, warm_policy)
    run_b = tmp_path / "run"
    killed = watched_train(config, run_b / "checkpoint-4", "--kill-at", "trainer_state.json:opened")
    assert killed.returncode == 137, killed.stdout[-3000:]
    assert (run_b / "checkpoint-4" / "trainer_state.json").stat().st_size == 0
    assert not (run_b / "final").exists()

    resumed = bae_train(config, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "skipping checkpoint-4" in resumed.stdout and "from checkpoint-2" in resumed.stdout

    a, b = final_weights(run_a), final_weights(run_b)
    assert a.keys() == b.keys()
    # not vacuous: the policy saw non-zero advantages, so the weights depend on the sampled batches
    logged = [json.loads(line) for line in (run_a / "log.jsonl").read_text().splitlines()]
    assert any(r.get("bae/solution/advantage_std", 0) > 0 or r.get("bae/confidence/advantage_std", 0) > 0 for r in logged)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # one log line per trained step, as in the uninterrupted run
    steps = [json.loads(line)["step"] for line in (run_b / "log.jsonl").read_text().splitlines() if "bae/accuracy" in line]
    assert steps == list(range(1, STEPS + 1))
    assert last_checkpoint(run_b).checkpoint == str(run_b / "checkpoint-4")


def test_resuming_a_finished_run_changes_nothing(uninterrupted):
    run_a, _ = uninterrupted
    before = {p: p.stat().st_mtime_ns for p in run_a.rglob("*") if p.is_file()}
    config = json.loads((run_a / "config.json").read_text())
    path = run_a.parent / "again.yaml"
    path.write_text(yaml.safe_dump(config))
    again = bae_train(path, "--resume")
    assert again.returncode == 0, again.stdout[-3000:]
    assert "is finished" in again.stdout
    assert f"start a new run from it: model: {run_a / 'final'}, another output_dir" in again.stdout  # how to go on
    after = {p: p.stat().st_mtime_ns for p in run_a.rglob("*") if p.is_file()}
    assert after == before  # no new checkpoint, final/ and the evaluation untouched


def test_refuses_to_overwrite_or_resume_nothing(warm_policy, tmp_path):
    config = write_config(tmp_path, warm_policy)
    p = bae_train(config, "--resume")
    assert p.returncode == 2 and "no complete checkpoint" in p.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("group_size: 4\nbatch_sise: 8\n")
    p = bae_train(bad)
    assert p.returncode == 2 and "batch_sise: unknown key" in p.stdout


def checkpoint(root: Path, step: int, state: dict | None = None) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step} if state is None else state))
    (folder / "optimizer.pt").write_bytes(b"x" * 100)
    return folder


def test_a_checkpoint_counts_only_when_its_marker_matches_the_files(tmp_path):
    good = checkpoint(tmp_path, 2)
    mark_complete(good, 2)
    assert last_checkpoint(tmp_path).checkpoint == str(good)

    def newest_is_skipped(why: str):
        found = last_checkpoint(tmp_path)
        assert found.checkpoint == str(good)
        assert len(found.skipped) == 1 and why in found.skipped[0][1], found.skipped

    unmarked = checkpoint(tmp_path, 4)  # everything written but the marker
    newest_is_skipped("no bae_checkpoint.json")
    mark_complete(unmarked, 4)
    (unmarked / "optimizer.pt").write_bytes(b"x" * 10)  # truncated after the save
    newest_is_skipped("optimizer.pt has 10 bytes")
    (unmarked / "optimizer.pt").unlink()
    newest_is_skipped("optimizer.pt is missing")
    shutil.rmtree(unmarked)

    wrong_step = checkpoint(tmp_path, 6, {"global_step": 5})
    mark_complete(wrong_step, 6)
    newest_is_skipped("trainer_state.json is for step 5")
    shutil.rmtree(wrong_step)

    torn = checkpoint(tmp_path, 8)
    (torn / MARKER).write_text('{"step": 8, "fi')
    newest_is_skipped("not readable")
    assert last_checkpoint(tmp_path / "none").checkpoint is None
