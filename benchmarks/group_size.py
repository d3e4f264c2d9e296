"""Group size as a config switch: bae+ocb with G = 8 against G = 16 at equal completions per step.

    python benchmarks/group_size.py [--groups 8,16] [--steps 100] [--seed 0] [--out runs/group_size]

Both runs start from the same warm start (the demo's, built once into OUT/warm_start) with the demo's
settings (64 completions per step, so 8 prompts x 8 or 4 prompts x 16), and are evaluated on the same
held-out problems. Prints accuracy, AUROC, ECE and Brier with standard errors, and the mean stratum
sizes the runs logged (larger groups make fewer strata of one, the paper's OCB limitation).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", default="8,16")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/group_size")
    args = parser.parse_args()

    from bae.embedded import demo_config, resolve_model
    from bae.embedded.demo import FIGURES
    from bae.runs.config import parse
    from bae.runs.train import train

    DEMO = demo_config()
    out = Path(args.out)
    base = parse({**DEMO, "seed": args.seed, "output_dir": str(out)})
    policy = resolve_model("tiny", out / "warm_start", base.task.build(),
                           levels=base.data.levels, seed=args.seed)
    rows = []
    for g in (int(x) for x in args.groups.split(",")):
        run = out / f"G{g}"
        if run.exists():
            import shutil

            shutil.rmtree(run)
        config = parse({**DEMO, "model": policy, "group_size": g, "steps": args.steps, "seed": args.seed,
                        "output_dir": str(run), "checkpoint_interval": args.steps})
        metrics = train(config)["metrics"]
        logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        sizes = [r["bae/confidence/stratum_size_mean"] for r in logged if "bae/confidence/stratum_size_mean" in r]
        smallest = [r["bae/confidence/stratum_size_min"] for r in logged if "bae/confidence/stratum_size_min" in r]
        rows.append((g, metrics, sum(sizes) / len(sizes), sum(smallest) / len(smallest)))

    print(f"bae+ocb, {DEMO['batch_size']} completions per step, {args.steps} steps, seed {args.seed}")
    print("| G | prompts/step | " + " | ".join(FIGURES) + " | mean stratum size | mean smallest stratum |")
    print("|---" * (len(FIGURES) + 4) + "|")
    for g, m, size, smallest in rows:
        cells = " | ".join(f"{m[f]['value']:.3f} ± {m[f]['se']:.3f}" for f in FIGURES)
        print(f"| {g} | {DEMO['batch_size'] // g} | {cells} | {size:.2f} | {smallest:.2f} |")


if __name__ == "__main__":
    main()
