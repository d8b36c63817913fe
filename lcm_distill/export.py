"""Write a trained LCM as an ordinary diffusers folder, with a model card, and push it to the Hub.

Engine-facing API (what the training engine calls at the end of a run, with unwrapped, merged modules)::

    from lcm_distill.export import ModelCardInfo, push_to_hub, save_lcm_pipeline

    folder = save_lcm_pipeline(
        out_dir,
        unet=student_unet,            # UNet2DConditionModel; LoRA merged (merge_and_unload) before export
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        teacher_scheduler_config=dict(teacher_scheduler.config),  # the schedule (and prediction_type) trained on
        num_points=grid.num_points,   # the skipping grid's N, written as original_inference_steps
        card=ModelCardInfo(base_model="stabilityai/stable-diffusion-2-1-base", method="LCD", datasets=[...]),
    )
    push_to_hub(folder, "user/my-lcm", token=None, private=False)   # optional

Why this shape: the folder must load in stock diffusers (``LatentConsistencyModelPipeline`` and
``DiffusionPipeline``) with no code of ours, so the scheduler is a plain ``LCMScheduler`` built from the teacher's
schedule, and the one fact the student adds - its training grid N - travels as the scheduler config key
``original_inference_steps`` (the contract read by ``LCMPipeline`` and by stock ``LCMScheduler``). Our own pipeline
file is copied beside the weights so ``custom_pipeline="pipeline_lcm"`` works from the Hub too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .functional import (
    DEFAULT_GUIDANCE_SCALE,
    SkippingGrid,
    guidance_scale_from_omega,
    num_train_timesteps,
    omega_from_guidance_scale,
)

METHODS = {
    "LCD": "Latent Consistency Distillation (LCM paper, Algorithm 1): the student learns to map any point of the "
    "teacher's classifier-free-guided probability-flow ODE to its origin, with ω-conditioning.",
    "LCF": "Latent Consistency Fine-tuning (LCM paper, Algorithm 4): teacher-free consistency training of a "
    "pretrained LCM on a custom dataset.",
}
REPO_PLACEHOLDER = "<your-username>/<your-lcm>"
PROMPT = '"a photo of an astronaut riding a horse"'


@dataclass
class ModelCardInfo:
    """What the model card says. ``guidance_scale`` is diffusers' convention (embedded ω = guidance_scale - 1)."""

    base_model: str
    method: str = "LCD"
    license: str = "openrail++"
    datasets: list[str] = field(default_factory=list)  # Hub dataset ids, for the front matter
    data_description: str = ""
    recommended_steps: tuple[int, ...] = (1, 2, 4)
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    omega_range: tuple[float, float] | None = None  # training ω ~ U[lo, hi], reported on the card
    solver: str | None = None  # teacher ODE solver of LCD (ddim, dpm2, ...)
    tags: list[str] = field(default_factory=list)
    model_name: str | None = None
    repo_id: str | None = None  # filled in by push_to_hub when left None
    notes: str = ""

    def __post_init__(self) -> None:
        self.method = self.method.upper()
        if self.method not in METHODS:
            raise ValueError(f"ModelCardInfo.method={self.method!r}: use one of {sorted(METHODS)}.")
        if not self.base_model:
            raise ValueError("ModelCardInfo.base_model must name the teacher/base model (a Hub id or a path).")
        if not self.recommended_steps or min(self.recommended_steps) < 1:
            raise ValueError(
                f"recommended_steps={self.recommended_steps} must be positive step counts, e.g. (1, 2, 4)."
            )


