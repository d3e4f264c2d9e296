"""verl adapter (checked against verl 0.9.1): blockwise advantages as registered verl estimators.

Importable only when verl is installed (`pip install bae-rl[verl]`); the core never imports it.

What it registers with verl (at import, in every process that imports this module):
- advantage estimators "bae_<baseline>", one per baseline of bae.advantages.BASELINES
  ("bae_none", "bae_batch_mean", "bae_group_mean", "bae_ocb", "bae_ocb_loo", "bae_ocb_shrink");
- the reward manager "bae" (`BAERewardManager`): scores each completion with a bae Task and writes
  its per-block rewards, outcomes and block start tokens into reward_extra_info as scalars;
- v1 trainers "bae_sync", "bae_colocate_async", "bae_separate_async": verl's own trainers of those
  modes whose `_compute_advantage` forwards the per-row reward_extra_info to the estimator.

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
(the paper; Dr.GRPO style). Options of the core (ocb_shrink's `shrink`) come from a top-level `bae:`
section of the run config (`+bae.shrink=2.0`), because verl's AlgoConfig rejects unknown keys.
"""

from __future__ import annotations

import contextvars
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from verl.experimental.reward_loop.reward_manager import register as register_reward_manager
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.trainer.ppo import core_algos

from bae import tasks as bae_tasks
from bae.advantages import BASELINES, DEFAULT_EPS
from bae.batch import ScoredBatch, score_completions
from bae.blocks import block_starts
from bae.objective import AGGREGATIONS, token_advantages

PREFIX = "bae_"
REWARD_KEY = "bae_reward_{}"  # reward of block k, float
OUTCOME_KEY = "bae_outcome_{}"  # outcome of the prefix before block k (k >= 1), int
START_KEY = "bae_start_{}"  # index of block k's first response token (k >= 1), int; T if it has none
ANSWER_KEY = "bae_answer_{}"  # tasks with a group-level outcome (answer_class) only: the answer that the
#                               outcome of block k is about (k >= 1), str, "" for none
TASK_KEY = "bae_task"  # with ANSWER_KEY: the task's config as JSON (system prompt left out), to assign the classes
DEFAULT_AGGREGATION = "seq-mean-token-mean"
TRAINER_MODES = ("sync", "colocate_async", "separate_async")
ESTIMATORS: dict[str, str] = {}  # verl estimator name -> bae baseline name


# ---------------------------------------------------------------------------------------------
# Reward side: one completion -> scalar reward_extra_info


def block_extra_info(score: bae_tasks.Score, starts: Sequence[int]) -> dict[str, Any]:
    """reward_extra_info of one completion: scalar keys only (verl stacks them with np.array)."""
    info: dict[str, Any] = {REWARD_KEY.format(k): float(r) for k, r in enumerate(score.rewards)}
    info.update({OUTCOME_KEY.format(k): int(o) for k, o in enumerate(score.outcomes) if k >= 1})
    info.update({START_KEY.format(k + 1): int(s) for k, s in enumerate(starts)})
    info["acc"] = float(score.correct)
    info["bae_malformed"] = int(score.malformed)
    info["bae_abstained"] = int(score.abstained)
    info["bae_confidence"] = float("nan") if score.confidence is None else float(score.confidence)
    return info


def score_response(task: bae_tasks.Task, tokenizer: Any, response_ids: Sequence[int], gold: str) -> dict[str, Any]:
    """{"reward_score": sum of block rewards, "reward_extra_info": block_extra_info(...)} for one
    response (its valid token ids), scored as the TRL engine scores (bae.batch.score_completions:
    the one offsets algorithm, bae.blocks.token_offsets); the block starts are read off the token
    block ids. The scalar reward_score is what verl logs and what a built-in estimator would see;
    the bae estimators read the per-block values instead."""
    (score,), (ids,) = score_completions(task, tokenizer, [list(response_ids)], [gold])
    starts = block_starts(ids, task.num_blocks)
    info = block_extra_info(score, starts)
    if task.group_outcome_columns:  # answer_class: the classes need the group, assigned in scored_batch
        info.update({ANSWER_KEY.format(k): score.prefix_answers[k] or "" for k in task.group_outcome_columns})
        info[TASK_KEY] = task.config.model_copy(update={"system_prompt": ""}).model_dump_json()
    return {"reward_score": float(sum(score.rewards)), "reward_extra_info": info}


