"""`bae demo` over seeds: each method's difference from bae+ocb with a confidence interval over seeds.

    python benchmarks/demo_seeds.py [--task arithmetic|two_attempt] [--seeds 0,1,2,3,4]
                                    [--out runs/demo_seeds] [--steps N] [--report-only]
                                    [--methods bae+ocb,...] [--task-option KEY=VALUE ...]
                                    [--against DIR]

Each seed is one whole `bae demo` (its own warm start, then every method from it, evaluated on the
same held-out problems) in OUT/TASK/seed-S; a seed whose metrics.json exists is read, not rerun.
For every method and figure the per-seed difference d_s = figure(method) - figure(bae+ocb) is
paired by seed (same warm start, same prompts), and the report gives mean_s d_s with the 95%
Student-t interval over seeds, mean ± t_{0.975, S-1} sd(d) / sqrt(S): it counts the noise of
training and of the evaluation together, where the demo's own paired bootstrap counts only the
evaluation. Writes OUT/TASK/report.md, summary.json and seeds.png (one panel per figure: each
seed's difference as a dot, the mean and its interval as a bar, zero as a line), and prints the
report. Which seeds run is fixed before anything runs; a method is never chosen by how it fares.

A variant of some methods (`--methods` with `--task-option`, e.g. malformed=carry) is compared with
a full run over the same seeds by `--against DIR` (DIR: another --out with the same --task and
--steps): its policies join DIR's, per seed, as "NAME[KEY=VALUE]", or as "NAME" without a task
option (a method DIR does not have, e.g. `--methods bae+ocb_eb`); same warm start, same held-out
prompts (the warm start is deterministic in the seed); and the report (OUT/TASK/against.md,
against.json, against.png) pairs every policy with DIR's bae+ocb.

The issue's target (arithmetic): bae+ocb's ECE below bae+group_mean's, rlcr's and gdpo's with
intervals that exclude zero, at accuracy within 1 point of rlvr; the report says whether it is met.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LEVEL = 0.95
ECE_RIVALS = ("bae+group_mean", "rlcr", "gdpo")


def figures_of(summary: dict) -> dict[str, dict[str, float]]:
    """policy -> figure -> value, from one demo's metrics.json."""
    if summary["task"] == "two_attempt":
        return {name: {"first": a["first"]["value"][0], "second": a["second"]["value"][0],
                       "gain": a["second"]["value"][0] - a["first"]["value"][0], "fixed": a["fixed"],
                       "broken": a["broken"]}
                for name, a in summary["attempts"].items()}
    return {name: {f: p["metrics"][f]["value"] for f in ("accuracy", "auroc", "ece", "brier") if p["metrics"][f]}
            for name, p in summary["policies"].items()}


