"""Evaluation: sample n completions per prompt (or read any system's generations), score them with
a task, and report accuracy, calibration (AUROC, ECE, Brier), test-time scaling and selective
prediction with standard errors, as a report folder (metrics.json, report.md, PNGs).

``run_eval(EvalConfig(...))`` is what ``bae eval`` runs; ``evaluate_generations(rows, task,
out_dir)`` is the same path for callers that already hold completions (``bae demo``, the
training loop's periodic evaluation).

Any system's outputs: a generations file (bae.evaluation.generations) is scored by any task, e.g.
``boxed`` for plain ``\\boxed{}`` answers; a confidence from outside the text comes in each row's
``confidence`` key (``confidence_transform`` maps raw scores such as a reward model's). Without
any confidence the calibration figures are not reported, and ``warnings`` says so (and when most
completions are malformed for the task).

Departures from the paper's evaluation protocol: the default ``max_new_tokens`` is 1024, not
32k (the paper's value needs a GPU and vLLM); selective prediction is our addition; a missing
confidence counts as 0.0 (the paper does not say).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from bae.evaluation.generations import (CONFIDENCE_TRANSFORMS, InputError, confidence_from, read_eval_set,
                                       read_generations, write_generations)
from bae.evaluation.report import compute_metrics, evaluate_generations, score_rows, warnings_for, write_report
from bae.evaluation.sampling import BACKENDS

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class EvalConfig:
    """What ``bae eval`` evaluates and how. Give either ``generations``, or ``model`` and ``data``."""

    task: str | None = None
    """The task that builds the prompts and scores each completion: a built-in name, or a YAML /
    JSON file defining one (bae.tasks.load). None: the task recorded in the model folder (a `bae
    train` run's final/ or a warm start records its task and prompt format), else self_confidence."""
    task_options: dict = dataclasses.field(default_factory=dict)
    """Options of the task (e.g. {"confidence_reward": "bce", "system_prompt": ""}); on top of the
    recorded task's settings when ``task`` is None."""
    model: str | None = None
    """Model to sample: a local folder or a hub id (the name "tiny" is resolved by bae.embedded,
    as `bae eval` does, before this config is built). None when ``generations`` is given."""
    data: str | None = None
    """Eval set to sample on: the name of a set shipped with bae (math500, gsm8k, aime), a local
    file of prompts with problem and answer (.jsonl, .json, .parquet: read_prompts), or
    "synthetic" for the arithmetic task's generated set."""
    generations: str | None = None
    """Existing generations to score instead of sampling: JSON Lines with prompt_id, completion,
    gold (optional problem, confidence); see bae.evaluation.generations."""
    confidence_transform: str = "none"
    """How the generations rows' ``confidence`` becomes a probability: "none" (it is one),
    "sigmoid" (a raw score such as a reward model's), "percent" (0-100). Generations only."""
    n: int = 16
    """Samples per prompt (paper: 16). Sampling only, like temperature, max_new_tokens,
    batch_size and backend: a generations file brings its own samples."""
    temperature: float = 1.0
    """Sampling temperature (paper: 1.0); 0 is greedy."""
    max_new_tokens: int = 1024
    """Longest completion in tokens (paper: 32768, with vLLM on a GPU; 1024 keeps CPU runs short)."""
    limit: int | None = None
    """Evaluate only the first ``limit`` prompts (None: all)."""
    seed: int = 0
    """Seed of sampling, bootstrap, test-time-scaling subsets and the validation split."""
    out_dir: str = "runs/eval"
    """Report folder: metrics.json, report.md, PNGs, generations.jsonl, scores.jsonl."""
    bootstrap: int = 1000
    """Bootstrap resamples for the calibration metrics' standard errors (paper: 1000)."""
    batch_size: int = 16
    """Sequences per transformers ``generate`` call."""
    backend: str = "auto"
    """Sampling engine: "auto" (vLLM if installed and a GPU is present, else transformers),
    "transformers" or "vllm"."""
    target_accuracy: float = 0.9
    """Accuracy the selective-prediction threshold must reach on the validation half."""

    def __post_init__(self):
        def bad(field: str, why: str):
            raise ValueError(f"EvalConfig.{field}={getattr(self, field)!r}: {why}")

        for field in ("n", "max_new_tokens", "seed", "bootstrap", "batch_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool):
                bad(field, "must be an integer")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            bad("limit", "must be a positive integer or None (all prompts)")
        if self.n < 1:
            bad("n", "must be at least 1 sample per prompt")
        if self.max_new_tokens < 1:
            bad("max_new_tokens", "must be at least 1")
        if self.bootstrap < 0:
            bad("bootstrap", "must be 0 (no standard errors) or more resamples (paper: 1000)")
        if self.batch_size < 1:
            bad("batch_size", "must be at least 1")
        if not isinstance(self.temperature, (int, float)) or not self.temperature >= 0:
            bad("temperature", "must be a number >= 0 (0 is greedy)")
        if not isinstance(self.target_accuracy, (int, float)) or not 0 < self.target_accuracy <= 1:
            bad("target_accuracy", "must lie in (0, 1]")
        if self.backend not in BACKENDS:
            bad("backend", f"must be one of {', '.join(BACKENDS)}")
        if self.confidence_transform not in CONFIDENCE_TRANSFORMS:
            bad("confidence_transform", f"must be one of {', '.join(CONFIDENCE_TRANSFORMS)}")
        if self.confidence_transform != "none" and self.generations is None:
            bad("confidence_transform", "maps the 'confidence' of a generations file's rows: give generations")
        if self.generations is not None:
            if self.model is not None or self.data is not None:
                bad("generations", "give either generations, or model and data, not both")
        elif self.model is None or self.data is None:
            bad("model", "give a model and data to sample (or a generations file to score)")

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in dataclasses.asdict(self).items()}


def _eval_rows(config: EvalConfig) -> list[dict]:
    if config.data == SYNTHETIC:
        from bae.tasks import arithmetic

        rows = arithmetic.generate(config.limit or 200, seed=config.seed)
        return [{"id": str(r["id"]), "problem": r["problem"], "answer": str(r["answer"])} for r in rows]
    return read_eval_set(config.data, config.limit)


def eval_task(config: EvalConfig):
    """The task of an evaluation: ``config.task`` (with its options), else the task recorded in
    the model folder (options on top), else self_confidence."""
    from bae import tasks

    if config.task is not None:
        return tasks.load(config.task, **config.task_options)
    recorded = tasks.load_record(config.model) if config.model and Path(config.model).is_dir() else None
    if recorded is not None:
        return tasks.load(recorded, **config.task_options)
    return tasks.load("self_confidence", **config.task_options)


def run_eval(config: EvalConfig) -> dict:
    """Run one evaluation and write its report folder; returns the dict written to metrics.json.

    (a) ``model`` + ``data``: sample ``n`` completions per prompt (saved as generations.jsonl in
    the report folder, so the run can be scored again); (b) ``generations``: read them (the first
    ``limit`` prompts). Then score with the task and write the report.
    """
    from bae.evaluation.sampling import sample_rows

    task = eval_task(config)
    out = Path(config.out_dir)
    if config.generations is not None:
        rows = read_generations(config.generations, config.confidence_transform)
        if config.limit is not None:
            keep = set(list(dict.fromkeys(r["prompt_id"] for r in rows))[: config.limit])
            rows = [r for r in rows if r["prompt_id"] in keep]
    else:
        eval_rows = _eval_rows(config)
        if config.model == "tiny":
            raise ValueError("model 'tiny' is the embedded policy: resolve it with bae.embedded.resolve_model first "
                             "(as `bae eval --model tiny` does)")
        rows = sample_rows(config.model, task, eval_rows, n=config.n, temperature=config.temperature,
                           max_new_tokens=config.max_new_tokens, seed=config.seed,
                           batch_size=config.batch_size, backend=config.backend)
        write_generations(rows, out / "generations.jsonl")
    return evaluate_generations(rows, task, out, bootstrap=config.bootstrap, seed=config.seed,
                                target_accuracy=config.target_accuracy, progress=True,
                                extra={"config": config.to_dict()})


__all__ = [
    "CONFIDENCE_TRANSFORMS", "EvalConfig", "InputError", "compute_metrics", "confidence_from", "evaluate_generations",
    "read_eval_set", "read_generations", "run_eval", "score_rows", "warnings_for", "write_generations", "write_report",
]
