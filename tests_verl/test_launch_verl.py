"""The launcher's Ray actor, in its own process: what `python -m bae.engines.verl` hands to verl.

verl's run_ppo starts `task_runner_class.remote()` and calls `.run(config)` on it. Ray ships the
actor's class to a fresh worker process, so what that process has registered is all that counts:
the test process imports bae and has everything registered, which proves nothing about the actor.
So the registries are read *inside* the actor, by a probe sent with Ray's `__ray_call__` (run on
the actor instance, in the actor's process); the probe imports only verl, never bae. A control
actor (verl's own TaskRunnerV1, probed the same way) shows the probe sees the actor's process:
there, no bae name is registered.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("verl")

from hydra import compose, initialize_config_dir  # noqa: E402

import bae.engines.verl as bv  # noqa: E402
from bae.advantages import BASELINES  # noqa: E402

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"


def make_registry_probe():
    """A function run inside a Ray actor that reports what verl's registries hold in that process.

    Made in a function so that cloudpickle ships it by value (it imports verl only; the test module
    is not importable in the worker, and importing bae there would defeat the point)."""

    def probe(actor):
        import os
        import sys

        from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER
        from verl.trainer.ppo import core_algos
        from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

        module = sys.modules.get("bae.engines.verl")
        return {
            "pid": os.getpid(),
            "module_file": getattr(module, "__file__", None),
            "trainers": {name: [c.__name__ for c in cls.__mro__] for name, cls in TRAINER_REGISTRY.items()},
            "estimators": {name: getattr(fn, "__bae_baseline__", None) for name, fn in core_algos.ADV_ESTIMATOR_REGISTRY.items()},
            "reward_managers": {name: cls.__name__ for name, cls in REWARD_MANAGER.items()},
        }

    return probe


@pytest.fixture(scope="module")
def task_runner(local_ray):
    """The launcher's actor, started as verl's run_ppo starts it (`task_runner_class.remote()`),
    shared by the tests below (each actor start imports verl in a fresh process: seconds)."""
    runner = bv.BAETaskRunner.remote()
    yield runner
    local_ray.kill(runner)


def recipe(*overrides: str):
    with initialize_config_dir(config_dir=str(PAPER), version_base=None):
        return compose(config_name="verl_qwen2.5-3b-instruct", overrides=list(overrides))


def test_the_launcher_actor_has_every_bae_name_registered_in_its_own_process(local_ray, task_runner):
    """In the BAETaskRunner actor's process (pid != this one, same bae source file): the trainers
    bae_<mode> (a BlockwiseAdvantageMixin over verl's trainer of <mode>), the estimators bae_<b>
    for every b in BASELINES, the reward manager "bae". In verl's own TaskRunnerV1 actor: none."""
    from verl.trainer.main_ppo import TaskRunnerV1
    from verl.trainer.ppo.v1 import get_trainer_cls

    probe = make_registry_probe()
    control = TaskRunnerV1.remote()
    seen, unseen = local_ray.get([task_runner.__ray_call__.remote(probe), control.__ray_call__.remote(probe)])

    assert seen["pid"] != os.getpid() and unseen["pid"] not in (os.getpid(), seen["pid"])
    assert seen["module_file"] == bv.__file__  # the actor imports the same bae as this process
    for mode in bv.TRAINER_MODES:
        mro = seen["trainers"].get(f"bae_{mode}")
        assert mro is not None, f"bae_{mode} is not registered in the actor: {sorted(seen['trainers'])}"
        assert "BlockwiseAdvantageMixin" in mro and get_trainer_cls(mode).__name__ in mro
    assert {f"bae_{b}": seen["estimators"].get(f"bae_{b}") for b in BASELINES} == {f"bae_{b}": b for b in BASELINES}
    assert seen["reward_managers"].get("bae") == "BAERewardManager"

    assert unseen["module_file"] is None  # the control: a verl actor's process never imported bae
    assert not [name for name in [*unseen["trainers"], *unseen["estimators"], *unseen["reward_managers"]]
                if name == "bae" or name.startswith("bae_")]
    local_ray.kill(control)


def test_the_launcher_actor_runs_the_recipe_past_the_bae_lookups(local_ray, task_runner, tmp_path):
    """BAETaskRunner.run on the composed paper recipe (CPU overrides only: one TransferQueue storage
    unit, since Ray here has 2 CPUs and TransferQueue asks one per unit; a model folder that does not
    exist): the actor gets past the trainer lookup and bae's checks and stops where verl loads the
    model. A bae estimator on verl's plain trainer is refused inside the actor, before verl starts."""
    missing_model = str(tmp_path / "no-model-here")
    cpu = ["transfer_queue.backend.SimpleStorage.num_data_storage_units=1", f"actor_rollout_ref.model.path={missing_model}"]

    with pytest.raises(local_ray.exceptions.RayTaskError) as failed:
        local_ray.get(task_runner.run.remote(recipe(*cpu)))
    message = str(failed.value)
    assert "Unknown trainer" not in message and "bae:" not in message
    assert "verl.workers.config.model.HFModelConfig" in message and missing_model in message  # verl loading the model

    with pytest.raises(local_ray.exceptions.RayTaskError, match="trainer.v1.trainer_mode=bae_sync"):
        local_ray.get(task_runner.run.remote(recipe(*cpu, "trainer.v1.trainer_mode=sync")))


def test_launch_hands_the_bae_task_runner_to_verl_after_the_same_checks(monkeypatch):
    """launch(config) runs verl's validate_config and bae's check_launch in the driver, then calls
    verl's run_ppo with BAETaskRunner; a config bae cannot run is refused before Ray starts."""
    import verl.trainer.main_ppo as main_ppo

    calls = []
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, task_runner_class: calls.append(task_runner_class))
    bv.launch(recipe())
    assert calls == [bv.BAETaskRunner]
    with pytest.raises(ValueError, match="geo_mean"):
        bv.launch(recipe("actor_rollout_ref.actor.policy_loss.loss_mode=geo_mean"))
    with pytest.raises(ValueError, match="source=importlib"):
        bv.launch(recipe("reward.reward_manager.source=register", "reward.reward_manager.name=bae"))
    with pytest.raises(ValueError, match="algorithm.use_kl_in_reward=true"):
        bv.launch(recipe("algorithm.use_kl_in_reward=true"))
    with pytest.raises(ValueError, match="default_agent_loop=tool_agent"):
        bv.launch(recipe("actor_rollout_ref.rollout.agent.default_agent_loop=tool_agent"))
    assert calls == [bv.BAETaskRunner]


