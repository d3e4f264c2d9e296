"""Step-time overhead of bae+ocb (BlockwiseGRPOTrainer) over plain GRPO on the same tiny TRL run.

    python benchmarks/overhead.py [--steps 20] [--rounds 3] [--threads 1]

Both runs start from the same warm-started tiny policy with the same seed, prompts and GRPOConfig,
with learning rate 0: the policy stays fixed, so both trainers sample exactly the same completions
and do the same generation, forward and backward work (otherwise their policies drift apart and
the step time mostly measures how long each one's completions happen to be). Plain GRPO scores each completion with the same task (its scalar reward is the sum of the block
rewards, the RLCR reward), so the difference is what BAE adds: per-token offsets, block ids, block
advantages and per-token weights. The two trainers alternate for `rounds` rounds; the figure is the
median of TRL's logged `step_time` over all steps after the first of each run, and the ratio is
measured within this one process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    import datasets
    import torch
    from datasets import Dataset
    from transformers.utils import logging as hf_logging
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOTrainer

    from bae import tasks
    from bae.engines.trl import BlockwiseGRPOTrainer, paper_grpo_config
    from bae.tasks.arithmetic import generate
    from bae.embedded.warmstart import WarmStartConfig, warm_start

    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    work = tempfile.mkdtemp(prefix="bae-overhead-")
    policy = str(warm_start(WarmStartConfig(examples=4000, max_steps=300, seed=0), os.path.join(work, "policy")))
    task = tasks.get("arithmetic", system_prompt="")
    data = Dataset.from_list([{"prompt": task.format_prompt(r["problem"]), "answer": r["answer"]}
                              for r in generate(2000, seed=0, levels=(1, 2))])

    def scalar_reward(completions, answer, **_):
        return [sum(task.score(c[0]["content"], a).rewards) for c, a in zip(completions, answer)]

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "step_time" in logs:
                self.times.append(logs["step_time"])

    def run(kind: str) -> list[float]:
        config = paper_grpo_config(output_dir=os.path.join(work, kind), use_cpu=True, bf16=False, gradient_checkpointing=False,
                                   per_device_train_batch_size=args.batch, num_generations=8, max_completion_length=48,
                                   max_steps=args.steps, learning_rate=0.0, warmup_steps=0, logging_steps=1,
                                   report_to="none", save_strategy="no", disable_tqdm=True, seed=0)
        model = AutoModelForCausalLM.from_pretrained(policy)
        tokenizer = AutoTokenizer.from_pretrained(policy)
        times = StepTimes()
        if kind == "grpo":
            trainer = GRPOTrainer(model=model, reward_funcs=scalar_reward, args=config, train_dataset=data,
                                  processing_class=tokenizer, callbacks=[times])
        else:
            trainer = BlockwiseGRPOTrainer(model, task, config, data, tokenizer, method="bae", baseline="ocb", callbacks=[times])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        return times.times[1:]

    results = {"grpo": [], "bae+ocb": []}
    for _ in range(args.rounds):
        for kind in results:
            results[kind] += run(kind)
    grpo, bae = statistics.median(results["grpo"]), statistics.median(results["bae+ocb"])
    print(f"tiny policy, {args.batch} completions per step (groups of 8), {args.steps} steps x {args.rounds} rounds, "
          f"torch threads {args.threads}")
    print(f"plain GRPO (scalar task reward) median step time: {grpo * 1e3:8.1f} ms")
    print(f"bae+ocb (BlockwiseGRPOTrainer) median step time:  {bae * 1e3:8.1f} ms")
    print(f"ratio bae+ocb / GRPO: {bae / grpo:.3f}  (target <= 1.01)")


if __name__ == "__main__":
    main()
