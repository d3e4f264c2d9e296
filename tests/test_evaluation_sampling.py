"""bae.evaluation.sampling with transformers on the tiny offline model."""

import pytest
import torch

from bae import tasks
from bae.evaluation import sampling
from bae.evaluation.sampling import render_prompt, sample_rows
from bae.embedded.tiny import build_model, build_tokenizer

ROWS = [{"id": "a", "problem": "What is 1 + 2?", "answer": "3"},
        {"id": "b", "problem": "What is 2 * 4?", "answer": "8"}]


@pytest.fixture()
def policy():
    tokenizer = build_tokenizer()
    return build_model(tokenizer, seed=0), tokenizer


def test_loaded_policy_is_sampled_reproducibly_without_side_effects(policy):
    """A training loop's (policy, tokenizer): same seed -> same completions, another seed ->
    others; the caller's torch RNG, train mode, padding side and pad token are left as found."""
    model, tokenizer = policy
    model.train()
    tokenizer.padding_side = "right"
    task = tasks.get("arithmetic")
    kwargs = dict(n=3, temperature=1.0, max_new_tokens=12, batch_size=4, progress=False)

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = sample_rows(policy, task, ROWS, seed=5, **kwargs)
    assert torch.equal(torch.rand(3), expected_next)  # global RNG untouched
    assert model.training and tokenizer.padding_side == "right"

    assert [(r["prompt_id"], r["sample"], r["gold"]) for r in first] == [
        ("a", 0, "3"), ("a", 1, "3"), ("a", 2, "3"), ("b", 0, "8"), ("b", 1, "8"), ("b", 2, "8")]
    assert first == sample_rows(policy, task, ROWS, seed=5, **kwargs)
    assert first != sample_rows(policy, task, ROWS, seed=6, **kwargs)
    assert len({r["completion"] for r in first}) > 1  # temperature 1 on random weights varies


def test_tokenizer_without_pad_token_gets_eos_while_sampling(policy):
    model, tokenizer = policy
    tokenizer.pad_token = None
    rows = sample_rows(policy, tasks.get("arithmetic"), ROWS, n=2, temperature=0.0, max_new_tokens=5,
                       batch_size=4, progress=False)
    assert len(rows) == 4 and rows[0]["completion"] == rows[1]["completion"]  # greedy
    assert tokenizer.pad_token is None


def test_prompt_uses_the_chat_template(policy):
    _, tokenizer = policy
    messages = tasks.get("arithmetic").format_prompt("What is 1 + 2?")
    text = render_prompt(tokenizer, messages)
    assert text.endswith("<|im_start|>assistant\n") and "What is 1 + 2?" in text


def test_bad_backend_is_refused(policy):
    with pytest.raises(ValueError, match="backend"):
        sample_rows(policy, tasks.get("arithmetic"), ROWS, n=1, temperature=1.0, max_new_tokens=2, backend="tgi")


@pytest.mark.parametrize("installed, gpu", [(True, True), (True, False), (False, True), (False, False)])
def test_vllm_is_chosen_only_when_installed_and_a_gpu_is_present(monkeypatch, installed, gpu):
    monkeypatch.setattr(sampling.importlib.util, "find_spec", lambda name: object() if installed else None)
    monkeypatch.setattr(sampling.torch.cuda, "is_available", lambda: gpu)
    assert sampling.vllm_available() == (installed and gpu)


def test_unloadable_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="neither a folder holding a saved model nor a loadable hub id"):
        sampling.load_transformers(str(tmp_path / "absent"))
