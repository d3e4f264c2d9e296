"""The baselines in the exact simulator (bae.fidelity.simulate), regime by regime and G by G.

    python benchmarks/baselines_sim.py [--batches 200] [--prompts 32] [--groups 4,8,16,32]
                                       [--regimes flat,weak,strong] [--seed 0] [--bootstrap 500]
                                       [--history H] [--json out.json]

Each regime is simulated once per group size G: batches x prompts prompts, G samples each, cut into
batches of `prompts` groups (what one training step, or one `bae fidelity` replicate, sees: ocb_eb
pools its variances over a batch and batch_mean averages over it). The error of an estimator is
A_hat - A against the exact block-2 advantage (closed-form value, no Monte-Carlo noise). RMSE ±
bootstrap se over prompts; Δ = paired difference of RMSE with its bootstrap se (same resamples).

The regimes (fixed here, before any result; none is tuned to an estimator):
- flat: every prompt's mean confidence m_x = 0.5, so the two strata (and all prompts) have the same
  block-2 value: the warm-started tiny policy's situation (its confidence is drawn independently of
  correctness, symmetric about 0.5).
- weak: m_x ~ U(0.4, 0.6): strata differ by |2 m_x - 1| <= 0.2 in value.
- strong: m_x ~ U(0.05, 0.95): the paper's regime (RESULTS.md section 3).
p_x ~ U(0.1, 0.9) in all three; the confidence policy's width is the simulator's default (0.15).
- drift (only when named in --regimes): the regime moves from batch to batch, as a policy does in
  training: batch t draws m_x ~ U(0.5 - w_t, 0.5 + w_t) with w_t a triangle wave from 0 (flat) to
  0.45 (strong) and back over DRIFT_PERIOD batches, so that a window of earlier batches (--history)
  holds a regime other than the current one.

Printed: one RMSE table per regime (strata correct, incorrect, and "small": the rows whose stratum
has one or two members), then the target check of ocb_eb, of ocb_eb with its pretest at 0.05
(`ocb_eb[pretest]`) and of that with the target predicted from the rest of the group
(`ocb_eb[pretest,rest]`: toward="rest"): RMSE within one se of the better of ocb and group_mean
(per stratum), and strictly below ocb in the small strata (Δ < 0 by more than two paired se). With
--history H > 0, ocb_eb with history = H (`ocb_eb[history]`: each batch also pools the sums of the
H batches before it, as training steps would) and with the pretest too (`ocb_eb[pretest,history]`,
`ocb_eb[pretest,rest,history]`) join the tables and the check.
"""

from __future__ import annotations

import argparse
import json
import math
from types import SimpleNamespace

import numpy as np

from bae.fidelity import estimator_errors, simulate, stratum_sizes, summarize_errors

REGIMES = {
    "flat": dict(confidence_range=(0.5, 0.5)),
    "weak": dict(confidence_range=(0.4, 0.6)),
    "strong": dict(confidence_range=(0.05, 0.95)),
}
DRIFT_PERIOD = 100
"""Batches per drift cycle: flat to strong in 50, back in 50 (faster than the demo's policies, which
learn their confidence over 100-200 steps by their training curves)."""
VARIANTS = {"ocb_eb[batch]": {"pool": "batch"}, "ocb_eb[pretest]": {"pretest": 0.05},
            "ocb_eb[pretest,rest]": {"pretest": 0.05, "toward": "rest"}}
"""ocb_eb with options: name -> keyword options of the baseline."""
NAMES = ("batch_mean", "group_mean", "ocb", "ocb_shrink", "ocb_eb", *VARIANTS)
CHECKED = ("ocb_eb", "ocb_eb[pretest]", "ocb_eb[pretest,rest]")
"""The estimators checked against the issue's target."""
STRATA = ("correct", "incorrect", "small")


def with_history(history: int) -> dict[str, dict]:
    """VARIANTS, and with history > 0 the two that pool over the `history` batches before."""
    if not history:
        return dict(VARIANTS)
    return {**VARIANTS, "ocb_eb[history]": {"history": history}, "ocb_eb[pretest,history]": {"pretest": 0.05, "history": history},
            "ocb_eb[pretest,rest,history]": {"pretest": 0.05, "toward": "rest", "history": history}}


def errors(sim, batches: np.ndarray, history: int = 0) -> dict[str, np.ndarray]:
    """Every compared estimator's block-2 error against the exact advantage, batch by batch (in order)."""
    return estimator_errors(sim.rewards, sim.groups, sim.outcomes, sim.reference_advantages, batches=batches,
                            baselines=[n for n in NAMES if n not in VARIANTS],
                            variants={name: ("ocb_eb", options) for name, options in with_history(history).items()})


def drifting(batches: int, prompts: int, group: int, seed: int) -> SimpleNamespace:
    """The drift regime: batch t simulated on its own with the half-width w_t of the triangle wave,
    its groups numbered after the batches before."""
    parts = []
    for t in range(batches):
        phase = (t % DRIFT_PERIOD) / DRIFT_PERIOD
        w = 0.45 * (1 - abs(2 * phase - 1))  # 0 -> 0.45 -> 0
        parts.append(simulate(prompts, group, seed=seed * 1_000_003 + t, confidence_range=(0.5 - w, 0.5 + w)))
    return SimpleNamespace(rewards=np.concatenate([p.rewards for p in parts]),
                           outcomes=np.concatenate([p.outcomes for p in parts]),
                           groups=np.concatenate([p.groups + t * prompts for t, p in enumerate(parts)]),
                           reference_advantages=np.concatenate([p.reference_advantages for p in parts]))


