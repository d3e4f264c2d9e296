"""The answer_class outcome: OCB strata from the verifier-equivalence classes of the members'
answers within a group (no gold answer), assigned by a batch-level step after Task.score."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bae import tasks
from bae.advantages import blockwise_advantages
from bae.batch import ScoredBatch
from bae.tasks import MALFORMED_OUTCOME, answer_classes


def completion(answer, confidence="0.5"):
    return (f"<reasoning>work</reasoning><answer>{answer}</answer>"
            f"<analysis>why</analysis><confidence>{confidence}</confidence>")


MALFORMED = "<reasoning>cut off before the ans"
NO_ANSWER = "<reasoning>work</reasoning><answer> </answer><analysis>a</analysis><confidence>0.5</confidence>"


def partition(classes, groups):
    """The partition a class assignment makes, as a set of frozensets of row indices."""
    cells = {}
    for i, (c, g) in enumerate(zip(classes, groups)):
        cells.setdefault((g, c), set()).add(i)
    return {frozenset(v) for v in cells.values()}


def test_math_verifier_equivalent_answers_share_a_class():
    """Under the math verifier "\\frac{1}{2}", "0.5" and "1/2" are one class; 0.6 and "x" are
    classes of their own; numbering is by first appearance within the group."""
    task = tasks.get("self_confidence", outcome="answer_class")
    answers = ["\\frac{1}{2}", "0.6", "0.5", "1/2", "x", "0.6"]
    got = answer_classes(answers, [0] * 6, task.equivalent)
    assert got.tolist() == [0, 1, 0, 0, 2, 1]


def test_exact_verifier_classes_malformed_abstention_and_no_answer():
    """Integers compare by value ("007" = "7"); malformed rows get -1; the abstention answer is one
    class whatever its case; a prefix without an answer is one class; each group numbers its own."""
    task = tasks.get("arithmetic", outcome="answer_class", abstain="unknown")
    answers = ["7", "007", "8", None, "Unknown", "unknown ", None, "7", "9", "7"]
    groups = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    malformed = [False] * 7 + [True, False, False]
    got = answer_classes(answers, groups, task.equivalent, task.config.abstain, malformed=malformed)
    assert got.tolist() == [0, 0, 1, 2, 3, 3, 2, MALFORMED_OUTCOME, 0, 1]
    assert answer_classes([], [], task.equivalent).shape == (0,)


def test_score_records_the_prefix_answer_and_the_placeholder():
    """Task.score gives a well-formed prefix the placeholder 0 and records its answer; a malformed
    prefix gets -1 and no answer; in the two-attempt format column 1 is the first attempt's."""
    task = tasks.get("arithmetic", outcome="answer_class")
    s = task.score(completion("12"), "7")
    assert s.outcomes == (0, 0) and s.prefix_answers == (None, "12")
    m = task.score(MALFORMED, "7")
    assert m.outcomes == (0, MALFORMED_OUTCOME) and m.prefix_answers == (None, None)
    assert task.score(NO_ANSWER, "7").prefix_answers == (None, None)
    two = tasks.get("arithmetic_two_attempt")
    t = two.score("<reasoning>a</reasoning><answer>5</answer><reasoning>b</reasoning><answer>6</answer>", "6")
    assert t.prefix_answers == (None, "5") and t.answer == "6"


GROUP = [completion("7", "0.9"), completion("007", "0.4"), completion("8", "0.2"), MALFORMED,
         completion("9"), completion("8", "0.7"), NO_ANSWER, completion("7", "0.1")]


def scored(task, texts, gold):
    scores = [task.score(t, gold) for t in texts]
    return scores, np.array([s.outcomes for s in scores]), [s.prefix_answers for s in scores]


@pytest.mark.parametrize("gold", ["7", "8", "123", "not a number"])
def test_classes_do_not_depend_on_the_gold(gold):
    """Changing the gold answer changes the correctness (and the rewards) but not the classes."""
    task = tasks.get("arithmetic", outcome="answer_class")
    groups = np.zeros(len(GROUP), np.int64)
    _, outcomes, answers = scored(task, GROUP, gold)
    got = task.group_outcomes(outcomes, answers, groups)
    assert got[:, 1].tolist() == [0, 0, 1, MALFORMED_OUTCOME, 2, 1, 3, 0]
    assert got[:, 0].tolist() == [0] * len(GROUP)


