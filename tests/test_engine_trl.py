"""BlockwiseGRPOTrainer (bae.engines.trl): TRL's GRPOTrainer optimises the paper's L_BAE.

Offline and on CPU with the tiny model. Most tests replace generation by scripted completions
(tests/trl_scripted.py: `Scripted`), so the batch exercises every block case while scoring,
advantages, padding, shuffling, splitting and the loss are the trainer's and TRL's own; the
reference side (`reference`) never uses the engine.
"""

import copy
import json
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np
import pytest
import torch
from datasets import Dataset, IterableDataset
from trl import GRPOTrainer
from trl.trainer.utils import split_tensor_dict

from bae.advantages import blockwise_advantages
from bae.blocks import token_offsets as decode_with_offsets
from bae.engines.trl import BASELINE_STATE_FILE, LOSS_TYPES, BlockwiseGRPOTrainer, paper_grpo_config
from bae.embedded.tiny import build_model
from bae.tasks import get as get_task
from trl_scripted import (G, Scripted, assert_carries, config, dataset, direct_l_bae,  # noqa: F401
                          expected_token_advantages, one_thread, reference, rows, task, tok)


def test_offsets_from_sampled_ids(tok):
    """decode_with_offsets gives spans that tile the decoded text exactly, for a non-canonical
    spelling of a tag (8 one-character tokens, where re-encoding would give 1), multi-byte
    characters split over byte tokens, and special tokens (EOS, empty span at the end)."""
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]
    spelled = [i for ch in "<answer>" for i in enc(ch)]
    ids = enc("<reasoning>x é ∑</reasoning>") + spelled + enc("5</answer>") + [tok.eos_token_id]
    text, offsets = decode_with_offsets(tok, ids)
    assert text == "<reasoning>x é ∑</reasoning><answer>5</answer>"
    assert len(offsets) == len(ids) and len(enc(text)) < len(ids)  # the canonical encoding is shorter
    assert offsets[-1] == (len(text), len(text))  # EOS
    covered = "".join(text[s:e] for (s, e), (s2, _) in zip(offsets, offsets[1:] + [(None, None)]) if s != s2)
    assert covered == text  # distinct spans, in order, concatenate to the text
    start = len(enc("<reasoning>x é ∑</reasoning>"))
    assert [text[s:e] for s, e in offsets[start : start + 8]] == list("<answer>")
    e_bytes = [t for t, (s, e) in enumerate(offsets) if text[s:e] == "é"]
    assert len(e_bytes) == 2  # both UTF-8 byte tokens of é carry its span


@pytest.fixture(scope="module")
def scripted_run(tok, task, dataset):
    """A 2-step train() of Scripted (dapo, GA=2), recording every input TRL's _compute_loss sees."""
    seen, original = [], GRPOTrainer._compute_loss

    def capture(self, model, inputs):
        seen.append({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in inputs.items()})
        return original(self, model, inputs)

    GRPOTrainer._compute_loss = capture
    try:
        trainer = Scripted(build_model(tok), task, config(max_steps=2), dataset, tok)
        trainer.train()
    finally:
        GRPOTrainer._compute_loss = original
    return trainer, seen


def test_every_loss_token_carries_its_blocks_advantage(scripted_run, tok, task):
    """Every completion token reaching TRL's loss (after TRL's shuffle and split) carries
    A[i, k] / |T_ik| * c for its own block k (c = num_items_in_batch / completions, dapo), with
    A and the token's block from the core (task.score partition + blockwise_advantages over the
    gathered groups); padding carries 0 and block id -1."""
    trainer, seen = scripted_run
    assert len(seen) == 4  # 2 steps x 2 micro-batches
    expected = expected_token_advantages(task, tok, trainer.script_log, generation_size=2 * G)  # 2 groups a step
    counts = np.sum([assert_carries(inputs, expected) for inputs in seen], axis=0)
    both_blocks, nonzero = counts
    assert both_blocks >= 4 and nonzero >= 4  # the batch really exercises two blocks and nonzero advantages


