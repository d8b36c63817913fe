"""Cross-field validation of a :class:`~lcm_distill.config.Config`, run by ``load_config`` before any model loads.

Kept apart from the dataclass tree so the schema (what keys exist) and the rules (which values go together) can be
read and changed separately. Every check raises :class:`ConfigError` naming the dotted key and what to do; none
imports torch or reads more than a JSON file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .conventions import DEFAULT_GUIDANCE_SCALE, grid_problem, num_train_timesteps, omega_from_guidance_scale
from .errors import ConfigError
from .objective_kinds import OBJECTIVE_KINDS
from .source_kinds import SOURCE_KINDS, sources_where

if TYPE_CHECKING:  # annotations only: config.py imports this module (load_config validates)
    from .config import Config, DataConfig

CHOICES = {
    "model.cond_proj_init": ("zero", "random"),
    "model.frozen_dtype": ("fp32", "bf16", "fp16"),
    "model.attention": ("sdpa", "eager"),
    "model.compile_backend": ("inductor", "aot_eager", "eager"),
    "data.source": SOURCE_KINDS.keys(),  # derived (a live view): source_kinds.py is torch-free
    "data.interpolation": ("bilinear", "bicubic", "lanczos", "nearest"),
    "data.sdxl_time_ids": ("sample", "fixed"),
    "objective.kind": OBJECTIVE_KINDS.keys(),  # derived (a live view): objective_kinds.py is torch-free
    "objective.solver": ("ddim", "dpm_solver_2", "dpm_solver_pp_2s"),
    "objective.cfg_placement": ("paper", "guided"),
    "objective.loss": ("l2", "huber", "pseudo_huber", "l1"),  # functional.losses.LOSS_TYPES
    "objective.timestep_sampling": ("uniform", "high_noise"),  # functional.grid.TIMESTEP_SAMPLINGS
    "objective.curriculum": ("none", "doubling"),  # functional.curriculum.CURRICULA (tied by a test)
    "train.ema_schedule": ("fixed", "curriculum"),  # functional.curriculum.EMA_SCHEDULES
    "train.mixed_precision": ("no", "fp16", "bf16"),
    "train.distributed": ("auto", "ddp", "fsdp2", "zero2"),  # engine.engine_choice.ENGINES (tied by a test)
    "train.report_to": ("tensorboard", "wandb", "none"),
    "train.ema_impl": ("foreach", "loop"),
    "train.quality_features": ("auto", "inception", "testbed"),
    "train.export_from": ("last", "best"),
    "optim.adamw_impl": ("fused", "foreach", "loop"),
    "optim.lr_scheduler": ("constant_with_warmup", "constant", "linear", "cosine", "cosine_with_restarts", "polynomial",
                           "piecewise_constant"),  # diffusers.optimization.SchedulerType (tied by a test)
}
LORA_FORMATS = ("diffusers", "kohya")  # train.lora_formats (lcm_distill.export writes each)
# objective.omega_fixed "auto" for LoRA students: the omega of diffusers' default guidance_scale 8.5, which is also
# the LCM-LoRA technical report's fixed omega 7.5
LORA_OMEGA = omega_from_guidance_scale(DEFAULT_GUIDANCE_SCALE)
OMEGA_LIMIT = 50.0  # objective.omega_max above this is a typo (the paper trains omega in [2, 14], diffusers [5, 15])

POSITIVE = (
    "data.resolution", "objective.num_points", "train.per_device_batch_size", "train.gradient_accumulation_steps",
    "train.max_train_steps", "train.checkpoint_every", "train.checkpoints_keep", "train.log_every",
    "model.omega_embed_dim", "model.lora.rank", "optim.learning_rate", "train.max_nonfinite_steps",
    "objective.curriculum_stage_steps",
)  # fmt: skip


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: Config) -> Config:
    """Cross-field checks; raises ConfigError naming the key at fault."""
    for key, allowed in CHOICES.items():
        if _get(cfg, key) not in allowed:  # (allowed may be a registry's live keys view)
            raise ConfigError(f"{key}={_get(cfg, key)!r} is not one of {list(allowed)}.")
    for key in POSITIVE:
        if _get(cfg, key) <= 0:
            raise ConfigError(f"{key}={_get(cfg, key)!r} must be positive.")
    if not cfg.model.teacher and not cfg.model.student:
        raise ConfigError("model.teacher is empty: give a diffusers folder or hub id of the teacher (SD).")
    if OBJECTIVE_KINDS[cfg.objective.kind].needs_teacher and not cfg.model.teacher:
        raise ConfigError(f"model.teacher is required for objective.kind={cfg.objective.kind} (the teacher solves the "
                          "PF-ODE).")  # fmt: skip
    _validate_data(cfg.data)
    formats = cfg.train.lora_formats
    if not set(formats) <= set(LORA_FORMATS) or "diffusers" not in formats:
        raise ConfigError(f"train.lora_formats={formats!r}: give diffusers (required: student/ is merged from it) and "
                          f"optionally kohya, from {list(LORA_FORMATS)}.")  # fmt: skip
    if cfg.objective.omega_min < 0 or cfg.objective.omega_max > OMEGA_LIMIT:
        raise ConfigError(
            f"objective.omega_min={cfg.objective.omega_min}, objective.omega_max={cfg.objective.omega_max}: omega is "
            f"the paper's guidance (teacher CFG (1+omega)*cond - omega*uncond) and must lie in [0, {OMEGA_LIMIT:g}]; "
            "the paper uses [2, 14]."
        )
    o = cfg.objective
    if o.omega_fixed == "auto":
        plain_lora = cfg.model.lora.enabled and not cfg.model.lora.omega_conditioned
        o.omega_fixed = LORA_OMEGA if plain_lora else None
    elif isinstance(o.omega_fixed, str):
        raise ConfigError(f"objective.omega_fixed={o.omega_fixed!r}: give a number, null (omega ~ U[omega_min, "
                          f"omega_max]) or auto (fixed {LORA_OMEGA:g} for LoRA students, the range "
                          "otherwise).")  # fmt: skip
    elif o.omega_fixed is not None and not 0 <= o.omega_fixed <= OMEGA_LIMIT:
        raise ConfigError(f"objective.omega_fixed={o.omega_fixed} must lie in [0, {OMEGA_LIMIT:g}] (guidance_scale "
                          f"omega + 1; the LCM-LoRA report distils {LORA_OMEGA:g}).")  # fmt: skip
    if cfg.objective.omega_min > cfg.objective.omega_max:
        raise ConfigError(
            f"objective.omega_min={cfg.objective.omega_min} exceeds objective.omega_max={cfg.objective.omega_max}."
        )
    T, where = _teacher_timesteps(cfg)
    problem = grid_problem(T, cfg.objective.num_points)
    if problem:
        raise ConfigError(f"objective.num_points={cfg.objective.num_points} does not fit the teacher's T={T} "
                          f"({where}): {problem}")  # fmt: skip
    if not 0.0 <= cfg.train.ema_decay <= 1.0:
        raise ConfigError(f"train.ema_decay={cfg.train.ema_decay} must lie in [0, 1].")
    if o.curriculum != "none":
        from .functional.curriculum import curriculum_stages  # here: config stays importable without torch

        try:
            curriculum_stages(o.num_points, o.curriculum_start_points)
        except ValueError as err:
            raise ConfigError(str(err)) from err
    elif cfg.train.ema_schedule == "curriculum":
        raise ConfigError("train.ema_schedule=curriculum ties the target EMA to the skipping-step curriculum; set "
                          "objective.curriculum=doubling too, or train.ema_schedule=fixed.")  # fmt: skip
    if cfg.model.lora.enabled and cfg.model.frozen_dtype != "fp32" and cfg.train.mixed_precision == "no":
        raise ConfigError(
            f"model.lora.enabled=true with model.frozen_dtype={cfg.model.frozen_dtype}: the LoRA base weights are "
            f"kept in {cfg.model.frozen_dtype} and need autocast; set train.mixed_precision=bf16 (or fp16), or "
            "model.frozen_dtype=fp32."
        )
    t = cfg.train
    if t.quality_every < 0 or t.quality_images < 2 or t.quality_steps < 1:
        raise ConfigError(f"train.quality_every={t.quality_every}, quality_images={t.quality_images}, quality_steps="
                          f"{t.quality_steps}: use quality_every >= 0 (0 = off), quality_images >= 2 (FID needs two), "
                          "quality_steps >= 1.")  # fmt: skip
    if t.quality_every and not t.quality_reference:
        raise ConfigError(f"train.quality_every={t.quality_every} needs train.quality_reference: an imagefolder of "
                          "held-out images with captions (metadata.jsonl), e.g. the test/ part of lcm-distill-split.")
    if t.export_from == "best" and not t.quality_every:
        raise ConfigError("train.export_from=best needs the quality signal that picks the best step: set "
                          "train.quality_every (and train.quality_reference), or train.export_from=last.")
    if cfg.train.push_to_hub and not cfg.train.hub_model_id:
        raise ConfigError("train.push_to_hub=true needs train.hub_model_id (e.g. 'user/my-lcm').")
    if any(s < 1 for s in cfg.train.validation_steps):
        raise ConfigError(f"train.validation_steps={cfg.train.validation_steps} must be positive step counts.")
    if any(s > cfg.objective.num_points for s in cfg.train.validation_steps):
        raise ConfigError(
            f"train.validation_steps={cfg.train.validation_steps}: a sampler has at most objective.num_points="
            f"{cfg.objective.num_points} steps on the training grid; use fewer steps (LCMs use 1-8)."
        )
    if cfg.train.validation_guidance_scale < 1:
        raise ConfigError(
            f"train.validation_guidance_scale={cfg.train.validation_guidance_scale} is below 1 (omega = g - 1 < 0); "
            "use g >= 1 (1 means no guidance)."
        )
    if cfg.optim.lr_scheduler == "constant" and cfg.optim.lr_warmup_steps > 0:
        raise ConfigError(
            f"optim.lr_scheduler=constant ignores optim.lr_warmup_steps={cfg.optim.lr_warmup_steps}; use "
            "optim.lr_scheduler=constant_with_warmup (the default), or set optim.lr_warmup_steps=0."
        )
    if cfg.optim.lr_warmup_steps < 0:
        raise ConfigError(f"optim.lr_warmup_steps={cfg.optim.lr_warmup_steps} must be >= 0.")
    return cfg


def _teacher_timesteps(cfg: Config) -> tuple[int, str]:
    """T of the model the run trains from, read from its scheduler_config.json when it is a local folder (a JSON
    read, no model load); a hub id is checked again once its config is downloaded (SkippingGrid)."""
    from_student = not OBJECTIVE_KINDS[cfg.objective.kind].needs_teacher and cfg.model.student
    source = cfg.model.student if from_student else cfg.model.teacher
    path = Path(source) / "scheduler" / "scheduler_config.json"
    if path.is_file():
        try:
            return num_train_timesteps(json.loads(path.read_text())), str(path)
        except (ValueError, OSError) as err:
            msg = f"{path} is not a readable scheduler config ({err}); is {source} a diffusers folder?"
            raise ConfigError(msg) from err
    return num_train_timesteps({}), "the diffusers default; checked again when the model loads"


def _validate_data(d: DataConfig) -> None:
    """Source, filter and cache keys (data.*)."""
    kind = SOURCE_KINDS[d.source]
    if d.shards and kind.location_key != "shards":
        raise ConfigError(f"data.shards is set but data.source={d.source!r}; data.shards is read by "
                          f"{sources_where(location_key='shards')} only.")  # fmt: skip
    if d.cache_dir is None:  # training reads the source (with a cache, only `python -m lcm_distill.cli.cache` does)
        if not getattr(d, kind.location_key):
            raise ConfigError(f"data.{kind.location_key} is empty: {kind.location_hint}")
    elif d.random_flip or not d.center_crop:
        raise ConfigError(
            f"data.cache_dir is set with data.random_flip={d.random_flip}, data.center_crop={d.center_crop}: cached "
            "latents are center-cropped and unflipped; set data.center_crop=true and data.random_flip=false."
        )
    if d.max_samples is not None and not kind.max_samples:
        raise ConfigError(f"data.max_samples applies to data.source={sources_where(max_samples=True)} only (not "
                          f"{d.source!r}); select shards instead.")  # fmt: skip
    for key in ("shuffle_buffer", "min_width", "min_height", "num_workers"):
        if getattr(d, key) < 0:
            raise ConfigError(f"data.{key}={getattr(d, key)} must be >= 0.")
    for key in ("max_pwatermark", "max_punsafe"):
        value = getattr(d, key)
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(f"data.{key}={value} must lie in [0, 1] (a probability).")
