"""LCM-LoRA universality in miniature (the LCM-LoRA report's claim): a LoRA distilled from the testbed teacher,
applied to a briefly fine-tuned derivative of that teacher in another style, should sample the derivative's style
in a few steps.

    bash benchmarks/lora_compare.sh             # first: trains outputs/lora-fixed (LoRA from teacher-v, omega 3)
    python benchmarks/lora_universality.py [--finetune-steps 300] [--num-images 200]

Steps: render the "inverted" style, fine-tune teacher-v's UNet on it (text encoder frozen, testbed trainer), merge
the LoRA into the derivative, and evaluate with lcm-distill-evaluate against the inverted test split (testbed FID):
the derivative's own DDIM at 4 and 50 steps (g = 4, the LoRA's baked-in guidance), derivative + LoRA and
teacher + LoRA at 1/2/4 steps. Prints one table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: benchmarks.* and lcm_distill
from benchmarks.harness import ROOT, evaluate_argv


def evaluate(model: Path, kind: str, steps: list[int], out: Path, args, reference: Path | None = None) -> dict:
    cmd = [sys.executable, *evaluate_argv(model, kind, steps, out, guidance=4, reference=reference or args.data,
                                          num_images=args.num_images, batch_size=50, prompt_accuracy="none",
                                          threads=2)]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return {r["steps"]: r["fid"] for r in json.loads((out / "report.json").read_text())["results"]}


def ddim50_reference(derivative: Path, data: Path, out: Path, num: int) -> Path:
    """An imagefolder of the derivative's own 50-step DDIM samples (g = 4) for the test captions: the reference the
    LCM-LoRA report compares against. Seeds 10000+ so they are not the evaluated samples' noise."""
    import numpy as np
    from PIL import Image

    from lcm_distill.evaluation.generation import generate, load_pipeline
    from lcm_distill.evaluation.harness import select_prompts
    from lcm_distill.evaluation.imagefolder import read_imagefolder

    folder = out / "test"
    if (folder / "metadata.jsonl").is_file():
        return out
    _, captions = read_imagefolder(data, "test")
    prompts = select_prompts(captions, num)
    images = generate(load_pipeline(str(derivative), "teacher-ddim"), prompts, 50, 4.0, seed=10_000, batch_size=50)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (img, caption) in enumerate(zip(images, prompts, strict=True)):
        name = f"{i:05d}.png"
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / name)
        rows.append(json.dumps({"file_name": name, "text": caption}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", type=Path, default=ROOT / "assets/testbed/teacher-v")
    p.add_argument("--lora", type=Path, default=ROOT / "outputs/lora-fixed/lora")
    p.add_argument("--data", type=Path, default=ROOT / "outputs/testbed-digits-inverted")
    p.add_argument("--out", type=Path, default=ROOT / "outputs/lora-universality")
    p.add_argument("--finetune-steps", type=int, default=300)
    p.add_argument("--num-images", type=int, default=200)
    args = p.parse_args(argv)
    if not (args.lora / "pytorch_lora_weights.safetensors").is_file():
        p.error(f"--lora {args.lora}: no pytorch_lora_weights.safetensors; run bash benchmarks/lora_compare.sh first")
    torch.set_num_threads(2)
    from diffusers import StableDiffusionPipeline

    from lcm_distill.export import ModelCardInfo, save_lcm_pipeline
    from lcm_distill.testbed.build import save_teacher
    from lcm_distill.testbed.digits import DigitsConfig, build_split, write_imagefolder
    from lcm_distill.testbed.train import TeacherTrainConfig, train_teacher

    if not (args.data / "test" / "metadata.jsonl").is_file():
        write_imagefolder(args.data, DigitsConfig(style="inverted"))
    base = StableDiffusionPipeline.from_pretrained(args.teacher, safety_checker=None)
    derivative = args.out / "derivative"
    if not (derivative / "model_index.json").is_file():
        cfg = TeacherTrainConfig(prediction_type=base.scheduler.config.prediction_type, steps=args.finetune_steps,
                                 lr=3e-4, warmup=20, ema_decay=0.99, train_text_encoder=False)  # fmt: skip
        unet, _ = train_teacher(base.vae, base.text_encoder, base.tokenizer, dict(base.scheduler.config),
                                build_split("train", DigitsConfig(style="inverted")), cfg, init_unet=base.unet)
        save_teacher(derivative, base.vae, base.text_encoder, base.tokenizer, unet, cfg.prediction_type)
    merged = {}
    for name, folder in (("derivative + LoRA", derivative), ("teacher + LoRA", args.teacher)):
        pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
        pipe.load_lora_weights(args.lora)
        pipe.fuse_lora()
        pipe.unload_lora_weights()
        out = args.out / name.replace(" + ", "-plus-").replace(" ", "-")
        save_lcm_pipeline(out, unet=pipe.unet, vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                          teacher_scheduler_config=pipe.scheduler.config, num_points=50,
                          card=ModelCardInfo(base_model=str(folder), method="LCD"))  # fmt: skip
        merged[name] = out
    ddim = evaluate(derivative, "teacher-ddim", [1, 2, 4, 50], args.out / "eval-ddim", args)
    rows = {"derivative, DDIM (g = 4)": ddim}
    for name, folder in merged.items():
        rows[name] = evaluate(folder, "lcm", [1, 2, 4], args.out / f"eval-{folder.name}", args)
    reference = ddim50_reference(derivative, args.data, args.out / "ddim50-reference", args.num_images)
    vs_ddim = {name: evaluate(folder, "lcm", [1, 2, 4], args.out / f"eval50-{folder.name}", args, reference)
               for name, folder in merged.items()}  # fmt: skip
    own = evaluate(derivative, "teacher-ddim", [1, 2, 4], args.out / "eval50-ddim", args, reference)
    vs_ddim["derivative, DDIM (g = 4)"] = own
    print(f"FID vs the inverted-style test split ({args.num_images} images, testbed features, seed 0); "
          f"derivative = teacher-v fine-tuned {args.finetune_steps} steps on the inverted style")
    print("| model | 1 step | 2 steps | 4 steps | 50 steps |\n|---|---|---|---|---|")
    for name, fids in rows.items():
        print(f"| {name} | " + " | ".join(f"{fids[s]:.2f}" if s in fids else "-" for s in (1, 2, 4, 50)) + " |")
    print(f"\nFID vs the derivative's own 50-step DDIM samples ({args.num_images} images, other seeds)")
    print("| model | 1 step | 2 steps | 4 steps |\n|---|---|---|---|")
    for name, fids in vs_ddim.items():
        print(f"| {name} | " + " | ".join(f"{fids[s]:.2f}" for s in (1, 2, 4)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
