"""End to end on CPU through verl's own pieces: one bae_sync training step of the paper recipe.

    verl's RewardLoopManager (a real Ray reward worker that loads BAERewardManager by importlib)
 -> verl's agent-loop postprocess (AgentLoopWorkerTQ: reward call, TransferQueue row layout)
 -> the bae_sync trainer's on_init_end (installs the entropy controller's loss in the actor workers),
    _balance_batch (bae's batch checks, verl's padding and reordering), _compute_old_log_prob
    (verl's TrainingWorker.infer_batch per dp rank: log-probs and entropy; the controller measures
    the entropy) and _compute_advantage (bae's per-block metrics)
 -> the trainer's _update_actor -> dispatch over dp ranks -> TrainingWorker.train_mini_batch
    -> train_batch -> the FSDP engine's forward_backward_batch (prepare_micro_batches with
    use_dynamic_bsz, forward_step, the recipe's loss: ppo_loss with vanilla clipping,
    seq-mean-token-mean, dp-size scaling by the global batch, and the controller's entropy
    coefficient) -> optimizer_step

must give the paper's loss and its gradient, computed directly and block by block:

    L_BAE = -(1/N) sum_i sum_k (1/|T_ik|) sum_{t in T_ik} min(rho_t A_ik, clip(rho_t, 1-e, 1+e) A_ik)
            - c (1/N) sum_i (1/|T_i|) sum_{t in T_i} H_t

with A from bae.advantages on the task's own scores, T_ik from bae.blocks on the decoded text
(neither reads what the reward manager wrote), H_t the policy's entropy at token t and c the
controller's coefficient for this update, for 1, 2 and 4 data-parallel ranks.

Stand-ins, only where verl cannot run here (one CPU process, no accelerator, no network):
- TransferQueue: an in-memory store of the same rows (test_engine_verl.FakeTransferQueue);
- the accelerator: verl has no CPU platform, so a PlatformCUDA whose device is the CPU is set with
  verl's own set_platform (the engine only asks it for device names and memory counters);
- FSDP and the dp process group: the ranks run one after the other in this process on one plain
  Qwen2 module (the parameters FSDP would shard are the same on every rank); the dp all-reduce is
  the mean of the ranks' gradients (FSDP's reduce averages, which verl's loss scaling by dp_size
  expects) and of their losses (_postprocess_output's AVG); torch.distributed is a 1-process gloo
  group, so the engine's all-reduce of batch_num_tokens sees one rank (only token-mean reads it);
- the optimizer: a recorder of the gradients it is asked to step with (grad clipping is verl's
  own call with an infinite threshold: verl clips the all-reduced gradient, which a per-rank
  simulation cannot);
- the rollout: the completions are fixed texts tokenised with the tiny tokenizer; the old policy's
  log-probs that verl's old-log-prob pass writes are replaced by the current ones plus fixed noise
  (so that some ratios leave [1-e, 1+e]); its entropy is kept;
- `actor_rollout_ref.model.use_remove_padding=false`: verl's packed (remove-padding) path needs the
  flash-attention varlen kernels; its padded path is the same loss on the same tokens.
"""

from __future__ import annotations

import asyncio
import types
import uuid
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from test_engine_verl import TEXTS, FakeTransferQueue, paper_loss  # noqa: E402

import bae.engines.verl  # noqa: E402, F401  (registers bae_sync in this process: the trainer below is its class)
from bae import tasks  # noqa: E402
from bae.advantages import blockwise_advantages  # noqa: E402
from bae.blocks import token_block_ids  # noqa: E402
from bae.embedded.tiny import save_tiny  # noqa: E402
from bae.paper import PAPER as _PAPER  # noqa: E402

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"
TASK_NAME, GOLD = "arithmetic", "4"
GROUPS, N = 4, 4  # prompts x rollout.n = 16 completions
CLIP = 0.2
PAPER_TARGET, PAPER_DELTA = _PAPER.entropy_target, _PAPER.entropy_coef_delta


