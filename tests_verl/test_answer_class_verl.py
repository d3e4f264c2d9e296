"""The answer_class outcome through the verl adapter: the reward manager's per-row extra info
carries each prefix's answer and the task, and scored_batch assigns the classes over the uids'
groups, so the estimators see the same strata as the core (and the TRL engine)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("verl")

import bae.engines.verl as bv  # noqa: E402
from bae import tasks  # noqa: E402
from bae.advantages import blockwise_advantages  # noqa: E402
from bae.embedded.tiny import build_tokenizer  # noqa: E402

TASK = tasks.get("arithmetic", outcome="answer_class")


def text(answer: str, confidence: str = "0.5") -> str:
    return f"<reasoning>r</reasoning><answer>{answer}</answer><analysis>a</analysis><confidence>{confidence}</confidence>"


def test_scored_batch_assigns_answer_classes_per_uid():
    tokenizer = build_tokenizer()
    group_a = [text("4", "0.9"), text("5", "0.3"), text("04", "0.6"), text("6", "0.1"), "<reasoning>cut"]
    group_b = [text("5", "0.2"), text("5", "0.7"), text("4", "0.4")]
    rows = [("a", t) for t in group_a] + [("b", t) for t in group_b]
    order = np.random.default_rng(0).permutation(len(rows))  # groups scattered, as after _balance_batch
    rows = [rows[i] for i in order]
    infos = [bv.score_response(TASK, tokenizer, tokenizer(t)["input_ids"] + [tokenizer.eos_token_id], "4")["reward_extra_info"]
             for _, t in rows]
    assert all(np.ndim(v) == 0 for v in infos[0].values())  # scalars and strings: verl stacks them
    assert infos[0][bv.TASK_KEY] and bv.ANSWER_KEY.format(1) in infos[0]
    assert bv.ANSWER_KEY.format(1) not in bv.score_response(tasks.get("arithmetic"), tokenizer,
                                                            tokenizer(group_a[0])["input_ids"], "4")["reward_extra_info"]
    uids = np.array([u for u, _ in rows], dtype=object)
    batch = bv.scored_batch(infos, uids)
    scores = [TASK.score(t, "4") for _, t in rows]
    expected = TASK.group_outcomes([s.outcomes for s in scores], [s.prefix_answers for s in scores], uids)
    np.testing.assert_array_equal(batch.outcomes, expected)
    by_row = {t + u: o for (u, t), o in zip(rows, batch.outcomes[:, 1])}
    assert by_row[group_a[0] + "a"] == by_row[group_a[2] + "a"] != by_row[group_a[1] + "a"]  # 4 = 04 != 5
    assert by_row["<reasoning>cut" + "a"] == tasks.MALFORMED_OUTCOME
    assert by_row[group_b[0] + "b"] == by_row[group_b[1] + "b"] != by_row[group_b[2] + "b"]
    # the column route (a non_tensor_batch with the keys merged) gives the same batch
    columns = {key: np.array([info[key] for info in infos]) for key in infos[0]}
    np.testing.assert_array_equal(bv.scored_batch_from_columns(columns, uids).outcomes, expected)
    adv = batch.with_fields(groups=uids.astype(str)).advantages("bae", "ocb")
    np.testing.assert_allclose(adv, blockwise_advantages(batch.rewards, uids.astype(str), expected, baseline="ocb"))
