"""bae.engines.verl against verl 0.9.1 itself, on CPU. Run from the verl venv: `make test-verl`.

Batches are built the way verl builds them: right-padded responses, the scalar score at the last
valid token of token_level_rewards, uid strings in a numpy object array with the members of a group
scattered over the batch (as after _balance_batch), reward_extra_info in each row's extra_fields.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict

pytest.importorskip("verl")

from tensordict import TensorDict  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402

import bae.engines.verl as bv  # noqa: E402
from bae import tasks  # noqa: E402
from bae.advantages import BASELINES, blockwise_advantages  # noqa: E402
from bae.blocks import token_block_ids  # noqa: E402
from bae.embedded.tiny import build_tokenizer  # noqa: E402
from bae.objective import token_advantages  # noqa: E402

TASK = tasks.get("arithmetic")
SOLUTIONS = [("4", "0.9"), ("5", "0.8"), ("4", "0.2"), ("4", "1"), ("7", "0.5"), ("4", "0.6")]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def completion(answer: str, confidence: str, extra: str = "") -> str:
    return (f"<reasoning>add {extra}the numbers</reasoning><answer>{answer}</answer>"
            f"<analysis>check é{extra}</analysis><confidence>{confidence}</confidence>")


TEXTS = [
    completion(a, c, "x" * (i % 3)) for i, (a, c) in enumerate(SOLUTIONS)
] + [
    "<reasoning>no answer tag at all",  # malformed: one partial block, the second empty
    "<reasoning>r</reasoning><answer>4</answer><analysis>a</analysis><confidence>0.3</confidence>  ",
]


def rows_like_verl(tokenizer, rng, num_groups=3, per_group=4):
    """Rows of (uid, response ids incl. EOS, gold) with groups scattered over positions."""
    uids = [str(uuid.UUID(int=int(rng.integers(1 << 62)))) for _ in range(num_groups)]
    rows = []
    for g, uid in enumerate(uids):
        for j in range(per_group):
            text = TEXTS[(g * per_group + j) % len(TEXTS)]
            ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
            rows.append((uid, ids, "4"))
    return [rows[i] for i in rng.permutation(len(rows))]


def batch_like_verl(tokenizer, rows, width=None):
    """token_level_rewards [bs, T] (score at the last valid token), response_mask, uid, block data."""
    width = width or max(len(ids) for _, ids, _ in rows) + 3
    n = len(rows)
    mask = torch.zeros(n, width, dtype=torch.int64)
    scores = torch.zeros(n, width)
    infos = []
    for i, (_, ids, gold) in enumerate(rows):
        out = bv.score_response(TASK, tokenizer, ids, gold)
        mask[i, : len(ids)] = 1
        scores[i, len(ids) - 1] = out["reward_score"]
        infos.append(out["reward_extra_info"])
    index = np.array([uid for uid, _, _ in rows], dtype=object)
    return scores, mask, index, infos


def core_reference(infos, index, mask, baseline, scale, aggregation="seq-mean-token-mean", max_length=None, **options):
    """The core alone: blockwise_advantages (with `options`) -> token ids from the starts -> token_advantages."""
    k = sum(1 for key in infos[0] if key.startswith("bae_reward_"))
    r = np.array([[info[f"bae_reward_{j}"] for j in range(k)] for info in infos])
    o = np.array([[0] + [info[f"bae_outcome_{j}"] for j in range(1, k)] for info in infos])
    starts = np.array([[info[f"bae_start_{j}"] for j in range(1, k)] for info in infos])
    pos = np.arange(mask.shape[1])
    ids = (pos[None, None, :] >= starts[:, :, None]).sum(1)
    ids = np.where(mask.numpy() > 0, ids, -1)
    adv = blockwise_advantages(r, index.astype(str), o, baseline=baseline, scale=scale, **options)
    return token_advantages(adv, torch.as_tensor(ids), aggregation, max_length), r, ids


def algo_config(name, norm):
    return OmegaConf.create({"adv_estimator": name, "norm_adv_by_std_in_grpo": norm, "gamma": 1.0, "lam": 1.0,
                             "use_kl_in_reward": False})


# --- registry ---------------------------------------------------------------------------------


def test_every_baseline_is_registered_with_verl():
    assert set(bv.ESTIMATORS) == {f"bae_{b}" for b in BASELINES}
    for name, baseline in bv.ESTIMATORS.items():
        fn = core_algos.get_adv_estimator_fn(name)
        assert fn.__bae_baseline__ == baseline
    assert bv.register_estimators() == bv.ESTIMATORS  # idempotent: re-import in a Ray worker is fine


def test_trainers_are_registered_and_report_their_base_mode():
    from verl.trainer.ppo.v1 import get_trainer_cls

    for mode in bv.TRAINER_MODES:
        cls = get_trainer_cls(f"bae_{mode}")
        assert issubclass(cls, bv.BlockwiseAdvantageMixin) and issubclass(cls, get_trainer_cls(mode))
        trainer = object.__new__(cls)
        trainer.trainer_mode = f"bae_{mode}"
        assert trainer.trainer_mode == mode  # verl branches on "sync"


# --- the reward side: token boundaries -------------------------------------------------------


def test_both_engines_give_every_token_the_core_block(tokenizer):
    """On sampled ids (random tokens of the tiny model's vocabulary spliced between real tags, a
    tag spelled letter by letter, EOS): the verl reward manager's block starts, turned back into
    token block ids by the estimator's path (ScoredBatch.token_block_ids), equal the TRL engine's
    (bae.batch.score_completions) and the core's own rule (bae.blocks.token_block_ids over exact
    prefix-decode offsets, computed here without bae.blocks.token_offsets)."""
    from bae.batch import score_completions

    rng = np.random.default_rng(7)
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]
    samples = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in TEXTS + [""]]
    for _ in range(40):
        noise = lambda: rng.integers(0, len(tokenizer), rng.integers(0, 6)).tolist()
        spelled = [i for ch in "<answer>" for i in enc(ch)] if rng.random() < 0.3 else enc("<answer>")
        samples.append(enc("<reasoning>") + noise() + enc("</reasoning>") + spelled + noise() + enc("</answer>")
                       + enc("<analysis>") + noise() + enc("</analysis><confidence>0.5</confidence>")
                       + noise() + ([tokenizer.eos_token_id] if rng.random() < 0.7 else []))
    _, trl_ids = score_completions(TASK, tokenizer, samples, ["4"] * len(samples))
    infos = [bv.score_response(TASK, tokenizer, ids, "4")["reward_extra_info"] for ids in samples]
    width = max(len(ids) for ids in samples) + 2
    mask = torch.tensor([[t < len(ids) for t in range(width)] for ids in samples])
    verl_ids = bv.scored_batch(infos).token_block_ids(mask)
    for i, ids in enumerate(samples):
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        starts_char = [len(tokenizer.decode(ids[:t], skip_special_tokens=True)) for t in range(len(ids) + 1)]
        offsets = [(starts_char[t], starts_char[t + 1]) for t in range(len(ids))]
        expected = token_block_ids(TASK.score(decoded, "4").partition, offsets)
        np.testing.assert_array_equal(trl_ids[i], expected, err_msg=decoded)
        np.testing.assert_array_equal(verl_ids[i, : len(ids)].numpy(), expected, err_msg=decoded)
        assert (verl_ids[i, len(ids):] == -1).all()
    assert sum(len(set(r.tolist())) == 2 for r in trl_ids) >= 10  # the samples really have two blocks


def test_reward_manager_run_single_like_the_reward_loop(tokenizer):
    """BAERewardManager.run_single on a one-row DataProto laid out as verl's reward loop builds it."""
    config = OmegaConf.create({"reward": {}})
    manager = bv.BAERewardManager(config, tokenizer, None)
    prompt = tokenizer("What is 2 + 2?")["input_ids"]
    response = tokenizer(TEXTS[0])["input_ids"] + [tokenizer.eos_token_id]
    width = len(response) + 4
    responses = torch.full((1, width), tokenizer.pad_token_id or 0)
    responses[0, : len(response)] = torch.tensor(response)
    attention = torch.cat([torch.ones(1, len(prompt)), (torch.arange(width) < len(response)).float()[None]], 1).long()
    data = DataProto(
        batch=TensorDict({"prompts": torch.tensor([prompt]), "responses": responses, "attention_mask": attention}, batch_size=1),
        non_tensor_batch={"data_source": np.array(["arithmetic"], dtype=object),
                          "reward_model": np.array([{"ground_truth": "4"}], dtype=object),
                          "extra_info": np.array([{}], dtype=object)},
    )
    out = manager.loop.run_until_complete(manager.run_single(data))  # verl runs it on the manager's loop
    score = TASK.score(TEXTS[0], "4")
    assert out["reward_score"] == pytest.approx(sum(score.rewards))
    info = out["reward_extra_info"]
    assert [info["bae_reward_0"], info["bae_reward_1"]] == list(score.rewards)
    assert info["bae_outcome_1"] == 1 and 0 < info["bae_start_1"] < len(response)
    assert all(np.ndim(v) == 0 for v in info.values())  # scalars: verl stacks them with np.array
    assert (info[bv.BLOCKS_KEY], info[bv.STATES_CONFIDENCE_KEY], info[bv.ABSTAIN_KEY]) == ("solution,confidence", 1, 0)
    with pytest.raises(ValueError, match="not a bae task"):
        manager.task("gsm8k")


