"""The `bae` command: bae demo | eval | version."""

from __future__ import annotations

import random
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

import bae
from bae.advantages import BASELINES, blockwise_advantages

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()


@app.command()
def version() -> None:
    """Print the installed version."""
    console.print(bae.__version__)


def synthetic_batch(prompts: int, group: int, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    """Completions of the arithmetic task from a simulated policy: right with a per-prompt
    probability, confidences drawn independently of correctness (an uncalibrated start), and a few
    malformed outputs. Returns (completions, golds, group ids)."""
    from bae.tasks.arithmetic import generate

    rng = random.Random(seed)
    texts, golds, ids = [], [], []
    for p, row in enumerate(generate(prompts, seed=seed)):
        p_right = rng.uniform(0.2, 0.9)
        for _ in range(group):
            answer = row["answer"] if rng.random() < p_right else str(int(row["answer"]) + rng.choice([-2, -1, 1, 10]))
            q = round(rng.random(), 2)
            text = (f"<reasoning>{row['problem'][8:-1]} = {answer}</reasoning><answer>{answer}</answer>"
                    f"<analysis>level {row['level']}</analysis><confidence>{q}</confidence>")
            if rng.random() < 0.05:
                text = text[: rng.randrange(len(text))]  # truncated output
            texts.append(text)
            golds.append(row["answer"])
            ids.append(p)
    return texts, golds, np.array(ids)


@app.command()
def demo(
    prompts: int = typer.Option(16, min=1, help="prompts in the synthetic batch"),
    group: int = typer.Option(8, min=1, help="completions per prompt (G)"),
    seed: int = typer.Option(0, help="random seed"),
) -> None:
    """Score a synthetic batch of the arithmetic task and print the per-block advantages of every
    baseline, split by the solution outcome (the stratum OCB conditions on)."""
    from bae import tasks

    task = tasks.get("arithmetic")
    texts, golds, ids = synthetic_batch(prompts, group, seed)
    scores = [task.score(t, g) for t, g in zip(texts, golds)]
    r = np.array([s.rewards for s in scores])  # [N, K]
    o = np.array([s.outcomes for s in scores])  # [N, K]
    malformed = np.mean([s.malformed for s in scores])
    console.print(f"[bold]{len(texts)} completions[/] ({prompts} prompts x {group}), task {task.name!r}, "
                  f"accuracy {r[:, 0].mean():.3f}, malformed {malformed:.3f}")
    table = Table(title="mean |advantage| of the confidence block by stratum (and solution block)")
    for col in ("baseline", "A_solution mean|.|", "A_conf correct", "A_conf incorrect", "sum A_conf per stratum"):
        table.add_column(col, justify="right")
    for name in BASELINES:
        a = blockwise_advantages(r, ids, o, baseline=name)
        right, wrong = o[:, 1] == 1, o[:, 1] == 0
        strata_sums = [abs(a[(ids == g) & (o[:, 1] == v), 1].sum()) for g in np.unique(ids) for v in (0, 1)]
        table.add_row(name, f"{np.abs(a[:, 0]).mean():.4f}", f"{np.abs(a[right, 1]).mean():.4f}",
                      f"{np.abs(a[wrong, 1]).mean():.4f}", f"{max(strata_sums):.2e}")
    console.print(table)


def main(argv: Optional[list[str]] = None) -> None:  # pragma: no cover
    app(argv)
