"""ScoredBatch: one step's scored completions, built once and read by every consumer of the step.

    batch = ScoredBatch.from_scores(scores, groups, block_ids)       # task.score of each completion
    adv = batch.advantages("bae", baseline="ocb")                    # [N, K] (bae.objective)
    tokens = spread_advantages("bae", adv, batch.block_ids, "seq-mean-token-mean")   # [N, T]
    logs = batch.metrics(adv)                                        # bae/<block>/..., bae/ece, ...

Both engines build one (TRL from its sampled ids, verl from the reward manager's per-row extra
info) and log the same metrics from it, so a figure means the same thing in either engine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from bae.advantages import strata
from bae.blocks import block_ids_from_starts, token_block_ids, token_offsets
from bae.metrics import ece
from bae.objective import method_advantages

def score_completions(task: Any, tokenizer: Any, completion_ids: Sequence[Sequence[int]], golds: Sequence[Any]
                      ) -> tuple[list[Any], list[np.ndarray]]:
    """Score sampled completions from their token ids: (one task Score each, the block id of each
    of their tokens [L_i] int64). Each completion is decoded from its own ids (bae.blocks.
    token_offsets: never a re-encoding of the text), scored by task.score, and its tokens are
    mapped to blocks by bae.blocks.token_block_ids: tokens after the last tag belong to the last
    block, and EOS to the block the text stopped in (the last block, or the first block a
    completion left out, whose worst reward it then carries). The verifier runs once for the batch
    (task.score_many: a pool of workers)."""
    decoded = [token_offsets(tokenizer, row) for row in completion_ids]
    scores = task.score_many([text for text, _ in decoded], list(golds))
    last = task.num_blocks - 1
    return scores, [token_block_ids(s.partition, offsets, None if s.complete is None else min(s.complete, last))
                    for s, (_, offsets) in zip(scores, decoded)]


def _answers(scores: Sequence[Any], k: int) -> np.ndarray:
    """[N, K] object array of the scores' prefix answers (None where a score records none)."""
    out = np.full((len(scores), k), None, dtype=object)
    for i, s in enumerate(scores):
        row = getattr(s, "prefix_answers", ())
        out[i, : len(row)] = row
    return out


FIELDS = ("rewards", "outcomes", "correct", "confidence", "malformed", "abstained")
"""The per-row arrays of a ScoredBatch (what an engine gathers across processes)."""