def test_reward_score_under_carry_is_the_total_a_scalar_estimator_should_train_on(tokenizer):
    """verl's own estimators (grpo, ...) train on reward_score alone. Under malformed="carry" the
    block rewards hold the left-out blocks' worst rewards twice (carried into the broken block and in
    their own), so reward_score must be task.total_reward, the sum as under "partial", while the
    per-block keys keep the carried values for the bae estimators."""
    carry, partial = tasks.get("arithmetic", malformed="carry"), tasks.get("arithmetic")
    ids = tokenizer(TEXTS[0][:20])["input_ids"] + [tokenizer.eos_token_id]  # cut inside the solution
    out, plain = bv.score_response(carry, tokenizer, ids, "4"), bv.score_response(partial, tokenizer, ids, "4")
    blocks = [out["reward_extra_info"][f"bae_reward_{k}"] for k in range(2)]
    assert blocks == [-1.0, -1.0]  # 0 + the confidence block's worst, and that worst in its own block
    assert out["reward_score"] == plain["reward_score"] == pytest.approx(sum(
        plain["reward_extra_info"][f"bae_reward_{k}"] for k in range(2))) == -1.0


def test_rewards_id_has_zero_spread_in_a_group_exactly_when_no_block_reward_varies(tokenizer):
    """DAPO's filter (metric bae_rewards_id) evicts a group whose metric has zero spread. That must
    happen exactly when every block's reward is the same across the group, since then A[i, k] = 0 for
    every row and block under every baseline (each is a convex combination of the group's column k);
    where one block varies the group is kept. Here under malformed: carry, a solution cut short and a
    wrong answer stated with confidence 1 have the same total (-1) but different block rewards."""
    carry = tasks.get("arithmetic", malformed="carry")
    whole = completion("7", "1")
    texts = [whole[:20], whole[:20], whole, whole]  # two cut inside the solution, two wrong with confidence 1
    outs = [bv.score_response(carry, tokenizer, tokenizer(t)["input_ids"] + [tokenizer.eos_token_id], "19")
            for t in texts]
    assert [o["reward_score"] for o in outs] == [-1.0] * 4  # the totals cannot tell them apart
    ids = np.array([o["reward_extra_info"][bv.REWARDS_ID_KEY] for o in outs])
    rewards = np.array([[o["reward_extra_info"][f"bae_reward_{k}"] for k in range(2)] for o in outs])
    adv = blockwise_advantages(rewards, [0] * 4, np.array([[0, o["reward_extra_info"]["bae_outcome_1"]] for o in outs]))
    assert np.std(ids) > 0 and np.abs(adv[:, 0]).max() == 0.5  # kept: block 1 has advantages
    assert ids[0] == ids[1] and ids[2] == ids[3]
    same = np.array([ids[2]] * 4)  # a group of four wrong answers with confidence 1: nothing to learn
    assert np.std(same) == 0.0
    assert bv.rewards_id([0.0, -1.0]) == bv.rewards_id([-0.0, -1.0]) != bv.rewards_id([0.0, np.nextafter(-1.0, 0.0)])
    assert np.isnan(bv.failed_score(ValueError("x"))["reward_extra_info"][bv.REWARDS_ID_KEY])  # kept, then refused


