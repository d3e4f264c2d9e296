"""verl adapter (checked against verl 0.9.1): blockwise advantages as registered verl estimators.

Importable only when verl is installed (`pip install bae-rl[verl]`); the core never imports it.

What it registers with verl (at import, in every process that imports this module):
- advantage estimators "bae_<baseline>", one per baseline of bae.advantages.BASELINES
  ("bae_none", "bae_batch_mean", "bae_group_mean", "bae_ocb", "bae_ocb_loo", "bae_ocb_shrink", "bae_ocb_eb");
- the reward manager "bae" (`BAERewardManager`): scores each completion with a bae Task and writes
  its per-block rewards, outcomes, block start tokens and the task's block names into
  reward_extra_info as scalars (or `bae_error` for a response it could not score);
- v1 trainers "bae_sync", "bae_colocate_async", "bae_separate_async": verl's own trainers of those
  modes (BlockwiseAdvantageMixin) that refuse a batch they would train on wrongly, forward the
  per-row reward_extra_info and verl's padding tags to the estimator, log the per-block metrics of
  the TRL engine, and run the paper's entropy controller (EntropyController), which verl lacks.

Refused before any worker starts (check_launch: loss_layout and check_settings): every setting under
which the estimate would be silently wrong; policy losses off the tested allow-list POLICY_LOSSES.

The launcher (`python -m bae.engines.verl`, `launch`) hands verl's run_ppo `BAETaskRunner`, whose
Ray process imports this module before verl looks the trainer up (see BAETaskRunnerV1); reward
workers import it through `reward.reward_manager.module.path=pkg://bae.engines.verl`. Registering
in the driver alone does nothing for those processes (docs/verl.md: which process needs bae).

Why a trainer extension: verl's compute_advantage calls a registered estimator with
token_level_rewards, response_mask, config and index (uid) only; the per-block rewards, outcomes and
block boundaries live in each row's extra_fields["reward_extra_info"], which the v1 trainer never
reads there. Encoding them in token_level_rewards is not exact (a zero block reward cannot mark a
block, outcomes have no place, the v1 agent loop writes one float at the last token, and a KL penalty
in the reward would alter them). See docs/verl.md.

Rows are matched by what they are, never by where they are: the trainer reads reward_extra_info with
the same TransferQueue keys, in the same call, as the data the estimator receives, and the estimator
checks that the forwarded uids equal the `index` it is given; groups are formed from uid values, so
any reordering (_balance_batch, async sampling) leaves every advantage unchanged.

Departures from verl's GRPO: a group of one gets advantage 0 (verl: mean 0, std 1, so s / (1 + 1e-6)).
`algorithm.norm_adv_by_std_in_grpo` maps to the core's scale: true -> "group" (GRPO), false -> "none"
(the paper; Dr.GRPO style). Options of the core (ocb_shrink's `shrink`) and of the entropy
controller (ENTROPY_KEYS) come from a top-level `bae:` section of the run config (`+bae.shrink=2.0`),
because verl's AlgoConfig rejects unknown keys.
"""

from __future__ import annotations

import contextvars
import copy
import hashlib
import json
import logging
import math
import os
import struct
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from verl.experimental.reward_loop.reward_manager import register as register_reward_manager
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.trainer.ppo import core_algos

from bae import tasks as bae_tasks
from bae.advantages import BASELINES, DEFAULT_EPS, check_options
from bae.batch import ScoredBatch, score_completions
from bae.blocks import block_starts
from bae.objective import AGGREGATIONS, token_advantages
from bae.paper import PAPER

logger = logging.getLogger(__name__)

PREFIX = "bae_"
REWARD_KEY = "bae_reward_{}"  # reward of block k, float
OUTCOME_KEY = "bae_outcome_{}"  # outcome of the prefix before block k (k >= 1), int
START_KEY = "bae_start_{}"  # index of block k's first response token (k >= 1), int; T if it has none
BLOCKS_KEY = "bae_blocks"  # the task's block names, comma-joined, str (the metric keys bae/<block>/...)
STATES_CONFIDENCE_KEY = "bae_states_confidence"  # 1 if the task has a confidence to state, int
ABSTAIN_KEY = "bae_has_abstain"  # 1 if the task has an abstention answer (bae/abstain_rate is logged), int
ERROR_KEY = "bae_error"  # set instead of the block keys when scoring the response raised, str
REWARDS_ID_KEY = "bae_rewards_id"  # equal for two rows exactly when their block rewards are, float (rewards_id):
#                                    the DAPO filter's metric under a bae estimator
ANSWER_KEY = "bae_answer_{}"  # tasks with a group-level outcome (answer_class) only: the answer that the
#                               outcome of block k is about (k >= 1), str, "" for none
TASK_KEY = "bae_task"  # with ANSWER_KEY: the task's config as JSON (system prompt left out), to assign the classes
DEFAULT_AGGREGATION = "seq-mean-token-mean"
TRAINER_MODES = ("sync", "colocate_async", "separate_async")
ESTIMATORS: dict[str, str] = {}  # verl estimator name -> bae baseline name


# ---------------------------------------------------------------------------------------------
# Reward side: one completion -> scalar reward_extra_info


def task_layout(task: bae_tasks.Task) -> dict[str, Any]:
    """The scalar keys that describe the task's layout on every row: its block names (so the
    metrics read bae/solution/..., bae/confidence/...), whether it has a confidence to state and an
    abstention answer (what ScoredBatch.metrics needs to know, as the TRL engine passes it)."""
    return {BLOCKS_KEY: ",".join(task.block_names),
            STATES_CONFIDENCE_KEY: int(any("confidence" in b.fields for b in task.schema.blocks)),
            ABSTAIN_KEY: int(task.config.abstain is not None)}


def rewards_id(rewards: Sequence[float]) -> float:
    """A float that two responses share exactly when their block rewards are equal: a 48-bit digest
    of the rewards' float64 bytes (so two different reward vectors collide with probability about
    2^-48). It is algorithm.filter_groups.metric for bae estimators: verl's DAPO filter casts the
    metric to one float per row and evicts a group whose values have zero spread, and under bae a
    group has advantages whenever any block's reward varies in it (a group that is all right still
    learns its confidence; under malformed: carry, equal totals can differ block by block), while
    a group whose block rewards are all equal has advantage 0 in every block under every baseline."""
    packed = struct.pack(f"<{len(rewards)}d", *(float(r) + 0.0 for r in rewards))  # + 0.0: -0.0 is 0.0
    return float(int.from_bytes(hashlib.blake2b(packed, digest_size=6).digest(), "little"))


