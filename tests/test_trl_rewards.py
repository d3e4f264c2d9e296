"""bae.engines.trl_rewards: bae's rewards as reward functions of an unmodified trl.GRPOTrainer."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from trl import GRPOTrainer

from bae import tasks
from bae.embedded.tiny import build_model
from bae.engines.trl_rewards import completion_text, reward_funcs
from trl_scripted import G, PROBLEMS, ScriptedTRL, config, dataset, one_thread, rows, task, tok  # noqa: F401

README = Path(__file__).parents[1] / "README.md"
TEXTS = [  # correct and confident, wrong and confident, correct and unsure, malformed, unparseable confidence
    ("<reasoning>3 + 4 = 7</reasoning><answer>7</answer><analysis>sure</analysis><confidence>0.9</confidence>", "7"),
    ("<reasoning>12 + 9</reasoning><answer>22</answer><analysis>ok</analysis><confidence>0.8</confidence>", "21"),
    ("<reasoning>8 - 5</reasoning><answer>3</answer><analysis>hm</analysis><confidence>0.3</confidence>", "3"),
    ("the answer is 12", "12"),
    ("<reasoning>x</reasoning><answer>12</answer><analysis>y</analysis><confidence>very</confidence>", "12"),
]


def call(func, completions, golds):
    """As TRL calls a reward function: keywords, with the dataset columns and TRL's extras."""
    return func(prompts=["p"] * len(completions), completions=completions, completion_ids=[[1]] * len(completions),
                answer=golds, trainer_state=None, log_extra=None, log_metric=None)


@pytest.mark.parametrize("confidence_reward", ["brier", "bce"])
def test_values_are_task_scores_for_plain_and_conversational_completions(confidence_reward):
    """Each function returns, per completion, what task.score gives it: the block rewards
    (correctness; Brier -(q - c)^2 or the log score c log q + (1 - c) log(1 - q)), 1 - malformed,
    and their sum (RLCR's c - (q - c)^2 under Brier); the same for a plain string and for the
    conversational form TRL passes (a list holding the assistant message)."""
    task = tasks.get("self_confidence", confidence_reward=confidence_reward)
    funcs = reward_funcs(task, "blocks", "format", "rlcr")
    assert [f.__name__ for f in funcs] == ["solution_reward", "confidence_reward", "format_reward", "rlcr_reward"]
    texts, golds = [t for t, _ in TEXTS], [g for _, g in TEXTS]
    scores = [task.score(t, g) for t, g in TEXTS]
    want = [[s.rewards[0] for s in scores], [s.rewards[1] for s in scores], [float(not s.malformed) for s in scores],
            [sum(s.rewards) for s in scores]]
    conversational = [[{"role": "assistant", "content": t}] for t in texts]
    for completions in (texts, conversational):
        got = [call(f, completions, golds) for f in funcs]
        assert got == want
    q, c = 0.9, 1.0
    first = [call(f, texts, golds)[0] for f in funcs]
    if confidence_reward == "brier":
        assert first == pytest.approx([1.0, -(q - c) ** 2, 1.0, c - (q - c) ** 2])
    else:
        assert first[1] == pytest.approx(math.log(q))
    assert call(funcs[2], texts, golds)[3] == 0.0 and call(funcs[1], texts, golds)[4] == task.worst_rewards[1]


def test_completion_text_forms():
    """A string is itself; a conversation is its last assistant message, content blocks joined."""
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "tool", "content": "t"},
                            {"role": "assistant", "content": [{"type": "text", "text": "b"},
                                                              {"type": "image"}, {"type": "text", "text": "c"}]}]) == "bc"
    assert completion_text([]) == ""


def test_one_batch_is_scored_once():
    """The functions of one reward_funcs call share the scoring of a batch: task.score runs once per
    completion however many functions read it, and again for a new batch."""
    task = tasks.get("arithmetic")
    calls = []
    original = task.score
    task.score = lambda text, gold, *rest: calls.append(text) or original(text, gold, *rest)
    funcs = reward_funcs(task, "blocks", "format", "rlcr")
    texts, golds = [t for t, _ in TEXTS], [g for _, g in TEXTS]
    for f in funcs:
        call(f, texts, golds)
    assert len(calls) == len(texts)
    call(funcs[0], texts[:2], golds[:2])
    assert len(calls) == len(texts) + 2