REFUSED = [  # (override, what the message must name): every setting under which the bae path would be silently wrong
    ("algorithm.use_kl_in_reward=true", "algorithm.use_kl_in_reward=true"),
    ("reward.reward_model.enable=true", "reward.reward_model.enable=true"),
    ("reward.custom_reward_function.path=/my/reward.py", "reward.custom_reward_function.path"),
    ("actor_rollout_ref.rollout.agent.default_agent_loop=tool_agent", "default_agent_loop=tool_agent"),
    ("actor_rollout_ref.rollout.agent.agent_loop_config_path=/my/loops.yaml", "agent_loop_config_path"),
    ("actor_rollout_ref.actor.policy_loss.loss_mode=geo_mean", "loss_mode=geo_mean"),
    ("actor_rollout_ref.actor.policy_loss.loss_mode=gspo", "loss_mode=gspo"),
    ("actor_rollout_ref.actor.policy_loss.loss_mode=clip_cov", "loss_mode=clip_cov"),
    ("actor_rollout_ref.actor.policy_loss.loss_mode=kl_cov", "loss_mode=kl_cov"),
    ("actor_rollout_ref.actor.policy_loss.loss_mode=dro", "loss_mode=dro"),
    ("actor_rollout_ref.actor.policy_loss.loss_mode=bypass_mode", "loss_mode=bypass_mode"),
    ("actor_rollout_ref.actor.entropy_coeff=0.001", "entropy_coeff=0.001"),
    ("algorithm.rollout_correction.bypass_mode=true", "bypass_mode=true"),
    ("distillation.enabled=true", "distillation.enabled=true"),
    ("bae.entropy_target=-1", "bae.entropy_target"),
    ("+bae.shrink=2.0", "shrink"),  # an option of ocb_shrink, not of the recipe's ocb
    ("algorithm.adv_estimator=bae_ocb_eb,+bae.pretest=2.0", "pretest"),  # a level must lie in [1e-12, 1)
    ("algorithm.adv_estimator=bae_ocb_eb,+bae.history=-1", "history"),  # a number of earlier steps
    ("algorithm.filter_groups.enable=true,algorithm.filter_groups.metric=acc", "filter_groups.metric=acc"),
    # the total: equal totals can differ block by block (malformed: carry), and such a group has advantages
    ("algorithm.filter_groups.enable=true", "filter_groups.metric=reward"),
]