def block_extra_info(score: bae_tasks.Score, starts: Sequence[int], task: bae_tasks.Task | None = None) -> dict[str, Any]:
    """reward_extra_info of one completion: scalar keys only (verl stacks them with np.array)."""
    info: dict[str, Any] = {REWARD_KEY.format(k): float(r) for k, r in enumerate(score.rewards)}
    info.update({OUTCOME_KEY.format(k): int(o) for k, o in enumerate(score.outcomes) if k >= 1})
    info.update({START_KEY.format(k + 1): int(s) for k, s in enumerate(starts)})
    info[REWARDS_ID_KEY] = rewards_id(score.rewards)
    info["acc"] = float(score.correct)
    info["bae_malformed"] = int(score.malformed)
    info["bae_abstained"] = int(score.abstained)
    info["bae_confidence"] = float("nan") if score.confidence is None else float(score.confidence)
    if task is not None:
        info.update(task_layout(task))
    return info


def score_response(task: bae_tasks.Task, tokenizer: Any, response_ids: Sequence[int], gold: str) -> dict[str, Any]:
    """{"reward_score": task.total_reward(score), "reward_extra_info": block_extra_info(...)} for one
    response (its valid token ids), scored as the TRL engine scores (bae.batch.score_completions:
    the one offsets algorithm, bae.blocks.token_offsets); the block starts are read off the token
    block ids. The scalar reward_score is what verl logs and what a built-in estimator (grpo, ...)
    trains on: task.total_reward, the blocks' sum without what malformed="carry" moves between them
    (which the plain sum would count twice); the bae estimators read the per-block values instead."""
    (score,), (ids,) = score_completions(task, tokenizer, [list(response_ids)], [gold])
    starts = block_starts(ids, task.num_blocks)
    info = block_extra_info(score, starts, task)
    if task.group_outcome_columns:  # answer_class: the classes need the group, assigned in scored_batch
        info.update({ANSWER_KEY.format(k): score.prefix_answers[k] or "" for k in task.group_outcome_columns})
        info[TASK_KEY] = task.config.model_copy(update={"system_prompt": ""}).model_dump_json()
    return {"reward_score": task.total_reward(score), "reward_extra_info": info}


def failed_score(err: BaseException, data_source: Any = None) -> dict[str, Any]:
    """What BAERewardManager returns for a response it could not score: reward 0 and, instead of
    the block keys, ERROR_KEY with the error and where it was raised. The bae trainers stop at the
    first batch holding such a row (BlockwiseAdvantageMixin._bae_check_batch), so the reward 0 is
    never trained on; verl itself would only log a failed session and train on the rest of its group."""
    where = "".join(traceback.format_tb(err.__traceback__, limit=-2)).strip() if err.__traceback__ else ""
    message = f"{type(err).__name__}: {err} (data_source={data_source!r})" + (f"\n{where}" if where else "")
    # REWARDS_ID_KEY NaN: DAPO's filter (metric bae_rewards_id) then keeps the group (a NaN spread is not
    # 0) and the trainer refuses it with this message, instead of verl's "missing DAPO metric"
    return {"reward_score": 0.0, "reward_extra_info": {ERROR_KEY: message, REWARDS_ID_KEY: float("nan")}}


class BAERewardManager(RewardManagerBase):
    """verl reward manager for bae's tasks (registered as "bae" in verl's reward-manager registry).

    Each row's `data_source` names a built-in task (bae.tasks.BUILTIN: self_confidence, two_attempt,
    arithmetic, ...); optional task options (e.g. {"confidence_reward": "bce"}) come from the row's
    extra_info["bae_task_options"]; the gold answer from reward_model.ground_truth (verl's layout).
    Single-turn responses: the whole response is the completion split into blocks. Every row of a
    run must use tasks with the same block layout (verl needs the same extra keys on every row).

    A response it cannot score (a data_source that is no bae task, a verifier that raises, a
    session of several outputs) is not an exception here: verl's agent loop would log it, mark the
    group failed and train on the rest of the group (sync mode) without a word in the metrics. It
    returns `failed_score(err)` instead, and the bae trainer stops with that error at the first batch
    holding it (docs/verl.md, "When scoring fails").
    """

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None, **kwargs):
        super().__init__(config, tokenizer, compute_score)
        self._tasks: dict[tuple, bae_tasks.Task] = {}

    def task(self, data_source: str, options: Mapping[str, Any] | None = None) -> bae_tasks.Task:
        key = (data_source, tuple(sorted((options or {}).items())))
        if key not in self._tasks:
            if data_source not in bae_tasks.BUILTIN:
                raise ValueError(f"bae reward manager: data_source {data_source!r} is not a bae task; built in: {sorted(bae_tasks.BUILTIN)}")
            self._tasks[key] = bae_tasks.get(data_source, **dict(options or {}))
        return self._tasks[key]

    async def run_single(self, data) -> dict:
        data_source = None
        try:
            if len(data) != 1:  # an agent loop that returned several outputs for one session
                raise ValueError(f"{len(data)} outputs in one session: bae scores one response per session "
                                 "(verl would copy the last one's block data onto the others)")
            item = data[0]
            data_source = item.non_tensor_batch["data_source"]
            responses = item.batch["responses"]
            valid = _valid_response_length(item, responses.shape[-1])
            ids = responses[:valid].tolist()
            extra = item.non_tensor_batch.get("extra_info", None) or {}
            task = self.task(str(data_source), extra.get("bae_task_options"))
            gold = item.non_tensor_batch["reward_model"]["ground_truth"]
            return await self.loop.run_in_executor(None, lambda: score_response(task, self.tokenizer, ids, gold))
        except Exception as err:  # noqa: BLE001 - turned into a row the trainer refuses (see the class docstring)
            logger.error("bae reward manager: could not score a response (data_source=%r)", data_source, exc_info=err)
            return failed_score(err, data_source)


def _valid_response_length(item: Any, width: int) -> int:
    """Valid tokens of a one-row reward input: verl's `response_len` when present (the agent loop
    passes it), else the ones in the response part of the attention mask (right padding)."""
    length = item.non_tensor_batch.get("response_len", None) if hasattr(item, "non_tensor_batch") else None
    if length is not None:
        return int(length)
    return int(item.batch["attention_mask"][-width:].sum())


# ---------------------------------------------------------------------------------------------
# Advantage side: per-row block data -> [bs, T] advantages


