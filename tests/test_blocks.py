"""Splitting completions into blocks and tokens into block ids: never raises, always a partition."""

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bae.blocks import BlockSchema, token_block_ids

SCHEMA = BlockSchema.of(solution=("reasoning", "answer"), confidence=("analysis", "confidence"))
WELL_FORMED = [
    "<reasoning>12+7=19</reasoning><answer>19</answer><analysis>easy</analysis><confidence>0.9</confidence>",
    "<reasoning>\nLet x = 2.\n</reasoning>\n<answer>\\frac{1}{2}</answer>\n<analysis>unsure</analysis>\n<confidence>0.25</confidence>\n",
    "  <reasoning></reasoning><answer>a < b</answer><analysis>x</analysis><confidence>1</confidence>",
]
TAGS = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", "<analysis>", "</analysis>", "<confidence>", "</confidence>"]


def assert_partition(split, text):
    """Spans are contiguous, start at 0, end at len(text): every character in exactly one block."""
    assert split.spans[0][0] == 0 and split.spans[-1][1] == len(text)
    for (s0, e0), (s1, _) in zip(split.spans, split.spans[1:]):
        assert s0 <= e0 == s1


@pytest.mark.parametrize("text", WELL_FORMED)
def test_well_formed_completions_split_into_their_blocks(text):
    split = SCHEMA.split(text)
    assert split.well_formed and split.complete == 2
    assert_partition(split, text)
    solution, confidence = (text[s:e] for s, e in split.spans)
    assert solution.rstrip().endswith("</answer>") and "<analysis>" not in solution
    assert confidence.strip().startswith("<analysis>") and confidence.rstrip().endswith("</confidence>")
    assert set(split.fields[0]) == {"reasoning", "answer"} and set(split.fields[1]) == {"analysis", "confidence"}


def test_fields_are_read_and_render_round_trips():
    contents = [{"reasoning": "r", "answer": "42"}, {"analysis": "a", "confidence": "0.3"}]
    split = SCHEMA.split(SCHEMA.render(contents))
    assert split.well_formed and list(split.fields) == contents


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TAGS + ["x", " ", "\n", "<", ">", "/", "0.5"]), max_size=30).map("".join))
def test_any_text_splits_without_raising_into_a_partition(text):
    split = SCHEMA.split(text)
    assert_partition(split, text)
    assert 0 <= split.complete <= 2 and len(split.fields) == split.complete


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_unicode_never_raises(text):
    assert_partition(SCHEMA.split(text), text)


def mutations(text, rng):
    """Cut anywhere, drop a tag, double a tag, swap two blocks, nest a tag, add stray text."""
    yield "cut", text[: rng.randrange(len(text.rstrip()))]
    tag = rng.choice(TAGS)
    yield "drop", text.replace(tag, "", 1)
    yield "double", text.replace(tag, tag + tag, 1)
    half = text.index("<analysis>")
    yield "reorder", text[half:] + text[:half]
    yield "nest", text.replace("</reasoning>", "<answer>x</answer></reasoning>", 1)
    yield "stray", text.replace("<analysis>", "I think <analysis>", 1)
    yield "repeat", text + "<answer>7</answer>"


@pytest.mark.parametrize("seed", range(30))
def test_mutations_of_well_formed_text_are_malformed_not_errors(seed):
    rng = random.Random(seed)
    text = WELL_FORMED[seed % len(WELL_FORMED)]
    for kind, mutated in mutations(text, rng):
        split = SCHEMA.split(mutated)
        assert_partition(split, mutated)
        assert not split.well_formed, (kind, mutated)


def test_truncated_confidence_keeps_the_complete_solution_block():
    text = WELL_FORMED[0]
    cut = text[: text.index("<confidence>") + 5]
    split = SCHEMA.split(cut)
    assert split.complete == 1 and split.fields[0]["answer"] == "19"
    assert split.spans == ((0, text.index("<analysis>")), (text.index("<analysis>"), len(cut)))


