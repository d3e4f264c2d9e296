"""BlockwiseGRPOTrainer through TRL's own train() and evaluate() loops, beyond one batch: a
generation schedule apart from the accumulation, the adaptive entropy controller, and evaluation
with its own group size (also after TRL's continuous-batching generation). Scripted completions
and the engine-free reference come from tests/trl_scripted.py."""

import numpy as np
import pytest
import torch

from bae.embedded.tiny import build_model
from bae.engines.trl import BlockwiseGRPOTrainer
from trl_scripted import (G, Scripted, assert_carries, config, dataset, direct_l_bae,  # noqa: F401
                          expected_token_advantages, one_thread, recorded_losses, reference, task, tok)

ACCUMULATION = 2
PER_DEVICE = 4


def advantages_by_row(task, tok, log, generation_size, **kwargs):
    """{completion ids: (token block ids [L], A[i] [K])}, A over each generation batch's groups."""
    out = {}
    for start in range(0, len(log), generation_size):
        batch = log[start : start + generation_size]
        blocks, adv, _, _ = reference(task, tok, batch, **kwargs)
        out.update({tuple(ids): (b, a) for (ids, _), b, a in zip(batch, blocks, adv)})
    return out


def call_l_bae(trainer, call, by_row):
    """Direct L_BAE over the rows of one recorded loss call, from the model's log-probs at that call
    and the generation's old log-probs (the current ones, on-policy, when TRL kept none)."""
    inputs = call["inputs"]
    lengths = inputs["completion_mask"].sum(1).tolist()
    rows = [by_row[tuple(ids[:n].tolist())] for ids, n in zip(inputs["completion_ids"], lengths)]
    old = inputs.get("old_per_token_logps", call["logps"])
    return direct_l_bae(trainer, call["logps"], old, [b for b, _ in rows], np.stack([a for _, a in rows]), "token")


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
@pytest.mark.parametrize("steps_per_generation", [1, 4])
def test_steps_per_generation_apart_from_accumulation(steps_per_generation, loss_type, tok, task, dataset):
    """With steps_per_generation S != gradient_accumulation_steps (= 2): S = 4 generates 16
    completions for 2 optimizer steps (the second off-policy: its old log-probs are the
    generation's), S = 1 generates anew for each micro-batch. Every token carries A[i, k] / |T_ik|
    * c, A over the groups of its own generation batch; each optimizer step's loss (its 2
    micro-batches summed) equals L_BAE over the step's 8 completions, computed directly from the
    log-probs at each call. dapo is the loss whose normaliser holds S (num_items_in_batch spans the
    generation batch). Baseline "none" for the later block: an on-policy L_BAE with a centred
    baseline in every block is 0 over whole groups, which would check no normaliser."""
    trainer = Scripted(build_model(tok), task, config(loss_type=loss_type, steps_per_generation=steps_per_generation,
                                                      gradient_accumulation_steps=ACCUMULATION, max_steps=2),
                       dataset, tok, baseline="none")
    with recorded_losses(logps=True) as calls:
        trainer.train()
    generation = PER_DEVICE * steps_per_generation
    assert len(calls) == 2 * ACCUMULATION and len(trainer.script_log) == 2 * ACCUMULATION * PER_DEVICE
    if loss_type == "dapo":
        expected = expected_token_advantages(task, tok, trainer.script_log, generation_size=generation, baseline="none")
        for call in calls:
            assert call["inputs"]["bae_num_completions"].item() == generation
            assert_carries(call["inputs"], expected)
    by_row = advantages_by_row(task, tok, trainer.script_log, generation, baseline="none")
    for step in range(2):
        step_calls = calls[step * ACCUMULATION : (step + 1) * ACCUMULATION]
        want = torch.stack([call_l_bae(trainer, call, by_row) for call in step_calls]).mean()  # equal micro-batches
        assert abs(want.item()) > 1e-4
        assert sum(call["loss"] for call in step_calls) == pytest.approx(want.item(), rel=1e-5, abs=1e-7)
    if steps_per_generation > ACCUMULATION:  # the second step reuses the generation after an update
        late = calls[-1]
        assert (late["inputs"]["old_per_token_logps"] - late["logps"]).abs().max() > 1e-4


