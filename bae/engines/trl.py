"""BAE in TRL: `BlockwiseGRPOTrainer`, a GRPOTrainer (TRL 1.16) whose advantages are per block.

    from trl import GRPOConfig
    from bae import tasks
    from bae.engines.trl import BlockwiseGRPOTrainer, paper_grpo_config

    task = tasks.get("self_confidence")
    data = Dataset.from_list([{"prompt": task.format_prompt(p), "answer": a} for p, a in rows])
    trainer = BlockwiseGRPOTrainer(model, task, paper_grpo_config(output_dir="out"), data, tokenizer,
                                   method="bae", baseline="ocb")
    trainer.train()

What the subclass changes (everything else, generation, accumulation, logging, checkpoints, is
TRL's):

1. Scoring. The trainer builds one reward function per block ("<block>_reward") from the task, so
   TRL gathers and logs each block's reward (`rewards/<block>_reward/mean|std`). Each completion
   is decoded from its sampled ids once per batch (cached), with per-token character offsets
   (`decode_with_offsets`: incremental decoding of the ids, never a re-encoding of the text, since
   a sampled sequence need not be the tokenizer's canonical encoding), scored by `task.score`, and
   its tokens are assigned to blocks by `bae.blocks.token_block_ids(score.partition, offsets)`:
   tokens after the last tag and EOS belong to the last block, padding (and rows TRL masks out,
   e.g. `mask_truncated_completions`) get -1.
2. Advantages. Block rewards, outcomes and scores are gathered over all processes; groups are
   `num_generations` consecutive completions, as TRL's. `bae.objective.method_token_advantages`
   gives the per-token advantages of the method ("bae": blockwise with any registered baseline;
   "rlvr": scalar correctness; "rlcr": scalar sum of block rewards) for the whole gathered batch,
   and this process keeps its own rows (TRL's process slice). TRL's own scalar advantages are
   discarded (so `scale_rewards` and `multi_objective_aggregation` have no effect; use `scale`).
3. Loss weights (method "bae" only). The per-token advantage of token t in block k is
   A_t = a_k / |T_k| * c, where a_k / |T_k| is `token_advantages(aggregation="seq-mean-token-sum")`
   and c > 0 cancels TRL's `loss_type` aggregation, so that every loss type optimises the paper's
   L_BAE = -(1/N) sum_i sum_k (1/|T_ik|) sum_{t in T_ik} l_t(a_ik), N = sequences per optimizer
   step (the per-token losses are positively homogeneous in A, so l(cA) = c l(A)). c is applied in
   `_compute_loss`, where everything it needs is known (m = completion_mask * tool_mask):
       grpo, sapo      c_i = max(1, sum_t m_it)                      (the sequence's tokens)
       bnpo            c   = max(1, sum m over the micro-batch) / B_micro
       dr_grpo         c   = max_completion_length
       dapo, cispo     c   = max(1, num_items_in_batch) / N_gen      (N_gen: completions of the
                                                                       gathered generation batch;
                                                                       right in training and eval)
       luspo           c   = 1
   The scalar methods keep TRL's aggregation as is (weight 1 on every token): they are GRPO with
   the method's reward, which equals BAE with one block under loss_type="grpo".
4. GSPO (`importance_sampling_level="sequence"`) with method "bae" uses one ratio per BLOCK,
   r_ik = exp(mean_{t in T_ik} (logp_t - old_t)), so blocks do not collapse into one sequence ratio;
   the objective is -(1/N) sum_i sum_k min(r_ik a_ik, clip(r_ik) a_ik). It is implemented by
   handing TRL's (token-level) loss the log-probs old_t + mean_{s in T_k(t)} (logp_s - old_s), whose
   token ratio is the block ratio and whose gradient spreads over the block as GSPO's does. With
   one block this is TRL's GSPO.

Refused for method "bae" (ValueError at construction; they assume one advantage per completion):
loss_type="vespo" (its weight is a whole-sequence ratio), off_policy_mask_threshold (masks by a
sequence-level KL; untested with per-token advantages), and beta != 0 together with
importance_sampling_level="sequence" (the KL would see the block-averaged log-probs). Refused for
every method: tools and environment_factory (the completion text would hold tool output the
task would score), user reward_funcs (the task defines the rewards), and a train_dataset without
an "answer" column.

Departures from the paper and choices of ours:
- `scale="none"` (the paper) by default, whatever GRPOConfig.scale_rewards says (TRL's default is
  "group"); a warning says so when they differ.
- With `top_entropy_quantile < 1`, masked tokens still count in |T_k| (TRL's own denominators
  behave the same); with beta != 0 the KL term keeps TRL's aggregation (the paper uses beta = 0).
- The completions table of `log_completions` shows TRL's scalar advantage, not ours.
- ECE counts a completion with no stated confidence as confidence 0.0 (as bae.evaluation does).

Set the paper's entropy controller in GRPOConfig (`paper_grpo_config` does): use_adaptive_entropy=
True, entropy_target=0.2, entropy_coef_delta=5e-4; beta=0.0 (no KL).

Metrics logged each step (through TRL's logger, so `report_to` sees them): `rewards/<block>_reward/
mean|std` (TRL), `bae/<block>/advantage_mean|advantage_std`, `bae/<block>/stratum_size_min|
stratum_size_mean` (later blocks: sizes of the (group, outcome) strata), `bae/accuracy`,
`bae/malformed_rate`, `bae/abstain_rate` (tasks with an abstention answer), `bae/confidence_mean`
(over stated confidences), `bae/ece` (the paper's 11 bins); `entropy` and the rest are TRL's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from trl import GRPOConfig, GRPOTrainer

from bae import tasks as _tasks
from bae.advantages import BASELINES, SCALES, blockwise_advantages
from bae.blocks import token_block_ids
from bae.objective import METHODS, method_token_advantages
from bae.tasks import Score, Task

logger = logging.getLogger(__name__)

ANSWER_COLUMN = "answer"
"""The dataset column holding each prompt's gold answer (passed to task.score)."""