def test_schema_validation():
    with pytest.raises(ValueError, match="unique"):
        BlockSchema.of(a=("x",), **{"b": ("y",)}).__class__((BlockSchema.of(a=("x",)).blocks[0],) * 2)
    with pytest.raises(ValueError, match="not a valid tag"):
        BlockSchema.of(a=("x y",))
    with pytest.raises(ValueError, match="at least one field"):
        BlockSchema.of(a=())


def check_token_ids(text, offsets, split):
    """Every token gets one block id; a token's id is the block holding its first character; ids
    never decrease; zero-width tokens take the id of the token before them."""
    ids = token_block_ids(split.spans, offsets)
    assert len(ids) == len(offsets) and np.all(np.diff(ids) >= 0)
    assert set(ids.tolist()) <= set(range(len(split.spans)))
    for t, (s, e) in enumerate(offsets):
        if e > s and s < len(text):
            k = ids[t]
            assert split.spans[k][0] <= s < split.spans[k][1]
    return ids


def byte_bpe():
    """A byte-level BPE trained here on completions: its merges straddle tag boundaries."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(WELL_FORMED * 50, trainer)
    return tok


@pytest.mark.parametrize("text", WELL_FORMED + ["<reasoning>3</reasoning><answer>3</ans"])
def test_token_block_ids_with_a_real_tokenizer(text):
    tok = byte_bpe()
    enc = tok.encode(text)
    split = SCHEMA.split(text)
    offsets = list(enc.offsets) + [(0, 0)]  # end-of-sequence appended, zero-width
    ids = check_token_ids(text, offsets, split)
    assert ids[-1] == ids[-2]  # EOS belongs to the block of the token before it: the last one
    if split.well_formed:
        assert ids[0] == 0 and ids[-1] == 1


def test_token_block_ids_edge_cases():
    split = SCHEMA.split(WELL_FORMED[0])
    assert token_block_ids(split.spans, []).tolist() == []
    assert token_block_ids(split.spans, [(0, 0), (0, 3)]).tolist() == [0, 0]
    n = len(WELL_FORMED[0])
    assert token_block_ids(split.spans, [(0, 5), (n - 2, n), (n, n), (n, n + 4)]).tolist() == [0, 1, 1, 1]


def test_eos_joins_the_block_a_completion_stopped_in():
    """A completion that stops exactly at a block boundary left the next block out: its EOS is
    that decision, so it joins the left-out block and carries its (worst) reward; a completion cut
    inside a block keeps its EOS there; a well-formed one gives it to the last block. Then every
    block has a token (block k's advantage reaches the policy), also when nothing follows the tag."""
    from bae import tasks
    from bae.batch import score_completions
    from bae.embedded.tiny import build_tokenizer

    task, tok = tasks.get("arithmetic"), build_tokenizer()
    solution = "<reasoning>3+4=7</reasoning><answer>7</answer>"
    texts = {"stopped after the solution": solution, "then a newline": solution + "\n",
             "cut inside the solution": "<reasoning>3+4=", "well-formed": WELL_FORMED[0], "nothing": ""}
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts.values()]
    scores, blocks = score_completions(task, tok, ids, ["7"] * len(texts))
    eos = dict(zip(texts, (int(b[-1]) for b in blocks)))
    assert eos == {"stopped after the solution": 1, "then a newline": 1, "cut inside the solution": 0,
                   "well-formed": 1, "nothing": 0}
    stopped = blocks[0]
    assert np.bincount(stopped, minlength=2).tolist() == [len(ids[0]) - 1, 1]  # the EOS alone carries block 1
    assert scores[0].rewards[1] == task.rewards[1].worst and scores[0].complete == 1
    assert all((np.diff(b) >= 0).all() for b in blocks)  # still non-decreasing (verl's block starts)
    # the rule itself: only the zero-width tokens after the last token that covers text move
    split = SCHEMA.split(solution)
    n = len(solution)
    assert token_block_ids(split.spans, [(0, 5), (n - 1, n), (n, n), (n, n)], stop_block=1).tolist() == [0, 0, 1, 1]
    assert token_block_ids(split.spans, [(0, 0), (0, 5), (n, n)], stop_block=1).tolist() == [0, 0, 1]
