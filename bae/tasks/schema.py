"""The config schema of a task (validated; errors name the offending key)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bae.tasks.registry import BLOCK_REWARDS, OUTCOMES

MALFORMED_POLICIES = ("partial", "all_worst")


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

