"""Build teacher, student and target from diffusers checkpoints, under one dtype policy (docs/design.md).

- Teacher: the SD UNet of ``model.teacher`` (folder or hub id), frozen; prediction type from its scheduler config.
- Student: the teacher's UNet config plus ``time_cond_proj_dim`` (the omega input), teacher weights loaded; the only
  new tensor is ``time_embedding.cond_proj.weight`` (zero init: student == teacher at step 0; random: diffusers').
  With LoRA the student is the teacher's UNet with peft adapters (no omega input) and the teacher is the same
  module with adapters disabled, so only one UNet is in memory.
- Target: an EMA copy of the student (mu > 0), or the student itself under no_grad (mu = 0).
- dtype policy: frozen teacher / VAE / text encoder in ``model.frozen_dtype``; student master weights fp32;
  schedule and consistency math fp32 (lcm_distill.functional).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .conditioning import Conditioning, TextStack
from .config import LoRAConfig, ModelConfig
from .functional import DTYPES, NoiseSchedule

logger = logging.getLogger(__name__)

COND_PROJ_INITS = ("zero", "random")  # model.cond_proj_init
ATTENTION_IMPLS = ("sdpa", "eager")  # model.attention: torch SDPA (diffusers' default) | AttnProcessor

@dataclass
class Models:
    """Everything a consistency step needs besides data."""

    student: nn.Module
    target: nn.Module | None  # None: the student under no_grad (mu = 0)
    teacher: nn.Module | None  # None: LCF (no teacher) or LoRA (student with adapters disabled)
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    scheduler_config: dict
    schedule: NoiseSchedule
    omega_dim: int | None  # time_cond_proj_dim of the student; None: no omega input (LoRA on a plain UNet)
    lora: bool = False
    frozen_dtype: torch.dtype = torch.float32
    text_encoder_2: nn.Module | None = None  # SDXL's second encoder (CLIPTextModelWithProjection) and tokenizer
    tokenizer_2: Any = None

    def __post_init__(self) -> None:
        self._uncond: dict[int, Conditioning] = {}

    @property
    def text(self) -> TextStack:
        """The family's text encoders (one for SD 1.x / 2.x, two for SDXL): captions -> Conditioning."""
        return TextStack.of(self.tokenizer, self.text_encoder, self.tokenizer_2, self.text_encoder_2)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell: 2^(levels - 1) of the VAE (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        """(C, h, w) of the VAE latents of ``resolution``-pixel square images."""
        hw = resolution // self.vae_scale_factor
        return (self.vae.config.latent_channels, hw, hw)

    def uncond_embeds(self, n: int) -> Conditioning:
        """The teacher's unconditional branch for n samples (without time ids), once per batch size: the empty
        prompt's embeddings (SD), zeros (SDXL; lcm_distill/conditioning.py)."""
        if n not in self._uncond:
            self._uncond[n] = self.text.unconditional(n)
        return self._uncond[n]

    def to(self, device: torch.device) -> Models:
        """Move everything a step touches: the networks and the noise schedule's tables."""
        for m in (self.student, self.target, self.teacher, self.vae, self.text_encoder, self.text_encoder_2):
            if m is not None:
                m.to(device)
        self.schedule = self.schedule.to(device)
        return self

    @contextlib.contextmanager
    def teacher_unet(self, student: nn.Module | None = None) -> Iterator[nn.Module]:
        """The frozen teacher; with LoRA, the (unwrapped) student with adapters disabled for the duration."""
        if self.teacher is not None:
            yield self.teacher
            return
        if not self.lora:
            raise RuntimeError("this run has no teacher (LCF); the LCD objective needs model.teacher.")
        unet = student if student is not None else self.student
        unet.disable_adapters()
        try:
            yield unet
        finally:
            unet.enable_adapters()

    def encode_prompts(self, captions: list[str]) -> Conditioning:
        return self.text.encode(captions)

    def encode_images(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        return encode_images(self.vae, pixel_values)


@torch.no_grad()
def encode_images(vae: nn.Module, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
    """VAE posterior (mean, std) of pixel batches in [-1, 1], already times the VAE scaling factor (fp32)."""
    p = next(vae.parameters())
    dist = vae.encode(pixel_values.to(p.device, p.dtype)).latent_dist
    scale = float(vae.config.scaling_factor)
    return dist.mean.float() * scale, dist.std.float() * scale


def read_scheduler_config(source: str, revision: str | None = None) -> dict:
    """The scheduler config of a diffusers folder / hub id (a JSON read; no weights are loaded)."""
    from diffusers import DDPMScheduler

    return dict(DDPMScheduler.load_config(source, subfolder="scheduler", revision=revision))


def read_family(source: str, revision: str | None = None):
    """The :class:`~lcm_distill.families.Family` of a diffusers folder / hub id, from its ``unet/config.json`` and
    ``model_index.json`` (JSON reads; no weights are loaded). Raises what diffusers raises when the UNet config
    cannot be read."""
    from diffusers import DiffusionPipeline, UNet2DConditionModel

    from .families import family_of

    unet = UNet2DConditionModel.load_config(source, subfolder="unet", revision=revision)
    try:
        index = DiffusionPipeline.load_config(source, revision=revision)
    except Exception:  # a folder without model_index.json: the UNet alone decides
        index = None
    return family_of(unet, index)


EXPORTED_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler")


def components_not_exported(source: str, revision: str | None = None) -> list[str]:
    """Components of the pipeline ``source`` (model_index.json; a JSON read, no weights) that an export does not
    carry over, e.g. the public LCM repos' ``safety_checker`` and ``feature_extractor``: the run warns and the card
    says so, so a user does not lose a safety checker without knowing. [] when the index cannot be read."""
    from diffusers import DiffusionPipeline

    try:
        index = DiffusionPipeline.load_config(source, revision=revision)
    except Exception:  # no model_index.json (a bare UNet folder) or an unreadable hub id: nothing to report
        return []
    return sorted(k for k, v in index.items() if not k.startswith("_") and k not in EXPORTED_COMPONENTS
                  and isinstance(v, list) and v[0] is not None)  # fmt: skip


def _frozen(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    module.requires_grad_(False)
    module.eval()
    return module if next(module.parameters()).dtype == dtype else module.to(dtype=dtype)


def build_student(teacher_unet: nn.Module, omega_dim: int, init: str, seed: int = 0) -> nn.Module:
    """A copy of the teacher UNet with an omega input (``time_cond_proj_dim``); see module docstring."""
    from diffusers import UNet2DConditionModel

    config = dict(teacher_unet.config)
    config["time_cond_proj_dim"] = omega_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = UNet2DConditionModel.from_config(config)
    missing, unexpected = student.load_state_dict(teacher_unet.state_dict(), strict=False)
    if unexpected or missing != ["time_embedding.cond_proj.weight"]:
        raise RuntimeError(
            f"teacher UNet does not fit the student built from its config: missing={missing}, "
            f"unexpected={unexpected}. Is model.teacher an SD-1/2-style UNet2DConditionModel?"
        )
    if init == "zero":
        nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student.float()


class AdapterEMA(nn.Module):
    """The EMA target of a LoRA run (LCM Algorithm 1 line 7, θ⁻ ← μθ⁻ + (1 − μ)θ, applied to the trainable tensors
    only: the adapters, and the ω input when ω-conditioned). Its forward is the student's forward with the EMA
    tensors put in place of the trained ones (``torch.func.functional_call``), so the target costs one copy of the
    adapters instead of a second UNet. The public LCM-LoRA trainers have no target network (the student under
    no_grad is its own target: ``train.ema_decay: 0``, still available).

    ``parameters()`` lists the EMA tensors in the order of :meth:`tracked`, which is what the EMA update pairs them
    with; the student itself is held by reference, not as a submodule, so checkpoints hold the adapters only.
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.names = [n for n, p in student.named_parameters() if p.requires_grad]
        if not self.names:
            raise ValueError("AdapterEMA needs a student with trainable (adapter) parameters.")
        trained = dict(student.named_parameters())
        self.ema = nn.ParameterList(nn.Parameter(trained[n].detach().clone(), requires_grad=False)
                                    for n in self.names)  # fmt: skip
        object.__setattr__(self, "_student", student)  # a reference, not a submodule
        self._tracked = [trained[n] for n in self.names]  # the same Parameter objects all run (.to() keeps them)

    @property
    def config(self):
        return self._student.config

    def tracked(self, student: nn.Module | None = None) -> list[Tensor]:
        """The student's trained tensors that the EMA follows, in the order of ``parameters()`` (resolved once for
        the student it was built from: this runs every optimiser step)."""
        if student is None or student is self._student:
            return self._tracked
        named = dict(student.named_parameters())
        return [named[n] for n in self.names]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(self._student, dict(zip(self.names, self.ema, strict=True)), args, kwargs)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[nn.Module]:
        """The student with the EMA adapters in place (validation grids, export), restored on exit."""
        trained = self.tracked()
        saved = [p.detach().clone() for p in trained]
        with torch.no_grad():
            for p, e in zip(trained, self.ema, strict=True):
                p.copy_(e)
        try:
            yield self._student
        finally:
            with torch.no_grad():
                for p, s in zip(trained, saved, strict=True):
                    p.copy_(s)


@contextlib.contextmanager
def as_unet(net: nn.Module) -> Iterator[nn.Module]:
    """A UNet to sample with: ``net`` itself, or for an AdapterEMA the student with the EMA adapters swapped in."""
    if isinstance(net, AdapterEMA):
        with net.swapped() as unet:
            yield unet
    else:
        yield net


def _attach_lora(unet: nn.Module, lc: LoRAConfig) -> nn.Module:
    from peft import LoraConfig

    from .config import ConfigError

    try:
        unet.add_adapter(
            LoraConfig(r=lc.rank, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=list(lc.target_modules))
        )
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"model.lora.target_modules={list(lc.target_modules)}: {err} Use module names of the UNet "
                          "(e.g. to_q, to_k, to_v, to_out.0; the default list fits SD 1.x/2.x).") from err  # fmt: skip
    return unet


def model_source(m: ModelConfig, with_teacher: bool = True) -> str:
    """The folder / hub id a run loads its networks from: model.teacher, or for a teacher-free objective (LCF)
    model.student when given."""
    return m.student if (not with_teacher and m.student) else m.teacher


def load_frozen_encoders(m: ModelConfig, with_teacher: bool = True) -> tuple[nn.Module, nn.Module, Any]:
    """(vae, text_encoder, tokenizer) of the run, frozen in model.frozen_dtype; also used alone by the latent cache."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    source, frozen = model_source(m, with_teacher), DTYPES[m.frozen_dtype]
    tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", revision=m.revision)
    text_encoder = _frozen(CLIPTextModel.from_pretrained(source, subfolder="text_encoder", revision=m.revision), frozen)
    vae = (
        AutoencoderKL.from_pretrained(m.vae)
        if m.vae
        else AutoencoderKL.from_pretrained(source, subfolder="vae", revision=m.revision)
    )
    return _frozen(vae, frozen), text_encoder, tokenizer


def load_second_encoder(m: ModelConfig, with_teacher: bool = True) -> tuple[nn.Module | None, Any]:
    """(text_encoder_2, tokenizer_2) of an SDXL source, frozen like the first; (None, None) for SD 1.x / 2.x."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    from .hub import model_location

    source = model_source(m, with_teacher)
    if read_family(model_location(source, m.revision), m.revision).name != "sdxl":
        return None, None
    tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2", revision=m.revision)
    encoder = CLIPTextModelWithProjection.from_pretrained(source, subfolder="text_encoder_2", revision=m.revision)
    return _frozen(encoder, DTYPES[m.frozen_dtype]), tokenizer


def load_base_unet(m: ModelConfig, with_teacher: bool = True) -> nn.Module:
    """The run's source UNet as stored (fp32 for SD folders): model.teacher, or model.student for teacher-free LCF."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(model_source(m, with_teacher), subfolder="unet", revision=m.revision)


def load_models(m: ModelConfig, *, with_teacher: bool = True, with_target: bool = True, seed: int = 0) -> Models:
    """Load and build every network of the run on CPU (the engine moves them).

    Takes only what decides the networks: the model keys, whether the objective needs the frozen teacher (LCD does;
    teacher-free LCF may start from model.student), whether an EMA target is kept (train.ema_decay > 0) and the seed
    of a random cond_proj.
    """
    frozen = DTYPES[m.frozen_dtype]
    source = model_source(m, with_teacher)
    vae, text_encoder, tokenizer = load_frozen_encoders(m, with_teacher)
    text_encoder_2, tokenizer_2 = load_second_encoder(m, with_teacher)
    sched_cfg = read_scheduler_config(source, m.revision)
    schedule = NoiseSchedule.from_config(sched_cfg)
    base = load_base_unet(m, with_teacher)
    teacher = None
    if m.lora.enabled:
        # The base weights are the frozen teacher (adapters off) and frozen in the student: model.frozen_dtype.
        # Only the adapters train, in fp32 (the run's autocast computes in half precision; see config validation).
        omega_dim = None
        if m.lora.omega_conditioned and base.config.time_cond_proj_dim is None:
            omega_dim = m.omega_embed_dim  # the base gains a cond_proj; adapters off and no omega = the teacher
            base = build_student(base, omega_dim, m.cond_proj_init, seed)
        elif m.lora.omega_conditioned:
            omega_dim = base.config.time_cond_proj_dim
        with torch.random.fork_rng(devices=[]):  # peft draws lora_A from the global RNG: seed it with the run's
            torch.manual_seed(seed)  # seed, or two runs in one process start from different adapters
            student = _attach_lora(base.to(frozen), m.lora)
        student.requires_grad_(False)
        for name, p in student.named_parameters():
            if "lora_" in name or (omega_dim is not None and "time_embedding.cond_proj" in name):
                p.requires_grad_(True)
                p.data = p.data.float()
    elif not with_teacher and m.student:
        student = base.float()
        omega_dim = student.config.time_cond_proj_dim
    else:
        omega_dim = base.config.time_cond_proj_dim or m.omega_embed_dim
        if base.config.time_cond_proj_dim is not None:
            logger.info("teacher already has time_cond_proj_dim=%s; the student reuses it", omega_dim)
            student = copy.deepcopy(base).float()
        else:
            student = build_student(base, omega_dim, m.cond_proj_init, seed)
        if with_teacher:
            teacher = _frozen(base, frozen)
    if with_teacher and teacher is None and not m.lora.enabled:
        raise RuntimeError("LCD needs a teacher UNet; set model.teacher.")
    if m.attention == "eager":
        from diffusers.models.attention_processor import AttnProcessor

        for net in (student, teacher):
            if net is not None:
                net.set_attn_processor(AttnProcessor())
    if m.channels_last:  # layout only: parameters and state_dict keys are unchanged
        for net in (student, teacher):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    if m.gradient_checkpointing:
        student.enable_gradient_checkpointing()
    student.train()
    target = None
    if with_target:  # LoRA: an EMA of the adapters only (AdapterEMA), not a second UNet
        target = AdapterEMA(student) if m.lora.enabled else copy.deepcopy(student).requires_grad_(False)
    if m.compile:  # in place: parameters and state_dict keys stay those of the plain module (checkpoints, export)
        for net in (student, target, teacher):
            if net is not None:
                net.compile(backend=m.compile_backend)
    return Models(
        student=student,
        target=target,
        teacher=teacher,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler_config=sched_cfg,
        schedule=schedule,
        omega_dim=omega_dim,
        lora=m.lora.enabled,
        frozen_dtype=frozen,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )
