"""`bae demo`: the embedded default, end to end on CPU and offline.

One warm start of the tiny policy on the arithmetic task, then the same budget of RL steps from it
for each method (bae+ocb, bae+group_mean, rlcr, rlvr: they differ only in the advantage), each
evaluated on the same held-out problems by bae.evaluation; a report folder with report.md,
metrics.json, training curves and reliability diagrams, and a summary table. It reports what it
measured, whichever method wins.

`bae demo --task two_attempt`: the same harness on the two-attempt format of the arithmetic task
(paper Section 5.5; task arithmetic_two_attempt, second block rewarded by the shaped Appendix C
reward: 1 if right, 0.1 if wrong with a new answer, 0 if wrong with the same). The warm start
demonstrates an attempt and a check (bae.embedded.warmstart, two-attempt format); the methods are bae+ocb
(the second block's baseline is the mean over the group members whose first attempt has the same
outcome), bae+group_mean and scalar_sum (one advantage for every token from r1 + r2: the rlcr
method, whose scalar is the sum of the block rewards). The report gives first- and second-attempt
accuracy over sampling budgets k = 1..n (Pass@k of each attempt, paper Figure 3) for the warm
start and each method, from the final evaluation's generations (resampled from each final policy
with the evaluation's seed, and checked against its scores).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bae.runs.config import TrainConfig, parse

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

# `--task two_attempt`: the arithmetic task in the two-attempt format, no system prompt (as the
# arithmetic demo), 8 evaluation samples per prompt so that the attempt curves run over k = 1..8.
TWO_ATTEMPT_METHODS: dict[str, dict] = {
    "bae+ocb": {"method": "bae", "baseline": "ocb"},
    "bae+group_mean": {"method": "bae", "baseline": "group_mean"},
    "scalar_sum": {"method": "rlcr"},
}
METHOD_NOTES = {
    "bae+ocb": "blockwise; second block's baseline: group members with the same first-attempt outcome",
    "bae+group_mean": "blockwise; second block's baseline: group mean",
    "scalar_sum": "scalar (sum): one advantage for all tokens from r1 + r2 (the rlcr method), group mean",
}
DEMO_TWO_ATTEMPT: dict = {
    **DEMO,
    "task": {"name": "arithmetic_two_attempt", "options": {"system_prompt": ""}},
    "output_dir": "runs/demo-two-attempt-train",
    "eval": {**DEMO["eval"], "n": 8},
}
TASKS = {"arithmetic": (DEMO, METHODS), "two_attempt": (DEMO_TWO_ATTEMPT, TWO_ATTEMPT_METHODS)}


def demo_of(task: str) -> tuple[dict, dict[str, dict]]:
    """(embedded config, methods) of a demo task: "arithmetic" or "two_attempt"."""
    if task not in TASKS:
        raise ValueError(f"unknown demo task {task!r}; choose from {list(TASKS)}")
    return TASKS[task]


def method_config(name: str, out: Path, steps: int, seed: int, policy: str, task: str = "arithmetic") -> TrainConfig:
    default, methods = demo_of(task)
    return parse({**default, **methods[name], "model": policy, "steps": steps, "seed": seed,
                  "output_dir": str(out / name.replace("+", "_")),
                  "checkpoint_interval": max(steps, 1)}, f"demo[{name}]")


def curves_plot(logs: dict[str, list[dict]], path: Path, block_names: tuple[str, ...],
                extra: tuple[tuple[str, str], ...] = (("bae/accuracy", "accuracy"), ("bae/ece", "batch ECE"))) -> None:
    """Training curves per method: reward of each block, then the `extra` (log key, title): by
    default accuracy and batch ECE, against step."""
    from bae.evaluation.plots import _save, plt

    keys = [(f"rewards/{b}_reward/mean", f"reward: {b}") for b in block_names] + list(extra)
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

    from bae.metrics import reliability
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


def _warm_started(defaults: dict, out_dir: str, seed: int, label: str, console):
    """The demo's report folder, task and warm-started policy (built once into OUT/warm_start).
    Returns (out, base config, task, policy folder, start time, warm-start seconds)."""
    from bae import tasks
    from bae.runs.train import resolve_policy

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = parse({**defaults, "seed": seed, "output_dir": str(out)})
    task = tasks.get(base.task.name, **base.task.options)
    start = time.time()
    console.print(f"[bold]warm start[/] of the tiny policy (supervised, on {label} demonstrations)")
    policy = resolve_policy(base, task)
    return out, base, task, policy, start, time.time() - start


def _train_one(name: str, config: TrainConfig, console) -> tuple[Path, dict, list[dict]]:
    """Train one method afresh from the warm start: (its folder, final evaluation + seconds, log)."""
    import shutil

    from bae.runs.train import train

    folder = Path(config.output_dir)
    shutil.rmtree(folder, ignore_errors=True)  # a demo run always starts afresh from the warm start
    console.print(f"[bold]{name}[/]: {config.steps} RL steps")
    t = time.time()
    result = {**train(config), "seconds": time.time() - t, "folder": str(folder)}
    return folder, result, [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def run_demo(out_dir: str = "runs/demo", steps: int = DEMO["steps"], seed: int = 0,
             methods: tuple[str, ...] | None = None, task: str = "arithmetic") -> dict:
    """Warm start once, train each method from it for `steps` steps, evaluate, and write the report.
    ``task``: "arithmetic" (self-confidence format) or "two_attempt"; ``methods``: a subset of the
    task's methods (None: all)."""
    default, known = demo_of(task)
    methods = tuple(known) if methods is None else tuple(methods)
    if task == "two_attempt":
        return _run_two_attempt(out_dir, steps, seed, methods)
    from rich.console import Console
    from rich.table import Table

    from bae.evaluation.generations import atomic_write_text

    console = Console()
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown demo methods {unknown}; choose from {list(METHODS)}")
    out, _, task, policy, start, warm_seconds = _warm_started(DEMO, out_dir, seed, "arithmetic", console)

    results, folders, logs = {}, {}, {}
    for name in methods:
        config = method_config(name, out, steps, seed, policy)
        folders[name], results[name], logs[name] = _train_one(name, config, console)

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


