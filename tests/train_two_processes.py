"""One rank of tests/test_train_distributed.py, started by torchrun (2 CPU processes, gloo): `bae train
--config CONFIG [--resume]` with the calls where processes used to collide counted, and rank 1 made
late to the final save, so that a process other than the main one would swap in its (weightless)
folder after the main one's. Writes the counts to OUT/calls<rank>.json.

    torchrun --standalone --nproc_per_node 2 tests/train_two_processes.py CONFIG OUT [--resume]
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import bae.embedded as embedded  # noqa: E402
import bae.embedded.warmstart as warmstart  # noqa: E402
import bae.evaluation as evaluation  # noqa: E402
import bae.evaluation.sampling as sampling  # noqa: E402
import bae.runs.train as runs_train  # noqa: E402
from bae.cli import app  # noqa: E402

LATE_S = 3.0


def main(config: str, out: Path, extra: list[str]) -> None:
    rank = int(os.environ["RANK"])
    calls = {"warm_start": 0, "warm_start_alone": 0, "sample_rows": 0, "write_generations": 0, "final_save": 0}

    def counted(name, original, delay=0.0):
        def call(*args, **kwargs):
            calls[name] += 1
            time.sleep(delay)
            return original(*args, **kwargs)
        return call

    warmstart.warm_start = counted("warm_start", warmstart.warm_start)  # in this process
    embedded._warm_start_alone = counted("warm_start_alone", embedded._warm_start_alone)  # in a child
    sampling.sample_rows = counted("sample_rows", sampling.sample_rows)
    evaluation.write_generations = counted("write_generations", evaluation.write_generations)
    runs_train._save_atomically = counted("final_save", runs_train._save_atomically, LATE_S if rank == 1 else 0.0)
    try:
        app(["train", "--config", config, *extra])
    except SystemExit as exit_:
        code = exit_.code or 0
    else:
        code = 0
    (out / f"calls{rank}.json").write_text(json.dumps(calls))
    sys.exit(code)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])