def scored_batch(infos: Sequence[Mapping[str, Any]], uids: Any = None) -> ScoredBatch:
    """The ScoredBatch of a training batch from one reward_extra_info mapping per row (the v1
    trainer's extra_fields layout): rewards, outcomes, flags and confidences, the rows' uids as
    groups, the block starts (block_starts [N, K - 1]) and the task's block names (BLOCKS_KEY;
    "block1", ... for rows written without it). A row the reward manager could not score
    (ERROR_KEY) is refused with its error."""
    n = len(infos)
    failed = [i for i, info in enumerate(infos) if info.get(ERROR_KEY) is not None]
    if failed:
        raise RuntimeError(f"bae: the reward manager could not score {len(failed)} of {n} rows (rows {failed[:10]}); "
                           f"first error: {infos[failed[0]][ERROR_KEY]}")
    k = sum(1 for key in infos[0] if key.startswith("bae_reward_")) if n else 0
    if n and k == 0:
        raise ValueError(f"row 0 has no {REWARD_KEY.format('k')} keys in reward_extra_info: use bae's reward manager (BAERewardManager, see docs/verl.md)")
    rewards = np.zeros((n, k))
    outcomes = np.zeros((n, k), np.int64)
    starts = np.zeros((n, max(k - 1, 0)), np.int64)
    flags = np.zeros((n, 3), dtype=bool)  # correct, malformed, abstained
    confidence = np.full(n, np.nan)
    for i, info in enumerate(infos):
        try:
            rewards[i] = [float(info[REWARD_KEY.format(j)]) for j in range(k)]
            outcomes[i, 1:] = [int(info[OUTCOME_KEY.format(j)]) for j in range(1, k)]
            starts[i] = [int(info[START_KEY.format(j)]) for j in range(1, k)]
        except (KeyError, TypeError) as err:
            raise ValueError(f"row {i}: reward_extra_info lacks the bae keys of {k} blocks ({err!r}); every row needs the same task layout") from None
        if sum(1 for key in info if key.startswith("bae_reward_")) != k:
            raise ValueError(f"row {i} has a different number of blocks than row 0 ({k}): one block layout per run")
        flags[i] = [bool(info.get("acc", 0.0)), bool(info.get("bae_malformed", 0)), bool(info.get("bae_abstained", 0))]
        confidence[i] = float(info.get("bae_confidence", np.nan))
    layouts = {(info.get(BLOCKS_KEY), info.get(STATES_CONFIDENCE_KEY, 1)) for info in infos}
    if len(layouts) > 1:
        raise ValueError(f"bae: rows of different tasks in one batch ({sorted(layouts, key=str)}): one block layout per run")
    names, states_confidence = next(iter(layouts)) if n else (None, 1)
    block_names = tuple(str(names).split(",")) if names is not None else tuple(f"block{j + 1}" for j in range(k))
    if len(block_names) != k:
        raise ValueError(f"bae: {BLOCKS_KEY}={names!r} names {len(block_names)} blocks, the rows have {k}")
    batch = ScoredBatch(rewards=rewards, outcomes=outcomes, groups=np.asarray(uids if uids is not None else np.arange(n), dtype=object),
                        correct=flags[:, 0], confidence=confidence, malformed=flags[:, 1], abstained=flags[:, 2],
                        block_names=block_names, block_starts=starts, states_confidence=bool(states_confidence))
    if n and TASK_KEY in infos[0]:  # a group-level outcome (answer_class): assign it over the uids' groups
        answers = np.full((n, k), None, dtype=object)
        for i, info in enumerate(infos):
            for j in range(1, k):
                answers[i, j] = str(info.get(ANSWER_KEY.format(j), "")) or None
        batch = batch.with_fields(answers=answers).with_group_outcomes(_recorded_task(str(infos[0][TASK_KEY])))
    return batch


def select_rows(batch: ScoredBatch, rows: Any) -> ScoredBatch:
    """The rows `rows` (indices or a boolean mask) of a ScoredBatch, every per-row field with them."""
    rows = np.asarray(rows)
    index = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
    ids = batch.block_ids
    return batch.with_fields(rewards=batch.rewards[index], outcomes=batch.outcomes[index], groups=np.asarray(batch.groups)[index],
                             correct=batch.correct[index], confidence=batch.confidence[index], malformed=batch.malformed[index],
                             abstained=batch.abstained[index], block_ids=None if ids is None else [ids[i] for i in index],
                             block_starts=None if batch.block_starts is None else np.asarray(batch.block_starts)[index],
                             answers=None if batch.answers is None else np.asarray(batch.answers, dtype=object)[index])


_RECORDED_TASKS: dict[str, bae_tasks.Task] = {}


def _recorded_task(config_json: str) -> bae_tasks.Task:
    """The Task of a TASK_KEY record (cached: one per run)."""
    if config_json not in _RECORDED_TASKS:
        import json

        _RECORDED_TASKS[config_json] = bae_tasks.from_config(json.loads(config_json))
    return _RECORDED_TASKS[config_json]


def scored_batch_from_columns(columns: Mapping[str, Any], uids: Any = None) -> ScoredBatch:
    """The same from column arrays keyed like reward_extra_info (a non_tensor_batch with the keys merged)."""
    n = len(next(iter(columns.values()))) if columns else 0
    keys = [key for key in columns if key.startswith(PREFIX) or key == "acc"]
    rows = [{key: columns[key][i] for key in keys} for i in range(n)]
    return scored_batch(rows, uids if uids is not None else columns.get("uid"))


_FORWARDED: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("bae_forwarded", default=None)


def _config_get(config: Any, key: str, default: Any) -> Any:
    if config is None:
        return default
    value = config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)
    return default if value is None else value


def _resolve_batch(scored: ScoredBatch | None, non_tensor_batch: Mapping | None, index: Any, n: int) -> ScoredBatch:
    if scored is None and non_tensor_batch is not None:
        scored = scored_batch_from_columns(non_tensor_batch, index)
    if scored is None:
        raise RuntimeError(
            "bae estimators need the per-block rewards of each row, which verl's compute_advantage does not "
            "pass to a registered estimator: run with trainer.v1.trainer_mode=bae_sync (or bae_colocate_async, "
            "bae_separate_async) and the BAERewardManager, launched by `python -m bae.engines.verl` "
            "(see docs/verl.md), or call the estimator with scored= / non_tensor_batch="
        )
    if len(scored) != n:
        raise ValueError(f"bae: {len(scored)} rows of block data for a batch of {n}")
    mismatch = np.nonzero(np.asarray(scored.groups, dtype=object) != np.asarray(index, dtype=object))[0]
    if len(mismatch):
        raise ValueError(f"bae: block data and batch disagree on the uid of rows {mismatch[:10].tolist()}: rows were reordered between them")
    return scored