def t_interval(values: list[float], level: float = LEVEL) -> dict[str, float]:
    """mean, sd (ddof 1) and the Student-t interval mean ± t_{(1+level)/2, n-1} sd / sqrt(n) of
    ``values``; one value: sd 0 and the interval [mean, mean] (no spread to measure)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "sd": 0.0, "low": mean, "high": mean, "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "n": n}


def rank_tests(differences: list[float]) -> dict[str, float]:
    """Two checks of a paired difference that a single outlying seed (a collapsed policy) cannot
    carry the way it carries a mean: how many seeds are above zero, the two-sided sign test's p
    over the nonzero ones, and the two-sided Wilcoxon signed-rank test's p (scipy's, exact for
    small samples without ties); p = 1 when every difference is zero."""
    from scipy import stats

    nonzero = [d for d in differences if d != 0]
    above = sum(d > 0 for d in nonzero)
    if not nonzero:
        return {"above": 0, "n": len(differences), "sign_p": 1.0, "wilcoxon_p": 1.0}
    return {"above": above, "n": len(differences), "sign_p": float(stats.binomtest(above, len(nonzero)).pvalue),
            "wilcoxon_p": float(stats.wilcoxon(nonzero).pvalue)}


def aggregate(per_seed: dict[int, dict], reference: str) -> dict:
    """{"values": policy -> figure -> per-seed values, "differences": policy -> figure ->
    t_interval of the per-seed (policy - reference), "missing": policy -> the figures left out}
    over the seeds in ``per_seed``. A figure a policy did not report on some seed (no confidence
    stated: AUROC, ECE and Brier are None) is left out for that policy, not averaged over fewer seeds."""
    figures = {s: figures_of(summary) for s, summary in per_seed.items()}
    seeds = sorted(figures)
    policies = list(figures[seeds[0]])
    reported = {p: [f for f in figures[seeds[0]][p] if all(f in figures[s][p] for s in seeds)] for p in policies}
    anywhere = {f for s in seeds for fs in figures[s].values() for f in fs}
    missing = {p: sorted(anywhere - set(reported[p])) for p in policies if anywhere - set(reported[p])}
    values = {p: {f: [figures[s][p][f] for s in seeds] for f in reported[p]} for p in policies}
    differences = {}
    for p in policies:
        if p == reference:
            continue
        per_seed_d = {f: [a - b for a, b in zip(v, values[reference][f])] for f, v in values[p].items()
                      if f in values[reference]}
        differences[p] = {f: t_interval(d) | {"per_seed": d} for f, d in per_seed_d.items()}
    return {"seeds": seeds, "values": values, "differences": differences, "missing": missing}


def target(result: dict, reference: str) -> list[str]:
    """Sentences on the issue's target for the arithmetic demo, from the aggregated result."""
    d, lines = result["differences"], []
    for rival in ECE_RIVALS:
        if rival in d and "ece" in d[rival]:
            x = d[rival]["ece"]
            met = x["low"] > 0
            ranks = rank_tests(x["per_seed"])
            lines.append(f"- ECE of {rival} - {reference}: {x['mean']:+.3f} [{x['low']:+.3f}, {x['high']:+.3f}]: "
                         f"{'met' if met else 'not met'} (the target: {reference} lower, with an interval that excludes zero); "
                         f"above on {ranks['above']} of {ranks['n']} seeds, sign test p = {ranks['sign_p']:.3f}, "
                         f"Wilcoxon signed-rank p = {ranks['wilcoxon_p']:.3f}.")
    if "rlvr" in d:
        x = d["rlvr"]["accuracy"]
        met = abs(x["mean"]) <= 0.01
        lines.append(f"- accuracy of rlvr - {reference}: {x['mean']:+.3f} [{x['low']:+.3f}, {x['high']:+.3f}]: "
                     f"{'met' if met else 'not met'} (within 1 point on average over the seeds).")
    return lines


def plot(result: dict, reference: str, path: Path) -> None:
    from bae.evaluation.plots import figure, save

    names = list(result["differences"])
    figs = list(dict.fromkeys(f for d in result["differences"].values() for f in d))
    fig, axes = figure(1, len(figs), figsize=(3.4 * len(figs), 3.4))
    for ax, f in zip(axes, figs):
        for i, name in enumerate(names):
            x = result["differences"][name].get(f)
            if x is None:
                continue
            ax.plot([i] * len(x["per_seed"]), x["per_seed"], ".", color="gray", alpha=0.6)
            ax.errorbar([i], [x["mean"]], yerr=[[x["mean"] - x["low"]], [x["high"] - x["mean"]]], fmt="o",
                        color="C0", capsize=4)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{f}: policy - {reference}", fontsize=9)
    fig.tight_layout()
    save(fig, path)


