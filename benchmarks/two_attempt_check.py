"""Can the tiny policy's second attempt be more accurate than its first? The warm start with each
second-attempt format (WarmStartConfig.check), measured before any RL.

    python benchmarks/two_attempt_check.py [--seed 0] [--out runs/two_attempt_check]

For check in ("steps", "restate"): warm-start the tiny policy on two-attempt demonstrations (the
demo's defaults otherwise), then sample 4 completions for each of 100 held-out problems at T = 1
(bae.embedded.warmstart.measure) and print the first attempt's accuracy, the final (second)
answer's accuracy overall and per level, and the format rate. A second attempt can only learn to
fix a first when it can compute better than the first; this measures whether the format gives it that.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/two_attempt_check")
    args = parser.parse_args()

    from bae.embedded.warmstart import CHECKS, WarmStartConfig, measure, warm_start

    for check in CHECKS:
        config = WarmStartConfig(task="arithmetic_two_attempt", check=check, seed=args.seed)
        path = warm_start(config, os.path.join(args.out, f"{check}-seed-{args.seed}"))
        m = measure(path, config)
        print(check, json.dumps({k: m[k] for k in ("format_rate", "first_accuracy", "accuracy", "accuracy_per_level")}),
              flush=True)


if __name__ == "__main__":
    main()
