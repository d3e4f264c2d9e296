"""GDPO (bae.objective.method_advantages("gdpo", ...)): TRL's multi_objective_aggregation=
"normalize_then_sum" over the block rewards, one scalar per completion, and where it differs from BAE."""

import numpy as np
import pytest
import torch

from bae.embedded.tiny import build_model
from bae.engines.trl_rewards import reward_funcs
from bae.objective import method_advantages, method_token_advantages
from trl_scripted import Scripted, ScriptedTRL, config, dataset, one_thread, rows, task, tok  # noqa: F401


def gdpo_by_hand(r, groups, eps=1e-4):
    """z[i, k] = (r[i, k] - mean_g r_k) / (std_g r_k + eps) per group (ddof = 1), S = sum_k z,
    A = (S - mean S) / (std S + eps) over the batch (ddof = 1)."""
    z = np.zeros_like(r)
    for g in np.unique(groups):
        rows = groups == g
        std = r[rows].std(0, ddof=1) if rows.sum() > 1 else np.zeros(r.shape[1])
        z[rows] = (r[rows] - r[rows].mean(0)) / (std + eps)
    s = z.sum(1)
    return (s - s.mean()) / (s.std(ddof=1) + eps)


def test_gdpo_normalises_each_reward_in_its_group_then_the_sum_over_the_batch():
    """With interleaved group ids, a group of one (z = 0) and a constant block within a group
    (std 0: z = 0 / eps = 0), gdpo's advantage is gdpo_by_hand's, the same in every block."""
    rng = np.random.default_rng(0)
    r = np.stack([rng.integers(0, 2, 9).astype(float), -rng.random(9)], 1)  # correctness, Brier
    groups = np.array([0, 1, 2, 3, 0, 1, 2, 9, 0])  # group 9: one completion
    r[groups == 0, 0] = 1.0  # group 0 is all correct: its correctness has std 0
    adv = method_advantages("gdpo", r, groups)
    assert adv.shape == (9, 2) and np.array_equal(adv[:, 0], adv[:, 1])
    np.testing.assert_allclose(adv[:, 0], gdpo_by_hand(r, groups), rtol=1e-12, atol=1e-12)
    assert abs(adv[:, 0].mean()) < 1e-12 and adv[:, 0].std(ddof=1) == pytest.approx(1.0, abs=1e-3)


def test_gdpo_equals_trls_normalize_then_sum_on_a_batch(tok, task, dataset):
    """On one batch of scripted completions (2 prompts x 4: correct, wrong, malformed, abstaining),
    TRL's own GRPOTrainer, with bae's block rewards as its reward functions
    (bae.engines.trl_rewards) and multi_objective_aggregation="normalize_then_sum", computes the
    advantages a_TRL [N]; BlockwiseGRPOTrainer with method="gdpo" on the same completions puts
    a_TRL[i] (to float32 precision: TRL normalises in float32) on every token of completion i, and
    0 on padding."""
    trl_side = ScriptedTRL(build_model(tok), reward_funcs(task), config(multi_objective_aggregation="normalize_then_sum"),
                           dataset, processing_class=tok)
    trl_side.model.train()
    a_trl = trl_side._generate_and_score_completions(rows(dataset))["advantages"]
    bae_side = Scripted(build_model(tok), task, config(), dataset, tok, method="gdpo")
    bae_side.model.train()
    out = bae_side._generate_and_score_completions(rows(dataset))
    assert [ids for ids, _ in trl_side.script_log] == [ids for ids, _ in bae_side.script_log]
    assert a_trl.shape == (8,) and a_trl.abs().max() > 0.5 and len(set(a_trl.tolist())) > 3
    mask = out["completion_mask"].bool()
    for i in range(len(a_trl)):
        torch.testing.assert_close(out["advantages"][i, mask[i]], a_trl[i].expand(int(mask[i].sum())),
                                   rtol=1e-5, atol=1e-6)
        assert (out["advantages"][i, ~mask[i]] == 0).all()


def test_gdpo_edge_cases_and_refusals():
    """A batch of one gets 0; a torch batch gives the same numbers; gdpo normalises itself, so any
    scale but "none" is refused; its tokens carry the scalar with weight 1 whatever the aggregation."""
    assert method_advantages("gdpo", np.array([[1.0, -0.2]]), np.array([0])).tolist() == [[0.0, 0.0]]
    r = np.array([[1.0, -0.04], [0.0, -0.81], [1.0, -0.25], [0.0, -0.01]])
    groups = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(method_advantages("gdpo", torch.tensor(r), torch.tensor(groups)),
                               method_advantages("gdpo", r, groups))
    with pytest.raises(ValueError, match="scale='group'"):
        method_advantages("gdpo", r, groups, scale="group")
    ids = torch.tensor([[0, 0, 1, -1], [0, 1, 1, 1], [0, -1, -1, -1], [0, 0, 0, 1]])
    tokens = method_token_advantages("gdpo", r, groups, ids, aggregation="token-mean")
    a = method_advantages("gdpo", r, groups)[:, 0]
    torch.testing.assert_close(tokens, torch.tensor(a, dtype=torch.float32)[:, None] * (ids >= 0).float())


def test_gdpo_puts_the_confidence_signal_on_the_solution_tokens():
    """Where GDPO and BAE differ: two completions of one group that are both correct but state
    different confidences get the same solution-block advantage under BAE (the solution block sees
    correctness only) and different ones under GDPO (one scalar for every token, the confidence
    reward's share included)."""
    r = np.array([[1.0, -0.01], [1.0, -0.64], [0.0, -0.04], [0.0, -0.81]])  # q = 0.9, 0.2, 0.2, 0.9
    groups = np.zeros(4, dtype=int)
    outcomes = np.array([[0, 1], [0, 1], [0, 0], [0, 0]])
    bae = method_advantages("bae", r, groups, outcomes, baseline="ocb")
    gdpo = method_advantages("gdpo", r, groups)
    assert bae[0, 0] == bae[1, 0]
    assert gdpo[0, 0] > gdpo[1, 0]


def test_bae_train_config_takes_gdpo():
    """`bae train` takes `method: gdpo` from YAML (bae.runs.config validates against
    bae.objective.METHODS) and refuses a scale with it before any compute, naming the key."""
    from bae.runs.config import ConfigError, parse

    assert parse({"method": "gdpo"}).method == "gdpo"
    with pytest.raises(ConfigError, match="scale 'group': method gdpo"):
        parse({"method": "gdpo", "scale": "group"})
