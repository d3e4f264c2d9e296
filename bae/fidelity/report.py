"""The fidelity report: metrics.json, report.md, samples.jsonl and the two figures."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bae.fidelity.config import STRATA, FidelityConfig

def _fmt(value: float, se: float | None = None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if se is None or math.isnan(se) else f"{value:.{digits}f} ± {se:.{digits}f}"


def render_markdown(result: dict, command: str | None = None) -> str:
    cfg, setup = result["config"], result["setup"]
    g_main = str(cfg["group"])
    lines = [
        "# Fidelity of the advantage estimators (paper Sec. 5.1)", "",
        f"Model `{setup['model']}` ({setup['model_path']}), task `{setup['task']}`, {setup['prompts']} prompts x "
        f"{setup['pool_per_prompt']} completions (T = {cfg['temperature']}, max {cfg['max_new_tokens']} tokens, "
        f"seed {cfg['seed']}), M = {cfg['continuations']} continuations per distinct prefix "
        f"({setup['distinct_prefixes']} prefixes, {setup['continuations']} continuations).",
        f"Accuracy {setup['accuracy']:.3f}, malformed {setup['malformed']:.3f}, incomplete solution block "
        f"{setup['incomplete_solution']:.3f}; MC values in [{setup['mc_value_range'][0]:.3f}, "
        f"{setup['mc_value_range'][1]:.3f}]. Time {result['timings']['total']:.0f} s "
        f"(model {result['timings']['model']:.0f} s, pool {result['timings']['sample_pool']:.0f} s, "
        f"continuations {result['timings']['continuations']:.0f} s).",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += ["", f"## Block 2 at G = {g_main}", "",
              "Error e = A_hat - A_MC. RMSE ± bootstrap se over prompts; RMSE_exact removes the MC noise "
              "(mean s²/M); bias = mean error ± cluster se; Δ = RMSE - RMSE(ocb) ± paired bootstrap se.", ""]
    lines += _table(result["groups"][g_main])
    b1 = result["groups"][g_main]["block1"]
    lines += ["", f"Block 1 (group mean) against E[r_1 | x] from M fresh samples: RMSE {_fmt(b1['rmse'], b1['rmse_se'])}, "
              f"RMSE_exact {_fmt(b1['rmse_exact'])}, bias {_fmt(b1['bias'], b1['bias_se'])}.", ""]
    lines += ["## RMSE by group size (block 2)", "",
              "| estimator | stratum | " + " | ".join(f"G = {g}" for g in result["groups"]) + " |",
              "|---|---|" + "---|" * len(result["groups"])]
    names = list(next(iter(result["groups"].values()))["estimators"])
    for name in names:
        for stratum in STRATA:
            cells = [_fmt(v["estimators"][name][stratum]["rmse"], v["estimators"][name][stratum]["rmse_se"])
                     for v in result["groups"].values()]
            lines.append(f"| {name} | {stratum} | " + " | ".join(cells) + " |")
    for stratum in STRATA:
        lines.append(f"| (singleton strata) | {stratum} | " + " | ".join(
            _fmt(v["singletons"][stratum], digits=2) for v in result["groups"].values()) + " |")
    for outcome in setup.get("outcome_strata", []):
        for stratum in STRATA:
            lines.append(f"| (singleton strata @{outcome}) | {stratum} | " + " | ".join(
                _fmt(v["singletons_by_outcome"][outcome][stratum], digits=2) for v in result["groups"].values()) + " |")
    if setup.get("outcome_strata"):
        lines += ["", "Mean stratum size (block 2): " + "; ".join(
            f"G = {g}: " + ", ".join(f"{k} {x:.2f}" for k, x in v["mean_stratum_size"].items())
            for g, v in result["groups"].items()) + f" (task: the task's outcome {setup['task_outcomes']}). "
            "Rows are reported by the correctness of the prefix; `name@outcome` is the baseline with its strata "
            "from that outcome."]
    lines += ["", "Figures: fidelity.png (error distributions by stratum at G = "
              f"{g_main}), fidelity_sweep.png (RMSE against G).", "", "## Rules", ""]
    lines += [f"- {k}: {v}" for k, v in result["rules"].items()]
    return "\n".join(lines) + "\n"


def command(config: FidelityConfig) -> str:
    """The `bae fidelity` command line that reproduces `config` (options left at their default omitted)."""
    default = FidelityConfig()
    parts = ["bae fidelity"]
    for key, value in asdict(config).items():
        if key in ("system_prompt", "levels") or value == getattr(default, key):
            continue
        text = (",".join(map(str, value)) or "''") if isinstance(value, tuple) else str(value)
        parts.append(f"--{key.replace('_', '-')} {text}")
    return " ".join(parts)


def _table(entry: dict) -> list[str]:
    lines = ["| estimator | stratum | n | RMSE | RMSE_exact | bias | Δ RMSE vs ocb |", "|---|---|---|---|---|---|---|"]
    for name, per in entry["estimators"].items():
        for stratum in (*STRATA, "all"):
            s = per[stratum]
            lines.append(f"| {name} | {stratum} | {s['n']} | {_fmt(s['rmse'], s['rmse_se'])} | {_fmt(s['rmse_exact'])} | "
                         f"{_fmt(s['bias'], s['bias_se'])} | {_fmt(s.get('rmse_minus_ocb', math.nan), s.get('rmse_minus_ocb_se'))} |")
    return lines


def error_plot(errors: dict[str, np.ndarray], strata: dict[str, np.ndarray], path: str | os.PathLike,
               title: str = "") -> None:
    """Per stratum, the distribution (box: quartiles, whiskers 5-95%, diamond: mean) of the error
    A_hat - A_MC of each estimator, as the paper's Figure 1."""
    from bae.evaluation.plots import figure, save

    names = list(errors)
    fig, axes = figure(1, len(strata), figsize=(4.5 * len(strata), 4), sharey=True, squeeze=False)
    for ax, (sname, mask) in zip(axes[0], strata.items()):
        data = [errors[n][mask] for n in names]
        if mask.any():
            ax.boxplot(data, whis=(5, 95), showfliers=False, showmeans=True,
                       meanprops=dict(marker="D", markersize=4, markerfacecolor="C1", markeredgecolor="C1"))
            ax.set_xticks(range(1, len(names) + 1),
                          [f"{n}\n{math.sqrt(float(np.mean(d ** 2))):.3f}" for n, d in zip(names, data)],
                          fontsize=7, rotation=30)
        ax.axhline(0.0, color="gray", lw=0.8, ls="--")
        ax.set_title(f"{sname} prefix (n = {int(mask.sum())})")
        ax.set_xlabel("estimator (RMSE)")
    axes[0][0].set_ylabel("A_hat - A_MC (block 2)")
    fig.suptitle(title or "Advantage error against the Monte-Carlo reference")
    fig.tight_layout()
    save(fig, path)