# ---------------------------------------------------------------------------------------------
# `--task two_attempt`: first- and second-attempt accuracy over sampling budgets (paper Figure 3).

ATTEMPTS = ("first", "second")


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


def final_generations(config: TrainConfig, task, policy: str) -> list[dict]:
    """The generations of the final evaluation of a run (bae.runs.train.evaluate_policy): the same
    held-out prompts, n, temperature, length and seed, sampled from ``policy``."""
    from bae.evaluation.sampling import load_transformers, sample_rows
    from bae.runs.train import load_prompts

    _, held_out = load_prompts(config)
    return sample_rows(load_transformers(policy), task, held_out[: config.eval.limit], n=config.eval.n,
                       temperature=config.eval.temperature, max_new_tokens=config.max_completion_length,
                       seed=config.seed, progress=False)


def same_as_final_eval(rows: list[dict], task, folder: Path) -> bool:
    """Whether resampled ``rows`` give the final answers and correctness of the run's own final
    evaluation (its scores.jsonl, same order)."""
    scores = [json.loads(line) for line in (folder / "eval" / "final" / "scores.jsonl").read_text().splitlines()]
    if len(scores) != len(rows):
        return False
    for row, saved in zip(rows, scores):
        score = task.score(row["completion"], row["gold"])
        if (row["prompt_id"], score.answer, bool(score.correct)) != (saved["prompt_id"], saved["answer"], saved["correct"]):
            return False
    return True


