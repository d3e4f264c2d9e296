"""Reward ablation (paper Section 5.4): does a log-score (BCE) confidence reward make the policy
refuse to answer with near-zero confidence?

    python benchmarks/reward_ablation.py [--runs rlcr:bce,bae:bce,rlcr:brier,bae:brier]
                                         [--steps 200] [--seeds 0] [--out runs/reward_ablation]
                                         [--report-only]

Each seed warm-starts the tiny policy on the arithmetic task with an abstention answer ("unknown":
10% of the demonstrations decline to solve, with confidence 0), then trains each run from it with
the demo's settings (64 completions per step, groups of 8, lr 2e-4):
- rlcr:bce   one scalar reward for every token, R = c + c log q + (1 - c) log(1 - q);
- bae:bce    blockwise: r_sol = c with the group mean, r_conf = the log score with OCB;
- the :brier rows are the same with -(q - c)^2, the controls.

Why a scalar reward can collapse: answering a problem solved with probability p and stating the
best confidence q = p earns p - H(p) in expectation under R = c + BCE (H the entropy in nats),
which is negative for p below 0.648, while refusing with q = 0 earns log(1 - 1e-4), about 0. Under
R = c - (q - c)^2 answering earns p^2 >= 0, so refusing never wins (tests/test_rewards.py checks
both). Under BAE the solution block of a refusal earns c = 0, below the group mean whenever any
member is right, so refusing is never reinforced.

Printed (and written to OUT/report.md): per run, the held-out figures (accuracy, ECE, abstention
rate, mean stated confidence), the peak abstention rate of training (mean over 10 steps) and
whether the run collapsed: it stopped solving (held-out accuracy below a fifth of its warm
start's) while stating near-zero confidence (mean at most 0.1). Refusing is the way in; once
there, a refusal and a wrong number with confidence 0 earn the same reward (about 0), so a
collapsed policy may drift between the two. OUT/abstain.png plots the abstention rate and mean
confidence of every training batch. --report-only rebuilds the report from OUT without training.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ABSTAIN = "unknown"
WINDOW = 10  # steps averaged for the peak abstention rate of training


def collapsed(accuracy: float, warm_accuracy: float, confidence_mean: float) -> bool:
    """The collapse of paper Section 5.4: the policy gives up solving and states near-zero confidence."""
    return accuracy < 0.2 * warm_accuracy and confidence_mean <= 0.1


def read_run(run: Path) -> dict:
    """Held-out figures of a finished run folder (eval/final) and its training log."""
    metrics = json.loads((run / "eval" / "final" / "metrics.json").read_text())["metrics"]
    rows = [json.loads(line) for line in (run / "eval" / "final" / "scores.jsonl").read_text().splitlines()]
    stated = [r["confidence"] for r in rows if r["confidence"] is not None]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    rates = [r["bae/abstain_rate"] for r in log if "bae/abstain_rate" in r]
    windows = [sum(rates[i:i + WINDOW]) / WINDOW for i in range(max(len(rates) - WINDOW + 1, 1))]
    peak = max(range(len(windows)), key=windows.__getitem__)
    return {
        "accuracy": metrics["accuracy"], "ece": metrics["ece"],
        "abstain_rate": metrics["abstain_rate"]["value"],
        "confidence_mean": sum(stated) / len(stated) if stated else float("nan"),
        "peak_abstain_rate": windows[peak], "peak_step": peak + 1, "log": log,
    }


def plot(curves: dict[tuple[int, str], list[dict]], path: Path) -> None:
    """Abstention rate and mean stated confidence of each training batch: one colour per run,
    one line style per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({name for _, name in curves})
    seeds = sorted({seed for seed, _ in curves})
    styles = ["-", "--", ":", "-."]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for (seed, name), log in curves.items():
        rows = [r for r in log if "bae/abstain_rate" in r]
        style = dict(color=f"C{names.index(name)}", linestyle=styles[seeds.index(seed) % len(styles)], linewidth=1)
        label = f"{name} (seed {seed})"
        left.plot([r["step"] for r in rows], [r["bae/abstain_rate"] for r in rows], label=label, **style)
        right.plot([r["step"] for r in rows], [r["bae/confidence_mean"] for r in rows], **style)
    left.set(xlabel="step", ylabel="abstention rate (training batch)", ylim=(0, 1))
    right.set(xlabel="step", ylabel="mean stated confidence", ylim=(0, 1))
    left.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def report(out: Path, seeds: list[int], runs: list[str]) -> str:
    """The results table (markdown) from OUT/seed-S/{warm_start.json, METHOD-RULE/}; draws OUT/abstain.png."""
    lines = ["| seed | run | accuracy | ECE | abstention rate | peak abstention in training (step) "
             "| mean confidence | collapsed |", "|---|---|---|---|---|---|---|---|"]
    curves = {}
    for seed in seeds:
        warm = json.loads((out / f"seed-{seed}" / "warm_start.json").read_text())
        lines.append(f"| {seed} | warm start | {warm['accuracy']:.3f} | - | {warm['abstain_rate']:.3f} | - "
                     f"| {warm['mean_confidence']:.3f} | - |")
        for spec in runs:
            method, rule = spec.split(":")
            f = read_run(out / f"seed-{seed}" / f"{method}-{rule}")
            curves[(seed, f"{method}+{rule}")] = f["log"]
            verdict = "yes" if collapsed(f["accuracy"]["value"], warm["accuracy"], f["confidence_mean"]) else "no"
            lines.append(
                f"| {seed} | {method}+{rule} | {f['accuracy']['value']:.3f} ± {f['accuracy']['se']:.3f} "
                f"| {f['ece']['value']:.3f} ± {f['ece']['se']:.3f} | {f['abstain_rate']:.3f} "
                f"| {f['peak_abstain_rate']:.2f} ({f['peak_step']}-{f['peak_step'] + WINDOW - 1}) "
                f"| {f['confidence_mean']:.3f} | {verdict} |")
    plot(curves, out / "abstain.png")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="rlcr:bce,bae:bce,rlcr:brier,bae:brier")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default="runs/reward_ablation")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from OUT, train nothing")
    args = parser.parse_args()
    out, seeds, runs = Path(args.out), [int(s) for s in args.seeds.split(",")], args.runs.split(",")

    from bae.embedded import demo_config
    from bae.io import atomic_write_text

    DEMO = demo_config()

    if not args.report_only:
        from transformers.utils import logging as hf_logging

        from bae.runs.config import parse
        from bae.runs.train import train
        from bae.embedded.warmstart import WarmStartConfig, measure, warm_start

        hf_logging.disable_progress_bar()
        for seed in seeds:
            start = WarmStartConfig(abstain=ABSTAIN, seed=seed, levels=tuple(DEMO["data"]["levels"]))
            policy = out / f"seed-{seed}" / "warm_start"
            if not (policy / "config.json").is_file():
                warm_start(start, policy)
            figures = measure(policy, start)
            atomic_write_text(out / f"seed-{seed}" / "warm_start.json", json.dumps(figures, indent=1, default=str))
            print(f"seed {seed} warm start: accuracy {figures['accuracy']:.3f}, abstain {figures['abstain_rate']:.3f}, "
                  f"mean confidence {figures['mean_confidence']:.3f}", flush=True)
            for spec in runs:
                method, rule = spec.split(":")
                run = out / f"seed-{seed}" / f"{method}-{rule}"
                shutil.rmtree(run, ignore_errors=True)
                train(parse({
                    **DEMO, "model": str(policy), "method": method, "baseline": "ocb", "steps": args.steps,
                    "seed": seed, "output_dir": str(run), "checkpoint_interval": args.steps,
                    "task": {"name": "arithmetic",
                             "options": {"confidence_reward": rule, "abstain": ABSTAIN, "system_prompt": ""}},
                }))
                f = read_run(run)
                print(f"seed {seed} {method}+{rule}: accuracy {f['accuracy']['value']:.3f}, "
                      f"abstain {f['abstain_rate']:.3f}, confidence {f['confidence_mean']:.3f}", flush=True)

    table = report(out, seeds, runs)
    steps = json.loads((out / f"seed-{seeds[0]}" / f"{runs[0].replace(':', '-')}" / "config.json").read_text())["steps"]
    text = (f"{steps} RL steps of {DEMO['batch_size']} completions (G = {DEMO['group_size']}) per run; held-out: "
            f"{DEMO['data']['eval_size']} problems x {DEMO['eval']['n']} samples at T = 1\n\n{table}")
    atomic_write_text(out / "report.md", text)
    print("\n" + text + f"\nplot: {out / 'abstain.png'}")


if __name__ == "__main__":
    main()
