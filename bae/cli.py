"""The `bae` command: bae demo | train | eval | fidelity | prepare-data | baselines | version."""

from __future__ import annotations

import os
import random
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import bae
from bae.advantages import BASELINES, blockwise_advantages

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()


def fail(err: object) -> typer.Exit:
    """Print `err` as one "error: ..." line (not wrapped at the terminal width) and return the
    exit of a bad input (2), to raise: `raise fail(err) from None`."""
    console.print(f"[red]error:[/] {escape(str(err))}", soft_wrap=True, highlight=False)
    return typer.Exit(2)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True, highlight=False)


def figure_cells(figure: dict | None, digits: int = 4) -> tuple[str, str]:
    """(value, se) of a reported figure; ("not reported", "") for one that is not (None)."""
    if not isinstance(figure, dict) or figure.get("value") is None:
        return "not reported", ""
    return f"{figure['value']:.{digits}f}", f"{figure.get('se', 0.0):.{digits}f}"


def figures_line(metrics: dict, names: tuple[str, ...]) -> str:
    """"accuracy 0.500 ± 0.020, ece not reported, ..." for a report's metrics."""
    cells = {name: figure_cells(metrics.get(name), 3) for name in names}
    return ", ".join(f"{name} {value}" + (f" ± {se}" if se else "") for name, (value, se) in cells.items())


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
    steps: Optional[int] = typer.Option(None, min=1, help="RL steps per method (default: demo.yaml's, 100)"),
    seed: int = typer.Option(0, help="random seed of the warm start, the RL runs and the evaluation"),
    out_dir: str = typer.Option("runs/demo", help="report folder"),
    methods: str = typer.Option("", help="comma-separated methods to compare (default: all of the task's; "
                                "arithmetic: bae+ocb,bae+group_mean,rlcr,rlvr,gdpo; two_attempt: bae+ocb,bae+group_mean,scalar_sum,gdpo; "
                                "either task also takes bae+ocb_eb: ocb_eb with the F pretest and 3 batches of history)"),
    task: str = typer.Option("arithmetic", help="arithmetic (self-confidence format) | two_attempt (paper Section 5.5)"),
) -> None:
    """The embedded default, on CPU and offline: warm-start the tiny policy, train it with each
    method for the same number of steps, evaluate each on the same held-out problems, and write a
    report (report.md, metrics.json, training curves, reliability diagrams). With --task two_attempt:
    the two-attempt format of the arithmetic task, reporting first- and second-attempt accuracy over
    sampling budgets (attempts.png)."""
    from bae.embedded.demo import TASKS, run_demo

    if task not in TASKS:
        raise fail(f"unknown --task {task!r}; choose from {' | '.join(TASKS)}")
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip()) or None
    if methods.strip() and chosen is None:
        raise fail(f"--methods {methods!r} names no method; leave it out to run all of the task's")
    try:
        run_demo(out_dir, steps=steps, seed=seed, methods=chosen, task=task)
    except ValueError as err:
        raise fail(err) from None


@app.command()
def baselines(
    prompts: int = typer.Option(16, min=1, help="prompts in the synthetic batch"),
    group: int = typer.Option(8, min=1, help="completions per prompt (G)"),
    seed: int = typer.Option(0, help="random seed"),
    out_dir: str = typer.Option("runs/baselines", help="report folder of the batch's evaluation"),
) -> None:
    """Score a synthetic batch of the arithmetic task, print the per-block advantages of every
    baseline split by the solution outcome (the stratum OCB conditions on), and evaluate the batch
    with the same code path as `bae eval` (report in OUT_DIR)."""
    from bae import tasks
    from bae.evaluation import evaluate_generations

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
    rows = [{"prompt_id": str(i), "completion": t, "gold": g} for i, t, g in zip(ids, texts, golds)]
    metrics = evaluate_generations(rows, task, out_dir, bootstrap=200, seed=seed)["metrics"]
    console.print("evaluation of the batch: " + figures_line(metrics, ("accuracy", "auroc", "ece", "brier")))
    console.print(f"report: {out_dir}/report.md")


@app.command()
def train(
    config: str = typer.Option(..., "--config", "-c", help="YAML config (see configs/)"),
    resume: bool = typer.Option(False, help="continue the run in the config's output_dir from its last checkpoint"),
) -> None:
    """Train a policy with BAE (or the scalar RLVR / RLCR / GDPO baselines) on TRL, from a YAML config."""
    from bae.runs.config import ConfigError, load

    try:
        cfg = load(config)  # every key checked before any compute
    except ConfigError as err:
        raise fail(err) from None
    try:
        cfg.check_files()
    except ConfigError as err:
        raise fail(f"{config}: {err}") from None
    from bae.embedded import train as run_training

    try:
        result = run_training(cfg, resume=resume)
    except ValueError as err:
        raise fail(err) from None
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun / accelerate launch the main process reports
    for warning in result.get("warnings", []):
        warn(f"final evaluation: {warning}")
    shown = ("accuracy", "auroc", "ece", "brier") + (("abstain_rate",) if cfg.task.build().config.abstain else ())
    console.print("final evaluation: " + figures_line(result["metrics"], shown))
    console.print(f"run folder: {cfg.output_dir}")