def sweep_plot(result: dict, path: str | os.PathLike) -> None:
    """RMSE (± se) of each estimator against the group size, one panel per stratum."""
    from bae.evaluation.plots import figure, save

    gs = [int(g) for g in result["groups"]]
    names = list(next(iter(result["groups"].values()))["estimators"])
    fig, axes = figure(1, len(STRATA), figsize=(4.5 * len(STRATA), 4), sharey=True)
    for ax, stratum in zip(axes, STRATA):
        for name in names:
            v = [result["groups"][str(g)]["estimators"][name][stratum] for g in gs]
            ax.errorbar(gs, [x["rmse"] for x in v], yerr=[x["rmse_se"] for x in v], marker="o", ms=3, capsize=2,
                        label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(gs, [str(g) for g in gs])
        ax.set_xlabel("group size G")
        ax.set_title(f"{stratum} prefix")
    axes[0].set_ylabel("RMSE of A_hat - A_MC (block 2)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def write_report(result, samples, scores, prefix_of, conts, cont_rewards, mc_values, a_mc, errors_at, strata, config,
                 outcomes_by: dict | None = None) -> None:
    """outcomes_by: {name: [N, 2] outcomes} recorded per sample as "outcomes" (the task's, its
    group-level columns assigned) and "outcomes@<name>" (the other stratifications)."""
    from bae.evaluation.generations import atomic_write_text

    out = Path(config.out_dir)
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=1, default=float) + "\n")
    atomic_write_text(out / "report.md", render_markdown(result, command(config)))
    lines = []
    for i, s in enumerate(samples):
        prefix, u = prefix_of[i]
        lines.append(json.dumps({
            "prompt_id": s["prompt_id"], "sample": s["sample"], "problem": s["problem"], "gold": s["gold"],
            "completion": s["completion"], "rewards": list(scores[i].rewards), "outcomes": list(scores[i].outcomes),
            **{("outcomes" if k == "task" else f"outcomes@{k}"): [int(x) for x in v[i]] for k, v in (outcomes_by or {}).items()},
            "prefix": prefix, "continuations": conts[u] if u >= 0 else [],
            "continuation_rewards": cont_rewards[u].tolist() if u >= 0 else [],
            "mc_value": float(mc_values[i]), "a_mc": float(a_mc[i]),
        }, ensure_ascii=False))
    atomic_write_text(out / "samples.jsonl", "\n".join(lines) + "\n")
    errs, idx = errors_at[config.group]
    error_plot(errs, {k: v[idx] for k, v in strata.items()}, out / "fidelity.png",
               f"Block-2 advantage error at G = {config.group} ({result['setup']['prompts']} prompts, "
               f"M = {config.continuations})")
    sweep_plot(result, out / "fidelity_sweep.png")
