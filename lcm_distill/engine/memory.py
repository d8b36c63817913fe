"""Memory planner: what one training process of a resolved config holds, before any weight is loaded.

Run it as ``train_lcd.py --config X --dry-run [--gpu-gb 80] [--num-processes 8] [--zero2]``. It mirrors what
lcm_distill.models and the engine allocate (keep the two in step):

- student master weights fp32 (LoRA: the base UNet in model.frozen_dtype, adapters fp32), its gradients and the
  optimiser's states (AdamW: 2 fp32 moments; 8-bit AdamW: 2 bytes), for trainable parameters only;
- the EMA target (train.ema_decay > 0): a deep copy of the student (LoRA: of the adapters); the frozen teacher (LCD,
  not LoRA), the VAE and the text encoder in model.frozen_dtype (they stay loaded with a latent cache: validation
  uses them);
- DDP's gradient buckets (one more gradient copy) with several processes; ZeRO-2 shards gradients and optimiser
  states over the processes instead;
- activations: the student's forward + backward per sample, plus the no-grad teacher (2 x batch: cond and uncond in
  one forward) or target forward that runs while the student's activations are held. These are not computed but
  measured once per UNet architecture at two resolutions (benchmarks/measure_activations.py writes
  activations.json beside this file) and interpolated linearly in the number of latent pixels.

Parameter counts come from the networks' config files (read from the folder, the Hub cache, or for SD 2.1 / 2.1-base
the offline copies in lcm_distill.testing.sd21), built on the meta device: nothing is allocated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config import Config
from ..objective_kinds import OBJECTIVE_KINDS

GIB = 2**30
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
ACTIVATIONS_FILE = Path(__file__).with_name("activations.json")
CUDA_RESERVE_GIB = 1.5  # CUDA context + allocator fragmentation, outside max_memory_allocated


@dataclass
class Sizes:
    """Parameter counts of the run's networks."""

    unet: int
    vae: int
    text_encoder: int  # both encoders for SDXL
    lora: int = 0  # adapter parameters (model.lora.enabled)
    arch: str = ""  # activations.json key of the UNet


@dataclass
class MemoryPlan:
    lines: list[tuple[str, float, str]]  # (what, GiB, how it was counted)
    processes: int
    device_gib: float | None
    suggestions: list[tuple[str, float]] = field(default_factory=list)  # (--set ..., total GiB after it)
    activations_known: bool = True

    @property
    def total_gib(self) -> float:
        return sum(g for _, g, _ in self.lines)

    @property
    def fits(self) -> bool | None:
        return None if self.device_gib is None else self.total_gib <= self.device_gib - CUDA_RESERVE_GIB

    def render(self) -> str:
        out = [f"memory plan per process ({self.processes} process{'es' if self.processes > 1 else ''}):"]
        out += [f"  {what:<34} {gib:7.2f} GiB  {how}" for what, gib, how in self.lines]
        out.append(f"  {'total':<34} {self.total_gib:7.2f} GiB")
        if not self.activations_known:
            out.append("  activations of this UNet were never measured: the total omits them "
                       "(python benchmarks/measure_activations.py --teacher FOLDER adds them)")  # fmt: skip
        if self.device_gib is not None:
            room = self.device_gib - CUDA_RESERVE_GIB
            verdict = "fits" if self.fits else "does NOT fit"
            if not self.activations_known:
                verdict = f"weights and states alone: {verdict}"
            out.append(f"  {verdict} on a {self.device_gib:g} GiB device ({room:g} GiB after {CUDA_RESERVE_GIB} GiB "
                       "for the CUDA context and fragmentation)")  # fmt: skip
            for change, after in self.suggestions:
                out.append(f"  to fit: {change:<58} -> {after:.2f} GiB")
            if not self.fits and not self.suggestions:
                out.append("  no single switch makes it fit: use more processes with --zero2, or a larger device")
        return "\n".join(out)


