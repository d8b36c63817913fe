"""The evaluation loop: for each guidance scale and step count, generate, score, time; then write the report.

Used by ``python -m lcm_distill.cli.evaluate`` and by the benchmark; takes an already-built pipeline so that tests
and notebooks can hand in tiny in-process pipelines.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..functional import omega_from_guidance_scale
from .features import FeatureExtractor, extract_features
from .generation import generate
from .latency import LatencyMeter
from .metrics import PromptScorer, fid_from_features, kid_from_features
from .report import EvalReport, ResultRow, plot_quality_vs_steps, save_grid

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """What to sweep and how much to generate.

    guidance_scales: diffusers g (omega = g - 1); the LCM paper's headline omega = 8 is g = 9.
    grid_prompts: how many of the prompts appear as columns of each image grid.
    warmup: one untimed pipeline call first, so one-off costs (allocations, lazy init) do not land in row 1.
    """

    steps: tuple[int, ...] = (1, 2, 4, 8)
    guidance_scales: tuple[float, ...] = (9.0,)
    batch_size: int = 16
    seed: int = 0
    grid_prompts: int = 8
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    warmup: bool = True
    call_kwargs: dict = field(default_factory=dict)
    chunk_images: int = 1024  # images generated, scored and dropped at a time: memory stays flat for COCO-30k
    fid_image_size: int | None = None  # resize generated images to this square size before FID features

    def __post_init__(self) -> None:
        if not self.steps or any(int(s) < 1 for s in self.steps):
            raise ValueError(f"steps={self.steps} must be a non-empty list of positive integers")
        if not self.guidance_scales:
            raise ValueError("guidance_scales must not be empty")
        if self.chunk_images < 1:
            raise ValueError(f"chunk_images={self.chunk_images} must be >= 1")


def select_prompts(captions: Sequence[str], num: int) -> list[str]:
    """``num`` prompts spread evenly over ``captions`` (cycling when fewer), deterministic."""
    if not captions:
        raise ValueError("no prompts given")
    if num <= len(captions):
        idx = torch.linspace(0, len(captions) - 1, num).round().long().tolist() if num > 1 else [0]
        return [captions[i] for i in idx]
    return [captions[i % len(captions)] for i in range(num)]


def _versions() -> dict:
    import diffusers

    import lcm_distill

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "lcm_distill": lcm_distill.__version__}


def guidance_mode(pipe) -> str:
    """How ``pipe`` uses guidance_scale: omega-embedded, cfg (an unconditional pass) or unused."""
    unet_cfg = getattr(getattr(pipe, "unet", None), "config", {})
    if type(pipe).__name__ in ("LCMPipeline", "LatentConsistencyModelPipeline"):
        return "omega-embedded" if unet_cfg.get("time_cond_proj_dim") is not None else "unused"
    return "cfg"


def fid_sized(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """``images`` resized (bicubic, antialiased, like PIL's) to ``size`` x ``size`` when they are not: generated
    images meet the reference set at the size it was prepared at (COCO practice: one fixed size for both sides)."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    import torch.nn.functional as F

    return F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def run_evaluation(
    pipe,
    prompts: Sequence[str],
    config: EvalConfig,
    out_dir: str | Path | None = None,
    feature_extractor: FeatureExtractor | None = None,
    reference_features: torch.Tensor | None = None,
    scorers: Sequence[PromptScorer] = (),
    meta: dict | None = None,
) -> EvalReport:
    """Evaluate ``pipe`` on ``prompts`` at every (guidance, steps) pair; write report.json, plot and grids.

    FID/KID are computed when both ``feature_extractor`` and ``reference_features`` (its features of the real
    images) are given. ``meta`` fills the report header (model, kind, reference, ...).
    """
    meta = dict(meta or {})
    prompts = list(prompts)
    mode = guidance_mode(pipe) + ("+cfg" if config.call_kwargs.get("cfg_scale", 1.0) > 1 else "")
    guidance_scales = tuple(config.guidance_scales)
    if mode == "unused" and any(g != 1.0 for g in guidance_scales):  # (with real CFG, "unused+cfg": g is kept)
        log.warning("%s has no omega input and samples without CFG: guidance_scale %s has no effect; evaluating "
                    "once, recorded at guidance_scale 1", type(pipe.unet).__name__, list(guidance_scales))  # fmt: skip
        guidance_scales = (1.0,)
    out = Path(out_dir) if out_dir is not None else None
    device = str(getattr(pipe, "device", "cpu"))
    meter = LatencyMeter(device)
    if config.warmup:
        generate(pipe, prompts[:1], config.steps[0], guidance_scales[0], config.seed, 1, **config.call_kwargs)
    report = EvalReport(
        model=str(meta.get("model", "in-process")),
        kind=str(meta.get("kind", "unknown")),
        pipeline=type(pipe).__name__,
        scheduler=type(pipe.scheduler).__name__,
        timestep_spacing=meta.get("timestep_spacing"),
        seed=config.seed,
        image_size=[],
        device=device,
        dtype=str(getattr(pipe, "dtype", "")).replace("torch.", ""),
        feature_extractor=getattr(feature_extractor, "name", type(feature_extractor).__name__)
        if feature_extractor is not None and reference_features is not None else None,
        reference=meta.get("reference"),
        scorers=[s.name for s in scorers],
        versions=_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        guidance_mode=mode,
    )
    k = min(config.grid_prompts, len(prompts))
    for g in guidance_scales:
        grid_rows, labels = [], []
        for steps in config.steps:
            meter.reset()
            fid = feature_extractor is not None and reference_features is not None
            feats, sums, first = [], {}, None
            for start in range(0, len(prompts), config.chunk_images):  # image i keeps seed + i in every chunk
                chunk = prompts[start : start + config.chunk_images]
                with meter.attach(pipe):
                    images = generate(pipe, chunk, int(steps), float(g), config.seed + start, config.batch_size,
                                      meter, **config.call_kwargs)  # fmt: skip
                first = images[:k] if first is None else torch.cat([first, images[: k - len(first)]])
                report.image_size = list(images.shape[-2:])
                if fid:
                    feats.append(extract_features(feature_extractor, fid_sized(images, config.fid_image_size),
                                                  batch_size=max(config.batch_size, 64)))  # fmt: skip
                for scorer in scorers:
                    values = {scorer.name: float(scorer(images, chunk).float().mean())}
                    values |= {extra: float(v) for extra, v in getattr(scorer, "last_details", {}).items()}
                    for name, value in values.items():  # weighted by the chunk's share of the images
                        sums[name] = sums.get(name, 0.0) + value * len(chunk)
            row = ResultRow(steps=int(steps), guidance_scale=float(g), omega=float(omega_from_guidance_scale(float(g))),
                            num_images=len(prompts), latency=meter.split().to_dict())
            if fid:
                feats = torch.cat(feats)
                row.fid = fid_from_features(reference_features, feats)
                if min(len(feats), len(reference_features)) >= 2:
                    row.kid_mean, row.kid_std = kid_from_features(
                        reference_features, feats, config.kid_subsets, config.kid_subset_size, config.seed
                    )
            row.scores = {name: total / len(prompts) for name, total in sums.items()}
            grid_rows.append(first)
            labels.append(f"{steps} step{'s' * (steps > 1)}")
            log.info("g=%g steps=%d fid=%s scores=%s latency=%.4fs/img", g, steps, row.fid, row.scores,
                     row.latency["total_s"])
            report.results.append(row)
        if out is not None and k > 0:
            grid = save_grid(grid_rows, out / f"grid_g{g:g}.png", nrow=k, row_labels=labels)
            for row in report.results:
                if row.guidance_scale == float(g):
                    row.grid = grid.name
    if out is not None:
        report.write(out / "report.json")
        plot_quality_vs_steps([report.to_dict()], out / "quality_vs_steps.png",
                              title=f"{Path(report.model).name} ({report.kind})")
    return report
