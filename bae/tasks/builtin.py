"""The built-in tasks and their prompts (our own words describing the paper's formats), by name."""

from __future__ import annotations

from typing import Callable

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

SOLUTION = BlockSpec(name="solution", fields=("reasoning", "answer"), reward="correct")


def _self_confidence(confidence_reward: str = "brier", verifier: str = "math", malformed: str = "partial",
                     name: str = "self_confidence", system_prompt: str = SELF_CONFIDENCE_PROMPT,
                     abstain: str | None = None) -> TaskConfig:
    return TaskConfig(
        name=name,
        blocks=(SOLUTION, BlockSpec(name="confidence", fields=("analysis", "confidence"), reward=confidence_reward)),
        outcomes=("correct",),
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


def _arithmetic(confidence_reward: str = "brier", malformed: str = "partial",
                system_prompt: str = ARITHMETIC_PROMPT, abstain: str | None = None) -> TaskConfig:
    return _self_confidence(confidence_reward, "exact", malformed, "arithmetic", system_prompt, abstain)


def _arithmetic_two_attempt(malformed: str = "partial", system_prompt: str = ARITHMETIC_TWO_ATTEMPT_PROMPT) -> TaskConfig:
    return _two_attempt("exact", malformed, "arithmetic_two_attempt", system_prompt)


BUILTIN: dict[str, Callable[..., TaskConfig]] = {
    "self_confidence": _self_confidence,
    "two_attempt": _two_attempt,
    "arithmetic": _arithmetic,
    "arithmetic_two_attempt": _arithmetic_two_attempt,
}
"""Builders of the built-in tasks; their keyword options (confidence_reward, malformed,
system_prompt: "" for none, abstain for the self-confidence formats, ...) are what
`get(name, **options)` accepts."""


def get(name: str, **options) -> Task:
    """A built-in task by name; options (e.g. confidence_reward="bce", malformed="all_worst") are
    passed to its builder. Raises ValueError naming the choices for an unknown name or option."""
    if name not in BUILTIN:
        raise ValueError(f"unknown task {name!r}; built in: {sorted(BUILTIN)}")
    try:
        return Task(BUILTIN[name](**options))
    except TypeError as err:
        raise ValueError(f"task {name!r}: {err}") from None


def from_config(config: dict | TaskConfig) -> Task:
    """A K-block task from a config mapping (validated; errors name the offending key)."""
    return Task(config if isinstance(config, TaskConfig) else TaskConfig.model_validate(config))
