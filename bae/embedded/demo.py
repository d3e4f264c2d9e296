"""`bae demo`: the embedded default, end to end on CPU and offline.

One warm start of the tiny policy, then the same budget of RL steps from it for each method (they
differ only in the advantage), each final policy and the warm start itself evaluated the same way
on the same held-out problems (the code path of `bae eval`); a report folder with report.md,
metrics.json, training curves and per-task figures, and a summary table. It reports what it
measured, whichever method wins. The settings are bae/embedded/demo.yaml (configs/demo.yaml).

    --task arithmetic    self-confidence format: bae+ocb, bae+group_mean, rlcr, rlvr, gdpo; accuracy,
                         AUROC, ECE, Brier and one reliability diagram per policy.
    --task two_attempt   the two-attempt format (paper Section 5.5; task arithmetic_two_attempt,
                         the shaped Appendix C reward: 1 if right, 0.1 if wrong with a new answer,
                         0 if wrong with the same): bae+ocb (the second block's baseline is the mean
                         over the group members whose first attempt has the same outcome),
                         bae+group_mean, scalar_sum (one advantage for every token from r1 + r2:
                         the rlcr method) and gdpo; first- and second-attempt Pass@k over sampling budgets
                         k = 1..n (paper Figure 3), from each evaluation's own generations.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from bae.embedded import demo_config, resolve_model
from bae.runs.config import TrainConfig, parse

METHODS: dict[str, dict] = {
    "bae+ocb": {"method": "bae", "baseline": "ocb"},
    "bae+group_mean": {"method": "bae", "baseline": "group_mean"},
    "rlcr": {"method": "rlcr"},
    "rlvr": {"method": "rlvr"},
    "gdpo": {"method": "gdpo"},
}
TWO_ATTEMPT_METHODS: dict[str, dict] = {
    "bae+ocb": {"method": "bae", "baseline": "ocb"},
    "bae+group_mean": {"method": "bae", "baseline": "group_mean"},
    "scalar_sum": {"method": "rlcr"},
    "gdpo": {"method": "gdpo"},
}
METHOD_NOTES = {
    "bae+ocb": "blockwise; the later block's baseline: group members with the same earlier outcome (OCB)",
    "bae+group_mean": "blockwise; the later block's baseline: group mean",
    "rlcr": "scalar: one advantage for all tokens from c - (q - c)^2, group mean",
    "rlvr": "scalar: one advantage for all tokens from correctness alone, group mean",
    "scalar_sum": "scalar (sum): one advantage for all tokens from r1 + r2 (the rlcr method), group mean",
    "gdpo": "scalar (GDPO, TRL's normalize_then_sum): each block's reward normalised in its group, summed, "
            "normalised over the batch; one advantage for all tokens",
}
TASKS = {"arithmetic": METHODS, "two_attempt": TWO_ATTEMPT_METHODS}
FIGURES = ("accuracy", "auroc", "ece", "brier")
ATTEMPTS = ("first", "second")
WARM = "warm start"


def settings(task: str = "arithmetic", overrides: dict | None = None) -> dict:
    """The demo's training settings: demo.yaml; for two_attempt the arithmetic task in the
    two-attempt format (no system prompt, as the arithmetic demo) with 8 evaluation samples per
    prompt, so that the attempt curves run over k = 1..8; then `overrides` (mappings merged one
    level deep, e.g. {"eval": {"limit": 8}})."""
    if task not in TASKS:
        raise ValueError(f"unknown demo task {task!r}; choose from {list(TASKS)}")
    base = demo_config()
    if task == "two_attempt":
        base = {**base, "task": {"name": "arithmetic_two_attempt", "options": {"system_prompt": ""}},
                "output_dir": "runs/demo-two-attempt-train", "eval": {**base["eval"], "n": 8}}
    for key, value in (overrides or {}).items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return base


def method_config(name: str, out: Path, steps: int, seed: int, policy: str, task: str = "arithmetic",
                  overrides: dict | None = None) -> TrainConfig:
    """The training config of one method: the demo's settings, the method, the warm-started policy."""
    return parse({**settings(task, overrides), **TASKS[task][name], "model": policy, "steps": steps, "seed": seed,
                  "output_dir": str(out / name.replace("+", "_")), "checkpoint_interval": max(steps, 1)},
                 f"demo[{name}]")


# ---------------------------------------------------------------------------------------------
# Figures