def test_answer_class_refines_correct_incorrect():
    """Every class lies inside one correctness stratum (a class of the gold's answers is the
    correct stratum), and the wrong answers split into several classes."""
    gold = "7"
    classes = tasks.get("arithmetic", outcome="answer_class")
    correct = tasks.get("arithmetic")
    groups = np.zeros(len(GROUP), np.int64)
    _, outcomes, answers = scored(classes, GROUP, gold)
    by_class = classes.group_outcomes(outcomes, answers, groups)[:, 1]
    by_correct = np.array([correct.score(t, gold).outcomes[1] for t in GROUP])
    for c in set(by_class.tolist()):
        assert len(set(by_correct[by_class == c].tolist())) == 1
    assert len(set(by_class[by_correct == 0].tolist())) > 1


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.tuples(st.integers(0, 3), st.integers(-3, 3), st.booleans(), st.integers(0, 2)),
                    min_size=0, max_size=30),
    seed=st.integers(0, 2**32 - 1),
)
def test_exact_classes_are_the_value_partition_in_any_order(values, seed):
    """For the exact verifier (a transitive equivalence): rows of a group share a class iff their
    integer answers are equal in value (whatever the spelling: leading zeros, a plus sign), malformed
    rows are -1, and permuting the rows permutes the classes (the same partition)."""
    task = tasks.get("arithmetic", outcome="answer_class")
    spell = ["{}", "0{}", "+{}"]
    groups = [g for g, _, _, _ in values]
    answers = [spell[s].format(v) if v >= 0 else str(v) for _, v, _, s in values]
    malformed = [m for _, _, m, _ in values]
    got = answer_classes(answers, groups, task.equivalent, malformed=malformed)
    for i in range(len(values)):
        assert (got[i] == MALFORMED_OUTCOME) == malformed[i]
        for j in range(len(values)):
            if groups[i] == groups[j] and not malformed[i] and not malformed[j]:
                assert (got[i] == got[j]) == (values[i][1] == values[j][1])
    perm = np.random.default_rng(seed).permutation(len(values))
    again = answer_classes([answers[p] for p in perm], [groups[p] for p in perm], task.equivalent,
                           malformed=[malformed[p] for p in perm])
    # row i of the permuted batch is row perm[i] of the original
    assert {frozenset(int(perm[i]) for i in cell) for cell in partition(again, [groups[p] for p in perm])} \
        == partition(got, groups)


def test_task_option_and_from_config():
    """outcome="answer_class" for the built-in self-confidence formats, `outcomes: [answer_class]`
    in a config; unknown outcome names are refused with the registered ones named."""
    for name in ("self_confidence", "arithmetic"):
        task = tasks.get(name, outcome="answer_class")
        assert task.config.outcomes == ("answer_class",) and task.group_outcome_columns == (1,)
        assert tasks.get(name).group_outcome_columns == ()
    config = {"name": "custom", "verifier": "exact", "outcomes": ["answer_class"],
              "blocks": [{"name": "solution", "fields": ["reasoning", "answer"], "reward": "correct"},
                         {"name": "confidence", "fields": ["analysis", "confidence"], "reward": "brier"}]}
    task = tasks.from_config(config)
    assert task.group_outcome_columns == (1,)
    _, outcomes, answers = scored(task, GROUP, "7")
    assert task.group_outcomes(outcomes, answers, np.zeros(len(GROUP)))[:, 1].tolist() == [0, 0, 1, -1, 2, 1, 3, 0]
    with pytest.raises(ValueError, match="unknown outcome"):
        tasks.get("arithmetic", outcome="answer_clas")
    with pytest.raises(ValueError, match="prefix answers"):
        task.group_outcomes(outcomes, None, np.zeros(len(GROUP)))


