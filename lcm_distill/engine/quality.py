"""The in-training quality signal: every ``train.quality_every`` steps, FID of a few fixed prompts' images (drawn
by the network the run exports - the EMA target when there is one - at ``train.quality_steps`` steps, fixed seeds)
against held-out images (``train.quality_reference``, an imagefolder with captions), with the evaluator's features.

Why: a consistency loss can look normal while the images collapse (a LoRA run at lr 1e-4 reached testbed FID 86 at
1 step with an unremarkable loss curve); the loss compares the student with its own target, not with data. The
signal is logged (tensorboard ``quality_fid``, the progress bar), a value above ``DEGRADED_FACTOR`` x the best so
far is warned about, and the best step's weights are kept in ``<output_dir>/best/`` so ``train.export_from: best``
can export them. FID on a few dozen images is noisy (a spread of several points on the testbed); it is a collapse
alarm and a coarse ranking, not a benchmark number - use lcm-distill-evaluate for those.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

QUALITY_FEATURES = ("auto", "inception", "testbed")  # train.quality_features (_extractor)
EXPORT_FROM = ("last", "best")  # train.export_from (QualityWatch.use_best)
DEGRADED_FACTOR = 2.0  # warn when the signal exceeds this multiple of the best value so far
BEST_DIR = "best"
BEST_FILE = "best.json"


@dataclass
class QualityProbe:
    """Fixed prompts and seeds, the reference features, and the best value seen (persisted in best/best.json)."""

    prompts: list[str]
    reference_features: torch.Tensor
    extractor: object
    steps: int
    guidance_scale: float
    resolution: int
    best: float = math.inf
    best_step: int | None = None

    @classmethod
    def from_config(cls, cfg, device: str | torch.device, guidance_scale: float) -> QualityProbe:
        """Reads the reference once (a batch at a time) and featurises it; picks prompts spread over its captions.
        ``guidance_scale``: the run's validation guidance, or 1 for a UNet without omega input."""
        from ..evaluation.features import InceptionV3Features, extract_features
        from ..evaluation.harness import fid_sized, select_prompts
        from ..evaluation.imagefolder import imagefolder_rows, iter_image_batches

        t = cfg.train
        folder, rows = imagefolder_rows(t.quality_reference, "test")
        extractor = _extractor(t.quality_features, t.quality_reference, device, InceptionV3Features)
        feats = [extract_features(extractor, fid_sized(b, cfg.data.resolution), device=device)
                 for b in iter_image_batches(folder, rows)]  # fmt: skip
        prompts = select_prompts([str(r.get("text", "")) for r in rows], t.quality_images)
        return cls(prompts, torch.cat(feats), extractor, t.quality_steps, guidance_scale, cfg.data.resolution)

    @torch.no_grad()
    def measure(self, pipe) -> float:
        """FID of the probe's images from ``pipe`` (an LCMPipeline of the network to judge) against the reference."""
        from ..evaluation.features import extract_features
        from ..evaluation.generation import generate
        from ..evaluation.metrics import fid_from_features

        images = generate(pipe, self.prompts, self.steps, self.guidance_scale, seed=0, batch_size=16,
                          height=self.resolution, width=self.resolution)  # fmt: skip
        return fid_from_features(self.reference_features, extract_features(self.extractor, images))

    def record(self, step: int, value: float) -> tuple[bool, bool]:
        """(new best, sharply degraded) after ``value`` at ``step``."""
        degraded = math.isfinite(self.best) and value > DEGRADED_FACTOR * self.best
        is_best = value < self.best
        if is_best:
            self.best, self.best_step = value, step
        return is_best, degraded

    def load_best(self, folder: Path) -> None:
        """Continue the best tracking of a resumed run (best/best.json), if it has one."""
        path = folder / BEST_FILE
        if path.is_file():
            saved = json.loads(path.read_text())
            self.best, self.best_step = float(saved["value"]), int(saved["step"])


def _extractor(kind: str, reference: str, device, inception_cls):
    from ..paths import TESTBED_DIR, is_testbed_reference

    if kind == "auto":
        kind = "testbed" if is_testbed_reference(reference) else "inception"
    if kind == "testbed":
        from ..testbed.scorers import load_testbed_features

        return load_testbed_features(TESTBED_DIR, device)
    return inception_cls(device)


