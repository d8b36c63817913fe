"""Which engine a run gets - DDP, FSDP2 or DeepSpeed ZeRO-2 - decided and checked before any model loads (pure).

``train.distributed`` (auto | ddp | fsdp2 | zero2) against the launcher's environment (``accelerate launch
--config_file configs/accelerate/{ddp,fsdp2,deepspeed_zero2}.yaml`` exports its fields as ``ACCELERATE_*`` /
``FSDP_*`` variables). Anything that cannot be delivered as configured is a ConfigError naming the setting, never a
silent fallback; DeepSpeed's json is derived from the run config, so the run config is the truth. The runtime side
(sharding, clipping, EMA, whole weights) is :mod:`lcm_distill.engine.parallel`. Checked against accelerate 1.15.0,
torch 2.14.1 and deepspeed 0.19.8.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..config import Config, ConfigError

ENGINES = ("auto", "ddp", "fsdp2", "zero2")  # train.distributed (tied to config_checks.CHOICES by a test)
_TRUE = ("1", "true", "yes")


@dataclass(frozen=True)
class EngineChoice:
    """The engine a run gets, and why (``source`` is said in the first log lines)."""

    name: str  # ddp | fsdp2 | zero2
    source: str
    reshard_after_forward: bool = True  # fsdp2: FSDP_RESHARD_AFTER_FORWARD (false: ZeRO-2-like, params kept gathered)

    @property
    def sharded(self) -> bool:
        return self.name != "ddp"


def _launcher_engine(env: Mapping[str, str]) -> tuple[str | None, str]:
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() in _TRUE:
        return "zero2", "accelerate launch config (distributed_type: DEEPSPEED)"
    if env.get("ACCELERATE_USE_FSDP", "").lower() in _TRUE:
        return "fsdp2", "accelerate launch config (distributed_type: FSDP)"
    return None, ""


def _check_fsdp_launcher(env: Mapping[str, str]) -> bool:
    """The accelerate FSDP fields we honour or refuse; returns reshard_after_forward."""
    if env.get("FSDP_VERSION", "1") != "2":
        raise ConfigError(
            f"accelerate config: fsdp_version {env.get('FSDP_VERSION', '1')} (FSDP1) is not supported: its flattened "
            "parameters break the EMA target, validation and export. Use fsdp_version: 2 "
            "(configs/accelerate/fsdp2.yaml)."
        )
    policy = env.get("FSDP_AUTO_WRAP_POLICY", "")
    if policy and policy not in ("TRANSFORMER_BASED_WRAP", "NO_WRAP"):
        raise ConfigError(
            f"accelerate config: fsdp_auto_wrap_policy {policy} is not supported: FSDP2 cannot wrap the UNet's "
            "ModuleLists by size. Remove the key (or use TRANSFORMER_BASED_WRAP): the engine wraps the UNet's "
            "_no_split_modules blocks (configs/accelerate/fsdp2.yaml)."
        )
    # fsdp_cpu_ram_efficient_loading (accelerate's default true) does not apply: every rank loads the UNet, then
    # fully_shard keeps its shards. fsdp_state_dict_type does not apply: checkpoints always hold whole state dicts.
    for key, what in (("FSDP_OFFLOAD_PARAMS", "fsdp_offload_params"),
                      ("FSDP_ACTIVATION_CHECKPOINTING", "fsdp_activation_checkpointing")):  # fmt: skip
        if env.get(key, "false").lower() in _TRUE:
            hint = "use model.gradient_checkpointing=true" if "ACTIVATION" in key else "set it to false"
            raise ConfigError(f"accelerate config: {what}: true is not supported by this engine; {hint}.")
    return env.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() in _TRUE


def _check_deepspeed_launcher(env: Mapping[str, str], cfg: Config) -> None:
    """DeepSpeed's fields come from the run config; a launcher value that disagrees is refused, naming both."""
    if env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none") not in ("", "none"):
        raise ConfigError(
            f"accelerate config: deepspeed_config_file {env['ACCELERATE_DEEPSPEED_CONFIG_FILE']} is not used: the "
            "DeepSpeed config is derived from the run config (batch, accumulation, clipping, precision). Remove the "
            "key (configs/accelerate/deepspeed_zero2.yaml)."
        )
    stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    if stage != "2":
        raise ConfigError(f"accelerate config: zero_stage {stage} is not supported; this engine runs ZeRO stage 2 "
                          "(zero_stage: 2).")  # fmt: skip
    for key in ("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"):
        if env.get(key, "none").lower() not in ("", "none"):
            raise ConfigError(f"accelerate config: {key.removeprefix('ACCELERATE_DEEPSPEED_').lower()}_device "
                              f"{env[key]} is not supported; set it to none.")  # fmt: skip
    gas = env.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "auto")
    if gas != "auto" and int(gas) != cfg.train.gradient_accumulation_steps:
        raise ConfigError(
            f"accelerate config: gradient_accumulation_steps {gas} differs from the run's "
            f"train.gradient_accumulation_steps={cfg.train.gradient_accumulation_steps}. Remove it from the accelerate "
            "config (the run config is used) or make the two agree."
        )
    clip = env.get("ACCELERATE_GRADIENT_CLIPPING", "auto")
    if clip not in ("auto", "none") and float(clip) != cfg.optim.max_grad_norm:
        raise ConfigError(
            f"accelerate config: gradient_clipping {clip} differs from the run's optim.max_grad_norm="
            f"{cfg.optim.max_grad_norm:g}. Remove it from the accelerate config (the run config is used) or make the "
            "two agree."
        )


