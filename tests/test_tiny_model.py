"""Tests of the offline tiny model and tokenizer (bae.embedded.tiny)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bae.embedded.tiny import EOS_TOKEN, PAD_TOKEN, TAGS, build_model, build_tokenizer, load_tiny, save_tiny

COMPLETION = "<reasoning>12+7=19</reasoning><answer>19</answer><analysis>easy sum</analysis><confidence>0.8</confidence>"
TEXTS = [
    COMPLETION,
    "<reasoning>345 - 12 = 333\nso the answer is 333</reasoning>\n<answer> 333 </answer>\n"
    "<analysis>subtraction,\tcarried once</analysis> <confidence>0.95</confidence>",
    "  leading and trailing spaces  ",
    "digits 0123456789 and punctuation !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "non-ascii: héllo ∑ 😀",  # byte-level: several tokens per character, still round-trips
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # tags are not special


@pytest.mark.parametrize("tag", TAGS)
def test_each_tag_is_one_token(tokenizer, tag):
    ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    assert tokenizer.convert_ids_to_tokens(ids) == [tag]
    # Still one token when glued to digits and letters on both sides.
    ids = tokenizer(f"7{tag}x", add_special_tokens=False)["input_ids"]
    assert len(ids) == 3


def test_ascii_characters_are_single_tokens(tokenizer):
    text = "0123456789 abcXYZ+-=.\n\t"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert [tokenizer.decode([i]) for i in ids] == list(text)


def test_completion_token_count(tokenizer):
    # 8 tags + the characters between them.
    inner = "12+7=19" + "19" + "easy sum" + "0.8"
    assert len(tokenizer(COMPLETION, add_special_tokens=False)["input_ids"]) == 8 + len(inner)


@pytest.mark.parametrize("text", TEXTS)
def test_offsets_reproduce_tokens(tokenizer, text):
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    assert len(ids) == len(offsets)
    prev_start, prev_end = 0, 0
    for i, (start, end) in zip(ids, offsets):
        assert 0 <= start < end <= len(text)
        assert start >= prev_end or (start, end) == (prev_start, prev_end)  # bytes of one char share a span
        piece = text[start:end]
        if piece.isascii():
            assert tokenizer.decode([i]) == piece
        prev_start, prev_end = start, end
    # The spans tile the text: every character is covered, in order, with no gaps.
    covered = sorted({span for span in offsets})
    assert covered[0][0] == 0 and covered[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))


def test_tag_offsets_cover_whole_tag(tokenizer):
    enc = tokenizer(COMPLETION, add_special_tokens=False, return_offsets_mapping=True)
    spans = {tokenizer.convert_ids_to_tokens(i): s for i, s in zip(enc["input_ids"], enc["offset_mapping"])}
    for tag in TAGS:
        start, end = spans[tag]
        assert COMPLETION[start:end] == tag
        assert start == COMPLETION.index(tag)


def test_special_tokens(tokenizer):
    assert tokenizer.pad_token == PAD_TOKEN and tokenizer.eos_token == EOS_TOKEN
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    ids = tokenizer(f"ab{EOS_TOKEN}", add_special_tokens=False)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and len(ids) == 3
    assert tokenizer.decode(ids, skip_special_tokens=True) == "ab"
    # No BOS/EOS is added implicitly: a completion's ids are exactly its characters.
    assert tokenizer("ab")["input_ids"] == tokenizer("ab", add_special_tokens=False)["input_ids"]


def test_chat_template(tokenizer):
    messages = [
        {"role": "system", "content": "Answer in tags."},
        {"role": "user", "content": "What is 12+7?"},
    ]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "What is 12+7?" in text and "Answer in tags." in text
    assert text.endswith("<|im_start|>assistant\n")
    assert text.count(EOS_TOKEN) == 2
    no_prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    assert not no_prompt.endswith("assistant\n")


def test_same_seed_same_weights_different_seed_different(tokenizer):
    a = build_model(tokenizer, seed=0).state_dict()
    b = build_model(tokenizer, seed=0).state_dict()
    c = build_model(tokenizer, seed=1).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_build_model_leaves_global_rng_alone(tokenizer):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(tokenizer, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_model_matches_tokenizer(tokenizer):
    model = build_model(tokenizer)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.model_type == "qwen2"
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_save_reload_identical(saved):
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=0)
    tok2 = AutoTokenizer.from_pretrained(saved)
    model2 = AutoModelForCausalLM.from_pretrained(saved)
    # The reloaded tokenizer (transformers maps qwen2 to Qwen2Tokenizer) behaves identically.
    for text in TEXTS + [COMPLETION + EOS_TOKEN]:
        e1 = tokenizer(text, return_offsets_mapping=True)
        e2 = tok2(text, return_offsets_mapping=True)
        assert e1["input_ids"] == e2["input_ids"]
        assert e1["offset_mapping"] == e2["offset_mapping"]
        assert tok2.decode(e2["input_ids"], skip_special_tokens=True) == tokenizer.decode(
            e1["input_ids"], skip_special_tokens=True
        )
    assert tok2.pad_token_id == tokenizer.pad_token_id and tok2.eos_token_id == tokenizer.eos_token_id
    assert tok2.chat_template == tokenizer.chat_template
    ids = torch.tensor([tokenizer(COMPLETION)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, model2.eval()(ids).logits)


def test_save_is_atomic_and_replaces(tmp_path):
    target = tmp_path / "m"
    save_tiny(target, seed=0)
    save_tiny(target, seed=1)  # replaces the existing folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folders left behind
    model, _ = load_tiny(target)
    tok = build_tokenizer()
    ref = build_model(tok, seed=1).state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def test_generate(saved):
    model, tokenizer = load_tiny(saved)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True, tokenize=False
    )
    inputs = tokenizer([prompt, prompt + "<reasoning>"], return_tensors="pt", padding=True)
    out = model.generate(**inputs, max_new_tokens=5, do_sample=True, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[0] == 2 and inputs["input_ids"].shape[1] < out.shape[1] <= inputs["input_ids"].shape[1] + 5
    assert isinstance(tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :])[0], str)
