"""The config schema of a task (validated; errors name the offending key)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bae.tasks.registry import BLOCK_REWARDS, OUTCOMES

MALFORMED_POLICIES = ("partial", "all_worst", "carry")
SOLUTION_FORMATS = ("tags", "boxed")


class BlockSpec(BaseModel):
    """One block: its name, its tagged fields in order (none for the untagged first block of a
    task with solution_format "boxed"), and the name of its reward (BLOCK_REWARDS)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    fields: tuple[str, ...] = ()
    reward: str

    @field_validator("fields")
    @classmethod
    def _tag_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for tag in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", tag):
                raise ValueError(f"{tag!r} is not a valid tag name (letters, digits, _ and -, not first a digit)")
        if len(set(v)) != len(v):
            raise ValueError(f"a block's fields must be distinct, got {list(v)}")
        return v

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

    solution_format: "tags" (every block is tagged fields, e.g. <reasoning>..</reasoning>
    <answer>..</answer>) or "boxed": the first block is free text, without tags, whose answer is its
    last \\boxed{...} (the format of most math RL outputs); it runs up to the first tag of the
    second block (or to the end of the text for a one-block task), and it is malformed when it
    holds no \\boxed{}. The first block then has no fields; later blocks are tagged as usual.

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
    malformed: Literal["partial", "all_worst", "carry"] = "partial"
    abstain: str | None = None
    solution_format: Literal["tags", "boxed"] = "tags"

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

    @model_validator(mode="after")
    def _fields_fit_the_format(self):
        for k, block in enumerate(self.blocks):
            untagged = k == 0 and self.solution_format == "boxed"
            if untagged and block.fields:
                raise ValueError(f"blocks.0.fields: the first block of a task with solution_format boxed is untagged "
                                 f"text (its answer is the last \\boxed{{}}): give it no fields, got {list(block.fields)}")
            if not untagged and not block.fields:
                raise ValueError(f"blocks.{k}.fields: block {block.name!r} needs at least one tagged field "
                                 "(only the first block of a task with solution_format boxed has none)")
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"blocks: block names must be unique, got {names}")
        return self

