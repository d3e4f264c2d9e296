"""Tasks: a prompt format, a block schema, one reward per block and an outcome per later block.

    task = bae.tasks.get("self_confidence")            # or "arithmetic", "two_attempt"
    score = task.score(completion_text, gold_answer)
    score.rewards, score.outcomes                      # one per block: rows of r[N, K], o[N, K]

Block rewards and outcomes are registered by name (BLOCK_REWARDS, OUTCOMES), so a K-block task can
be built from a config (`from_config`) without code. Each block reward declares its worst value.

Malformed completions (see bae.blocks): under the default policy "partial", the well-formed
leading blocks are scored as usual and every incomplete block gets its worst reward; under
"all_worst" every block gets its worst reward. A field that is present but unusable (an empty
answer, an unparseable confidence) also gets the worst reward of its block. Either way a malformed
completion never earns more, block by block, than the well-formed completion it was cut from.
The outcome of a well-formed prefix that holds no usable answer is 0 ("incorrect"); the outcome of
a prefix that is itself malformed (an earlier block incomplete) is MALFORMED_OUTCOME (-1), a stratum
of its own: its later blocks all get their worst reward, so its value differs from that of a
well-formed incorrect prefix, and mixing the two would bias OCB (paper Appendix B).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bae.blocks import BlockSchema, Split
from bae.rewards import (
    VERIFIERS,
    bce_reward,
    brier_reward,
    parse_confidence,
    two_attempt_reward,
)

MALFORMED_POLICIES = ("partial", "all_worst")
MALFORMED_OUTCOME = -1
"""Outcome of a prefix whose earlier blocks are not all well-formed (its own OCB stratum)."""


@dataclass(frozen=True)
class Score:
    """The scoring of one completion.

    rewards: one float per block (row of r[N, K]); outcomes: one int per block, column k the
    outcome of the prefix before block k (column 0 is 0); spans: the blocks' character spans, or
    None when the completion is malformed; partition: the spans used to assign tokens to blocks
    (always a partition of the text, even when malformed); answer: the final answer given (None if
    none); confidence: the stated confidence in [0, 1] (None if absent or unparseable); correct:
    whether the final answer is correct; malformed: whether the text breaks the block format.
    """

    rewards: tuple[float, ...]
    outcomes: tuple[int, ...]
    spans: tuple[tuple[int, int], ...] | None
    partition: tuple[tuple[int, int], ...]
    answer: str | None
    confidence: float | None
    correct: bool
    malformed: bool
    abstained: bool = False


@dataclass
class Context:
    """What a block reward sees: the fields of the complete blocks, the gold answer, the verifier."""

    fields: tuple[dict[str, str], ...]
    gold: str
    verify: Callable[[str, str], bool]
    abstain: str | None = None
    _correct: dict[int, bool] = field(default_factory=dict)

    def answer(self, k: int) -> str | None:
        """The answer of block k, if it has a non-empty answer field."""
        if k < len(self.fields):
            return self.fields[k].get("answer") or None
        return None

    def abstained(self, k: int) -> bool:
        """Whether block k's answer is the task's abstention answer (compared ignoring case and
        surrounding whitespace)."""
        a = self.answer(k)
        return self.abstain is not None and a is not None and a.strip().casefold() == self.abstain.casefold()

    def correct(self, k: int) -> bool:
        if k not in self._correct:
            a = self.answer(k)  # an abstention is never correct, whatever the verifier says
            self._correct[k] = a is not None and not self.abstained(k) and bool(self.verify(a, self.gold))
        return self._correct[k]

    def last_answered(self, before: int) -> int | None:
        """The latest block before `before` that gave an answer."""
        return next((j for j in range(min(before, len(self.fields)) - 1, -1, -1) if self.answer(j) is not None), None)

    def correct_before(self, k: int) -> int:
        j = self.last_answered(k)
        return int(j is not None and self.correct(j))


@dataclass(frozen=True)
class BlockReward:
    """fn(ctx, k) -> reward of block k, or None when the block cannot be scored (-> worst)."""

    fn: Callable[[Context, int], float | None]
    worst: float
    doc: str


BLOCK_REWARDS: dict[str, BlockReward] = {}
OUTCOMES: dict[str, Callable[[Context, int], int]] = {}


def register_block_reward(name: str, worst: float, doc: str = ""):
    def decorate(fn):
        BLOCK_REWARDS[name] = BlockReward(fn, worst, doc or (fn.__doc__ or "").strip())
        return fn

    return decorate


def register_outcome(name: str):
    def decorate(fn):
        OUTCOMES[name] = fn
        return fn

    return decorate


@register_block_reward("correct", worst=0.0)
def _correct(ctx: Context, k: int) -> float | None:
    """c_k = 1 if block k's answer is verified equal to the gold answer, else 0."""
    return float(ctx.correct(k)) if ctx.answer(k) is not None else None


def _confidence_reward(rule):
    def reward(ctx: Context, k: int) -> float | None:
        q = parse_confidence(ctx.fields[k].get("confidence"))
        return None if q is None else rule(q, float(ctx.correct_before(k)))

    return reward


register_block_reward("brier", worst=-1.0, doc="-(q - c)^2, c = correctness of the latest answer before the block")(
    _confidence_reward(brier_reward)
)
register_block_reward("bce", worst=bce_reward(1.0, 0.0), doc="c log q + (1-c) log(1-q), q clipped to [eps, 1-eps]")(
    _confidence_reward(bce_reward)
)


