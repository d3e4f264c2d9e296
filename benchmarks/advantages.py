"""Time of blockwise_advantages (OCB, K = 2) plus the per-token expansion, beside verl's GRPO.

    python benchmarks/advantages.py [--n 2048] [--group 32] [--length 512] [--repeats 50] [--threads N] [--ids-dtype int8]

Prints the median time of each path over `repeats` calls on the same batch, and the ratios, measured
in one run (the machines here are noisy: compare ratios, not absolute times across runs). verl's
functions are timed only when verl is installed (pip install "bae-rl[verl]" or verl==0.9.1).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bae.advantages import blockwise_advantages
from bae.objective import token_advantages


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


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--group", type=int, default=32)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--ids-dtype", default="int64", choices=["int64", "int32", "int8"], help="dtype of the token block ids")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rewards, outcomes, groups, ids, lengths = batch(args.n, args.group, args.length)
    ids = ids.to(getattr(torch, args.ids_dtype))
    # the engine knows each block's token count from the split; passing it skips K passes over [N, T]
    block_lengths = torch.stack([(ids == k).sum(1) for k in range(2)], 1)  # [N, 2]
    results = {
        "bae ocb, K=2: blockwise_advantages": median_ms(lambda: blockwise_advantages(rewards, groups, outcomes, "ocb"), args.repeats),
        "bae ocb, K=2: + token_advantages [N, T]": median_ms(
            lambda: token_advantages(blockwise_advantages(rewards, groups, outcomes, "ocb"), ids), args.repeats),
        "bae ocb, K=2: + token_advantages, lengths given": median_ms(
            lambda: token_advantages(blockwise_advantages(rewards, groups, outcomes, "ocb"), ids, block_lengths=block_lengths), args.repeats),
    }
    ours = results["bae ocb, K=2: + token_advantages [N, T]"]
    ours_given = results["bae ocb, K=2: + token_advantages, lengths given"]
    try:
        from verl.trainer.ppo import core_algos
    except ImportError:
        core_algos = None
    if core_algos is not None:
        mask = (ids >= 0).float()  # [N, T]
        token_rewards = torch.zeros(args.n, args.length)  # verl puts the score at the last valid token
        token_rewards[torch.arange(args.n), torch.from_numpy(lengths - 1)] = torch.from_numpy(rewards.sum(1)).float()
        index = np.array([f"uid-{g}" for g in groups], dtype=object)
        for name, fn in (("verl GRPO vectorised, K=1", core_algos.compute_grpo_vectorized_outcome_advantage),
                         ("verl GRPO loop, K=1", core_algos.compute_grpo_outcome_advantage)):
            results[name] = median_ms(lambda fn=fn: fn(token_level_rewards=token_rewards, response_mask=mask, index=index,
                                                       norm_adv_by_std_in_grpo=False), max(3, args.repeats // 10 if "loop" in name else args.repeats))

    print(f"N={args.n} G={args.group} T={args.length} ids {args.ids_dtype} torch threads={torch.get_num_threads()} repeats={args.repeats}")
    for name, ms in results.items():
        print(f"{name:45s} {ms:9.3f} ms")
    if core_algos is not None:
        vec, loop = results["verl GRPO vectorised, K=1"], results["verl GRPO loop, K=1"]
        print(f"ratio bae / verl vectorised GRPO:  {ours / vec:.2f} (ids only), {ours_given / vec:.2f} (lengths given)  (target <= 2)")
        print(f"ratio verl loop GRPO / bae:        {loop / ours:.1f} (ids only), {loop / ours_given:.1f} (lengths given)  (target >= 50)")
    else:
        print("verl is not installed: its GRPO functions were not timed")


if __name__ == "__main__":
    main()
