"""Scripted completions and an engine-free reference for the TRL engine's tests.

`Scripted` replaces generation by scripted completions (ragged lengths, well-formed and malformed,
correct and wrong, with and without EOS, a tag spelled letter by letter, a non-ASCII character,
abstentions), so a batch exercises every block case while scoring, advantages, padding, shuffling,
splitting and the loss are the trainer's and TRL's own. `reference` never uses the engine: it
decodes every prefix of the ids (exact, quadratic), scores with task.score, maps tokens with
bae.blocks.token_block_ids and computes advantages with bae.advantages.blockwise_advantages.

Shared by tests/test_engine_trl*.py (which import its fixtures) and by tests/trl_two_processes.py
(run under torchrun).
"""

import contextlib
import tempfile

import numpy as np
import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from bae import tasks
from bae.advantages import blockwise_advantages
from bae.blocks import token_block_ids
from bae.embedded.tiny import build_tokenizer
from bae.engines.trl import BlockwiseGRPOTrainer

G = 4  # group size
MAX_LEN = 64  # max_completion_length (scripted completions are at most ~50 tokens)
PROBLEMS = [("What is 3 + 4?", "7"), ("What is 12 + 9?", "21"), ("What is 8 - 5?", "3"), ("What is 6 + 6?", "12")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model gains nothing from intra-op threads, and on a loaded 2-core machine spinning
    threads made these tests ~20x slower; restored afterwards for the other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def task():
    return make_task()


@pytest.fixture(scope="module")
def dataset(task):
    return make_dataset(task)


def make_task():
    return tasks.get("arithmetic", abstain="unknown")


def make_dataset(task):
    return Dataset.from_list([{"prompt": task.format_prompt(p), "answer": a} for p, a in PROBLEMS])


def config(**overrides):
    base = dict(output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, gradient_checkpointing=False,
                per_device_train_batch_size=4, gradient_accumulation_steps=2, num_generations=G,
                max_completion_length=MAX_LEN, max_steps=1, learning_rate=1e-3, logging_steps=1,
                report_to="none", save_strategy="no", scale_rewards="none", seed=0, disable_tqdm=True)
    return GRPOConfig(**{**base, **overrides})


class ScriptedGeneration:
    """Mixin for a GRPOTrainer: generation replaced by scripted completions; `script_log` keeps
    (ids, gold) in batch order. `seed` and `tag` (written into every reasoning block) keep the
    scripts of different processes apart."""

    def __init__(self, *args, seed=0, tag="", **kwargs):
        self.script_log, self._rng, self._count, self._tag = [], np.random.default_rng(seed), 0, tag
        super().__init__(*args, **kwargs)

    def _encode(self, text, spelled=False):
        if spelled:  # one token per character: a non-canonical encoding of a tag
            return [i for ch in text for i in self._tokenizer(ch, add_special_tokens=False)["input_ids"]]
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]

    def _script(self, gold):
        rng, j = self._rng, self._count
        self._count += 1
        kind = rng.choice(["good", "good", "good", "spelled", "cut", "junk"])
        answer = gold if rng.random() < 0.5 else str(int(gold) + 1)
        if j % 5 == 4:  # an abstention (drawn without the rng, so the other draws do not move)
            answer = "unknown"
        q = str(rng.choice(["0", "0.15", "0.5", "0.85", "1.0"]))
        eos = [self._tokenizer.eos_token_id] if rng.random() < 0.7 else []
        if kind == "junk":
            return self._encode(f"no tags {self._tag}{j}") + eos
        ids = self._encode(f"<reasoning>step {self._tag}{j}{' é' * (j % 2)}</reasoning>")
        ids += self._encode("<answer>", spelled=kind == "spelled") + self._encode(f"{answer}</answer>")
        if kind == "cut":  # truncated inside the confidence block, no EOS
            return ids + self._encode("<analysis>unsure")
        ids += self._encode(f"<analysis>{'check ' * (j % 3)}</analysis><confidence>{q}</confidence>")
        return ids + self._encode("\n" * (j % 2)) + eos

    def scripted(self, prompt_ids):
        """The scripted completion of each prompt (by the problem its decoded text contains)."""
        out = []
        for ids in prompt_ids:
            prompt = self._tokenizer.decode(ids)
            gold = next(a for p, a in PROBLEMS if p in prompt)
            out.append(self._script(gold))
            self.script_log.append((out[-1], gold))
        return out

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        return self.scripted(prompt_ids), None


class Scripted(ScriptedGeneration, BlockwiseGRPOTrainer):
    """BlockwiseGRPOTrainer with scripted generation."""


class ScriptedTRL(ScriptedGeneration, GRPOTrainer):
    """TRL's own GRPOTrainer with scripted generation (takes reward_funcs)."""


def reference(task, tok, log, baseline="ocb", group_size=G):
    """Per completion: token block ids [L]; and block advantages A [N, K] over groups of
    `group_size` consecutive completions, outcomes, scores."""
    blocks, scores = [], []
    for ids, gold in log:
        text = tok.decode(ids, skip_special_tokens=True)
        ends = np.maximum.accumulate([min(len(tok.decode(ids[: t + 1], skip_special_tokens=True)), len(text))
                                      for t in range(len(ids))])
        offsets = list(zip([0, *ends[:-1]], ends))
        score = task.score(text, gold)
        blocks.append(token_block_ids(score.partition, offsets))
        scores.append(score)
    rewards = np.array([s.rewards for s in scores])
    outcomes = np.array([s.outcomes for s in scores])
    groups = np.arange(len(log)) // group_size
    return blocks, blockwise_advantages(rewards, groups, outcomes, baseline=baseline), outcomes, scores


