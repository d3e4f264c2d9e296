"""GPU check: a few `bae train` steps of the TRL engine on CUDA with a ~0.5B random Qwen2.

    python benchmarks/gpu_check.py                        # CUDA, 4 steps, records into benchmarks/RESULTS.md
    python benchmarks/gpu_check.py --steps 8 --no-record
    python benchmarks/gpu_check.py --device cpu --size tiny --steps 1 --no-record   # code-path smoke test only

For a GPU machine without network or vLLM (e.g. one H200, 10 minutes a run). Never run in CI.

What it runs: `bae train`'s own code path, bae.runs.train.train(TrainConfig) -> BlockwiseGRPOTrainer
(method bae, OCB, the paper's GRPOConfig from bae.engines.trl.paper_grpo_config: bf16, gradient
checkpointing and the entropy controller on CUDA) on the built-in arithmetic prompts, with TRL's own
generation (transformers generate; no vLLM). The policy is a Qwen2 built here from a local
transformers config, randomly initialised, nothing downloaded: Qwen2-0.5B's shape (hidden 896,
24 layers, 14 heads, 2 KV heads, intermediate 4864, tied embeddings) with a locally built tokenizer:
bae's byte tokenizer (bae.embedded.tiny) padded with placeholder tokens to Qwen2's 151,936 ids
(`--vocab`), so that the logits cost what they cost with Qwen's vocabulary (494M parameters, as
Qwen2-0.5B). `--vocab 0` keeps the 269 byte-tokenizer ids (358M parameters). A random policy never
closes a tag or stops early: every completion runs to max_completion_length and is malformed, so the
rewards tie and the advantages are 0; the step still generates, scores, runs forward and backward and
steps the optimizer, which is what is timed.

Prints and writes (JSON, --json): the step time (TRL's logged step_time: generation, scoring, forward,
backward, optimizer), tokens/s (prompt + completion tokens of the step, TRL's num_tokens, divided by
its step time), both as the median over the steps after the first (the first pays for CUDA warm-up),
and the peak GPU memory (torch.cuda.max_memory_allocated over the whole run, the final evaluation
included). On CUDA it also replaces the table between the gpu_check markers in benchmarks/RESULTS.md
(unless --no-record). Without CUDA it refuses to run (exit 2) unless --device cpu is asked for.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- gpu_check:results -->", "<!-- /gpu_check:results -->"
QWEN2_VOCAB = 151_936

SIZES = {  # Qwen2 shapes: "0.5b" is Qwen2-0.5B's; "tiny" only exercises the code path
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, max_position_embeddings=32768, rope_theta=1_000_000.0),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, max_position_embeddings=2048, rope_theta=10_000.0),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (the check); cpu only to smoke-test the code path (with --size tiny)")
    parser.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    parser.add_argument("--vocab", type=int, default=QWEN2_VOCAB,
                        help="pad the byte tokenizer to this many ids (0: keep its own 269)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps (>= 2 for a median after warm-up)")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64, help="completions per optimizer step")
    parser.add_argument("--micro-batch", type=int, default=16, help="completions per forward/backward")
    parser.add_argument("--max-completion-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=None, help="run folder (default: a temporary one, removed after)")
    parser.add_argument("--json", default=str(ROOT / "runs" / "gpu_check" / "gpu_check.json"))
    parser.add_argument("--no-record", action="store_true", help="do not write the figures into benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size % args.group_size or args.batch_size % args.micro_batch:
        parser.error("--steps >= 1; --batch-size a multiple of --group-size and of --micro-batch")
    return args


def refuse(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(2)


def require_device(device: str) -> None:
    """Refuse, with the reason, to run the CUDA check where there is no CUDA device."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        refuse(f"gpu_check: no CUDA device is visible to torch {torch.__version__} (torch.cuda.is_available() is "
                 f"False, CUDA build: {torch.version.cuda}). This check measures a GPU: run it on a machine with one. "
                 "(--device cpu --size tiny --steps 1 --no-record only smoke-tests the code path.)")
    if device == "cpu" and torch.cuda.is_available():
        refuse("gpu_check: --device cpu asked for, but a CUDA device is visible, and `bae train` uses it when it is: "
                 "hide it (CUDA_VISIBLE_DEVICES=) for the CPU smoke test")


