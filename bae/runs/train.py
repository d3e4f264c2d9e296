"""`bae train`: one RL run from a validated TrainConfig, on TRL through BlockwiseGRPOTrainer.

    config -> policy (a folder, a hub id, or the warm-started tiny model) -> prompts (the built-in
    arithmetic generator, a JSON Lines file or a Hugging Face dataset) -> GRPOConfig -> trainer
    -> checkpoints every `checkpoint_interval` steps, log.jsonl, periodic and final evaluation
    (bae.evaluation, the code path of `bae eval`) -> final/ (the trained policy, saved atomically).

Resuming (`resume=True`) continues from the newest complete checkpoint in output_dir
(bae.runs.checkpoints: a checkpoint counts once bae's marker, written after the whole save, says so);
TRL's checkpoints hold the optimizer, scheduler and RNG states, so on CPU a run killed and resumed
ends with the same weights as an uninterrupted one (tests/test_train.py kills runs at every stage of
a save). Incomplete checkpoints newer than the one resumed from are removed (the resumed run writes
them again), and log.jsonl keeps only the steps up to the checkpoint. A finished run (final/ saved)
is not trained again: resuming it only completes its final evaluation if that is missing.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from bae.runs.checkpoints import last_checkpoint, marker_callback
from bae.io import atomic_write_text
from bae.runs.config import TrainConfig

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def load_prompts(config: TrainConfig) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out eval rows), each {"id", "problem", "answer"}.

    data.source: the arithmetic generator; a local file of any format bae reads prompts from
    (.jsonl, .json, .parquet: bae.evaluation.generations.read_prompts) or a hub dataset, with the
    problem and answer at data.problem_key / data.answer_key (dotted paths reach into nested
    values). data.eval_source (a shipped set or a file with problem and answer; bae prepare-data
    writes those) is read with the default keys: the keys name data.source's columns."""
    from bae.evaluation.generations import InputError, prompt_rows, read_prompts
    from bae.tasks.arithmetic import generate

    data = config.data
    if data.source == "arithmetic":
        # held out = drawn with another seed; not filtered against the training draws, since level 1
        # has only 100 distinct problems (filtering would leave only the harder levels)
        train = generate(data.limit or data.size, seed=config.seed, levels=data.levels)
        return train, generate(data.eval_size, seed=config.seed + 10_000, levels=data.levels)
    keys = dict(problem_key=data.problem_key, answer_key=data.answer_key)
    try:
        if data.source.startswith("hf:"):
            from bae.runs.data import load_hub

            where = f"{data.source}:{data.split}"
            ds = load_hub(data.source[3:], data.split, where=f"data.source {where}")
            records = ((f"{where}: row {i}", i, {**r, "id": str(i - 1)}) for i, r in enumerate(ds, start=1))
            train = prompt_rows(records, **keys, limit=data.limit, source=where)
        else:
            train = read_prompts(data.source, **keys, limit=data.limit)
    except InputError as err:
        raise ValueError(f"data.source: {err} (data.problem_key / data.answer_key name its columns)") from None
    try:
        held_out = read_prompts(data.eval_source, limit=config.eval.limit) if data.eval_source else train[: config.eval.limit]
    except InputError as err:
        raise ValueError(f"data.eval_source: {err}") from None
    return train, held_out


def batch_layout(config: TrainConfig) -> tuple[int, int]:
    """(per_device_train_batch_size, gradient_accumulation_steps) such that
    per_device x accumulation x processes == batch_size completions per optimizer step; either may
    be fixed in `trl:`, the other is derived. WORLD_SIZE is set by accelerate / torchrun."""
    for key in ("steps_per_generation", "generation_batch_size"):
        if key in config.trl:
            raise ValueError(f"trl.{key}: bae generates once per optimizer step; set batch_size instead")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_device = config.trl.get("per_device_train_batch_size")
    accumulation = config.trl.get("gradient_accumulation_steps")
    if per_device is None:
        accumulation = accumulation or 1
        per_device = config.batch_size // (world * accumulation)
    elif accumulation is None:
        accumulation = config.batch_size // (world * per_device)
    if per_device < 1 or accumulation < 1 or per_device * accumulation * world != config.batch_size:
        raise ValueError(f"batch_size {config.batch_size} != per_device_train_batch_size {per_device} x "
                         f"gradient_accumulation_steps {accumulation} x {world} processes: change trl.* or batch_size")
    return per_device, accumulation


def grpo_args(config: TrainConfig):
    """GRPOConfig: the paper's settings, then this config's, then its `trl` pass-through."""
    import torch

    from bae.engines.trl import paper_grpo_config

    on_gpu = torch.cuda.is_available()
    per_device, accumulation = batch_layout(config)
    settings: dict[str, Any] = dict(
        output_dir=config.output_dir,
        num_generations=config.group_size,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_steps=config.steps,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps,
        temperature=config.temperature,
        max_completion_length=config.max_completion_length,
        loss_type=config.loss_type,
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="steps",
        save_steps=config.checkpoint_interval,
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,  # our rich progress bar shows the block metrics instead
        use_cpu=not on_gpu,
        bf16=on_gpu,
        gradient_checkpointing=on_gpu,
    )
    return paper_grpo_config(**{**settings, **config.trl})


