"""BlockwiseGRPOTrainer on two processes: torchrun starts tests/trl_two_processes.py (2 CPU
processes, gloo), a real train() whose generation batches split a group across the ranks."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bae
from trl_scripted import G, assert_carries, expected_token_advantages, make_task, reference, tok  # noqa: F401
from trl_two_processes import PER_DEVICE, STEPS

SCRIPT = Path(__file__).parent / "trl_two_processes.py"
RANKS = 2
ACCUMULATION = 2
ROWS = PER_DEVICE * ACCUMULATION  # completions a rank generates per step (steps_per_generation = accumulation)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_processes")
    root = str(Path(bae.__file__).parents[1])  # the bae under test, in the subprocesses too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(RANKS),
               str(SCRIPT), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(RANKS)]


def global_log(ranks, step):
    """The gathered generation batch of one step, in TRL's order: rank 0's rows, then rank 1's."""
    return [row for rank in ranks for row in rank["script_log"][step * ROWS : (step + 1) * ROWS]]


def test_each_rank_sees_advantages_of_the_gathered_groups(two_process_run, tok):
    """On each rank, every token reaching TRL's loss carries its block's A[i, k] / |T_ik| * c (dapo:
    c = num_items_in_batch / N_gen over both ranks), A computed over the groups of the GATHERED
    batch: G = 4 and 6 completions a rank put completions 4-7 of each step, one group, on both ranks.
    Advantages from each rank's own rows only differ (checked), so an engine that grouped locally
    fails this test."""
    task = make_task()
    assert ROWS % G != 0  # a group is split across the ranks
    expected = {}
    for step in range(STEPS):
        log = global_log(two_process_run, step)
        expected.update(expected_token_advantages(task, tok, log, generation_size=RANKS * ROWS))
        local = [reference(task, tok, log[r * ROWS : (r + 1) * ROWS])[1] for r in range(RANKS)]
        assert not np.allclose(np.concatenate(local), reference(task, tok, log)[1])
    both_blocks = nonzero = 0
    for rank in two_process_run:
        assert len(rank["seen"]) == STEPS * ACCUMULATION
        for call in rank["seen"]:
            assert call["inputs"]["bae_num_completions"].item() == RANKS * ROWS
            counts = assert_carries(call["inputs"], expected)
            both_blocks, nonzero = both_blocks + counts[0], nonzero + counts[1]
    assert both_blocks >= 4 and nonzero >= 4


def test_each_rank_loss_is_its_share_of_l_bae(two_process_run, tok):
    """Each rank's loss over one optimizer step (its 2 micro-batches, on-policy so every ratio is 1)
    is its share of L_BAE: -(1/n_r) sum_{i on rank r} sum_{k: T_ik nonempty} A[i, k] with n_r = 6
    rows, A from the gathered groups; DDP averages the ranks' gradients, so the mean of the ranks'
    losses is L_BAE over the step's 12 completions."""
    task = make_task()
    assert two_process_run[0]["loss_type"] == "dapo"  # the loss type whose normaliser spans processes
    for step in range(STEPS):
        log = global_log(two_process_run, step)
        blocks, adv, _, _ = reference(task, tok, log)
        present = np.stack([np.bincount(b, minlength=task.num_blocks) > 0 for b in blocks])  # [N, K]
        terms = (adv * present).sum(1)  # [N]
        shares = []
        for r, rank in enumerate(two_process_run):
            loss = sum(call["loss"] for call in rank["seen"][step * ACCUMULATION : (step + 1) * ACCUMULATION])
            want = -terms[r * ROWS : (r + 1) * ROWS].mean()
            assert abs(want) > 1e-3  # OCB sums to 0 over a stratum, not over a rank's rows
            assert loss == pytest.approx(want, rel=1e-5, abs=1e-7)
            shares.append(loss)
        assert np.mean(shares) == pytest.approx(-terms.mean(), rel=1e-5, abs=1e-7)