def curves_plot(logs: dict[str, list[dict]], path: Path, block_names: tuple[str, ...],
                extra: tuple[tuple[str, str], ...] = (("bae/accuracy", "accuracy"), ("bae/ece", "batch ECE"))) -> None:
    """Training curves per method: reward of each block, then the `extra` (log key, title): by
    default accuracy and batch ECE, against step."""
    from bae.evaluation.plots import figure, save

    keys = [(f"rewards/{b}_reward/mean", f"reward: {b}") for b in block_names] + list(extra)
    fig, axes = figure(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, (key, title) in zip(axes, keys):
        for name, rows in logs.items():
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                ax.plot(*zip(*points), label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


def reliability_grid(scored: dict[str, list[dict]], results: dict[str, dict], path: Path) -> None:
    """One reliability diagram per policy, side by side, from each evaluation's scored rows."""
    import numpy as np

    from bae.evaluation.plots import figure, save
    from bae.metrics import reliability

    fig, axes = figure(1, len(scored), figsize=(3.6 * len(scored), 3.6), sharey=True)
    for ax, (name, rows) in zip(np.atleast_1d(axes), scored.items()):
        q = [r["confidence"] if r.get("confidence") is not None else 0.0 for r in rows]
        table = reliability(q, [float(r["correct"]) for r in rows])
        mids = (table["edges"][:-1] + table["edges"][1:]) / 2
        shown = table["count"] > 0
        ax.bar(mids[shown], table["accuracy"][shown], width=0.09, alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="gray")
        ax.set_title(f"{name}\nECE {results[name]['metrics']['ece']['value']:.3f}")
        ax.set_xlabel("confidence")
    np.atleast_1d(axes)[0].set_ylabel("accuracy")
    fig.tight_layout()
    save(fig, path)


def attempt_correct(task, completion: str, gold: str) -> tuple[bool, bool, bool]:
    """(first attempt right, second attempt right, second answer differs from the first): each
    attempt's answer, when its block is complete, checked by the task's verifier (an incomplete or
    empty block is wrong; a missing second answer is not a change)."""
    split = task.split(completion)
    answers = [(split.fields[k].get("answer") or None) if k < len(split.fields) else None for k in range(2)]
    right = [a is not None and bool(task.verify(a, gold)) for a in answers]
    changed = answers[1] is not None and (answers[0] is None or not task.equivalent(answers[1], answers[0]))
    return right[0], right[1], changed


def attempt_figures(rows: list[dict], task) -> dict:
    """From generation rows (prompt_id, completion, gold; n per prompt): per attempt, Pass@k for
    k = 1..n (the unbiased estimator per prompt, averaged over prompts; se = std over prompts /
    sqrt(P)), and per sample the transition rates: fixed (first wrong, second right), broken (first
    right, second wrong), changed (a new second answer) and malformed."""
    import numpy as np

    from bae.evaluation.generations import group_by_prompt
    from bae.evaluation.tts import pass_at_k

    prompts = list(group_by_prompt(rows).values())
    n = min(len(p) for p in prompts)
    ks = list(range(1, n + 1))
    marks = [[attempt_correct(task, r["completion"], r["gold"]) for r in p[:n]] for p in prompts]
    out: dict = {"k": ks, "prompts": len(prompts), "samples_per_prompt": n}
    for j, attempt in enumerate(ATTEMPTS):
        values = np.array([[pass_at_k(n, sum(m[j] for m in ms), k) for k in ks] for ms in marks])  # [P, K]
        se = values.std(axis=0, ddof=1) / np.sqrt(len(prompts)) if len(prompts) > 1 else np.zeros(len(ks))
        out[attempt] = {"value": values.mean(axis=0).tolist(), "se": se.tolist()}
    flat = [m for ms in marks for m in ms]
    out["fixed"] = sum(not a and b for a, b, _ in flat) / len(flat)
    out["broken"] = sum(a and not b for a, b, _ in flat) / len(flat)
    out["changed"] = sum(c for _, _, c in flat) / len(flat)
    out["malformed"] = sum(task.score(r["completion"], r["gold"]).malformed for p in prompts for r in p[:n]) / len(flat)
    return out


def attempts_plot(attempts: dict[str, dict], path: Path) -> None:
    """Pass@k of the first and of the second attempt against the sampling budget k, one line per
    policy (warm start and each method), one panel per attempt, shared y axis."""
    from bae.evaluation.plots import figure, save

    fig, axes = figure(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, attempt in zip(axes, ATTEMPTS):
        for name, a in attempts.items():
            v, se = a[attempt]["value"], a[attempt]["se"]
            line, = ax.plot(a["k"], v, marker="o", markersize=3, label=name, linestyle="--" if name == WARM else "-")
            ax.fill_between(a["k"], [x - e for x, e in zip(v, se)], [x + e for x, e in zip(v, se)],
                            color=line.get_color(), alpha=0.12)
        ax.set_title(f"{attempt} attempt")
        ax.set_xlabel("samples per problem k")
        ax.set_xticks(attempts[next(iter(attempts))]["k"])
    axes[0].set_ylabel("pass@k")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


# ---------------------------------------------------------------------------------------------
# Reports


def _setup_line(summary: dict, config: dict) -> str:
    return (f"Warm start: {summary['warm_start']['seconds']:.0f} s ({summary['warm_start']['folder']}). RL: "
            f"{summary['steps']} steps per method, {config['batch_size']} completions per step in groups of "
            f"{config['group_size']}, seed {summary['seed']}. Evaluation: {config['eval']['n']} samples for each of "
            f"{summary['eval_prompts']} held-out problems at temperature {config['eval']['temperature']}, the same for "
            "the warm start and every method; ± is the standard error (accuracy over samples, the rest by bootstrap).")


def markdown(summary: dict, config: dict) -> str:
    lines = ["# bae demo", "", _setup_line(summary, config), "",
             "Methods: " + "; ".join(f"**{m}**: {METHOD_NOTES[m]}" for m in summary["methods"]) + ".", "",
             "| policy | " + " | ".join(FIGURES) + " | malformed | time (s) |", "|---" * (len(FIGURES) + 3) + "|"]
    for name, r in summary["policies"].items():
        m = r["metrics"]
        cells = [f"{m[f]['value']:.3f} ± {m[f]['se']:.3f}" for f in FIGURES]
        seconds = f"{r['seconds']:.0f}" if "seconds" in r else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['malformed_rate']['value']:.3f} | {seconds} |")
    lines += ["", "![training curves](curves.png)", "", "![reliability diagrams](reliability.png)", "",
              "Each policy's full evaluation report (test-time scaling, selective prediction) is in its folder: "
              + ", ".join(f"[{n}]({r['eval']}/report.md)" for n, r in summary["policies"].items()), ""]
    return "\n".join(lines)


def two_attempt_markdown(summary: dict, config: dict) -> str:
    first = next(iter(summary["attempts"].values()))
    n, ks = first["samples_per_prompt"], first["k"]
    lines = ["# bae demo: two-attempt refinement", "",
             "Task arithmetic_two_attempt (paper Section 5.5): r1 = first attempt correct; r2 = 1 if the second "
             "attempt is correct, 0.1 if wrong with a new answer, 0 if wrong with the same answer.", "",
             _setup_line(summary, config) + " Each attempt's answer is checked by the task's verifier; pass@k: the "
             "unbiased estimator per problem, averaged over problems, ± over problems.", "",
             "Methods: " + "; ".join(f"**{m}**: {METHOD_NOTES[m]}" for m in summary["methods"]) + ".", "",
             f"| policy | first attempt pass@1 | second attempt pass@1 | second - first | fixed | broken | changed "
             f"| first pass@{n} | second pass@{n} | malformed | time (s) |", "|---" * 11 + "|"]
    for name, a in summary["attempts"].items():
        f, s = a["first"], a["second"]
        seconds = summary["methods"][name]["seconds"] if name in summary["methods"] else None
        lines.append(
            f"| {name} | {f['value'][0]:.3f} ± {f['se'][0]:.3f} | {s['value'][0]:.3f} ± {s['se'][0]:.3f} "
            f"| {s['value'][0] - f['value'][0]:+.3f} | {a['fixed']:.3f} | {a['broken']:.3f} | {a['changed']:.3f} "
            f"| {f['value'][-1]:.3f} | {s['value'][-1]:.3f} | {a['malformed']:.3f} | "
            + (f"{seconds:.0f}" if seconds is not None else "-") + " |")
    lines += ["", "fixed: first wrong and second right; broken: first right and second wrong; changed: a second "
              "answer different from the first (fractions of samples).", "",
              "![first- and second-attempt pass@k](attempts.png)", "",
              "pass@k of each attempt over the sampling budget k:", "",
              "| policy | attempt | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 2) + "|"]
    for name, a in summary["attempts"].items():
        for attempt in ATTEMPTS:
            lines.append(f"| {name} | {attempt} | " + " | ".join(f"{v:.3f}" for v in a[attempt]["value"]) + " |")
    lines += ["", "![training curves](curves.png)", "",
              "Each policy's full evaluation report (of the final answer) is in its folder: "
              + ", ".join(f"[{n}]({r['eval']}/report.md)" for n, r in summary["policies"].items()), ""]
    return "\n".join(lines)


def _print_table(console, summary: dict, task: str) -> None:
    from rich.table import Table

    table = Table(title=f"bae demo{' --task two_attempt' if task == 'two_attempt' else ''}: {summary['steps']} RL "
                        f"steps per method from one warm start (seed {summary['seed']})")
    if task == "two_attempt":
        n = summary["attempts"][WARM]["samples_per_prompt"]
        columns = ("policy", "first pass@1", "second pass@1", "second - first", f"first pass@{n}", f"second pass@{n}")
        for column in columns:
            table.add_column(column, justify="left" if column == "policy" else "right")
        for name, a in summary["attempts"].items():
            f, s = a["first"]["value"], a["second"]["value"]
            table.add_row(name, f"{f[0]:.3f}", f"{s[0]:.3f}", f"{s[0] - f[0]:+.3f}", f"{f[-1]:.3f}", f"{s[-1]:.3f}")
    else:
        table.add_column("policy")
        for f in FIGURES:
            table.add_column(f, justify="right")
        for name, r in summary["policies"].items():
            table.add_row(name, *(f"{r['metrics'][f]['value']:.3f} ± {r['metrics'][f]['se']:.3f}" for f in FIGURES))
    console.print(table)


# ---------------------------------------------------------------------------------------------
# The harness


def run_demo(out_dir: str = "runs/demo", steps: int | None = None, seed: int = 0, methods: tuple[str, ...] | None = None,
             task: str = "arithmetic", overrides: dict[str, Any] | None = None) -> dict:
    """Warm start once, evaluate it, train each method from it for `steps` steps (default: the
    demo's), evaluate each final policy the same way, and write the report into `out_dir`.
    ``task``: "arithmetic" or "two_attempt"; ``methods``: a subset of the task's (None: all);
    ``overrides``: settings on top of demo.yaml (see `settings`)."""
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from bae import tasks
    from bae.evaluation.generations import read_generations
    from bae.evaluation.sampling import load_transformers
    from bae.io import atomic_write_text
    from bae.runs.train import evaluate_policy, load_prompts, train

    config = settings(task, overrides)
    known = TASKS[task]
    methods = tuple(known) if methods is None else tuple(methods)
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ValueError(f"unknown demo methods {unknown or list(methods)} for --task {task}; choose from {list(known)}")
    steps = config["steps"] if steps is None else steps
    hf_logging.disable_progress_bar()  # "Writing model shards" / "Loading weights" on every save and load
    console = Console()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = parse({**config, "seed": seed, "output_dir": str(out)}, "demo")
    the_task = tasks.load(base.task.name, **base.task.options)

    start = time.time()
    console.print(f"[bold]warm start[/] of the tiny policy (supervised, on {base.task.name} demonstrations)")
    policy = resolve_model("tiny", out / "warm_start", the_task, levels=base.data.levels, seed=seed)
    warm_seconds = time.time() - start
    _, held_out = load_prompts(base)
    model, tokenizer = load_transformers(policy)
    policies = {WARM: {"metrics": evaluate_policy(base, the_task, held_out, model, tokenizer, "warm_start")["metrics"],
                       "eval": "eval/warm_start"}}
    del model

    logs = {}
    for name in methods:
        method = method_config(name, out, steps, seed, policy, task, overrides)
        folder = Path(method.output_dir)
        shutil.rmtree(folder, ignore_errors=True)  # a demo run always starts afresh from the warm start
        console.print(f"[bold]{name}[/]: {steps} RL steps")
        t = time.time()
        result = train(method, policy=policy)
        policies[name] = {"metrics": result["metrics"], "seconds": time.time() - t, "folder": str(folder),
                          "eval": f"{folder.name}/eval/final"}
        logs[name] = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]

    generations = {name: read_generations(out / p["eval"] / "generations.jsonl") for name, p in policies.items()}
    summary: dict[str, Any] = {
        "task": task, "steps": steps, "seed": seed, "eval_prompts": min(base.eval.limit, len(held_out)),
        "warm_start": {"seconds": warm_seconds, "folder": policy},
        "policies": policies,
        "methods": {n: {**policies[n], "description": METHOD_NOTES[n]} for n in methods},
    }
    if task == "two_attempt":
        summary["attempts"] = {name: attempt_figures(rows, the_task) for name, rows in generations.items()}
        curves_plot(logs, out / "curves.png", the_task.block_names,
                    extra=(("bae/accuracy", "final-answer accuracy"), ("bae/malformed_rate", "malformed rate")))
        attempts_plot(summary["attempts"], out / "attempts.png")
        report = two_attempt_markdown(summary, config)
    else:
        curves_plot(logs, out / "curves.png", the_task.block_names)
        scored = {name: [json.loads(line) for line in (out / p["eval"] / "scores.jsonl").read_text().splitlines()]
                  for name, p in policies.items()}
        reliability_grid(scored, policies, out / "reliability.png")
        report = markdown(summary, config)
    summary["total_seconds"] = time.time() - start
    atomic_write_text(out / "report.md", report)
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2))
    _print_table(console, summary, task)
    console.print(f"report: {out / 'report.md'}  ({summary['total_seconds']:.0f} s in all)")
    return summary