def rows(dataset, prompts=(0, 1), group_size=G):
    return [dataset[i] for i in prompts for _ in range(group_size)]


def expected_token_advantages(task, tok, log, generation_size, baseline="ocb", group_size=G):
    """{completion ids: (its token block ids [L], a[i, block] / |T_i,block| on each token [L])}
    with the advantages of each generation batch (`generation_size` consecutive completions of `log`)."""
    expected = {}
    for start in range(0, len(log), generation_size):
        batch = log[start : start + generation_size]
        blocks, adv, _, _ = reference(task, tok, batch, baseline, group_size)
        for (ids, _), b, a in zip(batch, blocks, adv):
            n = np.bincount(b, minlength=task.num_blocks)
            expected[tuple(ids)] = (b, a[b] / n[b])
    assert len(expected) == len(log), "scripted completions must differ from each other"
    return expected


def assert_carries(inputs, expected):
    """Each row of one input of TRL's _compute_loss carries, on its tokens, its block ids and
    a[i, k] / |T_ik| * c with dapo's c = num_items_in_batch / N_gen (`bae_num_completions`), and
    0 / -1 on padding. Returns (rows with two blocks, rows with a nonzero advantage)."""
    mask = inputs["completion_mask"]
    c = inputs["num_items_in_batch"] / inputs["bae_num_completions"]
    both_blocks = nonzero = 0
    for i in range(mask.shape[0]):
        length = int(mask[i].sum())
        block, value = expected[tuple(inputs["completion_ids"][i, :length].tolist())]
        assert inputs["bae_block_ids"][i, :length].tolist() == block.tolist()
        torch.testing.assert_close(inputs["advantages"][i, :length].double(), torch.tensor(value) * c.double(),
                                   rtol=1e-5, atol=1e-7)
        assert (inputs["advantages"][i, length:] == 0).all() and (inputs["bae_block_ids"][i, length:] == -1).all()
        both_blocks += len(set(block.tolist())) == 2
        nonzero += bool(np.any(value != 0))
    return both_blocks, nonzero


def direct_l_bae(trainer, lp, old, blocks, adv, level, skip=()):
    """L_BAE = (1/N) sum_i sum_k (1/|T_ik|) sum_{t in T_ik} l_t(a_ik), with each loss type's per-token
    l_t (lp, old: [N, T] log-probs; blocks: token block ids [L_i] per row; adv: [N, K]). For GSPO
    (level "sequence") one ratio per block, r_ik = exp(mean_{t in T_ik}(logp - old)), and one term
    per block: l(r_ik, a_ik), CISPO's log-probability being the block mean. Rows in `skip` (masked
    by TRL) contribute nothing but still count in N."""
    lo, hi = 1 - trainer.epsilon_low, 1 + trainer.epsilon_high
    total = lp.new_zeros(())
    for i, b in enumerate(blocks):
        if i in skip:
            continue
        for k in range(adv.shape[1]):
            pos = torch.from_numpy(np.nonzero(b == k)[0])
            if len(pos) == 0:
                continue
            a, logp, log_ratio = float(adv[i, k]), lp[i, pos], lp[i, pos] - old[i, pos]
            if level == "sequence":
                r, logp = torch.exp(log_ratio.mean()), logp.mean()
            else:
                r = torch.exp(log_ratio)
            if trainer.loss_type == "cispo":
                term = -r.clamp(max=trainer.epsilon_high).detach() * a * logp
            elif trainer.loss_type == "sapo":
                tau = trainer.args.sapo_temperature_pos if a > 0 else trainer.args.sapo_temperature_neg
                term = -torch.sigmoid(tau * (r - 1)) * 4 / tau * a
            else:
                term = -torch.minimum(r * a, r.clamp(lo, hi) * a)
            total = total + term.mean()
    return total / len(blocks)


@contextlib.contextmanager
def recorded_losses(logps=False):
    """Record every call of TRL's GRPOTrainer._compute_loss: {"inputs": the tensors it got, "loss":
    the value it returned, "mode": "train" or "eval" as TRL reads it, "logps": with `logps`, the
    model's current per-token log-probs of the completions [B, T] (what the loss's ratios use)}."""
    calls, original = [], GRPOTrainer._compute_loss

    def record(self, model, inputs):
        call = {"inputs": {k: v.detach().clone() for k, v in inputs.items() if torch.is_tensor(v)},
                "mode": "train" if self.model.training else "eval"}
        if logps:
            ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
            mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
            with torch.no_grad():
                call["logps"] = GRPOTrainer._get_per_token_logps_and_entropies(
                    self, model, ids, mask, inputs["completion_ids"].shape[1])[0]
        loss = original(self, model, inputs)
        call["loss"] = loss.item()
        calls.append(call)
        return loss

    GRPOTrainer._compute_loss = record
    try:
        yield calls
    finally:
        GRPOTrainer._compute_loss = original