@pytest.mark.parametrize("target,start,sign", [(1e3, 0.0, 1), (0.2, 0.01, -1)])
def test_adaptive_entropy_controller(target, start, sign, tok, task, dataset):
    """TRL's adaptive entropy controller (Table 4: use_adaptive_entropy, entropy_target,
    entropy_coef_delta) runs under the engine: after each optimizer step the coefficient moves by
    exactly entropy_coef_delta, up while the step's entropy is at or below entropy_target (a target
    of 1e3), down while it is above (the paper's 0.2: the untrained tiny model is near 5.6 nats),
    and every step logs it as entropy_coef."""
    delta = 5e-4
    trainer = Scripted(build_model(tok), task, config(max_steps=3, use_adaptive_entropy=True, entropy_target=target,
                                                      entropy_coef=start, entropy_coef_delta=delta),
                       dataset, tok)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3
    assert all((h["entropy"] <= target) == (sign > 0) for h in logs)
    assert [h["entropy_coef"] for h in logs] == pytest.approx([start + sign * delta * (s + 1) for s in range(3)],
                                                             abs=1e-12)


def check_evaluation(trainer, calls, metrics, task, tok):
    """Each evaluation call (per_device_eval_batch_size completions) carries advantages from groups
    of num_generations_eval = 2, different from groups of num_generations = 4; its loss, computed
    in eval mode, is the on-policy L_BAE -(1/N) sum_i sum_{k: T_ik nonempty} A[i, k] (baseline
    "none" for the later block, so it is not 0 by construction); the metrics are logged as
    evaluation only."""
    log, size = trainer.script_log, trainer.args.per_device_eval_batch_size
    assert len(calls) == len(log) // size and all(call["mode"] == "eval" for call in calls)
    expected = expected_token_advantages(task, tok, log, generation_size=size, baseline="none", group_size=2)
    grouping_matters = False
    for j, call in enumerate(calls):
        assert call["inputs"]["bae_num_completions"].item() == size
        assert_carries(call["inputs"], expected)
        blocks, adv, _, _ = reference(task, tok, log[j * size : (j + 1) * size], "none", group_size=2)
        grouping_matters |= not np.allclose(adv, reference(task, tok, log[j * size : (j + 1) * size], "none",
                                                           group_size=G)[1])
        present = np.stack([np.bincount(b, minlength=task.num_blocks) > 0 for b in blocks])
        want = -(adv * present).sum() / len(blocks)
        assert abs(want) > 1e-3
        assert call["loss"] == pytest.approx(want, rel=1e-5, abs=1e-7)
    assert grouping_matters
    assert metrics["eval_bae/confidence/stratum_size_mean"] <= 2 and "eval_bae/accuracy" in metrics
    assert not any(trainer._metrics["train"].values())  # nothing of the evaluation was logged as training


def test_evaluate_with_its_own_group_size(tok, task, dataset):
    """evaluate() with num_generations_eval (2) != num_generations (4): see check_evaluation."""
    trainer = Scripted(build_model(tok), task, config(num_generations_eval=2, per_device_eval_batch_size=4),
                       dataset, tok, baseline="none", eval_dataset=dataset)
    with recorded_losses() as calls:
        metrics = trainer.evaluate()
    check_evaluation(trainer, calls, metrics, task, tok)


class ContinuousBatchingThenScripted(Scripted):
    """TRL's real continuous-batching generation (which ends with model.train()) through the
    engine's _generate_single_turn, its output then replaced by the scripted completions, so the
    advantages can be checked."""

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        BlockwiseGRPOTrainer._generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,
                                                   has_tool_images)
        return self.scripted(prompt_ids), None


def test_evaluate_after_continuous_batching_generation(tok, task, dataset):
    """With use_transformers_continuous_batching=True (TRL's generation leaves the model in train
    mode), evaluation is still grouped by num_generations_eval, its loss normalised and its metrics
    logged as evaluation (check_evaluation), and the model is back in eval mode after generation."""
    trainer = ContinuousBatchingThenScripted(
        build_model(tok), task, config(num_generations_eval=2, per_device_eval_batch_size=8, max_completion_length=8,
                                       use_transformers_continuous_batching=True),  # one call: each warms up ~5 s
        dataset, tok, baseline="none", eval_dataset=dataset)
    with recorded_losses() as calls:
        metrics = trainer.evaluate()
    check_evaluation(trainer, calls, metrics, task, tok)