def test_reward_manager_turns_a_scoring_error_into_a_row_the_trainer_refuses(tokenizer, monkeypatch):
    """An unknown data_source, a verifier that raises, or a session of several outputs: run_single
    returns reward 0 and bae_error (no block keys), which scored_batch and the trainers refuse."""
    config = OmegaConf.create({"reward": {}})
    manager = bv.BAERewardManager(config, tokenizer, None)
    response = tokenizer(TEXTS[0])["input_ids"] + [tokenizer.eos_token_id]

    def data(source, rows=1):
        return DataProto(
            batch=TensorDict({"prompts": torch.ones(rows, 3, dtype=torch.int64), "responses": torch.tensor([response] * rows),
                              "attention_mask": torch.ones(rows, 3 + len(response), dtype=torch.int64)}, batch_size=rows),
            non_tensor_batch={"data_source": np.array([source] * rows, dtype=object),
                              "reward_model": np.array([{"ground_truth": "4"}] * rows, dtype=object),
                              "extra_info": np.array([{}] * rows, dtype=object)})

    run = lambda d: manager.loop.run_until_complete(manager.run_single(d))  # noqa: E731
    ok = run(data("arithmetic"))["reward_extra_info"]
    unknown = run(data("gsm8k"))
    assert unknown["reward_score"] == 0.0 and "not a bae task" in unknown["reward_extra_info"][bv.ERROR_KEY]
    assert not any(k.startswith("bae_reward_") for k in unknown["reward_extra_info"])
    assert "2 outputs in one session" in run(data("arithmetic", rows=2))["reward_extra_info"][bv.ERROR_KEY]

    def crash(*args, **kwargs):
        raise ZeroDivisionError("the verifier crashed")

    monkeypatch.setattr(bv, "score_response", crash)
    crashed = run(data("arithmetic"))["reward_extra_info"][bv.ERROR_KEY]
    assert crashed.startswith("ZeroDivisionError: the verifier crashed (data_source='arithmetic')") and "crash" in crashed
    with pytest.raises(RuntimeError, match="could not score 1 of 2 rows .*the verifier crashed"):
        bv.scored_batch([ok, {bv.ERROR_KEY: crashed}])


# --- the estimators == the core -----------------------------------------------------------------


@pytest.mark.parametrize("baseline", sorted(BASELINES))
@pytest.mark.parametrize("norm", [False, True])
def test_estimator_called_like_verl_equals_the_core(tokenizer, baseline, norm):
    rng = np.random.default_rng(0)
    scores, mask, index, infos = batch_like_verl(tokenizer, rows_like_verl(tokenizer, rng))
    expected, _, _ = core_reference(infos, index, mask, baseline, "group" if norm else "none")
    fn = core_algos.get_adv_estimator_fn(f"bae_{baseline}")
    adv, ret = fn(token_level_rewards=scores, response_mask=mask, config=algo_config(f"bae_{baseline}", norm),
                  index=index, scored=bv.scored_batch(infos, index))
    assert torch.equal(adv, expected) and torch.equal(ret, expected)
    # the gdpo-style route: block data as columns of non_tensor_batch
    columns = {key: np.array([info[key] for info in infos]) for key in infos[0]} | {"uid": index}
    adv2, _ = fn(token_level_rewards=scores, response_mask=mask, config=algo_config(f"bae_{baseline}", norm),
                 index=index, non_tensor_batch=columns)
    assert torch.equal(adv2, expected)


def test_estimator_through_verl_compute_advantage_with_forwarding(tokenizer):
    """verl's own compute_advantage dispatches through the registry; the forwarded block data reaches it."""
    rng = np.random.default_rng(1)
    scores, mask, index, infos = batch_like_verl(tokenizer, rows_like_verl(tokenizer, rng))
    data = DataProto(batch=TensorDict({"token_level_rewards": scores, "response_mask": mask}, batch_size=len(index)),
                     non_tensor_batch={"uid": index})
    token = bv._FORWARDED.set({"scored": bv.scored_batch(infos, index)})
    try:
        out = compute_advantage(data, adv_estimator="bae_ocb", norm_adv_by_std_in_grpo=False, config=algo_config("bae_ocb", False))
    finally:
        bv._FORWARDED.reset(token)
    expected, _, _ = core_reference(infos, index, mask, "ocb", "none")
    assert torch.equal(out.batch["advantages"], expected)


def test_ocb_eb_history_reads_the_memory_it_is_given(tokenizer):
    """bae.history=1: the estimator reads and updates the memory forwarded by the trainer (or passed as
    `state=`), so step 2's advantages are the core's with a state fed step 1; without one it refuses
    (the window would silently be empty)."""
    rng = np.random.default_rng(4)
    steps = [batch_like_verl(tokenizer, rows_like_verl(tokenizer, rng)) for _ in range(2)]
    fn = core_algos.get_adv_estimator_fn("bae_ocb_eb")
    core_state, given, forwarded = {}, {}, {}
    for scores, mask, index, infos in steps:
        call = dict(token_level_rewards=scores, response_mask=mask, config=algo_config("bae_ocb_eb", False), index=index,
                    scored=bv.scored_batch(infos, index), bae_options={"history": 1})
        own, _ = fn(**call, state=given)
        token = bv._FORWARDED.set({"state": forwarded})
        try:
            through, _ = fn(**call)
        finally:
            bv._FORWARDED.reset(token)
        expected, _, _ = core_reference(infos, index, mask, "ocb_eb", "none", history=1, state=core_state)
        assert torch.equal(own, expected) and torch.equal(through, expected)
    assert given == forwarded == core_state and len(given["1"]["eb_sums"]) == 1
    plain, _, _ = core_reference(infos, index, mask, "ocb_eb", "none")
    assert not torch.equal(own, plain)  # the memory counted
    with pytest.raises(ValueError, match="needs their sums"):
        fn(**call)


def test_estimator_refuses_without_block_data_or_with_misaligned_rows(tokenizer):
    rng = np.random.default_rng(2)
    scores, mask, index, infos = batch_like_verl(tokenizer, rows_like_verl(tokenizer, rng))
    fn = core_algos.get_adv_estimator_fn("bae_ocb")
    with pytest.raises(RuntimeError, match="trainer_mode=bae_sync"):
        fn(token_level_rewards=scores, response_mask=mask, config=None, index=index)
    shuffled = bv.scored_batch(infos, index[::-1].copy())
    with pytest.raises(ValueError, match="disagree on the uid"):
        fn(token_level_rewards=scores, response_mask=mask, config=None, index=index, scored=shuffled)


# --- one block + group mean == verl's GRPO ---------------------------------------------------