def count_parameters(cfg: Config) -> Sizes:
    """Parameter counts from config files only (meta device)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from ..families import family_of
    from ..models import model_source

    lcd = OBJECTIVE_KINDS[cfg.objective.kind].needs_teacher  # a frozen teacher is held
    source = model_source(cfg.model, with_teacher=lcd)
    unet_cfg = _config(source, "unet", cfg.model.revision)
    if unet_cfg.get("time_cond_proj_dim") is None and not (
        cfg.model.lora.enabled and not cfg.model.lora.omega_conditioned
    ):
        unet_cfg["time_cond_proj_dim"] = cfg.model.omega_embed_dim  # the student's omega input
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_cfg)
        vae = AutoencoderKL.from_config(_config(cfg.model.vae or source, "" if cfg.model.vae else "vae"))
        texts = [CLIPTextModel(CLIPTextConfig(**_config(source, "text_encoder", cfg.model.revision)))]
        if family_of(unet_cfg).name == "sdxl":  # the second, larger encoder (OpenCLIP bigG for SDXL base)
            texts.append(CLIPTextModelWithProjection(CLIPTextConfig(**_config(source, "text_encoder_2",
                                                                              cfg.model.revision))))  # fmt: skip
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    lora = lora_parameters(unet, cfg.model.lora.rank, cfg.model.lora.target_modules) if cfg.model.lora.enabled else 0
    return Sizes(n(unet), n(vae), sum(n(t) for t in texts), lora, architecture_key(unet_cfg))


def lora_parameters(unet: Any, rank: int, targets: list[str]) -> int:
    """Adapter parameters peft adds: r*(in + out) per Linear, r*(in*k*k + out) per Conv2d whose name matches a
    target (the module's name equals it or ends with "." + it, peft's rule)."""
    from torch import nn

    total = 0
    for name, mod in unet.named_modules():
        if not any(name == t or name.endswith("." + t) for t in targets):
            continue
        if isinstance(mod, nn.Linear):
            total += rank * (mod.in_features + mod.out_features)
        elif isinstance(mod, nn.Conv2d):
            total += rank * (mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] + mod.out_channels)
    return total


def architecture_key(unet_cfg: dict) -> str:
    """What decides a UNet's activations (channels, depth, heads, context width, upcast attention)."""
    heads = unet_cfg.get("attention_head_dim")
    heads = "-".join(map(str, heads)) if isinstance(heads, list | tuple) else str(heads)
    upcast = "upcast" if unet_cfg.get("upcast_attention") else "plain"
    depth = unet_cfg.get("transformer_layers_per_block", 1)  # SDXL: 1 / 2 / 10 transformer layers per level
    depth = "" if depth == 1 else "/t" + ("-".join(map(str, depth)) if isinstance(depth, list | tuple) else str(depth))
    return (f"unet/c{'-'.join(map(str, unet_cfg['block_out_channels']))}/l{unet_cfg.get('layers_per_block')}"
            f"/h{heads}/x{unet_cfg.get('cross_attention_dim')}/{upcast}"
            f"/{'-'.join(b[:4] for b in unet_cfg['down_block_types'])}{depth}")  # fmt: skip


def activation_bytes(
    arch: str, kind: str, latent_pixels: int, batch: int = 1, table: dict | None = None
) -> float | None:
    """Bytes of one measured ``kind`` (e.g. "bf16/train", "bf16/train_ckpt", "bf16/nograd") for ``batch`` samples
    of ``latent_pixels`` = h*w latents; None if never measured.

    The two batch-1 points give a line in the pixel count: its slope is per sample, so it scales with the batch;
    its intercept does not (what a pass holds whatever the batch: autocast's low-precision copies of the weights,
    which backward keeps, and fixed buffers).
    """
    table = load_activation_table() if table is None else table
    points = table.get(arch, {}).get(kind)
    if not points:
        return None
    (p1, b1), (p2, b2) = sorted((int(p), float(b)) for p, b in points.items())[:2]
    slope = max(0.0, (b2 - b1) / (p2 - p1))
    intercept = max(0.0, b1 - slope * p1)
    return intercept + slope * latent_pixels * batch


def load_activation_table() -> dict:
    return json.loads(ACTIVATIONS_FILE.read_text()) if ACTIVATIONS_FILE.is_file() else {}


