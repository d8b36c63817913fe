"""train.distributed and the launcher's fields (engine/engine_choice.py): resolved before models load, never silent."""

from __future__ import annotations

import pytest

from lcm_distill.config import ConfigError
from lcm_distill.engine.engine_choice import deepspeed_config, resolve_engine

FSDP2 = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
ZERO2 = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}


def test_auto_follows_the_launcher(make_cfg):
    cfg = make_cfg()
    assert resolve_engine(cfg, {}).name == "ddp"
    assert resolve_engine(cfg, FSDP2).name == "fsdp2"
    assert resolve_engine(cfg, ZERO2).name == "zero2"
    assert "accelerate launch" in resolve_engine(cfg, ZERO2).source
    assert resolve_engine(make_cfg("train.distributed=fsdp2"), {}).name == "fsdp2"  # no FSDP launcher needed
    assert resolve_engine(cfg, {**FSDP2, "FSDP_RESHARD_AFTER_FORWARD": "false"}).reshard_after_forward is False


@pytest.mark.parametrize(
    ("env", "overrides", "words"),
    [
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, [], ["fsdp_version 1", "fsdp2.yaml"]),
        ({**FSDP2, "FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, [], ["SIZE_BASED_WRAP", "_no_split_modules"]),
        ({**FSDP2, "FSDP_OFFLOAD_PARAMS": "true"}, [], ["fsdp_offload_params"]),
        ({**ZERO2, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, [], ["zero_stage 3"]),
        ({**ZERO2, "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "1"}, ["train.gradient_accumulation_steps=2"],
         ["gradient_accumulation_steps 1", "train.gradient_accumulation_steps=2"]),
        ({**ZERO2, "ACCELERATE_GRADIENT_CLIPPING": "1.0"}, ["optim.max_grad_norm=0.5"],
         ["gradient_clipping 1.0", "optim.max_grad_norm=0.5"]),
        ({**ZERO2, "ACCELERATE_DEEPSPEED_CONFIG_FILE": "ds.json"}, [], ["deepspeed_config_file ds.json"]),
        ({**ZERO2, "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu"}, [], ["offload_optimizer_device"]),
        ({"ACCELERATE_MIXED_PRECISION": "bf16"}, [], ["mixed_precision bf16", "train.mixed_precision=no"]),
        (FSDP2, ["train.distributed=zero2"], ["train.distributed=zero2", "fsdp2"]),
        ({}, ["train.distributed=fsdp2", "model.lora.enabled=true"], ["model.lora.enabled=true"]),
        ({}, ["train.distributed=zero2", "train.mixed_precision=fp16"], ["train.mixed_precision=fp16"]),
        ({}, ["train.distributed=zero2", "optim.use_8bit_adam=true"], ["optim.use_8bit_adam=true"]),
    ],
)
def test_what_cannot_be_delivered_is_refused_naming_the_setting(make_cfg, env, overrides, words):
    with pytest.raises(ConfigError) as err:
        resolve_engine(make_cfg(*overrides), env)
    for w in words:
        assert w in str(err.value)


def test_agreeing_launcher_fields_pass(make_cfg):
    cfg = make_cfg("train.gradient_accumulation_steps=2", "optim.max_grad_norm=0.5", "train.mixed_precision=bf16")
    env = {**ZERO2, "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "2", "ACCELERATE_GRADIENT_CLIPPING": "0.5",
           "ACCELERATE_MIXED_PRECISION": "bf16"}  # fmt: skip
    assert resolve_engine(cfg, env).name == "zero2"
    assert resolve_engine(cfg, {**env, "ACCELERATE_MIXED_PRECISION": "no"}).name == "zero2"  # "no": not given


def test_deepspeed_json_comes_from_the_run_config(make_cfg):
    cfg = make_cfg("train.per_device_batch_size=3", "train.gradient_accumulation_steps=2", "optim.max_grad_norm=0.25",
                   "train.mixed_precision=bf16")  # fmt: skip
    ds = deepspeed_config(cfg, world=4)
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == 3 * 2 * 4 and ds["gradient_clipping"] == 0.25
    assert ds["zero_optimization"]["stage"] == 2 and ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert not deepspeed_config(make_cfg(), world=1)["bf16"]["enabled"]
