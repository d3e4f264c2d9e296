"""BAE in one file: a few blockwise-advantage RL steps on the tiny offline policy, in plain PyTorch.

    python examples/bae_step.py                   # warm-starts the tiny policy first (about a minute)
    python examples/bae_step.py --model FOLDER    # a warm-started folder (e.g. runs/demo/warm_start)

One step, read top to bottom (paper: Pavlenko et al. 2026, Algorithm 1 and Section 4.2), for a
completion y = [X_1; X_2] (solution block, then confidence block):

    1. sample G completions per prompt from the policy         y_i ~ pi_old(. | x)
    2. score each block with the task                          r[i, k]; o[i, k] = outcome of X_<k
    3. blockwise advantages, OCB for block 2                   A[i, k] = r[i, k] - b_k(i)
    4. per-token advantages                                    adv[i, t] = A[i, k(t)] n_i / n_ik
    5. clipped policy loss, per-sequence token mean            L = -(1/N) sum_i (1/n_i) sum_t min(rho A, clip(rho) A)
    6. an optimizer step (EPOCHS of them on the same batch)

With the weights of step 4, the per-sequence token mean of step 5 is exactly the paper's L_BAE
(each block's token loss averaged within the block, blocks summed, completions averaged). The
library does each numbered part; this file only wires them together.

Where this departs from the paper:
    - the policy is the embedded tiny Qwen2 (~0.1M parameters, byte-level tokenizer) warm-started on
      synthetic arithmetic, not Qwen2.5-3B/7B on MATH + DAPO;
    - G = 8 completions per prompt and 4 prompts per step (paper: 32 and 64), at most 48 tokens;
    - AdamW at lr 2e-4 with no warm-up and no entropy controller (paper: 1e-6, 64 warm-up steps,
      target entropy 0.2); EPOCHS = 2 updates per sampled batch, so the second one is off-policy
      and the clip matters (the paper does one);
    - sampling with transformers `generate` on CPU, not vLLM.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import torch

from bae import tasks
from bae.advantages import blockwise_advantages
from bae.batch import score_completions
from bae.embedded import resolve_model
from bae.evaluation.sampling import load_transformers, render_prompt
from bae.objective import clipped_policy_loss, token_advantages
from bae.tasks import arithmetic

EPOCHS, CLIP = 2, 0.2


def sample(policy, tokenizer, prompts: list[str], group: int, max_new_tokens: int):
    """Step 1: G completions per prompt. Returns (input ids [N, P + T], prompt width P, completion
    ids per row, unpadded and up to EOS included)."""
    tokenizer.padding_side = "left"
    enc = tokenizer([p for p in prompts for _ in range(group)], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = policy.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                              max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)  # [N, P + T]
    width = enc["input_ids"].shape[1]
    completions = []
    for row in out[:, width:].tolist():
        end = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        completions.append([t for t in row[:end] if t != tokenizer.pad_token_id])
    return out, enc["attention_mask"], width, completions


def token_logps(policy, ids: torch.Tensor, prompt_mask: torch.Tensor, width: int, mask: torch.Tensor) -> torch.Tensor:
    """log pi(y_t | x, y_<t) of every completion token, [N, T] (0 where mask is 0)."""
    attention = torch.cat([prompt_mask, mask], 1)  # [N, P + T]
    logits = policy(input_ids=ids, attention_mask=attention).logits[:, width - 1 : -1]  # [N, T, V]
    logp = torch.log_softmax(logits.float(), -1).gather(2, ids[:, width:, None]).squeeze(2)  # [N, T]
    return logp * mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help='a warm-started folder, or "tiny" (warm-started here first)')
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", default=None, help="write every step's figures to this JSON file")
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    task = tasks.get("arithmetic", system_prompt="")  # the tiny policy's format: no system prompt
    with tempfile.TemporaryDirectory(prefix="bae-step-") as scratch:  # "tiny" is warm-started here, then loaded
        policy, tokenizer = load_transformers(resolve_model(args.model, scratch, task))
    policy.train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=0.0)
    problems = arithmetic.generate(args.steps * args.prompts, seed=args.seed, levels=(1, 2))
    log = []

    for step in range(args.steps):
        rows = problems[step * args.prompts : (step + 1) * args.prompts]
        prompts = [render_prompt(tokenizer, task.format_prompt(r["problem"])) for r in rows]
        golds = [r["answer"] for r in rows for _ in range(args.group)]
        groups = np.repeat(np.arange(len(rows)), args.group)  # [N]: completions of one prompt share a group

        # 1. sample
        policy.eval()
        ids, prompt_mask, width, completions = sample(policy, tokenizer, prompts, args.group, args.max_new_tokens)
        policy.train()
        t = ids.shape[1] - width
        mask = torch.tensor([[float(j < len(c)) for j in range(t)] for c in completions])  # [N, T]

        # 2. score each block: r[i, k], o[i, k], and the block of every sampled token
        scores, block_ids = score_completions(task, tokenizer, completions, golds)
        r = np.array([s.rewards for s in scores])  # [N, K]
        o = np.array([s.outcomes for s in scores])  # [N, K]: o[:, 1] = solution correct (-1: malformed)
        token_blocks = torch.full((len(completions), t), -1)  # [N, T]: -1 at padding
        for i, b in enumerate(block_ids):
            token_blocks[i, : len(b)] = torch.from_numpy(b)

        # 3. A[i, k] = r[i, k] - b_k(i): group mean for block 1, OCB (mean over the group members
        #    with the same solution outcome) for block 2
        A = blockwise_advantages(r, groups, o, baseline="ocb")  # [N, K]

        # 4. adv[i, t] = A[i, k(t)] n_i / n_ik: each block's tokens averaged within the block
        adv = token_advantages(A, token_blocks, aggregation="seq-mean-token-mean")  # [N, T]

        # 5-6. PPO-clip on the per-block-weighted advantages, EPOCHS updates on this batch
        with torch.no_grad():
            old = token_logps(policy, ids, prompt_mask, width, mask)  # log pi_old, [N, T]
        losses = []
        for _ in range(EPOCHS):
            logp = token_logps(policy, ids, prompt_mask, width, mask)
            loss = clipped_policy_loss(logp, old, adv, mask, clip_eps=CLIP)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())

        lengths = np.stack([np.bincount(b, minlength=task.num_blocks) for b in block_ids])  # [N, K]: n_ik
        log.append({"step": step + 1, "rewards": r.tolist(), "advantages": A.tolist(), "block_lengths": lengths.tolist(),
                    "losses": losses, "accuracy": float(np.mean([s.correct for s in scores])),
                    "malformed": float(np.mean([s.malformed for s in scores]))})
        print(f"step {step + 1}: reward solution {r[:, 0].mean():+.3f} confidence {r[:, 1].mean():+.3f}  "
              f"accuracy {log[-1]['accuracy']:.3f}  malformed {log[-1]['malformed']:.3f}  "
              f"loss {losses[0]:+.4f} -> {losses[-1]:+.4f}")
    if args.log:
        with open(args.log, "w") as f:
            json.dump(log, f)


if __name__ == "__main__":
    main()
