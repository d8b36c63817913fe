"""The model cards an exported folder carries: what the model is, how it was made, and how to run it in stock
diffusers (``LatentConsistencyModelPipeline``) or with ``load_lora_weights``. Text only: no weights are read.

The method sentence comes from the objective registry (lcm_distill/objective_kinds.py), so a new objective gets
its card line where it is registered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .functional import (
    DEFAULT_GUIDANCE_SCALE,
    guidance_scale_from_omega,
    omega_from_guidance_scale,
)
from .objective_kinds import OBJECTIVE_KINDS

OMEGA_INPUT_FILE = "omega_cond_proj.safetensors"  # the trained omega input of an omega-conditioned LoRA
LORA_WEIGHT_FILE = "pytorch_lora_weights.safetensors"  # diffusers' file name (load_lora_weights picks it in a folder)

METHODS = {kind.label: kind.card_sentence for kind in OBJECTIVE_KINDS.values()}  # the card's "method" line
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


def dropped_components_note(base_model: str, components: list[str]) -> str:
    """The card's (and the run log's) sentence for components of the base pipeline that the export leaves out."""
    if not components:
        return ""
    note = (f"Not carried over from `{base_model}`: {', '.join(f'`{c}`' for c in components)} (the export writes "
            "unet, vae, the text encoder(s) and tokenizer(s), and scheduler).")  # fmt: skip
    if "safety_checker" in components:
        note += (" Images from this folder are **not** passed through a safety checker; to add one, load "
                 "`StableDiffusionSafetyChecker` and `CLIPImageProcessor` from the base model and pass them as "
                 "`safety_checker=` / `feature_extractor=` to the pipeline.")  # fmt: skip
    return note


def render_model_card(card: ModelCardInfo, num_points: int, has_omega_embedding: bool = True,
                      sdxl: bool = False) -> str:  # fmt: skip
    """README.md text: YAML front matter for the Hub, then method, data, settings and how to load. ``sdxl``: the
    folder is a StableDiffusionXLPipeline (no bundled pipeline file)."""
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
    if sdxl:
        stock_class = "StableDiffusionXLPipeline + LCMScheduler"
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
    ]
    if not sdxl:  # SD 1.x / 2.x folders carry pipeline_lcm.py
        lines += [
            "",
            "## Use with the bundled pipeline (img2img, stochastic sampling, no ω embedding needed)",
            "",
            "`pipeline_lcm.py` in this repository depends only on torch, diffusers and transformers:",
            "",
            "```python",
            "from diffusers import DiffusionPipeline",
            "",
            f'pipe = DiffusionPipeline.from_pretrained("{repo}", custom_pipeline="pipeline_lcm", '
            "trust_remote_code=True)",
            f"image = {call[:-1]}, noise_fraction=1.0).images[0]",
            "```",
            "",
            "`noise_fraction` (0-1) sets how much fresh noise is injected between steps: 1 is the LCM sampler, 0 is",
            "deterministic. With lcm-distill installed: `from lcm_distill.pipelines import LCMPipeline`, or",
            f"`lcm-distill-generate --model {repo} --prompt '...' --steps {best}`.",
        ]
    else:  # SDXL folders carry pipeline_lcm_sdxl.py
        lines += [
            "",
            "## Negative prompts and real CFG (bundled pipeline)",
            "",
            "Stock SDXL turns CFG off for a UNet with the ω input. `pipeline_lcm_sdxl.py` in this repository (torch,",
            "diffusers and transformers only) keeps ω = guidance_scale - 1 and adds `cfg_scale` (1 = off, the stock",
            "images) with an optional negative prompt:",
            "",
            "```python",
            "from diffusers import DiffusionPipeline",
            "",
            f'pipe = DiffusionPipeline.from_pretrained("{repo}", custom_pipeline="pipeline_lcm_sdxl", '
            "trust_remote_code=True)",
            f'image = {call[:-1]}, cfg_scale=1.5, negative_prompt="blurry").images[0]',
            "```",
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
                     omega_conditioned: bool = False, kohya_file: str | None = None) -> str:  # fmt: skip
    """README.md of an exported LCM-LoRA folder: which file goes where (diffusers; ComfyUI / AUTOMATIC1111 when
    ``kohya_file`` was written), and how to sample. The snippet names ``weight_name``: offline, diffusers refuses a
    hub id without it."""
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
        f'pipe.load_lora_weights("{repo}", weight_name="{LORA_WEIGHT_FILE}")',
        f"image = pipe({PROMPT}, num_inference_steps={best}, guidance_scale=1.0).images[0]",
        "```",
    ]
    if kohya_file:
        lines += [
            "",
            "## Files",
            "",
            f"- `{LORA_WEIGHT_FILE}`: diffusers / peft keys, for `load_lora_weights` (above).",
            f"- `{kohya_file}`: the same adapters in the kohya key format (`lora_unet_*.lora_down/lora_up/alpha`, "
            f"alpha {alpha:g}) for ComfyUI (`models/loras/`, LoraLoader) and AUTOMATIC1111 / Forge (`models/Lora/`).",
            "",
            "The UIs also need the LCM sampler, or the LoRA draws noise at 1-8 steps: ComfyUI - KSampler with "
            "sampler `lcm`, scheduler `sgm_uniform`; AUTOMATIC1111 1.7+ / Forge - sampling method `LCM`. "
            f"Use {best}-8 steps and CFG 1-2 (CFG 1 = the distilled guidance, no negative prompt).",
        ]
    return _lora_card_text(card, lines)


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