def _make_estimator(baseline: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    def estimator(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        index: np.ndarray | None = None,
        config: Any = None,
        non_tensor_batch: Mapping | None = None,
        scored: ScoredBatch | None = None,
        loss_agg_mode: str | None = None,
        loss_scale_factor: int | None = None,
        bae_options: Mapping[str, Any] | None = None,
        padding_rows: Any = None,
        state: dict | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        forwarded = _FORWARDED.get() or {}
        scored = scored if scored is not None else forwarded.get("scored")
        loss_agg_mode = loss_agg_mode or forwarded.get("loss_agg_mode") or DEFAULT_AGGREGATION
        loss_scale_factor = loss_scale_factor if loss_scale_factor is not None else forwarded.get("loss_scale_factor")
        options = dict(bae_options if bae_options is not None else forwarded.get("bae_options") or {})
        if index is None:
            raise ValueError("bae estimators group by prompt uid: the batch has no 'uid'")
        n = token_level_rewards.shape[0]
        batch = _resolve_batch(scored, non_tensor_batch, np.asarray(index, dtype=object), n)
        padding = forwarded.get("padding") if padding_rows is None else padding_rows
        padding = np.zeros(n, dtype=bool) if padding is None else np.asarray(padding, dtype=bool)
        if padding.shape != (n,):
            raise ValueError(f"bae: a padding mask of shape {padding.shape} for a batch of {n} rows")
        scale = "group" if _config_get(config, "norm_adv_by_std_in_grpo", True) else "none"
        with torch.no_grad():
            batch = batch.with_fields(groups=np.asarray(index, dtype=object).astype(str))
            # verl's padding rows (copies of row 0 that make the batch divisible) count in no baseline:
            # the advantages are those of the real rows alone; a padding row gets 0 (its mask is 0 anyway)
            real = select_rows(batch, ~padding) if padding.any() else batch
            memory = state if state is not None else forwarded.get("state")  # the trainer's, for ocb_eb's history
            adv_real = real.advantages("bae", baseline, scale, eps=DEFAULT_EPS, state=memory, **options)  # [N_real, K]
            adv = np.zeros((n, adv_real.shape[1]))
            adv[~padding] = adv_real
            ids = batch.token_block_ids(response_mask)  # [N, T]
            tokens = token_advantages(adv, ids, loss_agg_mode, loss_scale_factor)  # [N, T] float32
            tokens = tokens.to(device=token_level_rewards.device, dtype=token_level_rewards.dtype)
        if "scored" in forwarded:  # for the trainer's per-block metrics (the unweighted A[i, k] of the real rows)
            forwarded["result"] = (real, adv_real)
        return tokens, tokens

    estimator.__name__ = f"compute_bae_{baseline}_advantage"
    estimator.__qualname__ = estimator.__name__
    estimator.__doc__ = (
        f"verl advantage estimator '{PREFIX}{baseline}': blockwise advantages (bae.advantages, baseline "
        f"{baseline!r} for blocks k >= 2, group mean for block 1) spread over tokens with per-block token "
        "weights for the actor's loss_agg_mode (bae.objective); rows marked in `padding_rows` (verl's padding "
        "copies) take part in no baseline and get 0. A baseline that pools over batches (bae.history for ocb_eb) "
        "reads and updates the memory the bae trainer forwards (or `state=`, a dict of the caller's). "
        "Returns (advantages, returns), both [bs, T]."
    )
    estimator.__bae_baseline__ = baseline
    return estimator


def register_estimators() -> dict[str, str]:
    """Register "bae_<name>" with verl for every baseline in bae.advantages.BASELINES (call it again
    after registering a baseline of your own). Idempotent."""
    for baseline in BASELINES:
        name = PREFIX + baseline
        existing = core_algos.ADV_ESTIMATOR_REGISTRY.get(name)
        if existing is not None and getattr(existing, "__bae_baseline__", None) == baseline:
            ESTIMATORS[name] = baseline
            continue
        core_algos.register_adv_est(name)(_make_estimator(baseline))
        ESTIMATORS[name] = baseline
    return dict(ESTIMATORS)


POLICY_LOSSES: dict[str, str] = {
    "vanilla": "PPO's clipped surrogate per token, dual clip for A < 0",
    "dppo_tv": "DPPO (binary TV): -A sg(min(r, c)) log p on the tokens its trust region keeps, by the sign of A",
    "dppo_kl": "DPPO (binary KL): the same with a KL trust region",
    "sapo": "SAPO: -A times a sigmoid gate of the ratio, its temperature chosen by the sign of A",
    "gpg": "GPG: -A log p",
    "cispo": "CISPO: -A sg(clip(r)) log p",
}
"""verl 0.9.1 policy losses (actor.policy_loss.loss_mode) under which the bae estimators' per-token
advantages give the paper's per-block token mean: each token's loss l_t(A) is positively
homogeneous in A (l_t(w A) = w l_t(A) for w > 0, so a per-token weight w = 1/|T_ik| or n_i/|T_ik|
passes through) and selects tokens at most by the sign of A, which a positive weight keeps. Each
entry is checked by tests_verl/test_engine_verl.py::test_allowed_policy_loss_optimises_the_per_block_mean
through verl's own loss function (value and gradient)."""

REFUSED_POLICY_LOSSES: dict[str, str] = {
    "geo_mean": "averages the advantages over each sequence (one advantage per response), which erases the blocks",
    "gspo": "uses one importance ratio per sequence, so one block's tokens move the clipping of the other's; "
            "the TRL engine uses one ratio per block, which verl's gspo cannot",
    "clip_cov": "drops the gradient of tokens it picks by the covariance of the advantage with the log-prob: "
                "per-token weights change which tokens it picks",
    "kl_cov": "picks tokens by the covariance of the advantage with the log-prob and adds |log r| unscaled by the "
              "advantage (not positively homogeneous in A)",
    "dro": "adds a squared log-ratio penalty that the advantage does not scale (not positively homogeneous in A): "
           "per-token weights would reweight the policy term and not the penalty",
    "bypass_mode": "masks tokens inside the loss (rollout rejection sampling) after the token weights were set "
                   "from the response mask",
}
"""Policy losses refused, with why; any loss not in POLICY_LOSSES is refused as well."""


def loss_layout(actor_config: Any) -> tuple[str, int | None]:
    """(aggregation, max_length) that the token weights must follow for this actor config; raises
    for a configuration under which the per-block token mean cannot be reproduced (a policy loss
    not in POLICY_LOSSES, an aggregation the core does not reproduce)."""
    loss_mode = _config_get(_config_get(actor_config, "policy_loss", None), "loss_mode", "vanilla")
    if loss_mode not in POLICY_LOSSES:
        why = REFUSED_POLICY_LOSSES.get(loss_mode, "is not on bae's allow-list of losses checked to optimise the "
                                                   "per-block token mean")
        raise ValueError(f"bae: actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode} {why}; "
                         f"use one of {sorted(POLICY_LOSSES)} (vanilla: the paper's)")
    aggregation = "seq-mean-token-mean" if loss_mode == "sapo" else _config_get(actor_config, "loss_agg_mode", "token-mean")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"bae: loss_agg_mode={aggregation!r} is not supported; use seq-mean-token-mean (recommended) or one of {AGGREGATIONS}")
    max_length = _config_get(actor_config, "loss_scale_factor", None)
    if aggregation == "seq-mean-token-sum-norm" and max_length is None:
        raise ValueError("bae: seq-mean-token-sum-norm needs actor.loss_scale_factor (e.g. data.max_response_length); "
                         "without it verl divides by each micro-batch's padded width")
    if aggregation == "token-mean":
        warnings.warn("bae: loss_agg_mode=token-mean reproduces the per-block token mean only when one PPO mini-batch is "
                      "the whole batch; use seq-mean-token-mean", stacklevel=2)
    return aggregation, max_length


def _as_list(values: Any) -> list:
    """A non-tensor column from TransferQueue as a plain list (it may come back as a NonTensorStack,
    a list subclass or a numpy array, depending on the backend)."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def base_trainer_mode(mode: str) -> str:
    """'bae_sync' -> 'sync': verl's trainers branch on the mode name, so ours report their base mode."""
    return mode[len(PREFIX):] if mode.startswith(PREFIX) and mode[len(PREFIX):] in TRAINER_MODES else mode


# ---------------------------------------------------------------------------------------------
# The `bae:` section of the run config: baseline options and the entropy controller


ENTROPY_KEYS = ("use_adaptive_entropy", "entropy_target", "entropy_coef_delta", "entropy_coef_max")
"""Keys of the `bae:` section that configure the entropy controller (TRL's GRPOConfig names);
every other key is an option of the baseline (e.g. `shrink` for ocb_shrink)."""
ENTROPY_COEF_KEY = "bae_entropy_coeff"  # the coefficient for this update, in the actor's mini-batch (non-tensor)
STATE_FILE = "bae_state.json"  # the controller's state and the baseline memory, in each verl checkpoint folder global_step_<n>/


def bae_section(config: Any) -> dict[str, Any]:
    """The run config's top-level `bae:` section as a plain dict ({} when absent)."""
    section = config.get("bae", None) if hasattr(config, "get") else None
    if section is None:
        return {}
    from omegaconf import DictConfig, OmegaConf

    return dict(OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else section)


def baseline_options(config: Any) -> dict[str, Any]:
    """The `bae:` keys passed to the estimator's baseline (all but ENTROPY_KEYS)."""
    return {k: v for k, v in bae_section(config).items() if k not in ENTROPY_KEYS}


@dataclass
class EntropyController:
    """The paper's dynamic entropy controller (Table 4; Skywork-OR1's rule, as TRL implements it
    with use_adaptive_entropy), for verl, whose actor has only a fixed `entropy_coeff`.

    State: the coefficient `coef` (starts at 0) and the last measured entropy (starts at +inf).
    Each actor update t: the loss adds -applied * H, where applied = coef when the entropy measured
    at the previous update was <= target, else 0 (TRL's gate); then, with H_t the token-mean entropy
    of the policy on this update's batch, coef rises by delta when H_t <= target and falls by delta
    otherwise, within [0, coef_max]. Keys: `bae.use_adaptive_entropy` (default true),
    `bae.entropy_target` (PAPER: 0.2 nats), `bae.entropy_coef_delta` (PAPER: 5e-4),
    `bae.entropy_coef_max` (TRL's default 1.0)."""

    target: float = PAPER.entropy_target
    delta: float = PAPER.entropy_coef_delta
    coef_max: float = 1.0
    coef: float = 0.0
    last_entropy: float = math.inf

    def __post_init__(self):
        for name in ("target", "delta", "coef_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                key = {"target": "entropy_target", "delta": "entropy_coef_delta", "coef_max": "entropy_coef_max"}[name]
                raise ValueError(f"bae: bae.{key} must be a finite number >= 0, got {value!r}")

    @classmethod
    def from_config(cls, config: Any) -> "EntropyController | None":
        """The controller the run config asks for (None when `bae.use_adaptive_entropy` is false)."""
        section = bae_section(config)
        enabled = section.get("use_adaptive_entropy", True)
        if not isinstance(enabled, bool):
            raise ValueError(f"bae: bae.use_adaptive_entropy must be true or false, got {enabled!r}")
        if not enabled:
            return None
        return cls(target=section.get("entropy_target", PAPER.entropy_target),
                   delta=section.get("entropy_coef_delta", PAPER.entropy_coef_delta),
                   coef_max=section.get("entropy_coef_max", 1.0))

    def applied(self) -> float:
        """The coefficient this update's loss uses."""
        return self.coef if self.last_entropy <= self.target else 0.0

    def update(self, entropy: float) -> None:
        """After an update whose batch had token-mean policy entropy `entropy`."""
        if not math.isfinite(entropy):
            raise ValueError(f"bae: the policy entropy is {entropy}: the controller cannot update")
        if entropy <= self.target:
            self.coef = min(self.coef + self.delta, self.coef_max)
        else:
            self.coef = max(self.coef - self.delta, 0.0)
        self.last_entropy = float(entropy)

    def state_dict(self) -> dict[str, float]:
        return {"entropy_coef": self.coef, "last_entropy": self.last_entropy}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.coef, self.last_entropy = float(state["entropy_coef"]), float(state["last_entropy"])


class EntropyControlledLoss:
    """The actor's loss with actor.entropy_coeff taken from the mini-batch: verl's ppo_loss (given
    as functools.partial(ppo_loss, config=ActorConfig)) called with a copy of its config whose
    entropy_coeff is the ENTROPY_COEF_KEY value the trainer put in the batch. Installed in the actor
    workers by the bae trainers (set_loss_fn) when the entropy controller is on; a batch without the
    key is refused (a fixed coefficient would be silently used otherwise)."""

    def __init__(self, loss: Any):
        self.loss = loss
        self._cached: tuple[float, Any] | None = None

    def config(self, coef: float) -> Any:
        base = self.loss.keywords["config"]
        if coef == base.entropy_coeff:
            return base
        if self._cached is None or self._cached[0] != coef:
            config = copy.copy(base)  # verl's ActorConfig freezes entropy_coeff: set it on a copy
            object.__setattr__(config, "entropy_coeff", coef)
            self._cached = (coef, config)
        return self._cached[1]

    def __call__(self, model_output: Any, data: Any, dp_group: Any = None):
        from verl.utils import tensordict_utils as tu

        coef = tu.get_non_tensor_data(data=data, key=ENTROPY_COEF_KEY, default=None)
        if coef is None:
            raise RuntimeError(f"bae: the actor's mini-batch has no {ENTROPY_COEF_KEY}: the entropy controller's "
                               "coefficient did not reach the loss (a trainer other than bae_<mode>?)")
        return self.loss.func(config=self.config(float(coef)), model_output=model_output, data=data, dp_group=dp_group)


# ---------------------------------------------------------------------------------------------
# The v1 trainer extension


def _session_of(key: str) -> tuple[str, str, str] | None:
    """(uid, session, output index) of an agent-loop TransferQueue key `{uid}_{session}_{index}`."""
    parts = key.rsplit("_", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def _padded(values: Any) -> torch.Tensor:
    """A [N, T] tensor from a TransferQueue tensor field (nested/jagged rows or stacked)."""
    return values.to_padded_tensor(0.0) if getattr(values, "is_nested", False) else values


class BlockwiseAdvantageMixin:
    """Mixed into a verl v1 PPOTrainer. When algorithm.adv_estimator is a bae estimator:

    - `_balance_batch` first refuses a batch that holds a row the reward manager could not score, a
      group with a failed rollout session, or a session of several outputs (_bae_check_batch);
    - `_compute_advantage` reads each row's reward_extra_info (same keys, same call) and forwards
      it, with the rows verl added as padding, the actor's loss layout and the `bae:` baseline
      options, to the estimator that verl's own `_compute_advantage` then calls through the
      registry; then logs ScoredBatch.metrics of the real rows (bae/<block>/..., bae/ece, ...);
    - the memory of a baseline that pools over batches (ocb_eb with bae.history) is the trainer's
      (`_bae_baseline_state`), forwarded with the block data, and saved with and restored from
      verl's checkpoints (STATE_FILE);
    - the entropy controller (EntropyController, unless bae.use_adaptive_entropy=false) measures
      the policy's token-mean entropy in `_compute_old_log_prob`, hands its coefficient to the
      actor's loss in `_update_actor` (EntropyControlledLoss, installed in `on_init_end`), logs it,
      and is saved with and restored from verl's checkpoints (STATE_FILE).
    Everything else is verl's code path."""

    @property
    def trainer_mode(self) -> str:
        return self._bae_trainer_mode

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        self._bae_trainer_mode = base_trainer_mode(value)

    @property
    def _bae_active(self) -> bool:
        return self.config.algorithm.adv_estimator in ESTIMATORS

    @property
    def _bae_baseline_state(self) -> dict:
        return self.__dict__.setdefault("_bae_baseline_memory", {})

    @property
    def _bae_entropy(self) -> EntropyController | None:
        if "_bae_entropy_controller" not in self.__dict__:
            self.__dict__["_bae_entropy_controller"] = EntropyController.from_config(self.config) if self._bae_active else None
        return self.__dict__["_bae_entropy_controller"]

    # -- the batch ------------------------------------------------------------------------------

    def _bae_check_batch(self, batch) -> None:
        """Refuse (RuntimeError) a sampled batch that bae would train on wrongly, before any actor work."""
        several = sorted({(s[0], s[1]) for s in map(_session_of, batch.keys) if s is not None and s[2] != "0"})
        if several:
            raise RuntimeError(f"bae: {len(several)} sessions returned several outputs (e.g. uid {several[0][0]}, session "
                               f"{several[0][1]}): verl copies the last output's reward_extra_info onto the others, so the "
                               "session would count several times in the baselines with the last response's block starts; "
                               "bae needs one output per session (actor_rollout_ref.rollout.agent.default_agent_loop="
                               "single_turn_agent, no per-row agent_name of another loop)")
        replay = getattr(self, "replay_buffer", None)
        failed = (getattr(replay, "failure_keys", None) or {}).get(batch.partition_id) or set()
        if failed:
            raise RuntimeError(f"bae: {len(failed)} prompt groups had a rollout session fail (e.g. {sorted(failed)[:3]}; the "
                               "error is in the agent-loop worker's log): verl trains on the rest of such a group, whose "
                               "baselines would then be the survivors' means. Training stops instead.")
        data = _tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["uid", "extra_fields"])
        infos = [(row or {}).get("reward_extra_info") or {} for row in _as_list(data["extra_fields"])]
        errors = [(i, info[ERROR_KEY]) for i, info in enumerate(infos) if info.get(ERROR_KEY) is not None]
        if errors:
            uids = _as_list(data["uid"])
            groups = sorted({str(uids[i]) for i, _ in errors})
            raise RuntimeError(f"bae: the reward manager could not score {len(errors)} of {len(infos)} responses in "
                               f"{len(groups)} prompt groups (e.g. {groups[:3]}); training stops rather than train on "
                               f"these groups without them. First error: {errors[0][1]}")

    def _balance_batch(self, batch, *args, **kwargs):
        if self._bae_active:
            self._bae_check_batch(batch)
        return super()._balance_batch(batch, *args, **kwargs)

    def _bae_forwarded(self, batch) -> dict[str, Any]:
        data = _tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["uid", "extra_fields"])
        uids = np.array(_as_list(data["uid"]), dtype=object)
        infos = [(row or {}).get("reward_extra_info") or {} for row in _as_list(data["extra_fields"])]
        tags = getattr(batch, "tags", None) or [{}] * len(batch.keys)
        padding = np.array([bool((tag or {}).get("is_padding", False)) for tag in tags], dtype=bool)
        aggregation, max_length = loss_layout(self.config.actor_rollout_ref.actor)
        abstain = bool(infos[0].get(ABSTAIN_KEY, 0)) if infos else False
        return {"scored": scored_batch(infos, uids), "padding": padding, "loss_agg_mode": aggregation,
                "loss_scale_factor": max_length, "bae_options": baseline_options(self.config), "abstain": abstain,
                "state": self._bae_baseline_state}

    def _compute_advantage(self, batch, metrics: dict):
        if not self._bae_active:
            return super()._compute_advantage(batch, metrics)
        forwarded = self._bae_forwarded(batch)
        token = _FORWARDED.set(forwarded)
        try:
            out = super()._compute_advantage(batch, metrics)
        finally:
            _FORWARDED.reset(token)
        if "result" not in forwarded:
            raise RuntimeError("bae: verl's _compute_advantage did not call the bae estimator")
        real, adv = forwarded["result"]
        metrics.update(real.metrics(adv, abstain=forwarded["abstain"]))
        return out

    # -- the entropy controller -----------------------------------------------------------------

    def on_init_end(self):
        super().on_init_end()
        if self._bae_entropy is not None:
            from functools import partial

            from verl.utils.config import omega_conf_to_dataclass
            from verl.workers.utils.losses import ppo_loss

            actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
            self.actor_rollout_wg.set_loss_fn(EntropyControlledLoss(partial(ppo_loss, config=actor_config)))

    def _compute_old_log_prob(self, batch, metrics: dict):
        out = super()._compute_old_log_prob(batch, metrics)
        if self._bae_entropy is not None:
            data = _tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["entropy", "response_mask"])
            if "entropy" not in data.keys():
                raise RuntimeError("bae: the old-log-prob pass wrote no entropy, which the entropy controller reads")
            entropy, mask = _padded(data["entropy"]).double(), _padded(data["response_mask"]).double()
            self._bae_step_entropy = float((entropy * mask).sum() / mask.sum().clamp(min=1.0))  # padding rows: mask 0
        return out

    def _update_actor(self, batch, metrics: dict):
        controller = self._bae_entropy
        if controller is None:
            return super()._update_actor(batch, metrics)
        entropy = self.__dict__.pop("_bae_step_entropy", None)
        if entropy is None:
            raise RuntimeError("bae: no policy entropy was measured for this update (old-log-prob pass skipped?)")
        applied = controller.applied()
        batch.extra_info[ENTROPY_COEF_KEY] = applied
        actor = self.config.actor_rollout_ref.actor
        calculate = actor.calculate_entropy
        from omegaconf import open_dict

        with open_dict(actor):  # the update's forward computes the entropy only when its term counts
            actor.calculate_entropy = bool(calculate) or applied != 0.0
        try:
            out = super()._update_actor(batch, metrics)
        finally:
            with open_dict(actor):
                actor.calculate_entropy = calculate
        controller.update(entropy)
        metrics.update({"bae/entropy": entropy, "bae/entropy_coef_applied": applied, "bae/entropy_coef": controller.coef})
        return out

    def _bae_state_path(self, step: int) -> str:
        folder = self.config.trainer.default_local_dir
        if not os.path.isabs(folder):
            folder = os.path.join(os.getcwd(), folder)
        return os.path.join(folder, f"global_step_{step}", STATE_FILE)

    def _save_checkpoint(self):
        if self._bae_active:  # written before verl's tracker file names this checkpoint
            from bae.io import atomic_write_text

            controller = self._bae_entropy.state_dict() if self._bae_entropy is not None else {}
            atomic_write_text(self._bae_state_path(self.global_steps),
                              json.dumps({"global_step": self.global_steps, **controller,
                                          "baseline_state": self._bae_baseline_state}))
        return super()._save_checkpoint()

    def _load_checkpoint(self):
        out = super()._load_checkpoint()
        if self._bae_active and self.global_steps > 0:
            if self.config.trainer.resume_mode == "resume_path":
                folder = self.config.trainer.resume_from_path
                path = os.path.join(folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder), STATE_FILE)
            else:
                path = self._bae_state_path(self.global_steps)
            if not os.path.isfile(path):
                if self._bae_entropy is None:  # nothing that must be restored: a baseline memory starts empty
                    return out
                raise RuntimeError(f"bae: the checkpoint of step {self.global_steps} has no {STATE_FILE} ({path}): the "
                                   "entropy controller's coefficient cannot be restored. Resume from a checkpoint the bae "
                                   "trainer wrote, or set bae.use_adaptive_entropy=false")
            with open(path) as f:
                saved = json.load(f)
            if self._bae_entropy is not None:
                self._bae_entropy.load_state_dict(saved)
            self._bae_baseline_state.clear()
            self._bae_baseline_state.update(saved.get("baseline_state") or {})
        return out

    def _val_metrics_update(self, data_sources, sample_uids, reward_extra_infos_dict, *args, **kwargs):
        errors = [e for e in reward_extra_infos_dict.get(ERROR_KEY, []) if e is not None]
        if errors and self._bae_active:
            raise RuntimeError(f"bae: the reward manager could not score {len(errors)} validation responses; first error: "
                               f"{errors[0]}")
        return super()._val_metrics_update(data_sources, sample_uids, reward_extra_infos_dict, *args, **kwargs)


