"""The paper recipes for TRL (configs/paper/trl_*.yaml) against the config schema and Table 4.

Each recipe is validated by bae.runs.config.parse (every key known, every trl key a GRPOConfig field),
with data.source replaced by an existing file: DataSection checks at parse time that a local source
exists, and the recipes name data/math_dapo.jsonl, which `bae prepare-data` builds on the cluster.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from bae.runs.config import parse

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
RECIPES = {
    "trl_qwen2.5-3b-instruct.yaml": ("Qwen/Qwen2.5-3B-Instruct", 1024),
    "trl_qwen2.5-7b-instruct.yaml": ("Qwen/Qwen2.5-7B-Instruct", 512),
    "trl_qwen2.5-7b.yaml": ("Qwen/Qwen2.5-7B", 512),
}
GPUS = 8  # one node; configs/paper/accelerate_deepspeed_zero3.yaml

# The paper's Table 4 (bae.paper.PAPER; no KL, centred advantages), as TrainConfig / GRPOConfig keys
TABLE4 = dict(group_size=32, batch_size=2048, learning_rate=1e-6, warmup_steps=64, temperature=1.0,
              max_completion_length=4096, method="bae", baseline="ocb", scale="none")
TABLE4_TRL = dict(adam_beta1=0.9, adam_beta2=0.999, weight_decay=0.1, beta=0.0, use_adaptive_entropy=True,
                  entropy_target=0.2, entropy_coef_delta=5e-4, bf16=True, gradient_checkpointing=True,
                  use_vllm=True)


def load_recipe(name: str, tmp_path: Path):
    raw = yaml.safe_load((PAPER / name).read_text())
    assert raw["data"]["source"] == "data/math_dapo.jsonl"  # what the data-prep command writes
    data = tmp_path / "math_dapo.jsonl"
    data.write_text('{"id": "a", "problem": "1+1?", "answer": "2"}\n')
    raw["data"]["source"] = str(data)
    return raw, parse(raw, name)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_validates_and_equals_table4(name, tmp_path):
    raw, cfg = load_recipe(name, tmp_path)
    model, steps = RECIPES[name]
    assert cfg.model == model
    assert cfg.steps == steps
    assert cfg.task.name == "self_confidence" and cfg.task.options == {"confidence_reward": "brier"}
    for key, value in TABLE4.items():
        assert getattr(cfg, key) == value, key
    for key, value in TABLE4_TRL.items():
        assert cfg.trl[key] == value, f"trl.{key}"
    assert cfg.trl["vllm_mode"] in ("colocate", "server")
    assert cfg.trl["lr_scheduler_type"] == "constant_with_warmup"
    assert cfg.data.eval_source == "math500"
    # every key of the file survived validation (none silently dropped or defaulted)
    assert set(raw) <= set(type(cfg).model_fields)
    assert set(raw["trl"]) == set(cfg.trl)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_trl_keys_are_grpo_config_fields(name, tmp_path):
    from trl import GRPOConfig

    _, cfg = load_recipe(name, tmp_path)
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    assert set(cfg.trl) <= fields


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_batch_accounting_on_one_8_gpu_node(name, tmp_path):
    """TRL: completions per optimizer step = per_device_train_batch_size x gradient_accumulation_steps
    x processes, and one generation batch per step (steps_per_generation defaults to the
    accumulation steps), which must hold whole groups."""
    _, cfg = load_recipe(name, tmp_path)
    per_device, accumulation = cfg.trl["per_device_train_batch_size"], cfg.trl["gradient_accumulation_steps"]
    assert per_device * accumulation * GPUS == cfg.batch_size == 2048
    assert cfg.batch_size % cfg.group_size == 0 and cfg.batch_size // cfg.group_size == 64  # prompts per step
    assert "steps_per_generation" not in cfg.trl and "generation_batch_size" not in cfg.trl
    # the multi-node rule documented in the recipes and docs/scaling.md keeps 2048 on 2 to 8 nodes
    for nodes in (2, 4, 8):
        assert cfg.batch_size % (per_device * GPUS * nodes) == 0


def test_accelerate_configs_are_zero3_bf16():
    one = yaml.safe_load((PAPER / "accelerate_deepspeed_zero3.yaml").read_text())
    many = yaml.safe_load((PAPER / "accelerate_deepspeed_zero3_multinode.yaml").read_text())
    for cfg in (one, many):
        assert cfg["distributed_type"] == "DEEPSPEED"
        assert cfg["deepspeed_config"]["zero_stage"] == 3
        assert cfg["mixed_precision"] == "bf16"
        assert cfg["num_processes"] == 8 * cfg["num_machines"]
    assert one["num_machines"] == 1 and one["num_processes"] == GPUS
    assert many["num_machines"] > 1 and "main_process_ip" in many