@app.command("prepare-data")
def prepare_data(
    sources: list[str] = typer.Argument(..., help='.jsonl/.json/.parquet files or "hf:<id>[:split]", each with optional '
                                        '"#problem_key=..,answer_key=..,answer_format=boxed,problem_format=dapo,config=..,limit=..,name=.."'),
    out: str = typer.Option(..., help="JSON Lines file to write ({id, problem, answer})"),
    problem_key: str = typer.Option("problem", help="default problem column"),
    answer_key: str = typer.Option("answer", help="default answer column"),
    limit: Optional[int] = typer.Option(None, min=1, help="keep at most LIMIT prompts"),
    seed: int = typer.Option(0, help="shuffle seed"),
    shuffle: bool = typer.Option(True, "--shuffle/--no-shuffle"),
    dedupe: bool = typer.Option(True, "--dedupe/--no-dedupe", help="drop repeated problems (first one wins)"),
    verl_task: Optional[str] = typer.Option(None, help="also write verl's parquet layout (OUT with .parquet) for this bae task"),
) -> None:
    """Build training prompts from local files or Hugging Face datasets (the MATH + DAPO mix: see README)."""
    from pathlib import Path

    from bae.runs.data import DataError, prepare, to_verl_parquet

    try:
        console.print(str(prepare(sources, out, problem_key=problem_key, answer_key=answer_key, limit=limit,
                                  seed=seed if shuffle else None, dedupe=dedupe)))
        if verl_task:
            parquet = Path(out).with_suffix(".parquet")
            console.print(f"wrote {to_verl_parquet(out, parquet, task=verl_task)} rows to {parquet}")
    except DataError as err:
        raise fail(err) from None


def parse_task_options(items: list[str]) -> dict:
    """`--task-option key=value` pairs: the value is read as YAML (numbers, booleans, null), and
    an empty value is the empty string (`system_prompt=` for no system prompt)."""
    import yaml

    options = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--task-option {item!r}: expected key=value, e.g. confidence_reward=bce")
        options[key.strip()] = "" if value == "" else yaml.safe_load(value)
    return options


def _tiny_task(task: Optional[str], options: dict):
    """The task the tiny policy is warm-started for: the given one (default arithmetic), with the
    embedded default's options (no system prompt) under the given ones."""
    from bae import tasks
    from bae.embedded import default_task_options

    base = default_task_options() if task is None or not task.lower().endswith((".yaml", ".yml", ".json")) else {}
    return tasks.load(task or "arithmetic", **{**{k: v for k, v in base.items() if k == "system_prompt"}, **options})