def render_model_card(card: ModelCardInfo, num_points: int, has_omega_embedding: bool = True) -> str:
    """README.md text: YAML front matter for the Hub, then method, data, settings and how to load."""
    front: dict[str, Any] = {
        "base_model": card.base_model,
        "license": card.license,
        "library_name": "diffusers",
        "pipeline_tag": "text-to-image",
        "tags": list(
            dict.fromkeys(["latent-consistency-model", "lcm", "lcm-distill", card.method.lower(), *card.tags])
        ),
    }
    if card.datasets:
        front["datasets"] = list(card.datasets)
    repo = card.repo_id or REPO_PLACEHOLDER
    steps = ", ".join(str(s) for s in card.recommended_steps)
    best = card.recommended_steps[-1]
    if has_omega_embedding:
        guidance = (
            f"`guidance_scale={card.guidance_scale}` (diffusers convention: the student is conditioned on "
            f"ω = guidance_scale − 1 = {omega_from_guidance_scale(card.guidance_scale):g}; there is no second, "
            "unconditional pass)"
        )
        if card.omega_range is not None:
            lo, hi = card.omega_range
            g_lo, g_hi = guidance_scale_from_omega(lo), guidance_scale_from_omega(hi)
            guidance += f"; trained on ω ∈ [{lo:g}, {hi:g}], i.e. guidance_scale ∈ [{g_lo:g}, {g_hi:g}]"
        call = f"pipe({PROMPT}, num_inference_steps={best}, guidance_scale={card.guidance_scale})"
    else:
        guidance = (
            "`guidance_scale=1.0` (no CFG pass): this UNet has no ω input; "
            + _baked_guidance(card.omega_range)
        )
        call = f"pipe({PROMPT}, num_inference_steps={best}, guidance_scale=1.0)"
    stock_class = "LatentConsistencyModelPipeline" if has_omega_embedding else "StableDiffusionPipeline + LCMScheduler"
    lines = [
        f"# {card.model_name or repo.split('/')[-1]}",
        "",
        f"A Latent Consistency Model made with lcm-distill from `{card.base_model}`.",
        "",
        f"- **Training method**: {card.method}. {METHODS[card.method]}",
        f"- **Data**: {card.data_description or ', '.join(card.datasets) or 'not stated'}",
        f"- **Training grid**: N = {num_points} skipping-step points (`original_inference_steps` in the scheduler "
        "config); inference timesteps are chosen on it.",
    ]
    if card.solver:
        lines.append(f"- **Teacher ODE solver**: {card.solver}")
    lines += [
        f"- **Recommended steps**: {steps}",
        f"- **Recommended guidance**: {guidance}",
        f"- **License**: {card.license}",
        "",
        "## Use with stock diffusers",
        "",
        "```python",
        "from diffusers import DiffusionPipeline",
        "",
        f'pipe = DiffusionPipeline.from_pretrained("{repo}")  # {stock_class}',
        f"image = {call}.images[0]",
        "```",
        "",
        "## Use with the bundled pipeline (img2img, stochastic sampling, no ω embedding needed)",
        "",
        "`pipeline_lcm.py` in this repository depends only on torch, diffusers and transformers:",
        "",
        "```python",
        "from diffusers import DiffusionPipeline",
        "",
        f'pipe = DiffusionPipeline.from_pretrained("{repo}", custom_pipeline="pipeline_lcm", trust_remote_code=True)',
        f"image = {call[:-1]}, noise_fraction=1.0).images[0]",
        "```",
        "",
        "`noise_fraction` (0-1) sets how much fresh noise is injected between steps: 1 is the LCM sampler, 0 is",
        "deterministic. With lcm-distill installed: `from lcm_distill.pipelines import LCMPipeline`, or",
        f"`lcm-distill-generate --model {repo} --prompt '...' --steps {best}`.",
    ]
    if card.notes:
        lines += ["", card.notes]
    return _card_text(front, lines)


def _card_text(front: dict, lines: list[str]) -> str:
    """A model card: YAML front matter for the Hub, then the body lines."""
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(lines) + "\n"


def _lora_card_text(card: ModelCardInfo, lines: list[str]) -> str:
    """Every LoRA card's front matter + the body lines."""
    front = {"base_model": card.base_model, "license": card.license, "library_name": "diffusers",
             "tags": ["lora", "latent-consistency-model", "lcm-lora", "lcm-distill", card.method.lower()]}  # fmt: skip
    return _card_text(front, lines)


