"""Typed configuration of `bae train`, validated from YAML before any compute starts.

An unknown key or a bad value raises ConfigError naming the key (e.g. `train.group_size`), so a typo
never silently falls back to a default. Defaults are the paper's Table 4 (bae.paper.PAPER) where the
paper sets a value; the embedded demo overrides them for CPU (configs/demo.yaml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bae.advantages import BASELINES
from bae.objective import METHODS
from bae.paper import PAPER


class ConfigError(ValueError):
    """A configuration problem, with the dotted key it concerns in the message."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSection(Strict):
    name: str = "arithmetic"
    """A built-in task (bae.tasks.get): arithmetic, self_confidence, two_attempt, arithmetic_two_attempt."""
    options: dict[str, Any] = {}
    """Passed to the task builder, e.g. {confidence_reward: bce} or {malformed: all_worst}."""

    @model_validator(mode="after")
    def _known_task(self):
        from bae import tasks

        tasks.get(self.name, **self.options)  # raises ValueError naming the choices
        return self


class DataSection(Strict):
    source: str = "arithmetic"
    """"arithmetic" (the built-in generator), a local JSON Lines file with problem and answer
    columns, or "hf:<dataset id>" (a Hugging Face dataset, downloaded only when asked for)."""
    split: str = "train"
    """Split of a Hugging Face dataset."""
    problem_key: str = "problem"
    answer_key: str = "answer"
    limit: int | None = Field(None, ge=1)
    """Use only the first `limit` prompts."""
    size: int = Field(2000, ge=1)
    """Prompts drawn from the built-in generator."""
    levels: tuple[int, ...] = (1, 2, 3)
    """Difficulty levels of the built-in generator."""
    eval_size: int = Field(100, ge=1)
    """Held-out prompts of the built-in generator for evaluation (a different seed)."""
    eval_source: str | None = None
    """The held-out set for a file or hub source: a set shipped with bae (math500, gsm8k, aime)
    or a JSON Lines file with problem and answer."""

    @field_validator("source")
    @classmethod
    def _source_form(cls, v: str) -> str:
        # the file itself is checked by TrainConfig.check_files, so recipes validate before their data exist
        if v == "arithmetic" or v.startswith("hf:") or Path(v).suffix.lower() in (".jsonl", ".ndjson", ".json", ".parquet"):
            return v
        raise ValueError(f"{v!r} is neither 'arithmetic', 'hf:<id>' nor a .jsonl/.json/.parquet file")


class EvalSection(Strict):
    every: int = Field(0, ge=0)
    """Evaluate on the held-out set every `every` steps (0: only at the end)."""
    n: int = Field(4, ge=1)
    """Samples per prompt."""
    limit: int = Field(50, ge=1)
    """Held-out prompts evaluated."""
    temperature: float = Field(1.0, ge=0)
    bootstrap: int = Field(200, ge=0)


class TrainConfig(Strict):
    """One training run: the model, the task and its data, the method, and TRL's settings."""

    model: str = "tiny"
    """A local folder, a hub id, or "tiny" (the embedded offline policy, warm-started first)."""
    task: TaskSection = TaskSection()
    data: DataSection = DataSection()
    method: str = "bae"
    """bae (blockwise advantages), rlvr (scalar correctness), rlcr (scalar c - (q - c)^2) or gdpo
    (scalar: each block's reward normalised in its group, summed, normalised over the batch)."""
    baseline: str = "ocb"
    """Baseline of blocks k >= 2 for method bae (bae.advantages.BASELINES)."""
    baseline_options: dict[str, Any] = {}
    """Options of the baseline, e.g. {shrink: 2.0} for ocb_shrink."""
    scale: Literal["none", "group", "batch"] = "none"
    """Advantage scaling; the paper: none (centred, not divided). gdpo scales itself: none only."""
    group_size: int = Field(PAPER.group_size, ge=2)
    """Completions per prompt (paper: 32)."""
    batch_size: int = Field(PAPER.batch_size, ge=2)
    """Completions per optimisation step (paper: 2048); a multiple of group_size."""
    steps: int = Field(1024, ge=1)
    learning_rate: float = Field(PAPER.learning_rate, gt=0)
    """Paper: 1e-6 with 64 warm-up steps."""
    warmup_steps: int = Field(PAPER.warmup_steps, ge=0)
    temperature: float = Field(PAPER.temperature, gt=0)
    max_completion_length: int = Field(PAPER.max_completion_length, ge=1)
    loss_type: str = "grpo"
    """TRL loss type (bae.engines.trl.LOSS_TYPES); under method bae every one is reweighted to the
    paper's per-block token mean."""
    seed: int = 0
    output_dir: str = "runs/train"
    checkpoint_interval: int = Field(100, ge=1)
    """Save a resumable checkpoint every this many steps."""
    eval: EvalSection = EvalSection()
    trl: dict[str, Any] = {}
    """Any other GRPOConfig field, passed through (checked against GRPOConfig's fields)."""

    @field_validator("method", "baseline")
    @classmethod
    def _known_name(cls, v: str, info) -> str:
        choices = {"method": METHODS, "baseline": BASELINES}[info.field_name]
        if v not in choices:
            raise ValueError(f"unknown {info.field_name} {v!r}; choose one of {sorted(choices)}")
        return v

    @field_validator("loss_type")
    @classmethod
    def _known_loss_type(cls, v: str) -> str:
        from bae.engines.trl import LOSS_TYPES

        if v not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {v!r}; choose one of {list(LOSS_TYPES)}")
        return v

    @field_validator("trl")
    @classmethod
    def _known_trl_fields(cls, v: dict) -> dict:
        import dataclasses

        from trl import GRPOConfig

        known = {f.name for f in dataclasses.fields(GRPOConfig)}
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(f"not GRPOConfig fields: {unknown}")
        return v

    def check_files(self) -> None:
        """The data files exist (checked by `bae train` right after loading, before any compute)."""
        from bae.evaluation.sets import EVAL_SETS

        for key, path in (("data.source", self.data.source), ("data.eval_source", self.data.eval_source)):
            if key == "data.eval_source" and path in EVAL_SETS:
                continue
            if path and path != "arithmetic" and not path.startswith("hf:") and not Path(path).is_file():
                raise ConfigError(f"{key}: no such file {path!r} (build it with `bae prepare-data`)")

    @model_validator(mode="after")
    def _batch_is_whole_groups(self):
        if self.batch_size % self.group_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of group_size ({self.group_size})")
        return self

    @model_validator(mode="after")
    def _gdpo_scales_itself(self):
        if self.method == "gdpo" and self.scale != "none":
            raise ValueError(f"scale {self.scale!r}: method gdpo normalises each reward in its group and the sum "
                             "over the batch itself; use scale: none")
        return self


def _key(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse(raw: dict, where: str = "config") -> TrainConfig:
    """Validate a mapping into a TrainConfig; ConfigError names every offending key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(raw).__name__}")
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            message = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {_key(e['loc'])}: {message}")
        raise ConfigError("\n".join(problems)) from None


def load(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """Read a YAML config file (plus dotted-free top-level overrides) and validate it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if isinstance(raw, dict) and overrides:
        raw = {**raw, **overrides}
    return parse(raw, str(path))