@pytest.mark.parametrize("norm", [False, True])
def test_one_block_group_mean_equals_verl_grpo(norm):
    rng = np.random.default_rng(3)
    n, width = 24, 11
    uids = np.array([f"prompt-{g}" for g in rng.permutation(np.repeat(np.arange(6), 4))], dtype=object)
    lengths = rng.integers(1, width + 1, n)
    mask = (torch.arange(width)[None] < torch.as_tensor(lengths)[:, None]).long()
    rewards = rng.choice([0.0, 1.0, 0.5, -0.25], size=n)
    scores = torch.zeros(n, width)
    scores[torch.arange(n), torch.as_tensor(lengths) - 1] = torch.as_tensor(rewards, dtype=torch.float32)
    blocks = bv.scored_batch([{"bae_reward_0": r} for r in rewards], uids)
    ours, _ = core_algos.get_adv_estimator_fn("bae_group_mean")(
        token_level_rewards=scores, response_mask=mask, config=algo_config("bae_group_mean", norm), index=uids, scored=blocks)
    grpo, _ = core_algos.compute_grpo_outcome_advantage(scores, mask, uids, norm_adv_by_std_in_grpo=norm)
    grpo_vec, _ = core_algos.get_adv_estimator_fn("grpo_vectorized")(
        token_level_rewards=scores, response_mask=mask, index=uids, norm_adv_by_std_in_grpo=norm)
    # verl computes in float32, the core in float64 then rounds once: equal to float32 rounding
    torch.testing.assert_close(ours, grpo, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours, grpo_vec, rtol=1e-6, atol=1e-7)
    assert torch.equal(ours == 0, grpo.abs() < 1e-6)  # same zero pattern (padding, tied groups)


def test_group_of_one_differs_from_verl_by_design():
    """verl: a singleton group has mean 0 and std 1 (advantage s / (1 + eps)); the core: advantage 0."""
    uids = np.array(["a", "b", "b"], dtype=object)
    scores = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    mask = torch.ones(3, 2, dtype=torch.int64)
    blocks = bv.scored_batch([{"bae_reward_0": r} for r in (1.0, 1.0, 0.0)], uids)
    ours, _ = core_algos.get_adv_estimator_fn("bae_group_mean")(
        token_level_rewards=scores, response_mask=mask, config=algo_config("bae_group_mean", True), index=uids, scored=blocks)
    grpo, _ = core_algos.compute_grpo_outcome_advantage(scores, mask, uids, norm_adv_by_std_in_grpo=True)
    assert torch.all(ours[0] == 0) and torch.allclose(grpo[0], torch.full((2,), 1 / (1 + 1e-6)))
    torch.testing.assert_close(ours[1:], grpo[1:], rtol=1e-6, atol=1e-7)


# --- verl's loss with our token advantages == the paper's per-block token mean -------------------


def paper_loss(logp, old, block_adv, ids, clip=0.2):
    """L_BAE = (1/N) sum_i sum_k (1/|T_ik|) sum_{t in T_ik} -min(rho A_ik, clip(rho) A_ik)."""
    ratio = torch.exp(logp - old).double()
    total = 0.0
    for i in range(ids.shape[0]):
        for k in range(block_adv.shape[1]):
            sel = ids[i] == k
            if sel.any():
                a = float(block_adv[i, k])
                r = ratio[i, sel]
                total += (-torch.minimum(r * a, r.clamp(1 - clip, 1 + clip) * a)).mean()
    return total / ids.shape[0]


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm", "token-mean"])
def test_verl_vanilla_loss_reproduces_the_paper_loss(tokenizer, mode):
    rng = np.random.default_rng(4)
    scores, mask, index, infos = batch_like_verl(tokenizer, rows_like_verl(tokenizer, rng))
    max_length = mask.shape[1] + 5 if mode == "seq-mean-token-sum-norm" else None
    tokens, r, ids = core_reference(infos, index, mask, "ocb", "none", mode, max_length)
    k = r.shape[1]
    o = np.array([[0] + [info[f"bae_outcome_{j}"] for j in range(1, k)] for info in infos])
    block_adv = blockwise_advantages(r, index.astype(str), o, baseline="ocb")
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(mask.shape, generator=g) * 2
    logp = old + (torch.rand(mask.shape, generator=g) - 0.5) * 0.8  # ratios in [0.67, 1.49]: some clipped
    actor = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": None, "clip_ratio_high": None, "clip_ratio_c": 3.0,
                              "global_batch_info": {"loss_scale_factor": max_length} if max_length else {}})
    loss, _ = core_algos.get_policy_loss_fn("vanilla")(old_log_prob=old, log_prob=logp, advantages=tokens,
                                                       response_mask=mask.bool(), loss_agg_mode=mode, config=actor)
    expected = paper_loss(logp, old, block_adv, torch.as_tensor(ids))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5, abs=1e-7)


def test_loss_layout_refuses_what_cannot_be_exact():
    ok = OmegaConf.create({"loss_agg_mode": "seq-mean-token-mean", "policy_loss": {"loss_mode": "vanilla"}})
    assert bv.loss_layout(ok) == ("seq-mean-token-mean", None)
    sapo = OmegaConf.create({"loss_agg_mode": "token-mean", "policy_loss": {"loss_mode": "sapo"}})
    assert bv.loss_layout(sapo)[0] == "seq-mean-token-mean"  # sapo aggregates that way whatever the config
    for bad, match in [({"loss_agg_mode": "seq-mean-token-mean", "policy_loss": {"loss_mode": "geo_mean"}}, "geo_mean"),
                       ({"loss_agg_mode": "token-sum"}, "not supported"),
                       ({"loss_agg_mode": "seq-mean-token-sum-norm"}, "loss_scale_factor")]:
        with pytest.raises(ValueError, match=match):
            bv.loss_layout(OmegaConf.create(bad))
    with pytest.warns(UserWarning, match="mini-batch"):
        bv.loss_layout(OmegaConf.create({"loss_agg_mode": "token-mean"}))


# --- the v1 trainer extension, end to end through verl's _compute_advantage ------------------------


class BatchMeta:
    """What the trainer passes around instead of data: the rows' TransferQueue keys (KVBatchMeta's role)."""

    def __init__(self, keys, partition_id):
        self.keys, self.partition_id = list(keys), partition_id

    def __len__(self):
        return len(self.keys)


