"""Write a trained LCM as an ordinary diffusers folder, with a model card, and push it to the Hub.

Engine-facing API (what the training engine calls at the end of a run, with unwrapped, merged modules)::

    from lcm_distill.export import ModelCardInfo, push_to_hub, save_lcm_pipeline  # (ModelCardInfo: model_card.py)

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

import copy
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .functional import SkippingGrid, num_train_timesteps
from .model_card import (
    LORA_WEIGHT_FILE,
    OMEGA_INPUT_FILE,
    REPO_PLACEHOLDER,
    ModelCardInfo,
    render_lora_card,
    render_model_card,
)
from .objective_kinds import OBJECTIVE_KINDS

if TYPE_CHECKING:  # annotations only
    from .config import Config
    from .models import Models

__all__ = [
    "ModelCardInfo",
    "export_encoders",
    "lcm_pipeline",
    "load_omega_lora",
    "merged_lora_unet",
    "push_to_hub",
    "render_lora_card",
    "render_model_card",
    "save_lcm_pipeline",
    "save_lora_and_merge",
    "save_omega_input",
]  # fmt: skip  (cards: model_card.py)


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


def lcm_scheduler(teacher_scheduler_config: Mapping[str, Any], num_points: int):
    """The student's LCMScheduler: the teacher's schedule and prediction type, training grid N as
    ``original_inference_steps`` (validated: N must divide num_train_timesteps). The one place N is written."""
    from diffusers import LCMScheduler

    config = {k: v for k, v in dict(teacher_scheduler_config).items() if not k.startswith("_")}
    SkippingGrid(num_train_timesteps(config), int(num_points))
    return LCMScheduler.from_config(config, original_inference_steps=int(num_points))


def lcm_pipeline(*, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any,
                 text_encoder_2: Any = None, tokenizer_2: Any = None):  # fmt: skip
    """The pipeline an export writes and a run samples with (validation, the quality signal): our ``LCMPipeline``
    for SD 1.x / 2.x; for SDXL (a second text encoder) our ``LCMXLPipeline``, stock ``StableDiffusionXLPipeline``
    plus negative prompts / real CFG (off by default, and then it draws what stock draws with the LCMScheduler: omega
    = guidance_scale - 1 through the UNet's ``time_cond_proj_dim``). Its default size/crop time ids are
    (H, W, 0, 0, H, W), the engine's data.sdxl_time_ids=fixed (lcm_distill/conditioning.py)."""
    if text_encoder_2 is None:
        from .pipelines import LCMPipeline

        return LCMPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    from .pipelines import LCMXLPipeline

    return LCMXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                         tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, add_watermarker=False)  # fmt: skip


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
    text_encoder_2: Any = None,
    tokenizer_2: Any = None,
) -> Path:
    """Write ``out_dir`` as a diffusers folder (safetensors) + ``README.md`` + the pipeline file (SD 1.x / 2.x:
    ``pipeline_lcm.py``; SDXL, ``text_encoder_2`` given: a ``StableDiffusionXLPipeline`` folder +
    ``pipeline_lcm_sdxl.py``); return it.

    The scheduler is an ``LCMScheduler`` with the teacher's schedule and prediction_type and
    ``original_inference_steps=num_points``; N must divide num_train_timesteps (checked by ``SkippingGrid``).
    """
    scheduler = lcm_scheduler(teacher_scheduler_config, num_points)
    pipe = lcm_pipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)  # fmt: skip
    out = Path(out_dir)
    pipe.save_pretrained(out, safe_serialization=True)
    has_omega = unet.config.get("time_cond_proj_dim") is not None
    card = replace(card, model_name=card.model_name or out.name)
    text = render_model_card(card, int(num_points), has_omega, sdxl=text_encoder_2 is not None)
    (out / "README.md").write_text(text, encoding="utf-8")
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


# -- what the engine writes at the end of a run (engine/outputs.py calls these with whole, plain modules) --------


def export_encoders(cfg: Config, models: Models):
    """The VAE and text encoder(s) (the second is None but for SDXL) to write beside the fp32 UNet: the run's own
    when they are fp32, else the source's originals reloaded in fp32. Stock pipelines run each component in its
    stored dtype, so a bf16 VAE / text encoder next to an fp32 UNet crashes them (found by the SD-2.1 scale
    rehearsal); casting the run's bf16 copies back up would keep their rounding, the reload does not."""
    if models.frozen_dtype == torch.float32:
        return models.vae, models.text_encoder, models.text_encoder_2
    from .models import load_frozen_encoders, load_second_encoder

    needs_teacher = OBJECTIVE_KINDS[cfg.objective.kind].needs_teacher
    fp32 = replace(cfg.model, frozen_dtype="fp32")
    vae, text_encoder, _ = load_frozen_encoders(fp32, with_teacher=needs_teacher)
    text_encoder_2 = load_second_encoder(fp32, with_teacher=needs_teacher)[0] if models.text_encoder_2 else None
    return vae, text_encoder, text_encoder_2