def _progress_callback(config: TrainConfig, task):
    """A rich progress bar (step, reward per block, accuracy, ECE) and log.jsonl of every log."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from transformers import TrainerCallback

    log_path = Path(config.output_dir) / "log.jsonl"
    names = task.block_names
    states_confidence = any("confidence" in b.fields for b in task.schema.blocks)  # else ECE means nothing

    class Callback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.description}"),
                                     disable=not state.is_world_process_zero)  # one bar under a launcher
            self.progress.start()
            self.bar = self.progress.add_task("", total=state.max_steps, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or not state.is_world_process_zero:
                return
            with open(log_path, "a") as f:  # one line a step, appended: survives a kill
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")
            if "bae/accuracy" not in logs:
                return  # the end-of-training summary: keep the last step's figures on the bar
            rewards = " ".join(f"{n} {logs.get(f'rewards/{n}_reward/mean', float('nan')):+.3f}" for n in names)
            ece = f" ece {logs['bae/ece']:.3f}" if states_confidence and "bae/ece" in logs else ""  # none stated: none shown
            self.progress.update(self.bar, completed=state.global_step,
                                 description=f"{rewards} acc {logs.get('bae/accuracy', float('nan')):.3f}{ece}")

        def on_train_end(self, args, state, control, **kwargs):
            self.progress.stop()

    return Callback()


def _eval_callback(config: TrainConfig, task, held_out: list[dict], tokenizer):
    """Evaluate the policy on the held-out prompts every `eval.every` steps (bae.evaluation)."""
    from transformers import TrainerCallback

    class Callback(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if config.eval.every and state.global_step % config.eval.every == 0 and state.global_step < state.max_steps:
                evaluate_policy(config, task, held_out, model, tokenizer, f"step-{state.global_step}",
                                write=state.is_world_process_zero)

    return Callback()


def evaluate_policy(config: TrainConfig, task, held_out: list[dict], model, tokenizer, name: str,
                    write: bool = True) -> dict:
    """Sample eval.n completions per held-out prompt and write output_dir/eval/<name>/: the report
    of bae eval and the sampled generations.jsonl (so the evaluation can be scored again).

    Under several processes every one samples (with ZeRO-3 each forward pass needs all of them) and
    only the main one writes (`write`)."""
    from bae.evaluation import evaluate_generations, write_generations
    from bae.evaluation.sampling import sample_rows

    rows = sample_rows((model, tokenizer), task, held_out[: config.eval.limit], n=config.eval.n,
                       temperature=config.eval.temperature, max_new_tokens=config.max_completion_length,
                       seed=config.seed, progress=False)
    folder = Path(config.output_dir) / "eval" / name
    if write:
        write_generations(rows, folder / "generations.jsonl")
    return evaluate_generations(rows, task, folder if write else None, bootstrap=config.eval.bootstrap, seed=config.seed)


def _save_atomically(trainer, task, folder: Path) -> None:
    """The trained policy, its tokenizer and its task record (bae.tasks.RECORD), as one folder.

    Every process calls save_model (ZeRO-3 gathers the weights from all of them) on the same
    staging folder; only the main process writes the rest and swaps it in, after the others are done,
    so another process can never swap in a folder without the weights."""
    import shutil

    from bae import tasks
    from bae.io import replace_dir

    accelerator = trainer.accelerator
    staging = folder.parent / f".{folder.name}.saving"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    trainer.save_model(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(staging))
        tasks.save_record(task, staging)
        replace_dir(staging, folder)
    accelerator.wait_for_everyone()


def _resume_point(config: TrainConfig, out: Path, main: bool = True) -> str:
    """The newest complete checkpoint of the run in `out`; says which newer ones it skipped and why,
    removes them, and cuts log.jsonl back to the checkpoint's step. Under a launcher the main
    process runs it first; the others (`main` False) then run it again, silently: they find the
    same checkpoint, nothing left to remove and the log already cut."""
    import shutil

    from rich.console import Console

    found = last_checkpoint(out) if out.is_dir() else None
    if found is None or found.checkpoint is None:
        skipped = "".join(f"; {Path(f).name} skipped: {why}" for f, why in (found.skipped if found else []))
        raise ValueError(f"--resume: no complete checkpoint in {out} (checkpoints are saved every "
                         f"{config.checkpoint_interval} steps){skipped}")
    console = Console(stderr=True, quiet=not main)
    for folder, why in found.skipped:
        console.print(f"[yellow]resume:[/] skipping {Path(folder).name}: {why}; removed (it will be saved again)")
        shutil.rmtree(folder)
    step = int(Path(found.checkpoint).name.split("-")[-1])
    console.print(f"resume: from {Path(found.checkpoint).name}")
    log = out / "log.jsonl"
    if log.is_file():  # steps after the checkpoint are trained again: keep one line per step
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if _logged_step(line) <= step]
        atomic_write_text(log, "".join(line + "\n" for line in kept))
    return found.checkpoint


def _logged_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError, TypeError):
        return 1 << 62  # a torn last line (killed mid-write): dropped with the steps after the checkpoint


def _finished(config: TrainConfig, out: Path, args) -> dict:
    """A finished run is not trained again: its final evaluation (run now only if it is missing).
    Under a launcher every process samples it alone, with the whole of final/ on its own device
    (no ZeRO-3: nothing would gather partitioned weights without a DeepSpeed engine), so no process
    waits long in a barrier; the main one writes."""
    from rich.console import Console

    main = args.process_index == 0
    Console(stderr=True, quiet=not main).print(
        f"resume: {out} is finished ({out / 'final'} is saved); nothing to train. To train it further, start a new "
        f"run from it: model: {out / 'final'}, another output_dir", soft_wrap=True)
    metrics = out / "eval" / "final" / "metrics.json"
    missing = not metrics.is_file()
    state = args.distributed_state if args.world_size > 1 else None
    if state:
        state.wait_for_everyone()  # all have looked before the main one writes it
    if missing:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config
        from transformers.utils import logging as hf_logging

        unset_hf_deepspeed_config()  # set by building args under a ZeRO-3 launch: load whole, sample unsynced
        hf_logging.disable_progress_bar()
        task = config.task.build()
        _, held_out = load_prompts(config)
        tokenizer = AutoTokenizer.from_pretrained(out / "final")
        model = AutoModelForCausalLM.from_pretrained(out / "final").to(args.device)
        result = evaluate_policy(config, task, held_out, model, tokenizer, "final", write=main)
    else:
        result = json.loads(metrics.read_text())
    if state:
        state.wait_for_everyone()
        state.destroy_process_group()  # as train() does at its end (pytorch/pytorch#190489)
    return result


def train(config: TrainConfig, resume: bool = False, policy: str | None = None) -> dict:
    """Run (or resume) one training run; returns the final evaluation's metrics.

    `policy`: the model folder or hub id to train (default: config.model). The name "tiny" is
    resolved by bae.embedded (bae.embedded.train, which `bae train` runs), not here."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from transformers.utils import logging as hf_logging

    from bae import tasks
    from bae.engines.trl import BlockwiseGRPOTrainer

    args = grpo_args(config)
    out = Path(config.output_dir)
    if resume and (out / "final" / "config.json").is_file():
        return _finished(config, out, args)
    # file work only, on the main process first (the others wait, then redo it idempotently): loading the
    # model stays outside, where every process runs it at once (under ZeRO-3 from_pretrained
    # partitions the weights, a collective)
    with args.main_process_first(local=False, desc="bae train setup"):
        if not resume and (out / "log.jsonl").exists():
            raise ValueError(f"{out} already holds a run: pass --resume to continue it, or choose another output_dir")
        checkpoint = _resume_point(config, out, main=args.process_index == 0) if resume else None
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", config.model_dump_json(indent=2))

    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars on every load and save
    task = config.task.build()
    train_rows, held_out = load_prompts(config)
    policy = policy or config.model
    if policy == "tiny":
        raise ValueError("model 'tiny' is the embedded policy: run bae.embedded.train(config) (as `bae train` does), "
                         "which warm-starts it first")
    try:
        tokenizer = AutoTokenizer.from_pretrained(policy)
        model = AutoModelForCausalLM.from_pretrained(policy)
    except (OSError, ValueError) as err:  # no such folder or hub id, offline, not a model: say so in one line
        raise ValueError(f"model {policy!r} cannot be loaded (neither a folder holding a saved model nor a reachable "
                         f"hub id): {' '.join(str(err).split())[:300]}") from None
    dataset = Dataset.from_list([{"prompt": task.format_prompt(r["problem"]), "answer": r["answer"]} for r in train_rows])
    trainer = BlockwiseGRPOTrainer(
        model, task, args, dataset, tokenizer, method=config.method, baseline=config.baseline,
        baseline_options=config.baseline_options, scale=config.scale,
        callbacks=[marker_callback(), _progress_callback(config, task), _eval_callback(config, task, held_out, tokenizer)],
    )
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the progress bar shows them
    trainer.train(resume_from_checkpoint=checkpoint)
    _save_atomically(trainer, task, out / "final")
    metrics = evaluate_policy(config, task, held_out, trainer.model, tokenizer, "final",
                              write=trainer.accelerator.is_main_process)
    trainer.accelerator.wait_for_everyone()  # the report is on disk before any process returns
    # gloo's threads outliving the interpreter abort the process at exit (pytorch/pytorch#190489)
    trainer.accelerator.end_training()
    return metrics
