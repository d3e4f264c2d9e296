"""The GRPOTrainer internals bae.engines.trl relies on, named one by one.

TRL's maintainers do not promise them (the (B, T)-advantage path of `_compute_loss` was added for a
trainer since removed and is "not on the roadmap"), so bae accepts only the TRL series it was
checked against (bae.engines.trl.TRL_SERIES, pyproject's `trl>=1.16,<1.17`). When an upgrade is
tried, this test says which of them changed; the numerical tests (tests/test_engine_trl*.py) then
say whether the objective is still L_BAE.
"""

import inspect

import trl
from trl import GRPOTrainer

from bae.engines.trl import GSPO_LENGTH_WARNING, TRL_SERIES

# (what the engine relies on, the method of GRPOTrainer, what must be in its signature or source)
INTERNALS = [
    ("_calculate_rewards(inputs, prompts, completions, completion_ids_list) is the scoring hook, returning "
     "the rewards gathered over processes", "_calculate_rewards",
     ["(self, inputs, prompts, completions, completion_ids_list)", "rewards_per_func = gather(rewards_per_func)"]),
    ("_generate_and_score_completions reads the mode first, scores once through _calculate_rewards, and returns "
     "completion ids/masks, per-process advantages and the gathered token count", "_generate_and_score_completions",
     ['mode = "train" if self.model.training else "eval"',
      "self._calculate_rewards(inputs, prompts, completions, completion_ids_list)",
      "num_items_in_batch = self.accelerator.gather(loss_mask.sum()).sum()",
      '"completion_mask": completion_mask', '"advantages": advantages', '"num_items_in_batch": num_items_in_batch']),
    ("_generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images) is the one "
     "generation call, wrapped to restore the model's mode", "_generate_single_turn",
     ["(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False)"]),
    ("_generate calls _generate_single_turn", "_generate", ["self._generate_single_turn("]),
    ("_compute_loss(model, inputs) takes (B, T) advantages as they are (only 1-D ones are unsqueezed)",
     "_compute_loss", ["(self, model, inputs)", "if advantages.dim() == 1:", "advantages = inputs[\"advantages\"]"]),
    ("_compute_loss reads importance_sampling_level from the trainer (the engine sets it to 'token' for its "
     "per-block GSPO ratios) and the per-token log-probs from _get_per_token_logps_and_entropies",
     "_compute_loss", ['if self.importance_sampling_level == "token":', "self._get_per_token_logps_and_entropies("]),
    ("the loss normalisers that bae.engines.trl.BlockwiseGRPOTrainer.loss_factor cancels", "_compute_loss",
     ["loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()",
      "loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)",
      "loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * self.max_completion_length)",
      'normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes',
      "normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation",
      "loss = (per_token_loss * mask).sum(-1).mean()"]),
    ("_get_per_token_logps_and_entropies returns (logps, entropies, aux_loss)", "_get_per_token_logps_and_entropies",
     ["return logps, entropies, aux_loss"]),
    ("_set_signature_columns_if_needed sets _signature_columns (the columns remove_unused_columns keeps)",
     "_set_signature_columns_if_needed", ["self._signature_columns = "]),
    ("TRL's GSPO length-weighting warning, dropped under method bae (bae.engines.trl.GSPO_LENGTH_WARNING)",
     "__init__", [GSPO_LENGTH_WARNING]),
    ("normalize_then_sum, the GDPO that method 'gdpo' reproduces (tests/test_gdpo.py)",
     "_generate_and_score_completions",
     ["std_k = nanstd(grouped, dim=1, keepdim=True)", "reward_k = (grouped - mean_k) / (std_k + 1e-4)",
      "advantages = (rewards - torch.nanmean(rewards)) / (std_rewards + 1e-4)"]),
]


def test_trl_internals_bae_relies_on():
    """Each internal of INTERNALS is present in the installed TRL, in the signature or source of the
    GRPOTrainer method named, and the installed TRL is the checked series; a failure lists every
    internal that changed."""
    changed = []
    for what, method, needles in INTERNALS:
        function = getattr(GRPOTrainer, method, None)
        if function is None:
            changed.append(f"{what}: GRPOTrainer.{method} is gone")
            continue
        text = str(inspect.signature(function)) + "\n" + inspect.getsource(function)
        missing = [needle for needle in needles if needle not in text]
        if missing:
            changed.append(f"{what}: GRPOTrainer.{method} no longer has {missing}")
    if tuple(int(part) for part in trl.__version__.split(".")[:2]) != TRL_SERIES:
        changed.append(f"TRL {trl.__version__} is outside the checked series {TRL_SERIES}")
    assert not changed, (f"TRL {trl.__version__} changed GRPOTrainer internals bae.engines.trl relies on:\n- "
                         + "\n- ".join(changed)
                         + "\nRe-check the engine against this TRL (tests/test_engine_trl*.py), then widen "
                         "bae.engines.trl.TRL_SERIES and pyproject's trl range.")
