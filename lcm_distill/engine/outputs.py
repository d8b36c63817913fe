"""What a run leaves behind besides checkpoints: validation grids and exported pipeline folders.

Validation draws fixed prompts at ``train.validation_steps`` (1/2/4) from the student and, when it exists, the EMA
target, with a fixed seed, and writes one PNG grid per network (rows: prompts, columns: step counts) under
``<output_dir>/validation/`` and to the tracker. Export writes ``<output_dir>/student`` and ``<output_dir>/target``
as diffusers folders via :func:`lcm_distill.export.save_lcm_pipeline` (loadable by stock
``LatentConsistencyModelPipeline``); with LoRA, the adapter weights go to ``<output_dir>/lora`` in the format of
diffusers' ``load_lora_weights`` and the student folder holds the merged UNet.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import Config
from ..hub import is_local_path, model_location
from ..models import AdapterEMA, Models, as_unet
from ..objective_kinds import OBJECTIVE_KINDS
from ..source_kinds import SOURCE_KINDS
from .checkpoint import CONFIG_FILE, RunLayout
from .faults import fault_point

logger = logging.getLogger(__name__)


def release_training_memory(optimizer) -> None:
    """Before the export, which may reload the fp32 base (a LoRA run with a bf16/fp16 base): drop the optimiser's
    states and hand freed heap back to the OS - glibc keeps the step's freed activations in its arenas. Found by the
    SDXL LoRA rehearsal at true shapes, whose export was killed for memory on a 24 GiB machine."""
    import gc

    state = getattr(optimizer, "state", None)
    if isinstance(state, dict):  # torch / accelerate optimisers (a sharded engine's may differ: left alone)
        state.clear()
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


class _UnderAutocast:
    """A stock pipeline whose parts hold different dtypes (the run's bf16/fp16 frozen VAE and encoders beside the
    fp32 student) called under autocast in those dtypes, as the training step runs them. Our LCMPipeline casts
    between parts itself; stock SDXL does not (its VAE decode meets fp32 latents with bf16 weights)."""

    def __init__(self, pipe, dtype: torch.dtype) -> None:
        self.pipe, self.dtype = pipe, dtype

    def __call__(self, *args, **kwargs):
        with torch.autocast(self.pipe.device.type, dtype=self.dtype):
            return self.pipe(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.pipe, name)


def _pipeline(models: Models, unet, num_points: int):
    from ..export import lcm_pipeline, lcm_scheduler

    pipe = lcm_pipeline(vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer, unet=unet,
                        scheduler=lcm_scheduler(models.scheduler_config, num_points),
                        text_encoder_2=models.text_encoder_2, tokenizer_2=models.tokenizer_2)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    if models.text_encoder_2 is not None and models.frozen_dtype != torch.float32:
        return _UnderAutocast(pipe, models.frozen_dtype)
    return pipe


def _grid(rows: list[list[np.ndarray]]) -> Image.Image:
    h, w = rows[0][0].shape[:2]
    canvas = np.zeros((h * len(rows), w * len(rows[0]), 3), dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            canvas[i * h : (i + 1) * h, j * w : (j + 1) * w] = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(canvas)


def sampling_guidance(cfg: Config, models: Models) -> float:
    """guidance_scale for the run's own sampling passes (validation grids, the quality signal): the validation
    guidance for a student with an omega input, 1 (no CFG, the guidance is baked in) for one without."""
    return cfg.train.validation_guidance_scale if models.omega_dim else 1.0


@torch.no_grad()
def validation_images(models: Models, unet, cfg: Config, seed: int = 0) -> Image.Image:
    """Grid of the validation prompts (rows) x step counts (columns) for one UNet."""
    pipe = _pipeline(models, unet, cfg.objective.num_points)
    res = cfg.data.resolution
    guidance = sampling_guidance(cfg, models)
    rows = []
    for prompt in cfg.train.validation_prompts:
        row = []
        for steps in cfg.train.validation_steps:
            g = torch.Generator(device="cpu").manual_seed(seed)
            out = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, generator=g,
                       height=res, width=res, output_type="np")  # fmt: skip
            row.append(out.images[0])
        rows.append(row)
    return _grid(rows)


def run_validation(accelerator, cfg: Config, models: Models, student, step: int, target=False) -> list[Path]:
    """Main process only; the other processes wait. ``student`` / ``target`` (default: models.target) are whole
    plain modules on the main process (engine/parallel.py gathers them). Returns the PNG paths written."""
    target = models.target if target is False else target
    paths: list[Path] = []
    if accelerator.is_main_process and cfg.train.validation_prompts:
        layout = RunLayout(cfg.train.output_dir)
        layout.validation.mkdir(parents=True, exist_ok=True)
        nets = {"student": student} | ({"target": target} if target is not None else {})
        was_training = student.training
        student.eval()
        for name, net in nets.items():
            with as_unet(net) as unet:  # a LoRA run's EMA target: the student with the EMA adapters in place
                grid = validation_images(models, unet, cfg)
            path = layout.validation_image(step, name)
            grid.save(path)
            paths.append(path)
            for tracker in accelerator.trackers:
                if tracker.name == "tensorboard":
                    tracker.writer.add_image(f"validation/{name}", np.asarray(grid), step, dataformats="HWC")
        student.train(was_training)
    accelerator.wait_for_everyone()
    return paths


FILTER_KEYS = ("min_width", "min_height", "max_pwatermark", "max_punsafe", "min_aesthetic")


def data_description(d) -> str:
    """What the card says the model was trained on: the dataset or shard list, and the filters that were on."""
    kind = SOURCE_KINDS[d.source]
    where = d.shards if kind.location_key == "shards" else d.dataset
    what = f"{d.source} {where}" if where else f"{d.source} (location not given)"
    filters = [f"{k} {getattr(d, k)}" for k in FILTER_KEYS if getattr(d, k) not in (None, 0)]
    return what + (f" (filters: {', '.join(filters)})" if filters else "") + f", at {d.resolution} px"


def _card(cfg: Config):
    from ..export import ModelCardInfo
    from ..model_card import dropped_components_note
    from ..models import components_not_exported

    base = cfg.model.teacher or cfg.model.student or "unknown"
    location = model_location(base, cfg.model.revision) if base != "unknown" else None
    dropped = components_not_exported(location, cfg.model.revision) if location else []
    return ModelCardInfo(
        base_model=base,
        method=OBJECTIVE_KINDS[cfg.objective.kind].label,
        data_description=data_description(cfg.data),
        datasets=[cfg.data.dataset] if cfg.data.dataset and not is_local_path(cfg.data.dataset) else [],
        guidance_scale=cfg.train.validation_guidance_scale,
        omega_range=cfg.objective.omega_range,
        solver=cfg.objective.solver if OBJECTIVE_KINDS[cfg.objective.kind].uses_solver else None,
        notes=dropped_components_note(base, dropped),
    )


def export_pipelines(accelerator, cfg: Config, models: Models, student, target=False) -> dict[str, Path]:
    """Write student (and target) pipeline folders, LoRA weights when LoRA is on; push when asked. ``student`` /
    ``target`` (default: models.target) are whole plain modules on the main process (engine/parallel.py)."""
    target = models.target if target is False else target
    from ..export import (
        KOHYA_FILE,
        export_encoders,
        push_to_hub,
        render_lora_card,
        save_lcm_pipeline,
        save_lora_and_merge,
    )

    written: dict[str, Path] = {}
    if accelerator.is_main_process:
        layout = RunLayout(cfg.train.output_dir)
        card = _card(cfg)
        unet = student
        if models.lora:  # lora/ and the merged student/ hold the EMA adapters when there is an EMA target
            written["lora"] = layout.export("lora")
            with as_unet(target if isinstance(target, AdapterEMA) else student) as adapters:
                unet = save_lora_and_merge(adapters, written["lora"], cfg)
            target = None  # no separate target/ folder: the adapters above are the target's
            kohya = KOHYA_FILE if (written["lora"] / KOHYA_FILE).is_file() else None
            (written["lora"] / CONFIG_FILE).write_text(cfg.to_yaml())
            lora_card = render_lora_card(replace(card, model_name=written["lora"].name), cfg.objective.num_points,
                                         cfg.model.lora.rank, cfg.model.lora.alpha,
                                         omega_conditioned=models.omega_dim is not None,
                                         kohya_file=kohya)  # fmt: skip
            (written["lora"] / "README.md").write_text(lora_card, encoding="utf-8")
        vae, text_encoder, text_encoder_2 = export_encoders(cfg, models)
        common = dict(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=models.tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=models.tokenizer_2,
            teacher_scheduler_config=models.scheduler_config,
            num_points=cfg.objective.num_points,
            card=card,
            extra_files={CONFIG_FILE: cfg.to_yaml()},
        )
        written["student"] = save_lcm_pipeline(layout.export("student"), unet=unet, **common)
        fault_point("export", cfg.train.max_train_steps)
        if target is not None:
            written["target"] = save_lcm_pipeline(layout.export("target"), unet=target, **common)
        if cfg.train.push_to_hub:
            key = "target" if "target" in written else "student"
            push_to_hub(written[key], cfg.train.hub_model_id)
        logger.info("exported %s", {k: str(v) for k, v in written.items()})
    accelerator.wait_for_everyone()
    return written
