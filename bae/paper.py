"""The paper's training settings (Table 4), defined once.

The schema of `bae train` takes its defaults from here, the TRL engine's `paper_grpo_config`
translates them into GRPOConfig fields, and the recipe tests check both engines' recipes against
them. Engine-specific spellings (TRL's loss_type, verl's loss_agg_mode) stay in the engines.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperSettings:
    """Table 4 of the paper (Pavlenko et al. 2026); bf16 and no KL as stated in its setup."""

    group_size: int = 32
    """Completions per prompt (G); the OCB strata are formed within a group."""
    batch_size: int = 2048
    """Completions per optimizer step (64 prompts x 32)."""
    learning_rate: float = 1e-6
    warmup_steps: int = 64
    """Linear warm-up; the paper gives nothing after it: constant (our choice)."""
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.1
    temperature: float = 1.0
    """Sampling temperature in training (and evaluation)."""
    max_completion_length: int = 4096
    entropy_target: float = 0.2
    """Target entropy (nats) of the dynamic entropy controller."""
    entropy_coef_delta: float = 5e-4
    """The controller's step: the coefficient rises by this much per step while the entropy is
    below the target and falls by it (never below 0) otherwise; it starts at 0."""
    kl_coef: float = 0.0
    """No KL penalty (no reference model)."""
    scale: str = "none"
    """Advantages are centred, never divided by a standard deviation (Dr.GRPO style)."""
    bf16: bool = True


PAPER = PaperSettings()
