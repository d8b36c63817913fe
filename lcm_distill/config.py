"""One dataclass tree for LCD and LCF runs: YAML + ``--set section.key=value`` overrides, validated up front.

Every key has a default here and nowhere else; YAML files in configs/ only override. Unknown keys and bad values
raise :class:`ConfigError` naming the dotted key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .conventions import DEFAULT_GUIDANCE_SCALE, num_train_timesteps, omega_from_guidance_scale


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names the dotted key and what to do."""


DEFAULT_LORA_TARGETS = [
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj",
]  # fmt: skip

DEFAULT_VALIDATION_PROMPTS = [
    "portrait photo of a girl, photograph, highly detailed face, depth of field, moody light, golden hour",
    "Astronaut in a jungle, cold color palette, muted colors, detailed, 8k",
    "A photo of beautiful mountain with realistic sunset and blue lake, highly detailed, masterpiece",
    "Self-portrait oil painting, a beautiful cyborg with golden hair, 8k",
]


@dataclass
class LoRAConfig:
    """peft LoRA on the student UNet; the target is then the student itself under no_grad (mu = 0)."""

    enabled: bool = False
    rank: int = 64
    alpha: int = 64
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    # Adapters plus a trained omega input (time_embedding.cond_proj, model.omega_embed_dim wide): one LoRA for every
    # guidance strength. The LoRA file alone cannot add the input in stock diffusers; the merged student/ can.
    omega_conditioned: bool = False


@dataclass
class ModelConfig:
    """Where the teacher comes from and how the student is built from it."""

    teacher: str = ""  # diffusers folder or hub id (StableDiffusionPipeline layout)
    revision: str | None = None
    vae: str | None = None  # optional separate VAE folder/hub id (e.g. an fp16-fixed VAE)
    student: str | None = None  # LCF: start from an LCM pipeline folder/hub id instead of the teacher's UNet
    omega_embed_dim: int = 256  # time_cond_proj_dim when the teacher has none (diffusers' default)
    cond_proj_init: str = "zero"  # zero: student == teacher at step 0; random: PyTorch default (diffusers' choice)
    frozen_dtype: str = "fp32"  # teacher / VAE / text encoder weights: fp32 | bf16 | fp16
    gradient_checkpointing: bool = False
    attention: str = "sdpa"  # sdpa (torch scaled_dot_product_attention) | eager
    compile: bool = False  # torch.compile student, target and teacher in place (nn.Module.compile: same state_dict)
    compile_backend: str = "inductor"  # inductor | aot_eager | eager (the last two: tracing only, for tests)
    channels_last: bool = False  # student, target and teacher in torch.channels_last (a GPU conv layout; measure it)
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class DataConfig:
    """A captioned image source; one sample schema (pixel_values in [-1, 1], caption) whatever the source."""

    source: str = "hf"  # hf: dataset id or local imagefolder/parquet; hf_streaming: the same, streamed; webdataset
    shards: str = ""  # webdataset: tar paths, brace patterns ({00000..01210}), pipe: commands; several joined by '::'
    dataset: str = ""
    config_name: str | None = None
    split: str = "train"
    image_column: str = "image"
    caption_column: str = "text"
    resolution: int = 512
    center_crop: bool = False
    random_flip: bool = True
    interpolation: str = "bilinear"  # bilinear | bicubic | lanczos | nearest
    max_samples: int | None = None
    num_workers: int = 0
    shuffle_buffer: int = 1000  # hf_streaming / webdataset: samples mixed per DataLoader worker (0: shard order)
    # Filters on per-sample metadata (LAION json / parquet columns); a filter whose field a sample lacks passes it.
    min_width: int = 0  # original width (original_width | WIDTH | width) >= this; 0: off
    min_height: int = 0
    max_pwatermark: float | None = None  # pwatermark <= this
    min_aesthetic: float | None = None  # aesthetic | AESTHETIC_SCORE >= this
    cache_dir: str | None = None  # latent/text cache from `lcm-distill-cache` (replaces the VAE + text encoder)


