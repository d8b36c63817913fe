"""One dataclass tree for LCD and LCF runs: YAML + ``--set section.key=value`` overrides, validated up front.

Every key has a default here and nowhere else; YAML files in configs/ only override. Unknown keys and bad values
raise :class:`ConfigError` naming the dotted key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config_checks import validate
from .conventions import DEFAULT_GUIDANCE_SCALE
from .errors import ConfigError

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
    # SDXL's size/crop conditioning (time ids): "sample" = each sample's original size and crop (what SDXL was
    # trained with; diffusers' SDXL scripts' default), "fixed" = (r, r, 0, 0, r, r) (their --use_fix_crop_and_size,
    # and what SDXL pipelines pass by default at inference). Ignored for SD 1.x / 2.x.
    sdxl_time_ids: str = "sample"
    max_samples: int | None = None
    num_workers: int = 0
    shuffle_buffer: int = 1000  # hf_streaming / webdataset: samples mixed per DataLoader worker (0: shard order)
    # Filters on per-sample metadata (LAION json / parquet columns); a filter whose field a sample lacks passes it.
    min_width: int = 0  # original width (original_width | WIDTH | width) >= this; 0: off
    min_height: int = 0
    max_pwatermark: float | None = None  # pwatermark <= this
    max_punsafe: float | None = None  # punsafe (LAION's NSFW probability) <= this
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
    distributed: str = "auto"  # auto (the launch config's) | ddp | fsdp2 | zero2: engine/engine_choice.py
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
    # In-training quality signal (engine/quality.py): every quality_every steps (0 = off) the FID of quality_images
    # images of fixed prompts at quality_steps steps against the held-out imagefolder quality_reference, with
    # quality_features (auto: the testbed classifier for the digits testbed, else Inception)
    quality_every: int = 0
    quality_reference: str | None = None
    quality_images: int = 32
    quality_steps: int = 4
    quality_features: str = "auto"
    export_from: str = "last"  # last | best (the weights of the best quality_fid step; needs quality_every > 0)
    export: bool = True
    # LoRA runs: diffusers' pytorch_lora_weights.safetensors (always: student/ is merged from it) and, with "kohya",
    # lcm_lora_kohya.safetensors for ComfyUI / AUTOMATIC1111 (export.save_kohya_lora)
    lora_formats: list[str] = field(default_factory=lambda: ["diffusers", "kohya"])
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