class InMemoryTransferQueue(FakeTransferQueue):
    """FakeTransferQueue plus the agent loop's async put (rows and their tags). As TransferQueue's
    controller does, a tensor field is nested (jagged) when its rows differ in shape anywhere in the
    store, not only within the rows asked for; a put answers with a KVBatchMeta of the keys, their
    tags and every field they hold."""

    def __init__(self, rows=None, tags=None):
        super().__init__({key: dict(fields) for key, fields in (rows or {}).items()})
        self.tags = dict(tags or {})

    def kv_batch_get(self, keys, partition_id, select_fields):
        from tensordict import NonTensorStack, TensorDict

        out = {}
        for name in [f for f in (select_fields or self.rows[keys[0]]) if f in self.rows[keys[0]]]:
            values = [self.rows[key][name] for key in keys]
            if all(isinstance(v, torch.Tensor) for v in values):
                shapes = {tuple(row[name].shape) for row in self.rows.values() if name in row}
                out[name] = torch.stack(values) if len(shapes) == 1 else torch.nested.as_nested_tensor(values, layout=torch.jagged)
            else:
                out[name] = NonTensorStack(*values)
        return TensorDict(out, batch_size=[len(keys)])

    async def async_kv_batch_put(self, keys, fields, tags, partition_id):
        for i, key in enumerate(keys):
            self.rows[key] = {name: fields[name][i] for name in fields.keys()}
            self.tags[key] = tags[i]

    def kv_batch_put(self, keys, partition_id, fields, tags=None):
        from transfer_queue import KVBatchMeta

        super().kv_batch_put(keys, partition_id, fields)
        for key, tag in zip(keys, tags or [None] * len(keys)):
            if tag is not None:
                self.tags[key] = tag
        return KVBatchMeta(keys=list(keys), tags=[self.tags[k] for k in keys], partition_id=partition_id,
                           fields=list(self.rows[keys[0]]))


def cpu_platform():
    """verl's CUDA platform with the CPU as its device (verl 0.9.1 registers no CPU platform; the
    engine asks the platform for the device name, the current device and memory counters only)."""
    from verl.plugin.platform.platform_cuda import PlatformCUDA

    memory = types.SimpleNamespace(max_memory_allocated=lambda *a, **k: 0, max_memory_reserved=lambda *a, **k: 0,
                                   memory_allocated=lambda *a, **k: 0, empty_cache=lambda: None)

    class CPUPlatform(PlatformCUDA):
        device_name = "cpu"
        device_module = memory

        def is_available(self):
            return True

        def current_device(self):
            return "cpu"

    return CPUPlatform()


@pytest.fixture(scope="module")
def cpu_verl():
    """verl's platform pointed at the CPU and a 1-process gloo group, both restored afterwards."""
    import torch.distributed as dist
    from verl.plugin.platform import platform_manager

    previous = platform_manager._current_platform
    platform_manager.set_platform(cpu_platform())
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        if started:
            dist.destroy_process_group()
        platform_manager._current_platform = previous


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("tiny") / "model"))


def composed(tiny_dir, max_tokens):
    overrides = [
        f"actor_rollout_ref.model.path={tiny_dir}",
        "actor_rollout_ref.model.use_remove_padding=false",  # the padded path (see the module docstring)
        f"data.train_batch_size={GROUPS}", f"actor_rollout_ref.actor.ppo_mini_batch_size={GROUPS}",  # still the whole batch
        f"actor_rollout_ref.rollout.n={N}",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={max_tokens}",  # several micro-batches per rank
        "reward.num_workers=1",
    ]
    with initialize_config_dir(config_dir=str(PAPER), version_base=None):
        cfg = compose(config_name="verl_qwen2.5-3b-instruct", overrides=overrides)
    OmegaConf.resolve(cfg)  # as TaskRunnerV1.run does
    return cfg


def completions(tokenizer):
    """(uid, prompt ids, response ids with EOS) for GROUPS prompts x N samples, texts of mixed quality."""
    rng = np.random.default_rng(0)
    out = []
    for g in range(GROUPS):
        uid = str(uuid.UUID(int=int(rng.integers(1 << 62))))
        prompt = tokenizer(f"What is {g}{' ' * g}+ {4 - g}?")["input_ids"]  # prompts of different lengths
        for j in range(N):
            text = TEXTS[(3 * g + j) % len(TEXTS)]
            out.append((uid, j, prompt, tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]))
    return out