LOSS_TYPES = ("grpo", "sapo", "bnpo", "dr_grpo", "dapo", "cispo", "luspo")
"""TRL loss types whose per-token loss is positively homogeneous in a per-token advantage, so a
factor c turns their aggregation into the per-block token mean (method "bae")."""

PAPER_CONFIG: dict[str, Any] = dict(
    learning_rate=1e-6,  # Table 4
    adam_beta1=0.9,
    adam_beta2=0.999,
    weight_decay=0.1,
    warmup_steps=64,  # linear warmup over 64 steps
    lr_scheduler_type="constant_with_warmup",  # the paper states only the warmup; our choice after it
    temperature=1.0,
    num_generations=32,  # group size
    beta=0.0,  # no KL
    scale_rewards="none",  # centred, never divided (BAE's own `scale` defaults to "none" too)
    loss_type="grpo",  # per-sequence token mean: for rlvr/rlcr this is BAE with one block
    use_adaptive_entropy=True,  # dynamic entropy controller, target 0.2 nats, step 5e-4
    entropy_target=0.2,
    entropy_coef_delta=5e-4,
)
"""The paper's training settings (Table 4) that GRPOConfig can express. The batch size (2048
completions per step) depends on the hardware: set per_device_train_batch_size,
gradient_accumulation_steps and the number of processes so that their product is 2048."""


def paper_grpo_config(**overrides: Any) -> GRPOConfig:
    """A GRPOConfig with the paper's settings (PAPER_CONFIG), any field overridden by keyword.

    `output_dir` and the hardware fields (use_cpu, bf16, batch sizes) are the caller's to set.
    """
    return GRPOConfig(**{**PAPER_CONFIG, **overrides})


# ---------------------------------------------------------------------------------------------
# Token offsets from sampled ids