def build_policy(folder: Path, size: str, vocab: int, seed: int) -> dict:
    """Save a randomly initialised Qwen2 of `size` and its tokenizer (bae's byte tokenizer, padded
    with placeholder tokens to `vocab` ids) into `folder`; returns what was built."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from bae.embedded.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    base = len(tokenizer)
    if vocab and vocab > base:
        tokenizer.add_tokens([f"<|pad{i}|>" for i in range(vocab - base)])  # ordinary tokens: they decode to text
    config = Qwen2Config(vocab_size=len(tokenizer), tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, **SIZES[size])
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)  # fp32 weights: TRL's bf16 is mixed precision (autocast), as in `bae train`
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"parameters": sum(p.numel() for p in model.parameters()), "vocab": len(tokenizer),
            "byte_tokenizer_ids": base, **SIZES[size]}


def train_config(args: argparse.Namespace, policy: Path, out: Path):
    """The TrainConfig `bae train --config ...` would build for this check."""
    from bae.runs.config import parse

    return parse({
        "model": str(policy),
        "task": {"name": "arithmetic"},
        "data": {"source": "arithmetic", "size": max(args.batch_size // args.group_size * args.steps, 8), "eval_size": 2},
        "method": "bae", "baseline": "ocb",
        "group_size": args.group_size, "batch_size": args.batch_size, "steps": args.steps,
        "max_completion_length": args.max_completion_length, "seed": args.seed, "output_dir": str(out),
        "checkpoint_interval": args.steps + 1,  # no checkpoint inside the run: the step time is the step's
        "eval": {"every": 0, "n": 1, "limit": 2, "bootstrap": 0},
        "trl": {"per_device_train_batch_size": args.micro_batch, "dataloader_num_workers": 0},
    }, "gpu_check")


def step_figures(log_path: Path) -> list[dict]:
    """(step, step_time, tokens) of every training step in log.jsonl (tokens: this step's prompt +
    completion tokens, from TRL's cumulative num_tokens)."""
    rows, seen = [], 0.0
    for line in log_path.read_text().splitlines():
        entry = json.loads(line)
        if "step_time" not in entry or "num_tokens" not in entry:
            continue
        tokens = float(entry["num_tokens"]) - seen
        seen = float(entry["num_tokens"])
        rows.append({"step": entry["step"], "step_time_s": float(entry["step_time"]), "tokens": tokens,
                     "completion_length": entry.get("completions/mean_length")})
    return rows


def summarise(steps: list[dict]) -> dict:
    timed = steps[1:] if len(steps) > 1 else steps  # the first step pays for warm-up
    return {"steps_timed": len(timed),
            "step_time_s_median": statistics.median(s["step_time_s"] for s in timed),
            "tokens_per_s_median": statistics.median(s["tokens"] / s["step_time_s"] for s in timed),
            "tokens_per_step": statistics.median(s["tokens"] for s in timed)}


def record(result: dict, path: Path = RESULTS) -> None:
    """Replace the table between the gpu_check markers in RESULTS.md with this run's figures."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"gpu_check: {path} has no {BEGIN} ... {END} block to record into")
    r, p = result, result["policy"]
    per_step = ", ".join(f"{s['step_time_s']:.2f}" for s in r["per_step"])
    table = "\n".join([
        BEGIN,
        f"Measured {r['date']} on {r['device']} (torch {r['torch']}, CUDA {r['cuda']}), command "
        f"`python benchmarks/gpu_check.py {' '.join(r['argv'])}`:",
        "",
        "| policy | batch (group) | micro-batch | completion tokens | steps timed | step time (s) | tokens/s | peak GPU memory (GiB) |",
        "|---|---|---|---|---|---|---|---|",
        f"| Qwen2 {p['parameters'] / 1e6:.0f}M, vocab {p['vocab']} | {r['batch_size']} ({r['group_size']}) | {r['micro_batch']} | "
        f"{r['max_completion_length']} | {r['steps_timed']} of {r['steps']} | {r['step_time_s_median']:.2f} | "
        f"{r['tokens_per_s_median']:.0f} | {r['peak_memory_allocated_gib']:.1f} |",
        "",
        f"Per step (s): {per_step}; whole run (load, train, "
        f"save, final evaluation) {r['wall_s']:.0f} s; peak reserved {r['peak_memory_reserved_gib']:.1f} GiB.",
        END,
    ])
    path.write_text(re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: table, text, flags=re.S))


def main(argv=None) -> dict:
    args = parse_args(argv)
    require_device(args.device)
    import torch

    from bae.runs.train import train

    with tempfile.TemporaryDirectory(prefix="bae-gpu-check-") as tmp:
        out = Path(args.out_dir) if args.out_dir else Path(tmp) / "run"
        policy_dir = Path(tmp) / "policy"
        built = build_policy(policy_dir, args.size, args.vocab, args.seed)
        print(f"gpu_check: random Qwen2 of {built['parameters'] / 1e6:.1f}M parameters (vocab {built['vocab']}) "
              f"in {policy_dir}", flush=True)
        config = train_config(args, policy_dir, out)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        train(config)  # bae train's code path (bae.embedded.train resolves only the name "tiny")
        wall = time.perf_counter() - start
        steps = step_figures(out / "log.jsonl")
    if len(steps) != args.steps:
        raise SystemExit(f"gpu_check: expected {args.steps} logged steps, found {len(steps)}")
    on_cuda = args.device == "cuda"
    result = {
        "date": datetime.date.today().isoformat(),
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "device": torch.cuda.get_device_name() if on_cuda else platform.processor() or "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "policy": built, "steps": args.steps, "batch_size": args.batch_size, "group_size": args.group_size,
        "micro_batch": args.micro_batch, "max_completion_length": args.max_completion_length,
        **summarise(steps),
        "peak_memory_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if on_cuda else None,
        "peak_memory_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if on_cuda else None,
        "wall_s": wall, "per_step": steps,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    memory = f"{result['peak_memory_allocated_gib']:.2f} GiB" if on_cuda else "n/a (cpu)"
    print(f"gpu_check: step time {result['step_time_s_median']:.3f} s (median of {result['steps_timed']}), "
          f"{result['tokens_per_s_median']:.0f} tokens/s, peak GPU memory {memory}; wrote {args.json}", flush=True)
    if on_cuda and not args.no_record:
        record(result)
        print(f"gpu_check: recorded in {RESULTS}", flush=True)
    return result


if __name__ == "__main__":
    main()