@dataclass
class ObjectiveConfig:
    """LCD (teacher ODE step) or LCF (same noise at t_n on the data); everything else is shared."""

    kind: str = "lcd"  # lcd | lcf
    num_points: int = 50  # N solver points; skipping step k = T // N (T of the teacher's scheduler, SD: 1000)
    solver: str = "ddim"  # ddim | dpm_solver_2 | dpm_solver_pp_2s
    cfg_placement: str = "paper"  # paper (Eq. 17) | guided
    omega_min: float = 2.0
    omega_max: float = 14.0
    # Every target at this one omega instead of omega ~ U[omega_min, omega_max]. "auto": fixed at
    # LORA_OMEGA (the LCM-LoRA report's 7.5) for a LoRA student, which has no omega input and would otherwise regress
    # to an average over guidance strengths; the range (null) for an omega-conditioned student.
    omega_fixed: float | str | None = "auto"
    # l2 | huber (element-wise, diffusers' form, c = huber_c) | pseudo_huber (improved CT: per sample, c = 0.00054
    # sqrt(latent size); huber_c unused) | l1
    loss: str = "l2"
    huber_c: float = 0.001
    # t_{n+k} over the grid: uniform (the paper) | high_noise (p proportional to the grid index; functional/grid.py)
    timestep_sampling: str = "uniform"
    # Skipping-step curriculum (functional/curriculum.py): "doubling" trains on curriculum_start_points grid points
    # (k = T / N_s) for curriculum_stage_steps steps, then doubles N (kept a divisor of num_points) up to num_points.
    curriculum: str = "none"  # none (the paper) | doubling
    curriculum_start_points: int = 5
    curriculum_stage_steps: int = 100

    @property
    def omega_range(self) -> tuple[float, float]:
        """(lo, hi) that training draws omega from: (omega_fixed, omega_fixed) when fixed, else the range
        ("auto" left unresolved - an ObjectiveConfig built without load_config - means the range)."""
        fixed = self.omega_fixed
        return (self.omega_min, self.omega_max) if fixed in (None, "auto") else (float(fixed), float(fixed))


@dataclass
class OptimConfig:
    learning_rate: float = 8e-6
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    use_8bit_adam: bool = False
    adamw_impl: str = "fused"  # fused: one multi-tensor kernel (CPU, CUDA) | foreach | loop (torch's CPU default)
    # diffusers.optimization.get_scheduler names; plain "constant" ignores warm-up, so it is an error with warm-up > 0
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 0
    max_grad_norm: float = 1.0


@dataclass
class TrainConfig:
    output_dir: str = "outputs/run"
    seed: int = 0
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 1000
    mixed_precision: str = "no"  # no | fp16 | bf16 (autocast for the student; frozen nets follow model.frozen_dtype)
    ema_decay: float = 0.95  # target mu; 0 = target is the student under no_grad
    ema_schedule: str = "fixed"  # fixed: ema_decay always | curriculum: ema_decay^(num_points / N) at a stage of N
    ema_impl: str = "foreach"  # foreach: one fused torch._foreach_lerp_ | loop: per-tensor mul_/add_ (the anchors')
    checkpoint_every: int = 500
    checkpoints_keep: int = 3
    log_every: int = 10
    report_to: str = "tensorboard"  # tensorboard | wandb | none
    validation_every: int = 0  # 0 = only at the end
    validation_prompts: list[str] = field(default_factory=lambda: list(DEFAULT_VALIDATION_PROMPTS))
    validation_steps: list[int] = field(default_factory=lambda: [1, 2, 4])
    validation_guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    max_nonfinite_steps: int = 10
    export: bool = True
    push_to_hub: bool = False
    hub_model_id: str | None = None
    allow_tf32: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