@pytest.fixture(scope="module")
def rollout(local_ray, cpu_verl, tiny_dir):
    """The TransferQueue rows of one rollout, as verl's agent loop writes them after scoring each
    completion with verl's reward worker (a Ray actor) running BAERewardManager."""
    from verl.experimental.agent_loop import AgentLoopOutput
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ
    from verl.utils import hf_tokenizer

    cfg = composed(tiny_dir, 1 << 14)
    tokenizer = hf_tokenizer(tiny_dir)
    manager = RewardLoopManager(config=cfg, rm_resource_pool=None)
    store = InMemoryTransferQueue()

    agent = object.__new__(AgentLoopWorkerTQ.__ray_actor_class__)  # its postprocess only, not its rollout
    agent.reward_loop_worker_handles = manager.reward_loop_worker_handles
    agent.processor, agent.mm_processor_kwargs, agent.distillation_enabled = None, None, False
    rows = completions(tokenizer)

    def postprocess(into, uid, j, p, r, i, data_source):
        return agent._agent_loop_postprocess(
            AgentLoopOutput(prompt_ids=p, response_ids=r, response_mask=[1] * len(r), num_turns=2, metrics=AgentLoopMetrics()),
            False, uid=uid, session_id=j, data_source=data_source, reward_model={"style": "rule", "ground_truth": GOLD},
            extra_info={"index": i}, raw_prompt=[], index=i, global_steps=1)

    async def score_and_store():
        await asyncio.gather(*[postprocess(store, uid, j, p, r, i, TASK_NAME) for i, (uid, j, p, r) in enumerate(rows)])

    failed = InMemoryTransferQueue()  # one response whose data_source is no bae task, scored by the same worker

    async def score_unknown():
        uid, j, p, r = rows[0]
        await postprocess(failed, uid, j, p, r, 0, "not_a_bae_task")

    import transfer_queue

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transfer_queue, "async_kv_batch_put", store.async_kv_batch_put)
        asyncio.run(score_and_store())
        patch.setattr(transfer_queue, "async_kv_batch_put", failed.async_kv_batch_put)
        asyncio.run(score_unknown())
    for worker in manager.reward_loop_workers:
        local_ray.kill(worker)
    return store, tokenizer, rows, failed


def reference(module, tokenizer, rows, old_noise):
    """Per completion, straight from the core: block ids of the response tokens (bae.blocks on the
    decoded text), block rewards and outcomes (task.score), the block advantages (OCB, centred), and
    the policy's log-probs from one unpadded forward per sequence."""
    task = tasks.get(TASK_NAME)
    ids, rewards, outcomes, logps, entropies = [], [], [], [], []
    for uid, _, prompt, response in rows:
        text = tokenizer.decode(response, skip_special_tokens=True)
        score = task.score(text, GOLD)
        starts = [len(tokenizer.decode(response[:t], skip_special_tokens=True)) for t in range(len(response) + 1)]
        ids.append(token_block_ids(score.partition, [(starts[t], starts[t + 1]) for t in range(len(response))]))
        rewards.append(score.rewards)
        outcomes.append(score.outcomes)
        sequence = torch.tensor([prompt + response])
        logits = module(input_ids=sequence, use_cache=False).logits[0, len(prompt) - 1: -1]
        log_softmax = torch.log_softmax(logits.float(), -1)
        logps.append(log_softmax.gather(-1, sequence[0, len(prompt):, None])[:, 0])
        entropies.append(-(log_softmax.exp() * log_softmax).sum(-1))
    width = max(len(r) for *_, r in rows)
    pad = lambda xs, fill: torch.stack([torch.nn.functional.pad(torch.as_tensor(x), (0, width - len(x)), value=fill) for x in xs])  # noqa: E731
    uids = np.array([uid for uid, *_ in rows], dtype=object).astype(str)
    block_adv = blockwise_advantages(np.array(rewards, float), uids, np.array(outcomes), baseline="ocb", scale="none")
    logp = pad(logps, 0.0)
    old = (logp.detach() + pad(old_noise, 0.0)).detach()
    return pad(ids, -1), block_adv, logp, old, pad(entropies, 0.0)


ENTROPY_COEF = 0.05  # the controller's coefficient for the step (a large one, so that its term shows)


@pytest.fixture(scope="module")
def paper(rollout, tiny_dir):
    """L_BAE minus the entropy term, and its gradient, for the rollout, computed directly
    (reference) with the tiny model, and the old policy's log-probs: the current ones plus fixed
    noise in [-0.4, 0.4]. The entropy term is verl's seq-mean-token-mean of the token entropies."""
    from transformers import AutoModelForCausalLM

    _, tokenizer, rows, _ = rollout
    module = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    noise = [(torch.rand(len(r), generator=torch.Generator().manual_seed(i)) - 0.5) * 0.8 for i, (*_, r) in enumerate(rows)]
    ids, block_adv, logp, old, entropy = reference(module, tokenizer, rows, noise)
    mask = (ids >= 0).float()
    seq_mean_entropy = ((entropy * mask).sum(1) / mask.sum(1)).mean()
    loss = paper_loss(logp, old, block_adv, ids, clip=CLIP) - ENTROPY_COEF * seq_mean_entropy
    loss.backward()
    token_mean_entropy = float((entropy * mask).sum() / mask.sum())
    return ids, logp.detach(), old, float(loss), [p.grad.detach().clone() for p in module.parameters()], token_mean_entropy, block_adv


