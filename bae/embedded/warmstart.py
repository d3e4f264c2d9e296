"""Supervised warm start of the embedded default: teach the tiny policy the block format.

    from bae.embedded.warmstart import WarmStartConfig, warm_start, measure
    path = warm_start(WarmStartConfig(), "runs/demo/warm")     # a folder AutoModelForCausalLM loads
    measure(path)                                               # format rate, accuracy, AUROC, ...

What: a short run of TRL's SFTTrainer on synthetic demonstrations of the "arithmetic" task (or of
"arithmetic_two_attempt", see "Two-attempt format" below), in the exact self-confidence format and kept short (every character is a token of the tiny tokenizer):

    <reasoning>23+7*4=51</reasoning><answer>51</answer><analysis>level 4</analysis><confidence>0.6</confidence>

Why the demonstrations look like this (the warm-started policy must be imperfect in both blocks, so
that the RL runs have something to improve in each):
- Solution block. The reasoning restates the expression and its result, the answer copies the
  result. A fraction ``wrong_rates[level - 1]`` of the demonstrations of each level states a wrong
  result (an off-by-a-little or off-by-ten slip), exactly that fraction (rounded) per level, so the
  policy imitates errors whose rate rises with difficulty; on top of that the short run leaves the
  model under-trained, and it errs more on the harder levels on its own.
- Confidence block. The analysis names the level (information the prompt already carries) and the
  confidence is drawn uniformly from ``confidences``, independently of the level and of whether the
  demonstrated answer is right (a random stream of its own: the confidences of a seed are the same
  whatever the wrong rates). So the warm-started confidence is not informative (AUROC near 0.5) and
  calibration must be learned by RL.

The prompts are ``task_of(config).format_prompt(problem)`` rendered by the tokenizer's chat
template. By default ``system_prompt=""``: no system prompt, because the task's ARITHMETIC_PROMPT
(~100 character tokens) doubles the cost of every step and, in our measurements, halves what the
tiny model learns in the same number of steps. RL and evaluation must use the same prompts:
build their task with ``task_of(config)`` (the config is saved beside the weights, RECORD).
The loss is on the completion only (TRL's prompt-completion conversational format).

Defaults (tuned on 2 CPU cores): 16000 demonstrations, one epoch (1000 steps of 16), levels (1, 2),
wrong rates 0.2 / 0.3 on levels 1 / 2: about a minute, and at T = 1 the policy is well-formed on
~99% of samples, right on ~39% (level 1 ~66%, level 2 ~8%), with confidence AUROC ~0.5.

Abstention (``abstain="unknown"``, for the reward ablation of paper Section 5.4): exactly
``abstain_rate`` (rounded) of each level's demonstrations decline to solve, with confidence
``abstain_confidence`` (0):

    <reasoning>23+7*4=?</reasoning><answer>unknown</answer><analysis>level 4</analysis><confidence>0</confidence>

drawn from a stream of their own, so every other demonstration is the one of ``abstain=None``. The
warm-started policy then abstains now and then, and RL decides whether refusing grows.

Two-attempt format (``task="arithmetic_two_attempt"``, paper Section 5.5): the completion is two
solution blocks, an attempt and a check, e.g.

    <reasoning>23+7=29</reasoning><answer>29</answer><reasoning>check 23+7=30</reasoning><answer>30</answer>

The first attempt is wrong at exactly the level's ``wrong_rates`` (the same problems, wrong picks and
slips as the self-confidence demonstrations of the same seed). The second attempt restates the
expression with its own answer: of each level's wrong first attempts exactly ``fix_rate`` (rounded)
are fixed (the true value), the others repeat the wrong answer; of each level's right first attempts
exactly ``break_rate`` (rounded) are broken (a new slip), the others repeat the right answer. So the
warm-started checker is imperfect both ways (it fixes some errors, misses others, breaks some right
answers) and RL with the shaped second reward has something to improve. These draws use a stream
of their own, so the first attempts of a seed do not depend on fix_rate and break_rate.

Reproducibility: the problems, wrong answers and confidences are drawn from ``seed`` with Python's
``random``; the model initialisation and TRL's shuffling use ``seed`` too, so on one machine and
library version two runs give the same weights. The result is saved atomically (written into a
temporary folder beside ``out_dir``, then renamed into place).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bae import tasks
from bae.io import save_pretrained_dir
from bae.tasks import arithmetic

RECORD = "warmstart.json"  # beside the weights: the config (system prompt included) and TRL's train metrics
CONFIDENCES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


CHECKS = ("restate", "steps")


@dataclass(frozen=True)
class WarmStartConfig:
    """What the warm start trains on and how."""

    task: str = "arithmetic"
    """Task name for bae.tasks.get: its system prompt and format are the demonstrations'."""
    system_prompt: str | None = ""
    """Replaces the task's system prompt when given ("" for none); RL and evaluation must then use
    the same task (``task_of(config)``)."""
    examples: int = 16000
    """Number of demonstrations (one per generated problem)."""
    levels: tuple[int, ...] = (1, 2)
    """Difficulty levels of the problems, drawn uniformly (bae.tasks.arithmetic)."""
    wrong_rates: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5)
    """Fraction of demonstrations with a wrong stated answer, for levels 1, 2, 3, 4."""
    confidences: tuple[float, ...] = CONFIDENCES
    """Demonstrated confidences, drawn uniformly and independently of correctness (self-confidence format)."""
    fix_rate: float = 0.5
    """Two-attempt format: fraction of each level's wrong first attempts that the second attempt fixes."""
    break_rate: float = 0.1
    """Two-attempt format: fraction of each level's right first attempts that the second attempt breaks."""
    check: str = "restate"
    """Two-attempt format: how the second attempt works. "restate": it restates the expression with
    its answer, the same computation as the first; "steps": a two-digit operand is split into tens
    and units, one easier step each ("check 23+40=63,63+7=70"; single digits are restated)."""
    abstain: str | None = None
    """The task's abstention answer (e.g. "unknown", TaskConfig.abstain); None: the policy never abstains."""
    abstain_rate: float = 0.1
    """With ``abstain``: fraction of each level's demonstrations that abstain (self-confidence format)."""
    abstain_confidence: float = 0.0
    """The confidence an abstaining demonstration states: 0, the honest value for an answer that cannot be right."""
    epochs: float = 1.0
    """Passes over the demonstrations (ignored when max_steps > 0)."""
    max_steps: int = -1
    """Optimizer steps; -1 runs ``epochs`` passes."""
    learning_rate: float = 3e-3
    batch_size: int = 16
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    seed: int = 0
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256

    def __post_init__(self):
        if self.examples < 1:
            raise ValueError(f"examples must be >= 1, got {self.examples}")
        if len(self.wrong_rates) != len(arithmetic.LEVELS):
            raise ValueError(f"wrong_rates: need one rate per level {arithmetic.LEVELS}, got {self.wrong_rates}")
        if any(not 0.0 <= r <= 1.0 for r in self.wrong_rates):
            raise ValueError(f"wrong_rates must lie in [0, 1], got {self.wrong_rates}")
        if not self.confidences or any(not 0.0 <= q <= 1.0 for q in self.confidences):
            raise ValueError(f"confidences must be a non-empty tuple of values in [0, 1], got {self.confidences}")
        for name in ("fix_rate", "break_rate", "abstain_rate", "abstain_confidence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.check not in CHECKS:
            raise ValueError(f"check must be one of {CHECKS}, got {self.check!r}")
        if self.abstain is not None and self.task == "arithmetic_two_attempt":
            raise ValueError("abstain: the two-attempt demonstrations have no abstentions; use task='arithmetic'")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError("give epochs > 0 or max_steps > 0")


def _expression(problem: str) -> str:
    """'What is 23 + 7 * 4?' -> '23+7*4'."""
    text = problem.strip()
    if text.startswith("What is "):
        text = text[len("What is "):]
    return text.rstrip("?").replace(" ", "")


def wrong_answer(value: int, rng: random.Random) -> int:
    """A plausible slip: the true value off by 1, 2 or 10, never negative, never the true value."""
    choices = [value + d for d in (-10, -2, -1, 1, 2, 10) if value + d >= 0]
    return rng.choice(choices)


def format_confidence(q: float) -> str:
    return f"{q:g}"


def demonstration(problem: str, stated: str, level: int, confidence: float, abstain: bool = False) -> str:
    """The completion text of one demonstration, in the task's block format; an abstaining one
    (``stated`` is then the abstention answer) leaves the result open: "23+7=?"."""
    result = "?" if abstain else stated
    return (
        f"<reasoning>{_expression(problem)}={result}</reasoning><answer>{stated}</answer>"
        f"<analysis>level {level}</analysis><confidence>{format_confidence(confidence)}</confidence>"
    )


def check_steps(expression: str, result: str) -> str:
    """The "steps" check of ``expression`` ending in ``result``: "23+47" -> "23+40=63,63+7=70",
    "83-47" -> "83-40=43,43-7=36" (the tens step is computed right, a slip is in the last step, as
    ``result`` says); an expression without a two-digit second operand is restated ("3+4=7")."""
    for op in "+-":
        left, sep, right = expression.partition(op)
        if sep and left.isdigit() and right.isdigit() and len(right) == 2 and right[1] != "0":
            tens, units = int(right[0]) * 10, int(right[1])
            middle = int(left) + tens if op == "+" else int(left) - tens
            return f"{left}{op}{tens}={middle},{middle}{op}{units}={result}"
    return f"{expression}={result}"


def two_attempt_demonstration(problem: str, first: str, second: str, check: str = "restate") -> str:
    """The completion text of one two-attempt demonstration: an attempt, then a check (``check``:
    "restate" or "steps", see WarmStartConfig.check)."""
    expression = _expression(problem)
    worked = check_steps(expression, second) if check == "steps" else f"{expression}={second}"
    return (
        f"<reasoning>{expression}={first}</reasoning><answer>{first}</answer>"
        f"<reasoning>check {worked}</reasoning><answer>{second}</answer>"
    )


def is_two_attempt(task: tasks.Task) -> bool:
    """Whether ``task`` has the two-attempt block format (two solution blocks, the shaped retry reward)."""
    return [b.reward for b in task.config.blocks] == ["correct", "retry"]


def task_of(config: WarmStartConfig) -> tasks.Task:
    """The task the demonstrations follow: ``config.task``, with ``config.system_prompt`` if given."""
    update = {} if config.system_prompt is None else {"system_prompt": config.system_prompt}
    if config.abstain is not None:
        update["abstain"] = config.abstain
    task = tasks.get(config.task)
    return tasks.from_config(task.config.model_copy(update=update)) if update else task


def make_demonstrations(config: WarmStartConfig) -> list[dict]:
    """The demonstrations of ``config``: rows of the arithmetic generator plus
    ``prompt`` (chat messages), ``completion`` (text), ``stated`` (the demonstrated answer),
    ``wrong`` (stated != gold) and ``confidence``; for a two-attempt task the rows of
    ``_two_attempt_demonstrations`` instead (no confidence; the second attempt's answer).

    Three independent random streams derived from ``seed``: the problems, which demonstrations are
    wrong (exactly round(rate * count) of each level's, and the slips), and the confidences."""
    task = task_of(config)
    rows = arithmetic.generate(config.examples, seed=config.seed, levels=config.levels)
    wrong_rng = random.Random(f"warmstart-wrong-{config.seed}")
    confidence_rng = random.Random(f"warmstart-confidence-{config.seed}")
    wrong: set[int] = set()
    for level in sorted(set(config.levels)):
        indices = [i for i, r in enumerate(rows) if r["level"] == level]
        k = round(config.wrong_rates[level - 1] * len(indices))
        wrong.update(wrong_rng.sample(indices, k))
    if is_two_attempt(task):
        return _two_attempt_demonstrations(config, task, rows, wrong, wrong_rng)
    abstaining: set[int] = set()
    if config.abstain is not None:  # a stream of its own: the other demonstrations stay those of abstain=None
        abstain_rng = random.Random(f"warmstart-abstain-{config.seed}")
        for level in sorted(set(config.levels)):
            indices = [i for i, r in enumerate(rows) if r["level"] == level]
            abstaining.update(abstain_rng.sample(indices, round(config.abstain_rate * len(indices))))
    out = []
    for i, row in enumerate(rows):
        stated = str(wrong_answer(int(row["answer"]), wrong_rng)) if i in wrong else row["answer"]
        q = confidence_rng.choice(config.confidences)
        if i in abstaining:
            stated, q = config.abstain, config.abstain_confidence
        out.append({
            **row,
            "prompt": task.format_prompt(row["problem"]),
            "completion": demonstration(row["problem"], stated, row["level"], q, abstain=i in abstaining),
            "stated": stated,
            "wrong": i in wrong or i in abstaining,
            "abstained": i in abstaining,
            "confidence": q,
        })
    return out


def _two_attempt_demonstrations(config: WarmStartConfig, task: tasks.Task, rows: list[dict], wrong: set[int],
                                wrong_rng: random.Random) -> list[dict]:
    """Rows plus ``prompt``, ``completion``, ``stated`` / ``wrong`` (the first attempt, as in the
    self-confidence format), ``second`` / ``second_wrong`` (the second attempt) and ``change``
    ("kept", "fixed" or "broken"). Exactly round(fix_rate * n) of each level's n wrong first
    attempts are fixed and round(break_rate * m) of its m right ones broken."""
    firsts = [str(wrong_answer(int(r["answer"]), wrong_rng)) if i in wrong else r["answer"] for i, r in enumerate(rows)]
    second_rng = random.Random(f"warmstart-second-{config.seed}")
    fixed: set[int] = set()
    broken: set[int] = set()
    for level in sorted(set(config.levels)):
        bad = [i for i, r in enumerate(rows) if r["level"] == level and i in wrong]
        good = [i for i, r in enumerate(rows) if r["level"] == level and i not in wrong]
        fixed.update(second_rng.sample(bad, round(config.fix_rate * len(bad))))
        broken.update(second_rng.sample(good, round(config.break_rate * len(good))))
    out = []
    for i, (row, first) in enumerate(zip(rows, firsts)):
        if i in fixed:
            second, change = row["answer"], "fixed"
        elif i in broken:
            second, change = str(wrong_answer(int(row["answer"]), second_rng)), "broken"
        else:
            second, change = first, "kept"
        out.append({
            **row,
            "prompt": task.format_prompt(row["problem"]),
            "completion": two_attempt_demonstration(row["problem"], first, second, config.check),
            "stated": first,
            "wrong": i in wrong,
            "second": second,
            "second_wrong": second != row["answer"],
            "change": change,
        })
    return out


def _atomic_save(model, tokenizer, path: Path, record: dict, task: tasks.Task) -> Path:
    """Weights, tokenizer, the warm start's record and the task record (bae.tasks.RECORD: the task
    and prompt format the policy was taught, which `bae eval` and `bae fidelity` read)."""
    return save_pretrained_dir(path, tokenizer, model, files={
        RECORD: json.dumps(record, indent=1, default=str) + "\n", tasks.RECORD: task.config.model_dump_json(indent=1) + "\n"})


def warm_start(config: WarmStartConfig, out_dir: str | os.PathLike, *, log: bool = False) -> Path:
    """Build the tiny tokenizer and model, fine-tune on the demonstrations with TRL's SFTTrainer,
    and save both to ``out_dir`` (atomically; an existing folder is replaced). Returns the folder."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from bae.embedded.tiny import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_model(
        tokenizer, hidden_size=config.hidden_size, num_layers=config.num_layers, num_heads=config.num_heads,
        num_kv_heads=config.num_kv_heads, intermediate_size=config.intermediate_size, seed=config.seed,
    )
    if not log:
        import datasets

        datasets.disable_progress_bars()  # "Tokenizing train dataset" and friends
    demos = make_demonstrations(config)
    data = Dataset.from_list([
        {"prompt": d["prompt"], "completion": [{"role": "assistant", "content": d["completion"]}]} for d in demos
    ])
    out_dir = Path(out_dir)
    scratch = Path(tempfile.mkdtemp(prefix=".warmstart-trainer-"))
    try:
        args = SFTConfig(
            output_dir=str(scratch),
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,  # TRL defaults to gradient checkpointing: pure cost here
            fp16=False,
            report_to="none",
            save_strategy="no",
            logging_steps=25,
            disable_tqdm=not log,
            num_train_epochs=config.epochs,
            max_steps=config.max_steps,
            per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=1,
            learning_rate=config.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=config.warmup_ratio,
            weight_decay=config.weight_decay,
            seed=config.seed,
            data_seed=config.seed,
            max_length=512,
            completion_only_loss=True,
            dataloader_num_workers=0,
            dataset_num_proc=None,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        if not log:
            from transformers import PrinterCallback

            trainer.remove_callback(PrinterCallback)  # it prints every log dict
        result = trainer.train()
        model = trainer.model.eval()
        record = {"config": asdict(config), "train": {k: v for k, v in result.metrics.items()}}
        return _atomic_save(model, tokenizer, out_dir, record, task_of(config))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure(path: str | os.PathLike, config: WarmStartConfig = WarmStartConfig(), *, prompts: int = 100,
            n: int = 4, temperature: float = 1.0, max_new_tokens: int = 64, seed: int = 12345,
            levels: tuple[int, ...] | None = None, batch_size: int = 64) -> dict:
    """Sample ``n`` completions at ``temperature`` for ``prompts`` held-out problems (generated with
    ``seed``, levels of ``config`` unless given), prompted as ``task_of(config)``, and return the
    figures of a warm start: format rate (well-formed), abstention rate, accuracy overall and per
    level, mean confidence and AUROC of confidence (a missing confidence counts as 0.0, as in bae eval)."""
    from bae.metrics import auroc
    from bae.evaluation.sampling import load_transformers, sample_rows

    t = task_of(config)
    levels = config.levels if levels is None else levels
    rows = arithmetic.generate(prompts, seed=seed, levels=levels)
    level_of = {r["id"]: r["level"] for r in rows}
    policy, tokenizer = load_transformers(str(path))
    start = time.perf_counter()
    samples = sample_rows((policy, tokenizer), t, rows, n=n, temperature=temperature,
                          max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    scores = [(level_of[s["prompt_id"]], t.score(s["completion"], s["gold"])) for s in samples]
    correct = [float(sc.correct) for _, sc in scores]
    conf = [0.0 if sc.confidence is None else sc.confidence for _, sc in scores]
    per_level = {}
    for level in sorted(set(levels)):
        c = [float(sc.correct) for lv, sc in scores if lv == level]
        per_level[level] = sum(c) / len(c) if c else math.nan
    parsed = [sc.confidence for _, sc in scores if sc.confidence is not None]
    by_prompt: dict[str, list[bool]] = {}
    for s, (_, sc) in zip(samples, scores):
        by_prompt.setdefault(s["prompt_id"], []).append(bool(sc.correct))
    mixed = sum(0 < sum(c) < len(c) for c in by_prompt.values()) / len(by_prompt)
    extra = {}
    if is_two_attempt(t):  # accuracy of the first attempt alone (the figures above are the final answer's)
        first = [float(t.score(s["completion"], s["gold"]).rewards[0] == 1.0) for s in samples]
        extra["first_accuracy"] = sum(first) / len(first)
    return {
        "samples": len(scores),
        "format_rate": sum(not sc.malformed for _, sc in scores) / len(scores),
        "abstain_rate": sum(sc.abstained for _, sc in scores) / len(scores),
        "accuracy": sum(correct) / len(correct),
        "accuracy_per_level": per_level,
        "mean_confidence": sum(parsed) / len(parsed) if parsed else math.nan,
        "auroc": auroc(conf, correct),
        "mixed_prompts": mixed,  # prompts whose n samples hold both correct and wrong ones
        "sampling_seconds": seconds,
        "examples": [s["completion"] for s in samples[:4]],
        **extra,
    }


if __name__ == "__main__":  # python -m bae.embedded.warmstart OUT_DIR [key=value ...]: warm start, then measure
    import ast
    import sys

    overrides = {}
    for arg in sys.argv[2:]:
        key, value = arg.split("=", 1)
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    cfg = WarmStartConfig(**overrides)
    start = time.perf_counter()
    folder = warm_start(cfg, sys.argv[1], log=True)
    train_seconds = time.perf_counter() - start
    figures = measure(folder, cfg)
    print(json.dumps({"config": asdict(cfg), "warm_start_seconds": train_seconds, **figures}, indent=1, default=str))
