"""How much of a demo policy's calibration comes from the samples where it states no confidence.

    python benchmarks/stated_confidence.py runs/demo_seeds_200/arithmetic [more seed folders' parents]

The demo's ECE and Brier count a missing confidence as 0.0 (as the reports say). A policy that
leaves the answer, and with it the confidence, out of the problems it gets wrong is then scored as
confident-and-right about being wrong. This reads each seed's held-out scores (SEED/POLICY/eval/
final/scores.jsonl, as `bae demo` writes them) and prints per policy, over the seeds: the share of
samples without an answer (a solution block cut short), the share without a stated confidence, the accuracy of those samples, the ECE over the stated
confidences only, and each policy's stated-only ECE minus bae+ocb's, paired by seed, with the 95%
Student-t interval over the seeds (benchmarks/demo_seeds.py's t_interval).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

FOLDERS = {"bae+ocb": "bae_ocb", "bae+group_mean": "bae_group_mean", "rlcr": "rlcr", "gdpo": "gdpo"}
REFERENCE = "bae+ocb"


def figures(scores: Path) -> dict[str, float]:
    from bae.metrics import ece

    rows = [json.loads(line) for line in scores.read_text().splitlines() if line.strip()]
    q = np.array([np.nan if r["confidence"] is None else r["confidence"] for r in rows], dtype=float)
    c = np.array([float(r["correct"]) for r in rows])
    missing = np.isnan(q)
    return {"no answer": float(np.mean([r["answer"] is None for r in rows])),
            "no confidence": float(missing.mean()),
            "accuracy without one": float(c[missing].mean()) if missing.any() else float("nan"),
            "ECE, stated only": ece(q[~missing], c[~missing]),
            "ECE, missing as 0": ece(np.where(missing, 0.0, q), c)}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from demo_seeds import t_interval

    for parent in map(Path, sys.argv[1:]):
        seeds = sorted((p for p in parent.glob("seed-*") if (p / "metrics.json").is_file()),
                       key=lambda p: int(p.name.split("-")[1]))
        per = {name: [figures(s / folder / "eval" / "final" / "scores.jsonl") for s in seeds]
               for name, folder in FOLDERS.items() if all((s / folder).is_dir() for s in seeds)}
        print(f"{parent}: {len(seeds)} seeds ({', '.join(s.name for s in seeds)}); mean over the seeds\n")
        keys = list(next(iter(per.values()))[0])
        print("| policy | " + " | ".join(keys) + " |\n|---" * 1 + "|---" * len(keys) + "|")
        for name, runs in per.items():
            print(f"| {name} | " + " | ".join(f"{np.nanmean([r[k] for r in runs]):.3f}" for k in keys) + " |")
        print(f"\nECE over stated confidences, minus {REFERENCE}'s (paired by seed, 95% t-interval):\n")
        for name, runs in per.items():
            if name == REFERENCE:
                continue
            d = t_interval([a["ECE, stated only"] - b["ECE, stated only"] for a, b in zip(runs, per[REFERENCE])])
            print(f"- {name}: {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
        print()


if __name__ == "__main__":
    main()
