"""Score generations with a task and compute every figure the project reports, then write the
report folder: metrics.json, report.md, reliability.png, tts.png, risk_coverage.png.

This is the one code path for ``bae eval``, ``bae demo`` and the training loop's periodic
evaluation: each gives generation rows (prompt_id, completion, gold) and a task.

Rules (also written into metrics.json under "rules"):
- A completion is scored by ``task.score(completion, gold)``; its ``correct`` is the accuracy
  label (a malformed completion is whatever the task says, normally wrong).
- Its confidence is the row's own ``confidence`` when the row gives one (a probability from
  outside the text: bae.evaluation.generations), else the one stated in the text (None: no tag or
  unparseable). Their numbers are reported as ``confidence_given`` and ``confidence_missing``.
- No confidence at all (no completion has one: the task states none, every completion is
  malformed, and no row gives one): the figures that rank or bin confidences mean nothing, so
  they are not reported: AUROC, ECE, Brier, AURC are null, ``selective`` and ``reliability`` are
  null, the max-confidence and confidence-weighted-majority curves are left out, no reliability
  or risk-coverage figure is drawn, and ``not_reported`` says which and why.
- Otherwise a missing confidence counts as 0.0 in every calibration, selective-prediction and
  voting figure: the sample claimed nothing.
- ``warnings`` (also printed by ``bae eval``): most completions malformed (their format is not
  the task's), or no confidence at all.
- An abstention (the task's abstention answer, e.g. "unknown") is a wrong answer in every figure;
  their share is reported as ``abstain_rate`` (0 for a task without one).
- Standard errors: accuracy (Pass@1) over the (prompt, sample) combinations as the paper, and
  also over per-prompt means (``se_by_prompt``); AUROC, ECE, Brier, AURC and accuracy at
  coverage by bootstrap over (confidence, correct) pairs (``bootstrap`` resamples, seeded);
  test-time-scaling points over prompts.
- The selective-prediction threshold is chosen on a validation half of the prompts (a seeded
  shuffle; the first ceil(P/2) prompts) and applied to the other half.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from rich.progress import Progress

from bae import metrics as M
from bae.evaluation import plots, selective, tts
from bae.evaluation.generations import atomic_write_text, confidence_from, group_by_prompt

COVERAGES = (0.5, 0.8, 0.9)

CALIBRATION = ("auroc", "ece", "brier", "aurc")
"""The headline figures that need a confidence (null when no completion has one)."""
CONFIDENCE_STRATEGIES = ("max_confidence", "weighted_majority")
"""The test-time-scaling strategies that need a confidence."""
NO_CONFIDENCE = "no completion has a confidence (none stated in the text, none given by a generations row)"

RULES = {
    "confidence": "a row's own 'confidence' (a probability from outside the text) replaces the one stated in the text",
    "missing_confidence": "a completion without a confidence counts with confidence 0.0, when at least one has one",
    "no_confidence": "no completion with a confidence: AUROC, ECE, Brier, AURC, selective prediction, reliability "
                     "and the confidence-based voting curves are not reported (null / left out)",
    "accuracy_se": "paper: std/sqrt(N) over (prompt, sample) combinations; se_by_prompt: over prompt means",
    "calibration_se": "bootstrap over (confidence, correct) pairs, std of the resampled metric",
    "auroc_one_class": "0.5 when all samples are correct or all are wrong",
    "empty": "accuracy 0.0 on no samples (and no confidence: no calibration figure)",
    "ece_bins": "[0,.1), ..., [.9,1.0), [1.0,1.1) (paper, 11 bins)",
    "voting": "answers grouped by the task's verifier equivalence; missing answers and abstentions never vote",
    "ties": "majority: first group to appear; weighted: more votes, then first; max-confidence: first",
    "tts_se": "std over prompts / sqrt(P) of each prompt's mean over k-subsets",
    "selective_threshold": "lowest threshold reaching the target on a validation half of the prompts",
}


def score_rows(rows: Sequence[dict], task, progress: bool = False) -> list[dict]:
    """Each row with the task's score added: answer, confidence, confidence_source, correct,
    malformed, abstained. The confidence is the row's own ``confidence`` when it gives one (a
    probability in [0, 1]; anything else is a ValueError naming the row), else the one stated in
    the text; confidence_source says which ("given", "stated" or None)."""
    scored = []
    with Progress(transient=True, disable=not progress) as bar:
        job = bar.add_task("scoring", total=len(rows))
        chunk = 512  # the verifier runs once per chunk (task.score_many), the bar moves between chunks
        scores = []
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            scores += task.score_many([r["completion"] for r in part], [r["gold"] for r in part])
            bar.advance(job, len(part))
        for i, (row, score) in enumerate(zip(rows, scores)):
            try:
                given = confidence_from(row.get("confidence"))
            except ValueError as err:
                raise ValueError(f"row {i} (prompt_id {row.get('prompt_id')!r}): {err}") from None
            confidence = given if given is not None else score.confidence
            scored.append({
                **row,
                "answer": score.answer,
                "confidence": confidence,
                "confidence_source": "given" if given is not None else ("stated" if confidence is not None else None),
                "correct": bool(score.correct),
                "malformed": bool(score.malformed),
                "abstained": bool(score.abstained),
            })
    return scored


def _confidence(row: dict) -> float:
    q = row["confidence"]
    return 0.0 if q is None else float(q)


def _value(value: float, se: float, **extra) -> dict:
    return {"value": float(value), "se": float(se), **extra}


def compute_metrics(
    scored: Sequence[dict],
    equivalent=None,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    target_accuracy: float = 0.9,
    max_subsets: int = 64,
    bins: Sequence[float] | None = None,
) -> dict:
    """Every reported figure from scored rows (``score_rows``); JSON-ready, NaN-free.

    ``equivalent(a, b)`` groups answers for voting (the task's verifier, as evaluate_generations
    passes it; None: string equality).
    Returns {"counts", "metrics", "tts", "selective", "reliability", "not_reported", "rules"}; each
    figure is {"value", "se"}, or None when not reported (the rules are in this module's docstring).
    """
    q = np.array([_confidence(r) for r in scored], dtype=float)  # [N]
    c = np.array([r["correct"] for r in scored], dtype=float)  # [N]
    q, c = M.as_pairs(q, c)
    malformed = np.array([r["malformed"] for r in scored], dtype=float)
    missing = np.array([r["confidence"] is None for r in scored], dtype=float)
    abstained = np.array([r["abstained"] for r in scored], dtype=float)
    prompts = group_by_prompt(scored)
    prompt_acc = [np.mean([r["correct"] for r in rs]) for rs in prompts.values()]
    sizes = [len(rs) for rs in prompts.values()]
    calibrated = bool(missing.size) and not missing.all()  # some completion has a confidence

    boot = {"auroc": M.auroc, "ece": lambda a, b: M.ece(a, b, bins), "brier": M.brier,
            "aurc": selective.aurc}
    for x in COVERAGES:
        boot[f"accuracy@{x}"] = lambda a, b, x=x: selective.accuracy_at_coverage(a, b, x)
    se = M.bootstrap_se(boot, q, c, bootstrap if calibrated else 0, seed)

    figures = {
        "accuracy": _value(M.accuracy(c), M.mean_se(c), se_by_prompt=M.mean_se(prompt_acc)),
        "auroc": _value(M.auroc(q, c), se["auroc"]),
        "ece": _value(M.ece(q, c, bins), se["ece"]),
        "brier": _value(M.brier(q, c), se["brier"]),
        "aurc": _value(selective.aurc(q, c), se["aurc"]),
        "malformed_rate": _value(malformed.mean() if malformed.size else 0.0, M.mean_se(malformed)),
        "confidence_missing_rate": _value(missing.mean() if missing.size else 0.0, M.mean_se(missing)),
        "abstain_rate": _value(abstained.mean() if abstained.size else 0.0, M.mean_se(abstained)),
    }
    at_coverage = {
        str(x): _value(selective.accuracy_at_coverage(q, c, x), se[f"accuracy@{x}"]) for x in COVERAGES
    }

    per_prompt = []
    for rs in prompts.values():
        correct = [r["correct"] for r in rs]
        per_prompt.append({
            "groups": tts.group_answers([None if r["abstained"] else r["answer"] for r in rs], equivalent or str.__eq__,
                                        correct),
            "confidence": [_confidence(r) for r in rs],
            "correct": correct,
        })
    curves = tts.tts_curves(per_prompt, max_subsets=max_subsets, seed=seed)
    not_reported = None
    if not calibrated:
        for name in CALIBRATION:
            figures[name] = None
        for name in CONFIDENCE_STRATEGIES:
            curves.pop(name, None)
        not_reported = {"figures": [*CALIBRATION, "selective", "reliability", *(f"tts.{s}" for s in CONFIDENCE_STRATEGIES)],
                        "reason": NO_CONFIDENCE}

    return {
        "counts": {
            "prompts": len(prompts),
            "completions": len(scored),
            "samples_per_prompt": {"min": min(sizes, default=0), "max": max(sizes, default=0)},
            "malformed": int(malformed.sum()),
            "confidence_missing": int(missing.sum()),
            "confidence_given": sum(r.get("confidence_source") == "given" for r in scored),
            "abstained": int(abstained.sum()),
        },
        "metrics": figures,
        "tts": curves,
        "selective": {
            "accuracy_at_coverage": at_coverage,
            "threshold": _threshold(prompts, target_accuracy, seed),
        } if calibrated else None,
        "reliability": {k: v.tolist() for k, v in M.reliability(q, c, bins).items()} if calibrated else None,
        "not_reported": not_reported,
        "rules": RULES,
    }


def warnings_for(result: dict, scored: Sequence[dict] = (), task=None) -> list[str]:
    """What a reader must know before reading the figures: most completions malformed (with the
    task's format, and a hint when they hold \\boxed{} answers that another task would read), or
    no confidence at all (calibration not reported). One line each."""
    counts, out = result["counts"], []
    n, bad = counts["completions"], counts["malformed"]
    if n and bad * 2 > n:
        name = getattr(task, "name", result.get("task", "?"))
        hint = getattr(task, "format_hint", None)
        line = f"{bad} of {n} completions ({bad / n:.0%}) are malformed for task {name!r}"
        line += f" (its format: {hint})" if hint else ""
        boxed = sum(bool(r["malformed"]) and "\\boxed" in str(r.get("completion", "")) for r in scored)
        if boxed * 2 > bad and getattr(getattr(task, "config", None), "solution_format", "tags") == "tags":
            line += f"; {boxed} of them hold a \\boxed{{}} answer: --task boxed scores those"
        answered = sum(bool(r["malformed"]) and r.get("answer") is not None for r in scored)
        if answered:  # malformed="partial": the answers of their complete blocks are still scored
            line += (f"; accuracy scores the answer of the {answered} whose solution block is complete and counts "
                     f"the other {bad - answered} as wrong")
        else:
            line += "; accuracy counts them as wrong"
        out.append(line + ".")
    if result.get("not_reported"):
        name = getattr(task, "name", result.get("task", "?"))
        why = (f"no completion states a parseable confidence for task {name!r}"
               if getattr(task, "states_confidence", True) else f"task {name!r} states no confidence")
        out.append(f"{why} and no generations row gives one: calibration (AUROC, ECE, Brier), selective prediction "
                   "and confidence-based voting are not reported; a 'confidence' key per generations row reports them.")
    return out


def _threshold(prompts: dict[str, list[dict]], target: float, seed: int) -> dict:
    """Choose the threshold on a validation half of the prompts and apply it to the other half."""
    ids = list(prompts)
    order = np.random.default_rng(seed).permutation(len(ids))
    half = math.ceil(len(ids) / 2)
    split = {"validation": order[:half], "test": order[half:]}
    pairs = {}
    for name, chosen in split.items():
        rs = [r for i in chosen for r in prompts[ids[i]]]
        pairs[name] = (np.array([_confidence(r) for r in rs], dtype=float),
                       np.array([r["correct"] for r in rs], dtype=float))
    t = selective.threshold_for_accuracy(*pairs["validation"], target).threshold
    out = {"target": target, "threshold": t}
    for name, (q, c) in pairs.items():
        accepted = np.zeros(q.size, dtype=bool) if t is None else q >= t  # [N]
        out[name] = {
            "prompts": len(split[name]),
            "coverage": _value(accepted.mean() if q.size else 0.0, M.mean_se(accepted)),
            "accuracy": _value(c[accepted].mean(), M.mean_se(c[accepted])) if accepted.any() else None,
        }
    return out


def _pm(figure: dict | None, digits: int = 3) -> str:
    if figure is None:
        return "n/a"
    return f"{figure['value']:.{digits}f} ± {figure['se']:.{digits}f}"


def render_markdown(result: dict, title: str = "Evaluation report") -> str:
    """report.md: warnings, headline table, test-time scaling, selective prediction, figures, rules."""
    m, counts, sel = result["metrics"], result["counts"], result["selective"]
    lines = [f"# {title}", ""]
    if "task" in result:
        lines += [f"Task: `{result['task']}`", ""]
    for warning in result.get("warnings", []):
        lines += [f"**Warning:** {warning}", ""]
    spp = counts["samples_per_prompt"]
    per_prompt = str(spp["min"]) if spp["min"] == spp["max"] else f"{spp['min']}–{spp['max']}"
    calibrated = not result.get("not_reported")
    given = counts.get("confidence_given", 0)
    lines += [
        f"{counts['prompts']} prompts, {counts['completions']} completions "
        f"({per_prompt} per prompt); {counts['malformed']} malformed, "
        + (f"{given} with a confidence given by the generations file, " if given else "")
        + f"{counts['confidence_missing']} without a confidence"
        + (" (counted as 0.0)" if calibrated else "")
        + (f", {counts['abstained']} abstained (counted as wrong)." if counts.get("abstained") else "."),
        "",
        "| Accuracy (Pass@1) | AUROC | ECE | Brier | AURC |",
        "|---|---|---|---|---|",
        "| " + " | ".join(_pm(m[k]) if m[k] is not None else "not reported" for k in ("accuracy", *CALIBRATION)) + " |",
        "",
        f"Values ± standard error (accuracy: over (prompt, sample) combinations, "
        f"{m['accuracy']['se_by_prompt']:.3f} over prompts; the others: bootstrap).",
        "",
    ]
    if not calibrated:
        lines += [f"Not reported: {result['not_reported']['reason']}.", ""]
    curves = result["tts"]
    shown = [s for s in tts.STRATEGIES if s in curves]
    lines += [
        "## Test-time scaling",
        "",
        "| k | " + " | ".join(plots.LABELS[s] for s in shown) + " |",
        "|---|" + "---|" * len(shown),
    ]
    for j, k in enumerate(curves["k"]):
        cells = [f"{curves[s]['value'][j]:.3f} ± {curves[s]['se'][j]:.3f}" for s in shown]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "![test-time scaling](tts.png)", "", "## Selective prediction", ""]
    if sel is None:
        lines += ["Not reported: no confidence.", ""]
    else:
        th = sel["threshold"]
        chosen = "none reaches it (abstain on all)" if th["threshold"] is None else format(th["threshold"], ".4g")
        lines += [
            "| coverage | accuracy |",
            "|---|---|",
            *(f"| {x} | {_pm(v)} |" for x, v in sel["accuracy_at_coverage"].items()),
            "",
            f"Threshold for accuracy ≥ {th['target']} chosen on {th['validation']['prompts']} validation "
            f"prompts: {chosen}; "
            f"on {th['test']['prompts']} held-out prompts it covers {_pm(th['test']['coverage'])} "
            f"with accuracy {_pm(th['test']['accuracy'])}.",
            "",
            "![risk-coverage](risk_coverage.png)",
            "",
        ]
    lines += ["## Calibration", ""]
    lines += ["![reliability diagram](reliability.png)" if calibrated else "Not reported: no confidence.", ""]
    lines += ["## Rules", "", *(f"- {k}: {v}" for k, v in result["rules"].items()), ""]
    return "\n".join(lines)


def write_report(
    result: dict, scored: Sequence[dict], out_dir: str | os.PathLike, title: str = "Evaluation report"
) -> Path:
    """Write the report folder (each file atomically; metrics.json last): reliability.png,
    tts.png, risk_coverage.png, report.md, scores.jsonl (per completion: prompt_id, answer,
    confidence, confidence_source, correct, malformed, abstained) and metrics.json. Without any
    confidence (``result["not_reported"]``) there is no reliability.png nor risk_coverage.png (one
    left by an earlier report in the folder is removed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if result.get("reliability") is not None:
        q = np.array([_confidence(r) for r in scored], dtype=float)
        c = np.array([r["correct"] for r in scored], dtype=float)
        rel = {k: np.asarray(v, dtype=float) for k, v in result["reliability"].items()}
        plots.reliability_diagram(rel, out / "reliability.png")
        plots.risk_coverage_plot(selective.risk_coverage(q, c), out / "risk_coverage.png",
                                 result["metrics"]["aurc"]["value"])
    else:
        for stale in ("reliability.png", "risk_coverage.png"):
            (out / stale).unlink(missing_ok=True)
    plots.tts_plot(result["tts"], out / "tts.png")
    atomic_write_text(out / "report.md", render_markdown(result, title))
    fields = ("prompt_id", "answer", "confidence", "confidence_source", "correct", "malformed", "abstained")
    atomic_write_text(out / "scores.jsonl",
                      "".join(json.dumps({k: r[k] for k in fields}, ensure_ascii=False) + "\n" for r in scored))
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, allow_nan=False) + "\n")
    return out


def evaluate_generations(
    rows: Sequence[dict],
    task,
    out_dir: str | os.PathLike | None = None,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    target_accuracy: float = 0.9,
    max_subsets: int = 64,
    progress: bool = False,
    extra: dict | None = None,
) -> dict:
    """Score ``rows`` (prompt_id, completion, gold) with ``task``, compute every figure, and write
    the report folder when ``out_dir`` is given. ``extra`` (e.g. the config) is merged into the
    result. Returns the dict written to metrics.json, with ``warnings`` (``warnings_for``)."""
    scored = score_rows(rows, task, progress=progress)
    result = {"task": getattr(task, "name", str(task)), **(extra or {})}
    result.update(compute_metrics(scored, getattr(task, "equivalent", None), bootstrap=bootstrap,
                                  seed=seed, target_accuracy=target_accuracy, max_subsets=max_subsets))
    result["warnings"] = warnings_for(result, scored, task)
    if out_dir is not None:
        write_report(result, scored, out_dir)
    return result
