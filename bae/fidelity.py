"""Fidelity of the advantage estimators against Monte-Carlo reference advantages (paper Sec. 5.1, Fig. 1).

    from bae.fidelity import FidelityConfig, run_fidelity
    result = run_fidelity(FidelityConfig(out_dir="runs/fidelity"))   # or: bae fidelity
    result["groups"]["8"]["estimators"]["ocb"]["correct"]["rmse"]

What is measured. In a two-block task y = [X1; X2] (solution, then confidence) the ideal baseline of
block 2 is its conditional value V(x, X1) = E[r_2 | x, X1]. For every sampled completion we fix its
prefix X1 and sample M continuations of block 2 from the policy; their mean block-2 reward V_MC is
an unbiased Monte-Carlo estimate of V, and the reference advantage is

    A_MC = r_2 - V_MC.

Each registered estimator (bae.advantages.BASELINES: none, batch_mean, group_mean, ocb, ocb_loo,
ocb_shrink, and any registered later) computes A_hat = r_2 - b from the group alone, and we report,
per stratum of the prefix's outcome (correct / incorrect answer / malformed prefix), the error e = A_hat - A_MC
(= V_MC - b): its RMSE and its mean (bias), with standard errors. Block 1 (always the group mean) is
reported against E[r_1 | x] estimated from M fresh completions of the prompt.

Definitions and choices (also written into metrics.json under "rules"):
- Prefix: the completion's text up to the end of the solution block (task.split(text).spans[0][1]).
  The generation input is the prompt rendered with the chat template (add_generation_prompt) plus
  the prefix text, re-tokenized; the continuation gets the token budget the rollout had left,
  max_new_tokens - len(tokens of the prefix). Re-tokenizing the prefix text can differ from the
  sampled token ids when a model spells a token in pieces (for the tiny byte-level tokenizer only
  when it spells a tag letter by letter); the value conditioned on is that of the canonical tokens.
- Malformed completions: a completion whose solution block is incomplete (no well-formed
  <reasoning>..</reasoning><answer>..</answer>) has no block-2 prefix: under the task's malformed
  policy its whole text is block 1 and block 2 gets its worst reward whatever follows, so its value
  is known exactly, V = r_2 (worst), A_MC = 0, no continuation is sampled. The same holds when the
  prefix used up the token budget. Such samples form a stratum of their own, as in training (the
  task gives them outcome -1, bae.tasks.MALFORMED_OUTCOME): there OCB's baseline is the worst
  reward and its error is exactly 0, while pooling them with wrong answers would bias both.
  A completion with a complete solution block but a malformed block 2 is continued as any other.
- Identical prefixes of one prompt share their M continuations (same input, same distribution).
- Group-size sweep: max(sweep + (group,)) completions are sampled once per prompt; for a group size
  G they are cut into floor(Gmax / G) disjoint groups of G (in sampling order, so random subsets),
  and replicate j of every prompt forms one batch of P groups (what batch_mean averages over). So
  the MC references are computed once, and every G is evaluated on the same samples when G divides
  Gmax.
- Standard errors: RMSE by bootstrap over prompts (``bootstrap`` resamples, seeded; the same
  resamples for every estimator, so differences are paired); bias by the cluster-robust standard
  error of a ratio mean (clusters = prompts, since samples of a prompt share the baselines).
- MC noise: V_MC has variance Var(r_2 | x, X1) / M, independent of the baselines (fresh samples),
  so E[e^2] = E[(V - b)^2] + E[Var / M]. ``rmse_exact`` subtracts the unbiased estimate
  mean(s^2 / M) (s^2 the sample variance of the continuations' rewards) and estimates the RMSE
  against the exact advantage; ``mc_noise`` is that mean. The ordering of the estimators is the
  same under both, since the noise term is common to all of them.

The exact simulator (``simulate``): a synthetic two-block task whose values are known in closed
form, for the unit tests. Per prompt x, the probability of a correct solution p_x and the mean
confidence m_x; each sample has c ~ Bernoulli(p_x) and a prefix feature z ~ Bernoulli(1/2) (say, a
hedged reasoning) independent of c; the confidence is drawn from a discretised normal policy over
CONFIDENCE_GRID centred on m_x + feature_effect (z - 1/2) (+ calibration (c - 1/2)); r_1 = c,
r_2 = -(q - c)^2 (Brier). So V_1 = p_x and V_2(x, c, z) = -sum_q pi(q | x, z, c) (q - c)^2 exactly.
With feature_effect = 0 the value of block 2 depends on the prefix only through the outcome c (the
paper's Appendix B condition, under which OCB is unbiased); otherwise it does not.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bae.advantages import BASELINES, blockwise_advantages
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
}


# ---------------------------------------------------------------------------------------------
# Estimator errors and their summaries (pure numpy)


def estimator_errors(
    rewards: Any,
    groups: Any,
    outcomes: Any,
    reference_advantages: Any,
    *,
    block: int = 1,
    batches: Any = None,
    baselines: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Error of every estimator's advantage against a reference: e[name] = A_hat[:, block] - A_ref.

    Args:
        rewards: [N, K] block rewards. groups: [N] group ids (completions of one prompt).
        outcomes: [N, K] outcome ids (column k: the outcome of the prefix before block k).
        reference_advantages: [N] the reference advantage of `block` (A_MC, or r - V exactly).
        block: the block whose advantage is compared (0-based; 1 = the second block).
        batches: [N] optional batch ids; each batch is estimated on its own (batch_mean averages
            within it), as a training step sees one batch. None: one batch.
        baselines: names in BASELINES (default: all registered, in registration order).

    Returns: {name: [N] float64 errors}, rows in input order.
    """
    r = np.asarray(rewards, dtype=np.float64)
    g = np.asarray(groups)
    o = np.asarray(outcomes)
    ref = np.asarray(reference_advantages, dtype=np.float64)
    n = r.shape[0]
    if ref.shape != (n,):
        raise ValueError(f"reference_advantages must be [N] = [{n}], got shape {ref.shape}")
    names = list(BASELINES) if baselines is None else list(baselines)
    b = np.zeros(n, dtype=np.int64) if batches is None else np.unique(np.asarray(batches), return_inverse=True)[1]
    out = {name: np.empty(n, dtype=np.float64) for name in names}
    for batch in np.unique(b):
        rows = np.nonzero(b == batch)[0]
        for name in names:
            a = blockwise_advantages(r[rows], g[rows], o[rows], baseline=name)  # [n_b, K]
            out[name][rows] = a[:, block] - ref[rows]
    return out


