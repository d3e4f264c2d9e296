"""bae's rewards as plain TRL reward functions, for an unmodified `trl.GRPOTrainer`.

    from trl import GRPOConfig, GRPOTrainer
    from bae.engines.trl_rewards import reward_funcs

    trainer = GRPOTrainer(model, reward_funcs=reward_funcs("self_confidence"),  # [solution, confidence]
                          args=GRPOConfig(output_dir="out", multi_objective_aggregation="normalize_then_sum"),
                          train_dataset=data)  # data: "prompt" (e.g. task.format_prompt(problem)) and "answer"

Each function follows TRL's reward-function protocol: called as f(prompts=..., completions=...,
completion_ids=..., answer=[...], <other dataset columns>, trainer_state=...), it returns one float
per completion. A completion is a string (plain prompts) or a list of messages (conversational
prompts: the content of its last assistant message is scored). Every function is built from a
bae Task and scores with `task.score`, the parsing, verifier and malformed policy that
BlockwiseGRPOTrainer uses; the functions of one `reward_funcs` call score each batch once.

Kinds (`reward_funcs(task, *kinds)`, default "blocks"):
    "blocks"  one function per block, "<block>_reward", the block's reward (self_confidence:
              correctness, then the confidence reward: Brier -(q - c)^2, or the log score
              c log q + (1 - c) log(1 - q) with tasks.get("self_confidence", confidence_reward="bce")),
              named as BlockwiseGRPOTrainer logs them (rewards/<block>_reward/mean)
    "format"  "format_reward": 1.0 when the completion follows the task's block format, else 0.0
    "rlcr"    "rlcr_reward": the sum of the block rewards, RLCR's c - (q - c)^2 with the Brier
              confidence reward (bae's method "rlcr" as one TRL reward)

TRL then turns the functions' rewards into one scalar advantage per completion (summed with
`reward_weights` and normalised, or GDPO's `multi_objective_aggregation="normalize_then_sum"`);
per-block advantages need BlockwiseGRPOTrainer (bae.engines.trl).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from bae import tasks as _tasks
from bae.tasks import Task

KINDS = ("blocks", "format", "rlcr")
ANSWER_COLUMN = "answer"
"""The dataset column of the gold answers (as BlockwiseGRPOTrainer's)."""


def completion_text(completion: Any) -> str:
    """The text TRL's completion stands for: the string itself, or the content of a
    conversational completion's last assistant message (its text parts, for content blocks)."""
    if isinstance(completion, str):
        return completion
    message = next((m for m in reversed(completion) if m.get("role") == "assistant"), None)
    content = "" if message is None else message.get("content") or ""
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return content


class _Scorer:
    """task.score of one batch, shared by the functions of one reward_funcs call: TRL calls them
    one after another on the same completions, and scoring (a math-verify check) is the cost."""

    def __init__(self, task: Task, answer_column: str):
        self.task, self.answer_column = task, answer_column
        self._key: tuple | None = None
        self._scores: list = []

    def __call__(self, completions: Sequence[Any], kwargs: dict[str, Any]) -> list:
        golds = kwargs.get(self.answer_column)
        if golds is None:
            raise ValueError(f"the dataset needs an {self.answer_column!r} column (the gold answer of each prompt) "
                             "for task.score")
        key = (tuple(completion_text(c) for c in completions), tuple(str(g) for g in golds))
        if key != self._key:
            self._scores = self.task.score_many(list(key[0]), list(key[1]))  # the batch's verifier calls at once
            self._key = key
        return self._scores


def _named(name: str, value: Callable[[Any], float], scorer: _Scorer) -> Callable[..., list[float]]:
    def reward(completions, **kwargs):
        return [float(value(score)) for score in scorer(completions, kwargs)]

    reward.__name__ = reward.__qualname__ = name  # TRL logs rewards/<name>/mean
    return reward


def reward_funcs(task: Task | str, *kinds: str, answer_column: str = ANSWER_COLUMN) -> list[Callable[..., list[float]]]:
    """TRL reward functions from a bae task (or a built-in task's name): the kinds in order,
    "blocks" (one per block) by default; see the module docstring."""
    task = _tasks.get(task) if isinstance(task, str) else task
    if not isinstance(task, Task):
        raise ValueError(f"task must be a bae.tasks.Task or a built-in task name, got {type(task).__name__}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown reward kinds {unknown}; choose from {KINDS}")
    if task.config.malformed == "carry":
        raise ValueError("task malformed='carry' is for blockwise advantages (BlockwiseGRPOTrainer); TRL sums these "
                         "reward functions into one scalar, which would count the left-out blocks twice: use "
                         "malformed='partial'")
    scorer = _Scorer(task, answer_column)
    funcs = []
    for kind in kinds or ("blocks",):
        if kind == "blocks":
            funcs += [_named(f"{name}_reward", lambda s, k=k: s.rewards[k], scorer)
                      for k, name in enumerate(task.block_names)]
        elif kind == "format":
            funcs.append(_named("format_reward", lambda s: not s.malformed, scorer))
        else:
            funcs.append(_named("rlcr_reward", lambda s: sum(s.rewards), scorer))
    return funcs
