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
    from bae.runs.train import train as run

    task = config.task.build()
    policy = resolve_model(config.model, Path(config.output_dir) / "warm_start", task,
                           levels=config.data.levels, seed=config.seed)
    return run(config, resume=resume, policy=policy)
