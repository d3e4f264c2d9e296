"""Typed configuration of `bae train`, validated from YAML before any compute starts.

An unknown key or a bad value raises ConfigError naming the key (e.g. `train.group_size`), so a typo
never silently falls back to a default. Defaults are the paper's Table 4 (bae.paper.PAPER) where the
paper sets a value; the embedded demo overrides them for CPU (configs/demo.yaml).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bae.advantages import BASELINES
from bae.objective import METHODS, check_method_options
from bae.paper import PAPER
from bae.tasks import BlockSpec

TRL_OVERLAP = {
    "learning_rate": "learning_rate", "max_steps": "steps", "num_generations": "group_size", "loss_type": "loss_type",
    "temperature": "temperature", "warmup_steps": "warmup_steps", "max_completion_length": "max_completion_length",
    "seed": "seed", "data_seed": "seed", "output_dir": "output_dir", "save_steps": "checkpoint_interval",
    "steps_per_generation": "batch_size", "generation_batch_size": "batch_size",
}
"""GRPOConfig fields that bae sets from a validated top-level key: refused in `trl:` (the
pass-through would override the checked value silently). bae generates once per optimizer step,
so the generation batch is batch_size."""


class ConfigError(ValueError):
    """A configuration problem, with the dotted key it concerns in the message."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFINITION_KEYS = ("blocks", "outcomes", "verifier", "system_prompt", "malformed", "abstain", "solution_format")
"""The keys of a task defined in the config (bae.tasks.TaskConfig's, but its name)."""


