"""The baselines-beyond-OCB tables from `bae fidelity` runs (their metrics.json), for RESULTS.md.

    python benchmarks/baselines_fidelity.py runs/fidelity_eb/metrics.json [more metrics.json ...]

Per run: block-2 RMSE ± bootstrap se at every G of the sweep for ocb, group_mean, ocb_shrink,
ocb_eb and the answer-class strata alone (ocb@answer_class) and under ocb_eb
(ocb_eb@answer_class), in the correct / incorrect strata and the rows in small strata (1 or 2
members under correct/incorrect); then the target check of ocb_eb (within one se of the better
of ocb and group_mean; strictly below ocb in the small strata: Δ < 0 by more than two paired se).
"""

from __future__ import annotations

import json
import math
import sys

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
    for g, v in groups.items():
        e = v["estimators"]
        small = e["ocb_eb"]["small_strata"]
        d, se = small.get("rmse_minus_ocb", math.nan), small.get("rmse_minus_ocb_se", math.nan)
        below = "n/a" if small["n"] == 0 else ("yes" if d < -2 * se else "no")
        for stratum in ("correct", "incorrect"):
            if e["ocb"][stratum]["n"] == 0:
                continue
            better = "ocb" if e["ocb"][stratum]["rmse"] <= e["group_mean"][stratum]["rmse"] else "group_mean"
            diff = e["ocb_eb"][stratum]["rmse"] - e[better][stratum]["rmse"]
            within = "yes" if diff <= e[better][stratum]["rmse_se"] else "no"
            lines.append(f"| {g} | {stratum} | {better} | {diff:+.4f} (se {e[better][stratum]['rmse_se']:.4f}) | "
                         f"{within} | {d:+.4f} ({se:.4f}) | {below} |")
    return "\n".join(lines)


def main() -> None:
    for path in sys.argv[1:]:
        print(tables(path))
        print()


if __name__ == "__main__":
    main()
