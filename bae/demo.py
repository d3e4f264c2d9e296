"""`bae demo`: the embedded default, end to end on CPU and offline.

One warm start of the tiny policy on the arithmetic task, then the same budget of RL steps from it
for each method (bae+ocb, bae+group_mean, rlcr, rlvr: they differ only in the advantage), each
evaluated on the same held-out problems by bae.evaluation; a report folder with report.md,
metrics.json, training curves and reliability diagrams, and a summary table. It reports what it
measured, whichever method wins.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bae.config import TrainConfig, parse

METHODS: dict[str, dict] = {
    "bae+ocb": {"method": "bae", "baseline": "ocb"},
    "bae+group_mean": {"method": "bae", "baseline": "group_mean"},
    "rlcr": {"method": "rlcr"},
    "rlvr": {"method": "rlvr"},
}

# The embedded default; configs/demo.yaml holds the same values (a test keeps them equal).
DEMO: dict = {
    "model": "tiny",
    "task": {"name": "arithmetic", "options": {"confidence_reward": "brier", "system_prompt": ""}},
    "data": {"source": "arithmetic", "size": 2000, "levels": [1, 2], "eval_size": 100},
    "method": "bae",
    "baseline": "ocb",
    "scale": "none",
    "group_size": 8,
    "batch_size": 64,
    "steps": 100,
    "learning_rate": 2e-4,
    "warmup_steps": 0,
    "temperature": 1.0,
    "max_completion_length": 48,
    "loss_type": "grpo",
    "seed": 0,
    "output_dir": "runs/demo-train",
    "checkpoint_interval": 50,
    "eval": {"every": 0, "n": 4, "limit": 100, "temperature": 1.0, "bootstrap": 1000},
    "trl": {},
}
FIGURES = ("accuracy", "auroc", "ece", "brier")


def method_config(name: str, out: Path, steps: int, seed: int, policy: str) -> TrainConfig:
    return parse({**DEMO, **METHODS[name], "model": policy, "steps": steps, "seed": seed,
                  "output_dir": str(out / name.replace("+", "_")),
                  "checkpoint_interval": max(steps, 1)}, f"demo[{name}]")


def curves_plot(logs: dict[str, list[dict]], path: Path, block_names: tuple[str, ...]) -> None:
    """Training curves per method: reward of each block, accuracy and batch ECE against step."""
    from bae.evaluation.plots import _save, plt

    keys = [(f"rewards/{b}_reward/mean", f"reward: {b}") for b in block_names] + [("bae/accuracy", "accuracy"), ("bae/ece", "batch ECE")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, (key, title) in zip(axes, keys):
        for name, rows in logs.items():
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                ax.plot(*zip(*points), label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def reliability_grid(results: dict[str, dict], folders: dict[str, Path], path: Path) -> None:
    """One reliability diagram per method, side by side, from each final evaluation's scores."""
    import numpy as np

    from bae.evaluation.metrics import reliability
    from bae.evaluation.plots import _save, plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results), 3.6), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), results):
        rows = [json.loads(line) for line in (folders[name] / "eval" / "final" / "scores.jsonl").read_text().splitlines()]
        q = [r["confidence"] if r.get("confidence") is not None else 0.0 for r in rows]
        c = [float(r["correct"]) for r in rows]
        table = reliability(q, c)
        mids = (table["edges"][:-1] + table["edges"][1:]) / 2
        shown = table["count"] > 0
        ax.bar(mids[shown], table["accuracy"][shown], width=0.09, alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="gray")
        ece = results[name]["metrics"]["ece"]["value"]
        ax.set_title(f"{name}\nECE {ece:.3f}")
        ax.set_xlabel("confidence")
    np.atleast_1d(axes)[0].set_ylabel("accuracy")
    fig.tight_layout()
    _save(fig, path)


def markdown(summary: dict) -> str:
    lines = ["# bae demo", "", f"Warm start: {summary['warm_start']}. RL: {summary['steps']} steps per method, "
             f"{DEMO['batch_size']} completions per step in groups of {DEMO['group_size']}, seed {summary['seed']}. "
             f"Evaluation: {DEMO['eval']['n']} samples for each of {summary['eval_prompts']} held-out problems at temperature "
             f"{DEMO['eval']['temperature']}; ± is the standard error (accuracy over samples, the rest by bootstrap).", "",
             "| method | " + " | ".join(FIGURES) + " | malformed | time (s) |", "|---" * (len(FIGURES) + 3) + "|"]
    for name, r in summary["methods"].items():
        m = r["metrics"]
        cells = [f"{m[f]['value']:.3f} ± {m[f]['se']:.3f}" for f in FIGURES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['malformed_rate']['value']:.3f} | {r['seconds']:.0f} |")
    lines += ["", "![training curves](curves.png)", "", "![reliability diagrams](reliability.png)", "",
              "Each method's full evaluation report (test-time scaling, selective prediction) is in its folder: "
              + ", ".join(f"[{n}]({Path(r['folder']).name}/eval/final/report.md)" for n, r in summary["methods"].items()), ""]
    return "\n".join(lines)


def run_demo(out_dir: str = "runs/demo", steps: int = DEMO["steps"], seed: int = 0, methods: tuple[str, ...] = tuple(METHODS)) -> dict:
    """Warm start once, train each method from it for `steps` steps, evaluate, and write the report."""
    from rich.console import Console
    from rich.table import Table

    from bae import tasks
    from bae.evaluation.generations import atomic_write_text
    from bae.train import resolve_policy, train

    console = Console()
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown demo methods {unknown}; choose from {list(METHODS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = parse({**DEMO, "seed": seed, "output_dir": str(out)})
    task = tasks.get(base.task.name, **base.task.options)
    start = time.time()
    console.print("[bold]warm start[/] of the tiny policy (supervised, on arithmetic demonstrations)")
    policy = resolve_policy(base, task)
    warm_seconds = time.time() - start

    results, folders, logs = {}, {}, {}
    for name in methods:
        config = method_config(name, out, steps, seed, policy)
        folders[name] = Path(config.output_dir)
        if folders[name].exists():
            import shutil

            shutil.rmtree(folders[name])  # a demo run always starts afresh from the warm start
        console.print(f"[bold]{name}[/]: {steps} RL steps")
        t = time.time()
        results[name] = {**train(config), "seconds": time.time() - t, "folder": str(folders[name])}
        logs[name] = [json.loads(line) for line in (folders[name] / "log.jsonl").read_text().splitlines()]

    summary = {
        "warm_start": f"{warm_seconds:.0f} s, folder {policy}",
        "steps": steps, "seed": seed, "eval_prompts": DEMO["eval"]["limit"],
        "methods": {n: {"metrics": r["metrics"], "seconds": r["seconds"], "folder": r["folder"]} for n, r in results.items()},
        "total_seconds": time.time() - start,
    }
    curves_plot(logs, out / "curves.png", task.block_names)
    reliability_grid(results, folders, out / "reliability.png")
    atomic_write_text(out / "report.md", markdown(summary))
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2))

    table = Table(title=f"bae demo: {steps} RL steps per method from one warm start (seed {seed})")
    table.add_column("method")
    for f in FIGURES:
        table.add_column(f, justify="right")
    for name, r in results.items():
        table.add_row(name, *(f"{r['metrics'][f]['value']:.3f} ± {r['metrics'][f]['se']:.3f}" for f in FIGURES))
    console.print(table)
    console.print(f"report: {out / 'report.md'}  ({summary['total_seconds']:.0f} s in all)")
    return summary