class FakeTransferQueue:
    """In-memory stand-in for transfer_queue's kv_batch_get / kv_batch_put (rows in, TensorDict out)."""

    def __init__(self, rows: dict[str, dict]):
        self.rows = rows

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        from verl.utils.tensordict_utils import list_of_dict_to_tensordict

        present = [f for f in (select_fields or self.rows[keys[0]]) if f in self.rows[keys[0]]]
        return list_of_dict_to_tensordict([{f: self.rows[key][f] for f in present} for key in keys])

    def kv_batch_put(self, keys, partition_id, fields, tags=None):
        for i, key in enumerate(keys):
            for name in fields.keys():
                self.rows.setdefault(key, {})[name] = fields[name][i]
        return BatchMeta(keys, partition_id)


def trainer_rows(tokenizer, rng):
    rows = {}
    for j, (uid, ids, gold) in enumerate(rows_like_verl(tokenizer, rng)):
        out = bv.score_response(TASK, tokenizer, ids, gold)
        rm = torch.zeros(len(ids))
        rm[-1] = out["reward_score"]
        rows[f"{uid}_{j}_0"] = {"uid": uid, "responses": torch.tensor(ids), "response_mask": torch.ones(len(ids), dtype=torch.int64),
                                "rm_scores": rm, "extra_fields": {"reward_extra_info": out["reward_extra_info"]}}
    return rows


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "seq-mean-token-sum"])
def test_v1_trainer_forwards_block_data_and_is_order_free(tokenizer, monkeypatch, mode):
    from verl.trainer.ppo.v1 import get_trainer_cls

    rng = np.random.default_rng(5)
    rows = trainer_rows(tokenizer, rng)
    fake = FakeTransferQueue(rows)
    import transfer_queue

    monkeypatch.setattr(transfer_queue, "kv_batch_get", fake.kv_batch_get)
    monkeypatch.setattr(transfer_queue, "kv_batch_put", fake.kv_batch_put)
    trainer = object.__new__(get_trainer_cls("bae_sync"))
    trainer.config = OmegaConf.create({
        "algorithm": {"adv_estimator": "bae_ocb", "norm_adv_by_std_in_grpo": False, "gamma": 1.0, "lam": 1.0,
                      "use_kl_in_reward": False},
        "actor_rollout_ref": {"rollout": {"n": 4}, "actor": {"loss_agg_mode": mode, "policy_loss": {"loss_mode": "vanilla"}}},
    })
    keys = list(rows)
    results = {}
    for order in (keys, [keys[i] for i in rng.permutation(len(keys))]):  # a reordered batch (_balance_batch)
        batch = BatchMeta(order, "train")
        trainer._compute_advantage(batch, metrics={})
        results[tuple(order)] = {key: rows[key]["advantages"].clone() for key in order}
    first, second = results.values()
    assert all(torch.equal(first[key], second[key]) for key in keys)

    infos = [rows[key]["extra_fields"]["reward_extra_info"] for key in keys]
    index = np.array([rows[key]["uid"] for key in keys], dtype=object)
    width = max(len(rows[key]["response_mask"]) for key in keys)
    mask = torch.stack([torch.nn.functional.pad(rows[key]["response_mask"], (0, width - len(rows[key]["response_mask"]))) for key in keys])
    expected, _, _ = core_reference(infos, index, mask, "ocb", "none", mode)
    for i, key in enumerate(keys):
        n = len(rows[key]["response_mask"])
        assert torch.equal(first[key], expected[i, :n])
    assert bv._FORWARDED.get() is None  # nothing leaks past the call


def bae_trainer(monkeypatch, rows, estimator="bae_ocb", **config):
    """A bae_sync trainer (verl's class, no workers) over an in-memory TransferQueue of `rows`."""
    import transfer_queue
    from verl.trainer.ppo.v1 import get_trainer_cls

    fake = FakeTransferQueue(rows)
    monkeypatch.setattr(transfer_queue, "kv_batch_get", fake.kv_batch_get)
    monkeypatch.setattr(transfer_queue, "kv_batch_put", fake.kv_batch_put)
    trainer = object.__new__(get_trainer_cls("bae_sync"))
    trainer.config = OmegaConf.create({
        "algorithm": {"adv_estimator": estimator, "norm_adv_by_std_in_grpo": False, "gamma": 1.0, "lam": 1.0,
                      "use_kl_in_reward": False},
        "actor_rollout_ref": {"rollout": {"n": 4}, "actor": {"loss_agg_mode": "seq-mean-token-mean",
                                                           "policy_loss": {"loss_mode": "vanilla"}}},
        **config,
    })
    return trainer


def test_v1_trainer_logs_the_per_block_metrics_of_the_step(tokenizer, monkeypatch):
    """_compute_advantage logs ScoredBatch.metrics (what the TRL engine logs) of the batch under the
    task's own block names, with the unweighted block advantages A[i, k]."""
    from bae.batch import ScoredBatch

    rows = trainer_rows(tokenizer, np.random.default_rng(5))
    trainer = bae_trainer(monkeypatch, rows)
    metrics = {}
    trainer._compute_advantage(BatchMeta(list(rows), "train"), metrics=metrics)
    keys = list(rows)
    texts = [tokenizer.decode(rows[k]["responses"], skip_special_tokens=True) for k in keys]
    scores = [TASK.score(t, "4") for t in texts]
    uids = np.array([rows[k]["uid"] for k in keys])
    expected_batch = ScoredBatch.from_scores(scores, uids, TASK.block_names)
    adv = expected_batch.advantages("bae", "ocb", "none")
    expected = expected_batch.metrics(adv)
    assert {"bae/solution/reward_mean", "bae/confidence/advantage_std", "bae/confidence/stratum_size_min",
            "bae/accuracy", "bae/malformed_rate", "bae/confidence_mean", "bae/ece"} <= set(expected)
    assert set(metrics) == set(expected)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    assert 0 < expected["bae/malformed_rate"] < 1 and expected["bae/confidence/advantage_std"] > 0


