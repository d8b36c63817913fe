#!/usr/bin/env python
"""Every shipped SD-2.1 recipe (and the SDXL LoRA recipe), run on its own YAML at the true shapes (random weights),
on this machine.

    python benchmarks/scale_rehearsal.py [--recipes lcd_sd21_base_512,lcf_pokemon] [--publish]

For each recipe: the random-weight SD 2.1 / 2.1-base folder of lcm_distill.testing.sd21 (parameter counts asserted)
stands in for the Hub teacher, a small captioned image folder (or webdataset shards) at the recipe's resolution for
its data, and train_lcd.py / train_lcf.py runs the recipe file itself with only the overrides in COMMON (batch 1,
2 optimiser steps, where the outputs go, one validation prompt) plus the recipe's entry in NEEDED, each with its
reason. LCF recipes start from the export of the LCD rehearsal they name (model.student), as a user's would. Then the
exported folder is reloaded in a fresh process with stock diffusers only (LatentConsistencyModelPipeline, or
StableDiffusionPipeline + LCMScheduler + load_lora_weights for the LoRA) and samples one image with one step.

Reported per recipe: the losses (finite?), s/step (the second step: the first one warms up), the process's peak RSS
(os.wait4; includes Python, the libraries and load transients), the memory planner's estimate for the same config
on this host (lcm_distill.engine.memory), and the reload result. Each recipe's row is kept in
OUT/<recipe>/rehearsal.json, so a second call runs only what is missing (--force: everything again).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: benchmarks.* and lcm_distill
from benchmarks.harness import ROOT, publish, run_measured

PROMPT = "a photograph of an astronaut riding a horse"
# recipe -> its teacher variant (LCD) or the LCD rehearsal and exported folder it starts from (LCF)
RECIPES: dict[str, dict] = {
    "lcd_sd21_base_512": {"variant": "sd21-base"},
    "lcd_sd21_768": {"variant": "sd21"},
    "lcd_sd21_base_lora": {"variant": "sd21-base"},
    "lcf_pokemon": {"start": ("lcd_sd21_base_512", "target")},
    "lcf_simpsons": {"start": ("lcd_sd21_base_512", "target")},
    "lcf_pokemon_lora": {"start": ("lcd_sd21_base_lora", "student")},
    "lcf_simpsons_lora": {"start": ("lcd_sd21_base_lora", "student")},
    # a second row of a recipe with one switch, to check the memory planner's line for it against a measurement
    "lcd_sd21_768_adam8": {"variant": "sd21", "config": "lcd_sd21_768",
                           "extra": [("optim.use_8bit_adam=true", "planner check: 8-bit AdamW states")]},
    # SDXL base at its true shapes (lcm_distill/testing/sdxl.py): the LoRA recipe, the one that fits this machine
    "lcd_sdxl_lora": {"variant": "sdxl"},
}  # fmt: skip
COMMON = [  # what every rehearsal changes, and nothing about the method
    "train.per_device_batch_size=1", "train.gradient_accumulation_steps=1", "train.max_train_steps=2",
    "train.checkpoint_every=2", "train.checkpoints_keep=1", "train.validation_every=0", "train.log_every=1",
    "train.report_to=tensorboard", f"train.validation_prompts=['{PROMPT}']", "train.validation_steps=[1]",
]  # fmt: skip
# Overrides this 24 GiB, 2-core CPU machine needs beyond COMMON, with the reason (measured: see RESULTS.md).
NEEDED: dict[str, list[tuple[str, str]]] = {
    "lcd_sdxl_lora": [("data.source=hf", "an image folder stands in for the recipe's LAION shards"),
                      ("data.shards=''", "(with it)"),
                      ("data.num_workers=2", "2 cores here; the recipe's 8 are per GPU node")],
}


def config_of(recipe: str) -> Path:
    return ROOT / "configs" / f"{RECIPES[recipe].get('config', recipe)}.yaml"


def resolution_of(recipe: str) -> int:
    from lcm_distill.config import load_config

    return load_config(config_of(recipe)).data.resolution


def build_inputs(out: Path, recipe: str) -> tuple[list[str], Path | None]:
    """The recipe's model/data overrides (teacher or start folder, data) and the base folder its LoRA rides on."""
    from lcm_distill.testing import make_imagefolder
    from lcm_distill.testing.sd21 import save_sd21
    from lcm_distill.testing.sdxl import save_sdxl

    spec, res = RECIPES[recipe], resolution_of(recipe)
    sets: list[str] = []
    base = None
    if "variant" in spec:
        folder = out / "teachers" / spec["variant"]
        teacher = save_sdxl(folder) if spec["variant"] == "sdxl" else save_sd21(folder, spec["variant"])
        sets.append(f"model.teacher={teacher}")
        base = teacher
    else:
        src, folder = spec["start"]
        start = out / src / folder
        if not (start / "model_index.json").is_file():
            raise SystemExit(f"{recipe} starts from {start}: rehearse {src} first (--recipes {src},{recipe}).")
        sets.append(f"model.student={start}")
        base = start
    images = make_imagefolder(out / "data" / f"images-{res}", n=4, size=res)
    sets.append(f"data.dataset={images}")
    return sets, base


