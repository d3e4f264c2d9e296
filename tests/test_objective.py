"""The per-token advantages reproduce the paper's blockwise loss L_BAE (Section 4.2) exactly."""

import numpy as np
import pytest
import torch

import bae.objective as objective
from bae.advantages import blockwise_advantages
from bae.objective import (
    AGGREGATIONS,
    block_token_weights,
    clipped_policy_loss,
    method_advantages,
    method_token_advantages,
    scalar_token_advantages,
    token_advantages,
)

CLIP = 0.2


def random_rollout(seed, n=6, k=3, t=40):
    """Block ids with very different block lengths (1 token up to ~30) and right padding."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.full((n, t), -1, dtype=torch.long)
    for i in range(n):
        lengths = [int(torch.randint(1, 4, (1,), generator=gen)) if (i + b) % 3 == 0 else int(torch.randint(5, 13, (1,), generator=gen)) for b in range(k)]
        ids[i, : sum(lengths)] = torch.repeat_interleave(torch.arange(k), torch.tensor(lengths))
    old = torch.randn(n, t, generator=gen, dtype=torch.float64) - 2
    logp = (old + 0.4 * torch.randn(n, t, generator=gen, dtype=torch.float64)).requires_grad_()  # ratios cross the clip range
    adv = torch.randn(n, k, generator=gen, dtype=torch.float64)
    return ids, old, logp, adv


def l_bae(logp, old, adv, ids):
    """-(1/N) sum_i sum_k (1/|T_ik|) sum_{t in T_ik} min(rho A_ik, clip(rho) A_ik), written as loops."""
    n, k_all = adv.shape
    total = 0.0
    for i in range(n):
        for k in range(k_all):
            tokens = (ids[i] == k).nonzero().flatten()
            if len(tokens) == 0:
                continue
            rho = torch.exp(logp[i, tokens] - old[i, tokens])
            surrogate = torch.minimum(rho * adv[i, k], rho.clamp(1 - CLIP, 1 + CLIP) * adv[i, k])
            total = total - surrogate.mean()
    return total / n


def aggregated_loss(logp, old, token_adv, mask, aggregation, max_length):
    """The engines' token aggregations (verl's loss_agg_mode) of the same clipped token loss."""
    rho = torch.exp(logp - old)
    per_token = -torch.minimum(rho * token_adv, rho.clamp(1 - CLIP, 1 + CLIP) * token_adv) * mask
    if aggregation == "seq-mean-token-mean":
        return (per_token.sum(1) / mask.sum(1)).mean()
    if aggregation == "seq-mean-token-sum":
        return per_token.sum(1).mean()
    if aggregation == "seq-mean-token-sum-norm":
        return (per_token.sum(1) / max_length).mean()
    return per_token.sum() / mask.sum()  # token-mean


@pytest.mark.parametrize("seed", range(5))
def test_clipped_loss_with_token_advantages_equals_l_bae(seed):
    ids, old, logp, adv = random_rollout(seed)
    mask = (ids >= 0).double()
    expected = l_bae(logp, old, adv, ids)
    (grad_expected,) = torch.autograd.grad(expected, logp)
    got = clipped_policy_loss(logp, old, token_advantages(adv, ids).double(), mask, CLIP)
    (grad_got,) = torch.autograd.grad(got, logp)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-9)
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_every_aggregation_reproduces_l_bae(aggregation):
    ids, old, logp, adv = random_rollout(9)
    mask = (ids >= 0).double()
    expected = l_bae(logp, old, adv, ids)
    token_adv = token_advantages(adv, ids, aggregation=aggregation, max_length=ids.shape[1]).double()
    got = aggregated_loss(logp, old, token_adv, mask, aggregation, ids.shape[1])
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    (g1,) = torch.autograd.grad(got, logp)
    (g2,) = torch.autograd.grad(expected, logp)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-8)


def test_each_token_carries_its_own_blocks_advantage():
    ids, _, _, adv = random_rollout(2)
    token_adv = token_advantages(adv, ids)
    weights = block_token_weights(ids, adv.shape[1])
    active = ids >= 0
    assert torch.all(weights[active] > 0) and torch.all(weights[~active] == 0)
    expected = adv.float().gather(1, ids.clamp(min=0)) * weights
    torch.testing.assert_close(token_adv, expected)
    # weight n_i / n_ik: the weights of block k sum to n_i for every block present
    for i in range(ids.shape[0]):
        for k in range(adv.shape[1]):
            assert weights[i][ids[i] == k].sum().item() == pytest.approx(active[i].sum().item(), rel=1e-6)


def test_scalar_methods_spread_one_advantage_over_all_tokens():
    ids, old, logp, _ = random_rollout(4)
    rewards = torch.tensor([[1.0, -0.04], [0.0, -0.81], [1.0, -0.25], [0.0, -0.01], [1.0, -0.5], [0.0, 0.0]])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    rlvr = method_token_advantages("rlvr", rewards, groups, ids)
    rlcr = method_token_advantages("rlcr", rewards, groups, ids)
    for method, scalar in (("rlvr", rewards[:, 0]), ("rlcr", rewards.sum(1))):
        a = scalar - torch.stack([scalar[groups == g].mean() for g in groups])
        got = rlvr if method == "rlvr" else rlcr
        torch.testing.assert_close(got, scalar_token_advantages(a, ids))
    # GRPO's loss with a scalar advantage: the same per-sequence token mean of the clipped loss
    mask = (ids >= 0).double()
    a = rewards[:, 0] - torch.stack([rewards[groups == g, 0].mean() for g in groups])
    rho = torch.exp(logp - old)
    grpo = -(torch.minimum(rho * a[:, None].double(), rho.clamp(0.8, 1.2) * a[:, None].double()) * mask).sum(1) / mask.sum(1)
    assert clipped_policy_loss(logp, old, rlvr.double(), mask).item() == pytest.approx(grpo.mean().item())


def test_scalar_methods_refuse_baseline_options():
    """A scalar method has no baseline: options meant for one are refused, never dropped silently
    (the scalar advantages without them are unchanged)."""
    r, g = np.array([[1.0, -0.04], [0.0, -0.81], [1.0, -0.25]]), np.array([0, 0, 0])
    for method in ("rlvr", "rlcr", "gdpo"):
        with pytest.raises(ValueError, match=rf"\['history'\] apply to method 'bae' only: method '{method}'"):
            method_advantages(method, r, g, history=3)
    assert method_advantages("rlvr", r, g)[:, 0].tolist() == pytest.approx([1 / 3, -2 / 3, 1 / 3])
    # eps is the scaling's, not a baseline option: a scalar method under scale="group" takes it,
    # A = (R - mean) / (std + eps) with the group's std (ddof 1)
    centred = np.array([1 / 3, -2 / 3, 1 / 3])
    scaled = method_advantages("rlvr", r, g, scale="group", eps=1.0)[:, 0]
    assert scaled.tolist() == pytest.approx((centred / (np.std(r[:, 0], ddof=1) + 1.0)).tolist())


def test_bae_method_is_blockwise_advantages_then_token_advantages():
    ids, _, _, _ = random_rollout(5)
    rng = np.random.default_rng(0)
    r = rng.normal(size=(6, 3))
    o = rng.integers(0, 2, size=(6, 3))
    g = np.array([0, 0, 0, 1, 1, 1])
    got = method_token_advantages("bae", r, g, ids, o, baseline="ocb")
    torch.testing.assert_close(got, token_advantages(blockwise_advantages(r, g, o, baseline="ocb"), ids))


def test_block_without_tokens_and_all_padding_rows_give_no_nan():
    ids = torch.tensor([[0, 0, -1, -1], [-1, -1, -1, -1], [1, 1, 1, -1]])
    adv = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, -6.0]])
    out = token_advantages(adv, ids)
    assert torch.all(torch.isfinite(out))
    assert out[1].abs().sum() == 0
    assert out[2, :3].tolist() == [-6.0, -6.0, -6.0]  # n_i / n_ik = 1


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="token_block_ids must be in"):
        token_advantages(torch.zeros(1, 2), torch.tensor([[0, 2]]))
    with pytest.raises(ValueError, match="disagree"):
        token_advantages(torch.zeros(2, 2), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown aggregation"):
        block_token_weights(torch.zeros(1, 2, dtype=torch.long), 1, "sum")
    with pytest.raises(ValueError, match="max_length"):
        block_token_weights(torch.zeros(1, 2, dtype=torch.long), 1, "seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="unknown method"):
        method_token_advantages("ppo", torch.zeros(1, 1), [0], torch.zeros(1, 1, dtype=torch.long))


def test_given_block_lengths_give_the_same_result():
    """Passing the n_ik the engine already knows must not change anything; wrong shapes are errors."""
    ids, _, _, adv = random_rollout(7)
    lengths = torch.stack([(ids == k).sum(1) for k in range(adv.shape[1])], 1)
    for aggregation in AGGREGATIONS:
        torch.testing.assert_close(token_advantages(adv, ids, aggregation, 40, block_lengths=lengths),
                                   token_advantages(adv, ids, aggregation, 40))
    with pytest.raises(ValueError, match="block_lengths"):
        token_advantages(adv, ids, block_lengths=lengths[:, :2])


# --- the per-token expansion against the per-block loop it replaced ---------------------------------


DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8)


def loop_counts(ids, k_all):
    """n_ik = |{t : ids[i, t] = k}|, one compare-and-sum per block: [N, K] int64."""
    return torch.stack([(ids.long() == k).sum(1) for k in range(k_all)], 1).reshape(ids.shape[0], k_all)


def reference_token_advantages(adv, ids, aggregation="seq-mean-token-mean", max_length=None):
    """The expansion as it was before counting in one pass: per-block loop counts, then one gather."""
    counts = loop_counts(ids, adv.shape[1]).double()
    if aggregation == "seq-mean-token-mean":
        numerator = counts.sum(1, keepdim=True)
    elif aggregation == "seq-mean-token-sum":
        numerator = torch.ones_like(counts[:, :1])
    elif aggregation == "seq-mean-token-sum-norm":
        numerator = torch.full_like(counts[:, :1], float(max_length))
    else:
        numerator = (counts.sum() / max(counts.shape[0], 1)).expand(counts.shape[0], 1)
    scale = torch.where(counts > 0, numerator / counts.clamp(min=1), torch.zeros_like(counts))
    per_block = (adv.double() * scale).float()
    table = torch.cat([per_block.new_zeros(per_block.shape[0], 1), per_block], 1)
    return table.gather(1, ids.long() + 1)


def random_ids(gen, n, t, k_all, dtype=torch.int64):
    """Block ids with padding everywhere: holes inside a response, all-padding rows, empty blocks."""
    ids = torch.randint(-1, k_all, (n, t), generator=gen)
    if n > 1:
        ids[0] = -1  # a row with no tokens
        ids[1, : t // 2] = 0  # a row without block K - 1 (or with only block 0)
    return ids.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k_all", [1, 2, 3, 5])
def test_one_pass_counts_equal_the_per_block_loop(dtype, k_all):
    """The two-sum count (K <= 2) and the scatter_add count (K > 2) give n_ik exactly, for every
    dtype, with padding inside and after the responses, all-padding rows, N = 0 and T = 0."""
    gen = torch.Generator().manual_seed(k_all)
    for n, t in [(7, 33), (1, 1), (0, 5), (4, 0), (300, 300)]:
        ids = random_ids(gen, n, t, k_all, dtype)
        got = objective._block_counts(objective._block_ids(ids, k_all), k_all)
        assert got.dtype == torch.float64 and got.shape == (n, k_all)
        assert torch.equal(got, loop_counts(ids, k_all).double())


def test_counts_of_non_contiguous_and_offset_ids():
    """Strided, sliced, broadcast (TRL passes arange(K).expand(N, K)) and storage-offset ids (the
    one-pass count reads the storage at a byte offset) count like fresh copies."""
    gen = torch.Generator().manual_seed(3)
    wide = random_ids(gen, 9, 40, 2)
    flat = random_ids(gen, 1, 9 * 40 + 11, 2)[0]
    for k_all in (1, 2, 3):
        base = wide.clamp(max=k_all - 1)
        offset = flat.clamp(max=k_all - 1)[7 : 7 + 8 * 40].view(8, 40)  # odd storage offset, ends before the storage
        for ids in (base[:, ::3], base[2:, 5:], base[3:], base[:, :1], base.t()[:9], offset,
                    torch.arange(k_all).expand(6, k_all)):
            got = objective._block_counts(objective._block_ids(ids, k_all), k_all)
            assert torch.equal(got, loop_counts(ids, k_all).double())


def test_one_pass_sum_equals_the_two_sums(monkeypatch):
    """The shifted-word sum (little-endian CPU) and the two sums used elsewhere give the same P, V."""
    gen = torch.Generator().manual_seed(8)
    for n, t in [(50, 1), (50, 2), (31, 97), (2, 513)]:
        ids = random_ids(gen, n, t, 2)
        one_pass = objective._padding_and_id_sum(ids)
        monkeypatch.setattr(objective.sys, "byteorder", "big")  # takes the two-sum branch
        two_sums = objective._padding_and_id_sum(ids)
        monkeypatch.undo()
        expected = ((ids == -1).sum(1), ids.clamp(min=0).sum(1))
        for got in (one_pass, two_sums):
            assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_token_advantages_are_bit_for_bit_the_per_block_loop(aggregation, dtype):
    """Same float32 bits as the loop-count implementation, for K = 1..4, ids only or counts given."""
    gen = torch.Generator().manual_seed(11)
    for k_all in (1, 2, 3, 4):
        for n, t in [(5, 17), (64, 257), (0, 3), (3, 0)]:
            ids = random_ids(gen, n, t, k_all, dtype)
            adv = torch.randn(n, k_all, generator=gen, dtype=torch.float64) * 10 ** torch.randint(-3, 4, (n, k_all), generator=gen)
            expected = reference_token_advantages(adv, ids, aggregation, 300)
            got = token_advantages(adv, ids, aggregation, 300)
            given = token_advantages(adv, ids, aggregation, 300, block_lengths=loop_counts(ids, k_all))
            assert got.dtype == torch.float32 and got.shape == (n, t)
            assert torch.equal(got, expected) and torch.equal(given, expected)
            ones = torch.ones(n, k_all, dtype=torch.float64)
            assert torch.equal(block_token_weights(ids, k_all, aggregation, 300), reference_token_advantages(ones, ids, aggregation, 300))


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 30])
def test_chunking_does_not_change_the_result(monkeypatch, chunk):
    """The index is built in row chunks of ~_CHUNK_TOKENS tokens; any chunk size (one row per chunk,
    chunks that do not divide N, a single chunk) gives the same bits."""
    gen = torch.Generator().manual_seed(5)
    monkeypatch.setattr(objective, "_CHUNK_TOKENS", chunk)
    for k_all in (2, 3):
        ids = random_ids(gen, 37, 21, k_all)
        adv = torch.randn(37, k_all, generator=gen, dtype=torch.float64)
        assert torch.equal(token_advantages(adv, ids), reference_token_advantages(adv, ids))


# ids that are out of [-1, K - 1]; 2^32 - 1 and -2^32 have the int32 halves (-1, 0) and (0, -1), which
# the two-sum count cannot tell from valid ids: the gather's check must catch them, not the sums
BAD_IDS = [-2, 2**31, 2**32 - 1, -(2**32), 2**62, -(2**63), 2**63 - 1]


@pytest.mark.parametrize("k_all", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_ids_out_of_range_raise(monkeypatch, k_all, dtype):
    """Any id outside [-1, K - 1], in any row (first, last, a later chunk), raises ValueError on
    every path: ids only, counts given, block_token_weights."""
    monkeypatch.setattr(objective, "_CHUNK_TOKENS", 8)  # 2 rows per chunk: rows 0 and 4 are in different chunks
    info = torch.iinfo(dtype)
    bad_values = [k_all, k_all + 1] + [v for v in BAD_IDS if info.min <= v <= info.max]
    for bad in bad_values:
        for row, col in [(0, 0), (4, 3), (5, 2)]:
            ids = torch.randint(-1, k_all, (6, 4), generator=torch.Generator().manual_seed(bad % 97)).to(dtype)
            ids[row, col] = bad
            adv = torch.zeros(6, k_all)
            for call in (lambda: token_advantages(adv, ids),
                         lambda: token_advantages(adv, ids, block_lengths=torch.ones(6, k_all)),
                         lambda: block_token_weights(ids, k_all, "seq-mean-token-sum")):
                with pytest.raises(ValueError, match=r"token_block_ids must be in \[-1, "):
                    call()


def test_float_ids_are_checked_before_truncation():
    """Float ids are range-checked as floats (so -1.5 is not truncated into padding), and integral
    ones give the same result as the ints."""
    adv = torch.tensor([[1.0, 2.0]])
    for bad in (-1.5, 2.0, float("inf")):
        with pytest.raises(ValueError, match="must be in"):
            token_advantages(adv, torch.tensor([[0.0, bad]]))
    ids = torch.tensor([[0, 1, 1, -1]])
    assert torch.equal(token_advantages(adv, ids.double()), token_advantages(adv, ids))


def test_no_blocks_at_all():
    """K = 0: every token must be padding (all zeros out); any other id is out of range."""
    ids = torch.full((3, 4), -1)
    assert torch.equal(token_advantages(torch.zeros(3, 0), ids), torch.zeros(3, 4))
    ids[1, 2] = 0
    with pytest.raises(ValueError, match=r"\[-1, -1\]"):
        token_advantages(torch.zeros(3, 0), ids)
