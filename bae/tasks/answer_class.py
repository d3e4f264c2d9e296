"""Outcomes computed over a group: the answer class (outcome strata without a gold answer).

The paper's OCB strata are the correct / incorrect outcomes of the prefix, which need the gold
answer. "answer_class" groups the members of a group by the verifier-equivalence class of the
answer their prefix gave instead (the paper's learned outcome clusters, in their simplest form):
members whose answers the task's verifier calls equivalent ("\\frac{1}{2}" and "0.5" under the
math verifier) share a stratum; a malformed prefix keeps MALFORMED_OUTCOME (-1), its own stratum;
an abstention (the task's abstain answer) is one class, and so is a well-formed prefix without a
usable answer. The gold answer is never read.

Such an outcome needs the other members of the group, which a per-completion outcome `(ctx, k) ->
int` cannot see. So it is computed in two steps: Task.score gives every well-formed prefix the
placeholder outcome 0 and records the answer each prefix gave (Score.prefix_answers); then, once
the batch's groups are known, `answer_classes` (through Task.group_outcomes or
bae.batch.ScoredBatch.with_group_outcomes) replaces those columns with class ids. Before that step
all well-formed prefixes of a group are one stratum, so OCB over them is the group mean of the
well-formed members: a consumer that skips the step gets a weaker baseline, never a biased one.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from bae.tasks.registry import Context, register_outcome

MALFORMED = -1  # bae.tasks.MALFORMED_OUTCOME (task.py imports this module, so it is repeated here)


@register_outcome("answer_class")
def _outcome_answer_class(ctx: Context, k: int) -> int:
    """Placeholder of a group-level outcome: 0 for every well-formed prefix, until the batch step
    (`answer_classes`) assigns the equivalence class of the prefix's answer within its group."""
    return 0


def answer_classes(answers: Sequence[str | None], groups: Any, equivalent: Callable[[str, str], bool],
                   abstain: str | None = None, malformed: Any = None) -> np.ndarray:
    """[N] int64 class of each row's answer within its group: rows of a group whose answers are
    equivalent share an id in 0..C_g-1 (numbered in order of first appearance); malformed rows get
    -1; the abstention answer (compared ignoring case and surrounding space, as
    Context.abstained) is one class, and so is "no answer" (None).

    answers [N]: each row's answer (str or None). groups [N]: group ids (any comparable values).
    equivalent(a, b): the task's verifier equivalence; the check is made both ways (a verifier may
    treat its arguments as prediction and gold), and an answer is compared with the first member
    (the representative) of each existing class in order, joining the first that matches. For a
    transitive equivalence (exact match) this is the partition into equivalence classes whatever the
    order; for one that is not (a numeric tolerance), the first match decides. Answers equal as
    stripped strings are matched without calling the verifier. malformed [N] bool: rows whose prefix
    is malformed (default none). N = 0 gives []."""
    n = len(answers)
    out = np.zeros(n, np.int64)
    if n == 0:
        return out
    bad = np.zeros(n, bool) if malformed is None else np.asarray(malformed, bool)
    group_ids = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
    folded = abstain.strip().casefold() if abstain is not None else None
    classes: dict[int, dict] = {}  # group -> {"reps": [representative answers], "by_text": {text: id}, "special": {}}
    for i in range(n):
        if bad[i]:
            out[i] = MALFORMED
            continue
        state = classes.setdefault(int(group_ids[i]), {"reps": [], "by_text": {}, "special": {}})
        a = answers[i]
        if a is None or (folded is not None and a.strip().casefold() == folded):
            key = "none" if a is None else "abstain"
            if key not in state["special"]:
                state["special"][key] = len(state["reps"])
                state["reps"].append(None)  # a special class takes an id but is never compared with
            out[i] = state["special"][key]
            continue
        text = a.strip()
        if text in state["by_text"]:
            out[i] = state["by_text"][text]
            continue
        found = next((c for c, rep in enumerate(state["reps"])
                      if rep is not None and (equivalent(a, rep) or equivalent(rep, a))), None)
        if found is None:
            found = len(state["reps"])
            state["reps"].append(a)
        state["by_text"][text] = found
        out[i] = found
    return out


GROUP_OUTCOMES: dict[str, Callable[..., np.ndarray]] = {"answer_class": answer_classes}
"""Outcome names whose ids are assigned over a group, not per completion (see Task.group_outcomes)."""
