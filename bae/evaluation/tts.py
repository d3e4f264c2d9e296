"""Test-time scaling from n sampled completions per prompt (the paper's evaluation protocol).

Strategies, each a way to turn k samples of one prompt into one answer (or, for Pass@k, a hit):

- Pass@1: a single sample; its mean over subsets is the prompt's accuracy, flat in k.
- Pass@k: some sample of k is correct; the unbiased estimator from n samples with c correct,
  pass@k = 1 - C(n-c, k) / C(n, k) (Chen et al. 2021), exact, no subsets needed.
- Majority vote: the answer group with the most members.
- Max-confidence: the answer of the most confident sample.
- Confidence-weighted majority: argmax_a sum_i q_i 1[a_i = a].

Answers are grouped by verifier equivalence, not string equality (``group_answers``; the report
passes the task's verifier; ``majority_vote`` and ``weighted_majority`` use math-verify's
equivalence, bae.verify.math_equal, unless given another, e.g. ``str.__eq__``). A sample
with no answer (None: malformed or missing) never votes and is never chosen; a missing confidence
counts as 0.0. When no sample of a subset has an answer, the subset's choice is None (wrong).

Tie rules (documented, deterministic):
- majority vote: among groups with the most votes, the group whose first member comes first in
  the input (subset) order;
- weighted majority: the largest sum of confidences; ties (exactly equal sums) go to the group
  with more votes, then to the group whose first member comes first;
- max-confidence: the first sample (input order) among those with the largest confidence.
The chosen answer is the answer text of the chosen group's first member, and a choice is correct
exactly when that sample was scored correct.

Curves over k = 1..n average each strategy over k-subsets of a prompt's samples (subsets keep the
original sample order): all C(n, k) subsets when there are at most ``max_subsets`` of them, else
``max_subsets`` random subsets drawn with a seeded numpy Generator; then the mean over prompts.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np

Equivalent = Callable[[str, str], bool]

STRATEGIES = ("pass@1", "pass@k", "majority", "max_confidence", "weighted_majority")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which is stable for large n. Requires integers
    0 <= c <= n and 1 <= k <= n; anything else raises ValueError.
    """
    if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in (n, c, k)):
        raise ValueError(f"n, c and k must be integers, got n={n!r}, c={c!r}, k={k!r}")
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def group_answers(
    answers: Sequence[str | None],
    equivalent: Equivalent,
    correct: Sequence[bool] | None = None,
) -> np.ndarray:
    """Group ids [n] of answers under verifier equivalence; -1 for a missing answer (None).

    Greedy in input order: an answer joins the first existing group whose first member (its
    representative) it is equivalent to, else starts a new group, so group ids count up in order
    of first appearance. ``equivalent(a, b)`` (required: the task's verifier, e.g.
    task.equivalent) is called only when the stripped strings differ (equal strings are
    equivalent). When ``correct`` is given, the
    verifier's judgement against the gold is reused: correct answers form one group (each is
    equivalent to the gold) and a correct answer is never equivalent to a wrong one, so
    ``equivalent`` is only called between wrong answers.
    """
    if correct is not None and len(correct) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correct flags")
    ids = np.full(len(answers), -1, dtype=int)
    representatives: list[tuple[str, bool | None]] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        label = None if correct is None else bool(correct[i])
        for g, (rep, rep_label) in enumerate(representatives):
            if label is not None and label != rep_label:
                continue
            if label or answer.strip() == rep.strip():
                ids[i] = g
                break
            if equivalent(answer, rep):
                ids[i] = g
                break
        else:
            ids[i] = len(representatives)
            representatives.append((answer, label))
    return ids


def choose(groups: np.ndarray, confidence: np.ndarray, strategy: str) -> np.ndarray:
    """Position of the chosen sample in each row of k samples, or -1 when no sample has an answer.

    groups [m, k] holds group ids (-1 = no answer), confidence [m, k] the confidences (missing
    already replaced by 0.0). ``strategy`` is "majority", "max_confidence" or
    "weighted_majority"; the tie rules are in the module docstring. Returns [m] positions.
    """
    groups = np.atleast_2d(groups)
    confidence = np.atleast_2d(np.asarray(confidence, dtype=float))
    m, k = groups.shape
    answered = groups >= 0  # [m, k]
    none = ~answered.any(axis=1)  # [m]
    if strategy == "max_confidence":
        score = np.where(answered, confidence, -np.inf)  # [m, k]
        chosen = np.argmax(score, axis=1)  # first of the largest
        return np.where(none, -1, chosen)
    if strategy not in ("majority", "weighted_majority"):
        raise ValueError(f"unknown strategy {strategy!r}; use majority, max_confidence or weighted_majority")
    n_groups = int(groups.max()) + 1 if answered.any() else 1
    member = groups[:, :, None] == np.arange(n_groups)  # [m, k, G]
    votes = member.sum(axis=1)  # [m, G]
    weight = np.einsum("mkg,mk->mg", member, confidence)  # [m, G]
    position = np.arange(k)[None, :, None]  # [1, k, 1]
    first = np.where(member, position, k).min(axis=1)  # [m, G] first position of each group
    alive = votes > 0  # [m, G]
    if strategy == "weighted_majority":
        best_w = np.where(alive, weight, -np.inf).max(axis=1, keepdims=True)
        alive &= weight == best_w
    best_v = np.where(alive, votes, -1).max(axis=1, keepdims=True)
    alive &= votes == best_v
    winner_first = np.where(alive, first, k).min(axis=1)  # [m]
    return np.where(none, -1, winner_first)