@dataclass(frozen=True)
class ScoredBatch:
    """Per-row figures of N scored completions of a K-block task.

    rewards [N, K] float64: reward of each block. outcomes [N, K] int64: column k is the outcome of
    the prefix before block k (column 0 is 0; -1: that prefix is malformed). groups [N]: prompt of
    each row (any comparable ids). correct, malformed, abstained [N] bool. confidence [N] float64:
    the stated confidence, NaN where none was stated (or the task has none). block_ids: [N', T]
    token block ids (-1 padding) of the rows whose tokens this process holds, or None.
    block_names: the task's block names (the metric keys).
    """

    rewards: np.ndarray
    outcomes: np.ndarray
    groups: np.ndarray
    correct: np.ndarray
    confidence: np.ndarray
    malformed: np.ndarray
    abstained: np.ndarray
    block_names: tuple[str, ...]
    block_ids: Any = None
    block_starts: Any = None
    """[N, K - 1] int: the first token of each block k >= 1 of each row (verl's layout), the other
    way to give the tokens' blocks (see token_block_ids)."""
    states_confidence: bool = True
    """Whether the task has a confidence to state (else no calibration figure is logged)."""
    answers: Any = None
    """[N, K] object: Score.prefix_answers of each row (column k: the answer the outcome of column
    k is about, None where none), or None; what group-level outcomes (answer_class) are built from."""

    @classmethod
    def from_scores(cls, scores: Sequence[Any], groups: Any, block_names: Sequence[str], block_ids: Any = None,
                    states_confidence: bool = True) -> "ScoredBatch":
        """From bae.tasks.Score objects (one per completion)."""
        k = len(block_names)
        return cls(
            rewards=np.array([s.rewards for s in scores], dtype=np.float64).reshape(-1, k),
            outcomes=np.array([s.outcomes for s in scores], dtype=np.int64).reshape(-1, k),
            groups=np.asarray(groups),
            correct=np.array([s.correct for s in scores], dtype=bool),
            confidence=np.array([np.nan if s.confidence is None else s.confidence for s in scores], dtype=np.float64),
            malformed=np.array([s.malformed for s in scores], dtype=bool),
            abstained=np.array([s.abstained for s in scores], dtype=bool),
            block_names=tuple(block_names), block_ids=block_ids, states_confidence=states_confidence,
            answers=_answers(scores, k),
        )

    def __len__(self) -> int:
        return self.rewards.shape[0]

    def with_fields(self, **fields: Any) -> "ScoredBatch":
        return replace(self, **fields)

    def with_group_outcomes(self, task: Any) -> "ScoredBatch":
        """This batch with the outcome columns of `task`'s group-level outcomes (answer_class)
        assigned over this batch's groups (bae.tasks.Task.group_outcomes, from `answers`); the
        batch itself when the task has none. Call it once `groups` holds the prompts."""
        if not task.group_outcome_columns:
            return self
        return replace(self, outcomes=task.group_outcomes(self.outcomes, self.answers, self.groups))

    def token_block_ids(self, mask: Any):
        """[N, T] block id of each token, -1 where `mask` [N, T] is 0: from block_starts (rows
        whose tokens are consecutive blocks, as in a verl response), else block_ids padded to T."""
        import torch

        mask = torch.as_tensor(mask).bool()
        if self.block_starts is not None:
            return block_ids_from_starts(self.block_starts, mask)
        ids = torch.full(mask.shape, -1, dtype=torch.long)
        for i, row in enumerate(self.block_ids):
            ids[i, : min(len(row), mask.shape[1])] = torch.as_tensor(row[: mask.shape[1]])
        return ids.masked_fill(~mask.cpu(), -1).to(mask.device)

    def advantages(self, method: str = "bae", baseline: str = "ocb", scale: str = "none", **options: Any) -> np.ndarray:
        """[N, K] advantages of `method` (bae.objective.method_advantages) over this batch's groups."""
        return method_advantages(method, self.rewards, self.groups, self.outcomes, baseline=baseline, scale=scale,
                                 **options)

    def metrics(self, advantages: np.ndarray | None = None, abstain: bool = False) -> dict[str, float]:
        """The figures both engines log each step, keyed as they appear in the logs.

        Per block: bae/<block>/reward_mean, advantage_mean and advantage_std (of the unweighted
        A[i, k], population std), and for k >= 2 stratum_size_min / stratum_size_mean (sizes of
        the (group, outcome) strata present). Then bae/accuracy, bae/malformed_rate,
        bae/abstain_rate (when `abstain`: the task has an abstention answer), and, when the task has
        a confidence and at least one completion stated one, bae/confidence_mean (over stated
        confidences) and bae/ece (the paper's 11 bins, a missing confidence counted as 0, as in
        bae eval). With no stated confidence (all malformed, say) neither is logged: an ECE of a
        batch that claims nothing means nothing.
        """
        out: dict[str, float] = {}
        if not len(self):
            return out
        for k, name in enumerate(self.block_names):
            out[f"bae/{name}/reward_mean"] = float(self.rewards[:, k].mean())
            if advantages is not None:
                out[f"bae/{name}/advantage_mean"] = float(advantages[:, k].mean())
                out[f"bae/{name}/advantage_std"] = float(advantages[:, k].std())
            if k > 0:
                sizes = np.bincount(strata(self.groups, self.outcomes[:, k])[0])  # [S]
                out[f"bae/{name}/stratum_size_min"] = float(sizes.min())
                out[f"bae/{name}/stratum_size_mean"] = float(sizes.mean())
        out["bae/accuracy"] = float(self.correct.mean())
        out["bae/malformed_rate"] = float(self.malformed.mean())
        if abstain:
            out["bae/abstain_rate"] = float(self.abstained.mean())
        stated = ~np.isnan(self.confidence)
        if self.states_confidence and stated.any():
            out["bae/confidence_mean"] = float(self.confidence[stated].mean())
            out["bae/ece"] = ece(np.where(stated, self.confidence, 0.0), self.correct.astype(np.float64))
        return out