def test_v1_trainer_keeps_the_baseline_memory_for_the_run(tokenizer, monkeypatch):
    """bae_ocb_eb with bae.history=2: the trainer forwards its own memory to the estimator at every
    step, so step t's advantages (logged advantage std) are the core's with the sums of the steps
    before, and the window keeps the last two."""
    from bae.batch import ScoredBatch

    rows = trainer_rows(tokenizer, np.random.default_rng(6))
    trainer = bae_trainer(monkeypatch, rows, estimator="bae_ocb_eb", bae={"history": 2})
    keys = list(rows)
    scores = [TASK.score(tokenizer.decode(rows[k]["responses"], skip_special_tokens=True), "4") for k in keys]
    expected_batch = ScoredBatch.from_scores(scores, np.array([rows[k]["uid"] for k in keys]), TASK.block_names)
    replayed, stds = {}, []
    for step in range(3):
        metrics = {}
        trainer._compute_advantage(BatchMeta(list(rows), "train"), metrics=metrics)
        adv = expected_batch.advantages("bae", "ocb_eb", "none", history=2, state=replayed)
        assert metrics["bae/confidence/advantage_std"] == pytest.approx(float(adv[:, 1].std()), abs=1e-12), step
        stds.append(metrics["bae/confidence/advantage_std"])
    assert trainer._bae_baseline_state == replayed and len(replayed["1"]["eb_sums"]) == 2
    assert stds[0] != stds[1]  # the same rows, but the second step pools the first's sums


def test_padding_rows_verl_adds_count_in_no_baseline(tokenizer, monkeypatch):
    """verl's upsample_batch_to_divisible_size appends copies of row 0 (its reward_extra_info
    included) under one `pad...` uid with a zero response mask. bae_batch_mean pools the batch:
    the advantages and the logged metrics must be those of the real rows alone."""
    from transfer_queue import KVBatchMeta
    from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size

    rows = trainer_rows(tokenizer, np.random.default_rng(6))
    real = list(rows)[:-1]  # 11 rows: padded up to 16
    del rows[list(rows)[-1]]
    trainer = bae_trainer(monkeypatch, rows, estimator="bae_batch_mean")
    tags = [{"seq_len": 10, "status": "success"} for _ in real]
    batch = upsample_batch_to_divisible_size(KVBatchMeta(keys=real, tags=tags, partition_id="train"), 16, tokenizer.eos_token_id)
    padded = [k for k, tag in zip(batch.keys, batch.tags) if tag.get("is_padding")]
    assert len(batch) == 16 and len(padded) == 5 and all(k.startswith("pad") for k in padded)
    assert rows[padded[0]]["extra_fields"]["reward_extra_info"] == rows[real[0]]["extra_fields"]["reward_extra_info"]
    order = np.random.default_rng(0).permutation(16)
    batch.reorder(order.tolist())  # as _balance_batch does
    metrics = {}
    trainer._compute_advantage(batch, metrics=metrics)

    infos = [rows[k]["extra_fields"]["reward_extra_info"] for k in real]
    index = np.array([rows[k]["uid"] for k in real], dtype=object)
    width = max(len(rows[k]["response_mask"]) for k in real)
    mask = torch.stack([torch.nn.functional.pad(rows[k]["response_mask"], (0, width - len(rows[k]["response_mask"]))) for k in real])
    expected, r, _ = core_reference(infos, index, mask, "batch_mean", "none")
    for i, key in enumerate(real):
        assert torch.equal(rows[key]["advantages"], expected[i, : len(rows[key]["response_mask"])]), key
    assert all((rows[k]["advantages"] == 0).all() for k in padded)
    with_copies, _, _ = core_reference(infos + [infos[0]] * 5, np.concatenate([index, ["pad"] * 5]),
                                       torch.cat([mask, mask[:1].expand(5, -1)]), "batch_mean", "none")
    assert not torch.equal(with_copies[: len(real)], expected)  # counting the copies would change the real rows
    assert metrics["bae/solution/reward_mean"] == pytest.approx(r[:, 0].mean())
    assert metrics["bae/accuracy"] == pytest.approx(np.mean([info["acc"] for info in infos]))


def failing_rows(tokenizer, rng, how):
    rows = trainer_rows(tokenizer, rng)
    key = list(rows)[3]
    if how == "reward error":
        rows[key]["extra_fields"] = {"reward_extra_info": bv.failed_score(RuntimeError("verifier crashed"), "arithmetic")["reward_extra_info"]}
    elif how == "several outputs":
        uid, session, _ = key.rsplit("_", 2)
        rows[f"{uid}_{session}_1"] = dict(rows[key])
    return rows


@pytest.mark.parametrize("how, match", [("reward error", "could not score 1 of 12 responses .*verifier crashed"),
                                        ("several outputs", "1 sessions returned several outputs"),
                                        ("failed session", "1 prompt groups had a rollout session fail")])
def test_bae_trainer_stops_on_a_batch_it_would_train_on_wrongly(tokenizer, monkeypatch, how, match):
    """Before any actor work on a sampled batch (_balance_batch runs first): a row the reward manager
    could not score, a session of several outputs, or a group verl's replay buffer marked failed
    (sync mode trains on the rest of such a group) stops training with the reason."""
    import types

    rows = failing_rows(tokenizer, np.random.default_rng(7), how)
    trainer = bae_trainer(monkeypatch, rows)
    trainer.replay_buffer = types.SimpleNamespace(failure_keys={"train": {rows[list(rows)[0]]["uid"]} if how == "failed session" else set()})
    with pytest.raises(RuntimeError, match=match):
        trainer._balance_batch(BatchMeta(list(rows), "train"), metrics={})
    clean_rows = trainer_rows(tokenizer, np.random.default_rng(7))
    clean = bae_trainer(monkeypatch, clean_rows)
    clean.replay_buffer = types.SimpleNamespace(failure_keys={"train": set()})
    assert clean._bae_check_batch(BatchMeta(list(clean_rows), "train")) is None


def test_validation_with_a_reward_error_stops(monkeypatch):
    trainer = bae_trainer(monkeypatch, {})
    infos = {"reward": [1.0, 0.0], bv.ERROR_KEY: [None, "ValueError: boom"]}
    with pytest.raises(RuntimeError, match="could not score 1 validation responses; first error: ValueError: boom"):
        trainer._val_metrics_update(["arithmetic"] * 2, ["a", "a"], infos, [2, 2])


