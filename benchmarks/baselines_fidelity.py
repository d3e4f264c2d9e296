"""The baselines-beyond-OCB tables from `bae fidelity` runs (their metrics.json), for RESULTS.md.

    python benchmarks/baselines_fidelity.py runs/fidelity_eb/metrics.json [more metrics.json ...]
    python benchmarks/baselines_fidelity.py --groups-per-batch 8 runs/fidelity_pre512/s0/metrics.json

Per run: block-2 RMSE ± bootstrap se at every G of the sweep for ocb, group_mean, ocb_shrink,
ocb_eb and the answer-class strata alone (ocb@answer_class) and under ocb_eb
(ocb_eb@answer_class), in the correct / incorrect strata and the rows in small strata (1 or 2
members under correct/incorrect); then the target check of ocb_eb (within one se of the better
of ocb and group_mean; strictly below ocb in the small strata: Δ < 0 by more than two paired se).
Then the same check for ocb_eb with its F pretest at 0.05 (`ocb_eb[pretest]`) and for that with
the target predicted from the rest of the group (`ocb_eb[pretest,rest]`, toward="rest"), whose errors
`bae fidelity` does not compute (it runs every baseline with its default options): they are
recomputed from the run's samples.jsonl (rewards, outcomes, A_MC of every sample) with the run's
group sizes, batches and bootstrap, and the same recomputation of ocb, group_mean and ocb_eb must
give metrics.json's figures (checked: it stops otherwise). With --groups-per-batch B only that
check is printed, for those and ocb_eb[pretest,history] (history 3), with each run's
batch cut into batches of B groups fed in order, as a training step of B prompts sees them.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

NAMES = ("group_mean", "ocb", "ocb_shrink", "ocb_eb", "ocb@answer_class", "ocb_eb@answer_class")
STRATA = ("correct", "incorrect", "small_strata")


def fmt(s: dict | None) -> str:
    if s is None or s.get("n", 0) == 0 or math.isnan(s["rmse"]):
        return "n/a"
    return f"{s['rmse']:.3f} ± {s['rmse_se']:.3f}"


def tables(path: str) -> str:
    m = json.loads(open(path).read())
    setup, groups = m["setup"], m["groups"]
    lines = [f"#### {setup['model']} ({path})", "",
             f"accuracy {setup['accuracy']:.3f}, malformed {setup['malformed']:.3f}, {setup['prompts']} prompts x "
             f"{setup['pool_per_prompt']}, M = {m['config']['continuations']}", "",
             "| estimator | stratum | " + " | ".join(f"G = {g}" for g in groups) + " |",
             "|---|---|" + "---|" * len(groups)]
    for name in NAMES:
        for stratum in STRATA:
            lines.append(f"| {name} | {stratum} | " + " | ".join(fmt(v["estimators"].get(name, {}).get(stratum))
                                                              for v in groups.values()) + " |")
    lines.append("| (n) | correct / incorrect / small | " + " | ".join(
        " / ".join(str(v["estimators"]["ocb"][s]["n"]) for s in STRATA) for v in groups.values()) + " |")
    lines.append("| (singletons @correct) | correct / incorrect | " + " | ".join(
        f"{v['singletons']['correct']:.2f} / {v['singletons']['incorrect']:.2f}" for v in groups.values()) + " |")
    lines.append("| (singletons @answer_class) | correct / incorrect | " + " | ".join(
        f"{v['singletons_by_outcome']['answer_class']['correct']:.2f} / "
        f"{v['singletons_by_outcome']['answer_class']['incorrect']:.2f}" for v in groups.values()) + " |")
    lines += ["", "| G | stratum | better of ocb / group_mean | ocb_eb - better | within 1 se | "
              "ocb_eb - ocb, small strata (paired se) | strictly below ocb there |", "|---|---|---|---|---|---|---|"]
    lines += target_rows(groups, "ocb_eb")
    return "\n".join(lines)


def target_rows(groups: dict, name: str, with_rmse: bool = False) -> list[str]:
    """One table row per G and stratum: the better of ocb / group_mean, (name's RMSE,) name - better
    with the better one's se, within 1 se, name - ocb in the small strata with its paired se, and
    whether that is below zero by more than two se."""
    rows = []
    for g, v in groups.items():
        e = v["estimators"]
        small = e[name]["small_strata"]
        d, se = small.get("rmse_minus_ocb", math.nan), small.get("rmse_minus_ocb_se", math.nan)
        below = "n/a" if small["n"] == 0 else ("yes" if d < -2 * se else "no")
        for stratum in ("correct", "incorrect"):
            if e["ocb"][stratum]["n"] == 0:
                continue
            better = "ocb" if e["ocb"][stratum]["rmse"] <= e["group_mean"][stratum]["rmse"] else "group_mean"
            diff = e[name][stratum]["rmse"] - e[better][stratum]["rmse"]
            within = "yes" if diff <= e[better][stratum]["rmse_se"] else "no"
            rmse = f"{e[name][stratum]['rmse']:.3f} | " if with_rmse else ""
            rows.append(f"| {g} | {stratum} | {better} | {rmse}{diff:+.4f} (se {e[better][stratum]['rmse_se']:.4f}) | "
                        f"{within} | {d:+.4f} ({se:.4f}) | {below} |")
    return rows


PRETEST = {"ocb_eb[pretest]": ("ocb_eb", {"pretest": 0.05}),
           "ocb_eb[pretest,rest]": ("ocb_eb", {"pretest": 0.05, "toward": "rest"})}
SMALL_POOL = {**PRETEST, "ocb_eb[pretest,history]": ("ocb_eb", {"pretest": 0.05, "history": 3})}
"""The variants checked with --groups-per-batch: batches as small as a training step's, where ocb_eb
pools over few groups, with and without the 3 batches before."""
CHECK_STRATA = {"correct": 1, "incorrect": 0}


def step_batches(sample, prompt, group_size: int, per_batch: int | None = None):
    """[N] batch ids in the order a trainer would see them: sample s of a prompt is in replicate
    s // group_size (one group of every prompt, the run's batch); with `per_batch` = B, replicate j
    is cut into chunks of B prompts (dense prompt ids 0..P-1), chunk c being batch j * chunks + c."""
    import numpy as np

    batches = np.asarray(sample) // group_size
    if per_batch is None:
        return batches
    prompt = np.asarray(prompt)
    chunks = -(-(int(prompt.max()) + 1) // per_batch)
    return batches * chunks + prompt // per_batch


def recomputed(path: str, per_batch: int | None = None, variants: dict | None = None) -> dict[str, dict]:
    """G -> {"estimators": {name: {stratum: summary}}} for group_mean, ocb, ocb_eb and PRETEST (or
    `variants`: {name: (registered baseline, options)}), from
    the samples.jsonl beside metrics.json, as bae.fidelity.montecarlo computes them. With
    `per_batch` = B: each of the run's batches (one group of every prompt) is cut into batches of B
    prompts, fed in order (replicate, then prompts in file order), and the variants are SMALL_POOL;
    ocb and group_mean, which read one group, must still equal the run's figures."""
    import numpy as np

    from bae.fidelity import estimator_errors, stratum_sizes, summarize_errors
    from bae.tasks import MALFORMED_OUTCOME

    m = json.loads(open(path).read())
    if m["setup"]["task_outcomes"] != ["correct"]:
        raise SystemExit(f"{path}: the recomputation reads the strata from the task's outcome; it is "
                         f"{m['setup']['task_outcomes']}, not ['correct']")
    rows = [json.loads(line) for line in open(Path(path).parent / "samples.jsonl") if line.strip()]
    order = {p: i for i, p in enumerate(dict.fromkeys(r["prompt_id"] for r in rows))}
    prompt = np.array([order[r["prompt_id"]] for r in rows])  # dense ids in file order, as the run's
    sample = np.array([r["sample"] for r in rows])
    rewards = np.array([r["rewards"] for r in rows], dtype=np.float64)
    outcomes = np.array([r["outcomes"] for r in rows], dtype=np.int64)
    a_mc = np.array([r["a_mc"] for r in rows], dtype=np.float64)
    mc_noise = np.array([np.var(r["continuation_rewards"], ddof=1) / len(r["continuation_rewards"])
                         if len(r["continuation_rewards"]) > 1 else 0.0 for r in rows])  # s^2 / M, as the run's
    gmax, boot, seed = m["setup"]["pool_per_prompt"], m["config"]["bootstrap"], m["config"]["seed"]
    out = {}
    for g in m["groups"]:
        reps = gmax // int(g)
        idx = np.nonzero(sample < reps * int(g))[0]
        batches = step_batches(sample[idx], prompt[idx], int(g), per_batch)
        errs = estimator_errors(rewards[idx], prompt[idx], outcomes[idx], a_mc[idx], block=1, batches=batches,
                                baselines=["group_mean", "ocb", "ocb_eb"],
                                variants=variants or (PRETEST if per_batch is None else SMALL_POOL))
        sizes = stratum_sizes(prompt[idx], outcomes[idx, 1], batches)
        masks = {name: outcomes[idx, 1] == value for name, value in CHECK_STRATA.items()}
        masks["small_strata"] = (sizes <= 2) & (outcomes[idx, 1] != MALFORMED_OUTCOME)
        per = {name: {} for name in errs}
        for stratum, mask in masks.items():
            s_ocb = summarize_errors(errs, prompt[idx], mask, mc_noise=mc_noise[idx], bootstrap=boot, seed=seed,
                                     reference="ocb")
            s_gm = summarize_errors(errs, prompt[idx], mask, mc_noise=mc_noise[idx], bootstrap=boot, seed=seed,
                                    reference="group_mean")
            for name in errs:
                per[name][stratum] = {**s_ocb[name], **{k: v for k, v in s_gm[name].items() if "group_mean" in k}}
        for name in ("group_mean", "ocb", "ocb_eb") if per_batch is None else ("group_mean", "ocb"):
            for stratum in masks:
                for figure in ("rmse", "rmse_exact"):
                    want, got = m["groups"][g]["estimators"][name][stratum][figure], per[name][stratum][figure]
                    if not (math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(want) and math.isnan(got))):
                        raise SystemExit(f"{path}: G = {g}, {name}, {stratum}: recomputed {figure} {got} != {want}")
        out[g] = {"estimators": per}
    return out