def _baked_guidance(omega_range: tuple[float, float] | None) -> str:
    """What guidance a UNet without the ω input learnt from its teacher's targets."""
    if omega_range is None:
        return "the guidance it was distilled with is not recorded"
    lo, hi = omega_range
    if lo == hi:
        return (f"the teacher's guidance ω = {lo:g} (diffusers guidance_scale {guidance_scale_from_omega(lo):g}) is "
                "distilled into the "
                "weights")  # fmt: skip
    return (f"it was distilled over ω ∈ [{lo:g}, {hi:g}] and draws an average of those guidance strengths "
            "(objective.omega_fixed sets one)")  # fmt: skip


def render_lora_card(card: ModelCardInfo, num_points: int, rank: int, alpha: float,
                     omega_conditioned: bool = False) -> str:  # fmt: skip
    """README.md of an exported LCM-LoRA folder: what to load it into, and how to sample (stock diffusers)."""
    repo = card.repo_id or REPO_PLACEHOLDER
    best = card.recommended_steps[-1]
    if omega_conditioned:
        return _render_omega_lora_card(card, num_points, rank, alpha, repo, best)
    lines = [
        f"# {card.model_name or repo.split('/')[-1]}",
        "",
        f"An LCM-LoRA (rank {rank}, alpha {alpha:g}; the adapter config is in the safetensors metadata) made with "
        f"lcm-distill ({card.method}) from `{card.base_model}`. It turns that model into a {best}-step sampler.",
        "",
        f"- **Guidance**: sample with `guidance_scale=1.0`; {_baked_guidance(card.omega_range)}.",
        f"- **Scheduler**: LCMScheduler with `original_inference_steps={num_points}` (the training grid).",
        f"- **Data**: {card.data_description or ', '.join(card.datasets) or 'not stated'}",
        "",
        "## Use with stock diffusers",
        "",
        "```python",
        "from diffusers import DiffusionPipeline, LCMScheduler",
        "",
        f'pipe = DiffusionPipeline.from_pretrained("{card.base_model}")',
        f"pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config, original_inference_steps={num_points})",
        f'pipe.load_lora_weights("{repo}")',
        f"image = pipe({PROMPT}, num_inference_steps={best}, guidance_scale=1.0).images[0]",
        "```",
    ]
    return _lora_card_text(card, lines)


OMEGA_INPUT_FILE = "omega_cond_proj.safetensors"  # the trained omega input of an omega-conditioned LoRA


def save_omega_input(unet: Any, folder: str | Path, num_points: int) -> Path:
    """Write the UNet's omega input (time_embedding.cond_proj) beside its LoRA; stock loaders cannot add it."""
    from safetensors.torch import save_file

    path = Path(folder) / OMEGA_INPUT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    weight = unet.time_embedding.cond_proj.weight.detach().float().contiguous().cpu()
    save_file({"weight": weight}, str(path), metadata={"num_points": str(int(num_points))})
    return path


def load_omega_lora(base: str | Path, lora_folder: str | Path, **from_pretrained: Any):
    """An LCMPipeline from a base SD pipeline (folder or hub id) and an omega-conditioned LoRA folder: the base UNet
    gains the saved omega input, then the adapters load with diffusers' load_lora_weights."""
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    from .models import build_student
    from .pipelines import LCMPipeline

    path = Path(lora_folder) / OMEGA_INPUT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not an omega-conditioned LoRA folder (use load_lora_weights for plain ones).")
    with safe_open(str(path), "pt") as f:
        weight, num_points = f.get_tensor("weight"), int(f.metadata()["num_points"])
    sd = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, **from_pretrained)
    sd.unet = build_student(sd.unet, weight.shape[1], "zero").to(sd.unet.dtype)
    with torch.no_grad():
        sd.unet.time_embedding.cond_proj.weight.copy_(weight)
    sd.load_lora_weights(lora_folder)
    return LCMPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet,
                       scheduler=lcm_scheduler(sd.scheduler.config, num_points))  # fmt: skip