def read_losses(logs: Path) -> list[tuple[int, float, float]]:
    """(step, loss, wall time) from the run's tensorboard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = []
    for events in sorted(logs.rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)[-1:]:  # this run's
        acc = EventAccumulator(str(events))
        acc.Reload()
        if "loss" in acc.Tags().get("scalars", []):
            rows += [(e.step, e.value, e.wall_time) for e in acc.Scalars("loss")]
    return sorted(rows)


RELOAD = r"""
import gc, os, sys, numpy as np, torch
from diffusers import DiffusionPipeline, LCMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
folder, kind, base, res = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
xl = os.path.isdir(os.path.join(base, "text_encoder_2"))  # SDXL: its stock pipeline class
Stock = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
kw = {} if xl else {"safety_checker": None}
def sample(pipe, **kw):
    return pipe("a red square", num_inference_steps=1, height=res, width=res, output_type="latent",
                generator=torch.Generator().manual_seed(0), **kw).images
if kind == "lora":
    pipe = Stock.from_pretrained(base, **kw)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(folder)
    lat = sample(pipe, guidance_scale=1.0)
    if xl:  # two SDXL pipelines in fp32 do not fit 24 GiB together: the first goes before the second loads
        del pipe
        gc.collect()
    # the merged export beside it must draw the same latents: every adapter found its module at these shapes
    merged = DiffusionPipeline.from_pretrained(folder.replace("/lora", "/student"), **kw)
    diff = (sample(merged, guidance_scale=1.0) - lat).abs().max().item()
    if xl:
        pipe = merged
        del merged
    print("lora vs merged max|diff| %.2e" % diff, file=sys.stderr)
    ok = diff <= 1e-4 * max(1.0, lat.abs().max().item())  # fp32 both: equal up to fusing rounding
else:
    pipe = DiffusionPipeline.from_pretrained(folder)
    lat, ok = sample(pipe, guidance_scale=8.5), True
names = type(pipe).__name__, type(pipe.scheduler).__name__
vae = pipe.vae
if xl:  # a 1024-px fp32 decode beside a whole SDXL pipeline does not fit 24 GiB: the VAE alone
    del pipe
    gc.collect()
with torch.no_grad():  # (without it the decoder keeps every activation for a backward that never comes)
    img = vae.decode(lat / vae.config.scaling_factor).sample