def test_logged_block_metrics(scripted_run, tok, task):
    """Each step logs, through TRL's logger, per-block reward/advantage statistics, OCB stratum
    sizes, accuracy, malformed rate, abstention rate, mean confidence and the 11-bin ECE, equal to the values
    computed directly from the scored completions of that step's batch."""
    trainer, _ = scripted_run
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for step, h in enumerate(logs):
        log = trainer.script_log[step * 2 * G : (step + 1) * 2 * G]
        _, adv, outcomes, scores = reference(task, tok, log)
        correct = np.array([s.correct for s in scores], dtype=float)
        q = np.array([0.0 if s.confidence is None else s.confidence for s in scores])
        bins = np.minimum((q * 10 + 1e-9).astype(int), 10)
        ece = sum(abs(correct[bins == b].sum() - q[bins == b].sum()) for b in range(11)) / len(q)
        stated = [s.confidence for s in scores if s.confidence is not None]
        strata = np.unique(np.stack([np.arange(2 * G) // G, outcomes[:, 1]], 1), axis=0, return_counts=True)[1]
        want = {
            "rewards/solution_reward/mean": np.mean([s.rewards[0] for s in scores]),
            "rewards/confidence_reward/mean": np.mean([s.rewards[1] for s in scores]),
            "bae/solution/reward_mean": np.mean([s.rewards[0] for s in scores]),
            "bae/confidence/reward_mean": np.mean([s.rewards[1] for s in scores]),
            "bae/solution/advantage_mean": adv[:, 0].mean(), "bae/solution/advantage_std": adv[:, 0].std(),
            "bae/confidence/advantage_mean": adv[:, 1].mean(), "bae/confidence/advantage_std": adv[:, 1].std(),
            "bae/confidence/stratum_size_min": strata.min(), "bae/confidence/stratum_size_mean": strata.mean(),
            "bae/accuracy": correct.mean(), "bae/malformed_rate": np.mean([s.malformed for s in scores]),
            "bae/confidence_mean": np.mean(stated), "bae/ece": ece,
            "bae/abstain_rate": np.mean([s.abstained for s in scores]),
        }
        for key, value in want.items():
            assert h[key] == pytest.approx(value, abs=1e-6), key
        assert 0 < h["bae/malformed_rate"] < 1 and h["bae/confidence/advantage_std"] > 0
        assert 0 < h["bae/abstain_rate"] < 1
        assert "entropy" in h


# loss_type, importance_sampling_level, mask_truncated_completions
LOSS_CASES = ([(loss_type, level, False) for level in ("token", "sequence") for loss_type in LOSS_TYPES]
              + [("grpo", "token", True), ("dapo", "token", True)])


@pytest.mark.parametrize("loss_type,level,mask_truncated", LOSS_CASES)
def test_trl_loss_equals_direct_l_bae(loss_type, level, mask_truncated, tok, task, dataset):
    """For each supported loss type, with token ratios and with GSPO's (one ratio per block), TRL's own _compute_loss on our
    per-token advantages, summed over the gradient-accumulation micro-batches TRL's splitter makes,
    equals a direct L_BAE in value and in gradient w.r.t. every model parameter, off-policy (old
    log-probs perturbed so that ratios cross the clip range), also when TRL masks truncated
    completions; the parent's loss without the factor c does not (except luspo, where c = 1)."""
    trainer = Scripted(build_model(tok), task, config(loss_type=loss_type, importance_sampling_level=level,
                                                      epsilon_high=1.1 if loss_type == "cispo" else None,
                                                      mask_truncated_completions=mask_truncated),
                       dataset, tok)
    model = trainer.model.train()
    batch = trainer._generate_and_score_completions(rows(dataset))

    def logps():
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
        return GRPOTrainer._get_per_token_logps_and_entropies(trainer, model, ids, mask, batch["completion_ids"].shape[1])[0]

    with torch.no_grad():
        lp0 = logps()
    gen = torch.Generator().manual_seed(1)
    batch["old_per_token_logps"] = lp0 + 0.3 * torch.randn(lp0.shape, generator=gen)
    trainer.current_gradient_accumulation_steps = 2
    params = [p for p in model.parameters() if p.requires_grad]
    micro = split_tensor_dict(batch, 2)
    loss = sum(trainer._compute_loss(model, m) for m in micro)
    grads = torch.autograd.grad(loss, params)

    blocks, adv, _, _ = reference(task, tok, trainer.script_log)
    assert np.abs(adv).max() > 0.1
    truncated = {i for i, (ids, _) in enumerate(trainer.script_log) if ids[-1] != tok.eos_token_id}
    assert 0 < len(truncated) < len(blocks)
    if mask_truncated:
        assert all(batch["completion_mask"][i].sum() == 0 and (batch["advantages"][i] == 0).all() for i in truncated)
    want = direct_l_bae(trainer, logps(), batch["old_per_token_logps"], blocks, adv, level,
                        skip=truncated if mask_truncated else ())
    want_grads = torch.autograd.grad(want, params)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-7)
    scale = max(g.abs().max().item() for g in want_grads)
    assert scale > 1e-4
    for g, w in zip(grads, want_grads):
        assert (g - w).abs().max().item() <= 1e-5 * scale
    if loss_type != "luspo":
        with torch.no_grad():
            raw = sum(GRPOTrainer._compute_loss(trainer, model, m) for m in micro)
        assert raw.item() != pytest.approx(want.item(), rel=1e-3)


def test_eval_loss_is_l_bae_for_every_loss_type(tok, task, dataset):
    """In evaluation mode (no accumulation; TRL's eval normalisers, where dapo divides by this
    process's share of the tokens) every loss type's loss on the same batch is the on-policy
    L_BAE = -(1/N) sum_i sum_{k: T_ik nonempty} a_ik. With OCB that sum is often exactly 0 (each
    stratum's advantages sum to 0), so the group-mean baseline keeps the check from being vacuous."""
    for loss_type in ("grpo", "dr_grpo", "dapo", "bnpo"):  # cispo: -sg(r) A logp has another value
        trainer = Scripted(build_model(tok), task, config(loss_type=loss_type), dataset, tok, baseline="group_mean")
        model = trainer.model.eval()
        batch = trainer._generate_and_score_completions(rows(dataset, (2, 3)))
        with torch.no_grad():
            loss = trainer._compute_loss(model, batch).item()
        blocks, adv, _, _ = reference(task, tok, trainer.script_log, baseline="group_mean")
        present = np.stack([np.bincount(b, minlength=adv.shape[1]) > 0 for b in blocks])
        want = -(adv * present).sum() / len(blocks)
        assert abs(want) > 1e-3
        assert loss == pytest.approx(want, rel=1e-5, abs=1e-7), loss_type


@pytest.mark.parametrize("method", ["rlvr", "rlcr"])
def test_scalar_methods_one_advantage_per_completion(method, tok, task, dataset):
    """rlvr and rlcr put one advantage on every token of a completion (0 on padding): the group-
    centred correctness (rlvr) or group-centred sum of block rewards (rlcr), with no block weights."""
    trainer = Scripted(build_model(tok), task, config(), dataset, tok, method=method)
    trainer.model.train()
    batch = trainer._generate_and_score_completions(rows(dataset))
    _, _, _, scores = reference(task, tok, trainer.script_log)
    r = np.array([s.rewards[0] if method == "rlvr" else sum(s.rewards) for s in scores])
    scalar = r - np.repeat(r.reshape(-1, G).mean(1), G)
    assert np.abs(scalar).max() > 0.1
    mask = batch["completion_mask"].bool()
    for i in range(mask.shape[0]):
        row = batch["advantages"][i]
        assert torch.allclose(row[mask[i]].double(), torch.full((int(mask[i].sum()),), scalar[i], dtype=torch.float64),
                              atol=1e-6)
        assert (row[~mask[i]] == 0).all()


def _no_answer_stream():
    yield {"prompt": [{"role": "user", "content": "hi"}]}


def _refusal_cases():
    no_answer = Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}]}])
    return [
        (dict(args=dict(loss_type="vespo")), "vespo"),
        (dict(args=dict(off_policy_mask_threshold=0.5)), "off_policy_mask_threshold"),
        (dict(args=dict(importance_sampling_level="sequence", beta=0.04)), "beta"),
        (dict(method="ppo"), "method"),
        (dict(baseline="nope"), "unknown baseline"),
        (dict(baseline="ocb", baseline_options={"shrink": 2.0}), "ocb"),
        (dict(baseline="ocb_shrink", baseline_options={"shrink": -1.0}), "shrink"),
        (dict(baseline="ocb_eb", baseline_options={"pretest": 1.0}), "pretest"),
        (dict(baseline="ocb_eb", baseline_options={"history": -1}), "history"),
        (dict(baseline="ocb_eb", baseline_options={"state": {}}), "not an option"),
        (dict(method="gdpo", baseline_options={"pretest": 0.05}), "apply to method 'bae' only"),
        (dict(method="rlcr", task=get_task("arithmetic", malformed="carry")), "carry"),
        (dict(scale="std"), "scale"),
        (dict(reward_funcs=[lambda completions, **kw: [0.0] * len(completions)]), "reward_funcs"),
        (dict(args=dict(reward_weights=[1.0, 0.5])), "reward_weights"),
        (dict(tools=[print]), "tools"),
        (dict(rollout_func=lambda prompts, trainer: {}), "rollout_func"),
        (dict(args=dict(multi_objective_aggregation="normalize_then_sum")), "method='gdpo'"),
        (dict(method="gdpo", scale="group"), "scale='group'"),
        (dict(data=no_answer), "train_dataset needs an 'answer' column"),
        (dict(eval_dataset=no_answer), "eval_dataset needs an 'answer' column"),
        (dict(eval_dataset={"held_out": no_answer}), r"eval_dataset\['held_out'\] needs an 'answer' column"),
        (dict(eval_dataset=IterableDataset.from_generator(_no_answer_stream)), "eval_dataset needs an 'answer'"),
    ]