_RECIPE = []


def recipe_with(*overrides: str):
    """The composed paper recipe with command-line style overrides applied to a copy (composing
    once: hydra's compose costs about a second per call on the test machine)."""
    import copy

    import yaml
    from omegaconf import OmegaConf

    if not _RECIPE:
        _RECIPE.append(recipe())
    cfg = copy.deepcopy(_RECIPE[0])
    for override in overrides:
        key, value = override.lstrip("+").split("=", 1)
        OmegaConf.update(cfg, key, yaml.safe_load(value), force_add=override.startswith("+"))
    return cfg


@pytest.mark.parametrize("override, named", REFUSED, ids=[o for o, _ in REFUSED])
def test_check_launch_refuses_a_silently_wrong_setting(override, named):
    """check_launch raises ValueError naming the key. launch calls it in the driver before verl's
    run_ppo (which starts Ray and every GPU worker; see the test above), and the task runner calls
    it again in its own process before verl builds a worker."""
    with pytest.raises(ValueError, match="bae:") as refused:
        bv.check_launch(recipe_with(*override.split(",")))
    assert named in str(refused.value)


def test_check_launch_accepts_what_it_should():
    """The recipe as it is, an allow-listed loss, ocb_shrink and ocb_eb with their options, and the
    controller off with a fixed bonus all pass check_launch."""
    for overrides in ([], ["actor_rollout_ref.actor.policy_loss.loss_mode=cispo"],
                      ["algorithm.adv_estimator=bae_ocb_shrink", "+bae.shrink=2.0"],
                      ["algorithm.adv_estimator=bae_ocb_eb", "+bae.pretest=0.05"],  # README's verl form
                      ["algorithm.adv_estimator=bae_ocb_eb", "+bae.history=3"],
                      ["bae.use_adaptive_entropy=false", "actor_rollout_ref.actor.entropy_coeff=0.001"],
                      # DAPO filtering on bae's block rewards
                      ["algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=bae_rewards_id"]):
        assert "bae.engines.verl" in bv.check_launch(recipe_with(*overrides))


def test_the_local_ray_is_started_again_only_after_ray_s_own_startup_timeout():
    """conftest.start_ray: a start that ends in Ray's "timed out during startup" is shut down and
    tried again (the second start is the one used); any other error is raised at once, and the
    timeout itself once the starts run out."""
    from conftest import RAY_STARTUP_TIMEOUT, start_ray

    calls = []

    def flaky(errors):
        def init():
            calls.append("init")
            if errors:
                raise errors.pop(0)
        return init

    start_ray(flaky([Exception(f"The current node {RAY_STARTUP_TIMEOUT}. This could happen ...")]),
              lambda: calls.append("shutdown"))
    assert calls == ["init", "shutdown", "init"]
    calls.clear()
    with pytest.raises(ValueError, match="bad num_cpus"):
        start_ray(flaky([ValueError("bad num_cpus")]), lambda: calls.append("shutdown"))
    assert calls == ["init"]
    calls.clear()
    with pytest.raises(Exception, match=RAY_STARTUP_TIMEOUT):
        start_ray(flaky([Exception(RAY_STARTUP_TIMEOUT)] * 3), lambda: calls.append("shutdown"), attempts=3)
    assert calls == ["init", "shutdown", "init", "shutdown", "init"]