def pretest_table(path: str, per_batch: int | None = None) -> str:
    """The target check of each PRETEST variant (SMALL_POOL with `per_batch`), recomputed from the
    run's samples."""
    groups = recomputed(path, per_batch)
    lines = []
    matched = "ocb, group_mean and ocb_eb match" if per_batch is None else f"{per_batch} groups per batch; ocb and group_mean match"
    for name in PRETEST if per_batch is None else SMALL_POOL:
        lines += [f"{name} ({path}, recomputed from samples.jsonl; {matched} metrics.json):",
                  "", "| G | stratum | better of ocb / group_mean | rmse | " + name + " - better | within 1 se | "
                  f"{name} - ocb, small strata (paired se) | strictly below ocb there |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += target_rows(groups, name, with_rmse=True)
    return "\n".join(lines)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", help="metrics.json of `bae fidelity` runs")
    parser.add_argument("--groups-per-batch", type=int, default=None, metavar="B",
                        help="only the ocb_eb target check, in batches of B groups (a training step's)")
    args = parser.parse_args()
    if args.groups_per_batch is not None and args.groups_per_batch < 1:
        parser.error("--groups-per-batch must be >= 1")
    for path in args.metrics:
        if args.groups_per_batch is None:
            print(tables(path))
            print()
        print(pretest_table(path, args.groups_per_batch))
        print()


if __name__ == "__main__":
    main()