TRAINERS: dict[str, type] = {}
try:  # the v1 trainer needs verl's core extra (TransferQueue, cachetools, ...)
    import transfer_queue as _tq
    from verl.trainer.main_ppo import TaskRunnerV1 as _TaskRunnerV1
    from verl.trainer.ppo.v1 import get_trainer_cls as _get_trainer_cls
    from verl.trainer.ppo.v1 import register_trainer as _register_trainer
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY as _TRAINER_REGISTRY

    _V1_ERROR: ImportError | None = None
except ImportError as _err:  # pragma: no cover - depends on the install
    _V1_ERROR = _err


def register_trainers() -> dict[str, type]:
    """Register "bae_<mode>" for each v1 trainer mode (idempotent)."""
    if _V1_ERROR is not None:
        raise ImportError(f"bae: verl's v1 trainer is not importable ({_V1_ERROR}); install verl's core extra") from _V1_ERROR
    for mode in TRAINER_MODES:
        name = PREFIX + mode
        existing = _TRAINER_REGISTRY.get(name)
        if existing is not None and getattr(existing, "__bae_mode__", None) == mode:
            TRAINERS[name] = existing
            continue
        base = _get_trainer_cls(mode)
        cls = type(f"BAE{base.__name__}", (BlockwiseAdvantageMixin, base), {"__bae_mode__": mode, "__module__": __name__,
                                                                            "__doc__": f"verl's {mode!r} trainer with bae's advantage forwarding."})
        TRAINERS[name] = _register_trainer(name)(cls)
        globals()[cls.__name__] = cls  # importable by name (pickling)
    return dict(TRAINERS)


