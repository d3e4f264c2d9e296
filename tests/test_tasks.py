"""Tasks: block rewards, outcomes, malformed policies, and configs."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bae import tasks
from bae.rewards import BCE_EPS
from bae.tasks.arithmetic import generate


def completion(answer="19", confidence="0.8", reasoning="12+7=19", analysis="easy"):
    return (f"<reasoning>{reasoning}</reasoning><answer>{answer}</answer>"
            f"<analysis>{analysis}</analysis><confidence>{confidence}</confidence>")


@pytest.mark.parametrize(
    "text, gold, rewards, outcomes, correct, confidence",
    [
        (completion("19", "0.8"), "19", (1.0, -(0.8 - 1) ** 2), (0, 1), True, 0.8),
        (completion("18", "0.8"), "19", (0.0, -(0.8 ** 2)), (0, 0), False, 0.8),
        (completion("18", "10%"), "19", (0.0, -(0.1 ** 2)), (0, 0), False, 0.1),
        (completion("19", "sure"), "19", (1.0, -1.0), (0, 1), True, None),  # unparseable: worst
        (completion("", "0.3"), "19", (0.0, -(0.3 ** 2)), (0, 0), False, 0.3),  # empty answer
    ],
)
def test_self_confidence_scores(text, gold, rewards, outcomes, correct, confidence):
    score = tasks.get("arithmetic").score(text, gold)
    assert score.rewards == pytest.approx(rewards)
    assert score.outcomes == outcomes and score.correct is correct
    assert score.confidence == (pytest.approx(confidence) if confidence is not None else None)
    assert not score.malformed and score.spans is not None and score.spans == score.partition


def test_math_task_uses_math_verify_and_bce_option():
    task = tasks.get("self_confidence", confidence_reward="bce")
    score = task.score(completion("\\frac{1}{2}", "0.75"), "0.5")
    assert score.rewards == pytest.approx((1.0, math.log(0.75)))
    assert score.answer == "\\frac{1}{2}"
    wrong = task.score(completion("3", "1"), "0.5")
    assert wrong.rewards == pytest.approx((0.0, math.log(BCE_EPS)))  # q clipped to 1 - eps


def test_malformed_policies():
    cut = completion("19", "0.9")[:-8]  # truncated inside </confidence>
    partial = tasks.get("arithmetic").score(cut, "19")
    assert partial.malformed and partial.spans is None
    assert partial.rewards == (1.0, -1.0) and partial.outcomes == (0, 1) and partial.correct
    worst = tasks.get("arithmetic", malformed="all_worst").score(cut, "19")
    assert worst.rewards == (0.0, -1.0) and worst.outcomes == (0, tasks.MALFORMED_OUTCOME)
    nothing = tasks.get("arithmetic").score("I don't know", "19")
    assert nothing.rewards == (0.0, -1.0) and nothing.answer is None and nothing.partition == ((0, 12), (12, 12))
    # a malformed prefix is a stratum of its own, apart from well-formed wrong answers (outcome 0)
    assert nothing.outcomes == (0, tasks.MALFORMED_OUTCOME) and tasks.MALFORMED_OUTCOME not in (0, 1)


def test_malformed_carry_charges_the_left_out_blocks_to_the_block_the_text_broke_in():
    """malformed="carry": r_k(broken block) = its worst + sum of the worst rewards of the blocks after
    it; blocks before it are scored, blocks after it keep their worst; well-formed completions and
    completions broken in the last block score as under "partial"."""
    carry, partial = tasks.get("arithmetic", malformed="carry"), tasks.get("arithmetic")
    in_solution = completion("19", "0.9")[:20]  # cut inside <reasoning>: block 1 broken
    assert carry.score(in_solution, "19").rewards == (0.0 + -1.0, -1.0)
    assert partial.score(in_solution, "19").rewards == (0.0, -1.0)
    assert carry.score("I don't know", "19").rewards == (-1.0, -1.0)
    assert carry.score(in_solution, "19").outcomes == partial.score(in_solution, "19").outcomes
    in_confidence = completion("19", "0.9")[:-8]  # solution complete, cut inside </confidence>
    assert carry.score(in_confidence, "19").rewards == partial.score(in_confidence, "19").rewards == (1.0, -1.0)
    whole = completion("19", "0.9")
    assert carry.score(whole, "19") == partial.score(whole, "19")
    bce = tasks.get("arithmetic", malformed="carry", confidence_reward="bce")
    assert bce.score("nothing", "19").rewards == pytest.approx((math.log(BCE_EPS), math.log(BCE_EPS)))
    # a worst reward of 0 (the shaped second attempt) carries nothing
    two = tasks.get("arithmetic_two_attempt", malformed="carry")
    assert two.score("<reasoning>cut", "5").rewards == tasks.get("arithmetic_two_attempt").score("<reasoning>cut", "5").rewards


def test_total_reward_is_the_sum_partial_gives_whatever_the_policy():
    """task.total_reward(score) = sum_k r_k under "partial"; under "carry" the left-out blocks' worst
    rewards are both carried into the broken block and kept in their own, so the plain sum counts
    them twice and total_reward must not: a broken solution totals 0 + (-1) = -1 under both
    policies, where sum(carry rewards) gives -2. Whole and late-broken completions are unchanged."""
    carry, partial = tasks.get("arithmetic", malformed="carry"), tasks.get("arithmetic")
    for text in (completion("19", "0.9")[:20], "I don't know", completion("19", "0.9")[:-8],
                 completion("19", "0.9"), completion("7", "0.2")):
        expected = sum(partial.score(text, "19").rewards)
        assert partial.total_reward(partial.score(text, "19")) == pytest.approx(expected)
        assert carry.total_reward(carry.score(text, "19")) == pytest.approx(expected)
    broken = carry.score(completion("19", "0.9")[:20], "19")
    assert sum(broken.rewards) == -2.0 and carry.total_reward(broken) == -1.0


def test_carry_charges_only_worst_rewards_below_zero():
    """A later block whose worst reward is above 0 (a custom reward) is not carried: "carry" never
    raises a block's reward, so a broken completion still never earns more than a whole one."""
    from bae.tasks import register_block_reward

    name = "test_carry_half"
    if name not in tasks.BLOCK_REWARDS:
        register_block_reward(name, worst=0.5)(lambda ctx, k: 0.5)
    spec = {"name": "half", "verifier": "exact", "outcomes": ["correct"], "malformed": "carry",
            "blocks": [{"name": "solution", "fields": ["reasoning", "answer"], "reward": "correct"},
                       {"name": "extra", "fields": ["analysis", "confidence"], "reward": name}]}
    task = tasks.from_config(spec)
    cut = task.score("<reasoning>2 + 2", "4")
    whole_wrong = task.score(completion("5", "0.5"), "4")
    assert cut.rewards[0] == 0.0 <= whole_wrong.rewards[0]