def test_entropy_controller_state_travels_with_verls_checkpoints(tmp_path, monkeypatch):
    """verl's own _save_checkpoint / _load_checkpoint (workers stubbed) carry the controller's state
    and the baseline memory; a checkpoint without them is refused rather than resumed with the
    coefficient reset to 0."""
    import os
    import types

    saved = []

    def make():
        trainer = bae_trainer(monkeypatch, {}, trainer={"default_local_dir": str(tmp_path), "default_hdfs_dir": None,
                                                        "resume_mode": "auto", "resume_from_path": None,
                                                        "del_local_ckpt_after_load": False, "max_actor_ckpt_to_keep": None},
                              bae={"entropy_target": 0.2, "entropy_coef_delta": 5e-4})
        trainer.config.actor_rollout_ref.actor.checkpoint = {"async_save": False}
        trainer.trainer_mode, trainer.use_critic = "bae_sync", False
        trainer.actor_rollout_wg = types.SimpleNamespace(save_checkpoint=lambda *a, **k: saved.append(a),
                                                         load_checkpoint=lambda *a, **k: None)
        trainer.train_dataloader = types.SimpleNamespace(state_dict=lambda: {}, load_state_dict=lambda state: None)
        trainer.checkpoint_callback = types.SimpleNamespace(on_save=lambda **k: None)
        return trainer

    first = make()
    first.global_steps = 7
    first._bae_entropy.coef, first._bae_entropy.last_entropy = 0.0035, 0.12
    memory = {"num_blocks": 2, "1": {"eb_sums": [[1.5, 4.0, 0.25, 1.0, 2.5, 1.0]]}}  # ocb_eb's window (bae.history)
    first._bae_baseline_state.update(memory)
    first._save_checkpoint()
    assert saved and (tmp_path / "global_step_7" / bv.STATE_FILE).is_file()
    second = make()
    second._load_checkpoint()
    assert second.global_steps == 7 and second._bae_entropy.state_dict() == {"entropy_coef": 0.0035, "last_entropy": 0.12}
    assert second._bae_entropy.applied() == 0.0035
    assert second._bae_baseline_state == memory
    os.remove(tmp_path / "global_step_7" / bv.STATE_FILE)
    with pytest.raises(RuntimeError, match=bv.STATE_FILE):
        make()._load_checkpoint()


# --- the policy-loss allow-list: each allowed loss, through verl's own function, gives the per-block mean ---


_RECIPE_ACTOR = {}


def actor_config(loss_mode, **policy_loss):
    """verl's ActorConfig (the dataclass its workers build) of the paper recipe with this policy loss."""
    import copy
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from verl.utils.config import omega_conf_to_dataclass

    if not _RECIPE_ACTOR:
        with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "configs" / "paper"), version_base=None):
            cfg = compose(config_name="verl_qwen2.5-3b-instruct")
        OmegaConf.resolve(cfg)
        _RECIPE_ACTOR["actor"] = cfg.actor_rollout_ref.actor
    node = copy.deepcopy(_RECIPE_ACTOR["actor"])
    with open_dict(node):
        node.policy_loss.loss_mode = loss_mode
        for key, value in policy_loss.items():
            node.policy_loss[key] = value
    return omega_conf_to_dataclass(node)


def per_block_mean_through_verl(fn, config, old, logp, block_adv, ids):
    """L_BAE = (1/N) sum_i sum_k (1/|T_ik|) sum_{t in T_ik} l_t(A_ik), with l_t(a) verl's own loss
    of token t alone (each token a sequence of its own, advantage a): what the loss must optimise.
    One call per block: its tokens as |T_ik| one-token sequences, whose seq-mean is the block mean."""
    total = 0.0
    for i in range(ids.shape[0]):
        for k in range(block_adv.shape[1]):
            sel = ids[i] == k
            if not sel.any():
                continue
            column = lambda x: x[i][sel][:, None]  # noqa: E731  [|T_ik|, 1]
            config.global_batch_info.clear()
            loss, _ = fn(old_log_prob=column(old), log_prob=column(logp), advantages=torch.full((int(sel.sum()), 1), float(block_adv[i, k])),
                         response_mask=torch.ones(int(sel.sum()), 1, dtype=torch.bool), loss_agg_mode="seq-mean-token-mean", config=config)
            total = total + loss
    return total / ids.shape[0]


def loss_case(tokenizer, loss_mode, **policy_loss):
    """(ours, expected): verl's loss on our per-token advantages, and the per-block mean of its token
    losses at the unweighted block advantages, each as (value, gradient wrt the log-probs)."""
    rng = np.random.default_rng(4)
    scores, mask, index, infos = batch_like_verl(tokenizer, rows_like_verl(tokenizer, rng, num_groups=2))
    tokens, r, ids = core_reference(infos, index, mask, "ocb", "none", "seq-mean-token-mean")
    k = r.shape[1]
    o = np.array([[0] + [info[f"bae_outcome_{j}"] for j in range(1, k)] for info in infos])
    block_adv = blockwise_advantages(r, index.astype(str), o, baseline="ocb")
    assert (np.abs(block_adv) > 0).any() and len(np.unique(np.abs(block_adv[block_adv != 0]))) > 2
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(mask.shape, generator=g) * 2
    noise = (torch.rand(mask.shape, generator=g) - 0.5) * 0.8  # ratios in [0.67, 1.49]: some clipped
    config = actor_config(loss_mode, **policy_loss)
    fn = core_algos.get_policy_loss_fn(loss_mode)
    out = []
    for compute in ("ours", "expected"):
        logp = (old + noise).clone().requires_grad_(True)
        config.global_batch_info.clear()  # one process: verl's agg_loss counts the batch itself
        if compute == "ours":
            loss, _ = fn(old_log_prob=old, log_prob=logp, advantages=tokens, response_mask=mask.bool(),
                         loss_agg_mode="seq-mean-token-mean", config=config)
        else:
            loss = per_block_mean_through_verl(fn, config, old, logp, block_adv, torch.as_tensor(ids))
        loss.backward()
        out.append((float(loss.detach()), logp.grad.clone()))
    return out