def test_scored_batch_assigns_the_classes_over_its_groups():
    """ScoredBatch.from_scores keeps the prefix answers; with_group_outcomes assigns the classes
    within each group (two groups holding the same answers get their own strata) and is the batch
    itself for a task without group outcomes; OCB over it uses the classes."""
    task = tasks.get("arithmetic", outcome="answer_class")
    scores = [task.score(t, "7") for t in GROUP + GROUP[::-1]]
    groups = np.repeat([0, 1], len(GROUP))
    batch = ScoredBatch.from_scores(scores, groups, task.block_names)
    assert batch.answers.shape == (2 * len(GROUP), 2) and batch.answers[0, 1] == "7"
    assigned = batch.with_group_outcomes(task)
    np.testing.assert_array_equal(assigned.outcomes, task.group_outcomes(batch.outcomes, batch.answers, groups))
    assert assigned.outcomes[:, 1].tolist()[: len(GROUP)] == [0, 0, 1, -1, 2, 1, 3, 0]
    plain = tasks.get("arithmetic")
    same = ScoredBatch.from_scores([plain.score(t, "7") for t in GROUP], np.zeros(len(GROUP)), plain.block_names)
    assert same.with_group_outcomes(plain) is same
    adv = assigned.advantages("bae", "ocb")
    expected = blockwise_advantages(assigned.rewards, groups, assigned.outcomes, baseline="ocb")
    np.testing.assert_allclose(adv, expected)
    # rows 2 and 5 answered 8 (one class, both wrong): their block-2 advantages sum to zero
    assert adv[2, 1] + adv[5, 1] == pytest.approx(0.0)


def test_trl_trainer_stratifies_by_answer_class():
    """BlockwiseGRPOTrainer with outcome="answer_class": the advantages it hands to TRL's loss are
    the core's over the answer-class strata of each group (scripted generation, one step)."""
    import os
    import tempfile

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from bae.embedded.tiny import build_model, build_tokenizer
    from bae.engines.trl import BlockwiseGRPOTrainer

    tok = build_tokenizer()
    task = tasks.get("arithmetic", outcome="answer_class")
    # under correct / incorrect rows 1-3 are one stratum; as answer classes 9 is alone (A = 0)
    texts = [completion("7", "0.9"), completion("8", "0.3"), completion("9", "0.2"), completion("8", "0.8")]

    class Scripted(BlockwiseGRPOTrainer):
        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            out = [tok(texts[i % len(texts)], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                   for i in range(len(prompt_ids))]
            return out, None

    seen, original = [], GRPOTrainer._compute_loss

    def capture(self, model, inputs):
        seen.append({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in inputs.items()})
        return original(self, model, inputs)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    GRPOTrainer._compute_loss = capture
    try:
        config = GRPOConfig(output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                            gradient_accumulation_steps=1, num_generations=4, max_completion_length=48, max_steps=1,
                            learning_rate=1e-3, logging_steps=1, report_to="none", save_strategy="no",
                            scale_rewards="none", seed=0, disable_tqdm=True)
        data = Dataset.from_list([{"prompt": task.format_prompt("What is 3 + 4?"), "answer": "7"}])
        Scripted(build_model(tok), task, config, data, tok).train()
    finally:
        GRPOTrainer._compute_loss = original
        torch.set_num_threads(threads)
    scores = [task.score(t, "7") for t in texts]
    outcomes = task.group_outcomes([s.outcomes for s in scores], [s.prefix_answers for s in scores], np.zeros(4))
    assert outcomes[:, 1].tolist() == [0, 1, 2, 1]
    expected = blockwise_advantages(np.array([s.rewards for s in scores]), np.zeros(4), outcomes, baseline="ocb")
    by_correct = blockwise_advantages(np.array([s.rewards for s in scores]), np.zeros(4),
                                      np.array([tasks.get("arithmetic").score(t, "7").outcomes for t in texts]),
                                      baseline="ocb")
    assert expected[2, 1] == 0.0 and by_correct[2, 1] != 0.0  # the two stratifications differ here
    inputs = seen[0]
    c = float(inputs["num_items_in_batch"] / inputs["bae_num_completions"])
    encoded = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    for i in range(inputs["completion_ids"].shape[0]):
        valid = inputs["completion_mask"][i].bool()
        row = encoded.index(inputs["completion_ids"][i][valid].tolist())
        blocks = inputs["bae_block_ids"][i][valid]
        values = inputs["advantages"][i][valid].double()
        for k in (0, 1):
            n_k = int((blocks == k).sum())
            assert n_k > 0
            torch.testing.assert_close(values[blocks == k], torch.full((n_k,), expected[row, k] / n_k * c,
                                                                        dtype=torch.float64), rtol=1e-5, atol=1e-7)