@pytest.mark.parametrize("case,message", _refusal_cases())
def test_refused_configurations(case, message, tok, task, dataset):
    """Configurations that would silently not optimise the method's objective (or cannot work) raise
    ValueError at construction, naming the offending setting."""
    case = dict(case)
    args = config(**case.pop("args", {}))
    data = case.pop("data", dataset)
    the_task = case.pop("task", task)
    with pytest.raises(ValueError, match=message):
        BlockwiseGRPOTrainer(build_model(tok), the_task, args, data, tok, **case)


def test_ocb_eb_history_pools_over_training_steps_only(tok, task, dataset):
    """baseline_options={"history": 2}: each training batch's advantages are ocb_eb's with the sums
    of the two batches before it (bae.advantages with a state of its own, replayed here from the
    scripts), so every token carries a[i, k] / |T_ik| of those; an evaluation batch reads the
    memory and leaves it as it was."""
    trainer = Scripted(build_model(tok), task, config(), dataset, tok, baseline="ocb_eb",
                       baseline_options={"history": 2})
    trainer.model.train()
    outs = [trainer._generate_and_score_completions(rows(dataset, p)) for p in [(0, 1), (2, 3), (0, 1)]]
    assert len(trainer.baseline_state["1"]["eb_sums"]) == 2
    kept = copy.deepcopy(trainer.baseline_state)
    trainer.model.eval()
    trainer._generate_and_score_completions(rows(dataset, (2, 3)))
    assert trainer.baseline_state == kept
    state, n = {}, 2 * G
    for step, out in enumerate(outs):
        blocks, _, outcomes, scores = reference(task, tok, trainer.script_log[step * n:(step + 1) * n])
        rewards, groups = np.array([s.rewards for s in scores]), np.arange(n) // G
        adv = blockwise_advantages(rewards, groups, outcomes, baseline="ocb_eb", history=2, state=state)
        for i, b in enumerate(blocks):
            counts = np.bincount(b, minlength=task.num_blocks)
            torch.testing.assert_close(out["advantages"][i, :len(b)].double(), torch.tensor(adv[i][b] / counts[b]),
                                       rtol=1e-5, atol=1e-7)
    assert not np.allclose(adv, blockwise_advantages(rewards, groups, outcomes, baseline="ocb_eb"))  # the memory counted


