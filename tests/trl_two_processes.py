"""One rank of tests/test_engine_trl_distributed.py, started by torchrun (2 CPU processes, gloo).

A 2-step train() of `Scripted` (tests/trl_scripted.py) in which every generation batch splits one
group across the ranks; the rank writes its scripted completions and, for every call of TRL's
_compute_loss, the input tensors and the loss returned, to OUT/rank<r>.pt.

    torchrun --standalone --nproc_per_node 2 tests/trl_two_processes.py OUT
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))  # trl_scripted

import torch  # noqa: E402
from trl import GRPOTrainer  # noqa: E402

from bae.embedded.tiny import build_model, build_tokenizer  # noqa: E402
from trl_scripted import Scripted, config, make_dataset, make_task  # noqa: E402

PER_DEVICE = 3  # with G = 4 and 2 micro-batches: 6 rows a rank, 12 a step, group 2 split 2 + 2 across ranks
STEPS = 2


def main(out: Path) -> None:
    torch.set_num_threads(1)
    seen, original = [], GRPOTrainer._compute_loss

    def capture(self, model, inputs):
        loss = original(self, model, inputs)
        seen.append({"inputs": {k: v.detach().cpu() for k, v in inputs.items() if torch.is_tensor(v)},
                     "loss": loss.item()})
        return loss

    GRPOTrainer._compute_loss = capture
    tok = build_tokenizer()
    task = make_task()
    rank = int(os.environ["RANK"])
    args = config(per_device_train_batch_size=PER_DEVICE, gradient_accumulation_steps=2, max_steps=STEPS,
                  ddp_backend="gloo", output_dir=str(out / "trainer"))
    trainer = Scripted(build_model(tok), task, args, make_dataset(task), tok, seed=rank, tag=f"rank {rank} ")
    trainer.train()
    assert trainer.accelerator.num_processes == 2 and trainer.accelerator.process_index == rank
    torch.save({"script_log": trainer.script_log, "seen": seen, "loss_type": trainer.loss_type},
               out / f"rank{rank}.pt")
    # Everything this test reads is saved: leave without tearing gloo down. Its teardown races its
    # own worker threads: left to the interpreter's exit it aborted rank 1 once in CI (SIGABRT,
    # "terminate called without an active exception", pytorch/pytorch#190489); destroyed when
    # main() returns, with the GIL held, it deadlocked 6 of 30 runs on 2 busy cores (py-spy:
    # ~ProcessGroupGloo waits for a worker that waits for the GIL to free an allgather's tensor).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