def _register() -> None:
    """Everything this module registers with verl; runs once, when the module is imported by name."""
    register_reward_manager("bae")(BAERewardManager)
    register_estimators()
    if _V1_ERROR is None:
        register_trainers()


SINGLE_OUTPUT_AGENT_LOOPS = ("single_turn_agent",)
"""verl agent loops that return one output per session with the whole response as the completion."""


def _selected(config: Any, dotted: str, default: Any = None) -> Any:
    from omegaconf import OmegaConf

    value = OmegaConf.select(config, dotted, default=default)
    return default if value is None else value


def check_settings(config: Any) -> None:
    """Refuse (ValueError naming the key and why) a run config under which the bae estimators
    would be silently wrong. Called by check_launch, so in the driver before Ray starts and in the
    task runner before verl builds any worker."""
    if _selected(config, "algorithm.use_kl_in_reward", False):
        raise ValueError("bae: algorithm.use_kl_in_reward=true subtracts a KL penalty from token_level_rewards, which "
                         "the bae estimators never read (they read the block rewards): the penalty would be dropped "
                         "without a word. Set it to false (Table 4: no KL), or use actor_rollout_ref.actor.use_kl_loss")
    if _selected(config, "reward.reward_model.enable", False):
        raise ValueError("bae: reward.reward_model.enable=true scores the responses with verl's reward model instead of "
                         "BAERewardManager, so no row carries block rewards; set it to false (bae scores with its task)")
    if _selected(config, "reward.custom_reward_function.path") is not None:
        raise ValueError("bae: reward.custom_reward_function.path is set, but BAERewardManager scores with the bae task "
                         "named by data_source and would ignore the function; unset it")
    if _selected(config, "algorithm.filter_groups.enable", False):
        metric = _selected(config, "algorithm.filter_groups.metric", "reward")
        if metric != REWARDS_ID_KEY:
            raise ValueError(f"bae: algorithm.filter_groups.metric={metric} (DAPO dynamic sampling) evicts every group in "
                             f"which {metric} does not vary, but under bae such a group still has advantages wherever "
                             "one block's reward varies (with acc: a group that is all right still learns its "
                             "confidence; with reward, the total: two responses of equal total can differ block by "
                             f"block, as under malformed: carry); use metric={REWARDS_ID_KEY} (equal exactly when the "
                             "block rewards are) or filter_groups.enable=false")
    agent = _selected(config, "actor_rollout_ref.rollout.agent.default_agent_loop", "single_turn_agent")
    if agent not in SINGLE_OUTPUT_AGENT_LOOPS:
        raise ValueError(f"bae: actor_rollout_ref.rollout.agent.default_agent_loop={agent}: bae scores one single-turn "
                         "response per session; an agent loop that returns several outputs would have verl copy the last "
                         "one's reward_extra_info onto every output (the session counted several times in the baselines, "
                         f"the last response's block starts applied to the others). Use one of {list(SINGLE_OUTPUT_AGENT_LOOPS)}")
    if _selected(config, "actor_rollout_ref.rollout.agent.agent_loop_config_path") is not None:
        raise ValueError("bae: actor_rollout_ref.rollout.agent.agent_loop_config_path registers agent loops that may "
                         "return several outputs per session (see default_agent_loop); bae needs single_turn_agent")
    estimator = str(config.algorithm.adv_estimator)
    try:
        check_options(ESTIMATORS.get(estimator, estimator[len(PREFIX):]), baseline_options(config))
    except ValueError as err:
        raise ValueError(f"bae: the `bae:` section does not fit algorithm.adv_estimator={estimator}: {err}") from None
    controller = EntropyController.from_config(config)  # raises for a bad bae.entropy_* value
    if controller is None:
        return
    coeff = _selected(config, "actor_rollout_ref.actor.entropy_coeff", 0.0)
    if coeff != 0:
        raise ValueError(f"bae: actor_rollout_ref.actor.entropy_coeff={coeff} with the entropy controller on: the "
                         "controller sets the coefficient each step (it starts at 0); set entropy_coeff=0, or turn the "
                         "controller off with bae.use_adaptive_entropy=false to use a fixed bonus")
    if _selected(config, "distillation.enabled", False):
        raise ValueError("bae: distillation.enabled=true replaces the actor's ppo_loss, which the entropy controller's "
                         "coefficient reaches; set bae.use_adaptive_entropy=false or disable distillation")
    if _selected(config, "algorithm.rollout_correction.bypass_mode", False):
        raise ValueError("bae: algorithm.rollout_correction.bypass_mode=true skips the old-log-prob pass, where the entropy "
                         "controller measures the policy entropy; set it to false or bae.use_adaptive_entropy=false")


