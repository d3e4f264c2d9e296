"""Tasks whose solution is free text with a final \\boxed{} answer (solution_format "boxed"): the
built-in `boxed` task and boxed solutions followed by tagged blocks, defined from a config."""

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bae import tasks
from bae.evaluation.sets import resolve

MATH500 = [json.loads(line) for line in resolve("math500").read_text().splitlines()]
BOXED_CONFIDENCE = {
    "name": "boxed_confidence", "solution_format": "boxed",
    "blocks": [{"name": "solution", "reward": "correct"},
               {"name": "confidence", "fields": ["confidence"], "reward": "brier"}],
    "outcomes": ["correct"],
}


def test_every_math500_reference_solution_is_correct_under_the_boxed_task():
    """MATH500's own solutions end in \\boxed{gold}: all 500 are well-formed and correct, and
    the same solutions scored against another problem's gold are mostly wrong (the verifier is
    not vacuous)."""
    task = tasks.get("boxed")
    scores = [task.score(r["solution"], r["answer"]) for r in MATH500]
    assert all(s.correct and not s.malformed and s.rewards == (1.0,) for s in scores)
    shifted = [task.score(r["solution"], MATH500[(i + 1) % 500]["answer"]).correct for i, r in enumerate(MATH500[:100])]
    assert sum(shifted) <= 5


@pytest.mark.parametrize(
    "text, gold, answer, correct, malformed",
    [
        (r"so x = 2, hence \boxed{2}.", "2", "2", True, False),
        (r"first \boxed{3}, no wait: \boxed{\frac{1}{2}}", r"\frac12", r"\frac{1}{2}", True, False),  # the last box
        (r"\boxed{x^{2}+1}", "x^2+1", "x^{2}+1", True, False),  # nested braces
        (r"the answer is \boxed{5}", "6", "5", False, False),  # wrong but well-formed
        (r"\boxed{ }", "6", None, False, False),  # empty box: present, unusable, worst reward
        ("the answer is 2", "2", None, False, True),  # no box: malformed
        (r"\boxed{2", "2", None, False, True),  # unbalanced: no box
        (r"<answer>2</answer>", "2", None, False, True),  # tags mean nothing here
    ],
)
def test_boxed_task_scores(text, gold, answer, correct, malformed):
    score = tasks.get("boxed").score(text, gold)
    assert (score.answer, score.correct, score.malformed) == (answer, correct, malformed)
    assert score.rewards == (float(correct),) and score.outcomes == (0,)
    assert score.confidence is None and score.partition == ((0, len(text)),)


def test_boxed_solution_then_a_tagged_confidence_block():
    task = tasks.from_config(BOXED_CONFIDENCE)
    text = r"12 + 7 = 19, so \boxed{19}. <confidence>0.8</confidence>"
    score = task.score(text, "19")
    assert score.rewards == pytest.approx((1.0, -(0.8 - 1) ** 2)) and score.outcomes == (0, 1)
    assert score.confidence == 0.8 and not score.malformed
    cut = text.index("<confidence>")
    assert score.partition == ((0, cut), (cut, len(text)))  # the confidence tokens are block 2's
    wrong = task.score(r"\boxed{18}<confidence>0.8</confidence>", "19")
    assert wrong.rewards == pytest.approx((0.0, -0.64)) and wrong.outcomes == (0, 0)
    # no confidence: the solution is still scored (partial policy), the confidence block gets its worst
    partial = task.score(r"so \boxed{19}", "19")
    assert partial.rewards == (1.0, -1.0) and partial.malformed and partial.outcomes == (0, 1)
    # a box only after the confidence does not count: the solution block ends at the first tag
    late = task.score(r"hmm <confidence>0.8</confidence> \boxed{19}", "19")
    assert late.malformed and late.outcomes == (0, tasks.MALFORMED_OUTCOME) and late.rewards == (0.0, -1.0)


@pytest.mark.parametrize("seed", range(30))
def test_a_malformed_boxed_completion_never_earns_more_than_the_well_formed_one(seed):
    rng = random.Random(seed)
    task = tasks.from_config(BOXED_CONFIDENCE)
    gold = str(rng.randint(0, 30))
    text = rf"work \boxed{{{rng.choice([gold, '99'])}}} <confidence>{rng.choice(['0', '0.4', '1'])}</confidence>"
    original = task.score(text, gold)
    for mutated in (text[: rng.randrange(len(text))], text.replace(r"\boxed", "", 1), text + " more text",
                    text.replace("</confidence>", "", 1), text + "<confidence>1</confidence>"):
        score = task.score(mutated, gold)
        assert score.malformed, mutated
        assert all(s <= o + 1e-12 for s, o in zip(score.rewards, original.rewards)), (mutated, score, original)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list("ab1 {}\\<>/") + ["\\boxed{", "\\boxed ", "<confidence>", "</confidence>"]),
                max_size=30).map("".join), st.sampled_from(["boxed", "boxed_confidence"]))
def test_boxed_scoring_never_raises_and_partitions_the_text(text, name):
    task = tasks.get("boxed") if name == "boxed" else tasks.from_config(BOXED_CONFIDENCE)
    score = task.score(text, "1")
    assert len(score.rewards) == len(score.outcomes) == task.num_blocks
    assert all(math.isfinite(r) for r in score.rewards)
    spans = score.partition
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize(
    "change, key",
    [
        ({"blocks": [{"name": "solution", "fields": ["answer"], "reward": "correct"}], "outcomes": []}, "blocks.0.fields"),
        ({"solution_format": "tags"}, "blocks.0.fields"),
        ({"blocks": [{"name": "solution", "reward": "correct"}, {"name": "c", "reward": "brier"}]}, "blocks.1.fields"),
        ({"blocks": [{"name": "solution", "reward": "correct"}, {"name": "solution", "fields": ["q"], "reward": "brier"}]},
         "unique"),
        ({"blocks": [{"name": "solution", "reward": "correct"}, {"name": "c", "fields": ["1q"], "reward": "brier"}]},
         "not a valid tag name"),
        ({"solution_format": "latex"}, "solution_format"),
    ],
)
def test_bad_boxed_configs_name_the_key(change, key):
    with pytest.raises(ValueError, match=key):
        tasks.from_config({**BOXED_CONFIDENCE, **change})


def test_the_boxed_task_is_recorded_and_read_back(tmp_path):
    """A model folder's task record round-trips the solution format."""
    task = tasks.from_config(BOXED_CONFIDENCE)
    tasks.save_record(task, tmp_path)
    again = tasks.load_record(tmp_path)
    assert again.config == task.config and again.score(r"\boxed{1}<confidence>1</confidence>", "1").rewards == (1.0, 0.0)