def decode_with_offsets(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The text of `ids` (decode with skip_special_tokens=True, as TRL decodes completions) and the
    (start, end) character span of every token in it.

    Spans come from decoding the ids themselves, never from re-encoding the text: a sampled
    sequence need not be the canonical encoding (a model may spell a tag letter by letter). Fastest
    path: each token decoded alone in one batched call, used when the pieces concatenate to the
    text (byte-level tokenizers, no character split across tokens). Next: incremental decoding over a short sliding window (as vLLM detokenises), ~2 small decodes
    per token; a token that completes nothing yet (a special token, the first bytes of a multi-byte
    character) shares the span of the text the next tokens complete, and tokens that never complete
    any text (EOS at the end) get an empty span at the end. If the pieces do not concatenate to the
    decoded text (a tokenizer whose decode is not concatenative), the exact fallback decodes every
    prefix (quadratic). Special tokens get empty spans; `token_block_ids` gives them the block of
    the token before them.
    """
    ids = [int(i) for i in ids]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        def decode(x):
            return backend.decode(x, skip_special_tokens=True)
    else:
        def decode(x):
            return tokenizer.decode(x, skip_special_tokens=True)
    offsets = _piece_offsets(backend, ids, text) if backend is not None else None
    if offsets is None:
        offsets = _incremental_offsets(decode, ids, text)
    if offsets is None:
        offsets = _prefix_offsets(lambda x: tokenizer.decode(x, skip_special_tokens=True), ids, len(text))
    return text, offsets


def _piece_offsets(backend: Any, ids: list[int], text: str) -> list[tuple[int, int]] | None:
    """Fastest path: every token decoded alone, in one batched call. Exact when the pieces
    concatenate to the text and none ends inside a multi-byte character (else None)."""
    pieces = backend.decode_batch([[i] for i in ids], skip_special_tokens=True)
    if "".join(pieces) != text or any("\ufffd" in p for p in pieces):
        return None
    offsets, pos = [], 0
    for piece in pieces:
        offsets.append((pos, pos + len(piece)))
        pos += len(piece)
    return offsets


def _incremental_offsets(decode, ids: list[int], text: str) -> list[tuple[int, int]] | None:
    offsets: list[tuple[int, int]] = []
    pos = prefix = read = 0
    old = ""  # decode(ids[prefix:read])
    for t in range(len(ids)):
        new = decode(ids[prefix : t + 1])
        if len(new) > len(old) and new.startswith(old) and not new.endswith("\ufffd"):
            piece = new[len(old) :]
            if text[pos : pos + len(piece)] != piece:
                return None
            offsets.extend([(pos, pos + len(piece))] * (t + 1 - len(offsets)))  # pending tokens share it
            pos += len(piece)
            prefix, read = read, t + 1
            old = decode(ids[prefix:read])
    if pos != len(text):
        return None
    offsets.extend([(pos, pos)] * (len(ids) - len(offsets)))
    return offsets


def _prefix_offsets(decode, ids: list[int], length: int) -> list[tuple[int, int]]:
    offsets, end = [], 0
    for t in range(len(ids)):
        start = end
        end = max(end, min(len(decode(ids[: t + 1])), length))
        offsets.append((start, end))
    return offsets


@dataclass(frozen=True)
class ScoredCompletion:
    """One completion: its text, its Score, and the block id of each of its tokens ([L] int64)."""

    text: str
    score: Score
    block_ids: np.ndarray


def score_completion(task: Task, tokenizer: Any, ids: Sequence[int], gold: Any) -> ScoredCompletion:
    """Decode `ids`, score the text with `task`, and map every token to its block."""
    text, offsets = decode_with_offsets(tokenizer, ids)
    score = task.score(text, gold)
    return ScoredCompletion(text, score, token_block_ids(score.partition, offsets))


# ---------------------------------------------------------------------------------------------
# Small helpers


def _block_mean(x: torch.Tensor, ids: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """out[i, t] = mean of x[i, s] over the tokens s of token t's block; x itself where ids is -1.
    x, ids: [B, T]."""
    index = torch.remainder(ids, num_blocks + 1)  # [B, T]: -1 -> column K (discarded)
    sums = x.new_zeros(x.shape[0], num_blocks + 1).scatter_add(1, index, x)  # [B, K + 1]
    counts = x.new_zeros(x.shape[0], num_blocks + 1).scatter_add(1, index, torch.ones_like(x))  # [B, K + 1]
    mean = (sums / counts.clamp(min=1)).gather(1, index)  # [B, T]
    return torch.where(ids >= 0, mean, x)


def _ece(confidence: np.ndarray, correct: np.ndarray) -> float:
    """ECE over the paper's 11 fixed bins [0, .1), ..., [.9, 1), [1, 1.1)."""
    if confidence.size == 0:
        return float("nan")
    bins = np.clip(np.floor(confidence * 10), 0, 10).astype(np.int64)  # [N]
    # sum_b (|B_b| / N) |acc_b - conf_b| = sum_b |sum_{B_b} c - sum_{B_b} q| / N
    gap = np.bincount(bins, weights=correct, minlength=11) - np.bincount(bins, weights=confidence, minlength=11)  # [11]
    return float(np.abs(gap).sum() / confidence.size)


def _strata_sizes(groups: np.ndarray, outcome: np.ndarray) -> np.ndarray:
    """Sizes of the (group, outcome) strata present in the batch."""
    _, counts = np.unique(np.stack([groups, outcome], 1), axis=0, return_counts=True)
    return counts


# ---------------------------------------------------------------------------------------------
# The trainer


class BlockwiseGRPOTrainer(GRPOTrainer):
    """GRPOTrainer with per-block advantages from a task (see the module docstring).

    Args:
        model, args, train_dataset, processing_class, **kwargs: as GRPOTrainer (no reward_funcs:
            the task defines the rewards). The dataset needs a "prompt" column (e.g.
            task.format_prompt(problem)) and an "answer" column (the gold answer).
        task: a bae.tasks.Task, or the name of a built-in task.
        method: "bae" (blockwise advantages), "rlvr" (scalar: correctness, the first block's
            reward) or "rlcr" (scalar: sum of the block rewards).
        baseline: the baseline of blocks k >= 2 (bae), a name in bae.advantages.BASELINES.
        baseline_options: keyword options of the baseline (e.g. {"shrink": 2.0} for ocb_shrink).
        scale: "none" (the paper), "group" or "batch" (see bae.advantages.blockwise_advantages).
    """

    def __init__(
        self,
        model: Any,
        task: Task | str,
        args: GRPOConfig,
        train_dataset: Any = None,
        processing_class: Any = None,
        method: str = "bae",
        baseline: str = "ocb",
        baseline_options: dict[str, Any] | None = None,
        scale: str = "none",
        **kwargs: Any,
    ):
        task = _tasks.get(task) if isinstance(task, str) else task
        if not isinstance(task, Task):
            raise ValueError(f"task must be a bae.tasks.Task or a built-in task name, got {type(task).__name__}")
        self._check_config(task, args, train_dataset, method, baseline, baseline_options, scale, kwargs)
        self.task = task
        self.method = method
        self.baseline = baseline
        self.baseline_options = dict(baseline_options or {})
        self.scale = scale
        self._score_cache: dict[tuple[tuple[int, ...], str], ScoredCompletion] = {}
        self._local_scored: list[ScoredCompletion] | None = None
        self._ratio_blocks: tuple[torch.Tensor, torch.Tensor | None] | None = None
        reward_funcs = [self._block_reward_func(k, name) for k, name in enumerate(task.block_names)]
        super().__init__(
            model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
            processing_class=processing_class, **kwargs,
        )
        # GSPO for bae: TRL computes token ratios of the block-averaged log-probs (see _compute_loss)
        self._block_ratio = method == "bae" and args.importance_sampling_level == "sequence"
        if self._block_ratio:
            self.importance_sampling_level = "token"

    @staticmethod
    def _check_config(task, args, train_dataset, method, baseline, baseline_options, scale, kwargs) -> None:
        """Refuse, with the fix in the message, what would silently not optimise the method's objective."""
        if args is None:
            raise ValueError("args: pass a GRPOConfig (e.g. bae.engines.trl.paper_grpo_config(output_dir=...))")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        for key in ("reward_funcs", "reward_processing_classes"):
            if kwargs.get(key) is not None:
                raise ValueError(f"{key}: BlockwiseGRPOTrainer builds its reward functions from the task; "
                                 "define the rewards in the task (bae.tasks) instead")
        for key in ("tools", "environment_factory"):
            if kwargs.get(key) is not None:
                raise ValueError(f"{key} is not supported by BlockwiseGRPOTrainer: the task would score tool "
                                 "output as model text; train without tools")
        columns = getattr(train_dataset, "column_names", None)
        if columns is not None and ANSWER_COLUMN not in columns:
            raise ValueError(f"train_dataset needs an {ANSWER_COLUMN!r} column (the gold answer of each prompt) "
                             f"for task.score; it has {list(columns)}")
        if method == "bae":
            if baseline not in BASELINES:
                raise ValueError(f"unknown baseline {baseline!r}; registered: {sorted(BASELINES)}")
            k = task.num_blocks  # a dry run surfaces unknown baseline options now, not at step 1
            blockwise_advantages(np.zeros((2, k)), np.zeros(2, dtype=np.int64), np.zeros((2, k), dtype=np.int64),
                                 baseline=baseline, scale=scale, **(baseline_options or {}))
            if args.loss_type not in LOSS_TYPES:
                raise ValueError(
                    f"loss_type={args.loss_type!r} cannot carry blockwise advantages"
                    + (" (VESPO weights every token by a whole-sequence ratio)" if args.loss_type == "vespo" else "")
                    + f"; use one of {LOSS_TYPES}, or method='rlvr'/'rlcr'")
            if args.off_policy_mask_threshold is not None:
                raise ValueError("off_policy_mask_threshold masks whole sequences by their KL and is untested with "
                                 "blockwise advantages; set it to None (or use method='rlvr'/'rlcr')")
            if args.importance_sampling_level == "sequence" and args.beta != 0.0:
                raise ValueError("importance_sampling_level='sequence' with method='bae' uses per-block ratios, "
                                 "which the KL term (beta != 0) would see; set beta=0.0 (the paper's) or use "
                                 "importance_sampling_level='token'")
        if args.scale_rewards != scale:
            logger.warning(f"GRPOConfig.scale_rewards={args.scale_rewards!r} is ignored: BlockwiseGRPOTrainer "
                           f"scales advantages with scale={scale!r}")

    # -- scoring --------------------------------------------------------------------------------

    def _scored(self, ids: Sequence[int], gold: Any) -> ScoredCompletion:
        key = (tuple(int(i) for i in ids), str(gold))
        if key not in self._score_cache:
            self._score_cache[key] = score_completion(self.task, self._tokenizer, key[0], key[1])
        return self._score_cache[key]

    def _block_reward_func(self, k: int, name: str):
        def reward(completion_ids, **kwargs):
            golds = kwargs.get(ANSWER_COLUMN)
            if golds is None:
                raise ValueError(f"the dataset needs an {ANSWER_COLUMN!r} column (gold answers) for task.score")
            return [self._scored(ids, gold).score.rewards[k] for ids, gold in zip(completion_ids, golds, strict=True)]

        reward.__name__ = reward.__qualname__ = f"{name}_reward"
        return reward

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._score_cache = {}  # scores live for one batch
        golds = [row.get(ANSWER_COLUMN) for row in inputs]
        if any(g is None for g in golds):
            raise ValueError(f"every row needs an {ANSWER_COLUMN!r} value (the gold answer) for task.score")
        self._local_scored = [self._scored(ids, gold) for ids, gold in zip(completion_ids_list, golds, strict=True)]
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    # -- advantages -----------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        scored, self._local_scored = self._local_scored, None
        completion_ids = out["completion_ids"]  # [B, C] right-padded
        device = completion_ids.device
        b, c = completion_ids.shape
        k = self.task.num_blocks
        if scored is None or len(scored) != b:
            raise RuntimeError("BlockwiseGRPOTrainer: the scored completions do not match the generated batch")

        loss_mask = out["completion_mask"] * out.get("tool_mask", 1)  # [B, C]
        ids = torch.full((b, c), -1, dtype=torch.long)  # [B, C] block id per token, -1 padding
        for i, s in enumerate(scored):
            n = min(len(s.block_ids), c)
            ids[i, :n] = torch.from_numpy(s.block_ids[:n])
        ids = ids.masked_fill(loss_mask.cpu() == 0, -1)

        local = torch.tensor(  # [B, 2K + 4]: rewards, outcomes, correct, confidence (nan if none), malformed, abstained
            [[*s.score.rewards, *s.score.outcomes, float(s.score.correct),
              float("nan") if s.score.confidence is None else s.score.confidence, float(s.score.malformed),
              float(s.score.abstained)]
             for s in scored], dtype=torch.float64, device=device)
        table = self.accelerator.gather(local).cpu()  # [N, 2K + 4], all processes, in TRL's global order
        n = table.shape[0]
        rewards, outcomes = table[:, :k], table[:, k : 2 * k].long()  # [N, K] each
        mode = "train" if self.model.training else "eval"
        g = self.num_generations if mode == "train" else self.num_generations_eval
        groups = torch.arange(n) // g  # [N]: groups are g consecutive completions

        rows = slice(self.accelerator.process_index * b, (self.accelerator.process_index + 1) * b)
        all_ids = torch.full((n, c), -1, dtype=torch.long)  # [N, C]: other processes' rows stay empty
        all_ids[rows] = ids
        aggregation = "seq-mean-token-sum"  # a_k / |T_k|; the loss-type factor c is applied in _compute_loss
        options = dict(outcomes=outcomes, baseline=self.baseline, scale=self.scale, aggregation=aggregation,
                       **self.baseline_options)
        advantages = method_token_advantages(self.method, rewards, groups, all_ids, **options)[rows]  # [B, C]
        # per-block advantages of every completion, for the logs: each block as a one-token block
        per_block = method_token_advantages(self.method, rewards, groups, torch.arange(k).expand(n, k), **options)

        out["advantages"] = advantages.to(device=device, dtype=torch.float32)
        out["bae_block_ids"] = ids.to(device)
        out["bae_num_completions"] = torch.tensor(float(n), device=device)  # 0-d: reaches every micro-batch
        self._log_block_metrics(mode, table, per_block.double(), groups)
        return out

    def _log_block_metrics(self, mode: str, table: torch.Tensor, per_block: torch.Tensor, groups: torch.Tensor) -> None:
        k = self.task.num_blocks
        t = table.numpy()
        outcomes, correct, confidence, malformed = t[:, k : 2 * k], t[:, 2 * k], t[:, 2 * k + 1], t[:, 2 * k + 2]
        abstained = t[:, 2 * k + 3]
        adv = per_block.numpy()
        metrics = self._metrics[mode]
        for j, name in enumerate(self.task.block_names):
            metrics[f"bae/{name}/advantage_mean"].append(float(adv[:, j].mean()))
            metrics[f"bae/{name}/advantage_std"].append(float(adv[:, j].std()))
            if j > 0:
                sizes = _strata_sizes(groups.numpy(), outcomes[:, j].astype(np.int64))
                metrics[f"bae/{name}/stratum_size_min"].append(float(sizes.min()))
                metrics[f"bae/{name}/stratum_size_mean"].append(float(sizes.mean()))
        stated = ~np.isnan(confidence)
        metrics["bae/accuracy"].append(float(correct.mean()))
        metrics["bae/malformed_rate"].append(float(malformed.mean()))
        if self.task.config.abstain is not None:
            metrics["bae/abstain_rate"].append(float(abstained.mean()))
        metrics["bae/confidence_mean"].append(float(confidence[stated].mean()) if stated.any() else float("nan"))
        metrics["bae/ece"].append(_ece(np.where(stated, confidence, 0.0), correct))

    # -- loss -----------------------------------------------------------------------------------

    def loss_factor(self, inputs: dict[str, Any]) -> torch.Tensor:
        """c of the module docstring for this micro-batch: [B, 1] (grpo/sapo) or a scalar tensor."""
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        mask = mask.to(torch.float32)  # [B, T]
        if self.loss_type in ("grpo", "sapo"):
            return mask.sum(-1, keepdim=True).clamp(min=1.0)  # [B, 1]
        if self.loss_type == "bnpo":
            return mask.sum().clamp(min=1.0) / mask.shape[0]
        if self.loss_type == "dr_grpo":
            return torch.tensor(float(self.max_completion_length), device=mask.device)
        if self.loss_type in ("dapo", "cispo"):
            return inputs["num_items_in_batch"].to(torch.float32).clamp(min=1.0) / inputs["bae_num_completions"]
        if self.loss_type == "luspo":
            return torch.ones((), device=mask.device)
        raise ValueError(f"loss_type={self.loss_type!r} is not supported with method='bae'")

    def _compute_loss(self, model, inputs):
        if self.method != "bae":
            return super()._compute_loss(model, inputs)
        inputs = {**inputs, "advantages": inputs["advantages"] * self.loss_factor(inputs)}
        if not self._block_ratio:
            return super()._compute_loss(model, inputs)
        self._ratio_blocks = (inputs["bae_block_ids"], inputs.get("old_per_token_logps"))
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._ratio_blocks = None

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._ratio_blocks is None:
            return logps, entropies, aux
        # GSPO per block: old_t + mean over t's block of (logp - old); its token ratio is the block ratio
        block_ids, old = self._ratio_blocks
        ref = logps.detach() if old is None else old
        return ref + _block_mean(logps - ref, block_ids, self.task.num_blocks), entropies, aux
