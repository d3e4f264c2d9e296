"""The built-in tasks and their prompts (our own words describing the paper's formats), by name."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable

from bae.tasks.schema import BlockSpec, TaskConfig
from bae.tasks.task import Task

SELF_CONFIDENCE_PROMPT = """\
Solve the problem. First think it through inside <reasoning></reasoning>, then give only the final \
answer inside <answer></answer>. Then judge how likely your answer is to be correct: explain your \
judgement inside <analysis></analysis> and give a probability between 0 and 1 inside \
<confidence></confidence>. Use exactly this order of tags and nothing outside them:
<reasoning>...</reasoning><answer>...</answer><analysis>...</analysis><confidence>...</confidence>

Example.
Question: Which planet has the most known moons?
<reasoning>Jupiter is the largest planet and has many moons, so I will say Jupiter, although recent \
counts for Saturn are very high.</reasoning><answer>Jupiter</answer><analysis>I remember that new \
moons of Saturn were announced recently and may have overtaken Jupiter, so I doubt my \
answer.</analysis><confidence>0.25</confidence>"""

TWO_ATTEMPT_PROMPT = """\
Solve the problem in two attempts. First attempt: reason inside <reasoning></reasoning> and give a \
final answer inside <answer></answer>. Then reflect on the first attempt inside a second \
<reasoning></reasoning>, and give your final answer inside a second <answer></answer>, changing it \
if you found a mistake.

Example 1.
Question: What is 17 * 3?
<reasoning>17 * 3 = 41.</reasoning><answer>41</answer><reasoning>Check: 17 * 3 = 30 + 21 = 51, so \
the first attempt was wrong.</reasoning><answer>51</answer>

