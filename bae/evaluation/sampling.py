"""Sample n completions per prompt from a model, as generation rows for the report.

Engine: vLLM when it is importable and a CUDA GPU is present (as the paper), transformers
``generate`` otherwise (batched, left-padded, with a rich progress bar). ``backend`` forces one.

Sampling is plain ancestral sampling at ``temperature`` (top-k and top-p off, as vLLM's
defaults and the paper's T = 1.0); temperature 0 means greedy decoding (then the n samples are
identical). Prompts are the task's chat messages rendered with the tokenizer's chat template
(or, for a tokenizer without one, the message contents joined by blank lines).
"""

from __future__ import annotations

from contextlib import contextmanager

import importlib.util
from typing import Sequence

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

BACKENDS = ("auto", "transformers", "vllm")


def vllm_available() -> bool:
    """vLLM importable and a CUDA GPU present."""
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def load_transformers(model: str):
    """(model, tokenizer) from a local folder or a hub id, in the checkpoint's dtype, on the GPU
    when there is one; ValueError saying which model when neither loads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        policy = AutoModelForCausalLM.from_pretrained(model, dtype="auto")
    except (OSError, ValueError) as e:
        raise ValueError(
            f"model {model!r} is neither a folder holding a saved model nor a loadable hub id: {e}"
        ) from e
    return policy.to("cuda" if torch.cuda.is_available() else "cpu").eval(), tokenizer


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The prompt text: the chat template with the generation prompt, or the contents joined."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def _progress() -> Progress:
    return Progress(
        TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    )


@contextmanager
def sampling_state(policy, tokenizer, seed: int):
    """Eval mode, left padding (EOS as pad token if none) and a forked torch generator seeded
    with ``seed`` for the block; the policy's mode, the tokenizer's padding side and pad token and
    the caller's random state (a training loop's) are restored afterwards."""
    device = next(policy.parameters()).device
    was_training, side, pad = policy.training, tokenizer.padding_side, tokenizer.pad_token
    policy.eval()
    tokenizer.padding_side = "left"  # decoder-only generation pads on the left
    if pad is None:
        tokenizer.pad_token = tokenizer.eos_token
    cuda = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            yield device
    finally:
        policy.train(was_training)
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = None


def generate_transformers(
    policy, tokenizer, prompts: Sequence[str], n: int, temperature: float, max_new_tokens: int,
    batch_size: int = 16, seed: int = 0, progress: bool = True,
) -> list[list[str]]:
    """n completions per prompt with ``generate``; returns [P][n] texts.

    Each prompt is repeated n times and the repeats are cut into batches of ``batch_size``
    sequences, left-padded. Sampling draws from a forked torch generator seeded with ``seed``,
    so a run is reproducible on one machine and library version and the caller's random state
    (a training loop's) is left as it was; so are the policy's train/eval mode and the
    tokenizer's padding side and pad token (EOS stands in for a missing one while sampling).
    """
    jobs = [(p, j) for p in range(len(prompts)) for j in range(n)]
    out: list[list[str]] = [[""] * n for _ in prompts]
    if temperature > 0:
        sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    else:
        sampling = dict(do_sample=False)  # greedy
    with sampling_state(policy, tokenizer, seed) as device, _progress() as bar:
        task = bar.add_task("sampling", total=len(jobs), visible=progress)
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            texts = [prompts[p] for p, _ in batch]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            ids = policy.generate(
                **enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
            )  # [b, prompt_len + new]
            decoded = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for (p, j), text in zip(batch, decoded):
                out[p][j] = text
            bar.advance(task, len(batch))
    return out


def generate_vllm(
    model: str, prompts_messages: Sequence[list[dict]], n: int, temperature: float,
    max_new_tokens: int, seed: int = 0,
) -> list[list[str]]:
    """n completions per prompt with vLLM (its own progress bar); returns [P][n] texts."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, seed=seed)
    tokenizer = llm.get_tokenizer()
    prompts = [render_prompt(tokenizer, m) for m in prompts_messages]
    params = SamplingParams(n=n, temperature=temperature, max_tokens=max_new_tokens, seed=seed)
    outputs = llm.generate(prompts, params, use_tqdm=True)
    return [[o.text for o in result.outputs] for result in outputs]


def sample_rows(
    model,
    task,
    rows: Sequence[dict],
    *,
    n: int,
    temperature: float,
    max_new_tokens: int,
    seed: int = 0,
    batch_size: int = 16,
    backend: str = "auto",
    progress: bool = True,
) -> list[dict]:
    """Sample n completions for each eval-set row ({"id", "problem", "answer"}).

    ``model`` is a local folder or a hub id (resolve "tiny" with ``resolve_model`` first), or an
    already loaded (policy, tokenizer) pair, as a training loop holds (sampled with transformers).
    Returns generation rows {"prompt_id", "problem", "completion", "gold", "sample"}, prompts in
    input order and samples 0..n-1 within each.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    messages = [task.format_prompt(r["problem"]) for r in rows]
    loaded = isinstance(model, tuple)
    use_vllm = not loaded and (backend == "vllm" or (backend == "auto" and vllm_available()))
    if use_vllm:
        texts = generate_vllm(model, messages, n, temperature, max_new_tokens, seed)
    else:
        policy, tokenizer = model if loaded else load_transformers(model)
        prompts = [render_prompt(tokenizer, m) for m in messages]
        texts = generate_transformers(policy, tokenizer, prompts, n, temperature, max_new_tokens,
                                      batch_size, seed, progress)
    return [
        {"prompt_id": r["id"], "problem": r["problem"], "completion": text, "gold": r["answer"], "sample": j}
        for r, samples in zip(rows, texts)
        for j, text in enumerate(samples)
    ]
