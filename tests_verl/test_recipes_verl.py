"""The paper recipes for verl (configs/paper/verl_*.yaml) against verl 0.9.1's own config schema.

Each recipe is a hydra config that puts its values on top of verl's `ppo_trainer` (the config
`python -m bae.engines.verl` starts from). The tests compose it with hydra exactly as the launcher
does (`--config-path=configs/paper --config-name=verl_...`), check that every key the recipe sets
already exists in verl's schema (hydra would let a misspelt key through a config file silently:
struct mode only guards command-line overrides) or, for the plugin's own top-level `bae:` section,
is a key the plugin reads, that the composed values equal PAPER.md's Table 4 (read from
bae.paper.PAPER, the entropy controller included), and run verl's own `validate_config` and bae's
`check_launch` on the result (batch divisibility, micro-batch rules, bae's refusals).
Run from the verl venv: /work/verlvenv/bin/python -m pytest tests_verl/test_recipes_verl.py.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

pytest.importorskip("verl")

from hydra import compose, initialize_config_dir, initialize_config_module  # noqa: E402
from omegaconf import DictConfig, ListConfig, OmegaConf  # noqa: E402

from bae.paper import PAPER  # noqa: E402

RECIPE_DIR = Path(__file__).resolve().parents[1] / "configs" / "paper"
RECIPES = {
    "verl_qwen2.5-3b-instruct": ("Qwen/Qwen2.5-3B-Instruct", 1024),
    "verl_qwen2.5-7b-instruct": ("Qwen/Qwen2.5-7B-Instruct", 512),
    "verl_qwen2.5-7b": ("Qwen/Qwen2.5-7B", 512),
}

# PAPER.md, Table 4, as verl 0.9.1 config keys (plus the bae plugin's wiring from docs/verl.md)
TABLE4 = {
    "algorithm.adv_estimator": "bae_ocb",
    "algorithm.norm_adv_by_std_in_grpo": PAPER.scale != "none",  # centred advantages (scale "none")
    "algorithm.use_kl_in_reward": False,  # no KL
    "actor_rollout_ref.actor.use_kl_loss": PAPER.kl_coef != 0.0,  # no KL
    "actor_rollout_ref.actor.optim.optimizer": "AdamW",
    "actor_rollout_ref.actor.optim.lr": PAPER.learning_rate,
    "actor_rollout_ref.actor.optim.lr_warmup_steps": PAPER.warmup_steps,
    "actor_rollout_ref.actor.optim.weight_decay": PAPER.weight_decay,
    "actor_rollout_ref.actor.optim.betas": [PAPER.adam_beta1, PAPER.adam_beta2],
    "actor_rollout_ref.actor.loss_agg_mode": "seq-mean-token-mean",
    "actor_rollout_ref.actor.policy_loss.loss_mode": "vanilla",
    "actor_rollout_ref.actor.ppo_epochs": 1,
    "actor_rollout_ref.actor.entropy_coeff": 0.0,  # the controller's starting coefficient; it sets it each step
    "bae.use_adaptive_entropy": True,  # the dynamic entropy controller (bae.engines.verl.EntropyController)
    "bae.entropy_target": PAPER.entropy_target,
    "bae.entropy_coef_delta": PAPER.entropy_coef_delta,
    "actor_rollout_ref.rollout.n": PAPER.group_size,
    "actor_rollout_ref.rollout.temperature": PAPER.temperature,
    "actor_rollout_ref.rollout.name": "vllm",
    "data.max_response_length": PAPER.max_completion_length,
    "actor_rollout_ref.rollout.response_length": PAPER.max_completion_length,  # interpolated from data.max_response_length
    "actor_rollout_ref.model.enable_gradient_checkpointing": True,
    "actor_rollout_ref.actor.fsdp_config.dtype": "bfloat16",  # bf16 compute (verl's default)
    "actor_rollout_ref.rollout.dtype": "bfloat16",
    "reward.reward_manager.source": "importlib",
    "reward.reward_manager.name": "BAERewardManager",
    "reward.reward_manager.module.path": "pkg://bae.engines.verl",
    "trainer.use_v1": True,
    "trainer.v1.trainer_mode": "bae_sync",
    "trainer.n_gpus_per_node": 8,
    "trainer.nnodes": 1,
}


@pytest.fixture(scope="module")
def verl_schema() -> DictConfig:
    """verl's ppo_trainer config, composed from the installed package (no overrides)."""
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer")


_composed: dict[str, DictConfig] = {}


def composed(name: str) -> DictConfig:
    if name not in _composed:
        with initialize_config_dir(config_dir=str(RECIPE_DIR), version_base=None):
            _composed[name] = compose(config_name=name)
    return _composed[name]


def leaves(node, prefix: str = ""):
    """(dotted key, value) of every leaf of a plain mapping; lists are leaves."""
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaves(value, dotted + ".")
        else:
            yield dotted, value


