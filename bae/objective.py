"""The blockwise objective (paper Section 4.2) expressed as per-token advantages.

The paper's loss, for a group of N completions with blocks T_ik (the token positions of block k of
completion i), block advantages A[i, k] and block weights w_k = 1:

    L_BAE = -(1/N) sum_i sum_k w_k (1/|T_ik|) sum_{t in T_ik} min(rho_t A_ik, clip(rho_t, 1-e, 1+e) A_ik)

The clipped surrogate is positively homogeneous in the advantage: for c > 0,
min(rho c A, clip(rho) c A) = c min(rho A, clip(rho) A). So multiplying each token's advantage by a
positive weight is the same as weighting its loss, and a standard clipped loss with the engine's own
token aggregation reproduces L_BAE exactly when token t of block k of completion i carries

    adv[i, t] = A[i, k] * weight[i, t]

with weight chosen for the aggregation (see `block_token_weights`). The scalar methods (RLVR, RLCR,
GDPO) go through the same code path: one advantage per completion, the same on every token, weight 1.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import numpy as np
import torch

from bae.advantages import DEFAULT_EPS, blockwise_advantages, check_options

# verl's loss_agg_mode names; TRL's loss types map onto them (grpo -> seq-mean-token-mean,
# dr_grpo -> seq-mean-token-sum-norm, dapo/bnpo/cispo -> token-mean).
AGGREGATIONS = ("seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm", "token-mean")
METHODS = ("bae", "rlvr", "rlcr", "gdpo")
SCALAR_METHODS = ("rlvr", "rlcr", "gdpo")
"""Methods with one advantage per completion (the same on every token)."""
GDPO_EPS = 1e-4
"""Added to both standard deviations of GDPO, as TRL's normalize_then_sum does."""


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _block_ids(token_block_ids: Any, num_blocks: int) -> torch.Tensor:
    """The block ids [N, T] as int64 (no copy when they already are); valid ids are in [-1, K - 1].

    On CPU the range is not checked here: the gather of `_spread` (and the scatter_add of
    `_block_counts`) check every index, and `_spread` turns that error into ours, which saves a pass
    over [N, T]. Elsewhere a bad index in a gather is a device-side assert, not an error we can
    report, and float ids must be checked before they are truncated to ints: those are checked here.
    """
    ids = _as_tensor(token_block_ids)
    if ids.ndim != 2:
        raise ValueError(f"token_block_ids must be [N, T], got shape {tuple(ids.shape)}")
    if (ids.device.type != "cpu" or ids.is_floating_point()) and ids.numel():
        lo, hi = torch.aminmax(ids)
        if lo < -1 or hi >= num_blocks:
            raise ValueError(_RANGE.format(num_blocks - 1))
    return ids if ids.dtype == torch.int64 else ids.to(torch.int64)


_RANGE = "token_block_ids must be in [-1, {}]"
# Tokens per chunk of rows in `_index_chunks`: a 512 KiB int64 index, which stays in the core's
# cache between the add that writes it and the pass that reads it (measured ~20% faster than one
# [N, T] index on the 2-core development machine; smaller chunks lose it to per-call overhead).
_CHUNK_TOKENS = 1 << 16