def test_carry_is_refused_where_block_rewards_are_summed():
    """TRL's own reward functions are summed into one scalar by GRPOTrainer: with "carry" the sum
    would count a left-out block twice, so reward_funcs refuses the task."""
    from bae.engines.trl_rewards import reward_funcs

    with pytest.raises(ValueError, match="carry"):
        reward_funcs(tasks.get("arithmetic", malformed="carry"), "blocks")
    assert len(reward_funcs(tasks.get("arithmetic"), "blocks")) == 2


def test_carry_makes_a_broken_solution_worse_than_any_wrong_answer_for_its_tokens():
    """Why "carry" exists: under "partial", a solution block cut short earns r_1 = 0, the same as a
    well-formed wrong answer, so with blockwise advantages nothing tells its tokens apart from a
    wrong answer's (the confidence block's worst reward has no token to reach). Under "carry" its
    block-1 reward is below every well-formed completion's, as in the scalar sum r_1 + r_2."""
    for policy, below in (("partial", False), ("carry", True)):
        task = tasks.get("arithmetic", malformed=policy)
        broken = task.score("<reasoning>2 + 2 is", "4").rewards[0]
        wrong = min(task.score(completion("5", q), "4").rewards[0] for q in ("0", "0.5", "1"))
        assert (broken < wrong) is below and broken <= wrong


TAGS = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", "<analysis>", "</analysis>", "<confidence>", "</confidence>"]