def resolve_engine(cfg: Config, env: Mapping[str, str] | None = None) -> EngineChoice:
    """The run's engine from ``train.distributed`` and the launcher's environment; pure, before any model loads.

    Raises ConfigError for anything that cannot be delivered as configured (never falls back silently)."""
    env = os.environ if env is None else env
    asked = cfg.train.distributed
    launched, why = _launcher_engine(env)
    if asked != "auto" and launched is not None and launched != asked:
        raise ConfigError(f"train.distributed={asked} but the run was launched with an accelerate config for "
                          f"{launched} ({why}); use one of the two.")  # fmt: skip
    name = launched if asked == "auto" and launched else ("ddp" if asked == "auto" else asked)
    source = why if asked == "auto" and launched else f"train.distributed={asked}"
    launcher_mp = env.get("ACCELERATE_MIXED_PRECISION", "no")
    if launcher_mp not in ("", "no") and launcher_mp != cfg.train.mixed_precision:
        raise ConfigError(
            f"accelerate config: mixed_precision {launcher_mp} differs from the run's train.mixed_precision="
            f"{cfg.train.mixed_precision}; make the two agree (or launch with --mixed_precision no: the run config "
            "is used)."
        )
    reshard = True
    if launched == "fsdp2":
        reshard = _check_fsdp_launcher(env)
    if launched == "zero2":
        _check_deepspeed_launcher(env, cfg)
    if name in ("fsdp2", "zero2"):
        bad = {
            "train.mixed_precision=fp16": cfg.train.mixed_precision == "fp16",
            "optim.use_8bit_adam=true": cfg.optim.use_8bit_adam,
            "model.lora.enabled=true": cfg.model.lora.enabled,
            "model.compile=true": cfg.model.compile,
        }
        found = [k for k, v in bad.items() if v]
        if found:
            raise ConfigError(
                f"train.distributed={name}: {', '.join(found)} is not supported under sharding (fp16 loss scaling, "
                "8-bit states and LoRA adapters - which hold ~1% of the weights and need no sharding - are trained "
                "with DDP). Use train.distributed=ddp, or bf16 / AdamW / a full student."
            )
    if name == "zero2":
        from importlib.util import find_spec

        if find_spec("deepspeed") is None:
            raise ConfigError("train.distributed=zero2 needs DeepSpeed: pip install --no-build-isolation "
                              "deepspeed==0.19.8 (scripts/setup.sh installs it).")  # fmt: skip
    return EngineChoice(name, source, reshard)


def deepspeed_config(cfg: Config, world: int) -> dict:
    """DeepSpeed's json, every field from the run config (docs/design.md: the run config is the truth)."""
    t = cfg.train
    return {
        "train_micro_batch_size_per_gpu": t.per_device_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "train_batch_size": t.per_device_batch_size * t.gradient_accumulation_steps * world,
        "gradient_clipping": cfg.optim.max_grad_norm,
        "zero_optimization": {"stage": 2, "contiguous_gradients": True, "overlap_comm": False},
        "bf16": {"enabled": t.mixed_precision == "bf16"},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,  # torch AdamW (optim.adamw_impl), wrapped by ZeRO's partitioner
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
