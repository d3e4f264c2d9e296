"""The embedded default: an offline tiny policy that trains and evaluates on a laptop's CPU.

    bae.embedded.tiny       the byte-level tokenizer and a random Qwen2 of ~0.1M parameters
    bae.embedded.warmstart  the supervised warm start that teaches it a block format
    bae.embedded.demo       `bae demo`: every method from one warm start, evaluated alike
    demo.yaml               the demo's settings (configs/demo.yaml links to it)

The model name "tiny" means one thing everywhere (`bae train`, `bae eval`, `bae fidelity`, the
demo): the tiny policy warm-started, once, into a folder of the run, on arithmetic demonstrations
in the block format and prompt format of the run's task. `resolve_model` is the one place that
turns the name into that folder; every other layer takes a model folder or a hub id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

TINY = "tiny"
DEMO_CONFIG = Path(__file__).resolve().parent / "demo.yaml"


def demo_config() -> dict[str, Any]:
    """The demo's settings (demo.yaml), as the mapping `bae train` validates."""
    return yaml.safe_load(DEMO_CONFIG.read_text())


def default_task_options() -> dict[str, Any]:
    """The task options the tiny policy is warm-started with when none are given (demo.yaml's:
    no system prompt, the Brier confidence reward)."""
    return dict(demo_config()["task"]["options"])


def resolve_model(model: str, folder: str | Path, task: Any, *, levels: tuple[int, ...] = (1, 2), seed: int = 0) -> str:
    """The model to load for the name `model`: a folder or hub id as given; "tiny": the tiny policy
    warm-started into `folder` (reused when it already holds one) on arithmetic demonstrations in
    `task`'s format (self-confidence or two-attempt), with its system prompt, the difficulty
    `levels` and its abstention answer (`abstain`: 10% of the demonstrations then abstain).
    Raises ValueError for a task in another block format."""
    if model != TINY:
        return model
    from bae.embedded.warmstart import WarmStartConfig, is_two_attempt, warm_start

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return str(folder)
    blocks = [b.fields for b in task.config.blocks]
    if is_two_attempt(task):
        form = "arithmetic_two_attempt"
    elif blocks == [("reasoning", "answer"), ("analysis", "confidence")]:
        form = "arithmetic"
    else:
        raise ValueError(f"model 'tiny' is warm-started in the self-confidence and two-attempt block formats only; "
                         f"task {task.name!r} has blocks {blocks}: give a model folder or hub id")
    return str(warm_start(WarmStartConfig(task=form, system_prompt=task.system_prompt, levels=tuple(levels),
                                          abstain=task.config.abstain, seed=seed), folder))


def train(config: Any, resume: bool = False) -> dict:
    """`bae train`: bae.runs.train.train, with "tiny" resolved into output_dir/warm_start first."""
    from bae.runs.train import grpo_args, train as run

    task = config.task.build()
    folder = Path(config.output_dir) / "warm_start"
    if config.model == TINY and launched():
        # under torchrun / accelerate launch the main process warm-starts, in a process of its own
        # (in this one its SFTTrainer would join the run's process group and split the data, and
        # under DeepSpeed take the launch's ZeRO-3); the others wait, then reuse the folder
        args = grpo_args(config)
        with args.main_process_first(local=False, desc="warm start"):
            if args.process_index == 0 and not (folder / "config.json").is_file():
                _warm_start_alone(config, folder)
        if not (folder / "config.json").is_file():  # the main process failed and said why
            raise ValueError(f"model 'tiny': the main process did not warm-start it into {folder}")
    policy = resolve_model(config.model, folder, task, levels=config.data.levels, seed=config.seed)
    return run(config, resume=resume, policy=policy)


LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                      "ROLE_RANK", "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether a launcher (torchrun, accelerate launch, even of one process) started this process."""
    return any(k in os.environ for k in LAUNCHER_VARIABLES) or any(k.startswith("ACCELERATE_") for k in os.environ)


def _warm_start_alone(config: Any, folder: Path) -> None:
    """resolve_model(config's "tiny") in a child process without the launcher's variables: the warm
    start a one-process `bae train` gives at the same thread count (torchrun sets OMP_NUM_THREADS=1;
    CPU reductions over more threads round differently). Its failure is a ValueError that ends
    with the child's own last line."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCHER_VARIABLES and not k.startswith(("TORCHELASTIC_", "ACCELERATE_"))}
    code = ("import sys; from bae.runs.config import TrainConfig; from bae.embedded import resolve_model; "
            "c = TrainConfig.model_validate_json(sys.stdin.read()); "
            "resolve_model(c.model, sys.argv[1], c.task.build(), levels=c.data.levels, seed=c.seed)")
    done = subprocess.run([sys.executable, "-c", code, str(folder)], input=config.model_dump_json(), text=True,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode != 0:  # the child's own last line: "ValueError: model 'tiny' is warm-started in ..."
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise ValueError(f"the warm start of the tiny policy into {folder} failed: {last}")