def _bootstrap_weights(clusters: int, bootstrap: int, seed: int) -> np.ndarray:
    """[B, C] multiplicities of the clusters in each bootstrap resample (with replacement)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, clusters, size=(bootstrap, clusters))
    return np.stack([np.bincount(d, minlength=clusters) for d in draws]).astype(np.float64)


def summarize_errors(
    errors: dict[str, np.ndarray],
    clusters: Any,
    mask: Any = None,
    *,
    mc_noise: Any = None,
    bootstrap: int = 1000,
    seed: int = 0,
    reference: str | None = "ocb",
) -> dict[str, dict]:
    """Per estimator: n, rmse, rmse_se (bootstrap over clusters), rmse_exact (MC noise removed),
    bias (mean error), bias_se (cluster-robust), and rmse_minus_<reference> with its paired
    bootstrap se. `clusters` [N]: prompt ids; `mask` [N]: the rows of the stratum; `mc_noise` [N]:
    per-row Var(V_MC) estimates s^2/M (0 for exact references)."""
    cl = np.unique(np.asarray(clusters), return_inverse=True)[1].reshape(-1)
    keep = np.ones(len(cl), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    noise = np.zeros(len(cl)) if mc_noise is None else np.asarray(mc_noise, dtype=np.float64)
    c = len(np.unique(cl)) if len(cl) else 0
    counts = np.bincount(cl[keep], minlength=c).astype(np.float64)  # [C]
    n = int(counts.sum())
    weights = _bootstrap_weights(c, bootstrap, seed) if c and bootstrap > 0 else np.zeros((0, c))  # [B, C]
    boot_n = weights @ counts  # [B]
    ok = boot_n > 0
    mean_noise = float(noise[keep].mean()) if n else math.nan
    out, boot_rmse = {}, {}
    for name, e in errors.items():
        e = np.asarray(e, dtype=np.float64)
        if not n:
            out[name] = {"n": 0, "rmse": math.nan, "rmse_se": math.nan, "rmse_exact": math.nan, "bias": math.nan,
                         "bias_se": math.nan, "mc_noise": math.nan}
            continue
        sq = np.bincount(cl[keep], weights=e[keep] ** 2, minlength=c)  # [C] per-cluster sums
        lin = np.bincount(cl[keep], weights=e[keep], minlength=c)
        mse = sq.sum() / n
        bias = lin.sum() / n
        used = counts > 0
        k = int(used.sum())
        resid = lin[used] - bias * counts[used]
        bias_se = math.sqrt(k / (k - 1) * float((resid ** 2).sum())) / n if k > 1 else math.nan
        boot = np.sqrt((weights[ok] @ sq) / boot_n[ok])  # [B]
        boot_rmse[name] = boot
        out[name] = {
            "n": n,
            "rmse": math.sqrt(mse),
            "rmse_se": float(boot.std(ddof=1)) if len(boot) > 1 else math.nan,
            "rmse_exact": math.sqrt(max(mse - mean_noise, 0.0)),
            "bias": float(bias),
            "bias_se": bias_se,
            "mc_noise": mean_noise,
        }
    if reference in boot_rmse:
        for name in boot_rmse:
            d = boot_rmse[name] - boot_rmse[reference]
            out[name][f"rmse_minus_{reference}"] = out[name]["rmse"] - out[reference]["rmse"]
            out[name][f"rmse_minus_{reference}_se"] = float(d.std(ddof=1)) if len(d) > 1 else math.nan
    return out


def stratum_sizes(groups: Any, outcomes: Any, batches: Any = None) -> np.ndarray:
    """[N] size of each row's stratum (same batch, group and outcome)."""
    g = np.asarray(groups)
    o = np.asarray(outcomes)
    b = np.zeros(len(g), dtype=np.int64) if batches is None else np.asarray(batches)
    keys = np.stack([np.unique(x, return_inverse=True)[1].reshape(-1) for x in (b, g, o)], axis=1)
    _, ids, sizes = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    return sizes[ids.reshape(-1)]