@pytest.mark.parametrize("loss_mode", sorted(bv.POLICY_LOSSES))
def test_allowed_policy_loss_optimises_the_per_block_mean(tokenizer, loss_mode):
    """Each allow-listed loss of verl 0.9.1, fed the estimator's per-token advantages (the recipe's
    seq-mean-token-mean), has the value and the gradient of L_BAE = (1/N) sum_i sum_k (1/|T_ik|)
    sum_{t in T_ik} l_t(A_ik), l_t being verl's own loss of token t alone."""
    (ours, grad), (expected, grad_expected) = loss_case(tokenizer, loss_mode)
    assert grad_expected.abs().max() > 0
    assert ours == pytest.approx(expected, rel=1e-5, abs=1e-7)
    torch.testing.assert_close(grad, grad_expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("loss_mode, options", [("geo_mean", {}), ("gspo", {}), ("kl_cov", {"kl_cov_ratio": 0.05}),
                                                ("dro", {"dro_beta": 0.5})])
def test_refused_policy_loss_would_not_optimise_the_per_block_mean(tokenizer, loss_mode, options):
    """The same check fails for the refused losses: refusing them is not caution for its own sake."""
    (ours, grad), (expected, grad_expected) = loss_case(tokenizer, loss_mode, **options)
    assert ours != pytest.approx(expected, rel=1e-3) or not torch.allclose(grad, grad_expected, rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match=f"loss_mode={loss_mode} "):
        bv.loss_layout(OmegaConf.create({"loss_agg_mode": "seq-mean-token-mean", "policy_loss": {"loss_mode": loss_mode}}))


@pytest.mark.parametrize("loss_mode", ["clip_cov", "bypass_mode", "a_loss_of_my_own"])
def test_other_policy_losses_are_refused_with_the_reason(loss_mode):
    with pytest.raises(ValueError, match=rf"policy_loss.loss_mode={loss_mode} .*use one of"):
        bv.loss_layout(OmegaConf.create({"loss_agg_mode": "seq-mean-token-mean", "policy_loss": {"loss_mode": loss_mode}}))


# --- the entropy controller -------------------------------------------------------------------------


def test_entropy_controller_follows_the_rule_over_a_scripted_entropy_sequence():
    """coef starts at 0; after each update it rises by delta when that update's entropy was <= the
    target and falls by delta (never below 0) otherwise; the loss of update t uses coef only when
    the entropy measured at update t-1 was <= the target (TRL's use_adaptive_entropy; at update 1: 0)."""
    from bae.paper import PAPER

    c = bv.EntropyController.from_config(OmegaConf.create({}))
    assert (c.target, c.delta, c.coef, c.applied()) == (PAPER.entropy_target, PAPER.entropy_coef_delta, 0.0, 0.0)
    d = PAPER.entropy_coef_delta
    entropies = [0.9, 0.1, 0.15, 0.19, 0.5, 0.3, 0.3, 0.3, 0.2, 0.05]
    expected_coef = [0, d, 2 * d, 3 * d, 2 * d, d, 0, 0, d, 2 * d]  # after each update
    expected_applied = [0, 0, d, 2 * d, 3 * d, 0, 0, 0, 0, d]  # what each update's loss used
    applied, coef = [], []
    for h in entropies:
        applied.append(c.applied())
        c.update(h)
        coef.append(c.coef)
    np.testing.assert_allclose(coef, expected_coef, atol=1e-15)
    np.testing.assert_allclose(applied, expected_applied, atol=1e-15)
    capped = bv.EntropyController(delta=0.4, coef_max=1.0)
    for _ in range(4):
        capped.update(0.0)
    assert capped.coef == 1.0  # TRL's entropy_coef_max
    restored = bv.EntropyController()
    restored.load_state_dict(json.loads(json.dumps(c.state_dict())))
    assert (restored.coef, restored.last_entropy, restored.applied()) == (c.coef, c.last_entropy, c.applied())
    assert bv.EntropyController.from_config(OmegaConf.create({"bae": {"use_adaptive_entropy": False}})) is None
    custom = bv.EntropyController.from_config(OmegaConf.create({"bae": {"entropy_target": 0.5, "entropy_coef_delta": 1e-3}}))
    assert (custom.target, custom.delta) == (0.5, 1e-3)
    for bad in ({"entropy_target": -1}, {"entropy_coef_delta": float("nan")}, {"use_adaptive_entropy": "yes"}):
        with pytest.raises(ValueError, match="bae."):
            bv.EntropyController.from_config(OmegaConf.create({"bae": bad}))


def test_the_actor_loss_uses_the_coefficient_the_batch_carries():
    """EntropyControlledLoss (what the bae trainers install in the actor workers) is verl's ppo_loss
    with entropy_coeff = the batch's bae_entropy_coeff: loss(c) = pg_loss - c * H_agg; a batch
    without the key is refused, and verl's frozen config is left as it was."""
    from functools import partial

    from tensordict import NonTensorData
    from verl.workers.utils.losses import ppo_loss

    config = actor_config("vanilla")
    g = torch.Generator().manual_seed(1)
    n, t = 3, 5
    mask = torch.ones(n, t, dtype=torch.int64)
    mask[0, 3:] = 0
    old = -torch.rand(n, t, generator=g)

    prompt = 2
    lengths = mask.sum(1)

    def flat(x):  # the model output's layout: one row per sequence token, response token j at prompt - 1 + j
        return torch.cat([torch.cat([torch.zeros(prompt - 1), x[i, : lengths[i]], torch.zeros(1)]) for i in range(n)])

    def run(coef):
        logp = (old + 0.1 * torch.randn(n, t, generator=torch.Generator().manual_seed(2))).requires_grad_(True)
        entropy = torch.rand(n, t, generator=torch.Generator().manual_seed(3)) * 3
        data = TensorDict({"response_mask": mask, "old_log_probs": old, "advantages": torch.linspace(-1, 1, n * t).reshape(n, t),
                           "prompts": torch.ones(n, prompt, dtype=torch.int64), "responses": torch.ones(n, t, dtype=torch.int64),
                           "attention_mask": torch.cat([torch.ones(n, prompt, dtype=torch.int64), mask], 1)}, batch_size=n)
        data["dp_size"], data["batch_num_tokens"], data["global_batch_size"] = NonTensorData(1), NonTensorData(None), NonTensorData(None)
        if coef is not None:
            data[bv.ENTROPY_COEF_KEY] = NonTensorData(coef)
        loss, metrics = loss_fn(model_output={"log_probs": flat(logp), "entropy": flat(entropy)}, data=data)
        return float(loss), float(metrics["actor/entropy_loss"].values[0]), float(metrics["actor/pg_loss"].values[0])

    loss_fn = bv.EntropyControlledLoss(partial(ppo_loss, config=config))
    loss0, h, pg = run(0.0)
    assert loss0 == pytest.approx(pg) and h > 0
    for coef in (1e-3, 0.25):
        loss, h_c, pg_c = run(coef)
        assert (h_c, pg_c) == (h, pg) and loss == pytest.approx(pg - coef * h, rel=1e-6)
    assert config.entropy_coeff == 0.0
    with pytest.raises(RuntimeError, match=bv.ENTROPY_COEF_KEY):
        run(None)