def save_lora_and_merge(unet, folder: Path, cfg: Config):
    """Adapter weights loadable by ``StableDiffusionPipeline.load_lora_weights`` (and, for an omega-conditioned
    LoRA, its trained omega input beside them, see export.load_omega_lora); return a merged plain UNet copy."""
    num_points = cfg.objective.num_points
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    if unet.config.get("time_cond_proj_dim") is not None:
        save_omega_input(unet, folder, num_points)
    state = get_peft_model_state_dict(unet)  # peft keys (lora_A/lora_B): what load_lora_weights reads back
    # The adapter config (rank, lora_alpha, targets) goes into the safetensors header: without it stock loaders assume
    # alpha = rank and apply the LoRA at rank/alpha times its trained strength.
    metadata = unet.peft_config["default"].to_dict()
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=state, safe_serialization=True,
                                              unet_lora_adapter_metadata=metadata)  # fmt: skip
    if "kohya" in cfg.train.lora_formats and unet.config.get("time_cond_proj_dim") is None:
        save_kohya_lora(state, float(metadata["lora_alpha"]), folder / KOHYA_FILE)
    return merged_lora_unet(unet, folder, cfg)


KOHYA_FILE = "lcm_lora_kohya.safetensors"  # not *pytorch_lora_weights.safetensors: load_lora_weights(folder) picks that


def save_kohya_lora(peft_state: dict, alpha: float, path: Path) -> None:
    """The adapters in the kohya key format that ComfyUI and AUTOMATIC1111 load (``lora_unet_<module>.lora_down /
    lora_up / alpha``; diffusers' converter, which supports these keys with diffusers module names). Its converter
    writes alpha = rank; the trained alpha is written instead, or a UI would apply the LoRA at rank/alpha times its
    strength."""
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file

    kohya = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in peft_state.items()})
    for key in kohya:
        if key.endswith(".alpha"):
            kohya[key] = torch.tensor(alpha)
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(path), metadata={"ss_network_alpha": str(alpha),
              "ss_network_module": "networks.lora", "lcm_distill": "LCM-LoRA"})  # fmt: skip


def merged_lora_unet(unet, folder: Path, cfg: Config):
    """student/ of a LoRA run: the fp32 base with the saved adapters fused, i.e. what a user gets from the base model
    + ``load_lora_weights(lora/)``. When the base trained in model.frozen_dtype (bf16/fp16), fusing into that copy
    would bake its rounding into student/ (the SD-2.1 scale rehearsal measured latents 0.1 apart), so the fp32 base
    is reloaded from the source and the adapters are read back from the saved file, the way stock loaders do."""
    from .models import build_student, load_base_unet

    if base_dtype(unet) == torch.float32:
        merged = copy.deepcopy(unet)
    else:
        from .objective_kinds import OBJECTIVE_KINDS

        with_teacher = OBJECTIVE_KINDS[cfg.objective.kind].needs_teacher
        streamed = streamed_lora_unet(unet, folder, cfg, with_teacher)
        if streamed is not None:
            return streamed
        merged = load_base_unet(cfg.model, with_teacher=with_teacher)
        dim = unet.config.get("time_cond_proj_dim")
        if dim is not None:  # the omega input trained beside the adapters (model.lora.omega_conditioned)
            if merged.config.get("time_cond_proj_dim") is None:
                merged = build_student(merged, dim, "zero")
            with torch.no_grad():
                merged.time_embedding.cond_proj.weight.copy_(unet.time_embedding.cond_proj.weight.float())
        merged.load_lora_adapter(str(folder), prefix="unet", weight_name=LORA_WEIGHT_FILE)
    merged.float()
    merged.fuse_lora()
    merged.unload_lora()
    return merged


def streamed_lora_unet(unet, folder: Path, cfg: Config, with_teacher: bool):
    """The merged UNet as a weightless stand-in whose save writes the fused fp32 weights tensor by tensor from the
    source's safetensors (lcm_distill/lora_merge.py: the fp32 SDXL UNet never whole in memory); None when the source
    has no plain safetensors UNet (then the caller merges in memory)."""
    from .hub import cached_snapshot, is_local_path
    from .lora_merge import base_weight_files, streamed_unet, write_merged_unet
    from .models import model_source

    source = model_source(cfg.model, with_teacher)
    root = Path(source) if is_local_path(source) else cached_snapshot(source, revision=cfg.model.revision)
    files = None if root is None else base_weight_files(root / "unet")
    if files is None:
        return None
    lc = cfg.model.lora
    given = {}
    if unet.config.get("time_cond_proj_dim") is not None:  # the omega input trained beside the adapters
        given["time_embedding.cond_proj.weight"] = unet.time_embedding.cond_proj.weight.detach().float().cpu()
    return streamed_unet(dict(unet.config), lambda skeleton, out: write_merged_unet(
        skeleton, files, folder / LORA_WEIGHT_FILE, lc.alpha / lc.rank, out, given))  # fmt: skip


def base_dtype(unet) -> torch.dtype:
    """dtype of a LoRA UNet's base weights (its adapters are fp32 whatever the base)."""
    return next(p.dtype for n, p in unet.named_parameters() if "lora_" not in n)