CHOICES = {
    "model.cond_proj_init": ("zero", "random"),
    "model.frozen_dtype": ("fp32", "bf16", "fp16"),
    "model.attention": ("sdpa", "eager"),
    "model.compile_backend": ("inductor", "aot_eager", "eager"),
    "data.source": ("hf", "hf_streaming", "webdataset"),
    "data.interpolation": ("bilinear", "bicubic", "lanczos", "nearest"),
    "objective.kind": ("lcd", "lcf"),
    "objective.solver": ("ddim", "dpm_solver_2", "dpm_solver_pp_2s"),
    "objective.cfg_placement": ("paper", "guided"),
    "objective.loss": ("l2", "huber", "pseudo_huber", "l1"),  # functional.losses.LOSS_TYPES
    "objective.timestep_sampling": ("uniform", "high_noise"),  # functional.grid.TIMESTEP_SAMPLINGS
    "objective.curriculum": ("none", "doubling"),  # functional.curriculum.CURRICULA (tied by a test)
    "train.ema_schedule": ("fixed", "curriculum"),  # functional.curriculum.EMA_SCHEDULES
    "train.mixed_precision": ("no", "fp16", "bf16"),
    "train.report_to": ("tensorboard", "wandb", "none"),
    "train.ema_impl": ("foreach", "loop"),
    "optim.adamw_impl": ("fused", "foreach", "loop"),
    "optim.lr_scheduler": ("constant_with_warmup", "constant", "linear", "cosine", "cosine_with_restarts", "polynomial",
                           "piecewise_constant"),  # diffusers.optimization.SchedulerType (tied by a test)
}
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


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check/coerce a YAML value against a dataclass field annotation (str, int, float, bool, list, Optional)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for a in inner[:-1]:  # e.g. float | str: the first type that takes the value
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        return _coerce(value, inner[-1], key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}.")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}.")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}.")
        return value
    if annotation is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads 1e-3 as a string; accept any float literal
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}.")
        return float(value)
    if annotation is str:
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted no/yes as a boolean (train.mixed_precision: no)
            return "yes" if value else "no"
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}.")
        return value
    raise ConfigError(f"{key}: unsupported field type {annotation!r}.")  # pragma: no cover


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {data!r}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        keys = ", ".join(f"{prefix}{k}" for k in unknown)
        raise ConfigError(f"unknown config key(s): {keys}. Known keys under '{prefix or '<top>'}': {sorted(names)}.")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{key}.")
        else:
            kwargs[name] = _coerce(value, hint, key)
    return cls(**kwargs)


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: Config) -> Config:
    """Cross-field checks; raises ConfigError naming the key at fault."""
    for key, allowed in CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise ConfigError(f"{key}={_get(cfg, key)!r} is not one of {list(allowed)}.")
    for key in POSITIVE:
        if _get(cfg, key) <= 0:
            raise ConfigError(f"{key}={_get(cfg, key)!r} must be positive.")
    if not cfg.model.teacher and not cfg.model.student:
        raise ConfigError("model.teacher is empty: give a diffusers folder or hub id of the teacher (SD).")
    if cfg.objective.kind == "lcd" and not cfg.model.teacher:
        raise ConfigError("model.teacher is required for objective.kind=lcd (the teacher solves the PF-ODE).")
    _validate_data(cfg.data)
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
    if cfg.objective.num_points > T or T % cfg.objective.num_points:
        divisors = [d for d in range(10, min(T, 200) + 1) if T % d == 0][:6]
        raise ConfigError(
            f"objective.num_points={cfg.objective.num_points} must divide the teacher's num_train_timesteps T={T} "
            f"({where}) so the skipping grid ends at T-1; use e.g. {divisors}."
        )
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
    if cfg.model.lora.enabled and cfg.train.ema_decay != 0.0:
        raise ConfigError("model.lora.enabled=true needs train.ema_decay=0 (the LoRA target is the student itself).")
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
    source = cfg.model.student if (cfg.objective.kind == "lcf" and cfg.model.student) else cfg.model.teacher
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
    if d.shards and d.source != "webdataset":
        raise ConfigError(f"data.shards is set but data.source={d.source!r}; data.shards is read by webdataset only.")
    if d.cache_dir is None:  # training reads the source (with a cache, only `python -m lcm_distill.cli.cache` does)
        if d.source == "webdataset" and not d.shards:
            raise ConfigError("data.shards is empty: give tar shards, e.g. /data/laion/{00000..01210}.tar.")
        if d.source != "webdataset" and not d.dataset:
            raise ConfigError("data.dataset is empty: give a Hugging Face dataset id or a local imagefolder/parquet.")
    elif d.random_flip or not d.center_crop:
        raise ConfigError(
            f"data.cache_dir is set with data.random_flip={d.random_flip}, data.center_crop={d.center_crop}: cached "
            "latents are center-cropped and unflipped; set data.center_crop=true and data.random_flip=false."
        )
    if d.max_samples is not None and d.source != "hf":
        raise ConfigError(f"data.max_samples applies to data.source=hf only (not {d.source!r}); select shards instead.")
    for key in ("shuffle_buffer", "min_width", "min_height", "num_workers"):
        if getattr(d, key) < 0:
            raise ConfigError(f"data.{key}={getattr(d, key)} must be >= 0.")
    if d.max_pwatermark is not None and not 0.0 <= d.max_pwatermark <= 1.0:
        raise ConfigError(f"data.max_pwatermark={d.max_pwatermark} must lie in [0, 1] (a probability).")


def parse_override(item: str) -> tuple[list[str], Any]:
    """'section.key=value' -> (['section', 'key'], YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set train.max_train_steps=10.")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML file <- overrides, then validation."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; see configs/ for examples.")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: expected a mapping of sections at the top level.")
        data = loaded
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {k} is not a section.")
        node[keys[-1]] = value
    return validate(_build(Config, data, ""))