@pytest.mark.parametrize("policy", tasks.MALFORMED_POLICIES)
@pytest.mark.parametrize("seed", range(40))
def test_a_malformed_completion_never_earns_more_than_the_well_formed_one_it_came_from(policy, seed):
    rng = random.Random(seed)
    task = tasks.get("arithmetic", malformed=policy)
    gold = str(rng.randint(0, 30))
    text = completion(rng.choice([gold, str(int(gold) + 1)]), rng.choice(["0", "0.3", "1", "0.9"]))
    original = task.score(text, gold)
    tag = rng.choice(TAGS)
    for mutated in (text[: rng.randrange(len(text))], text.replace(tag, "", 1), text.replace(tag, tag * 2, 1),
                    text + "<answer>" + gold + "</answer>", text.replace("<analysis>", "hmm <analysis>")):
        score = task.score(mutated, gold)
        assert score.malformed
        for k in range(2):
            assert score.rewards[k] <= original.rewards[k] + 1e-12, (mutated, score, original)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120), st.sampled_from(["arithmetic", "two_attempt", "arithmetic_two_attempt"]))
def test_scoring_never_raises(text, name):
    score = tasks.get(name).score(text, "7")
    assert len(score.rewards) == len(score.outcomes) == 2
    assert all(math.isfinite(r) for r in score.rewards)
    assert score.partition[0][0] == 0 and score.partition[-1][1] == len(text)


@pytest.mark.parametrize(
    "a1, a2, gold, rewards, outcome",
    [("5", "5", "5", (1.0, 1.0), 1), ("4", "5", "5", (0.0, 1.0), 0), ("4", "6", "5", (0.0, 0.1), 0),
     ("4", "4", "5", (0.0, 0.0), 0), ("5", "4", "5", (1.0, 0.1), 1)],
)
def test_two_attempt_task(a1, a2, gold, rewards, outcome):
    text = f"<reasoning>first</reasoning><answer>{a1}</answer><reasoning>check</reasoning><answer>{a2}</answer>"
    score = tasks.get("arithmetic_two_attempt").score(text, gold)
    assert score.rewards == pytest.approx(rewards) and score.outcomes == (0, outcome)
    assert score.answer == a2 and score.correct is (a2 == gold)


def test_generic_k_block_task_from_config():
    task = tasks.from_config({
        "name": "plan_solve_check",
        "blocks": [
            {"name": "plan", "fields": ["plan", "answer"], "reward": "correct"},
            {"name": "solve", "fields": ["work", "answer"], "reward": "retry"},
            {"name": "calibrate", "fields": ["confidence"], "reward": "brier"},
        ],
        "outcomes": ["correct", "correct"],
        "verifier": "exact",
    })
    text = "<plan>p</plan><answer>3</answer><work>w</work><answer>4</answer><confidence>0.6</confidence>"
    score = task.score(text, "4")
    assert task.block_names == ("plan", "solve", "calibrate")
    assert score.rewards == pytest.approx((0.0, 1.0, -(0.6 - 1) ** 2)) and score.outcomes == (0, 0, 1)


@pytest.mark.parametrize(
    "config, key",
    [
        ({"name": "t", "blocks": [{"name": "a", "fields": ["x"], "reward": "nope"}]}, "reward"),
        ({"name": "t", "blocks": [{"name": "a", "fields": ["x"], "reward": "correct", "colour": 1}]}, "colour"),
        ({"name": "t", "blocks": [{"name": "a", "fields": ["x"], "reward": "correct"}], "outcomes": ["correct"]}, "outcomes"),
        ({"name": "t", "blocks": [{"name": "a", "fields": ["x"], "reward": "correct"}], "verifier": "llm"}, "verifier"),
        ({"name": "t", "blocks": []}, "blocks"),
    ],
)
def test_bad_task_configs_name_the_key(config, key):
    with pytest.raises(ValueError, match=key):
        tasks.from_config(config)


def test_unknown_task_and_option():
    with pytest.raises(ValueError, match="unknown task"):
        tasks.get("chess")
    with pytest.raises(ValueError, match="confidence_rewards"):
        tasks.get("arithmetic", confidence_rewards="bce")


def test_prompts_and_equivalence():
    task = tasks.get("self_confidence")
    messages = task.format_prompt("What is 1+1?")
    assert messages[0]["role"] == "system" and "<confidence>" in messages[0]["content"]
    assert messages[-1] == {"role": "user", "content": "What is 1+1?"}
    assert task.equivalent("\\frac{1}{2}", "0.5") and not task.equivalent("1", "2")


