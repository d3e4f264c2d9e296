"""The exact simulator: a synthetic two-block task whose block values are known in closed form.

Per prompt x, the probability of a correct solution p_x and the mean confidence m_x; each sample has
c ~ Bernoulli(p_x) and a prefix feature z ~ Bernoulli(1/2) (say, a hedged reasoning) independent of
c; the confidence is drawn from a discretised normal policy over CONFIDENCE_GRID centred on m_x +
feature_effect (z - 1/2) (+ calibration (c - 1/2)); r_1 = c, r_2 = -(q - c)^2 (Brier). So V_1 = p_x
and V_2(x, c, z) = -sum_q pi(q | x, z, c) (q - c)^2 exactly. With feature_effect = 0 the value of
block 2 depends on the prefix only through the outcome c (the paper's Appendix B condition, under
which OCB is unbiased); otherwise it does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIDENCE_GRID = np.round(np.arange(0.05, 1.0, 0.1), 2)  # 0.05, 0.15, ..., 0.95


@dataclass(frozen=True)
class Simulation:
    """One simulated batch of P prompts x G samples (rows prompt-major).

    rewards [N, 2]: r_1 = c, r_2 = -(q - c)^2. outcomes [N, 2]: column 1 = c. groups [N]: prompt id.
    values [N, 2]: exact V_1 = E[r_1 | x] = p_x and V_2 = E[r_2 | x, X_<2]. feature [N]: z.
    p_correct [P], mean_confidence [P]. mc_values / mc_noise [N]: the Monte-Carlo estimate of V_2
    from M fresh confidences of the same prefix and its variance estimate s^2 / M (None if M = 0).
    """

    rewards: np.ndarray
    outcomes: np.ndarray
    groups: np.ndarray
    values: np.ndarray
    feature: np.ndarray
    p_correct: np.ndarray
    mean_confidence: np.ndarray
    mc_values: np.ndarray | None = None
    mc_noise: np.ndarray | None = None

    @property
    def reference_advantages(self) -> np.ndarray:
        """[N] exact block-2 advantage r_2 - V_2."""
        return self.rewards[:, 1] - self.values[:, 1]


def confidence_policy(mean: Any, width: float = 0.15) -> np.ndarray:
    """[..., Q] probabilities over CONFIDENCE_GRID: a normal density centred on `mean`, discretised."""
    mu = np.asarray(mean, dtype=np.float64)[..., None]
    logits = -((CONFIDENCE_GRID - mu) ** 2) / (2 * width * width)
    w = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return w / w.sum(axis=-1, keepdims=True)


def brier_values(probs: np.ndarray, correct: Any) -> np.ndarray:
    """E[-(q - c)^2] for q ~ probs over CONFIDENCE_GRID, c in {0, 1}: [...]."""
    c = np.asarray(correct, dtype=np.float64)[..., None]
    return -(probs * (CONFIDENCE_GRID - c) ** 2).sum(axis=-1)


def _draw(probs: np.ndarray, rng: np.random.Generator, size: int | None = None) -> np.ndarray:
    """Confidences drawn from probs [..., Q]: one per row ([...]) or `size` per row ([..., size])."""
    cdf = np.cumsum(probs, axis=-1)  # [..., Q]
    if size is None:
        u = rng.random(probs.shape[:-1])  # [...]
        idx = (u[..., None] > cdf).sum(axis=-1)
    else:
        u = rng.random(probs.shape[:-1] + (size,))  # [..., S]
        idx = (u[..., None] > cdf[..., None, :]).sum(axis=-1)
    return CONFIDENCE_GRID[np.minimum(idx, len(CONFIDENCE_GRID) - 1)]


def simulate(
    prompts: int = 64,
    group: int = 8,
    *,
    seed: int = 0,
    feature_effect: float = 0.0,
    calibration: float = 0.0,
    width: float = 0.15,
    p_range: tuple[float, float] = (0.1, 0.9),
    confidence_range: tuple[float, float] = (0.3, 0.95),
    continuations: int = 0,
) -> Simulation:
    """A synthetic two-block batch with closed-form values (see the module docstring).

    feature_effect: how far a prefix feature z (independent of c) moves the confidence policy's
    centre; 0 satisfies the paper's Appendix B condition (V_2 depends on the prefix only through c).
    calibration: how far a correct solution moves it (depends on c only: keeps the condition).
    continuations: M > 0 also draws M fresh confidences per prefix for a Monte-Carlo V_2.
    """
    rng = np.random.default_rng(seed)
    p = rng.uniform(*p_range, size=prompts)  # [P]
    m = rng.uniform(*confidence_range, size=prompts)  # [P]
    c = (rng.random((prompts, group)) < p[:, None]).astype(np.float64)  # [P, G]
    z = (rng.random((prompts, group)) < 0.5).astype(np.float64)  # [P, G]
    centre = np.clip(m[:, None] + feature_effect * (z - 0.5) + calibration * (c - 0.5), 0.0, 1.0)  # [P, G]
    probs = confidence_policy(centre, width)  # [P, G, Q]
    q = _draw(probs, rng)  # [P, G]
    r2 = -((q - c) ** 2)
    v2 = brier_values(probs, c)  # [P, G]
    n = prompts * group
    mc_values = mc_noise = None
    if continuations:
        qs = _draw(probs, rng, continuations)  # [P, G, M]
        rs = -((qs - c[..., None]) ** 2)
        mc_values = rs.mean(axis=-1).reshape(n)
        mc_noise = (rs.var(axis=-1, ddof=1) / continuations).reshape(n) if continuations > 1 else np.zeros(n)
    return Simulation(
        rewards=np.stack([c.reshape(n), r2.reshape(n)], axis=1),
        outcomes=np.stack([np.zeros(n, dtype=np.int64), c.reshape(n).astype(np.int64)], axis=1),
        groups=np.repeat(np.arange(prompts), group),
        values=np.stack([np.repeat(p, group), v2.reshape(n)], axis=1),
        feature=z.reshape(n).astype(np.int64),
        p_correct=p,
        mean_confidence=m,
        mc_values=mc_values,
        mc_noise=mc_noise,
    )