Example 2.
Question: What is 9 + 6?
<reasoning>9 + 6 = 15.</reasoning><answer>15</answer><reasoning>Check: 15 - 6 = 9, correct.\
</reasoning><answer>15</answer>"""

ARITHMETIC_PROMPT = (
    "Answer with <reasoning>work</reasoning><answer>number</answer>"
    "<analysis>why you may be wrong</analysis><confidence>probability from 0 to 1</confidence>."
)

ARITHMETIC_TWO_ATTEMPT_PROMPT = (
    "Answer with <reasoning>work</reasoning><answer>number</answer>, "
    "then check it: <reasoning>check</reasoning><answer>final number</answer>."
)

BOXED_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

SOLUTION = BlockSpec(name="solution", fields=("reasoning", "answer"), reward="correct")


def _self_confidence(confidence_reward: str = "brier", verifier: str = "math", malformed: str = "partial",
                     name: str = "self_confidence", system_prompt: str = SELF_CONFIDENCE_PROMPT,
                     abstain: str | None = None, outcome: str = "correct") -> TaskConfig:
    return TaskConfig(
        name=name,
        blocks=(SOLUTION, BlockSpec(name="confidence", fields=("analysis", "confidence"), reward=confidence_reward)),
        outcomes=(outcome,),
        verifier=verifier,
        system_prompt=system_prompt,
        malformed=malformed,
        abstain=abstain,
    )


def _two_attempt(verifier: str = "math", malformed: str = "partial", name: str = "two_attempt",
                 system_prompt: str = TWO_ATTEMPT_PROMPT) -> TaskConfig:
    return TaskConfig(
        name=name,
        blocks=(
            BlockSpec(name="first", fields=("reasoning", "answer"), reward="correct"),
            BlockSpec(name="second", fields=("reasoning", "answer"), reward="retry"),
        ),
        outcomes=("correct",),
        verifier=verifier,
        system_prompt=system_prompt,
        malformed=malformed,
    )


def _boxed(verifier: str = "math", malformed: str = "partial", name: str = "boxed",
           system_prompt: str = BOXED_PROMPT, abstain: str | None = None) -> TaskConfig:
    """One solution block, the whole completion, without tags: its answer is the last \\boxed{}
    (malformed: no \\boxed{} at all), verified with math-verify. The format of most math RL
    outputs; it states no confidence (give one per generation row to `bae eval`)."""
    return TaskConfig(name=name, blocks=(BlockSpec(name="solution", reward="correct"),), outcomes=(),
                      verifier=verifier, system_prompt=system_prompt, malformed=malformed, abstain=abstain,
                      solution_format="boxed")


def _arithmetic(confidence_reward: str = "brier", malformed: str = "partial",
                system_prompt: str = ARITHMETIC_PROMPT, abstain: str | None = None,
                outcome: str = "correct") -> TaskConfig:
    return _self_confidence(confidence_reward, "exact", malformed, "arithmetic", system_prompt, abstain, outcome)


def _arithmetic_two_attempt(malformed: str = "partial", system_prompt: str = ARITHMETIC_TWO_ATTEMPT_PROMPT) -> TaskConfig:
    return _two_attempt("exact", malformed, "arithmetic_two_attempt", system_prompt)


BUILTIN: dict[str, Callable[..., TaskConfig]] = {
    "self_confidence": _self_confidence,
    "two_attempt": _two_attempt,
    "boxed": _boxed,
    "arithmetic": _arithmetic,
    "arithmetic_two_attempt": _arithmetic_two_attempt,
}
"""Builders of the built-in tasks; their keyword options (confidence_reward, malformed,
system_prompt: "" for none, abstain for the self-confidence and boxed formats, outcome ("correct",
or "answer_class": strata by answer equivalence class, no gold needed) for the self-confidence
formats, ...) are what
`get(name, **options)` accepts."""


def get(name: str, **options) -> Task:
    """A built-in task by name; options (e.g. confidence_reward="bce", malformed="all_worst") are
    passed to its builder. Raises ValueError naming the choices for an unknown name or option."""
    if name not in BUILTIN:
        raise ValueError(f"unknown task {name!r}; built in: {sorted(BUILTIN)}")
    accepted = sorted(inspect.signature(BUILTIN[name]).parameters)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"task {name!r}: unknown option(s) {unknown}; its options: {accepted}")
    return Task(BUILTIN[name](**options))


def from_config(config: dict | TaskConfig) -> Task:
    """A K-block task from a config mapping (validated; a ValueError names every offending key
    on one line: "blocks.1.reward: unknown block reward 'x'; colour: unknown key")."""
    from pydantic import ValidationError

    if isinstance(config, TaskConfig):
        return Task(config)
    if not isinstance(config, dict):
        raise ValueError(f"a task config is a mapping (name, blocks, outcomes, ...), got {type(config).__name__}")
    try:
        return Task(TaskConfig.model_validate(config))
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(part) for part in e["loc"])
            message = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
            problems.append(f"{key}: {message}" if key else message)
        raise ValueError("; ".join(problems)) from None


RECORD = "bae_task.json"
"""The file in a model folder bae wrote (a warm start, a `bae train` run's final/) that holds the
task it was trained on: the full TaskConfig, prompt format (system prompt) included."""


def save_record(task: Task, folder: str | Path) -> Path:
    """Write `task`'s config into folder/bae_task.json (atomically)."""
    from bae.io import atomic_write_text

    path = Path(folder) / RECORD
    atomic_write_text(path, task.config.model_dump_json(indent=1) + "\n")
    return path


def load_record(folder: str | Path) -> Task | None:
    """The task recorded in a model folder (None when the folder has no record, e.g. a hub id)."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    try:
        return from_config(json.loads(path.read_text()))
    except ValueError as err:  # invalid JSON or a config the schema rejects
        raise ValueError(f"{path}: not a task record bae can read ({err})") from None


def load(spec: str | dict | Task, **options: Any) -> Task:
    """A task from what a user names: a Task; a built-in name (with `options`); a mapping in the
    TaskConfig schema (name, blocks, outcomes, verifier, system_prompt, malformed, abstain); or a
    YAML / JSON file holding such a mapping. For a task defined by a mapping or a file, `options`
    override its top-level keys (e.g. system_prompt). Errors name the offending key or file."""
    if isinstance(spec, Task):
        unknown = sorted(set(options) - set(TaskConfig.model_fields))
        if unknown:
            raise ValueError(f"options {unknown} do not apply to the defined task {spec.name!r} (it takes "
                             f"{sorted(TaskConfig.model_fields)}); name a built-in task to use its builder's options")
        return from_config({**spec.config.model_dump(), **options}) if options else spec
    if isinstance(spec, dict):
        return from_config({**spec, **options})
    if isinstance(spec, str) and spec.lower().endswith((".yaml", ".yml", ".json")):
        import yaml

        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"task file {spec!r}: no such file")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"task file {spec}: not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"task file {spec}: expected a mapping (name, blocks, outcomes, ...), got {type(raw).__name__}")
        try:
            return from_config({**raw, **options})
        except ValueError as err:
            raise ValueError(f"task file {spec}: {err}") from None
    return get(spec, **options)
