"""Supervised warm start (bae.embedded.warmstart): the demonstrations follow the design, the warm start is
saved loadable and deterministic, and a short run teaches the tiny policy the block format.

Offline, on CPU, with short SFT runs (a few dozen to ~150 optimizer steps of a tiny model).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import dataclasses
from collections import Counter

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bae.evaluation.sampling import generate_transformers, render_prompt
from bae.embedded.tiny import build_model, build_tokenizer
from bae.tasks import arithmetic
from bae.embedded.warmstart import WarmStartConfig, make_demonstrations, task_of, warm_start

# A small run: format only, not arithmetic (the default run is ~1000 steps).
SHORT = WarmStartConfig(examples=16 * 150, max_steps=150, batch_size=16, learning_rate=3e-3, seed=3)


def test_demonstrations_follow_the_design():
    cfg = WarmStartConfig(examples=1000, levels=(1, 2, 3, 4), wrong_rates=(0.0, 0.25, 0.5, 0.9), seed=7)
    task = task_of(cfg)
    demos = make_demonstrations(cfg)
    assert len(demos) == 1000
    wrong, count = Counter(), Counter()
    for d in demos:
        split = task.split(d["completion"])
        assert split.well_formed, d["completion"]
        solution, confidence = split.fields
        assert solution["answer"] == d["stated"]
        assert float(confidence["confidence"]) == pytest.approx(d["confidence"])
        assert d["confidence"] in cfg.confidences
        score = task.score(d["completion"], d["answer"])
        # The exact-match verifier agrees with the design's bookkeeping.
        assert score.correct == (not d["wrong"]) == task.verify(d["stated"], d["answer"])
        assert int(d["stated"]) >= 0
        assert d["prompt"] == task.format_prompt(d["problem"])
        count[d["level"]] += 1
        wrong[d["level"]] += d["wrong"]
    for level in cfg.levels:
        # Exactly the demonstrated fraction (rounded) of each level is wrong.
        assert wrong[level] == round(cfg.wrong_rates[level - 1] * count[level]), level
    assert wrong[1] == 0 and wrong[4] > wrong[3] > wrong[2] > 0


def test_confidences_are_independent_of_correctness_by_construction():
    """Same seed, different wrong rates: the same problems and the same confidences, so the
    demonstrated confidence cannot carry information about correctness (or about the level)."""
    base = WarmStartConfig(examples=600, levels=(1, 2, 3), wrong_rates=(0.0, 0.0, 0.0, 0.0), seed=1)
    other = dataclasses.replace(base, wrong_rates=(0.5, 0.5, 0.9, 0.9))
    a, b = make_demonstrations(base), make_demonstrations(other)
    assert [d["problem"] for d in a] == [d["problem"] for d in b]
    assert [d["confidence"] for d in a] == [d["confidence"] for d in b]
    assert not any(d["wrong"] for d in a) and sum(d["wrong"] for d in b) > 200
    # Roughly uniform over the grid, within each level too.
    for level in base.levels:
        qs = [d["confidence"] for d in a if d["level"] == level]
        assert sum(qs) / len(qs) == pytest.approx(0.5, abs=0.05)
    # A different seed gives different demonstrations.
    c = make_demonstrations(dataclasses.replace(base, seed=2))
    assert [d["completion"] for d in c] != [d["completion"] for d in a]


def test_config_is_validated():
    with pytest.raises(ValueError, match="wrong_rates"):
        WarmStartConfig(wrong_rates=(0.1, 0.2))
    with pytest.raises(ValueError, match="wrong_rates"):
        WarmStartConfig(wrong_rates=(0.1, 0.2, 0.3, 1.5))
    with pytest.raises(ValueError, match="confidences"):
        WarmStartConfig(confidences=())
    with pytest.raises(dataclasses.FrozenInstanceError):
        WarmStartConfig().examples = 3  # type: ignore[misc]


def _weights(path):
    model = AutoModelForCausalLM.from_pretrained(path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_warm_start_is_loadable_deterministic_and_atomic(tmp_path):
    cfg = WarmStartConfig(examples=16 * 12, max_steps=12, seed=5)
    first = warm_start(cfg, tmp_path / "a")
    second = warm_start(cfg, tmp_path / "b")
    assert first == (tmp_path / "a").resolve() and (first / "config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(first)
    assert tokenizer.convert_tokens_to_ids("<answer>") != tokenizer.unk_token_id
    wa, wb = _weights(first), _weights(second)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # Training changed the weights from the initialisation.
    init = build_model(build_tokenizer(), hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                       num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads,
                       intermediate_size=cfg.intermediate_size, seed=cfg.seed).state_dict()
    assert any(not torch.equal(init[k], wa[k]) for k in wa if k in init)
    # Saving over an existing folder replaces it, and no temporary folder is left beside it.
    again = warm_start(dataclasses.replace(cfg, seed=6), tmp_path / "a")
    assert again == first
    assert any(not torch.equal(wa[k], w) for k, w in _weights(again).items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def _format_rate(policy, tokenizer, cfg, rows):
    task = task_of(cfg)
    prompts = [render_prompt(tokenizer, task.format_prompt(r["problem"])) for r in rows]
    texts = generate_transformers(policy, tokenizer, prompts, n=1, temperature=0.0, max_new_tokens=48,
                                  batch_size=32, progress=False)
    return sum(task.split(t[0]).well_formed for t in texts) / len(texts)


def test_short_warm_start_teaches_the_format(tmp_path):
    rows = arithmetic.generate(32, seed=99, levels=SHORT.levels)
    tokenizer = build_tokenizer()
    untrained = build_model(tokenizer, hidden_size=SHORT.hidden_size, num_layers=SHORT.num_layers,
                            num_heads=SHORT.num_heads, num_kv_heads=SHORT.num_kv_heads,
                            intermediate_size=SHORT.intermediate_size, seed=SHORT.seed)
    before = _format_rate(untrained, tokenizer, SHORT, rows)
    path = warm_start(SHORT, tmp_path / "warm")
    after = _format_rate(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path), SHORT, rows)
    assert before < 0.1
    assert after >= 0.8 and after > before


def test_abstaining_demonstrations():
    """abstain="unknown": exactly round(abstain_rate * n) of each level's n demonstrations refuse
    ("<expr>=?", answer "unknown", confidence abstain_confidence), the task of the config scores
    them as abstentions, and every other demonstration is the one of abstain=None (own stream)."""
    base = WarmStartConfig(examples=500, levels=(1, 2), seed=4)
    cfg = dataclasses.replace(base, abstain="unknown", abstain_rate=0.2)
    plain, demos = make_demonstrations(base), make_demonstrations(cfg)
    task = task_of(cfg)
    assert task.config.abstain == "unknown"
    for level in cfg.levels:
        rows = [d for d in demos if d["level"] == level]
        assert sum(d["abstained"] for d in rows) == round(0.2 * len(rows))
    for a, d in zip(plain, demos):
        score = task.score(d["completion"], d["answer"])
        if d["abstained"]:
            assert d["stated"] == "unknown" and d["confidence"] == 0.0 and d["wrong"]
            assert score.abstained and not score.correct and score.confidence == 0.0 and "=?<" in d["completion"]
        else:
            assert d["completion"] == a["completion"] and not score.abstained
    with pytest.raises(ValueError, match="abstain_rate"):
        WarmStartConfig(abstain="unknown", abstain_rate=1.5)
    with pytest.raises(ValueError, match="abstain"):
        WarmStartConfig(task="arithmetic_two_attempt", abstain="unknown")
