"""A task: a prompt format, a block schema, one reward per block and an outcome per later block,
and the Score of one completion (see bae.tasks for the malformed policy)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from bae.blocks import BlockSchema, Split
from bae.rewards import VERIFIERS, parse_confidence
from bae.tasks.answer_class import GROUP_OUTCOMES
from bae.tasks.registry import BLOCK_REWARDS, OUTCOMES, Context
from bae.tasks.schema import TaskConfig

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
    prefix_answers: one per block, column k the answer of the latest answered block before k in
    the scored prefix (the answer that column k's outcome is about), None when there is none or the
    prefix is malformed (column 0 is None); what group-level outcomes (answer_class) are built from.
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
    prefix_answers: tuple[str | None, ...] = ()


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

    @cached_property
    def group_outcome_columns(self) -> tuple[int, ...]:
        """The outcome columns k >= 1 whose ids are assigned over a group (GROUP_OUTCOMES, e.g.
        "answer_class"), which `group_outcomes` fills in once the groups are known."""
        return tuple(k for k, name in enumerate(self.config.outcomes, start=1) if name in GROUP_OUTCOMES)

    def group_outcomes(self, outcomes: Any, answers: Any, groups: Any) -> np.ndarray:
        """outcomes [N, K] with every group-level column recomputed over its group: for
        "answer_class", the class of each row's prefix answer among its group's (answers [N, K]:
        Score.prefix_answers of each row; groups [N]), MALFORMED_OUTCOME kept where the prefix is
        malformed. Other columns are returned unchanged; a task without group outcomes returns
        outcomes as they are. The gold answer is not used."""
        out = np.array(outcomes, dtype=np.int64, copy=True)
        if not self.group_outcome_columns or not len(out):
            return out
        if answers is None:
            raise ValueError(f"task {self.name!r}: outcomes {self.config.outcomes} need each row's prefix answers")
        answers = np.asarray(answers, dtype=object).reshape(out.shape[0], -1)
        for k in self.group_outcome_columns:
            assign = GROUP_OUTCOMES[self.config.outcomes[k - 1]]
            out[:, k] = assign(list(answers[:, k]), groups, self.equivalent, self.config.abstain,
                               malformed=out[:, k] == MALFORMED_OUTCOME)
        return out

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
            prefix_answers=(None,) + tuple(
                ctx.answer(j) if k <= scored and (j := ctx.last_answered(k)) is not None else None
                for k in range(1, k_all)
            ),
        )