def recipe_leaves(name: str) -> dict:
    raw = yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text())
    assert raw.pop("defaults") == ["ppo_trainer", "_self_"]  # verl's schema first, the recipe on top
    assert raw.pop("hydra") == {"searchpath": ["pkg://verl.trainer.config"]}
    return dict(leaves(raw))


def has_key(cfg: DictConfig, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():  # keys() also lists ??? (missing) values
            return False
        node = node._get_node(part)
    return True


def plain(value):
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def test_the_key_check_catches_a_misspelt_key(verl_schema):
    assert has_key(verl_schema, "actor_rollout_ref.actor.optim.lr")
    assert has_key(verl_schema, "actor_rollout_ref.rollout.name")  # ??? (required) counts as present
    assert not has_key(verl_schema, "actor_rollout_ref.actor.optim.learning_rate")
    assert not has_key(verl_schema, "actor_rollout_ref.actor.entropy_target")  # no controller in verl: bae's is bae.*
    assert not has_key(verl_schema, "actor_rollout_ref.actor.optim.lr.value")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_key_exists_in_verls_schema(name, verl_schema):
    """Every key is verl's, except the plugin's `bae:` section, whose keys are the ones it reads."""
    import bae.engines.verl as bv

    leaves = recipe_leaves(name)
    unknown = [key for key in leaves if not key.startswith("bae.") and not has_key(verl_schema, key)]
    assert not unknown, f"{name}: keys verl 0.9.1's ppo_trainer does not have: {unknown}"
    assert not has_key(verl_schema, "bae")  # the plugin's section cannot shadow a verl key
    plugin = {key[len("bae."):] for key in leaves if key.startswith("bae.")}
    assert plugin and plugin <= set(bv.ENTROPY_KEYS), f"{name}: bae keys the plugin does not read: {plugin - set(bv.ENTROPY_KEYS)}"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_composed_recipe_holds_its_values_and_table4(name):
    cfg = composed(name)
    for key, value in recipe_leaves(name).items():  # nothing of the recipe is shadowed
        assert plain(OmegaConf.select(cfg, key)) == value, key
    for key, value in TABLE4.items():
        assert plain(OmegaConf.select(cfg, key)) == value, key
    model, steps = RECIPES[name]
    assert cfg.actor_rollout_ref.model.path == model
    assert cfg.trainer.total_training_steps == steps
    # 2048 completions per optimizer step: 64 prompts x 32; the PPO mini-batch is the whole batch
    assert cfg.data.train_batch_size * cfg.actor_rollout_ref.rollout.n == PAPER.batch_size
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size == cfg.data.train_batch_size
    # the prompt + completion fits what the actor and log-prob micro-batches may hold
    longest = cfg.data.max_prompt_length + cfg.data.max_response_length
    assert cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu >= longest
    assert cfg.actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu >= longest
    assert cfg.trainer.n_gpus_per_node % cfg.actor_rollout_ref.rollout.tensor_model_parallel_size == 0


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_verl_validate_config_accepts_the_recipe(name):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    cfg = composed(name)
    assert not need_reference_policy(cfg)  # no KL: no reference model is loaded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Disabled critic as algorithm.adv_estimator != gae"
        assert not need_critic(cfg)  # GRPO-style: no value model
    validate_config(config=cfg, use_reference_policy=False, use_critic=False)


@pytest.mark.parametrize("nodes", [2, 4])
def test_multi_node_override_keeps_the_batch(nodes):
    """Scaling out changes only trainer.nnodes: the batch (prompts x n) stays 2048 completions and
    still divides evenly over all GPUs."""
    from verl.utils.config import validate_config

    with initialize_config_dir(config_dir=str(RECIPE_DIR), version_base=None):
        cfg = compose(config_name="verl_qwen2.5-7b", overrides=[f"trainer.nnodes={nodes}"])
    assert cfg.data.train_batch_size * cfg.actor_rollout_ref.rollout.n == PAPER.batch_size
    validate_config(config=cfg, use_reference_policy=False, use_critic=False)


def test_the_plugin_provides_what_the_recipes_name():
    import bae.engines.verl as bv
    from verl.trainer.ppo import core_algos

    for name in RECIPES:
        cfg = composed(name)
        assert core_algos.get_adv_estimator_fn(cfg.algorithm.adv_estimator) is not None
        assert hasattr(bv, cfg.reward.reward_manager.name)
        assert bv.base_trainer_mode(cfg.trainer.v1.trainer_mode) == "sync"
        bv.check_launch(cfg)  # none of bae's refusals applies to the paper recipe
        controller = bv.EntropyController.from_config(cfg)
        assert (controller.target, controller.delta, controller.coef, controller.applied()) == (
            PAPER.entropy_target, PAPER.entropy_coef_delta, 0.0, 0.0)
