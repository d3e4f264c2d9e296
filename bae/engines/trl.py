"""BAE in TRL: `BlockwiseGRPOTrainer`, a GRPOTrainer (TRL 1.16) whose advantages are per block.

    from datasets import Dataset
    from bae import tasks
    from bae.engines.trl import BlockwiseGRPOTrainer, paper_grpo_config

    task = tasks.get("self_confidence")
    data = Dataset.from_list([{"prompt": task.format_prompt(p), "answer": a} for p, a in rows])
    trainer = BlockwiseGRPOTrainer(model, task, paper_grpo_config(output_dir="out"), data, tokenizer,
                                   method="bae", baseline="ocb")
    trainer.train()

What the subclass changes (everything else, generation, accumulation, logging, checkpoints, is
TRL's):

1. Scoring. Once per step, in `_calculate_rewards`, every completion of this process is decoded
   from its sampled ids with per-token character offsets (bae.blocks.token_offsets: never a
   re-encoding of the text, since a sampled sequence need not be the tokenizer's canonical
   encoding), scored by `task.score`, and its tokens are assigned to blocks
   (bae.blocks.token_block_ids: tokens after the last tag belong to the last block, EOS to the
   block the text stopped in, so a left-out block's worst reward reaches a token;
   padding and rows TRL masks out, e.g. `mask_truncated_completions`, get -1). The result is one
   bae.batch.ScoredBatch, gathered over all processes (the block ids stay with their process);
   its [N, K] block rewards are what TRL receives as the rewards of one placeholder reward
   function per block ("<block>_reward"), so TRL logs `rewards/<block>_reward/mean|std`. The
   batch is the one hand-off TRL's hook structure forces between `_calculate_rewards` and
   `_generate_and_score_completions` (`self._scored_batch`, set in the first, consumed in the second).
2. Advantages. Groups are `num_generations` consecutive completions (`num_generations_eval` in
   evaluation), as TRL's, read in the mode the step started in (TRL's continuous-batching
   generation puts the model back in train mode, which `_generate_single_turn` here undoes, so an
   evaluation also logs and normalises its loss as one). `ScoredBatch.advantages` gives the method's
   [N, K] advantages ("bae": blockwise with any registered baseline; "rlvr": scalar correctness;
   "rlcr": scalar sum of block rewards; "gdpo": scalar, each block's reward normalised in its
   group, summed, normalised over the batch, as TRL's multi_objective_aggregation=
   "normalize_then_sum") over the whole gathered batch; `bae.objective.spread_advantages` expands
   this process's rows to tokens; the same [N, K] values are logged. TRL's own scalar advantages
   are discarded (so `scale_rewards` has no effect: use `scale`; and `multi_objective_aggregation=
   "normalize_then_sum"` is refused unless method="gdpo").
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
   one block this is TRL's GSPO. TRL's warning that GSPO with bnpo/dr_grpo/dapo/cispo weights
   sequences by length is dropped under "bae" (c makes every loss type the per-block token mean).

Refused for method "bae" (ValueError at construction; they assume one advantage per completion):
loss_type="vespo" (its weight is a whole-sequence ratio), off_policy_mask_threshold (masks by a
sequence-level KL; untested with per-token advantages), and beta != 0 together with
importance_sampling_level="sequence" (the KL would see the block-averaged log-probs). Refused for
every method: tools, environment_factory and rollout_func (the completion text would hold tool or
environment output the task would score), user reward_funcs and reward_weights (the task defines
the rewards, one per block, weight 1), multi_objective_aggregation="normalize_then_sum" unless
method="gdpo", scale != "none" with "gdpo", and a train_dataset or eval_dataset (each split of a
dict; an iterable one by its first row) without an "answer" column. With remove_unused_columns=True
the "answer" column is kept. Only TRL 1.16.x is accepted (TRL_SERIES; ImportError otherwise).

Departures from the paper and choices of ours:
- `scale="none"` (the paper) by default, whatever GRPOConfig.scale_rewards says (TRL's default is
  "group"); a warning says so when they differ.
- With `top_entropy_quantile < 1`, masked tokens still count in |T_k| (TRL's own denominators
  behave the same); with beta != 0 the KL term keeps TRL's aggregation (the paper uses beta = 0).
- The completions table of `log_completions` shows TRL's scalar advantage, not ours.
- ECE counts a completion with no stated confidence as confidence 0.0 (as bae eval does).

Set the paper's entropy controller in GRPOConfig (`paper_grpo_config` does): use_adaptive_entropy=
True, entropy_target=0.2, entropy_coef_delta=5e-4; beta=0.0 (no KL).

Metrics logged each step (through TRL's logger, so `report_to` sees them): `rewards/<block>_reward/
mean|std` (TRL) and bae.batch.ScoredBatch.metrics: `bae/<block>/reward_mean|advantage_mean|
advantage_std`, `bae/<block>/stratum_size_min|stratum_size_mean` (later blocks: sizes of the
(group, outcome) strata), `bae/accuracy`, `bae/malformed_rate`, `bae/abstain_rate` (tasks with an
abstention answer), `bae/confidence_mean` and `bae/ece` (when some completion stated a confidence);
`entropy` and the rest are TRL's. TRL's own `reward` and `reward_std` are the plain sum of the
placeholder functions, i.e. of the block rewards: under `malformed="carry"` (method "bae") that sum
counts the left-out blocks' worst rewards twice (`task.total_reward` is the total without it); the
per-block metrics and the advantages are unaffected.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
from typing import Any

import numpy as np
import torch
import trl
from datasets import IterableDataset
from packaging.version import Version
from trl import GRPOConfig, GRPOTrainer

from bae import tasks as _tasks
from bae.advantages import SCALES
from bae.batch import FIELDS, ScoredBatch, score_completions
from bae.io import atomic_write_text
from bae.objective import METHODS, check_method_options, spread_advantages
from bae.paper import PAPER
from bae.tasks import Task

logger = logging.getLogger(__name__)

TRL_SERIES = (1, 16)
"""The TRL release series this engine has been checked against. It relies on GRPOTrainer internals
that TRL does not promise to keep (the (B, T)-advantage path of `_compute_loss` among them):
tests/test_trl_contract.py names each one and fails when an upgrade changes it."""


def check_trl_version(version: str) -> None:
    """Refuse a TRL outside TRL_SERIES (ImportError naming the version to install)."""
    if Version(version).release[:2] != TRL_SERIES:
        series = ".".join(map(str, TRL_SERIES))
        raise ImportError(f"bae.engines.trl was checked against TRL {series}.x only (it subclasses GRPOTrainer and "
                          f"relies on its internals); found trl {version}. Install trl=={series}.* (bae's pyproject "
                          f"requires it)")


check_trl_version(trl.__version__)

BASELINE_STATE_FILE = "bae_baseline_state.json"
"""In each checkpoint folder: the memory of a baseline that pools over batches (ocb_eb's history)."""
ANSWER_COLUMN = "answer"
"""The dataset column holding each prompt's gold answer (passed to task.score)."""

LOSS_TYPES = ("grpo", "sapo", "bnpo", "dr_grpo", "dapo", "cispo", "luspo")
"""TRL loss types whose per-token loss is positively homogeneous in a per-token advantage, so a
factor c turns their aggregation into the per-block token mean (method "bae"): the one list of loss
types bae accepts (bae.runs.config validates against it). Under "bae", grpo, bnpo, dr_grpo, dapo and
luspo share the clipped surrogate and so give one objective, L_BAE; cispo and sapo change the
per-token loss (a detached clipped ratio times the log-probability; a soft sigmoid gate)."""

PAPER_CONFIG: dict[str, Any] = dict(
    learning_rate=PAPER.learning_rate,
    adam_beta1=PAPER.adam_beta1,
    adam_beta2=PAPER.adam_beta2,
    weight_decay=PAPER.weight_decay,
    warmup_steps=PAPER.warmup_steps,
    lr_scheduler_type="constant_with_warmup",  # the paper states only the warm-up; our choice after it
    temperature=PAPER.temperature,
    num_generations=PAPER.group_size,
    max_completion_length=PAPER.max_completion_length,
    beta=PAPER.kl_coef,
    scale_rewards=PAPER.scale,  # centred, never divided (BAE's own `scale` defaults to "none" too)
    loss_type="grpo",  # per-sequence token mean: for rlvr/rlcr this is BAE with one block
    use_adaptive_entropy=True,  # the dynamic entropy controller
    entropy_target=PAPER.entropy_target,
    entropy_coef_delta=PAPER.entropy_coef_delta,
)
"""Table 4 (bae.paper.PAPER) as GRPOConfig fields; bf16 is the caller's (it needs a GPU)."""

MICRO_BATCH = 4
"""Completions per device micro-batch in `paper_grpo_config`'s default batch layout."""


def paper_grpo_config(**overrides: Any) -> GRPOConfig:
    """A GRPOConfig with the paper's settings (PAPER_CONFIG), any field overridden by keyword.

    The batch is the paper's 2048 completions per optimizer step: unless either is given,
    per_device_train_batch_size = 4 and gradient_accumulation_steps = 2048 / (4 x processes), the
    processes read from WORLD_SIZE (set by accelerate and torchrun), so that one generation batch
    holds whole groups. bf16 (the paper's precision) defaults to whether a CUDA GPU with bf16 is
    present and use_cpu is not set (GRPOConfig's own default, bf16=True, fails on a machine
    without one), so `paper_grpo_config(output_dir="out")` builds anywhere.
    """
    settings = dict(PAPER_CONFIG)
    if "per_device_train_batch_size" not in overrides and "gradient_accumulation_steps" not in overrides:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        settings["per_device_train_batch_size"] = MICRO_BATCH
        settings["gradient_accumulation_steps"] = max(PAPER.batch_size // (MICRO_BATCH * world), 1)
    if "bf16" not in overrides and "fp16" not in overrides:
        settings["bf16"] = (not overrides.get("use_cpu", False) and torch.cuda.is_available()
                            and torch.cuda.is_bf16_supported())
    return GRPOConfig(**{**settings, **overrides})


def _block_mean(x: torch.Tensor, ids: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """out[i, t] = mean of x[i, s] over the tokens s of token t's block; x itself where ids is -1.
    x, ids: [B, T]."""
    index = torch.remainder(ids, num_blocks + 1)  # [B, T]: -1 -> column K (discarded)
    sums = x.new_zeros(x.shape[0], num_blocks + 1).scatter_add(1, index, x)  # [B, K + 1]
    counts = x.new_zeros(x.shape[0], num_blocks + 1).scatter_add(1, index, torch.ones_like(x))  # [B, K + 1]
    mean = (sums / counts.clamp(min=1)).gather(1, index)  # [B, T]
    return torch.where(ids >= 0, mean, x)


GSPO_LENGTH_WARNING = "effectively weights each sequence by its completion length"
"""Part of TRL's construction warning that GSPO with bnpo/dr_grpo/dapo/cispo weights each sequence
by its length: under method "bae" the factor c makes every loss type the per-block token mean, so
the warning is false there and is dropped (it stays for the scalar methods, where it holds)."""


@contextlib.contextmanager
def _dropped_warning(text: str):
    """Drop the records of TRL's GRPOTrainer logger whose message contains `text` (accelerate's
    logger prefixes messages with the rank)."""
    trl_logger = logging.getLogger(GRPOTrainer.__module__)

    def drop(record: logging.LogRecord) -> bool:
        return text not in record.getMessage()

    trl_logger.addFilter(drop)
    try:
        yield
    finally:
        trl_logger.removeFilter(drop)


def _columns(dataset: Any) -> list[str] | None:
    """A dataset's column names; an iterable dataset of unknown features shows its first row's
    (None: no columns to check, e.g. an empty stream)."""
    columns = getattr(dataset, "column_names", None)
    if columns is None and isinstance(dataset, IterableDataset):
        first = next(iter(dataset), None)
        columns = None if first is None else list(first)
    return None if columns is None else list(columns)


@functools.cache  # registered once per process
def _restore_to_indexed_cpu() -> None:
    """Teach torch.load the location "cpu:0". On several processes transformers loads the optimizer
    state with map_location=args.device, which on CPU is torch.device("cpu", 0), a location torch's
    own restore functions refuse ("don't know how to restore data location ... cpu:0"): without
    this a multi-process CPU run cannot resume. A CPU storage is already where "cpu:N" means."""
    torch.serialization.register_package(
        11, lambda obj: None, lambda storage, location: storage if location.startswith("cpu:") else None)


class BlockwiseGRPOTrainer(GRPOTrainer):
    """GRPOTrainer with per-block advantages from a task (see the module docstring).

    Args:
        model, args, train_dataset, processing_class, **kwargs: as GRPOTrainer (no reward_funcs:
            the task defines the rewards). The dataset needs a "prompt" column (e.g.
            task.format_prompt(problem)) and an "answer" column (the gold answer).
        task: a bae.tasks.Task, or the name of a built-in task.
        method: "bae" (blockwise advantages), "rlvr" (scalar: correctness, the first block's
            reward), "rlcr" (scalar: sum of the block rewards) or "gdpo" (scalar: the block rewards
            normalised in their group, summed, normalised over the batch).
        baseline: the baseline of blocks k >= 2 (bae), a name in bae.advantages.BASELINES.
        baseline_options: keyword options of the baseline (e.g. {"shrink": 2.0} for ocb_shrink; bae
            only, refused with a scalar method). A
            baseline that pools over batches (ocb_eb with {"history": H}) keeps its memory in
            `trainer.baseline_state`, fed by each training generation batch (not by evaluation),
            saved in each checkpoint (BASELINE_STATE_FILE) and restored on resume.
        scale: "none" (the paper), "group" or "batch" (see bae.advantages.blockwise_advantages);
            "none" for gdpo, which normalises itself.
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
        self.baseline_state: dict = {}  # memory of a baseline that pools over steps (ocb_eb history); train steps only
        self.scale = scale
        self._scored_batch: ScoredBatch | None = None  # this step's batch, from _calculate_rewards to the advantages
        self._ratio_blocks: tuple[torch.Tensor, torch.Tensor | None] | None = None  # GSPO: set for one loss call
        length_warning_is_false = method == "bae" and args.importance_sampling_level == "sequence"
        with _dropped_warning(GSPO_LENGTH_WARNING) if length_warning_is_false else contextlib.nullcontext():
            super().__init__(
                model=model, reward_funcs=[self._placeholder(name) for name in task.block_names], args=args,
                train_dataset=train_dataset, processing_class=processing_class, **kwargs,
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
        for key in ("tools", "environment_factory", "rollout_func"):
            if kwargs.get(key) is not None:
                raise ValueError(f"{key} is not supported by BlockwiseGRPOTrainer: the task would score tool or "
                                 "environment output as model text; train with the trainer's own generation")
        if args.reward_weights is not None:
            raise ValueError("reward_weights: BlockwiseGRPOTrainer's rewards are the task's blocks, each with its own "
                             "advantage (weight 1, as in L_BAE); set reward_weights=None")
        if args.multi_objective_aggregation == "normalize_then_sum" and method != "gdpo":
            raise ValueError(f"multi_objective_aggregation='normalize_then_sum' has no effect with method={method!r} "
                             "(the advantages come from the method); use method='gdpo' for GDPO, or leave "
                             "multi_objective_aggregation at its default")
        if task.config.malformed == "carry" and method != "bae":
            raise ValueError(f"task malformed='carry' charges the left-out blocks' worst rewards to the block the "
                             f"text broke in, for blockwise advantages; method={method!r} sums the blocks' rewards "
                             "and would count them twice: use malformed='partial' with it, or method='bae'")
        if method == "gdpo" and scale != "none":
            raise ValueError(f"scale={scale!r}: method='gdpo' normalises each reward in its group and the sum over "
                             "the batch itself; use scale='none'")
        eval_dataset = kwargs.get("eval_dataset")
        datasets = {"train_dataset": train_dataset}
        if isinstance(eval_dataset, dict):  # a DatasetDict or a dict of named eval sets
            datasets.update({f"eval_dataset[{key!r}]": d for key, d in eval_dataset.items()})
        else:
            datasets["eval_dataset"] = eval_dataset
        for name, dataset in datasets.items():
            columns = None if dataset is None else _columns(dataset)
            if columns is not None and ANSWER_COLUMN not in columns:
                raise ValueError(f"{name} needs an {ANSWER_COLUMN!r} column (the gold answer of each prompt) for "
                                 f"task.score; it has {columns}")
        check_method_options(method, baseline, baseline_options)
        if method == "bae":
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

    def _set_signature_columns_if_needed(self):
        # with remove_unused_columns=True only these columns reach the batch; task.score needs the answers
        super()._set_signature_columns_if_needed()
        if ANSWER_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, ANSWER_COLUMN]

    # -- scoring --------------------------------------------------------------------------------

    @staticmethod
    def _placeholder(name: str):
        """A reward function that only names block `name`'s column of the rewards: the trainer's
        _calculate_rewards scores every block at once and never calls it."""

        def reward(*args, **kwargs):
            raise RuntimeError("BlockwiseGRPOTrainer scores the blocks in _calculate_rewards; this function only names a column")

        reward.__name__ = reward.__qualname__ = f"{name}_reward"
        return reward

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        golds = [row.get(ANSWER_COLUMN) for row in inputs]
        if any(g is None for g in golds):
            raise ValueError(f"every row needs an {ANSWER_COLUMN!r} value (the gold answer) for task.score")
        scores, block_ids = score_completions(self.task, self._tokenizer, completion_ids_list, [str(g) for g in golds])
        local = ScoredBatch.from_scores(scores, np.zeros(len(scores), np.int64), self.task.block_names, block_ids,
                                        states_confidence=self._states_confidence)
        self._scored_batch = self._gathered(local)
        return torch.as_tensor(self._scored_batch.rewards, dtype=torch.float32, device=self.accelerator.device)

    @property
    def _states_confidence(self) -> bool:
        return any("confidence" in b.fields for b in self.task.schema.blocks)

    def _gathered(self, local: ScoredBatch) -> ScoredBatch:
        """The batch of every process, in TRL's global order; the block ids stay this process's."""
        device = self.accelerator.device
        # float64 holds every field exactly (0/1 flags, small ints, NaN); Apple's MPS has no float64,
        # and float32 still holds the flags and ints exactly (the rewards to ~1e-7)
        dtype = np.float32 if device.type == "mps" else np.float64
        fields = {name: torch.as_tensor(np.asarray(getattr(local, name), dtype=dtype), device=device)
                  for name in FIELDS}
        every = {name: t.cpu().numpy() for name, t in self.accelerator.gather(fields).items()}
        answers = local.answers  # text: gathered as objects, only when a group-level outcome needs them
        if self.task.group_outcome_columns and self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            answers = np.array(gather_object([list(row) for row in local.answers]), dtype=object)
        return local.with_fields(
            rewards=every["rewards"].astype(np.float64), outcomes=every["outcomes"].astype(np.int64),
            correct=every["correct"].astype(bool), confidence=every["confidence"].astype(np.float64),
            malformed=every["malformed"].astype(bool), abstained=every["abstained"].astype(bool),
            groups=np.zeros(len(every["rewards"]), np.int64), answers=answers)

    def _generate_single_turn(self, *args, **kwargs):
        # TRL's continuous-batching generation ends with model.train(); keep the step's mode
        training = self.model.training
        try:
            return super()._generate_single_turn(*args, **kwargs)
        finally:
            self.model.train(training)

    # -- advantages -----------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"  # before generation, as TRL reads it
        out = super()._generate_and_score_completions(inputs)
        batch, self._scored_batch = self._scored_batch, None
        completion_ids = out["completion_ids"]  # [B, C] right-padded
        device = completion_ids.device
        b = completion_ids.shape[0]
        if batch is None or len(batch.block_ids) != b:
            raise RuntimeError("BlockwiseGRPOTrainer: the scored completions do not match the generated batch")
        n = len(batch)
        g = self.num_generations if mode == "train" else self.num_generations_eval
        batch = batch.with_fields(groups=np.arange(n) // g)  # groups are g consecutive completions
        batch = batch.with_group_outcomes(self.task)  # answer_class outcomes: classes within each group

        ids = batch.token_block_ids((out["completion_mask"] * out.get("tool_mask", 1)).cpu())  # [B, C], -1 padding

        # an eval batch reads the training steps' memory but does not join it
        state = self.baseline_state if mode == "train" else copy.deepcopy(self.baseline_state)
        adv = batch.advantages(self.method, self.baseline, self.scale, state=state, **self.baseline_options)  # [N, K]
        rows = slice(self.accelerator.process_index * b, (self.accelerator.process_index + 1) * b)
        # a_k / |T_k| on each token; the loss type's factor c is applied in _compute_loss
        tokens = spread_advantages(self.method, adv[rows], ids, aggregation="seq-mean-token-sum")  # [B, C]
        out["advantages"] = tokens.to(device=device, dtype=torch.float32)
        out["bae_block_ids"] = ids.to(device)
        out["bae_num_completions"] = torch.tensor(float(n), device=device)  # 0-d: reaches every micro-batch
        for key, value in batch.metrics(adv, abstain=self.task.config.abstain is not None).items():
            self._metrics[mode][key].append(value)
        return out

    # -- checkpoints: the baseline memory travels with them, as TRL's entropy controller state does --

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.baseline_state and self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            atomic_write_text(os.path.join(folder, BASELINE_STATE_FILE), json.dumps(self.baseline_state))

    def _load_optimizer_and_scheduler(self, checkpoint):
        if checkpoint is not None and self.args.world_size > 1 and self.args.device.type == "cpu":
            _restore_to_indexed_cpu()
        super()._load_optimizer_and_scheduler(checkpoint)
        path = os.path.join(checkpoint, BASELINE_STATE_FILE) if checkpoint is not None else None
        if path is not None and os.path.isfile(path):
            with open(path) as f:
                saved = json.load(f)
            self.baseline_state.clear()
            self.baseline_state.update(saved)

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