class GradientRecorder:
    """Stand-in optimizer: step() records the gradients it would apply (and applies nothing)."""

    def __init__(self, module):
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.steps = []

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def step(self):
        self.steps.append([torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in self.params])


def simulated_rank(actor_config, module, rank, dp):
    """verl's TrainingWorker over verl's FSDP LM-head engine for one dp rank, in this process."""
    from verl.utils.profiler import DistProfiler
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead
    from verl.workers.engine_workers import TrainingWorker
    from verl.workers.utils.losses import ppo_loss

    engine_config = actor_config.engine  # as ActorRolloutRefWorker assigns it
    engine_config.use_dynamic_bsz = actor_config.use_dynamic_bsz
    engine_config.max_token_len_per_gpu = actor_config.ppo_max_token_len_per_gpu
    engine_config.micro_batch_size_per_gpu = actor_config.ppo_micro_batch_size_per_gpu
    engine_config.infer_max_token_len_per_gpu = actor_config.ppo_max_token_len_per_gpu  # the old-log-prob pass: split too
    engine_config.infer_micro_batch_size_per_gpu = actor_config.ppo_micro_batch_size_per_gpu
    engine_config.use_remove_padding = actor_config.model_config.get("use_remove_padding", False)

    engine = object.__new__(FSDPEngineWithLMHead)
    engine.module, engine.model_config, engine.engine_config = module, actor_config.model_config, engine_config
    engine.optimizer, engine.lr_scheduler = GradientRecorder(module), types.SimpleNamespace(step=lambda: None, get_last_lr=lambda: [0.0])
    engine.optimizer_config = types.SimpleNamespace(clip_grad=float("inf"))
    engine.mode, engine.scaler, engine._autocast_dtype, engine._qat_enabled = None, None, torch.float32, False
    engine._is_offload_param = engine._is_offload_optimizer = False
    engine.ulysses_sequence_parallel_size, engine.use_ulysses_sp = 1, False
    engine.ulysses_device_mesh = engine.ulysses_parallel_group = None
    engine.use_remove_padding, engine.pad_to_length, engine.pad_to_length_bucket = False, False, None
    engine.get_data_parallel_size, engine.get_data_parallel_rank = (lambda: dp), (lambda: rank)
    engine.get_data_parallel_group = lambda: None  # no collective: the ranks are simulated (module docstring)

    worker = object.__new__(TrainingWorker)
    worker.engine, worker.engine_config, worker.model_config = engine, engine_config, actor_config.model_config
    worker.loss_fn = partial(ppo_loss, config=actor_config)  # as ActorRolloutRefWorker sets it
    worker.device_name, worker.profiler = "cpu", DistProfiler(rank=rank)
    worker.flops_counter = types.SimpleNamespace(estimate_flops=lambda *a, **k: (0.0, 1.0))
    return worker