def check_launch(config: Any) -> str:
    """Refuse (ValueError), in the process that calls it, a run whose bae pieces verl would not find
    here or could not use; return a one-line report of what this process has registered.

    Called by the launcher in the driver (before Ray starts) and by BAETaskRunner in its own Ray
    process, before verl looks the trainer up. What it refuses, each of which would otherwise fail
    only once Ray, TransferQueue and the workers are up (most at the first advantage step):
    - trainer.v1.trainer_mode or a bae_* algorithm.adv_estimator that this process does not know;
    - a bae_* estimator with a trainer that does not forward the block data (not bae_<mode>);
    - an actor loss layout under which the per-block token mean cannot be reproduced (loss_layout:
      a policy loss off the allow-list POLICY_LOSSES, an aggregation the core does not reproduce);
    - a setting under which the bae path would be silently wrong (check_settings: KL in the reward,
      a reward model or custom reward function instead of the bae task, an agent loop that may
      return several outputs per session, a `bae:` section the estimator or the entropy controller
      cannot use, a fixed entropy bonus or a loss route the controller would not reach);
    - a reward manager other than BAERewardManager (or a subclass), and `source=register,
      name=bae`: verl resolves the reward manager inside each reward worker, a process that never
      imports bae; `source=importlib` with `module.path=pkg://bae.engines.verl` imports it there.
    """
    import os

    if _V1_ERROR is not None:
        raise ImportError(f"bae: verl's v1 trainer is not importable ({_V1_ERROR})") from _V1_ERROR
    mode = str(config.trainer.v1.trainer_mode)
    trainer_cls = _get_trainer_cls(mode)  # verl's own message when unknown
    estimator = str(config.algorithm.adv_estimator)
    if estimator.startswith(PREFIX) or estimator in ESTIMATORS:
        if estimator not in ESTIMATORS:
            raise ValueError(f"bae: unknown estimator algorithm.adv_estimator={estimator}; registered: {sorted(ESTIMATORS)}")
        core_algos.get_adv_estimator_fn(estimator)
        if not issubclass(trainer_cls, BlockwiseAdvantageMixin):
            raise ValueError(f"bae: algorithm.adv_estimator={estimator} reads the per-block data that only the bae "
                             f"trainers forward; set trainer.v1.trainer_mode={PREFIX}{base_trainer_mode(mode)} "
                             f"(one of {sorted(TRAINERS)}), not {mode}")
        loss_layout(config.actor_rollout_ref.actor)
        check_settings(config)
        manager = config.reward.reward_manager
        if manager.source == "register" and manager.name == "bae":
            raise ValueError("bae: reward.reward_manager.source=register with name=bae is looked up inside each reward "
                             "worker, which never imports bae; use source=importlib, name=BAERewardManager, "
                             "module.path=pkg://bae.engines.verl (docs/verl.md)")
        from verl.trainer.ppo.reward import resolve_reward_manager_cls

        manager_cls = resolve_reward_manager_cls(config)
        if not (isinstance(manager_cls, type) and issubclass(manager_cls, BAERewardManager)):
            raise ValueError(f"bae: algorithm.adv_estimator={estimator} needs the per-block rewards that "
                             f"BAERewardManager writes; reward.reward_manager resolves to {manager_cls!r}")
    return (f"bae.engines.verl (pid {os.getpid()}): trainer {mode} -> {trainer_cls.__name__}, estimator {estimator}; "
            f"registered trainers {sorted(TRAINERS)}, estimators {sorted(ESTIMATORS)}")