def test_refusals():
    """A dataset without the answer column, an unknown kind or task: ValueError naming it."""
    with pytest.raises(ValueError, match="'answer' column"):
        reward_funcs("arithmetic")[0](completions=["x"], prompts=["p"])
    with pytest.raises(ValueError, match="unknown reward kinds"):
        reward_funcs("arithmetic", "brier")
    with pytest.raises(ValueError, match="task must be"):
        reward_funcs(3)


def test_scripted_grpo_step_logs_the_task_scores(tok, task, dataset):
    """In TRL's own GRPOTrainer (scripted completions: well-formed, malformed, correct and wrong),
    the functions' rewards are what TRL logs: rewards/<name>/mean equals the mean task score of
    the batch for each function."""
    trainer = ScriptedTRL(build_model(tok), reward_funcs(task, "blocks", "format", "rlcr"), config(), dataset,
                          processing_class=tok)
    trainer.model.train()
    trainer._generate_and_score_completions(rows(dataset))
    scores = [task.score(tok.decode(ids, skip_special_tokens=True), gold) for ids, gold in trainer.script_log]
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    want = {"solution_reward": [s.rewards[0] for s in scores], "confidence_reward": [s.rewards[1] for s in scores],
            "format_reward": [float(not s.malformed) for s in scores], "rlcr_reward": [sum(s.rewards) for s in scores]}
    for name, values in want.items():
        assert logged[f"rewards/{name}/mean"] == pytest.approx(np.mean(values), abs=1e-6), name
    assert 0 < logged["rewards/format_reward/mean"] < 1 and 0 < logged["rewards/solution_reward/mean"] < 1


@pytest.mark.parametrize("conversational", [True, False])
def test_real_grpo_trainer_step(conversational, tok, task):
    """An unmodified GRPOTrainer accepts the functions and makes a real step (sampling from the tiny
    model) with conversational prompts (task.format_prompt's messages) and with plain ones (the
    chat template applied beforehand); every function's reward is logged."""
    prompts = [task.format_prompt(p) for p, _ in PROBLEMS[:2]]
    if not conversational:
        prompts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    data = Dataset.from_list([{"prompt": p, "answer": a} for p, (_, a) in zip(prompts, PROBLEMS)])
    trainer = GRPOTrainer(build_model(tok), reward_funcs(task, "blocks", "format", "rlcr"),
                          config(per_device_train_batch_size=G, gradient_accumulation_steps=1, max_completion_length=8),
                          train_dataset=data, processing_class=tok)
    trainer.train()
    assert trainer.state.global_step == 1
    logged = [h for h in trainer.state.log_history if "loss" in h][0]
    for name in ("solution_reward", "confidence_reward", "format_reward", "rlcr_reward"):
        assert f"rewards/{name}/mean" in logged


def test_readme_reward_functions_example(tok, tmp_path, monkeypatch):
    """The README's reward-functions example runs as written with the tiny model, its tokenizer and
    a prompt/answer dataset (GRPOConfig's CPU and size settings added), one real GRPOTrainer step."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    code = next(b for b in blocks if "bae.engines.trl_rewards" in b)
    task = tasks.get("self_confidence")
    data = Dataset.from_list([{"prompt": task.format_prompt(p), "answer": a} for p, a in PROBLEMS[:2]])
    small = dict(use_cpu=True, bf16=False, per_device_train_batch_size=8, num_generations=4, max_completion_length=8,
                 max_steps=1, report_to="none", save_strategy="no", disable_tqdm=True)
    namespace = {"model": build_model(tok), "tokenizer": tok, "dataset": data}
    import trl

    class SmallConfig(trl.GRPOConfig):  # the example's GRPOConfig(...), with the settings a CPU test needs
        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, **small})

    monkeypatch.setattr(trl, "GRPOConfig", SmallConfig)
    exec(code, namespace)
    assert namespace["trainer"].state.global_step == 1
