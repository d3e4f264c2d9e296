"""Block rewards and intermediate outcomes, registered by name so that a task can be built from a
config (bae.tasks.from_config) without code. Each block reward declares its worst value, which a
malformed or unscorable block gets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from bae.rewards import bce_reward, brier_reward, parse_confidence, two_attempt_reward

@dataclass
class Context:
    """What a block reward sees: the fields of the complete blocks, the gold answer, the verifier."""

    fields: tuple[dict[str, str], ...]
    gold: str
    verify: Callable[[str, str], bool]
    abstain: str | None = None
    _correct: dict[int, bool] = field(default_factory=dict)

    def answer(self, k: int) -> str | None:
        """The answer of block k, if it has a non-empty answer field."""
        if k < len(self.fields):
            return self.fields[k].get("answer") or None
        return None

    def abstained(self, k: int) -> bool:
        """Whether block k's answer is the task's abstention answer (compared ignoring case and
        surrounding whitespace)."""
        a = self.answer(k)
        return self.abstain is not None and a is not None and a.strip().casefold() == self.abstain.casefold()

    def correct(self, k: int) -> bool:
        if k not in self._correct:
            a = self.answer(k)  # an abstention is never correct, whatever the verifier says
            self._correct[k] = a is not None and not self.abstained(k) and bool(self.verify(a, self.gold))
        return self._correct[k]

    def last_answered(self, before: int) -> int | None:
        """The latest block before `before` that gave an answer."""
        return next((j for j in range(min(before, len(self.fields)) - 1, -1, -1) if self.answer(j) is not None), None)

    def correct_before(self, k: int) -> int:
        j = self.last_answered(k)
        return int(j is not None and self.correct(j))


@dataclass(frozen=True)
class BlockReward:
    """fn(ctx, k) -> reward of block k, or None when the block cannot be scored (-> worst)."""

    fn: Callable[[Context, int], float | None]
    worst: float
    doc: str


BLOCK_REWARDS: dict[str, BlockReward] = {}
OUTCOMES: dict[str, Callable[[Context, int], int]] = {}


def register_block_reward(name: str, worst: float, doc: str = ""):
    def decorate(fn):
        BLOCK_REWARDS[name] = BlockReward(fn, worst, doc or (fn.__doc__ or "").strip())
        return fn

    return decorate


def register_outcome(name: str):
    def decorate(fn):
        OUTCOMES[name] = fn
        return fn

    return decorate


@register_block_reward("correct", worst=0.0)
def _correct(ctx: Context, k: int) -> float | None:
    """c_k = 1 if block k's answer is verified equal to the gold answer, else 0."""
    return float(ctx.correct(k)) if ctx.answer(k) is not None else None


def _confidence_reward(rule):
    def reward(ctx: Context, k: int) -> float | None:
        q = parse_confidence(ctx.fields[k].get("confidence"))
        return None if q is None else rule(q, float(ctx.correct_before(k)))

    return reward


register_block_reward("brier", worst=-1.0, doc="-(q - c)^2, c = correctness of the latest answer before the block")(
    _confidence_reward(brier_reward)
)
register_block_reward("bce", worst=bce_reward(1.0, 0.0), doc="c log q + (1-c) log(1-q), q clipped to [eps, 1-eps]")(
    _confidence_reward(bce_reward)
)


@register_block_reward("retry", worst=0.0)
def _retry(ctx: Context, k: int) -> float | None:
    """Two-attempt shaped reward: 1 if correct, 0.1 if wrong with a new answer, 0 if the same."""
    previous = ctx.answer(ctx.last_answered(k)) if ctx.last_answered(k) is not None else None
    return two_attempt_reward(ctx.correct(k), ctx.answer(k), previous, ctx.verify)


@register_outcome("correct")
def _outcome_correct(ctx: Context, k: int) -> int:
    """1 if the latest answer before block k is correct, else 0."""
    return ctx.correct_before(k)