def estimate(
    cfg: Config,
    processes: int = 1,
    zero2: bool = False,
    device_gib: float | None = None,
    sizes: Sizes | None = None,
    table: dict | None = None,
    suggest: bool = True,
    engine: str | None = None,
) -> MemoryPlan:
    """The per-process memory of ``cfg`` (see module docstring): activations are those of train.mixed_precision on
    any device (a CPU run's policy is not modelled separately; scale_rehearsal measures it within -0.6/+0.4 GiB).
    ``engine`` (ddp | fsdp2 | zero2; ``zero2=True`` is the same as engine="zero2"): FSDP2 divides weights,
    gradients, AdamW states and the EMA target by the process count and adds two gathered blocks (estimated as 10% of
    the UNet); ZeRO-2 divides gradients and AdamW states, and with bf16 holds a bf16 compute copy plus fp32 masters / N.
    Not measured on a GPU yet."""
    s = sizes or count_parameters(cfg)
    m, t, o = cfg.model, cfg.train, cfg.optim
    engine = engine or ("zero2" if zero2 else "ddp")
    zero2 = engine == "zero2"
    fsdp = engine == "fsdp2" and processes > 1
    frozen = BYTES[m.frozen_dtype]
    lcd = OBJECTIVE_KINDS[cfg.objective.kind].needs_teacher  # a frozen teacher is held
    shard = processes if (zero2 or fsdp) and processes > 1 else 1
    trainable = s.lora if m.lora.enabled else s.unet
    opt_bytes = 2 if o.use_8bit_adam else 8
    lines: list[tuple[str, float, str]] = []
    add = lambda what, n_bytes, how: lines.append((what, n_bytes / GIB, how))  # noqa: E731
    if m.lora.enabled:
        add("student: base UNet (frozen)", s.unet * frozen, f"{s.unet / 1e6:.1f}M x {m.frozen_dtype}")
        add("student: LoRA adapters", s.lora * 4, f"{s.lora / 1e6:.1f}M x fp32 (rank {m.lora.rank})")
    elif zero2 and t.mixed_precision == "bf16":
        add("student UNet", s.unet * 2, f"{s.unet / 1e6:.1f}M x bf16 (DeepSpeed's compute copy)")
        add("fp32 master weights", s.unet * 4 / shard, f"ZeRO-2 / {shard}")
    elif fsdp:
        add("student UNet", s.unet * 4 / shard, f"{s.unet / 1e6:.1f}M x fp32, FSDP2 / {shard}")
        add("FSDP2 gathered blocks", 2 * 0.1 * s.unet * 4, "two blocks unsharded at a time (estimate: 10% of the UNet)")
    else:
        add("student UNet", s.unet * 4, f"{s.unet / 1e6:.1f}M x fp32")
    add("gradients", trainable * 4 / shard, "fp32" + (f", {engine} / {shard}" if shard > 1 else ""))
    add(
        "optimiser states",
        trainable * opt_bytes / shard,
        ("8-bit AdamW, 2 B/param" if o.use_8bit_adam else "AdamW, 2 x fp32") + (f", / {shard}" if shard > 1 else ""),
    )
    if processes > 1 and engine == "ddp":
        add("DDP gradient buckets", trainable * 4, "one more gradient copy")
    if t.ema_decay > 0:
        target = s.lora * 4 if m.lora.enabled else s.unet * 4  # LoRA: an EMA of the adapters (models.AdapterEMA)
        what = "copy of the adapters" if m.lora.enabled else "copy of the student"
        add("EMA target", target / (shard if fsdp else 1),
            f"{what} (mu {t.ema_decay:g})" + (f", sharded like it / {shard}" if fsdp else ""))
    if lcd and not m.lora.enabled:
        add("teacher UNet (frozen)", s.unet * frozen, m.frozen_dtype)
    add("VAE + text encoder (frozen)", (s.vae + s.text_encoder) * frozen, m.frozen_dtype)  # SDXL: both encoders
    known = True
    precision = "fp32" if t.mixed_precision == "no" else "bf16"
    hw = (cfg.data.resolution // 8) ** 2
    train_kind = f"{precision}/{'lora' if m.lora.enabled else 'train'}{'_ckpt' if m.gradient_checkpointing else ''}"
    b = t.per_device_batch_size
    held = activation_bytes(s.arch, train_kind, hw, b, table)
    # teacher (cond + uncond in one forward: twice the batch) and target run one after the other: the larger counts
    nograd = activation_bytes(s.arch, f"{precision}/nograd", hw, 2 * b if lcd else b, table)
    if held is None or nograd is None:
        known = False
    else:
        # Two phases, the larger one is the peak: (1) the student's forward + backward; (2) the no-grad teacher /
        # target forward while the student's saved tensors wait for backward. In (2) the student keeps its per-sample
        # part, and its fixed part (autocast's weight copies) only without checkpointing (with it they are recomputed).
        fixed = activation_bytes(s.arch, train_kind, 0, 1, table) or 0.0
        kept = held - (fixed if m.gradient_checkpointing else 0.0)
        phase = "student fwd+bwd" if held >= kept + nograd else "teacher/target fwd over the student's saved tensors"
        add("activations (peak phase)", max(held, kept + nograd),
            f"{phase}; batch {b}, {train_kind}, {cfg.data.resolution} px")  # fmt: skip
    plan = MemoryPlan(lines, processes, device_gib, activations_known=known)
    if suggest and plan.fits is False:
        plan.suggestions = _suggestions(cfg, processes, zero2 or fsdp, device_gib, s, table)
    return plan


def _suggestions(cfg, processes, zero2, device_gib, sizes, table) -> list[tuple[str, float]]:
    """Switches in the order they cost least (speed, then method), applied cumulatively until the plan fits."""
    m, o, t = cfg.model, cfg.optim, cfg.train
    changes: list[tuple[str, str, dict]] = []  # (what to type, section, its new values)
    if not m.gradient_checkpointing:
        changes.append(("model.gradient_checkpointing=true", "model", {"gradient_checkpointing": True}))
    if m.frozen_dtype == "fp32":
        changes.append(("model.frozen_dtype=bf16", "model", {"frozen_dtype": "bf16"}))
    if not o.use_8bit_adam:
        changes.append(("optim.use_8bit_adam=true", "optim", {"use_8bit_adam": True}))
    if processes > 1 and not zero2:
        changes.append(("--zero2 (configs/accelerate/deepspeed_zero2.yaml)", "zero2", {}))
    b, acc = t.per_device_batch_size, t.gradient_accumulation_steps
    while b > 1:  # the same global batch through gradient accumulation
        b, acc = b // 2, acc * 2
        changes.append((f"train.per_device_batch_size={b} train.gradient_accumulation_steps={acc}", "train",
                        {"per_device_batch_size": b, "gradient_accumulation_steps": acc}))  # fmt: skip
    out: list[tuple[str, float]] = []
    zero = zero2
    for name, section, values in changes:
        if section == "zero2":
            zero = True
        else:
            cfg = replace(cfg, **{section: replace(getattr(cfg, section), **values)})
        plan = estimate(cfg, processes, zero, device_gib, sizes, table, suggest=False)
        out.append((name, plan.total_gib))
        if plan.fits:
            return out
    return out


def _config(source: str, subfolder: str, revision: str | None = None) -> dict:
    """A network's config.json from a folder, the Hub (or its cache), or the offline SD 2.1 copies."""
    path = Path(source) / subfolder / "config.json"
    if path.is_file():
        return json.loads(path.read_text())
    try:
        import warnings

        from huggingface_hub import hf_hub_download

        with warnings.catch_warnings():  # huggingface_hub's own deprecation notices say nothing about the plan
            warnings.simplefilter("ignore")
            found = hf_hub_download(source, "config.json", subfolder=subfolder or None, revision=revision)
        return json.loads(Path(found).read_text())
    except Exception as err:
        from ..known_configs import known_network_config

        known = known_network_config(source, subfolder)
        if known is not None:
            return known
        raise FileNotFoundError(
            f"{source}/{subfolder}/config.json: not a folder and not reachable on the Hub "
            f"({type(err).__name__}); the memory plan needs the network configs."
        ) from err