def test_ocb_eb_history_travels_with_the_checkpoints(tok, task, dataset, tmp_path):
    """The memory is saved in each checkpoint (BASELINE_STATE_FILE, JSON) as it stood at the save and
    restored where TRL restores its own optimizer state on resume; a run of plain ocb writes none."""
    args = config(max_steps=2, save_strategy="steps", save_steps=1, output_dir=str(tmp_path))
    trainer = Scripted(build_model(tok), task, args, dataset, tok, baseline="ocb_eb", baseline_options={"history": 3})
    trainer.train()
    saved = json.loads((tmp_path / "checkpoint-2" / BASELINE_STATE_FILE).read_text())
    assert saved == trainer.baseline_state and len(saved["1"]["eb_sums"]) == 2  # one generation batch per step
    assert len(json.loads((tmp_path / "checkpoint-1" / BASELINE_STATE_FILE).read_text())["1"]["eb_sums"]) == 1
    resumed = Scripted(build_model(tok), task, args, dataset, tok, baseline="ocb_eb", baseline_options={"history": 3})
    resumed.create_optimizer_and_scheduler(num_training_steps=2)
    resumed._load_optimizer_and_scheduler(str(tmp_path / "checkpoint-2"))
    assert resumed.baseline_state == saved
    plain = Scripted(build_model(tok), task, config(max_steps=1, save_strategy="steps", save_steps=1,
                                                    output_dir=str(tmp_path / "plain")), dataset, tok)
    plain.train()
    assert plain.baseline_state == {} and not (tmp_path / "plain" / "checkpoint-1" / BASELINE_STATE_FILE).exists()