def attempts_plot(attempts: dict[str, dict], path: Path) -> None:
    """Pass@k of the first and of the second attempt against the sampling budget k, one line per
    policy (warm start and each method), one panel per attempt, shared y axis."""
    from bae.evaluation.plots import _save, plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, attempt in zip(axes, ATTEMPTS):
        for name, a in attempts.items():
            v, se = a[attempt]["value"], a[attempt]["se"]
            line, = ax.plot(a["k"], v, marker="o", markersize=3, label=name,
                            linestyle="--" if name == "warm start" else "-")
            ax.fill_between(a["k"], [x - e for x, e in zip(v, se)], [x + e for x, e in zip(v, se)],
                            color=line.get_color(), alpha=0.12)
        ax.set_title(f"{attempt} attempt")
        ax.set_xlabel("samples per problem k")
        ax.set_xticks(attempts[next(iter(attempts))]["k"])
    axes[0].set_ylabel("pass@k")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def two_attempt_markdown(summary: dict, default: dict) -> str:
    first = next(iter(summary["attempts"].values()))
    n, ks = first["samples_per_prompt"], first["k"]
    lines = ["# bae demo: two-attempt refinement", "",
             "Task arithmetic_two_attempt (paper Section 5.5): r1 = first attempt correct; r2 = 1 if the second "
             "attempt is correct, 0.1 if wrong with a new answer, 0 if wrong with the same answer.", "",
             f"Warm start: {summary['warm_start']}. RL: {summary['steps']} steps per method, "
             f"{default['batch_size']} completions per step in groups of {default['group_size']}, seed {summary['seed']}. "
             f"Evaluation: {n} samples for each of {first['prompts']} held-out problems at temperature "
             f"{default['eval']['temperature']} (the final evaluation's generations); each attempt's answer is checked "
             "by the task's verifier. pass@k: the unbiased estimator per problem, averaged over problems; "
             "± is the standard error over problems.", "",
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
              "Each method's full evaluation report (of the final answer) is in its folder: "
              + ", ".join(f"[{m}]({Path(r['folder']).name}/eval/final/report.md)" for m, r in summary["methods"].items()), ""]
    return "\n".join(lines)


def _run_two_attempt(out_dir: str, steps: int, seed: int, methods: tuple[str, ...]) -> dict:
    from rich.console import Console
    from rich.table import Table

    from bae.evaluation.generations import atomic_write_text, write_generations

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" / "Loading weights" on every save and load
    console = Console()
    default, known = demo_of("two_attempt")
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ValueError(f"unknown demo methods {unknown or list(methods)} for --task two_attempt; choose from {list(known)}")
    out, base, task, policy, start, warm_seconds = _warm_started(default, out_dir, seed, "two-attempt arithmetic", console)

    attempts: dict[str, dict] = {}
    rows = final_generations(base, task, policy)  # the warm start, evaluated the same way as every method
    write_generations(rows, out / "warm_start_eval" / "generations.jsonl")
    attempts["warm start"] = attempt_figures(rows, task)

    results, folders, logs, matches = {}, {}, {}, {}
    for name in methods:
        config = method_config(name, out, steps, seed, policy, "two_attempt")
        folders[name], results[name], logs[name] = _train_one(name, config, console)
        rows = final_generations(config, task, str(folders[name] / "final"))
        write_generations(rows, folders[name] / "eval" / "final" / "generations.jsonl")
        matches[name] = same_as_final_eval(rows, task, folders[name])
        if not matches[name]:
            console.print(f"[yellow]warning:[/] {name}: the resampled generations differ from the final evaluation's")
        attempts[name] = attempt_figures(rows, task)

    summary = {
        "task": "two_attempt",
        "warm_start": f"{warm_seconds:.0f} s, folder {policy}",
        "steps": steps, "seed": seed, "eval_prompts": default["eval"]["limit"],
        "methods": {n: {"metrics": r["metrics"], "seconds": r["seconds"], "folder": r["folder"],
                        "description": METHOD_NOTES[n], "generations_match_final_eval": matches[n]}
                    for n, r in results.items()},
        "attempts": attempts,
        "total_seconds": time.time() - start,
    }
    curves_plot(logs, out / "curves.png", task.block_names,
                extra=(("bae/accuracy", "final-answer accuracy"), ("bae/malformed_rate", "malformed rate")))
    attempts_plot(attempts, out / "attempts.png")
    atomic_write_text(out / "report.md", two_attempt_markdown(summary, default))
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2))

    n = attempts["warm start"]["samples_per_prompt"]
    table = Table(title=f"bae demo --task two_attempt: {steps} RL steps per method from one warm start (seed {seed})")
    for column in ("policy", "first pass@1", "second pass@1", "second - first", f"first pass@{n}", f"second pass@{n}"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for name, a in attempts.items():
        f, s = a["first"]["value"], a["second"]["value"]
        table.add_row(name, f"{f[0]:.3f}", f"{s[0]:.3f}", f"{s[0] - f[0]:+.3f}", f"{f[-1]:.3f}", f"{s[-1]:.3f}")
    console.print(table)
    console.print(f"report: {out / 'report.md'}  ({summary['total_seconds']:.0f} s in all)")
    return summary
