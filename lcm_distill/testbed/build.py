"""``python -m lcm_distill.testbed.build``: regenerate every testbed asset (seeded) and check the teachers.

Steps: render the digits imagefolder -> train the VAE -> train the digit/colour classifier -> train the epsilon and
v-prediction teachers (DDPM, caption dropout) -> save them as StableDiffusionPipeline folders (safetensors) ->
measure each teacher with the evaluation harness (DDIM at several step counts, domain FID vs the test split,
prompt accuracy) -> write ``manifest.json`` with configs, timings and numbers.

The text encoder is a small CLIPTextModel (hidden 32, 2 layers, seed-0 init) with the real CLIP BPE tokenizer cut
to 1,000 merges, trained jointly with each teacher (see ``TeacherTrainConfig.train_text_encoder`` for why a random
frozen one was not enough: the teacher then followed colours but not digits). Distillation freezes it, as for SD.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .digits import DigitsConfig, build_split, write_imagefolder
from .models import SDXL_ARCH
from .train import (
    ClassifierTrainConfig,
    TeacherTrainConfig,
    VAETrainConfig,
    classifier_accuracy,
    train_classifier,
    train_teacher,
    train_vae,
)

log = logging.getLogger("testbed.build")
TEXT_MERGES = 1000
TEACHERS = {"teacher-eps": "epsilon", "teacher-v": "v_prediction", "teacher-xl": "epsilon"}
SDXL_TEACHERS = {"teacher-xl"}  # SDXL-shaped (two encoders, "text_time" UNet); built after the SD ones it reuses
STAGES = ("data", "vae", "classifier", "teachers", "check")


def _progress(name: str, every: int):
    t0 = time.time()

    def report(step: int, stats: dict) -> None:
        if step % every == 0:
            shown = " ".join(f"{k}={v:.4g}" for k, v in stats.items() if k != "elapsed_s")
            log.info("%s step %d %s (%.0fs)", name, step, shown, time.time() - t0)

    return report


def save_teacher(out: Path, vae, text_encoder, tokenizer, unet, prediction_type: str, text_encoder_2=None) -> Path:
    """A StableDiffusionPipeline folder (StableDiffusionXLPipeline with ``text_encoder_2``) in safetensors with SD
    2.x scheduler settings (DDIM config)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    from ..testing import tiny_scheduler_config

    scheduler = DDIMScheduler(**tiny_scheduler_config(prediction_type))
    if text_encoder_2 is not None:
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                         tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    else:
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    if out.exists():
        shutil.rmtree(out)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def sdxl_text_encoders(assets: Path):
    """The SDXL teacher's frozen encoders, both already trained on the testbed's prompts: teacher-eps's encoder as
    the first, teacher-v's as the second with a seeded projection head for the pooled embedding (SDXL's second
    encoder is a CLIPTextModelWithProjection). Random encoders would not tell digits apart (TeacherTrainConfig)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    first = CLIPTextModel.from_pretrained(assets / "teacher-eps" / "text_encoder")
    donor = CLIPTextModel.from_pretrained(assets / "teacher-v" / "text_encoder")
    torch.manual_seed(0)
    config = donor.config
    config.projection_dim = config.hidden_size  # the UNet's pooled_dim (SDXL_ARCH)
    second = CLIPTextModelWithProjection(config)
    # strict: only the projection is new (transformers 5 flattened CLIPTextModel; 4.x nests it in .text_model)
    second.text_model.load_state_dict(getattr(donor, "text_model", donor).state_dict())
    return first.eval().requires_grad_(False), second.eval().requires_grad_(False)


def check_teacher(folder: Path, data_dir: Path, assets: Path, steps: list[int], guidance: list[float],
                  num_images: int, out_dir: Path | None) -> list[dict]:
    """DDIM quality of a saved teacher through the evaluation harness: domain FID vs test split, prompt accuracy."""
    from ..evaluation import EvalConfig, extract_features, load_pipeline, run_evaluation, select_prompts
    from ..evaluation.imagefolder import read_imagefolder
    from .scorers import load_prompt_accuracy, load_testbed_features

    ref, captions = read_imagefolder(data_dir, "test")
    feats = load_testbed_features(assets)
    pipe = load_pipeline(str(folder), "teacher-ddim")
    config = EvalConfig(steps=tuple(steps), guidance_scales=tuple(guidance), batch_size=100, grid_prompts=10)
    report = run_evaluation(pipe, select_prompts(captions, num_images), config, out_dir, feats,
                            extract_features(feats, ref), [load_prompt_accuracy(assets)],
                            {"model": str(folder), "kind": "teacher-ddim", "timestep_spacing": "trailing",
                             "reference": {"path": str(data_dir), "split": "test", "num_images": len(ref)}})
    return [{"steps": r.steps, "guidance_scale": r.guidance_scale, "fid": round(r.fid, 3),
             **{k: round(v, 4) for k, v in r.scores.items()}} for r in report.results]


def data_floor_fid(assets: Path, config: DigitsConfig) -> float:
    """FID of real train images vs real test images: the best any generator can expect with these features."""
    from ..evaluation import extract_features, fid_from_features
    from .scorers import load_testbed_features

    feats = load_testbed_features(assets)
    return fid_from_features(extract_features(feats, build_split("test", config).images),
                             extract_features(feats, build_split("train", config).images))


def _merge_manifest(path: Path, updates: dict, timings: dict) -> dict:
    """Re-read the manifest and merge this run's entries one level deep (two builds may run side by side)."""
    manifest = json.loads(path.read_text()) if path.exists() else {}
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(manifest.get(key), dict):
            manifest[key].update(value)
        else:
            manifest[key] = value
    manifest.setdefault("seconds", {}).update(timings)
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lcm_distill.testbed.build", description=__doc__.split("\n\n")[0])
    p.add_argument("--assets", default="assets/testbed", help="where teachers, classifier and manifest go")
    p.add_argument("--data-dir", default="outputs/testbed-digits", help="where the imagefolder is rendered")
    p.add_argument("--work-dir", default="outputs/testbed-build", help="intermediate files (the trained VAE)")
    p.add_argument("--only", nargs="+", choices=STAGES,
                   help="run only these stages (later stages reuse earlier outputs on disk)")
    p.add_argument("--teachers", nargs="+", choices=list(TEACHERS), default=list(TEACHERS),
                   help="which teachers to train/check (run two builds side by side to use two cores)")
    p.add_argument("--teacher-steps", type=int, default=TeacherTrainConfig.steps)
    p.add_argument("--vae-steps", type=int, default=VAETrainConfig.steps)
    p.add_argument("--classifier-steps", type=int, default=ClassifierTrainConfig.steps)
    p.add_argument("--check-images", type=int, default=300, help="images per setting in the quality check")
    p.add_argument("--check-steps", type=int, nargs="+", default=[1, 2, 4, 8, 50])
    p.add_argument("--check-guidance", type=float, nargs="+", default=[1.0, 3.0, 5.0, 8.0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the runs are sized for 1-2)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[testbed] %(message)s")
    torch.set_num_threads(args.threads)
    stages = set(args.only or STAGES)
    assets, data_dir, work = Path(args.assets), Path(args.data_dir), Path(args.work_dir)
    assets.mkdir(parents=True, exist_ok=True)
    dcfg = DigitsConfig()
    updates: dict = {}
    timings: dict = {}

    def timed(name: str, fn):
        t0 = time.time()
        result = fn()
        timings[name] = round(time.time() - t0, 1)
        log.info("%s done in %.0fs", name, timings[name])
        return result

    if "data" in stages or not (data_dir / "test" / "metadata.jsonl").exists():
        timed("data", lambda: write_imagefolder(data_dir, dcfg))
        updates["data"] = {"path": str(data_dir), **asdict(dcfg)}
    train = build_split("train", dcfg)
    if "vae" in stages:
        vcfg = VAETrainConfig(steps=args.vae_steps)
        vae = timed("vae", lambda: train_vae(train.images, vcfg, _progress("vae", 200)))
        vae.save_pretrained(work / "vae", safe_serialization=True)
        updates["vae"] = {**asdict(vcfg), "scaling_factor": vae.config.scaling_factor}
    if "classifier" in stages:
        ccfg = ClassifierTrainConfig(steps=args.classifier_steps)
        net = timed("classifier", lambda: train_classifier(train, ccfg))
        net.save(assets / "classifier")
        updates["classifier"] = {**asdict(ccfg), "test_accuracy": classifier_accuracy(net, build_split("test", dcfg))}
        log.info("classifier test accuracy %s", updates["classifier"]["test_accuracy"])
    if "teachers" in stages:
        from diffusers import AutoencoderKL

        from ..testing import build_clip_tokenizer, tiny_scheduler_config, tiny_text_encoder

        vae_dir = work / "vae" if (work / "vae").exists() else assets / "teacher-eps" / "vae"
        vae = AutoencoderKL.from_pretrained(vae_dir).eval().requires_grad_(False)
        text_encoder = tiny_text_encoder(TEXT_MERGES, seed=0).eval().requires_grad_(False)
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = build_clip_tokenizer(tmp, TEXT_MERGES)
        for name in [n for n in TEACHERS if n in args.teachers]:  # SD teachers first: the SDXL one reuses them
            xl = name in SDXL_TEACHERS
            tcfg = TeacherTrainConfig(prediction_type=TEACHERS[name], steps=args.teacher_steps,
                                      **({"arch": SDXL_ARCH, "train_text_encoder": False} if xl else {}))
            first, second = sdxl_text_encoders(assets) if xl else (text_encoder, None)
            unet, trained_text = timed(name, lambda tcfg=tcfg, name=name, first=first, second=second: train_teacher(
                vae, first, tokenizer, tiny_scheduler_config(tcfg.prediction_type), train, tcfg,
                _progress(name, 250), text_encoder_2=second, tokenizer_2=tokenizer if second is not None else None))
            save_teacher(assets / name, vae, trained_text, tokenizer, unet, tcfg.prediction_type, second)
            how = "trained jointly with the UNet" if tcfg.train_text_encoder else "random and frozen"
            text = f"CLIPTextModel (seed 0 init, {how}); real CLIP BPE tokenizer cut to {TEXT_MERGES} merges"
            if xl:
                text = ("teacher-eps's and teacher-v's trained encoders (the second with a seed-0 projection), frozen; "
                        "penultimate states side by side, pooled embedding of the second (SDXL's conditioning)")
            updates[name] = {"train": asdict(tcfg), "vae": str(vae_dir), "text_encoder": text}
    if "check" in stages:
        updates["data_floor_fid"] = round(timed("floor", lambda: data_floor_fid(assets, dcfg)), 3)
        for name in args.teachers:
            rows = timed(f"check-{name}", lambda name=name: check_teacher(
                assets / name, data_dir, assets, args.check_steps, args.check_guidance, args.check_images,
                work / "check" / name))
            updates.setdefault(name, {})["ddim_check"] = rows
    path = assets / "manifest.json"
    _merge_manifest(path, updates, timings)
    log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