def test_scalar_methods_keep_trl_loss_types(tok, task, dataset):
    """The bae-only refusals do not apply to scalar methods: rlvr with vespo and the off-policy mask
    builds (one advantage per completion is what they assume)."""
    trainer = BlockwiseGRPOTrainer(build_model(tok), task, config(loss_type="vespo", off_policy_mask_threshold=0.5),
                                   dataset, tok, method="rlvr")
    assert trainer.loss_type == "vespo"


def test_train_two_steps_real_generation(tok, task, dataset):
    """A 2-step train() with real sampling from the tiny model on the arithmetic task completes and
    logs the block metrics at every step; OCB advantages are centred within each stratum, so every
    block's batch-mean advantage is 0, and strata are between 1 and G completions. An untrained
    model states no confidence, so ECE and mean confidence are not logged."""
    trainer = BlockwiseGRPOTrainer(build_model(tok), "arithmetic", config(max_steps=2, max_completion_length=8),
                                   dataset, tok)
    trainer.train()
    assert trainer.state.global_step == 2
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        for name in task.block_names:
            assert f"rewards/{name}_reward/mean" in h
            assert h[f"bae/{name}/advantage_mean"] == pytest.approx(0.0, abs=1e-6)
            assert h[f"bae/{name}/advantage_std"] >= 0
        assert 1 <= h["bae/confidence/stratum_size_min"] <= h["bae/confidence/stratum_size_mean"] <= G
        assert 0 <= h["bae/malformed_rate"] <= 1 and 0 <= h["bae/accuracy"] <= 1
        assert "entropy" in h
        # the untrained model states no confidence: no calibration figure is logged beside malformed 1.0
        assert h["bae/malformed_rate"] == 1.0 and "bae/ece" not in h and "bae/confidence_mean" not in h


def test_paper_config():
    """paper_grpo_config sets the paper's entropy controller, no KL and unscaled advantages, and
    lets any field be overridden."""
    args = paper_grpo_config(output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, num_generations=4)
    assert (args.use_adaptive_entropy, args.entropy_target, args.entropy_coef_delta) == (True, 0.2, 5e-4)
    assert (args.beta, args.scale_rewards, args.learning_rate, args.num_generations) == (0.0, "none", 1e-6, 4)