# ---------------------------------------------------------------------------------------------
# The exact simulator

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


# ---------------------------------------------------------------------------------------------
# The Monte-Carlo pipeline on a real policy


@dataclass(frozen=True)
class FidelityConfig:
    """What `bae fidelity` samples and how (defaults: the tiny policy on CPU in a few minutes)."""

    model: str = "tiny"
    """"tiny" (the embedded policy after its supervised warm start, done once into
    out_dir/warm_start), a local folder (e.g. a `bae train` run's final/), or a hub id."""
    task: str = "arithmetic"
    """Built-in task name (bae.tasks.get); its second block is the one compared."""
    system_prompt: str | None = None
    """The task's system prompt; None: "" for "tiny" and for folders whose warmstart.json or
    ../config.json (a `bae train` run) says so, else the task's own."""
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

    @property
    def group_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.sweep) | {self.group}))

    @property
    def pool(self) -> int:
        return max(self.group_sizes)


def _system_prompt(config: FidelityConfig, model_path: str) -> str | None:
    if config.system_prompt is not None:
        return config.system_prompt
    if config.model == "tiny":
        return ""
    folder = Path(model_path)
    record = folder / "warmstart.json"
    if record.is_file():
        return json.loads(record.read_text()).get("config", {}).get("system_prompt")
    run_config = folder.parent / "config.json"
    if run_config.is_file():
        options = json.loads(run_config.read_text()).get("task", {})
        if isinstance(options, dict) and "system_prompt" in options.get("options", {}):
            return options["options"]["system_prompt"]
    return None


def _resolve_model(config: FidelityConfig) -> str:
    if config.model != "tiny":
        return config.model
    from bae.warmstart import WarmStartConfig, warm_start

    folder = Path(config.out_dir) / "warm_start"
    if (folder / "config.json").is_file():
        return str(folder)
    return str(warm_start(WarmStartConfig(system_prompt="", levels=config.levels, seed=config.seed), folder))


def _rows(config: FidelityConfig) -> list[dict]:
    if config.data is None:
        from bae.tasks import arithmetic

        if not config.task.startswith("arithmetic"):
            raise ValueError(f"task {config.task!r} needs an eval set: give data (JSON Lines with problem and answer)")
        return arithmetic.generate(config.prompts, seed=12345 + config.seed, levels=config.levels)
    from bae.evaluation.generations import read_eval_set

    return read_eval_set(config.data, config.prompts)


