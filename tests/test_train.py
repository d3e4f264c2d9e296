"""`bae train` end to end on the tiny offline model: a run, checkpoints, and a resume after SIGKILL
that ends with exactly the weights of an uninterrupted run (CPU, same seed)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from bae.train import last_checkpoint

STEPS = 4


def write_config(folder: Path, model: str) -> Path:
    config = {
        "model": model, "task": {"name": "arithmetic", "options": {"system_prompt": ""}},
        "data": {"levels": [1, 2], "size": 64, "eval_size": 4}, "group_size": 4, "batch_size": 8, "steps": STEPS, "learning_rate": 1e-2, "warmup_steps": 0,
        "max_completion_length": 40, "checkpoint_interval": 2, "output_dir": str(folder / "run"), "seed": 3,
        "eval": {"every": 0, "n": 1, "limit": 2, "bootstrap": 0},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def bae_train(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "bae.cli", "train", "--config", str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


def test_resume_after_sigkill_ends_with_the_uninterrupted_weights(warm_policy, tmp_path):
    tiny = warm_policy
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = bae_train(write_config(tmp_path / "a", tiny))
    out, _ = straight.communicate(timeout=600)
    assert straight.returncode == 0, out.decode()[-3000:]

    config_b = write_config(tmp_path / "b", tiny)
    killed = bae_train(config_b)
    run_b = tmp_path / "b" / "run"
    deadline = time.time() + 600
    while time.time() < deadline and killed.poll() is None:
        if last_checkpoint(run_b) and last_checkpoint(run_b).endswith("checkpoint-2"):
            break
        time.sleep(0.02)
    assert killed.poll() is None, "the run ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (run_b / "final").exists()

    resumed = bae_train(config_b, "--resume")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out.decode()[-3000:]

    a, b = final_weights(tmp_path / "a" / "run"), final_weights(run_b)
    assert a.keys() == b.keys()
    # not vacuous: the policy saw non-zero advantages, so the weights depend on the sampled batches
    logged = [json.loads(line) for line in (tmp_path / "a" / "run" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("bae/solution/advantage_std", 0) > 0 or r.get("bae/confidence/advantage_std", 0) > 0 for r in logged)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line).get("step") for line in (run_b / "log.jsonl").read_text().splitlines()]
    assert max(s for s in steps if s is not None) == STEPS


def test_refuses_to_overwrite_or_resume_nothing(warm_policy, tmp_path):
    config = write_config(tmp_path, warm_policy)
    p = bae_train(config, "--resume")
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 2 and b"no checkpoint" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("group_size: 4\nbatch_sise: 8\n")
    p = bae_train(bad)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 2 and b"batch_sise: unknown key" in out


def test_last_checkpoint_skips_incomplete_ones(tmp_path):
    for n, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{n}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert last_checkpoint(tmp_path / "none") is None