if _V1_ERROR is None:
    import ray as _ray

    class BAETaskRunnerV1(_TaskRunnerV1.__ray_actor_class__):
        """verl's TaskRunnerV1 whose `run` first makes sure this process has bae registered.

        Ray ships the actor's class to the actor process with cloudpickle. A class that is
        importable under its own name (this one: bae.engines.verl.BAETaskRunnerV1) is shipped by
        reference, so unpickling it imports this module in the actor, and with it every
        registration; `run` imports the module by name again, so a subclass shipped by value
        (one defined in a user's __main__) registers too, then refuses what check_launch refuses
        before verl looks the trainer up. (A class decorated with @ray.remote in place is not
        importable by its name, since the name then holds the ActorClass: it travels by value and
        the actor never imports the module that defined it.)
        """

        def run(self, config):
            import bae.engines.verl as bv  # by name: runs the registrations in this process

            print(bv.check_launch(config), flush=True)
            return super().run(config)

    BAETaskRunner = _ray.remote(BAETaskRunnerV1)  # the actor class to hand to verl's run_ppo


def launch(config: Any) -> None:
    """Run verl's PPO on a composed ppo_trainer config, as verl's main_ppo does, with BAETaskRunner:
    auto_set_device, validate_config, check_launch (here, before Ray starts), then
    run_ppo(config, task_runner_class=BAETaskRunner), which starts Ray unless it is running."""
    if _V1_ERROR is not None:
        raise ImportError(f"bae: verl's v1 trainer is not importable ({_V1_ERROR})") from _V1_ERROR
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    if not config.trainer.use_v1:
        raise ValueError("bae: the blockwise estimators need the v1 trainer (trainer.use_v1=true)")
    check_launch(config)
    run_ppo(config, task_runner_class=BAETaskRunner)


def main() -> None:
    """`python -m bae.engines.verl <hydra overrides>`: verl's main_ppo with BAETaskRunner (see launch)."""
    import hydra

    @hydra.main(config_path="pkg://verl.trainer.config", config_name="ppo_trainer", version_base=None)
    def _main(config):
        launch(config)

    _main()


if __name__ == "__main__":
    from bae.engines.verl import main as _importable_main  # the importable copy registers everything

    _importable_main()
else:
    _register()