def save_best(folder: Path, step: int, value: float, nets: dict[str, dict[str, torch.Tensor]]) -> None:
    """Write the best step's weights (``{name: state_dict}``: student, target) and best.json, replacing the old."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for name, sd in nets.items():
        save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, str(folder / f"{name}.safetensors"))
    (folder / BEST_FILE).write_text(json.dumps({"step": step, "value": value, "metric": "quality_fid"}) + "\n")


def _kept_state(module: torch.nn.Module, lora: bool) -> dict[str, torch.Tensor]:
    """What best/ keeps of a network: everything, or for a LoRA student its trained tensors only."""
    if lora:
        return {n: p for n, p in module.named_parameters() if p.requires_grad}
    return module.state_dict()


class QualityWatch:
    """The loop's side of the signal: measure (collective: whole weights are gathered on every rank, images drawn
    and judged on the main process, the value broadcast), log, warn, keep the best weights, export them."""

    def __init__(self, cfg, accelerator, parallel, models, root: Path, resumed: bool) -> None:
        self.cfg, self.acc, self.parallel, self.models = cfg, accelerator, parallel, models
        self.folder = root / BEST_DIR
        from .outputs import sampling_guidance

        main = accelerator.is_main_process
        self.probe = QualityProbe.from_config(cfg, accelerator.device, sampling_guidance(cfg, models)) if main else None
        self.last: float | None = None
        self.last_step: int | None = None
        if self.probe is not None and resumed:
            self.probe.load_best(self.folder)
        elif self.probe is not None and self.folder.exists():  # a fresh run: no best of an earlier one survives
            import shutil

            shutil.rmtree(self.folder)

    def check(self, step: int, student, target) -> float:
        from accelerate.utils import broadcast_object_list

        from ..models import as_unet
        from .outputs import _pipeline

        whole_s = self.parallel.full_module(student)
        whole_t = self.parallel.full_module(target, student=False)
        box: list = [None, False, False]
        if self.acc.is_main_process:
            was = whole_s.training
            whole_s.eval()
            with as_unet(whole_t if whole_t is not None else whole_s) as unet:
                value = self.probe.measure(_pipeline(self.models, unet, self.cfg.objective.num_points))
            whole_s.train(was)
            is_best, degraded = self.probe.record(step, value)
            if is_best:
                nets = {"student": _kept_state(whole_s, self.models.lora)}
                if whole_t is not None:
                    nets["target"] = whole_t.state_dict()
                save_best(self.folder, step, value, nets)
            box = [value, is_best, degraded]
        broadcast_object_list(box, from_process=0)
        value, _, degraded = box
        self.last, self.last_step = value, step
        self.acc.log({"quality_fid": value}, step=step)
        if degraded and self.acc.is_main_process:
            logger.warning("quality_fid %.3g at step %d is more than %gx the best %.3g (step %s): the images may be "
                           "collapsing although the loss looks normal; see validation/ and consider "
                           "train.export_from=best or a lower learning rate.", value, step, DEGRADED_FACTOR,
                           self.probe.best, self.probe.best_step)  # fmt: skip
        return value

    def use_best(self, whole_student, whole_target) -> int | None:
        """train.export_from=best: load best/ into the whole modules the export reads (main process); the step."""
        if not self.acc.is_main_process or not (self.folder / BEST_FILE).is_file():
            return None
        nets = {"student": whole_student} | ({"target": whole_target} if whole_target is not None else {})
        from safetensors.torch import load_file

        for name, module in nets.items():
            module.load_state_dict(load_file(str(self.folder / f"{name}.safetensors")), strict=not (
                name == "student" and self.models.lora))
        step = int(json.loads((self.folder / BEST_FILE).read_text())["step"])
        logger.warning("train.export_from=best: exporting the weights of step %d (quality_fid %.3g)", step,
                       self.probe.best)  # fmt: skip
        return step

    def summary(self) -> dict:
        p = self.probe
        return {"last": self.last, "last_step": self.last_step,
                **({"best": p.best, "best_step": p.best_step} if p is not None and p.best_step is not None else {})}