def continue_texts(policy, tokenizer, inputs: Sequence[str], budgets: Sequence[int], m: int, temperature: float,
                   *, seed: int = 0, batch_size: int = 512) -> list[list[str]]:
    """m sampled continuations of each input text, each cut to its own token budget: [U][m] texts
    (decoded with skip_special_tokens=True, as completions are). Reproducible from `seed`; the
    caller's random state, the policy's mode and the tokenizer's padding side are left as they were."""
    from bae.evaluation.sampling import sampling_state

    jobs = sorted(((u, j) for u in range(len(inputs)) for j in range(m)), key=lambda t: (len(inputs[t[0]]), t))
    out: list[list[str]] = [[""] * m for _ in inputs]
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else dict(do_sample=False)
    with sampling_state(policy, tokenizer, seed) as device:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            enc = tokenizer([inputs[u] for u, _ in batch], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            width = enc["input_ids"].shape[1]
            ids = policy.generate(**enc, max_new_tokens=max(budgets[u] for u, _ in batch),
                                  pad_token_id=tokenizer.pad_token_id, **sampling)  # [b, width + new]
            for row, (u, j) in enumerate(batch):
                out[u][j] = tokenizer.decode(ids[row, width:width + budgets[u]], skip_special_tokens=True)
    return out


def solution_prefix(task, completion: str) -> str | None:
    """The completion's text up to the end of its solution block, or None when that block is
    incomplete (then block 2's reward is its worst whatever follows: no continuation)."""
    split = task.split(completion)
    if split.complete < 1:
        return None
    return completion[: split.spans[0][1]]


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        from rich.console import Console

        Console(stderr=True).print(message)


def run_fidelity(config: FidelityConfig, *, quiet: bool = False) -> dict:
    """Sample, build the MC references, compare every estimator, write the report folder.

    Returns the metrics (as metrics.json): {"config", "rules", "setup", "block1", "groups": {G:
    {"estimators": {name: {stratum: summary}}, "singletons": {stratum: fraction}}}, "timings"}.
    """
    from bae import tasks
    from bae.evaluation.sampling import load_transformers, render_prompt, sample_rows

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    model_path = _resolve_model(config)
    timings["model"] = time.perf_counter() - t0
    system_prompt = _system_prompt(config, model_path)
    task = tasks.get(config.task) if system_prompt is None else tasks.get(config.task, system_prompt=system_prompt)
    if task.num_blocks != 2:
        raise ValueError(f"task {config.task!r} has {task.num_blocks} blocks; fidelity compares the second of two")
    rows = _rows(config)
    policy, tokenizer = load_transformers(model_path)
    gmax = config.pool

    # 1. the pool: Gmax completions per prompt, scored
    t = time.perf_counter()
    _log(f"sampling {len(rows)} prompts x {gmax} completions", quiet)
    samples = sample_rows((policy, tokenizer), task, rows, n=gmax, temperature=config.temperature,
                          max_new_tokens=config.max_new_tokens, seed=config.seed, batch_size=config.batch_size,
                          progress=not quiet)
    scores = [task.score(s["completion"], s["gold"]) for s in samples]
    rewards = np.array([s.rewards for s in scores], dtype=np.float64)  # [N, 2]
    outcomes = np.array([s.outcomes for s in scores], dtype=np.int64)  # [N, 2]
    prompt_ids = np.repeat(np.arange(len(rows)), gmax)  # [N]
    sample_ids = np.tile(np.arange(gmax), len(rows))  # [N]

    # block 1 reference: M fresh completions per prompt
    fresh = sample_rows((policy, tokenizer), task, rows, n=config.continuations, temperature=config.temperature,
                        max_new_tokens=config.max_new_tokens, seed=config.seed + 1, batch_size=config.batch_size,
                        progress=False)
    fresh_r1 = np.array([task.score(s["completion"], s["gold"]).rewards[0] for s in fresh]).reshape(len(rows), -1)
    timings["sample_pool"] = time.perf_counter() - t

    # 2. the MC references of block 2
    t = time.perf_counter()
    rendered = [render_prompt(tokenizer, task.format_prompt(r["problem"])) for r in rows]
    unique: dict[tuple[int, str], int] = {}
    inputs, budgets, prefix_of = [], [], []
    for i, s in enumerate(samples):
        prefix = solution_prefix(task, s["completion"])
        u = -1
        if prefix is not None:
            budget = config.max_new_tokens - len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
            if budget > 0:
                key = (int(prompt_ids[i]), prefix)
                if key not in unique:
                    unique[key] = len(inputs)
                    inputs.append(rendered[prompt_ids[i]] + prefix)
                    budgets.append(budget)
                u = unique[key]
        prefix_of.append((prefix, u))
    _log(f"sampling {len(inputs)} distinct prefixes x {config.continuations} continuations", quiet)
    conts = continue_texts(policy, tokenizer, inputs, budgets, config.continuations, config.temperature,
                           seed=config.seed + 2, batch_size=config.batch_size)
    cont_rewards = np.zeros((len(inputs), config.continuations))  # [U, M]
    golds = {}
    for i, s in enumerate(samples):
        golds[prefix_of[i][1]] = s["gold"]
    for (p, prefix), u in unique.items():
        cont_rewards[u] = [task.score(prefix + c, golds[u]).rewards[1] for c in conts[u]]
    mc_values = np.empty(len(samples))  # [N]
    mc_noise = np.zeros(len(samples))  # [N]
    for i, (prefix, u) in enumerate(prefix_of):
        if u < 0:
            mc_values[i] = rewards[i, 1]  # known exactly: worst
        else:
            mc_values[i] = cont_rewards[u].mean()
            mc_noise[i] = cont_rewards[u].var(ddof=1) / config.continuations
    a_mc = rewards[:, 1] - mc_values  # [N]
    timings["continuations"] = time.perf_counter() - t

    # 3. every estimator, every group size
    t = time.perf_counter()
    strata = {name: outcomes[:, 1] == value for name, value in STRATA.items()}
    result_groups = {}
    errors_at: dict[int, tuple[dict, np.ndarray]] = {}
    for g in config.group_sizes:
        reps = gmax // g
        keep = sample_ids < reps * g
        replicate = sample_ids // g  # batch id
        idx = np.nonzero(keep)[0]
        errs = estimator_errors(rewards[idx], prompt_ids[idx], outcomes[idx], a_mc[idx], block=1,
                                batches=replicate[idx])
        sizes = stratum_sizes(prompt_ids[idx], outcomes[idx, 1], replicate[idx])
        per = {name: {} for name in errs}
        singletons = {}
        for sname, mask in strata.items():
            summary = summarize_errors(errs, prompt_ids[idx], mask[idx], mc_noise=mc_noise[idx],
                                       bootstrap=config.bootstrap, seed=config.seed)
            for name in errs:
                per[name][sname] = summary[name]
            singletons[sname] = float((sizes[mask[idx]] == 1).mean()) if mask[idx].any() else math.nan
        summary_all = summarize_errors(errs, prompt_ids[idx], None, mc_noise=mc_noise[idx],
                                       bootstrap=config.bootstrap, seed=config.seed)
        for name in errs:
            per[name]["all"] = summary_all[name]
        # block 1: every estimator uses the group mean
        a1_hat = blockwise_advantages(rewards[idx], prompt_ids[idx] * gmax + replicate[idx], outcomes[idx],
                                      baseline="group_mean")[:, 0]
        a1_mc = rewards[idx, 0] - fresh_r1.mean(axis=1)[prompt_ids[idx]]
        fresh_noise = (fresh_r1.var(axis=1, ddof=1) / fresh_r1.shape[1])[prompt_ids[idx]]
        block1 = summarize_errors({"group_mean": a1_hat - a1_mc}, prompt_ids[idx], None, mc_noise=fresh_noise,
                                  bootstrap=config.bootstrap, seed=config.seed, reference=None)["group_mean"]
        result_groups[str(g)] = {"replicates": reps, "samples": int(keep.sum()), "estimators": per,
                                 "singletons": singletons, "block1": block1}
        errors_at[g] = (errs, idx)
    timings["estimators"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    n = len(samples)
    setup = {
        "model": config.model, "model_path": model_path, "task": task.name, "system_prompt": task.system_prompt,
        "prompts": len(rows), "pool_per_prompt": gmax, "samples": n,
        "accuracy": float(rewards[:, 0].mean()), "correct_fraction": float(strata["correct"].mean()),
        "malformed": float(np.mean([s.malformed for s in scores])),
        "incomplete_solution": float(np.mean([p is None for p, _ in prefix_of])),
        "no_continuation": float(np.mean([u < 0 for _, u in prefix_of])),
        "distinct_prefixes": len(inputs), "continuations": int(len(inputs) * config.continuations),
        "mean_reward_block2": float(rewards[:, 1].mean()),
        "mc_value_range": [float(mc_values.min()), float(mc_values.max())],
        "reward_range_block2": [float(task.worst_rewards[1]), 0.0] if task.config.blocks[1].reward == "brier" else None,
        "device": str(next(policy.parameters()).device),
    }
    result = {"config": {**asdict(config)}, "rules": RULES, "setup": setup, "groups": result_groups,
              "timings": timings}
    _write(result, samples, scores, prefix_of, conts, cont_rewards, mc_values, a_mc, errors_at, strata, config)
    return result


# ---------------------------------------------------------------------------------------------
# Report


def _fmt(value: float, se: float | None = None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if se is None or math.isnan(se) else f"{value:.{digits}f} ± {se:.{digits}f}"


def render_markdown(result: dict, command: str | None = None) -> str:
    cfg, setup = result["config"], result["setup"]
    g_main = str(cfg["group"])
    lines = [
        "# Fidelity of the advantage estimators (paper Sec. 5.1)", "",
        f"Model `{setup['model']}` ({setup['model_path']}), task `{setup['task']}`, {setup['prompts']} prompts x "
        f"{setup['pool_per_prompt']} completions (T = {cfg['temperature']}, max {cfg['max_new_tokens']} tokens, "
        f"seed {cfg['seed']}), M = {cfg['continuations']} continuations per distinct prefix "
        f"({setup['distinct_prefixes']} prefixes, {setup['continuations']} continuations).",
        f"Accuracy {setup['accuracy']:.3f}, malformed {setup['malformed']:.3f}, incomplete solution block "
        f"{setup['incomplete_solution']:.3f}; MC values in [{setup['mc_value_range'][0]:.3f}, "
        f"{setup['mc_value_range'][1]:.3f}]. Time {result['timings']['total']:.0f} s "
        f"(model {result['timings']['model']:.0f} s, pool {result['timings']['sample_pool']:.0f} s, "
        f"continuations {result['timings']['continuations']:.0f} s).",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += ["", f"## Block 2 at G = {g_main}", "",
              "Error e = A_hat - A_MC. RMSE ± bootstrap se over prompts; RMSE_exact removes the MC noise "
              "(mean s²/M); bias = mean error ± cluster se; Δ = RMSE - RMSE(ocb) ± paired bootstrap se.", ""]
    lines += _table(result["groups"][g_main])
    b1 = result["groups"][g_main]["block1"]
    lines += ["", f"Block 1 (group mean) against E[r_1 | x] from M fresh samples: RMSE {_fmt(b1['rmse'], b1['rmse_se'])}, "
              f"RMSE_exact {_fmt(b1['rmse_exact'])}, bias {_fmt(b1['bias'], b1['bias_se'])}.", ""]
    lines += ["## RMSE by group size (block 2)", "",
              "| estimator | stratum | " + " | ".join(f"G = {g}" for g in result["groups"]) + " |",
              "|---|---|" + "---|" * len(result["groups"])]
    names = list(next(iter(result["groups"].values()))["estimators"])
    for name in names:
        for stratum in STRATA:
            cells = [_fmt(v["estimators"][name][stratum]["rmse"], v["estimators"][name][stratum]["rmse_se"])
                     for v in result["groups"].values()]
            lines.append(f"| {name} | {stratum} | " + " | ".join(cells) + " |")
    for stratum in STRATA:
        lines.append(f"| (singleton strata) | {stratum} | " + " | ".join(
            _fmt(v["singletons"][stratum], digits=2) for v in result["groups"].values()) + " |")
    lines += ["", "Figures: fidelity.png (error distributions by stratum at G = "
              f"{g_main}), fidelity_sweep.png (RMSE against G).", "", "## Rules", ""]
    lines += [f"- {k}: {v}" for k, v in result["rules"].items()]
    return "\n".join(lines) + "\n"


def command(config: FidelityConfig) -> str:
    """The `bae fidelity` command line that reproduces `config` (options left at their default omitted)."""
    default = FidelityConfig()
    parts = ["bae fidelity"]
    for key, value in asdict(config).items():
        if key in ("system_prompt", "levels") or value == getattr(default, key):
            continue
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        parts.append(f"--{key.replace('_', '-')} {text}")
    return " ".join(parts)


def _table(entry: dict) -> list[str]:
    lines = ["| estimator | stratum | n | RMSE | RMSE_exact | bias | Δ RMSE vs ocb |", "|---|---|---|---|---|---|---|"]
    for name, per in entry["estimators"].items():
        for stratum in (*STRATA, "all"):
            s = per[stratum]
            lines.append(f"| {name} | {stratum} | {s['n']} | {_fmt(s['rmse'], s['rmse_se'])} | {_fmt(s['rmse_exact'])} | "
                         f"{_fmt(s['bias'], s['bias_se'])} | {_fmt(s.get('rmse_minus_ocb', math.nan), s.get('rmse_minus_ocb_se'))} |")
    return lines


def error_plot(errors: dict[str, np.ndarray], strata: dict[str, np.ndarray], path: str | os.PathLike,
               title: str = "") -> None:
    """Per stratum, the distribution (box: quartiles, whiskers 5-95%, diamond: mean) of the error
    A_hat - A_MC of each estimator, as the paper's Figure 1."""
    from bae.evaluation.plots import _save, plt

    names = list(errors)
    fig, axes = plt.subplots(1, len(strata), figsize=(4.5 * len(strata), 4), sharey=True, squeeze=False)
    for ax, (sname, mask) in zip(axes[0], strata.items()):
        data = [errors[n][mask] for n in names]
        if mask.any():
            ax.boxplot(data, whis=(5, 95), showfliers=False, showmeans=True,
                       meanprops=dict(marker="D", markersize=4, markerfacecolor="C1", markeredgecolor="C1"))
            ax.set_xticks(range(1, len(names) + 1),
                          [f"{n}\n{math.sqrt(float(np.mean(d ** 2))):.3f}" for n, d in zip(names, data)],
                          fontsize=7, rotation=30)
        ax.axhline(0.0, color="gray", lw=0.8, ls="--")
        ax.set_title(f"{sname} prefix (n = {int(mask.sum())})")
        ax.set_xlabel("estimator (RMSE)")
    axes[0][0].set_ylabel("A_hat - A_MC (block 2)")
    fig.suptitle(title or "Advantage error against the Monte-Carlo reference")
    fig.tight_layout()
    _save(fig, path)


def sweep_plot(result: dict, path: str | os.PathLike) -> None:
    """RMSE (± se) of each estimator against the group size, one panel per stratum."""
    from bae.evaluation.plots import _save, plt

    gs = [int(g) for g in result["groups"]]
    names = list(next(iter(result["groups"].values()))["estimators"])
    fig, axes = plt.subplots(1, len(STRATA), figsize=(4.5 * len(STRATA), 4), sharey=True)
    for ax, stratum in zip(axes, STRATA):
        for name in names:
            v = [result["groups"][str(g)]["estimators"][name][stratum] for g in gs]
            ax.errorbar(gs, [x["rmse"] for x in v], yerr=[x["rmse_se"] for x in v], marker="o", ms=3, capsize=2,
                        label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(gs, [str(g) for g in gs])
        ax.set_xlabel("group size G")
        ax.set_title(f"{stratum} prefix")
    axes[0].set_ylabel("RMSE of A_hat - A_MC (block 2)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _write(result, samples, scores, prefix_of, conts, cont_rewards, mc_values, a_mc, errors_at, strata, config) -> None:
    from bae.evaluation.generations import atomic_write_text

    out = Path(config.out_dir)
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=1, default=float) + "\n")
    atomic_write_text(out / "report.md", render_markdown(result, command(config)))
    lines = []
    for i, s in enumerate(samples):
        prefix, u = prefix_of[i]
        lines.append(json.dumps({
            "prompt_id": s["prompt_id"], "sample": s["sample"], "problem": s["problem"], "gold": s["gold"],
            "completion": s["completion"], "rewards": list(scores[i].rewards), "outcomes": list(scores[i].outcomes),
            "prefix": prefix, "continuations": conts[u] if u >= 0 else [],
            "continuation_rewards": cont_rewards[u].tolist() if u >= 0 else [],
            "mc_value": float(mc_values[i]), "a_mc": float(a_mc[i]),
        }, ensure_ascii=False))
    atomic_write_text(out / "samples.jsonl", "\n".join(lines) + "\n")
    errs, idx = errors_at[config.group]
    error_plot(errs, {k: v[idx] for k, v in strata.items()}, out / "fidelity.png",
               f"Block-2 advantage error at G = {config.group} ({result['setup']['prompts']} prompts, "
               f"M = {config.continuations})")
    sweep_plot(result, out / "fidelity_sweep.png")