def _choose_answer(answers, confidences, equivalent, strategy) -> str | None:
    if equivalent is None:
        from bae.verify import math_equal as equivalent
    groups = group_answers(answers, equivalent)
    confidences = [0.0] * len(answers) if confidences is None else confidences
    q = np.array([0.0 if x is None else float(x) for x in confidences], dtype=float)  # [n]
    if q.size != len(answers):
        raise ValueError(f"{len(answers)} answers but {q.size} confidences")
    if q.size == 0:
        return None
    position = int(choose(groups[None, :], q[None, :], strategy)[0])
    return None if position < 0 else answers[position]


def majority_vote(answers: Sequence[str | None], equivalent: Equivalent | None = None) -> str | None:
    """The answer with the most votes, answers grouped by ``equivalent`` (default: math-verify's
    equivalence, bae.verify.math_equal); ties: first group to appear.

    Returns the first member's text of the winning group, or None when no answer is given.
    """
    return _choose_answer(answers, None, equivalent, "majority")


def max_confidence(
    answers: Sequence[str | None], confidences: Sequence[float | None]
) -> str | None:
    """The answer of the most confident answered sample; ties: first in order; None if none."""
    return _choose_answer(answers, confidences, str.__eq__, "max_confidence")


def weighted_majority(
    answers: Sequence[str | None],
    confidences: Sequence[float | None],
    equivalent: Equivalent | None = None,
) -> str | None:
    """Confidence-weighted majority: argmax_a sum_i q_i 1[a_i = a] over answer groups, grouped by
    ``equivalent`` (default: math-verify's equivalence, bae.verify.math_equal).

    Missing confidences count as 0.0 and missing answers do not vote. Ties in the sum go to the
    group with more votes, then to the group that appears first. Returns the first member's text
    of the winning group, or None when no answer is given.
    """
    return _choose_answer(answers, confidences, equivalent, "weighted_majority")


def subsets(n: int, k: int, max_subsets: int, rng: np.random.Generator) -> np.ndarray:
    """Index sets [m, k] (each row sorted): all C(n, k) when C(n, k) <= max_subsets, else
    ``max_subsets`` uniformly random k-subsets (drawn independently, so repeats are possible)."""
    if math.comb(n, k) <= max_subsets:
        return np.array(list(itertools.combinations(range(n), k)), dtype=int).reshape(-1, k)
    keys = rng.random((max_subsets, n))  # [m, n]
    return np.sort(np.argsort(keys, axis=1)[:, :k], axis=1)  # [m, k]


def prompt_curves(
    groups: np.ndarray,
    confidence: np.ndarray,
    correct: np.ndarray,
    ks: Sequence[int],
    max_subsets: int = 64,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Each strategy's expected success at each k for one prompt's n samples.

    groups, confidence, correct: [n]. Returns {strategy: [len(ks)]}: Pass@1 = mean c; Pass@k by
    ``pass_at_k``; the voting strategies as the mean over subsets of correct[chosen] (0 when the
    choice is None).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    n = groups.size
    correct = np.asarray(correct, dtype=float)
    out = {s: np.empty(len(ks)) for s in STRATEGIES}
    for j, k in enumerate(ks):
        out["pass@1"][j] = correct.mean()
        out["pass@k"][j] = pass_at_k(n, int(correct.sum()), int(k))
        idx = subsets(n, int(k), max_subsets, rng)  # [m, k]
        for strategy in ("majority", "max_confidence", "weighted_majority"):
            pos = choose(groups[idx], confidence[idx], strategy)  # [m]
            rows = np.arange(idx.shape[0])
            hit = np.where(pos >= 0, correct[idx[rows, np.maximum(pos, 0)]], 0.0)  # [m]
            out[strategy][j] = hit.mean()
    return out


def tts_curves(
    prompts: Sequence[dict],
    max_subsets: int = 64,
    seed: int = 0,
) -> dict:
    """Test-time-scaling curves averaged over prompts, with standard errors over prompts.

    ``prompts``: one dict per prompt with ``groups`` [n] (from ``group_answers``), ``confidence``
    [n] (missing as 0.0) and ``correct`` [n]. k runs over 1..min n (prompts with more samples use
    subsets of theirs). Returns {"k": [K], strategy: {"value": [K], "se": [K]}}, the standard
    error being std over prompts (ddof=1) / sqrt(P). No prompts or a prompt without samples:
    {"k": []} plus empty lists.
    """
    sizes = [len(p["groups"]) for p in prompts]
    if not sizes or min(sizes) == 0:
        return {"k": [], **{s: {"value": [], "se": []} for s in STRATEGIES}}
    ks = list(range(1, min(sizes) + 1))
    rng = np.random.default_rng(seed)
    per_prompt = {s: np.empty((len(prompts), len(ks))) for s in STRATEGIES}  # [P, K]
    for i, p in enumerate(prompts):
        curves = prompt_curves(
            np.asarray(p["groups"], dtype=int),
            np.asarray(p["confidence"], dtype=float),
            np.asarray(p["correct"], dtype=float),
            ks,
            max_subsets,
            rng,
        )
        for s in STRATEGIES:
            per_prompt[s][i] = curves[s]
    result: dict = {"k": ks}
    n_prompts = len(prompts)
    for s in STRATEGIES:
        values = per_prompt[s]
        se = values.std(axis=0, ddof=1) / np.sqrt(n_prompts) if n_prompts > 1 else np.zeros(len(ks))
        result[s] = {"value": values.mean(axis=0).tolist(), "se": se.tolist()}
    return result