class SimulatedActorGroup:
    """The actor worker group the trainer calls: verl's dispatch of a KVBatchMeta over dp ranks
    (TransferQueue's BatchMeta.chunk: contiguous, in the balanced order), on each rank what verl's
    TransferQueue bridge hands the worker (its rows' fields plus the batch's extra_info as
    non-tensor entries), then the ranks, and the dp all-reduce as the mean over ranks."""

    def __init__(self, store, workers):
        self.store, self.workers = store, workers
        self._dispatch_info = {"actor": list(range(len(workers)))}
        self.losses, self.gradients = [], None

    def set_loss_fn(self, loss_fn):  # ActorRolloutRefWorker.set_loss_fn: ONE_TO_ALL
        for worker in self.workers:
            worker.set_loss_fn(loss_fn)

    def _per_rank(self, batch):
        """(worker, its rows' keys, its data) as verl's TransferQueue bridge hands them to each rank."""
        import copy

        from transfer_queue.metadata import BatchMeta
        from verl.utils import tensordict_utils as tu

        meta = BatchMeta(global_indexes=list(range(len(batch))), partition_ids=[batch.partition_id] * len(batch),
                         extra_info=batch.extra_info)
        for worker, chunk in zip(self.workers, meta.chunk(len(self.workers))):
            keys = [batch.keys[g] for g in chunk.global_indexes]
            data = self.store.kv_batch_get(keys, batch.partition_id, batch.fields)
            tu.assign_non_tensor(data, **copy.deepcopy(chunk.extra_info))
            yield worker, keys, data

    def compute_log_prob(self, batch):
        """Each rank's TrainingWorker.infer_batch; its tensor outputs written back under the rows' keys
        (what the bridge's _update_meta_with_output does)."""
        for worker, keys, data in self._per_rank(batch):
            output = worker.infer_batch(data)
            self.store.kv_batch_put(keys, batch.partition_id, output.select(*[k for k in output.keys() if k != "metrics"]))
        return batch

    def update_actor(self, batch):
        from verl.protocol import BatchData

        outputs = []
        for worker, _, data in self._per_rank(batch):
            outputs.append(worker.train_mini_batch(data))
        steps = [worker.engine.optimizer.steps for worker in self.workers]
        assert all(len(s) == 1 for s in steps)  # one optimizer step per rank: the mini-batch is the batch
        self.gradients = [torch.stack([s[0][j] for s in steps]).mean(0) for j in range(len(steps[0][0]))]
        self.losses = [float(np.sum(out["metrics"]["loss"])) for out in outputs]  # per rank: its micro-batches' sum
        return BatchData(outputs).concat()


def step_trainer(cfg, tokenizer, group):
    """The bae_sync trainer of the recipe over the simulated actor group, as verl's init leaves it
    (on_init_end: weights synced, here a no-op, and the controller's loss installed)."""
    from verl.trainer.ppo.v1 import get_trainer_cls

    trainer = object.__new__(get_trainer_cls("bae_sync"))
    trainer.config, trainer.tokenizer, trainer.actor_rollout_wg = cfg, tokenizer, group
    trainer.use_critic, trainer.global_steps = False, 1
    trainer.checkpoint_manager = types.SimpleNamespace(update_weights=lambda *args, **kwargs: None)
    trainer.on_init_end()
    return trainer