def _render_omega_lora_card(card: ModelCardInfo, num_points: int, rank: int, alpha: float, repo: str, best: int) -> str:
    lo, hi = card.omega_range or (0.0, 0.0)
    lines = [
        f"# {card.model_name or repo.split('/')[-1]}",
        "",
        f"An ω-conditioned LCM-LoRA (rank {rank}, alpha {alpha:g}) made with lcm-distill ({card.method}) from "
        f"`{card.base_model}`: the adapters plus a trained ω input (`{OMEGA_INPUT_FILE}`), so one file serves every "
        f"guidance_scale in [{guidance_scale_from_omega(lo):g}, {guidance_scale_from_omega(hi):g}] (ω = "
        "guidance_scale − 1 embedded, no CFG pass).",
        "",
        "Stock `load_lora_weights` cannot add the ω input to a base UNet. Either use the merged `student/` folder of",
        "the same run (stock `LatentConsistencyModelPipeline`), or, with lcm-distill installed:",
        "",
        "```python",
        "from lcm_distill.export import load_omega_lora",
        "",
        f'pipe = load_omega_lora("{card.base_model}", "{repo}")',
        f"image = pipe({PROMPT}, num_inference_steps={best}, guidance_scale={card.guidance_scale}).images[0]",
        "```",
        "",
        f"Training grid: N = {num_points}. Data: {card.data_description or ', '.join(card.datasets) or 'not stated'}.",
    ]
    return _lora_card_text(card, lines)


def lcm_scheduler(teacher_scheduler_config: Mapping[str, Any], num_points: int):
    """The student's LCMScheduler: the teacher's schedule and prediction type, training grid N as
    ``original_inference_steps`` (validated: N must divide num_train_timesteps). The one place N is written."""
    from diffusers import LCMScheduler

    config = {k: v for k, v in dict(teacher_scheduler_config).items() if not k.startswith("_")}
    SkippingGrid(num_train_timesteps(config), int(num_points))
    return LCMScheduler.from_config(config, original_inference_steps=int(num_points))


def save_lcm_pipeline(
    out_dir: str | Path,
    *,
    unet: Any,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    teacher_scheduler_config: Mapping[str, Any],
    num_points: int,
    card: ModelCardInfo,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write ``out_dir`` as a diffusers folder (safetensors) + ``pipeline_lcm.py`` + ``README.md``; return it.

    The scheduler is an ``LCMScheduler`` with the teacher's schedule and prediction_type and
    ``original_inference_steps=num_points``; N must divide num_train_timesteps (checked by ``SkippingGrid``).
    """
    from .pipelines import LCMPipeline

    scheduler = lcm_scheduler(teacher_scheduler_config, num_points)
    pipe = LCMPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    out = Path(out_dir)
    pipe.save_pretrained(out, safe_serialization=True)
    has_omega = unet.config.get("time_cond_proj_dim") is not None
    card = replace(card, model_name=card.model_name or out.name)
    (out / "README.md").write_text(render_model_card(card, int(num_points), has_omega), encoding="utf-8")
    for name, text in (extra_files or {}).items():  # e.g. the run's config.resolved.yaml (lcm_distill.engine)
        (out / name).write_text(text, encoding="utf-8")
    return out


def push_to_hub(
    folder: str | Path, repo_id: str, token: str | None = None, private: bool = False, commit_message: str | None = None
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` (weights, pipeline_lcm.py, README.md); return the commit URL.

    A model card still showing the placeholder repo id gets ``repo_id`` filled in first, so its snippets work.
    """
    import huggingface_hub

    from .pipelines import PIPELINE_FILE_NAME

    folder = Path(folder)
    missing = [name for name in ("model_index.json", PIPELINE_FILE_NAME) if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder} lacks {missing}; write it with save_lcm_pipeline() first.")
    readme = folder / "README.md"
    if readme.is_file() and REPO_PLACEHOLDER in (text := readme.read_text(encoding="utf-8")):
        readme.write_text(text.replace(REPO_PLACEHOLDER, repo_id), encoding="utf-8")
    api = huggingface_hub.HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="model",
        commit_message=commit_message or "Upload LCM pipeline (lcm-distill)",
    )
    return str(getattr(info, "commit_url", info))