@register_block_reward("retry", worst=0.0)
def _retry(ctx: Context, k: int) -> float | None:
    """Two-attempt shaped reward: 1 if correct, 0.1 if wrong with a new answer, 0 if the same."""
    previous = ctx.answer(ctx.last_answered(k)) if ctx.last_answered(k) is not None else None
    return two_attempt_reward(ctx.correct(k), ctx.answer(k), previous, ctx.verify)


@register_outcome("correct")
def _outcome_correct(ctx: Context, k: int) -> int:
    """1 if the latest answer before block k is correct, else 0."""
    return ctx.correct_before(k)


class BlockSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    fields: tuple[str, ...] = Field(min_length=1)
    reward: str

    @field_validator("reward")
    @classmethod
    def _known_reward(cls, v: str) -> str:
        if v not in BLOCK_REWARDS:
            raise ValueError(f"unknown block reward {v!r}; registered: {sorted(BLOCK_REWARDS)}")
        return v


class TaskConfig(BaseModel):
    """A K-block task from config: blocks (name, tagged fields, reward name), the outcome name of
    each later block, the verifier ("math" or "exact"), the system prompt, the malformed policy,
    and an optional abstention answer.

    abstain: an answer that declines to solve (e.g. "unknown"). It is well-formed and never correct
    (outcome 0, the worst solution reward, and a confidence block scored against c = 0), so
    refusing with confidence 0 is a legal completion: the state a scalar reward with a log-score
    confidence term can collapse into (paper Section 5.4). Scores flag it (Score.abstained)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    blocks: tuple[BlockSpec, ...] = Field(min_length=1)
    outcomes: tuple[str, ...] = ()
    verifier: Literal["math", "exact"] = "math"
    system_prompt: str = ""
    malformed: Literal["partial", "all_worst"] = "partial"
    abstain: str | None = None

    @field_validator("abstain")
    @classmethod
    def _plain_abstain(cls, v):
        if v is not None and (v != v.strip() or not v or "<" in v or ">" in v):
            raise ValueError(f"abstain must be a non-empty answer without surrounding spaces or tags, got {v!r}")
        return v

    @field_validator("outcomes")
    @classmethod
    def _known_outcomes(cls, v):
        for name in v:
            if name not in OUTCOMES:
                raise ValueError(f"unknown outcome {name!r}; registered: {sorted(OUTCOMES)}")
        return v

    @model_validator(mode="after")
    def _one_outcome_per_later_block(self):
        if len(self.outcomes) != len(self.blocks) - 1:
            raise ValueError(f"outcomes: need one per later block ({len(self.blocks) - 1}), got {len(self.outcomes)}")
        return self


class Task:
    """A prompt format + block schema + one reward per block + one outcome per later block."""

    def __init__(self, config: TaskConfig):
        self.config = config
        self.name = config.name
        self.system_prompt = config.system_prompt
        self.schema = BlockSchema.of(**{b.name: b.fields for b in config.blocks})
        self.rewards = tuple(BLOCK_REWARDS[b.reward] for b in config.blocks)
        self.outcomes = tuple(OUTCOMES[o] for o in config.outcomes)
        self.verify = VERIFIERS[config.verifier]

    def __repr__(self) -> str:
        return f"Task({self.name!r}, blocks={self.block_names})"

    @property
    def block_names(self) -> tuple[str, ...]:
        return self.schema.names

    @property
    def num_blocks(self) -> int:
        return len(self.schema)

    @cached_property
    def worst_rewards(self) -> tuple[float, ...]:
        return tuple(r.worst for r in self.rewards)

    def format_prompt(self, problem: str) -> list[dict[str, str]]:
        """Chat messages for one problem: the task's system prompt, then the problem."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return messages + [{"role": "user", "content": problem}]

    def equivalent(self, a: str, b: str) -> bool:
        """The task's verifier equivalence of two answers (for grouping answers in majority votes)."""
        return bool(self.verify(a, b))

    def split(self, completion: str) -> Split:
        return self.schema.split(completion if isinstance(completion, str) else "")

    def score(self, completion: str, gold: str) -> Score:
        """Score one completion against its gold answer; never raises on any text."""
        split = self.split(completion)
        ctx = Context(split.fields, gold if isinstance(gold, str) else str(gold), self.verify, self.config.abstain)
        k_all = self.num_blocks
        scored = split.complete if self.config.malformed == "partial" or split.well_formed else 0
        rewards = []
        for k, reward in enumerate(self.rewards):
            value = reward.fn(ctx, k) if k < scored else None
            rewards.append(reward.worst if value is None else float(value))
        outcomes = [0] + [
            self.outcomes[k - 1](ctx, k) if k <= scored else MALFORMED_OUTCOME for k in range(1, k_all)
        ]
        final = ctx.last_answered(scored)
        confidence = next(
            (q for j in range(scored - 1, -1, -1) if (q := parse_confidence(split.fields[j].get("confidence"))) is not None),
            None,
        )
        return Score(
            rewards=tuple(rewards),
            outcomes=tuple(outcomes),
            spans=split.spans if split.well_formed else None,
            partition=split.spans,
            answer=ctx.answer(final) if final is not None else None,
            confidence=confidence,
            correct=final is not None and ctx.correct(final),
            malformed=not split.well_formed,
            abstained=final is not None and ctx.abstained(final),
        )


# ---------------------------------------------------------------------------------------------
# Built-in tasks. The prompts are our own words describing the paper's formats.

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