class TaskSection(Strict):
    """The task, in one of three forms (bae.tasks.load):

    - built in: ``name`` (arithmetic, self_confidence, boxed, two_attempt, arithmetic_two_attempt)
      with its builder's ``options``;
    - a task file: ``file`` (a YAML / JSON file in the TaskConfig schema, e.g.
      configs/tasks/rlcr.yaml; a path relative to the working directory, as data.source), with
      ``options`` overriding its keys; ``task: configs/tasks/rlcr.yaml`` is short for it;
    - defined here: ``name`` plus ``blocks`` and the other TaskConfig keys (outcomes, verifier,
      system_prompt, malformed, abstain, solution_format), with ``options`` overriding them.
    Errors name the key (task.blocks.1.reward, ...)."""

    name: str = "arithmetic"
    """A built-in task's name, or the name of the task defined by `blocks`."""
    options: dict[str, Any] = {}
    """A built-in task's builder options, e.g. {confidence_reward: bce} or {malformed: all_worst};
    for a file or a defined task: values of its keys (e.g. {system_prompt: ""})."""
    file: str | None = None
    """A task file (YAML or JSON) in the TaskConfig schema."""
    blocks: tuple[BlockSpec, ...] | None = None
    """A task defined here: its blocks ({name, fields, reward} each), as in a task file."""
    outcomes: tuple[str, ...] | None = None
    verifier: Literal["math", "exact"] | None = None
    system_prompt: str | None = None
    malformed: Literal["partial", "all_worst", "carry"] | None = None
    abstain: str | None = None
    solution_format: Literal["tags", "boxed"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _file_shorthand(cls, data: Any) -> Any:
        return {"file": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _buildable(self):
        self.build()  # raises ValueError naming the key
        return self

    def build(self):
        """The bae.tasks.Task this section describes."""
        from bae import tasks

        defined = {key: getattr(self, key) for key in DEFINITION_KEYS if getattr(self, key) is not None}
        if self.file is not None:
            if defined:
                raise ValueError(f"{next(iter(defined))}: the task comes from task.file {self.file!r}; set its keys "
                                 "there, or override them in task.options")
            if not Path(self.file).is_file():
                raise ValueError(f"file: no such task file {self.file!r}")
            try:
                return tasks.load(self.file, **self.options)
            except ValueError as err:
                raise ValueError(f"file: {err}") from None
        if self.blocks is None:
            if defined:
                raise ValueError(f"{next(iter(defined))}: defines a task only together with task.blocks; for the "
                                 f"built-in task {self.name!r} give its options in task.options")
            if self.name not in tasks.BUILTIN and not self.name.lower().endswith((".yaml", ".yml", ".json")):
                raise ValueError(f"name: unknown task {self.name!r}; built in: {sorted(tasks.BUILTIN)}; or define it "
                                 "here with task.blocks (and outcomes, ...), or give a task file as task.file")
            try:
                return tasks.load(self.name, **self.options)
            except ValueError as err:
                raise ValueError(f"options: {err}") from None
        unknown = sorted(set(self.options) - set(DEFINITION_KEYS))
        if unknown:
            raise ValueError(f"options: {unknown} are not keys of a defined task (it takes {list(DEFINITION_KEYS)})")
        return tasks.from_config({"name": self.name, **defined, **self.options})  # ValueError naming the key


class DataSection(Strict):
    source: str = "arithmetic"
    """"arithmetic" (the built-in generator), a local file of prompts (.jsonl / .ndjson JSON Lines,
    .json, .parquet; bae prepare-data writes one), or "hf:<dataset id>" (a Hugging Face dataset,
    downloaded only when asked for)."""
    split: str = "train"
    """Split of a Hugging Face dataset."""
    problem_key: str = "problem"
    """Where data.source keeps the problem: a column, or a dotted path into nested values
    (prompt.0.content). Not used for the arithmetic generator, nor for data.eval_source."""
    answer_key: str = "answer"
    """Where data.source keeps the gold answer (a string or an integer), as problem_key."""
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
    or a local file of prompts with problem and answer (any format of data.source)."""

    @model_validator(mode="after")
    def _keys_need_a_file(self):
        if self.source == "arithmetic" and (self.problem_key, self.answer_key) != ("problem", "answer"):
            raise ValueError("problem_key / answer_key name the columns of a file or hub data.source; "
                             "the arithmetic generator has none")
        return self

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
    """Options of the baseline, e.g. {shrink: 2.0} for ocb_shrink (method bae only: refused with a
    scalar method, which has no baseline to take them)."""
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
        overlap = sorted(set(v) & set(TRL_OVERLAP))
        if overlap:
            raise ValueError("; ".join(f"{key} is set by the top-level key {TRL_OVERLAP[key]!r}: set that instead"
                                       for key in overlap))
        return v

    def check_files(self) -> None:
        """The model folder and the data files exist (checked by `bae train` right after loading,
        before any compute): a model that is neither "tiny", a folder holding a saved model, nor
        of the form of a hub id (namespace/name) is refused here; a hub id is looked up when loaded."""
        from bae.evaluation.sets import EVAL_SETS

        if self.model != "tiny":
            folder = Path(self.model).expanduser()
            if folder.exists():
                if not (folder / "config.json").is_file():
                    raise ConfigError(f"model: {self.model!r} is not a model folder (it holds no config.json)")
            elif not is_hub_id(self.model):
                raise ConfigError(f"model: no such model folder {self.model!r} (give a folder holding a saved model, "
                                  "a hub id such as Qwen/Qwen2.5-3B-Instruct, or tiny)")

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
    def _baseline_takes_its_options(self):
        check_method_options(self.method, self.baseline, self.baseline_options)  # as the trainer, but at load
        return self

    @model_validator(mode="after")
    def _gdpo_scales_itself(self):
        if self.method == "gdpo" and self.scale != "none":
            raise ValueError(f"scale {self.scale!r}: method gdpo normalises each reward in its group and the sum "
                             "over the batch itself; use scale: none")
        return self


def is_hub_id(name: str) -> bool:
    """Whether `name` has the form of a Hugging Face repo id ("name" or "namespace/name"; the rule
    of huggingface_hub.validate_repo_id)."""
    return (len(name) <= 96 and "--" not in name and ".." not in name and not name.endswith(".git")
            and re.fullmatch(r"(\b[\w\-.]+\b/)?\b[\w\-.]+\b", name) is not None)


def _key(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _did_you_mean(loc: tuple) -> str:
    """' (did you mean learning_rate?)' for an unknown key of a section whose keys are known, else ''."""
    import difflib

    model = TrainConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.7)
    return f" (did you mean {close[0]}?)" if close else ""


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
            key = _key(e["loc"])
            if e["type"] == "extra_forbidden":
                message += _did_you_mean(e["loc"])
            sub = re.match(r"([A-Za-z_]\w*(?:\.\w+)*): ", message) if e["loc"] == ("task",) else None
            if sub and sub.group(1).split(".")[0] in TaskSection.model_fields:  # a task key the section's check names
                key, message = f"task.{sub.group(1)}", message[sub.end():]
            problems.append(f"{where}: {key}: {message}")
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