@pytest.mark.parametrize("dp", [1, 2, 4])
def test_one_bae_sync_step_through_verl_gives_the_paper_loss_and_gradient(rollout, paper, tiny_dir, monkeypatch, dp):
    import transfer_queue
    from transfer_queue import KVBatchMeta
    from transformers import AutoModelForCausalLM
    from verl.utils.config import omega_conf_to_dataclass

    from bae.batch import ScoredBatch

    written, tokenizer, rows, _ = rollout
    store = InMemoryTransferQueue(written.rows, written.tags)  # this step's copy of the rollout's rows
    longest = max(len(p) + len(r) for *_, p, r in rows)
    cfg = composed(tiny_dir, 2 * longest)
    actor = cfg.actor_rollout_ref.actor  # the recipe's loss: what the equality is about
    assert (actor.loss_agg_mode, actor.policy_loss.loss_mode, actor.clip_ratio, actor.use_dynamic_bsz) == ("seq-mean-token-mean", "vanilla", CLIP, True)
    assert (actor.entropy_coeff, actor.calculate_entropy, cfg.bae.use_adaptive_entropy) == (0.0, False, True)
    monkeypatch.setattr(transfer_queue, "kv_batch_get", store.kv_batch_get)
    monkeypatch.setattr(transfer_queue, "kv_batch_put", store.kv_batch_put)

    ids, logp, old, expected, expected_grad, expected_entropy, block_adv = paper
    module = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)  # the same weights, fresh
    keys = {(uid, j): f"{uid}_{j}_0" for uid, j, *_ in rows}
    batch = KVBatchMeta(keys=list(store.rows), tags=[store.tags[k] for k in store.rows], partition_id="train")

    actor_config = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    actor_config.model_config = omega_conf_to_dataclass(cfg.actor_rollout_ref.model)
    group = SimulatedActorGroup(store, [simulated_rank(actor_config, module, r, dp) for r in range(dp)])
    trainer = step_trainer(cfg, tokenizer, group)
    assert all(isinstance(w.loss_fn, bae.engines.verl.EntropyControlledLoss) for w in group.workers)
    controller = trainer._bae_entropy
    controller.coef, controller.last_entropy = ENTROPY_COEF, 0.1  # the state an earlier low-entropy update left

    for i, (uid, j, _, r) in enumerate(rows):  # what vLLM reports with rollout.calculate_log_probs (verl's debug metrics)
        store.rows[keys[uid, j]]["rollout_log_probs"] = logp[i, : len(r)].float()
    metrics = {}
    batch = trainer._balance_batch(batch, metrics=metrics)  # bae's checks, then verl's: may reorder, advantages follow uids
    batch = trainer._compute_old_log_prob(batch, metrics=metrics)  # verl's forward on each rank: log-probs, entropy
    for i, (uid, j, _, r) in enumerate(rows):  # the old policy: the current log-probs plus fixed noise (module docstring)
        torch.testing.assert_close(store.rows[keys[uid, j]]["old_log_probs"], logp[i, : len(r)], rtol=1e-4, atol=1e-5)
        store.rows[keys[uid, j]]["old_log_probs"] = old[i, : len(r)].float()
    batch = trainer._compute_advantage(batch, metrics=metrics)
    forwards = []
    hook = module.register_forward_hook(lambda *args: forwards.append(1))
    batch = trainer._update_actor(batch, metrics=metrics)
    hook.remove()

    assert sorted(batch.keys) == sorted(keys.values()) and len(forwards) > dp  # dynamic bsz split some rank
    advantages = torch.cat([store.rows[k]["advantages"] for k in batch.keys])
    assert (advantages != 0).any()
    ratio = torch.exp(logp - old)[ids >= 0]
    assert ((ratio < 1 - CLIP) | (ratio > 1 + CLIP)).any() and ((ratio > 1 - CLIP) & (ratio < 1 + CLIP)).any()
    # the loss the actor minimised, the controller's term included, and its gradient
    assert np.mean(group.losses) == pytest.approx(expected, rel=1e-5, abs=1e-7)
    flat = torch.cat([g.flatten() for g in group.gradients])
    flat_expected = torch.cat([g.flatten() for g in expected_grad]).float()
    assert flat_expected.abs().max() > 0
    torch.testing.assert_close(flat, flat_expected, rtol=1e-4, atol=1e-6 * float(flat_expected.abs().max()))
    # the controller: it measured the policy's token-mean entropy, used its coefficient, then stepped
    assert metrics["bae/entropy"] == pytest.approx(expected_entropy, rel=1e-5)
    assert metrics["bae/entropy_coef_applied"] == ENTROPY_COEF and expected_entropy > PAPER_TARGET
    assert metrics["bae/entropy_coef"] == pytest.approx(ENTROPY_COEF - PAPER_DELTA) == controller.coef
    assert actor.calculate_entropy is False  # restored after the update
    # the per-block metrics, as the TRL engine logs them, of this batch
    task = tasks.get(TASK_NAME)
    scores = [task.score(tokenizer.decode(r, skip_special_tokens=True), GOLD) for *_, r in rows]
    reference_batch = ScoredBatch.from_scores(scores, np.array([uid for uid, *_ in rows]), task.block_names)
    for key, value in reference_batch.metrics(block_adv).items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key
    assert "bae/solution/advantage_std" in metrics and "bae/ece" in metrics


def test_a_response_the_reward_worker_could_not_score_stops_the_step(rollout, tiny_dir, monkeypatch):
    """A data_source that is no bae task, scored by verl's real reward worker through the agent
    loop's postprocess: its TransferQueue row holds bae_error, and the trainer stops at
    _balance_batch (before any actor work) with that error."""
    import transfer_queue
    from transfer_queue import KVBatchMeta

    written, tokenizer, rows, failed = rollout
    (bad_key,) = failed.rows
    info = failed.rows[bad_key]["extra_fields"]["reward_extra_info"]
    assert "not a bae task" in info[bae.engines.verl.ERROR_KEY]
    extra = f"{bad_key.rsplit('_', 2)[0]}_{N}_0"  # one more session of that prompt
    store = InMemoryTransferQueue({**written.rows, extra: failed.rows[bad_key]}, {**written.tags, extra: failed.tags[bad_key]})
    monkeypatch.setattr(transfer_queue, "kv_batch_get", store.kv_batch_get)
    trainer = step_trainer(composed(tiny_dir, 1 << 14), tokenizer, SimulatedActorGroup(store, []))
    batch = KVBatchMeta(keys=list(store.rows), tags=[store.tags[k] for k in store.rows], partition_id="train")
    with pytest.raises(RuntimeError, match="could not score 1 of 17 responses.*not_a_bae_task"):
        trainer._balance_batch(batch, metrics={})