class BAERewardManager(RewardManagerBase):
    """verl reward manager for bae's tasks (registered as "bae" in verl's reward-manager registry).

    Each row's `data_source` names a built-in task (bae.tasks.BUILTIN: self_confidence, two_attempt,
    arithmetic, ...); optional task options (e.g. {"confidence_reward": "bce"}) come from the row's
    extra_info["bae_task_options"]; the gold answer from reward_model.ground_truth (verl's layout).
    Single-turn responses: the whole response is the completion split into blocks. Every row of a
    run must use tasks with the same number of blocks (verl needs the same extra keys on every row).
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
        item = data[-1:][0]  # multi-output trajectories: score the last, as verl's naive manager
        responses = item.batch["responses"]
        valid = int(item.batch["attention_mask"][-responses.shape[-1]:].sum())
        ids = responses[:valid].tolist()
        extra = item.non_tensor_batch.get("extra_info", None) or {}
        task = self.task(str(item.non_tensor_batch["data_source"]), extra.get("bae_task_options"))
        gold = item.non_tensor_batch["reward_model"]["ground_truth"]
        return await self.loop.run_in_executor(None, lambda: score_response(task, self.tokenizer, ids, gold))


# ---------------------------------------------------------------------------------------------
# Advantage side: per-row block data -> [bs, T] advantages


def scored_batch(infos: Sequence[Mapping[str, Any]], uids: Any = None) -> ScoredBatch:
    """The ScoredBatch of a training batch from one reward_extra_info mapping per row (the v1
    trainer's extra_fields layout): rewards, outcomes, flags and confidences, the rows' uids as
    groups, and the block starts (block_starts [N, K - 1])."""
    n = len(infos)
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
    batch = ScoredBatch(rewards=rewards, outcomes=outcomes, groups=np.asarray(uids if uids is not None else np.arange(n), dtype=object),
                        correct=flags[:, 0], confidence=confidence, malformed=flags[:, 1], abstained=flags[:, 2],
                        block_names=tuple(f"block{j + 1}" for j in range(k)), block_starts=starts)
    if n and TASK_KEY in infos[0]:  # a group-level outcome (answer_class): assign it over the uids' groups
        answers = np.full((n, k), None, dtype=object)
        for i, info in enumerate(infos):
            for j in range(1, k):
                answers[i, j] = str(info.get(ANSWER_KEY.format(j), "")) or None
        batch = batch.with_fields(answers=answers).with_group_outcomes(_recorded_task(str(infos[0][TASK_KEY])))
    return batch


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
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        forwarded = _FORWARDED.get() or {}
        scored = scored if scored is not None else forwarded.get("scored")
        loss_agg_mode = loss_agg_mode or forwarded.get("loss_agg_mode") or DEFAULT_AGGREGATION
        loss_scale_factor = loss_scale_factor if loss_scale_factor is not None else forwarded.get("loss_scale_factor")
        options = dict(bae_options if bae_options is not None else forwarded.get("bae_options") or {})
        if index is None:
            raise ValueError("bae estimators group by prompt uid: the batch has no 'uid'")
        batch = _resolve_batch(scored, non_tensor_batch, np.asarray(index, dtype=object), token_level_rewards.shape[0])
        scale = "group" if _config_get(config, "norm_adv_by_std_in_grpo", True) else "none"
        with torch.no_grad():
            batch = batch.with_fields(groups=np.asarray(index, dtype=object).astype(str))
            adv = batch.advantages("bae", baseline, scale, eps=DEFAULT_EPS, **options)  # [N, K]
            ids = batch.token_block_ids(response_mask)  # [N, T]
            tokens = token_advantages(adv, ids, loss_agg_mode, loss_scale_factor)  # [N, T] float32
            tokens = tokens.to(device=token_level_rewards.device, dtype=token_level_rewards.dtype)
        return tokens, tokens

    estimator.__name__ = f"compute_bae_{baseline}_advantage"
    estimator.__qualname__ = estimator.__name__
    estimator.__doc__ = (
        f"verl advantage estimator '{PREFIX}{baseline}': blockwise advantages (bae.advantages, baseline "
        f"{baseline!r} for blocks k >= 2, group mean for block 1) spread over tokens with per-block token "
        "weights for the actor's loss_agg_mode (bae.objective). Returns (advantages, returns), both [bs, T]."
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


def loss_layout(actor_config: Any) -> tuple[str, int | None]:
    """(aggregation, max_length) that the token weights must follow for this actor config; raises
    for a configuration under which the per-block token mean cannot be reproduced."""
    loss_mode = _config_get(_config_get(actor_config, "policy_loss", None), "loss_mode", "vanilla")
    if loss_mode == "geo_mean":
        raise ValueError("bae: policy_loss.loss_mode=geo_mean averages advantages over each sequence, which erases blocks; use vanilla")
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


class BlockwiseAdvantageMixin:
    """Mixed into a verl v1 PPOTrainer: when algorithm.adv_estimator is a bae estimator,
    `_compute_advantage` reads each row's reward_extra_info (same keys, same call) and forwards it,
    with the actor's loss layout and the `bae:` options, to the estimator that verl's own
    `_compute_advantage` then calls through the registry. Everything else is verl's code path."""

    @property
    def trainer_mode(self) -> str:
        return self._bae_trainer_mode

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        self._bae_trainer_mode = base_trainer_mode(value)

    def _bae_forwarded(self, batch) -> dict[str, Any]:
        data = _tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["uid", "extra_fields"])
        uids = np.array(_as_list(data["uid"]), dtype=object)
        infos = [(row or {}).get("reward_extra_info") or {} for row in _as_list(data["extra_fields"])]
        aggregation, max_length = loss_layout(self.config.actor_rollout_ref.actor)
        options = self.config.get("bae", None) or {}
        return {"scored": scored_batch(infos, uids), "loss_agg_mode": aggregation,
                "loss_scale_factor": max_length, "bae_options": dict(options)}

    def _compute_advantage(self, batch, metrics: dict):
        if self.config.algorithm.adv_estimator not in ESTIMATORS:
            return super()._compute_advantage(batch, metrics)
        token = _FORWARDED.set(self._bae_forwarded(batch))
        try:
            return super()._compute_advantage(batch, metrics)
        finally:
            _FORWARDED.reset(token)


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


def check_launch(config: Any) -> str:
    """Refuse (ValueError), in the process that calls it, a run whose bae pieces verl would not find
    here or could not use; return a one-line report of what this process has registered.

    Called by the launcher in the driver (before Ray starts) and by BAETaskRunner in its own Ray
    process, before verl looks the trainer up. What it refuses, each of which would otherwise fail
    only once Ray, TransferQueue and the workers are up (most at the first advantage step):
    - trainer.v1.trainer_mode or a bae_* algorithm.adv_estimator that this process does not know;
    - a bae_* estimator with a trainer that does not forward the block data (not bae_<mode>);
    - an actor loss layout under which the per-block token mean cannot be reproduced (loss_layout);
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