def _index_chunks(ids: torch.Tensor, *others: torch.Tensor):
    """Yield (index, *others_chunk) over consecutive row chunks: index = ids[rows] + 1, [R, T] int64.

    The index of the [N, 1 + K] table (column 0 = padding) is built one chunk at a time in one
    reused buffer, so the pass that consumes it reads it from cache, not memory. `others` ([N, ...]
    each) are split into the same row chunks. Off CPU, one chunk.
    """
    n, t = ids.shape
    rows = n if ids.device.type != "cpu" else max(1, _CHUNK_TOKENS // max(t, 1))
    buffer = torch.empty(min(rows, n), t, dtype=torch.int64, device=ids.device)
    for chunks in zip(ids.split(rows), *(other.split(rows) for other in others)):
        index = buffer if chunks[0].shape[0] == buffer.shape[0] else buffer[: chunks[0].shape[0]]
        yield (torch.add(chunks[0], 1, out=index), *chunks[1:])


def _block_counts(ids: torch.Tensor, num_blocks: int, block_lengths: Any = None) -> torch.Tensor:
    """n_ik, [N, K] float64: given by the caller (the engine may know them from the split) or counted.

    ids: [N, T] int64 block ids, -1 for padding. For K <= 2 (the engines' solution and confidence
    blocks), from P_i (padding tokens) and V_i (sum of the valid ids) of `_padding_and_id_sum`, one
    sum over the ids: with ids in {0, 1}, n_i1 = V_i and n_i0 = T - P_i - V_i. For K > 2, one
    scatter_add of ones over ids + 1. Either way one pass over [N, T] for all K blocks, where a
    compare-and-sum per block took K. Ids out of range give meaningless counts here; the gather of
    `_spread` over the same ids rejects them.
    """
    n, t = ids.shape
    if block_lengths is not None:
        counts = _as_tensor(block_lengths).to(device=ids.device, dtype=torch.float64)
        if counts.shape != (n, num_blocks):
            raise ValueError(f"block_lengths must be [N, K] = [{n}, {num_blocks}], got {tuple(counts.shape)}")
        return counts
    if num_blocks > 2:
        counts = torch.zeros(n, num_blocks + 1, dtype=torch.int64, device=ids.device)  # column 0: padding
        one = torch.ones((), dtype=torch.int64, device=ids.device)
        with _range_error(num_blocks):
            for index, counts_chunk in _index_chunks(ids, counts):
                counts_chunk.scatter_add_(1, index, one.expand_as(index))
        return counts[:, 1:].to(torch.float64)
    padding, valid = _padding_and_id_sum(ids)  # [N] each
    return torch.stack([t - padding - valid, valid], 1)[:, :num_blocks].to(torch.float64)  # [N, K]


def _padding_and_id_sum(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """P_i = |{t : id_it = -1}| and V_i = sum of the ids >= 0 of row i, [N] int64 each, in one sum.

    ids: [N, T] int64 with values in [-1, 2^31) (others give meaningless results). In memory each id
    is two int32 words, lo_t = id_t and hi_t = -[id_t < 0] (two's complement, little-endian). Read
    at a 4-byte offset, the ids are the int64 pairs (hi_t, lo_{t+1}), t < T - 1, which sum to
        X = sum_{t < T-1} (hi_t mod 2^32) + 2^32 sum_{t >= 1} lo_t = 2^32 (P' + L) - P'
    (P' = padding among t < T - 1, L = sum_{t >= 1} lo_t): so P' = -X mod 2^32, L = (X + P') / 2^32 - P',
    and with the first value word and the last sign word, P = P' - hi_{T-1} and V = L + lo_0 + P
    (sum_t lo_t = V - P). One vectorised read of the ids, where a compare-and-sum per block read
    them once per block. Off CPU (no misaligned loads there) or on a big-endian host, two sums:
    S = sum_t id_t = V - P and W = sum of all int32 words = V - 2P.
    """
    n, t = ids.shape
    if n == 0 or t == 0:
        zeros = ids.new_zeros(n)
        return zeros, zeros
    ids = ids.contiguous()
    words = ids.view(torch.int32)  # [N, 2T]: lo_t at 2t, hi_t at 2t + 1
    if ids.device.type != "cpu" or sys.byteorder != "little":
        total = ids.sum(1)  # [N]: S
        padding = total - words.sum(1, dtype=torch.int32)  # [N]: S - W = P
        return padding, total + padding
    storage = ids.untyped_storage()[ids.element_size() * ids.storage_offset() + 4 :]  # shares the ids' memory
    pairs = torch.empty(0, dtype=torch.int64).set_(storage, 0, (n, t - 1), (t, 1))  # [N, T - 1]: (hi_t, lo_{t+1})
    x = pairs.sum(1)  # [N]: X
    head_padding = (-x) & 0xFFFFFFFF  # [N]: P'
    tail_sum = ((x + head_padding) >> 32) - head_padding  # [N]: L
    padding = head_padding - words[:, -1]  # [N]: P = P' - hi_{T-1}
    return padding, tail_sum + words[:, 0] + padding  # V = L + lo_0 + P


@contextlib.contextmanager
def _range_error(num_blocks: int):
    """Report CPU's index-out-of-bounds error of gather / scatter_add as a bad block id."""
    try:
        yield
    except RuntimeError as error:
        if "out of bounds" not in str(error):
            raise
        raise ValueError(_RANGE.format(num_blocks - 1)) from None


def _block_scale(counts: torch.Tensor, aggregation: str, max_length: int | None) -> torch.Tensor:
    """The weight of each block's tokens, [N, K] float64 (0 for a block with no tokens)."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {AGGREGATIONS}")
    if aggregation == "seq-mean-token-mean":
        numerator = counts @ counts.new_ones(counts.shape[1], 1)  # [N, 1]: n_i (exact; ~5x faster than a sum over K)
    elif aggregation == "seq-mean-token-sum":
        numerator = torch.ones_like(counts[:, :1])
    elif aggregation == "seq-mean-token-sum-norm":
        if max_length is None:
            raise ValueError("seq-mean-token-sum-norm needs max_length (the loss's constant normaliser)")
        numerator = torch.full_like(counts[:, :1], float(max_length))
    else:  # token-mean: M / N
        numerator = (counts.sum() / max(counts.shape[0], 1)).expand(counts.shape[0], 1)
    return torch.where(counts > 0, numerator / counts, 0.0)  # the inf / nan of empty blocks are not kept


def _spread(per_block: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """out[i, t] = per_block[i, ids[i, t]], 0 where ids is -1: one gather, [N, T] float32.

    per_block: [N, K]; ids: [N, T] int64. Every index is checked by the gather (see `_block_ids`).
    """
    table = torch.nn.functional.pad(per_block, (1, 0))  # [N, 1 + K]: column 0 = padding (0)
    out = torch.empty(ids.shape, dtype=table.dtype, device=ids.device)
    with _range_error(per_block.shape[1]):
        for index, table_chunk, out_chunk in _index_chunks(ids, table, out):
            torch.gather(table_chunk, 1, index, out=out_chunk)
    return out


def block_token_weights(
    token_block_ids: Any,
    num_blocks: int,
    aggregation: str = "seq-mean-token-mean",
    max_length: int | None = None,
    block_lengths: Any = None,
) -> torch.Tensor:
    """Per-token weights that turn an engine's token aggregation into the per-block token mean.

    token_block_ids: [N, T] ints, block id of each token, -1 for padding.
    block_lengths: optional [N, K] token counts n_ik (computed from the ids when None).
    Returns weights [N, T] float32 (0 at padding). With n_i = sum_k n_ik, M = sum_i n_i:
      seq-mean-token-mean      loss = (1/N) sum_i (1/n_i) sum_t w l_t   ->  w = n_i / n_ik
      seq-mean-token-sum       loss = (1/N) sum_i sum_t w l_t           ->  w = 1 / n_ik
      seq-mean-token-sum-norm  loss = (1/N) sum_i (1/L) sum_t w l_t     ->  w = L / n_ik  (L = max_length)
      token-mean               loss = (1/M) sum_i sum_t w l_t           ->  w = M / (N n_ik)
    token-mean is exact only when the engine divides by the M of this same batch (see the engine).
    """
    ids = _block_ids(token_block_ids, num_blocks)
    scale = _block_scale(_block_counts(ids, num_blocks, block_lengths), aggregation, max_length)
    return _spread(scale.float(), ids)


def token_advantages(
    block_advantages: Any,
    token_block_ids: Any,
    aggregation: str = "seq-mean-token-mean",
    max_length: int | None = None,
    block_lengths: Any = None,
) -> torch.Tensor:
    """Per-token advantages [N, T] from block advantages [N, K] and token block ids [N, T].

    adv[i, t] = A[i, block(i, t)] * weight[i, t] (0 at padding, id -1), with the weights of
    `block_token_weights`, so that the engine's clipped loss with `aggregation` equals L_BAE.
    A block with no tokens contributes nothing (its advantage has no token to ride on).
    block_lengths ([N, K] token counts) may be passed when known, to skip counting them.
    Returns float32 on the device of token_block_ids.
    """
    adv = _as_tensor(block_advantages)
    ids = _as_tensor(token_block_ids)
    if adv.ndim != 2 or ids.ndim != 2 or adv.shape[0] != ids.shape[0]:
        raise ValueError(f"block_advantages [N, K] and token_block_ids [N, T] disagree: {tuple(adv.shape)} vs {tuple(ids.shape)}")
    ids = _block_ids(ids, adv.shape[1])
    scale = _block_scale(_block_counts(ids, adv.shape[1], block_lengths), aggregation, max_length)  # [N, K]
    per_block = (adv.to(device=ids.device, dtype=torch.float64) * scale).float()  # [N, K]: A_ik * w_ik
    return _spread(per_block, ids)


def scalar_token_advantages(advantages: Any, token_block_ids: Any) -> torch.Tensor:
    """One advantage per completion [N] spread over its tokens [N, T] (0 at padding): GRPO's form."""
    adv = _as_tensor(advantages).to(torch.float32)
    ids = _as_tensor(token_block_ids).to(adv.device)
    if adv.ndim != 1 or ids.ndim != 2 or adv.shape[0] != ids.shape[0]:
        raise ValueError(f"advantages [N] and token_block_ids [N, T] disagree: {tuple(adv.shape)} vs {tuple(ids.shape)}")
    return adv[:, None] * (ids >= 0).to(torch.float32)


def check_method_options(method: str, baseline: str, options: dict | None) -> None:
    """Raise ValueError for baseline options that `method` cannot use: under bae those the baseline
    does not take or a bad value (bae.advantages.check_options); under a scalar method any at all.
    The config and the TRL trainer call it before any model is built."""
    if method == "bae":
        check_options(baseline, dict(options or {}))
    elif options:
        raise ValueError(f"baseline options {sorted(options)} apply to method 'bae' only: method {method!r} has no "
                         "baseline to configure (one advantage for every token of a completion); remove them or use "
                         "method 'bae'")


def method_advantages(
    method: str,
    rewards: Any,
    group_ids: Any,
    outcomes: Any = None,
    baseline: str = "ocb",
    scale: str = "none",
    state: dict | None = None,
    eps: float = DEFAULT_EPS,
    **options: Any,
) -> np.ndarray:
    """The advantages of each training method, one per block, [N, K] float64 (the unweighted
    A[i, k] that the logs report and the per-token expansion spreads).

    bae:  blockwise advantages with `baseline` for blocks k >= 2 (group mean for block 1).
    rlvr: scalar reward R_i = r[i, 0] (correctness), group-mean baseline, the same in every block.
    rlcr: scalar reward R_i = sum_k r[i, k]; with the Brier confidence block this is the RLCR reward
          c - (q - c)^2 (paper 4.1); group-mean baseline, the same in every block.
    gdpo: GDPO (TRL's multi_objective_aggregation="normalize_then_sum"): each block's reward
          normalised within its group, z[i, k] = (r[i, k] - mean_g r_k) / (std_g r_k + 1e-4), summed,
          S_i = sum_k z[i, k], then normalised over the batch, (S_i - mean S) / (std S + 1e-4) (stds
          with ddof = 1, 0 for a group or batch of one); the same in every block. It fixes its own
          scaling: `scale` must be "none".
    `options` are the baseline's and `state` its memory over batches (blockwise_advantages'; bae
    only): a scalar method given options is refused, not silently run without them, and keeps no
    memory (its `state` is left as it was). `eps` is added to the std under scale "group" or
    "batch" (bae, rlvr, rlcr; gdpo uses its own, 1e-4).
    """
    r = np.asarray(rewards.detach().cpu() if isinstance(rewards, torch.Tensor) else rewards, dtype=np.float64)
    if method == "bae":
        return blockwise_advantages(r, group_ids, outcomes, baseline=baseline, scale=scale, eps=eps, state=state,
                                    **options)
    if method in SCALAR_METHODS:
        check_method_options(method, baseline, options)
    if r.ndim != 2:
        raise ValueError(f"rewards must be [N, K], got shape {r.shape}")
    if method == "gdpo":
        if scale != "none":
            raise ValueError(f"scale={scale!r}: gdpo normalises each reward in its group and the sum over the batch "
                             "itself; use scale='none'")
        z = blockwise_advantages(r, group_ids, baseline="group_mean", scale="group", eps=GDPO_EPS)  # [N, K]
        total = z.sum(1, keepdims=True)  # [N, 1]
        if len(total) > 1:
            total = (total - total.mean()) / (total.std(ddof=1) + GDPO_EPS)
        else:  # a batch of one: centred to 0, as (S - mean S) / (0 + eps)
            total = np.zeros_like(total)
        return np.repeat(total, r.shape[1], axis=1)  # [N, K]
    if method in SCALAR_METHODS:
        scalar = r[:, :1] if method == "rlvr" else r.sum(1, keepdims=True)  # [N, 1]
        adv = blockwise_advantages(scalar, group_ids, baseline="group_mean", scale=scale, eps=eps)  # [N, 1]
        return np.repeat(adv, r.shape[1], axis=1)  # [N, K]
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def method_token_advantages(
    method: str,
    rewards: Any,
    group_ids: Any,
    token_block_ids: Any,
    outcomes: Any = None,
    baseline: str = "ocb",
    scale: str = "none",
    aggregation: str = "seq-mean-token-mean",
    max_length: int | None = None,
    **options: Any,
) -> torch.Tensor:
    """The per-token advantages [N, T] of each training method, through one code path:
    `method_advantages`, then `spread_advantages`."""
    adv = method_advantages(method, rewards, group_ids, outcomes, baseline=baseline, scale=scale, **options)
    return spread_advantages(method, adv, token_block_ids, aggregation, max_length)


def spread_advantages(
    method: str,
    block_advantages: Any,
    token_block_ids: Any,
    aggregation: str = "seq-mean-token-mean",
    max_length: int | None = None,
    block_lengths: Any = None,
) -> torch.Tensor:
    """Per-token advantages [N, T] from a method's `method_advantages` [N, K].

    bae: `token_advantages` (per-block token weights for `aggregation`). Scalar methods: the
    completion's one advantage on every token, weight 1, whatever the aggregation, as in GRPO.
    """
    if method in SCALAR_METHODS:
        return scalar_token_advantages(_as_tensor(block_advantages)[:, 0], token_block_ids)
    if method != "bae":
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    return token_advantages(block_advantages, token_block_ids, aggregation, max_length, block_lengths)


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
) -> torch.Tensor:
    """Standard PPO-clip loss with per-sequence token mean (GRPO's aggregation), all [N, T]:

        l_t = -min(rho_t A_t, clip(rho_t, 1 - e, 1 + e) A_t),  rho_t = exp(logp_t - old_logp_t)
        loss = (1/N) sum_i (1/|m_i|) sum_t m_it l_t
    """
    ratio = torch.exp(logp - old_logp)
    per_token = -torch.minimum(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)
    mask = mask.to(per_token.dtype)
    return ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