fin = bool(torch.isfinite(img).all())
print(*names, *([] if ok else ["LoRA != merged"]), "finite" if fin else "NON-FINITE")
"""


def planner_estimate(config: Path, sets: list[str]) -> float | None:
    """The memory planner's per-process estimate (GiB) for the rehearsal's config on this host (CPU, fp32 math)."""
    try:
        from lcm_distill.config import load_config
        from lcm_distill.engine.memory import estimate
    except ImportError:
        return None
    return estimate(load_config(config, sets)).total_gib


def rehearse(out: Path, recipe: str) -> dict:
    kind = "lcf" if recipe.startswith("lcf") else "lcd"
    run = out / recipe
    sets, base = build_inputs(out, recipe)
    needed = NEEDED.get(recipe, []) + RECIPES[recipe].get("extra", [])
    sets += [*COMMON, f"train.output_dir={run}", *(o for o, _ in needed)]
    config = config_of(recipe)
    argv = [sys.executable, str(ROOT / f"train_{kind}.py"), "--config", str(config), "--overwrite", "--set", *sets]
    if run.exists():  # a rehearsal starts clean: old event files would mix into the losses
        import shutil

        shutil.rmtree(run)
    run.mkdir(parents=True)
    print(f"[rehearsal] {recipe}: training", flush=True)
    samples: list[tuple[float, float]] = []
    rc, wall, rss = run_measured(argv, run.parent / f"{recipe}.train.log", samples)
    row = {"recipe": recipe, "needed": needed, "exit": rc, "wall_s": round(wall, 1), "peak_rss_gib": round(rss, 2),
           "sets": sets}  # fmt: skip
    losses = read_losses(run / "logs") if rc == 0 else []
    row["losses"] = [round(v, 6) for _, v, _ in losses]
    row["finite"] = bool(losses) and all(v == v and abs(v) != float("inf") for _, v, _ in losses)
    row["s_per_step"] = round(losses[1][2] - losses[0][2], 1) if len(losses) >= 2 else None
    # RSS during the second step (from its start, the first step's log, to its log): weights, states, activations
    step2 = [r for t, r in samples if len(losses) >= 2 and losses[0][2] <= t <= losses[1][2]]
    row["step_rss_gib"] = round(max(step2), 2) if step2 else None
    # RSS after the last step's log: the final checkpoint, validation and the export (the LoRA merge)
    after = [r for t, r in samples if losses and t > losses[-1][2]]
    row["after_steps_rss_gib"] = round(max(after), 2) if after else None
    if rc == 0:
        lora = (run / "lora").is_dir()
        folder, what = (run / "lora", "lora") if lora else ((run / "target") if (run / "target").is_dir()
                                                            else run / "student", "lcm")  # fmt: skip
        print(f"[rehearsal] {recipe}: reloading {folder.name} in stock diffusers", flush=True)
        reload_argv = [sys.executable, "-c", RELOAD, str(folder), what, str(base), str(resolution_of(recipe))]
        rc2, wall2, _ = run_measured(reload_argv, run.parent / f"{recipe}.reload.log")
        tail = (run.parent / f"{recipe}.reload.log").read_text().strip().splitlines()[-1:]
        row["reload"] = f"{folder.name}/: {tail[0] if tail and rc2 == 0 else f'FAILED (exit {rc2})'}"
        row["reload_s"] = round(wall2, 1)
    free_disk(run, recipe)
    (run / "rehearsal.json").write_text(json.dumps(row, indent=1))
    return row


def free_disk(run: Path, recipe: str) -> None:
    """Delete what no later rehearsal reads: the checkpoint (~14 GB for a full SD UNet with AdamW states) and the
    exports that no LCF recipe starts from (~5 GB each)."""
    import shutil

    keep = {spec["start"][1] for spec in RECIPES.values() if spec.get("start", (None,))[0] == recipe}
    for name in ("checkpoints", "student", "target", "lora"):
        if name not in keep and (run / name).exists():
            shutil.rmtree(run / name)


def table(rows: list[dict]) -> str:
    lines = ["| recipe | overrides beyond the common ones (why) | losses (steps 1, 2) | s/step | peak RSS GiB | "
             "RSS in step 2 GiB | planner GiB | export, reloaded in stock diffusers |",
             "|---|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        needed = "; ".join(f"`{o}` ({why})" for o, why in r["needed"]) or "none"
        losses = ", ".join(f"{v:.4g}" for v in r["losses"]) if r["exit"] == 0 else f"FAILED (exit {r['exit']})"
        est = planner_estimate(config_of(r["recipe"]), r["sets"])
        est = f"{est:.1f}" if est else "-"
        bad = "" if r["finite"] or r["exit"] else " NON-FINITE"
        lines.append(f"| {r['recipe']} | {needed} | {losses}{bad} | {r['s_per_step'] or '-'} | "
                     f"{r['peak_rss_gib']:.1f} | {r.get('step_rss_gib') or '-'} | {est} | "
                     f"{r.get('reload', '-')} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "scale-rehearsal")
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, from {', '.join(RECIPES)}")
    p.add_argument("--force", action="store_true", help="run again the recipes that have a rehearsal.json")
    p.add_argument("--publish", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        p.error(f"--recipes: unknown {unknown}; known: {', '.join(RECIPES)}")
    rows = []
    for recipe in recipes:
        done = args.out / recipe / "rehearsal.json"
        row = json.loads(done.read_text()) if done.is_file() and not args.force else rehearse(args.out, recipe)
        print(f"[rehearsal] {recipe}: {json.dumps(row)}", flush=True)
        rows.append(row)
    text = table(rows)
    print(text)
    if args.publish:
        publish(
            text,
            ROOT / "benchmarks" / "RESULTS.md",
            "scale-rehearsal",
            "Scale rehearsal: every SD-2.1 recipe at its true shapes, CPU (benchmarks/scale_rehearsal.py)",
            [],
        )
    return (
        0
        if all(r["exit"] == 0 and r["finite"] and r.get("reload", "").strip().endswith(" finite") for r in rows)
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