def measure(regime: str, group: int, batches: int, prompts: int, seed: int, bootstrap: int, history: int = 0) -> dict:
    if regime == "drift":
        sim = drifting(batches, prompts, group, seed)
    else:
        sim = simulate(batches * prompts, group, seed=seed, **REGIMES[regime])
    batch = sim.groups // prompts
    errs = errors(sim, batch, history)
    sizes = stratum_sizes(sim.groups, sim.outcomes[:, 1], batch)
    masks = {"correct": sim.outcomes[:, 1] == 1, "incorrect": sim.outcomes[:, 1] == 0, "small": sizes <= 2}
    out = {}
    for stratum, mask in masks.items():
        vs_ocb = summarize_errors(errs, sim.groups, mask, bootstrap=bootstrap, seed=seed, reference="ocb")
        vs_gm = summarize_errors(errs, sim.groups, mask, bootstrap=bootstrap, seed=seed, reference="group_mean")
        out[stratum] = {name: {**vs_ocb[name], **{k: v for k, v in vs_gm[name].items() if "group_mean" in k}}
                        for name in errs}
    out["small_fraction"] = float(masks["small"].mean())
    return out


def fmt(x: float, se: float | None = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.3f}" if se is None or math.isnan(se) else f"{x:.3f} ± {se:.3f}"


def target(cell: dict, name: str = "ocb_eb") -> tuple[str, float, float]:
    """(which of ocb / group_mean is better, name - better, the better one's RMSE se)."""
    better = "ocb" if cell["ocb"]["rmse"] <= cell["group_mean"]["rmse"] else "group_mean"
    return better, cell[name]["rmse"] - cell[better]["rmse"], cell[better]["rmse_se"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=32, help="groups per batch")
    parser.add_argument("--groups", default="4,8,16,32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--regimes", default=",".join(REGIMES), help="a subset of " + ", ".join(REGIMES) + ", drift")
    parser.add_argument("--history", type=int, default=0, help="also measure ocb_eb pooling the H batches before")
    parser.add_argument("--json", default=None, help="also write every figure to this file")
    args = parser.parse_args()
    if args.history < 0:
        parser.error("--history must be >= 0")
    names = (*NAMES, *[n for n in with_history(args.history) if n not in NAMES])
    checked = (*CHECKED, *[n for n in names if n not in NAMES])
    sizes = [int(g) for g in args.groups.split(",")]
    chosen = args.regimes.split(",")
    if unknown := [r for r in chosen if r not in (*REGIMES, "drift")]:
        parser.error(f"unknown regimes {unknown}; choose from {[*REGIMES, 'drift']}")
    results = {r: {g: measure(r, g, args.batches, args.prompts, args.seed, args.bootstrap, args.history) for g in sizes}
               for r in chosen}

    print(f"{args.batches} batches x {args.prompts} prompts per G, seed {args.seed}; RMSE of A_hat - A (exact) "
          f"± bootstrap se over prompts ({args.bootstrap} resamples)")
    for regime, per in results.items():
        print(f"\n### {regime}: {REGIMES.get(regime, f'triangle wave over {DRIFT_PERIOD} batches')}\n")
        print("| G | stratum | " + " | ".join(names) + " |")
        print("|---|---|" + "---|" * len(names))
        for g, cell in per.items():
            for stratum in STRATA:
                print(f"| {g} | {stratum} | " + " | ".join(fmt(cell[stratum][n]["rmse"], cell[stratum][n]["rmse_se"])
                                                        for n in names) + " |")
            print(f"| {g} | (rows in small strata) | {cell['small_fraction']:.2f} |" + " |" * (len(names) - 1))
    for name in checked:
        print(f"\n### {name} against the target\n")
        print(f"| regime | G | stratum | better of ocb / group_mean | {name} - better (paired se) | within 1 se of "
              f"the better's RMSE | {name} - ocb, small strata (paired se) | strictly below ocb there |")
        print("|---|---|---|---|---|---|---|---|")
        misses = 0
        for regime, per in results.items():
            for g, cell in per.items():
                small = cell["small"][name]
                d_small, se_small = small["rmse_minus_ocb"], small["rmse_minus_ocb_se"]
                below = d_small < -2 * se_small
                for stratum in ("correct", "incorrect"):
                    better, diff, se = target(cell[stratum], name)
                    key = "rmse_minus_ocb" if better == "ocb" else "rmse_minus_group_mean"
                    paired = cell[stratum][name][key + "_se"]
                    misses += diff > se
                    print(f"| {regime} | {g} | {stratum} | {better} | {diff:+.4f} ({paired:.4f}) | "
                          f"{'yes' if diff <= se else 'no'} (se {se:.4f}) | {d_small:+.4f} ({se_small:.4f}) | "
                          f"{'yes' if below else 'no'} |")
                misses += not below
        print(f"\n{name}: {misses} cells miss the target (within 1 se: 2 per regime and G; below ocb in small strata: 1)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "regimes": {k: {"options": {kk: list(vv) for kk, vv in v.items()}}
                                                       for k, v in REGIMES.items()},
                       "results": {r: {str(g): c for g, c in per.items()} for r, per in results.items()}},
                      f, indent=1, default=float)


if __name__ == "__main__":
    main()
