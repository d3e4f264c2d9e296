"""Batch verification (bae.verify.math_equal_many): throughput against the number of workers, and
the cost of hostile answers in a training-sized batch (issue 10).

    python benchmarks/verify.py [--workers 1 2] [--pairs 600] [--batch 2048] [--hostile 0.05]
                                [--timeout 5] [--rounds 2]

Pairs are real and non-trivial: each gold answer of the shipped eval sets (MATH500, GSM8K test,
AIME) against equivalent rewritings (\\dfrac for \\frac, p/q and a terminating decimal for
\\frac{p}{q}, n.0, x = n and 1,234 for integers, \\sqrt{k^2 r} for k\\sqrt{r}, a fraction for a
decimal), the last \\boxed{} of its MATH500 solution, and plausible wrong answers (n + 1, the
next row's gold). No pair repeats and none is decided by the string fast path, and the cache is
cleared and the workers restarted (and started, untimed) before every timed run, so every pair
is compared by math-verify in a worker.

1. Throughput: --pairs pairs (half MATH500, half GSM8K and AIME), for each worker count, --rounds
   times in alternation; pairs/s, and how the workers spent workers x wall seconds: running,
   waiting for a core (other jobs on a shared machine), or idle (blocked on their pipe: the
   pool's own overhead).
2. Hostile answers: a batch of --batch pairs, then the same batch with a --hostile share of its
   predictions replaced by distinct power towers (a^{b^{c^{d}}}, digits 3-9; golds kept), on the
   largest worker count, --rounds times in alternation; the ratio of the medians against the
   issue's target, hostile <= 1.5 x clean + one time limit. It also counts the towers whose gold
   the exact pre-check cannot rule out (those run to the limit).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import statistics
import time
from fractions import Fraction

from bae import verify
from bae.verify.pool import shared_pool
from bae.evaluation.sets import path as eval_set


def last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, end = 1, start + len("\\boxed{")
    while depth and end < len(text):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        end += 1
    return text[start + len("\\boxed{"): end - 1] if depth == 0 else None


def rewritings(gold: str) -> list[str]:
    """Equivalent forms of a gold answer."""
    forms = []
    if "\\frac" in gold:
        forms.append(gold.replace("\\frac", "\\dfrac"))
    if m := re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", gold):
        sign, p, q = m.group(1), int(m.group(2)), int(m.group(3))
        forms.append(f"{sign}{p}/{q}")
        rest = q
        for f in (2, 5):
            while rest % f == 0:
                rest //= f
        if rest == 1:
            forms.append(f"{sign}{p / q}")
    if re.fullmatch(r"-?\d+", gold):
        n = int(gold)
        forms += [f"{n}.0", f"x = {n}"]
        if abs(n) >= 1000:
            forms.append(f"{n:,}")
    if m := re.fullmatch(r"(\d+)\\sqrt\{(\d+)\}", gold):
        k, r = int(m.group(1)), int(m.group(2))
        forms.append(f"\\sqrt{{{k * k * r}}}")
    if re.fullmatch(r"-?\d*\.\d+", gold):
        fraction = Fraction(gold)
        forms.append(f"\\frac{{{fraction.numerator}}}{{{fraction.denominator}}}")
    return forms


def set_pairs(name: str) -> list[tuple[str, str]]:
    with open(eval_set(name)) as f:
        rows = [json.loads(line) for line in f]
    pairs = []
    for i, row in enumerate(rows):
        gold = row["answer"]
        predictions = rewritings(gold) + [rows[(i + 1) % len(rows)]["answer"]]
        if boxed := last_boxed(row.get("solution", "")):
            predictions.append(boxed)
        if re.fullmatch(r"-?\d+", gold):
            predictions.append(str(int(gold) + 1))
        pairs += [(p, gold) for p in predictions]
    # the fast path decides equal texts without a worker: keep only pairs math-verify compares
    return list(dict.fromkeys(p for p in pairs if verify._decided_without_worker(*p) is None))


def real_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """`count` distinct non-trivial real pairs, half from MATH500, half from GSM8K and AIME."""
    rng = random.Random(seed)
    math500, others = set_pairs("math500"), set_pairs("gsm8k") + set_pairs("aime")
    rng.shuffle(math500)
    rng.shuffle(others)
    half = min(count // 2, len(math500))
    pairs = math500[:half] + others[: count - half]
    if len(pairs) < count:
        raise SystemExit(f"only {len(pairs)} distinct pairs, asked for {count}")
    rng.shuffle(pairs)
    return pairs


def with_towers(pairs: list[tuple[str, str]], share: float, seed: int = 1) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    hostile = list(pairs)
    towers: set[str] = set()
    for i in rng.sample(range(len(pairs)), round(share * len(pairs))):
        while (tower := "{}^{{{}^{{{}^{{{}}}}}}}".format(*(rng.randint(3, 9) for _ in range(4)))) in towers:
            pass
        towers.add(tower)
        hostile[i] = (tower, pairs[i][1])
    return hostile


def uncovered_towers(pairs: list[tuple[str, str]]) -> int:
    """Towers whose gold the pre-check cannot rule out: each of them runs to the time limit."""
    from math_verify import LatexExtractionConfig, parse

    from bae.verify.magnitude import provably_unequal

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its warning that we set no timeout

    def parsed(latex: str) -> list:
        return parse("$" + latex + "$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)

    return sum(not provably_unequal(parsed(gold), parsed(tower)) for tower, gold in pairs)


def worker_schedule() -> tuple[float, float]:
    """Seconds the running workers have so far spent running and waiting for a core (Linux
    /proc/PID/schedstat)."""
    running = waiting = 0.0
    for pid in shared_pool().pids():
        with open(f"/proc/{pid}/schedstat") as f:
            run_ns, wait_ns, _ = map(int, f.read().split())
        running, waiting = running + run_ns / 1e9, waiting + wait_ns / 1e9
    return running, waiting


def timed(pairs: list[tuple[str, str]], workers: int, timeout: float) -> tuple[float, float, float, list[bool]]:
    """Seconds of one math_equal_many call on fresh, started workers and an empty cache (fresh
    workers: math-verify keeps parses of its own in each process), and the seconds its workers
    spent running and waiting for a core (missing the time of a worker killed at the limit)."""
    verify.stop_workers()
    verify.start_workers(workers)
    verify.clear_cache()
    running, waiting = worker_schedule()
    start = time.perf_counter()
    results = verify.math_equal_many(pairs, timeout=timeout, workers=workers)
    seconds = time.perf_counter() - start
    ran, waited = worker_schedule()
    return seconds, ran - running, waited - waiting, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--hostile", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=verify.DEFAULT_TIMEOUT)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f} at the start")

    pairs = real_pairs(args.pairs)
    print(f"\nthroughput on {len(pairs)} distinct non-trivial real pairs (limit {args.timeout} s)")
    throughput: dict[int, list[float]] = {w: [] for w in args.workers}
    reference = None
    cpu_per_pair: dict[int, list[float]] = {w: [] for w in args.workers}
    for round_ in range(args.rounds):
        for workers in args.workers:
            seconds, ran, waited, results = timed(pairs, workers, args.timeout)
            reference = results if reference is None else reference
            assert results == reference, "results differ between runs"
            throughput[workers].append(len(pairs) / seconds)
            cpu_per_pair[workers].append(1000 * ran / len(pairs))
            # what is left of workers x wall: a worker blocked on its pipe, waiting for the pool
            idle = workers * seconds - ran - waited
            print(f"  round {round_ + 1}, {workers} worker(s): {seconds:6.2f} s {len(pairs) / seconds:6.1f} pairs/s; "
                  f"workers ran {ran:5.2f} s ({1000 * ran / len(pairs):4.1f} ms/pair), waited for a core "
                  f"{waited:5.2f} s, idle {idle:5.2f} s")
    for workers, rates in throughput.items():
        print(f"  median, {workers} worker(s): {statistics.median(rates):6.1f} pairs/s, "
              f"{statistics.median(cpu_per_pair[workers]):4.1f} ms of worker CPU per pair")

    workers = max(args.workers)
    clean = real_pairs(args.batch, seed=2)
    hostile = with_towers(clean, args.hostile)
    towers = [h for h, c in zip(hostile, clean) if h != c]
    print(f"\nbatch of {len(clean)} pairs, {workers} workers, limit {args.timeout} s; hostile: {len(towers)} "
          f"towers, {uncovered_towers(towers)} of them against golds the pre-check cannot rule out")
    times: dict[str, list[float]] = {"clean": [], "hostile": []}
    for round_ in range(args.rounds):
        for name, batch in (("clean", clean), ("hostile", hostile)):
            seconds, _, _, results = timed(batch, workers, args.timeout)
            times[name].append(seconds)
            print(f"  round {round_ + 1} {name:7s}: {seconds:6.2f} s  ({sum(results)} equal)")
    clean_s, hostile_s = statistics.median(times["clean"]), statistics.median(times["hostile"])
    bound = 1.5 * clean_s + args.timeout
    print(f"  medians: clean {clean_s:.2f} s, hostile {hostile_s:.2f} s, ratio {hostile_s / clean_s:.2f}; "
          f"target hostile <= 1.5 x clean + limit = {bound:.2f} s: {'met' if hostile_s <= bound else 'not met'}")


if __name__ == "__main__":
    main()