def test_arithmetic_generator():
    rows = generate(300, seed=3, levels=(1, 2, 3, 4))
    assert rows == generate(300, seed=3, levels=(1, 2, 3, 4)) and rows != generate(300, seed=4, levels=(1, 2, 3, 4))
    assert {r["level"] for r in rows} == {1, 2, 3, 4}
    for r in rows:  # the answer is the value of the expression (no eval: the operators are few)
        a, op, b, *rest = r["problem"][len("What is "):-1].split()
        value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        if rest:  # a + b * c
            value = int(a) + int(b) * int(rest[1])
        assert int(r["answer"]) == value
    with pytest.raises(ValueError, match="level"):
        generate(3, levels=(9,))


def test_system_prompt_option():
    """An empty system prompt gives the user turn alone (the tiny model's warm start uses none)."""
    task = tasks.get("arithmetic", system_prompt="")
    assert task.format_prompt("What is 1 + 1?") == [{"role": "user", "content": "What is 1 + 1?"}]
    assert tasks.get("arithmetic_two_attempt", system_prompt="X").format_prompt("q")[0] == {"role": "system", "content": "X"}


def test_abstention_is_well_formed_never_correct_and_flagged():
    """With abstain="unknown" the answer "unknown" (any case, any surrounding space) is a legal,
    well-formed answer that is never correct, even against a gold that the verifier would match:
    r_sol = 0, outcome 0, and the confidence block is scored against c = 0 (BCE at q = 0 is
    log(1 - eps), the best a refusal can earn). Without the option it is just a wrong answer."""
    task = tasks.get("arithmetic", confidence_reward="bce", abstain="unknown")
    for answer in ("unknown", " Unknown ", "UNKNOWN"):
        score = task.score(completion(answer, "0"), "19")
        assert score.abstained and not score.correct and not score.malformed
        assert score.rewards == pytest.approx((0.0, math.log(1 - BCE_EPS))) and score.outcomes == (0, 0)
    assert not task.score(completion("unknown", "0"), "unknown").correct  # never correct, whatever the gold
    assert tasks.get("arithmetic").score(completion("unknown", "0"), "unknown").correct  # without: an answer
    right = task.score(completion("19", "0.9"), "19")
    assert right.correct and not right.abstained
    unflagged = tasks.get("arithmetic").score(completion("unknown", "0"), "19")
    assert not unflagged.abstained and not unflagged.correct
    cut = task.score(completion("unknown", "0")[:40], "19")  # no answer field completed: not an abstention
    assert cut.malformed and not cut.abstained


@pytest.mark.parametrize("abstain", ["", " unknown", "<answer>", "a>b"])
def test_bad_abstention_answers_are_refused(abstain):
    with pytest.raises(ValueError, match="abstain"):
        tasks.get("arithmetic", abstain=abstain)


def test_score_many_gives_the_scores_of_score():
    """task.score_many (the verifier run once per batch, over worker processes) equals task.score
    completion by completion, for the math self-confidence task (equivalent but unequal strings,
    wrong answers, malformed text) and the two-attempt task (the retry reward compares answers)."""
    math = tasks.get("self_confidence")
    texts = [f"<reasoning>r</reasoning><answer>{a}</answer><analysis>a</analysis><confidence>{q}</confidence>"
             for a, q in (("\\frac{1}{2}", "0.9"), ("0.5", "0.2"), ("1/3", "1"), ("", "0.5"), ("2", "x"))]
    texts += ["<reasoning>no answer", "<answer>0.5</answer>"]
    golds = ["0.5"] * len(texts)
    assert math.score_many(texts, golds) == [math.score(t, g) for t, g in zip(texts, golds)]
    assert [s.correct for s in math.score_many(texts, golds)][:3] == [True, True, False]
    two = tasks.get("two_attempt")
    texts = [f"<reasoning>a</reasoning><answer>{a}</answer><reasoning>b</reasoning><answer>{b}</answer>"
             for a, b in (("1", "2"), ("2", "2"), ("\\frac{4}{2}", "2"), ("3", "3"), ("3", "\\frac{6}{2}"))]
    golds = ["2"] * len(texts)
    assert two.score_many(texts, golds) == [two.score(t, g) for t, g in zip(texts, golds)]
    assert [s.rewards for s in two.score_many(texts, golds)][3:] == [(0.0, 0.0), (0.0, 0.0)]  # same wrong answer twice
