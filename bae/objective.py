"""The blockwise objective (paper Section 4.2) expressed as per-token advantages.

The paper's loss, for a group of N completions with blocks T_ik (the token positions of block k of
completion i), block advantages A[i, k] and block weights w_k = 1:

    L_BAE = -(1/N) sum_i sum_k w_k (1/|T_ik|) sum_{t in T_ik} min(rho_t A_ik, clip(rho_t, 1-e, 1+e) A_ik)

The clipped surrogate is positively homogeneous in the advantage: for c > 0,
min(rho c A, clip(rho) c A) = c min(rho A, clip(rho) A). So multiplying each token's advantage by a
positive weight is the same as weighting its loss, and a standard clipped loss with the engine's own
token aggregation reproduces L_BAE exactly when token t of block k of completion i carries

    adv[i, t] = A[i, k] * weight[i, t]

with weight chosen for the aggregation (see `block_token_weights`). The scalar methods (RLVR, RLCR)
go through the same code path: one advantage per completion, the same on every token, weight 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bae.advantages import blockwise_advantages

# verl's loss_agg_mode names; TRL's loss types map onto them (grpo -> seq-mean-token-mean,
# dr_grpo -> seq-mean-token-sum-norm, dapo/bnpo/cispo -> token-mean).
AGGREGATIONS = ("seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm", "token-mean")
METHODS = ("bae", "rlvr", "rlcr")
SCALAR_METHODS = ("rlvr", "rlcr")
"""Methods with one advantage per completion (the same on every token)."""


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _check_ids(token_block_ids: Any, num_blocks: int) -> torch.Tensor:
    ids = _as_tensor(token_block_ids)
    if ids.ndim != 2:
        raise ValueError(f"token_block_ids must be [N, T], got shape {tuple(ids.shape)}")
    if ids.numel():
        lo, hi = torch.aminmax(ids)
        if lo < -1 or hi >= num_blocks:
            raise ValueError(f"token_block_ids must be in [-1, {num_blocks - 1}]")
    return ids


def _block_counts(ids: torch.Tensor, num_blocks: int, block_lengths: Any = None) -> torch.Tensor:
    """n_ik, [N, K] float64: given by the caller (the engine knows them from the split, and passing
    them saves K passes over [N, T]) or counted here (summing each block's mask as uint8 into int32,
    ~3x faster than a bool sum into int64)."""
    if block_lengths is not None:
        counts = _as_tensor(block_lengths).to(device=ids.device, dtype=torch.float64)
        if counts.shape != (ids.shape[0], num_blocks):
            raise ValueError(f"block_lengths must be [N, K] = [{ids.shape[0]}, {num_blocks}], got {tuple(counts.shape)}")
        return counts
    return torch.stack([(ids == k).view(torch.uint8).sum(1, dtype=torch.int32) for k in range(num_blocks)], 1).to(torch.float64)


def _block_scale(counts: torch.Tensor, aggregation: str, max_length: int | None) -> torch.Tensor:
    """The weight of each block's tokens, [N, K] float64 (0 for a block with no tokens)."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {AGGREGATIONS}")
    if aggregation == "seq-mean-token-mean":
        numerator = counts.sum(1, keepdim=True)  # [N, 1]: n_i
    elif aggregation == "seq-mean-token-sum":
        numerator = torch.ones_like(counts[:, :1])
    elif aggregation == "seq-mean-token-sum-norm":
        if max_length is None:
            raise ValueError("seq-mean-token-sum-norm needs max_length (the loss's constant normaliser)")
        numerator = torch.full_like(counts[:, :1], float(max_length))
    else:  # token-mean: M / N
        numerator = (counts.sum() / max(counts.shape[0], 1)).expand(counts.shape[0], 1)
    return torch.where(counts > 0, numerator / counts.clamp(min=1), torch.zeros_like(counts))


def _spread(per_block: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """out[i, t] = per_block[i, ids[i, t]], 0 where ids is -1: one gather, [N, T] float32."""
    table = torch.cat([per_block.new_zeros(per_block.shape[0], 1), per_block], 1)  # [N, 1 + K]: column 0 = padding
    return table.gather(1, ids.long() + 1)


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
    ids = _check_ids(token_block_ids, num_blocks)
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
    ids = _check_ids(ids, adv.shape[1])
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


def method_advantages(
    method: str,
    rewards: Any,
    group_ids: Any,
    outcomes: Any = None,
    baseline: str = "ocb",
    scale: str = "none",
    **options: Any,
) -> np.ndarray:
    """The advantages of each training method, one per block, [N, K] float64 (the unweighted
    A[i, k] that the logs report and the per-token expansion spreads).

    bae:  blockwise advantages with `baseline` for blocks k >= 2 (group mean for block 1).
    rlvr: scalar reward R_i = r[i, 0] (correctness), group-mean baseline, the same in every block.
    rlcr: scalar reward R_i = sum_k r[i, k]; with the Brier confidence block this is the RLCR reward
          c - (q - c)^2 (paper 4.1); group-mean baseline, the same in every block.
    """
    r = np.asarray(rewards.detach().cpu() if isinstance(rewards, torch.Tensor) else rewards, dtype=np.float64)
    if method == "bae":
        return blockwise_advantages(r, group_ids, outcomes, baseline=baseline, scale=scale, **options)
    if r.ndim != 2:
        raise ValueError(f"rewards must be [N, K], got shape {r.shape}")
    if method in SCALAR_METHODS:
        scalar = r[:, :1] if method == "rlvr" else r.sum(1, keepdims=True)  # [N, 1]
        adv = blockwise_advantages(scalar, group_ids, baseline="group_mean", scale=scale)  # [N, 1]
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
