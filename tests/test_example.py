"""examples/bae_step.py, the one-file BAE loop, runs and computes the paper's objective."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bae_step.py"


def test_one_file_example_optimises_l_bae(warm_policy, tmp_path):
    """Two steps of the example on the warm-started tiny policy. Its first update of each batch is
    on-policy (rho = 1), where L_BAE = -(1/N) sum_i sum_{k: n_ik > 0} A_ik: the loss it printed must
    be that value of the advantages and block lengths it logged; the second update moves it."""
    log = tmp_path / "log.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLE), "--model", warm_policy, "--steps", "2", "--log", str(log)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("step ") == 2
    steps = json.loads(log.read_text())
    assert [s["step"] for s in steps] == [1, 2]
    for s in steps:
        a, n = np.array(s["advantages"]), np.array(s["block_lengths"])
        assert np.abs(a).max() > 0.01  # not vacuous: the batch has nonzero advantages
        assert s["losses"][0] == pytest.approx(-(a * (n > 0)).sum(1).mean(), rel=1e-5, abs=1e-6)
        assert s["losses"][1] != s["losses"][0]
