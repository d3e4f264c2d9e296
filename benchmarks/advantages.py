"""Time of blockwise_advantages (OCB, K = 2) plus the per-token expansion, beside verl's GRPO.

    python benchmarks/advantages.py [--n 2048] [--group 32] [--length 512] [--repeats 200] [--threads N] [--ids-dtype int64]

Times the calls the engines make, on the same batch:
  trl:  method_token_advantages("bae", ..., aggregation="seq-mean-token-sum") (BlockwiseGRPOTrainer)
  verl: blockwise_advantages then token_advantages(adv, ids, "seq-mean-token-mean") (the bae estimators)
each from block ids alone (what the engines pass) and with the block token counts given.
The calls are interleaved, one of each per round in a random order, so that load from other
processes (and what the previous call left in cache) falls on all of them alike; each figure is the
median over the rounds (verl's loop variant: every 10th round). The
machines here are noisy: compare the ratios of one run, not absolute times across runs. verl's
functions are timed only when verl is installed (pip install "bae-rl[verl]" or verl==0.9.1).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bae.advantages import blockwise_advantages
from bae.objective import method_token_advantages, token_advantages


def batch(n: int, group: int, length: int, seed: int = 0):
    """A two-block batch: random rewards and outcomes, responses of random length with a random
    solution/confidence split, right padding."""
    rng = np.random.default_rng(seed)
    rewards = np.stack([rng.integers(0, 2, n), -rng.uniform(0, 1, n)], 1).astype(np.float64)  # [N, 2]
    outcomes = np.stack([np.zeros(n, int), rewards[:, 0].astype(int)], 1)  # [N, 2]
    groups = np.repeat(np.arange(n // group), group)  # [N]
    lengths = rng.integers(length // 8, length + 1, n)  # [N]
    split = (lengths * rng.uniform(0.3, 0.9, n)).astype(int)  # [N]
    pos = np.arange(length)[None, :]  # [1, T]
    ids = np.where(pos < split[:, None], 0, np.where(pos < lengths[:, None], 1, -1))  # [N, T]
    return rewards, outcomes, groups, torch.from_numpy(ids), lengths


def interleaved_medians(fns: dict, repeats: int, every: dict | None = None, seed: int = 0) -> dict:
    """Median ms of each fn over `repeats` rounds, one call of each per round in a random order
    (after one warm-up), so that no fn always follows the one that left its inputs in cache; fns
    named in `every` run only every every[name]-th round."""
    every = every or {}
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    rng = np.random.default_rng(seed)
    names = list(fns)
    for round_ in range(repeats):
        for name in rng.permutation(names):
            fn = fns[name]
            if round_ % every.get(name, 1):
                continue
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--group", type=int, default=32)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--ids-dtype", default="int64", choices=["int64", "int32", "int8"],
                        help="dtype of the token block ids (both engines pass int64)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rewards, outcomes, groups, ids, lengths = batch(args.n, args.group, args.length)
    ids = ids.to(getattr(torch, args.ids_dtype))
    block_lengths = torch.stack([(ids == k).sum(1) for k in range(2)], 1)  # [N, 2]: n_ik, as a caller could pass them

    def verl_path(**kw):
        return token_advantages(blockwise_advantages(rewards, groups, outcomes, "ocb"), ids, "seq-mean-token-mean", **kw)

    def trl_path():
        return method_token_advantages("bae", rewards, groups, ids, outcomes, baseline="ocb", aggregation="seq-mean-token-sum")

    def trl_path_given():  # what method_token_advantages does, with the counts passed on
        return token_advantages(blockwise_advantages(rewards, groups, outcomes, "ocb"), ids, "seq-mean-token-sum",
                                block_lengths=block_lengths)

    fns = {
        "bae: blockwise_advantages alone": lambda: blockwise_advantages(rewards, groups, outcomes, "ocb"),
        "bae trl path (token-sum), ids only": trl_path,
        "bae trl path (token-sum), counts given": trl_path_given,
        "bae verl path (token-mean), ids only": verl_path,
        "bae verl path (token-mean), counts given": lambda: verl_path(block_lengths=block_lengths),
    }
    try:
        from verl.trainer.ppo import core_algos
    except ImportError:
        core_algos = None
    if core_algos is not None:
        mask = (ids >= 0).float()  # [N, T]
        token_rewards = torch.zeros(args.n, args.length)  # verl puts the score at the last valid token
        token_rewards[torch.arange(args.n), torch.from_numpy(lengths - 1)] = torch.from_numpy(rewards.sum(1)).float()
        index = np.array([f"uid-{g}" for g in groups], dtype=object)  # verl's uids are strings (uuid4)
        for name, fn, uids in (
            ("verl GRPO vectorised, K=1", core_algos.compute_grpo_vectorized_outcome_advantage, index),
            ("verl GRPO vectorised, K=1, integer uids", core_algos.compute_grpo_vectorized_outcome_advantage, groups),
            ("verl GRPO loop, K=1", core_algos.compute_grpo_outcome_advantage, index),
        ):
            fns[name] = lambda fn=fn, uids=uids: fn(token_level_rewards=token_rewards, response_mask=mask, index=uids,
                                                     norm_adv_by_std_in_grpo=False)
    results = interleaved_medians(fns, args.repeats, every={"verl GRPO loop, K=1": 10})

    print(f"N={args.n} G={args.group} T={args.length} ids {args.ids_dtype} torch threads={torch.get_num_threads()} "
          f"rounds={args.repeats} (verl loop: every 10th)")
    for name, ms in results.items():
        print(f"{name:45s} {ms:9.3f} ms")
    if core_algos is None:
        print("verl is not installed: its GRPO functions were not timed")
        return
    vec, vec_int, loop = (results[k] for k in ("verl GRPO vectorised, K=1", "verl GRPO vectorised, K=1, integer uids",
                                                "verl GRPO loop, K=1"))
    for name in [k for k in results if k.startswith("bae ") and "alone" not in k]:
        ours = results[name]
        print(f"{name:45s} / verl vectorised {ours / vec:5.2f} (target <= 2), / integer uids {ours / vec_int:5.2f};"
              f" verl loop / it {loop / ours:5.1f}")


if __name__ == "__main__":
    main()
