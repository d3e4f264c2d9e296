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
    --methods            the methods to run (default: the task's, above); either task also takes
                         OPTIONAL_METHODS, never run by default: bae+ocb_eb (ocb_eb with its F
                         pretest and 3 batches of history).

Every method is compared with bae+ocb (REFERENCE) on the same held-out prompts: the difference of
each figure with a paired bootstrap over prompts (bae.metrics.paired_bootstrap: resample the
prompts, recompute both policies' figures on the resample), its standard error and 95% interval,
and a sentence saying which differences are distinguishable from zero (the interval excludes it).
That interval counts the noise of the evaluation, not of training: one seed's RL run is one draw,
and benchmarks/demo_seeds.py repeats the demo over seeds for that.

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
    "bae+ocb_eb": "blockwise; the later block's baseline: OCB shrunk toward the group mean by a weight learned "
                  "from the batch and its 3 predecessors (ocb_eb, F pretest at 0.05)",
    "gdpo": "scalar (GDPO, TRL's normalize_then_sum): each block's reward normalised in its group, summed, "
            "normalised over the batch; one advantage for all tokens",
}
TASKS = {"arithmetic": METHODS, "two_attempt": TWO_ATTEMPT_METHODS}
OPTIONAL_METHODS: dict[str, dict] = {
    "bae+ocb_eb": {"method": "bae", "baseline": "ocb_eb", "baseline_options": {"pretest": 0.05, "history": 3}},
}
"""Methods either task runs when named in `methods` (`bae demo --methods`), never by default: they
are not part of the comparison the demo reports on a fresh clone."""
FIGURES = ("accuracy", "auroc", "ece", "brier")
ATTEMPTS = ("first", "second")
WARM = "warm start"
REFERENCE = "bae+ocb"
"""The method every other is compared with (when it is among the methods run; else the first)."""
LOWER_IS_BETTER = {"ece", "brier", "broken"}
ATTEMPT_LABELS = {"first": "first pass@1", "second": "second pass@1", "gain": "second - first", "fixed": "fixed",
                  "broken": "broken"}
LEVEL = 0.95


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


def known_methods(task: str) -> dict[str, dict]:
    """Every method `bae demo --task task` takes: the task's (run by default), then OPTIONAL_METHODS."""
    return {**TASKS[task], **OPTIONAL_METHODS}


def method_config(name: str, out: Path, steps: int, seed: int, policy: str, task: str = "arithmetic",
                  overrides: dict | None = None) -> TrainConfig:
    """The training config of one method: the demo's settings, the method, the warm-started policy."""
    return parse({**settings(task, overrides), **known_methods(task)[name], "model": policy, "steps": steps, "seed": seed,
                  "output_dir": str(out / name.replace("+", "_")), "checkpoint_interval": max(steps, 1)},
                 f"demo[{name}]")


# ---------------------------------------------------------------------------------------------
# Figures


def stated(row: dict) -> float:
    """A scored row's confidence, 0.0 when none was stated (as the reports count it)."""
    return row["confidence"] if row.get("confidence") is not None else 0.0


SMOOTHING = 9
"""Steps in the centred moving average of the training curves (the batch figures of one step of 64
completions are noisy)."""


def curves_plot(logs: dict[str, list[dict]], path: Path, block_names: tuple[str, ...],
                extra: tuple[tuple[str, str], ...] = (("bae/accuracy", "accuracy"), ("bae/ece", "batch ECE"))) -> None:
    """Training curves per method: reward of each block, then the `extra` (log key, title): by
    default accuracy and batch ECE, against step; each method's raw points of every step faint,
    with their centred moving average over `SMOOTHING` steps as a line."""
    from bae.evaluation.plots import figure, raw_and_smoothed, save

    keys = [(f"rewards/{b}_reward/mean", f"reward: {b}") for b in block_names] + list(extra)
    fig, axes = figure(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, (key, title) in zip(axes, keys):
        for j, (name, rows) in enumerate(logs.items()):
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                raw_and_smoothed(ax, *zip(*points), label=name, window=SMOOTHING, color=f"C{j}")
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


def reliability_grid(scored: dict[str, list[dict]], results: dict[str, dict], path: Path) -> None:
    """One reliability diagram per policy, side by side, from each evaluation's scored rows: the
    accuracy of each confidence bin with its standard error and sample count, shaded by its share
    of the samples, and below it the samples per bin (bae.evaluation.plots.reliability_panel); a
    missing confidence counts as 0.0, as in the reports. A policy that states no confidence at
    all gets an empty panel that says so."""
    from bae.evaluation.plots import figure, reliability_panel, save
    from bae.metrics import reliability

    fig, axes = figure(2, len(scored), figsize=(3.6 * len(scored), 4.6), sharex=True, sharey="row",
                       gridspec_kw={"height_ratios": [3, 1]}, squeeze=False)
    for j, (name, rows) in enumerate(scored.items()):
        top, bottom = axes[0][j], axes[1][j]
        ece = results[name]["metrics"]["ece"]
        if ece is None:
            top.set_title(f"{name}\nno confidence stated")
            continue
        q = [stated(r) for r in rows]
        table = reliability(q, [float(r["correct"]) for r in rows])
        reliability_panel(top, bottom, table, f"{name}\nECE {ece['value']:.3f}", legend=j == 0)
    axes[0][0].set_ylabel("accuracy")
    axes[1][0].set_ylabel("samples")
    fig.tight_layout()
    save(fig, path)


# ---------------------------------------------------------------------------------------------
# Paired differences from the reference method


def _by_prompt(rows: list[dict], fields) -> dict[str, tuple]:
    """prompt_id -> tuple of one array per field function (applied to each row), rows in file order."""
    import numpy as np

    from bae.evaluation.generations import group_by_prompt

    return {pid: tuple(np.array([f(r) for r in rs], dtype=float) for f in fields)
            for pid, rs in group_by_prompt(rows).items()}


def paired(per_prompt: dict[str, dict[str, tuple]], metrics: dict, reference: str, n_resamples: int,
           seed: int) -> dict[str, dict[str, dict]]:
    """policy -> figure -> bae.metrics.paired_bootstrap of (policy - reference) over the prompts both
    evaluated (every policy of the demo is evaluated on the same held-out prompts; a prompt one of
    them lacks is left out of that pair). Policies with nothing to compare (``metrics`` empty for
    them) are left out."""
    from bae.metrics import paired_bootstrap

    ref = per_prompt[reference]
    out = {}
    for name, rows in per_prompt.items():
        chosen = metrics(name) if callable(metrics) else metrics
        if name == reference or not chosen:
            continue
        ids = [pid for pid in ref if pid in rows]
        out[name] = paired_bootstrap(chosen, [rows[i] for i in ids], [ref[i] for i in ids], n_resamples, seed, LEVEL)
    return out


def confidence_differences(scored: dict[str, list[dict]], policies: dict[str, dict], reference: str,
                           n_resamples: int, seed: int) -> dict[str, dict[str, dict]]:
    """Paired differences (policy - reference) of accuracy, AUROC, ECE and Brier from the scored rows
    (a missing confidence counts as 0.0, as in the reports); the calibration figures only where both
    policies state some confidence."""
    from bae import metrics as M

    all_figures = {"accuracy": lambda q, c: M.accuracy(c), "auroc": M.auroc, "ece": M.ece, "brier": M.brier}
    has_confidence = {name: policies[name]["metrics"]["ece"] is not None for name in scored}

    def figures_of(name):
        if has_confidence[name] and has_confidence[reference]:
            return all_figures
        return {"accuracy": all_figures["accuracy"]}

    per_prompt = {name: _by_prompt(rows, (stated, lambda r: float(r["correct"]))) for name, rows in scored.items()}
    return paired(per_prompt, figures_of, reference, n_resamples, seed)


def attempt_differences(generations: dict[str, list[dict]], task, reference: str, n_resamples: int,
                        seed: int) -> dict[str, dict[str, dict]]:
    """Paired differences (policy - reference) of first- and second-attempt pass@1, their gain
    (second - first) and the fixed and broken rates, from each policy's generations (rows that
    already carry their ``attempt_marks`` are not verified again)."""
    import numpy as np

    figures = {"first": lambda f, s: float(np.mean(f)), "second": lambda f, s: float(np.mean(s)),
               "gain": lambda f, s: float(np.mean(s) - np.mean(f)),
               "fixed": lambda f, s: float(np.mean((1 - f) * s)), "broken": lambda f, s: float(np.mean(f * (1 - s)))}
    per_prompt = {name: _by_prompt(attempt_marks(rows, task), (lambda r: float(r["marks"][0]), lambda r: float(r["marks"][1])))
                  for name, rows in generations.items()}
    return paired(per_prompt, figures, reference, n_resamples, seed)


COLLAPSED = 0.95
"""A policy whose samples state one confidence value this often is called collapsed in the report."""


def confidence_notes(scored: dict[str, list[dict]], policies: dict[str, dict]) -> list[str]:
    """One sentence per policy whose calibration figures need a word: none stated at all (not
    reported), or a confidence collapsed onto one value (at least COLLAPSED of the samples, a
    missing one counting as 0.0 as in the figures), which ranks nothing (AUROC about 0.5) and makes
    ECE the distance between that value and the accuracy."""
    from collections import Counter

    notes = []
    for name, rows in scored.items():
        m = policies[name]["metrics"]
        if m["ece"] is None:
            notes.append(f"{name}: no held-out sample states a confidence (malformed {m['malformed_rate']['value']:.3f}), "
                         "so its calibration is not reported.")
            continue
        values = Counter(stated(r) for r in rows)
        value, count = values.most_common(1)[0] if values else (None, 0)
        if rows and count >= COLLAPSED * len(rows):
            notes.append(f"{name}: {count} of {len(rows)} samples state confidence {value:g}: the confidence has "
                         f"collapsed onto one value, so it ranks nothing (AUROC {m['auroc']['value']:.3f}) and its ECE "
                         "is the distance between that value and the accuracy.")
    return notes


def distinguishable(differences: dict[str, dict[str, dict]], labels: dict[str, str] | None = None) -> list[str]:
    """One sentence per figure: which policies' differences from the reference have a 95% interval
    that excludes zero (better or worse, by the figure's direction), and which do not."""
    labels = labels or {}
    figures = list(dict.fromkeys(f for d in differences.values() for f in d))
    lines = []
    for figure in figures:
        label = labels.get(figure, figure)
        apart, close = [], []
        for name, d in differences.items():
            if figure not in d:
                continue
            x = d[figure]
            cell = f"{name} {x['diff']:+.3f} [{x['low']:+.3f}, {x['high']:+.3f}]"
            if x["low"] > 0 or x["high"] < 0:
                lower = x["high"] < 0
                better = lower == (figure in LOWER_IS_BETTER)
                apart.append(f"{cell} ({'better' if better else 'worse'})")
            else:
                close.append(cell)
        parts = []
        if apart:
            parts.append("distinguishable from zero: " + "; ".join(apart))
        if close:
            parts.append("not distinguishable from zero: " + "; ".join(close))
        lines.append(f"- {label}: " + ". ".join(parts) + ".")
    return lines


def differences_markdown(differences: dict[str, dict[str, dict]], reference: str,
                         labels: dict[str, str] | None = None) -> list[str]:
    """The table of paired differences from the reference and the sentences of ``distinguishable``."""
    if not differences:
        return []
    labels = labels or {}
    figures = list(dict.fromkeys(f for d in differences.values() for f in d))
    lines = [f"## Differences from {reference} (paired bootstrap over the held-out prompts)", "",
             f"policy - {reference} on the same prompts: difference ± paired standard error [{LEVEL:.0%} interval]. "
             "It counts the noise of the evaluation (which prompts, which samples), not of training: one seed's RL "
             "run is one draw (benchmarks/demo_seeds.py repeats the demo over seeds).", "",
             "| policy | " + " | ".join(labels.get(f, f) for f in figures) + " |", "|---" * (len(figures) + 1) + "|"]
    for name, d in differences.items():
        cells = [f"{d[f]['diff']:+.3f} ± {d[f]['se']:.3f} [{d[f]['low']:+.3f}, {d[f]['high']:+.3f}]" if f in d else "-"
                 for f in figures]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Lower is better for {', '.join(labels.get(f, f) for f in figures if f in LOWER_IS_BETTER)}; "
              "higher for the rest.", ""]
    return lines + distinguishable(differences, labels) + [""]


def attempt_correct(task, completion: str, gold: str) -> tuple[bool, bool, bool]:
    """(first attempt right, second attempt right, second answer differs from the first): each
    attempt's answer, when its block is complete, checked by the task's verifier (an incomplete or
    empty block is wrong; a missing second answer is not a change)."""
    split = task.split(completion)
    answers = [(split.fields[k].get("answer") or None) if k < len(split.fields) else None for k in range(2)]
    right = [a is not None and bool(task.verify(a, gold)) for a in answers]
    changed = answers[1] is not None and (answers[0] is None or not task.equivalent(answers[1], answers[0]))
    return right[0], right[1], changed


def attempt_marks(rows: list[dict], task) -> list[dict]:
    """The rows, each with "marks": attempt_correct of its completion (rows that have them are kept)."""
    return [r if "marks" in r else {**r, "marks": attempt_correct(task, r["completion"], r["gold"])} for r in rows]


def attempt_figures(rows: list[dict], task) -> dict:
    """From generation rows (prompt_id, completion, gold; n per prompt): per attempt, Pass@k for
    k = 1..n (the unbiased estimator per prompt, averaged over prompts; se = std over prompts /
    sqrt(P)), and per sample the transition rates: fixed (first wrong, second right), broken (first
    right, second wrong), changed (a new second answer) and malformed."""
    import numpy as np

    from bae.evaluation.generations import group_by_prompt
    from bae.evaluation.tts import pass_at_k

    prompts = list(group_by_prompt(attempt_marks(rows, task)).values())
    n = min(len(p) for p in prompts)
    ks = list(range(1, n + 1))
    marks = [[r["marks"] for r in p[:n]] for p in prompts]
    out: dict = {"k": ks, "prompts": len(prompts), "samples_per_prompt": n}
    for j, attempt in enumerate(ATTEMPTS):
        values = np.array([[pass_at_k(n, sum(m[j] for m in ms), k) for k in ks] for ms in marks])  # [P, K]
        se = values.std(axis=0, ddof=1) / np.sqrt(len(prompts)) if len(prompts) > 1 else np.zeros(len(ks))
        out[attempt] = {"value": values.mean(axis=0).tolist(), "se": se.tolist()}
    flat = [m for ms in marks for m in ms]
    out["fixed"] = sum(not a and b for a, b, _ in flat) / len(flat)
    out["broken"] = sum(a and not b for a, b, _ in flat) / len(flat)
    out["changed"] = sum(c for _, _, c in flat) / len(flat)
    out["malformed"] = sum(not task.split(r["completion"]).well_formed for p in prompts for r in p[:n]) / len(flat)
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


def _cell(figure: dict | None) -> str:
    """value ± se, or "-" for a figure not reported (no confidence stated)."""
    return "-" if figure is None else f"{figure['value']:.3f} ± {figure['se']:.3f}"


def markdown(summary: dict, config: dict) -> str:
    lines = ["# bae demo", "", _setup_line(summary, config), "",
             "Methods: " + "; ".join(f"**{m}**: {METHOD_NOTES[m]}" for m in summary["methods"]) + ".", "",
             "| policy | " + " | ".join(FIGURES) + " | malformed | time (s) |", "|---" * (len(FIGURES) + 3) + "|"]
    for name, r in summary["policies"].items():
        m = r["metrics"]
        cells = [_cell(m[f]) for f in FIGURES]
        seconds = f"{r['seconds']:.0f}" if "seconds" in r else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['malformed_rate']['value']:.3f} | {seconds} |")
    lines += [""] + [f"- {note}" for note in summary.get("notes", [])] + ([""] if summary.get("notes") else [])
    lines += differences_markdown(summary["differences"], summary["reference"])
    lines += ["![training curves](curves.png)", "", "![reliability diagrams](reliability.png)", "",
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
    lines += [""] + differences_markdown(summary["differences"], summary["reference"], ATTEMPT_LABELS)
    lines += ["![training curves](curves.png)", "",
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
            table.add_row(name, *(_cell(r["metrics"][f]) for f in FIGURES))
    console.print(table)
    for note in summary.get("notes", []):
        console.print(note, highlight=False)
    labels = ATTEMPT_LABELS if task == "two_attempt" else {}
    if summary["differences"]:
        console.print(f"differences from {summary['reference']} (paired bootstrap over prompts, {LEVEL:.0%} interval):")
        for line in distinguishable(summary["differences"], labels):
            console.print(line, highlight=False)


# ---------------------------------------------------------------------------------------------
# The harness


def run_demo(out_dir: str = "runs/demo", steps: int | None = None, seed: int = 0, methods: tuple[str, ...] | None = None,
             task: str = "arithmetic", overrides: dict[str, Any] | None = None) -> dict:
    """Warm start once, evaluate it, train each method from it for `steps` steps (default: the
    demo's), evaluate each final policy the same way, and write the report into `out_dir`.
    ``task``: "arithmetic" or "two_attempt"; ``methods``: the task's or OPTIONAL_METHODS (None: all of
    the task's); ``overrides``: settings on top of demo.yaml (see `settings`)."""
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from bae.evaluation.generations import read_generations
    from bae.evaluation.sampling import load_transformers
    from bae.io import atomic_write_text
    from bae.runs.train import evaluate_policy, load_prompts, train

    config = settings(task, overrides)
    known = known_methods(task)
    methods = tuple(TASKS[task]) if methods is None else tuple(methods)
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ValueError(f"unknown demo methods {unknown or list(methods)} for --task {task}; choose from {list(known)}")
    steps = config["steps"] if steps is None else steps
    hf_logging.disable_progress_bar()  # "Writing model shards" / "Loading weights" on every save and load
    console = Console()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = parse({**config, "seed": seed, "output_dir": str(out)}, "demo")
    the_task = base.task.build()

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
        "reference": REFERENCE if REFERENCE in methods else methods[0],
    }
    resamples = base.eval.bootstrap
    if task == "two_attempt":
        generations = {name: attempt_marks(rows, the_task) for name, rows in generations.items()}  # verified once
        summary["attempts"] = {name: attempt_figures(rows, the_task) for name, rows in generations.items()}
        summary["differences"] = attempt_differences(generations, the_task, summary["reference"], resamples, seed)
        curves_plot(logs, out / "curves.png", the_task.block_names,
                    extra=(("bae/accuracy", "final-answer accuracy"), ("bae/malformed_rate", "malformed rate")))
        attempts_plot(summary["attempts"], out / "attempts.png")
        report = two_attempt_markdown(summary, config)
    else:
        curves_plot(logs, out / "curves.png", the_task.block_names)
        scored = {name: [json.loads(line) for line in (out / p["eval"] / "scores.jsonl").read_text().splitlines()]
                  for name, p in policies.items()}
        reliability_grid(scored, policies, out / "reliability.png")
        summary["differences"] = confidence_differences(scored, policies, summary["reference"], resamples, seed)
        summary["notes"] = confidence_notes(scored, policies)
        report = markdown(summary, config)
    summary["total_seconds"] = time.time() - start
    atomic_write_text(out / "report.md", report)
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2))
    _print_table(console, summary, task)
    console.print(f"report: {out / 'report.md'}  ({summary['total_seconds']:.0f} s in all)")
    return summary
