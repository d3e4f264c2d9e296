"""What `bae fidelity` samples and how, the strata it reports and the rules it follows."""

from __future__ import annotations

from dataclasses import dataclass, field

from bae.tasks import MALFORMED_OUTCOME

STRATA = {"correct": 1, "incorrect": 0, "malformed": MALFORMED_OUTCOME}  # stratum name -> outcome of the prefix
RULES = {
    "prefix": "text up to the end of the solution block (task.split(text).spans[0][1]), appended to the "
              "chat-templated prompt and re-tokenized; continuation budget = max_new_tokens - prefix tokens",
    "malformed": "incomplete solution block (or no token budget left): V = own block-2 reward (worst), A_MC = 0, "
                 "no continuations; outcome -1 (malformed stratum, as in training)",
    "shared_prefixes": "identical prefixes of one prompt share their M continuations",
    "error": "e = A_hat - A_MC = V_MC - b (block 2); block 1: r_1 - group mean against r_1 - mean of M fresh samples",
    "sweep": "Gmax samples per prompt cut into floor(Gmax/G) disjoint groups of G; replicate j = one batch of P groups",
    "rmse_se": "bootstrap over prompts, paired across estimators",
    "bias_se": "cluster-robust standard error over prompts (ratio mean)",
    "rmse_exact": "sqrt(max(MSE - mean(s^2/M), 0)): the RMSE against the exact advantage, MC noise removed",
    "strata": "rows are reported by the correctness of the prefix's answer (correct / incorrect / malformed), "
              "whatever outcome the estimators stratify by",
    "small_strata": "summary 'small_strata': the well-formed rows whose stratum under the task's outcome has 1 or 2 "
                    "members in its group (metrics.json only)",
    "outcome_strata": "name@s: the baseline `name` with its strata taken from outcome s instead of the task's "
                      "(answer_class: verifier-equivalence classes of the answers within each group, no gold)",
}


@dataclass(frozen=True)
class FidelityConfig:
    """What `bae fidelity` samples and how (defaults: the tiny policy on CPU in a few minutes)."""

    model: str = "tiny"
    """A local folder (e.g. a `bae train` run's final/) or a hub id; "tiny" (the embedded policy
    after its supervised warm start, done once into out_dir/warm_start) is resolved by
    bae.embedded before the run (as `bae fidelity` does)."""
    task: str | None = None
    """A two-block task: a built-in name or a YAML / JSON task file (bae.tasks.load); its second
    block is the one compared. None: the task recorded in the model folder, else arithmetic."""
    task_options: dict = field(default_factory=dict)
    """Options of the task (e.g. {"system_prompt": ""}); on top of the recorded task's when task is None."""
    data: str | None = None
    """Eval set (JSON Lines with problem and answer); None: synthetic arithmetic problems."""
    levels: tuple[int, ...] = (1, 2)
    """Difficulty levels of the synthetic arithmetic problems (the warm start's)."""
    prompts: int = 32
    """P prompts (paper: 100 MATH500 prompts)."""
    group: int = 8
    """G of the main table (paper: 32 in training)."""
    continuations: int = 16
    """M continuations of block 2 per prefix (paper: 32)."""
    sweep: tuple[int, ...] = (4, 8, 16, 32)
    """Group sizes compared; max(sweep + (group,)) completions are sampled per prompt once."""
    temperature: float = 1.0
    """Sampling temperature of completions and continuations (paper: 1.0)."""
    max_new_tokens: int = 64
    """Token budget of a completion; a continuation gets what its prefix left."""
    seed: int = 0
    """Seed of the problems, the sampling, the bootstrap (and the tiny warm start)."""
    bootstrap: int = 1000
    """Bootstrap resamples over prompts for the RMSE standard errors."""
    outcome_strata: tuple[str, ...] = ("answer_class",)
    """Other outcomes (bae.tasks.OUTCOMES) to stratify by: each outcome-conditioned baseline is also
    evaluated with strata from each, reported as "<baseline>@<outcome>" (default: answer classes
    beside the task's correct / incorrect outcome). Group-level outcomes are assigned within each
    prompt's pool of completions: for a transitive equivalence (exact match) the same partition
    as within each group cut from it."""
    batch_size: int = 512
    """Sequences per generate call."""
    out_dir: str = "runs/fidelity"
    """Report folder: metrics.json, report.md, fidelity.png, fidelity_sweep.png, samples.jsonl."""

    def __post_init__(self):
        for name in ("prompts", "group", "continuations", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.continuations < 2:
            raise ValueError("continuations must be >= 2 (the MC noise estimate needs a sample variance)")
        if any(g < 1 for g in self.sweep):
            raise ValueError(f"sweep: group sizes must be >= 1, got {self.sweep}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap}")
        from bae.tasks import OUTCOMES

        unknown = [o for o in self.outcome_strata if o not in OUTCOMES]
        if unknown:
            raise ValueError(f"outcome_strata: unknown outcomes {unknown}; registered: {sorted(OUTCOMES)}")

    @property
    def group_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.sweep) | {self.group}))

    @property
    def pool(self) -> int:
        return max(self.group_sizes)
