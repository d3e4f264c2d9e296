"""A task: a prompt format, a block schema, one reward per block and an outcome per later block,
and the Score of one completion (see bae.tasks for the malformed policy)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import numpy as np

from bae.blocks import Block, BlockSchema, Split
from bae.rewards import parse_confidence
from bae.tasks.answer_class import GROUP_OUTCOMES
from bae.tasks.answers import last_boxed
from bae.verify import VERIFIERS
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
    complete: how many leading blocks are well-formed (the number of blocks when the text is; None
    when unknown); the block a completion stopped in is min(complete, K - 1), which is where its
    end-of-sequence token belongs (bae.blocks.token_block_ids).
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
    complete: int | None = None


class BoxedSchema:
    """The block schema of a task with solution_format "boxed": the first block is untagged text
    whose one field, "answer", is its last \\boxed{...}; it ends where the first tag of the second
    block begins (the end of the text when there is none, or no second block). The later blocks
    are a BlockSchema of tagged fields, split as usual. The first block is malformed (and with it
    the whole completion) when it holds no \\boxed{}. Same interface as BlockSchema (names,
    blocks, len, split); `blocks[0]` lists "answer" as its field, read from the box, not a tag."""

    def __init__(self, first: str, later: BlockSchema | None):
        self.first, self.later = first, later
        self.blocks = (Block(first, ("answer",)),) + (later.blocks if later else ())
        self._opening = f"<{later.blocks[0].fields[0]}>" if later else None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def split(self, text: str) -> Split:
        n, k_all = len(text), len(self.blocks)
        cut = text.find(self._opening) if self._opening else -1
        cut = n if cut == -1 else cut
        answer = last_boxed(text[:cut])
        if answer is None:  # no box: the first block is incomplete and owns the whole text
            return Split(((0, n),) + ((n, n),) * (k_all - 1), 0, (), k_all)
        fields: tuple[dict[str, str], ...] = ({"answer": answer.strip()},)
        if self.later is None:
            return Split(((0, n),), 1, fields, 1)
        rest = self.later.split(text[cut:])
        spans = ((0, cut),) + tuple((cut + a, cut + b) for a, b in rest.spans)
        return Split(spans, 1 + rest.complete, fields + rest.fields, k_all)


class Task:
    """A prompt format + block schema + one reward per block + one outcome per later block."""

    def __init__(self, config: TaskConfig):
        self.config = config
        self.name = config.name
        self.system_prompt = config.system_prompt
        if config.solution_format == "boxed":
            later = config.blocks[1:]
            self.schema = BoxedSchema(config.blocks[0].name, BlockSchema.of(**{b.name: b.fields for b in later})
                                      if later else None)
        else:
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

    @property
    def states_confidence(self) -> bool:
        """Whether a completion of this task states a confidence (a block has a confidence field)."""
        return any("confidence" in b.fields for b in self.config.blocks)

    @property
    def format_hint(self) -> str:
        """The completion format in a few characters, for messages about malformed outputs."""
        tagged = "".join(f"<{f}>..</{f}>" for b in self.config.blocks for f in b.fields)
        if self.config.solution_format == "boxed":
            return "free text with a final \\boxed{..}" + (f", then {tagged}" if tagged else "")
        return tagged

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

    def score(self, completion: str, gold: str, verify=None, split: Split | None = None) -> Score:
        """Score one completion against its gold answer; never raises on any text. `verify`
        replaces the task's verifier for this call and `split` is self.split(completion) when the
        caller has it (score_many passes both: precomputed verdicts, each text split once)."""
        split = self.split(completion) if split is None else split
        gold = gold if isinstance(gold, str) else str(gold)
        ctx = Context(split.fields, gold, verify or self.verify, self.config.abstain)
        k_all = self.num_blocks
        scored = split.complete if self.config.malformed in ("partial", "carry") or split.well_formed else 0
        rewards = []
        for k, reward in enumerate(self.rewards):
            value = reward.fn(ctx, k) if k < scored else None
            rewards.append(reward.worst if value is None else float(value))
        if scored < k_all - 1:
            rewards[scored] += self._carried(scored)
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
            complete=split.complete,
            abstained=final is not None and ctx.abstained(final),
            prefix_answers=(None,) + tuple(
                ctx.answer(j) if k <= scored and (j := ctx.last_answered(k)) is not None else None
                for k in range(1, k_all)
            ),
        )

    def _carried(self, scored: int) -> float:
        """What "carry" adds to the reward of block `scored`, the block the text broke in (0 under the
        other policies): the worst rewards of the blocks after it. Their tokens do not exist, so under
        a blockwise advantage their worst rewards would reach no token. Only a worst below 0 is
        charged, so a broken completion never earns more than a whole one."""
        if self.config.malformed != "carry":
            return 0.0
        return sum(min(reward.worst, 0.0) for reward in self.rewards[scored + 1:])

    def total_reward(self, score: Score) -> float:
        """The completion's scalar reward: the sum of its block rewards as every policy but "carry"
        gives it. Under "carry" the block the text broke in also holds the left-out blocks' worst
        rewards, which stay in their own blocks too, so the plain sum would count them twice; this is
        the total a scalar method (GRPO on one reward) should see, whatever the policy."""
        rewards = list(score.rewards)
        broken = score.complete
        if self.config.malformed == "carry" and broken is not None and broken < self.num_blocks - 1:
            # the broken block as "partial" scores it (its worst), summed in the same order: the same
            # float as partial's sum to the bit, where subtracting the carried amount could be off in
            # the last place (and DAPO's group filter compares the spread of totals with 0 exactly)
            rewards[broken] = self.rewards[broken].worst
        return float(sum(rewards))

    def score_many(self, completions: Sequence[str], golds: Sequence[str]) -> list[Score]:
        """task.score of every (completion, gold), with the verifier run once per batch: every
        answer a score may ask about (each block's answer against the gold, and against the answer
        of the block before it, for the two-attempt reward) is checked by bae.verify.verify_many,
        over a pool of worker processes for the math verifier, and the scores read the verdicts.
        The same scores as one task.score per completion."""
        from bae.verify import verify_many

        golds = [g if isinstance(g, str) else str(g) for g in golds]
        splits = [self.split(c) for c in completions]
        pairs: dict[tuple[str, str], None] = {}
        for split, gold in zip(splits, golds, strict=True):
            answers = [f.get("answer") or None for f in split.fields]
            for k, answer in enumerate(answers):
                if answer is None:
                    continue
                pairs[(answer, gold)] = None
                previous = next((a for a in reversed(answers[:k]) if a is not None), None)
                if previous is not None:
                    pairs[(answer, previous)] = None
        verdicts = dict(zip(pairs, verify_many(self.verify, list(pairs))))

        def verify(prediction: str, gold: str) -> bool:
            found = verdicts.get((prediction, gold))
            return bool(self.verify(prediction, gold)) if found is None else found

        return [self.score(c, g, verify, split) for c, g, split in zip(completions, golds, splits)]