def markdown(result: dict, per_seed: dict[int, dict], reference: str, task: str, figure: str = "seeds.png") -> str:
    seeds = result["seeds"]
    first = per_seed[seeds[0]]
    times = ", ".join(f"{per_seed[s]['total_seconds']:.0f}" for s in seeds)
    config = (f"{first['steps']} RL steps per method, {first['eval_prompts']} held-out problems, seeds "
              f"{', '.join(map(str, seeds))}; one demo per seed took {times} s")
    lines = [f"# `bae demo --task {task}` over {len(seeds)} seeds", "", config, "",
             "Values per seed:", "", "| policy | figure | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "|---" * (len(seeds) + 3) + "|"]
    for name, figs in result["values"].items():
        for f, v in figs.items():
            lines.append(f"| {name} | {f} | " + " | ".join(f"{x:.3f}" for x in v) + f" | {sum(v) / len(v):.3f} |")
    columns = list(dict.fromkeys(f for figs in result["differences"].values() for f in figs))
    lines += ["", f"Differences from {reference}, paired by seed: mean [{LEVEL:.0%} t-interval over seeds]:", "",
              "| policy | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, figs in result["differences"].items():
        lines.append(f"| {name} | " + " | ".join(f"{figs[f]['mean']:+.3f} [{figs[f]['low']:+.3f}, {figs[f]['high']:+.3f}]"
                                                  if f in figs else "-" for f in columns) + " |")
    for name, left_out in result["missing"].items():
        lines.append(f"\n{name}: {', '.join(left_out)} not reported on some seed (no confidence stated), left out.")
    if task == "arithmetic":
        lines += ["", "Against the target:", ""] + target(result, reference)
    lines += ["", f"![differences over seeds]({figure})", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="arithmetic", choices=("arithmetic", "two_attempt"))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--out", default="runs/demo_seeds")
    parser.add_argument("--steps", type=int, default=None, help="RL steps per method (default: the demo's)")
    parser.add_argument("--report-only", action="store_true", help="aggregate the seeds already in OUT, run nothing")
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods of the demo, or its optional bae+ocb_eb (default: the task's)")
    parser.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a task option on top of the demo's (repeatable), e.g. malformed=carry")
    parser.add_argument("--against", default=None, metavar="DIR",
                        help="pair this run's policies with those of the run in DIR (same seeds, task, steps)")
    parser.add_argument("--reference", default=None, help="the policy every other is paired with (default: bae+ocb)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out) / args.task

    from bae.embedded.demo import REFERENCE, WARM, run_demo, settings
    from bae.io import atomic_write_text

    options = dict(item.split("=", 1) for item in args.task_option)
    if bad := [item for item in args.task_option if "=" not in item]:
        parser.error(f"--task-option takes KEY=VALUE, got {bad}")
    overrides = {"task": {"options": {**settings(args.task)["task"].get("options", {}), **options}}} if options else None
    methods = tuple(args.methods.split(",")) if args.methods else None
    per_seed = {}
    for seed in seeds:
        folder = out / f"seed-{seed}"
        done = folder / "metrics.json"
        if done.is_file():
            per_seed[seed] = json.loads(done.read_text())
        elif not args.report_only:
            per_seed[seed] = run_demo(str(folder), steps=args.steps, seed=seed, task=args.task, methods=methods,
                                      overrides=overrides)
    if not per_seed:
        raise SystemExit(f"no seed of {args.seeds} has a metrics.json under {out}")
    name, reference = "report", args.reference or REFERENCE
    if args.against:
        label = ",".join(args.task_option)
        per_seed = {seed: joined(Path(args.against) / args.task / f"seed-{seed}" / "metrics.json", summary, label)
                    for seed, summary in per_seed.items()}
        name = "against" if args.reference is None else "against-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", args.reference)
    known = per_seed[min(per_seed)]["policies"]
    if args.reference is not None and args.reference not in known:
        parser.error(f"--reference {args.reference!r}: not among the policies {list(known)}")
    if reference not in known:  # a variant run alone (--methods without bae+ocb): its first trained policy
        reference = next(p for p in known if p != WARM)
    figure, summary = ("seeds.png", "summary.json") if name == "report" else (f"{name}.png", f"{name}.json")
    result = aggregate(per_seed, reference)
    plot(result, reference, out / figure)
    text = markdown(result, per_seed, reference, args.task, figure)
    atomic_write_text(out / summary, json.dumps(result, indent=1))
    atomic_write_text(out / f"{name}.md", text)
    print(text)


def joined(path: Path, summary: dict, label: str) -> dict:
    """The run's metrics.json at `path`, with `summary`'s trained policies added as "NAME[label]" (as
    "NAME" when there is no label: a method the run at `path` does not have, e.g. bae+ocb_eb)."""
    if not path.is_file():
        raise SystemExit(f"--against: no {path} (run that seed there first)")
    base = json.loads(path.read_text())
    if base["steps"] != summary["steps"] or base["eval_prompts"] != summary["eval_prompts"]:
        raise SystemExit(f"--against: {path} has {base['steps']} steps and {base['eval_prompts']} held-out problems, "
                         f"this run {summary['steps']} and {summary['eval_prompts']}: not paired")
    from bae.embedded.demo import WARM

    def named(n: str) -> str:
        return f"{n}[{label}]" if label else n

    out = dict(base)
    for key in ("policies", "attempts"):  # attempts: the two-attempt figures, which figures_of reads
        if key not in summary:
            continue
        extra = {named(n): p for n, p in summary[key].items() if n != WARM}
        if clash := sorted(set(extra) & set(base.get(key, {}))):
            raise SystemExit(f"--against: {path} already has the policies {clash}; give the variant a --task-option "
                             f"or run other --methods")
        out[key] = {**base.get(key, {}), **extra}
    return out


if __name__ == "__main__":
    main()