@app.command("eval")
def eval_command(
    task: Optional[str] = typer.Option(None, help="task that builds the prompts and scores the completions: a built-in "
                                       "name (self_confidence, boxed for plain \\boxed{} answers, two_attempt, arithmetic, "
                                       "...) or a YAML task file; default: the task recorded in the model folder, else "
                                       "self_confidence"),
    task_option: list[str] = typer.Option([], "--task-option", help="task option key=value (repeatable), e.g. "
                                          "confidence_reward=bce or system_prompt= (none)"),
    model: Optional[str] = typer.Option(None, help='model to sample: a local folder, a hub id, or "tiny"'),
    data: Optional[str] = typer.Option(None, help='eval set: math500 | gsm8k | aime (shipped), a .jsonl/.json/.parquet file with '
                                       'problem and answer, or "synthetic"'),
    generations: Optional[str] = typer.Option(None, help="score this generations file (JSON Lines: prompt_id, completion, gold; "
                                              "optional confidence, problem) instead of sampling"),
    confidence_transform: str = typer.Option("none", help="how a generations row's confidence becomes a probability: none "
                                             "(it is one, in [0, 1]) | sigmoid (a raw score, e.g. a reward model's) | "
                                             "percent (0-100)"),
    n: int = typer.Option(16, help="samples per prompt (paper: 16)"),
    temperature: float = typer.Option(1.0, help="sampling temperature (paper: 1.0; 0 is greedy)"),
    max_new_tokens: int = typer.Option(1024, help="longest completion in tokens"),
    limit: Optional[int] = typer.Option(None, help="only the first LIMIT prompts"),
    seed: int = typer.Option(0, help="seed of sampling, bootstrap and subsets"),
    out_dir: str = typer.Option("runs/eval", help="report folder"),
    bootstrap: int = typer.Option(1000, help="bootstrap resamples for standard errors (paper: 1000)"),
    batch_size: int = typer.Option(16, help="sequences per generate call"),
    backend: str = typer.Option("auto", help="auto | transformers | vllm"),
    target_accuracy: float = typer.Option(0.9, help="accuracy the selective-prediction threshold must reach"),
) -> None:
    """Evaluate a model (sampled n times per prompt) or a generations file: accuracy, calibration
    (ECE, AUROC, Brier), test-time scaling and selective prediction, written to a report folder."""
    from pathlib import Path

    from bae.evaluation import EvalConfig, run_eval

    try:
        options = parse_task_options(task_option)
        if model == "tiny":  # the embedded policy, warm-started once into OUT_DIR/warm_start
            from bae.embedded import resolve_model

            model = resolve_model(model, Path(out_dir) / "warm_start", _tiny_task(task, options), seed=seed)
        config = EvalConfig(task=task, task_options=options, model=model, data=data, generations=generations,
                            confidence_transform=confidence_transform, n=n,
                            temperature=temperature, max_new_tokens=max_new_tokens, limit=limit, seed=seed,
                            out_dir=out_dir, bootstrap=bootstrap, batch_size=batch_size, backend=backend,
                            target_accuracy=target_accuracy)
        metrics = run_eval(config)
    except (ValueError, FileNotFoundError) as err:  # bad config or input: say what, no traceback
        raise fail(err) from None
    for warning in metrics.get("warnings", []):
        warn(warning)
    table = Table(title=f"bae eval: {metrics['task']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("se", justify="right")
    for name in ("accuracy", "auroc", "ece", "brier", "malformed_rate"):
        table.add_row(name, *figure_cells(metrics.get("metrics", {}).get(name)))
    console.print(table)
    console.print(f"report: {out_dir}/report.md")


@app.command()
def fidelity(
    model: str = typer.Option("tiny", help='"tiny" (warm-started once into OUT_DIR/warm_start), a model folder, or a hub id'),
    task: Optional[str] = typer.Option(None, help="two-block task whose second block is compared (a built-in name or a "
                                       "YAML task file); default: the model folder's recorded task, else arithmetic"),
    task_option: list[str] = typer.Option([], "--task-option", help="task option key=value (repeatable)"),
    data: Optional[str] = typer.Option(None, help="eval set: math500 | gsm8k | aime (shipped) or a .jsonl/.json/.parquet file with problem and answer; default: synthetic arithmetic"),
    prompts: int = typer.Option(32, help="P prompts (paper: 100)"),
    group: int = typer.Option(8, help="G of the main table"),
    continuations: int = typer.Option(16, help="M continuations of block 2 per prefix (paper: 32)"),
    sweep: str = typer.Option("4,8,16,32", help="comma-separated group sizes, all from one pool of the largest"),
    temperature: float = typer.Option(1.0, help="sampling temperature (paper: 1.0)"),
    max_new_tokens: int = typer.Option(64, help="token budget of a completion"),
    seed: int = typer.Option(0, help="seed of problems, sampling and bootstrap"),
    bootstrap: int = typer.Option(1000, help="bootstrap resamples over prompts (RMSE standard errors)"),
    batch_size: int = typer.Option(512, help="sequences per generate call"),
    out_dir: str = typer.Option("runs/fidelity", help="report folder"),
    outcome_strata: str = typer.Option("answer_class", help="comma-separated other outcomes to stratify by: each "
                                       "ocb* baseline is also reported as <baseline>@<outcome> ('' for none)"),
) -> None:
    """Fidelity of every advantage estimator against Monte-Carlo reference advantages (paper Sec. 5.1):
    RMSE and bias per stratum (correct / incorrect / malformed prefix) and over group sizes; report in OUT_DIR."""
    from bae.fidelity import STRATA, FidelityConfig, run_fidelity

    try:
        try:
            sizes = tuple(int(g) for g in sweep.split(",") if g.strip())
        except ValueError:
            raise ValueError(f"--sweep must be comma-separated integers such as 4,8,16,32, got {sweep!r}") from None
        options = parse_task_options(task_option)
        if model == "tiny":  # the embedded policy, warm-started once into OUT_DIR/warm_start
            from pathlib import Path

            from bae.embedded import resolve_model

            model = resolve_model(model, Path(out_dir) / "warm_start", _tiny_task(task, options), seed=seed)
        config = FidelityConfig(model=model, task=task, task_options=options, data=data, prompts=prompts, group=group,
                                continuations=continuations, sweep=sizes, temperature=temperature,
                                max_new_tokens=max_new_tokens, seed=seed, bootstrap=bootstrap,
                                batch_size=batch_size, out_dir=out_dir,
                                outcome_strata=tuple(o.strip() for o in outcome_strata.split(",") if o.strip()))
        result = run_fidelity(config)
    except (ValueError, FileNotFoundError) as err:
        raise fail(err) from None
    estimators = result["groups"][str(group)]["estimators"]
    sizes = {s: summary["n"] for s, summary in next(iter(estimators.values())).items() if s in STRATA}
    shown = [s for s in STRATA if sizes[s]]  # strata with samples
    table = Table(title=f"bae fidelity: block-2 RMSE against the MC advantage, G = {group} (bias: report.md)")
    table.add_column("estimator")
    for stratum in shown:
        table.add_column(f"{stratum} (n = {sizes[stratum]})", justify="right")
    for name, per in estimators.items():
        table.add_row(name, *(f"{per[s]['rmse']:.3f} ± {per[s]['rmse_se']:.3f}" for s in shown))
    console.print(table)
    console.print(f"report: {out_dir}/report.md")


def main(argv: Optional[list[str]] = None) -> None:  # pragma: no cover
    app(argv)


if __name__ == "__main__":  # python -m bae.cli
    app()
