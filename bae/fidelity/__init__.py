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
ocb_shrink, ocb_eb, and any registered later) computes A_hat = r_2 - b from the group alone, and we report,
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

from bae.fidelity.config import RULES, STRATA, FidelityConfig
from bae.fidelity.montecarlo import continue_texts, run_fidelity, solution_prefix
from bae.fidelity.simulator import CONFIDENCE_GRID, Simulation, brier_values, confidence_policy, simulate
from bae.fidelity.statistics import estimator_errors, stratum_sizes, summarize_errors

__all__ = ["CONFIDENCE_GRID", "FidelityConfig", "RULES", "STRATA", "Simulation", "brier_values", "confidence_policy",
           "continue_texts", "estimator_errors", "run_fidelity", "simulate", "solution_prefix", "stratum_sizes",
           "summarize_errors"]
