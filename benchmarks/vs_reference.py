#!/usr/bin/env python
"""Our LCD step against diffusers' train_lcm_distill_sd_wds.py, side by side, on the same teacher and shards.

    python benchmarks/vs_reference.py [--configs tiny,small] [--repeats 2] [--publish] \
        --reference-script ~/src/diffusers/examples/consistency_distillation/train_lcm_distill_sd_wds.py

The reference script is run from the user's diffusers checkout (never copied here) through a launcher that only
wraps it (--reference-script). Both tools get: the same random-weight teacher folder (written here), the same
webdataset shards (jpg + txt), batch 8, DDIM with N = 50, pseudo-Huber c = 0.001, target EMA mu 0.95, omega ~ U[5, 15]
(the reference's w is our omega: both apply (1 + w) cond - w uncond), lr 1e-4, fp32 everywhere, one data-loader
worker each, no validation or checkpoint inside the timed span.

Per-step time is the difference of two run lengths (--steps-short, --steps-long) divided by the step difference, so
start-up, model loading, final validation and export cancel. Runs are interleaved (ref short, ours short, ref long,
ours long, ...) and repeated --repeats times; each repeat gives its own ratio. Peak memory: the process's peak RSS
(os.wait4). --ours names our variants ("ours", "ours+cache", "ours+cache+channels_last", ...); with a cache variant the
cache's build cost per sample is printed with the number of epochs after which it has paid for itself.

Wrapped traps of the reference: its group_by_keys_nothrow predates webdataset >= 0.2.96's
end-of-shard marker (a dict without "fname": KeyError at the first shard boundary), so the launcher filters those
markers before the script's own function sees them; it divides by --max_train_samples and --dataloader_num_workers
(both passed, workers 1); its teacher runs under torch.autocast(device_type) with no dtype, which is bf16 on CPU, so
the launcher makes CPU autocast without an explicit dtype a no-op (fp32 against our fp32).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: benchmarks.* and lcm_distill
from benchmarks.harness import ROOT, run_measured

CONFIGS = {  # name -> UNet channels, image size (the VAE downsamples 8x: tiny 8x8 latents, small 16x16)
    "tiny": {"channels": (32, 64), "resolution": 64},
    "small": {"channels": (64, 128), "resolution": 128},
    "sd21": {"variant": "sd21-base", "resolution": 512},  # random-weight SD 2.1-base at its true shapes (GPU)
}
# --precision gpu: the reference as shipped (fp16 autocast) against ours in bf16 with frozen bf16 networks
PRECISION = {
    "fp32": {"reference": "no", "ours": ["train.mixed_precision=no", "model.frozen_dtype=fp32"]},
    "gpu": {"reference": "fp16", "ours": ["train.mixed_precision=bf16", "model.frozen_dtype=bf16"]},
}
PEAK = r"""
import atexit, runpy, sys, torch
def _peak():
    if torch.cuda.is_available():
        print("CUDA_PEAK_BYTES", torch.cuda.max_memory_allocated(), flush=True)
atexit.register(_peak)
"""
BATCH, N_SAMPLES = 8, 256

LAUNCHER = (
    PEAK
    + r'''
"""Runs diffusers' train_lcm_distill_sd_wds.py unmodified, with two wrappers (see benchmarks/vs_reference.py)."""
import importlib.util
script = sys.argv[1]
sys.argv = [script, *sys.argv[2:]]
_autocast = torch.autocast
class _CpuFp32Autocast(_autocast):
    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        if device_type == "cpu" and dtype is None:
            enabled = False  # the reference's teacher autocast would run bf16 on CPU
        super().__init__(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)
torch.autocast = _CpuFp32Autocast
spec = importlib.util.spec_from_file_location("train_lcm_distill_sd_wds", script)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
_group = mod.group_by_keys_nothrow
mod.group_by_keys_nothrow = lambda data, *a, **k: _group((s for s in data if "fname" in s), *a, **k)
mod.main(mod.parse_args())
'''
)


def build_teacher(out: Path, spec: dict) -> Path:
    """A StableDiffusionPipeline folder: the kit's UNet at ``channels``, an 8x VAE, the tiny text encoder (or the
    SD 2.1 preset)."""
    if "variant" in spec:
        from lcm_distill.testing.sd21 import save_sd21

        return save_sd21(out, spec["variant"])
    channels = spec["channels"]
    if (out / "model_index.json").is_file():
        return out
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline

    from lcm_distill.testing import tiny_scheduler_config, tiny_text_encoder, tiny_tokenizer, tiny_unet

    torch.manual_seed(0)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8,
                        latent_channels=4)  # fmt: skip
    unet = tiny_unet(block_out_channels=channels)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=tiny_text_encoder(),
                                   tokenizer=tiny_tokenizer(out.parent / f".{out.name}-tok"),
                                   scheduler=DDIMScheduler(**tiny_scheduler_config("epsilon")), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_shards(out: Path, resolution: int, n: int = N_SAMPLES, per_shard: int = 64) -> str:
    """``n`` jpg + txt samples in tar shards (what img2dataset writes, minus the json); returns a brace pattern."""
    import numpy as np
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    count = (n + per_shard - 1) // per_shard
    pattern = str(out / f"{{00000..{count - 1:05d}}}.tar")
    if (out / f"{count - 1:05d}.tar").is_file():
        return pattern
    rng = np.random.default_rng(0)
    colours = ["red", "green", "blue", "yellow"]
    for s in range(count):
        with tarfile.open(out / f"{s:05d}.tar", "w") as tar:
            for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                c = i % len(colours)
                img = np.full((resolution, resolution, 3), 30, np.uint8)
                img[:, :, c % 3] = rng.integers(120, 255)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG")
                for ext, data in (("jpg", buf.getvalue()), ("txt", f"a {colours[c]} picture".encode())):
                    info = tarfile.TarInfo(f"{i:08d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return pattern


def reference_argv(args, teacher: Path, shards: str, res: int, steps: int, out: Path) -> list[str]:
    launcher = args.out / "reference_launcher.py"
    launcher.write_text(LAUNCHER)
    return [sys.executable, str(launcher), str(args.reference_script),
            "--pretrained_teacher_model", str(teacher), "--output_dir", str(out), "--train_shards_path_or_url", shards,
            "--resolution", str(res), "--train_batch_size", str(BATCH), "--max_train_steps", str(steps),
            "--max_train_samples", "1000000", "--dataloader_num_workers", "1", "--learning_rate", "1e-4",
            "--loss_type", "huber", "--huber_c", "0.001", "--ema_decay", "0.95", "--w_min", "5", "--w_max", "15",
            "--num_ddim_timesteps", "50", "--mixed_precision", PRECISION[args.precision]["reference"],
            "--validation_steps", "1000000",
            "--checkpointing_steps", "1000000", "--seed", "0", "--report_to", "tensorboard",
            "--lr_warmup_steps", "0", "--adam_weight_decay", "0"]  # fmt: skip


# our variants: "ours" plus "+switch" tokens (ours+cache+channels_last); each token's overrides
OUR_SWITCHES = {"cache": ["data.cache_dir={cache}"], "channels_last": ["model.channels_last=true"]}


def variant_sets(variant: str, cache: Path | None) -> list[str]:
    tokens = variant.split("+")
    if tokens[0] != "ours" or any(t not in OUR_SWITCHES for t in tokens[1:]):
        raise ValueError(f"--ours {variant!r}: 'ours' then '+switch' from {sorted(OUR_SWITCHES)}")
    return [o.format(cache=cache) for t in tokens[1:] for o in OUR_SWITCHES[t]]


def ours_argv(
    teacher: Path, shards: str, res: int, steps: int, out: Path, extra: list[str] | None = None, precision: str = "fp32"
) -> list[str]:
    sets = [f"model.teacher={teacher}", "model.omega_embed_dim=256", "data.source=webdataset", f"data.shards={shards}",
            f"data.resolution={res}", "data.center_crop=true", "data.num_workers=1",
            f"train.per_device_batch_size={BATCH}",
            f"train.max_train_steps={steps}", "objective.loss=huber", "objective.huber_c=0.001",
            "objective.omega_min=5", "objective.omega_max=15", "objective.omega_fixed=null", "optim.learning_rate=1e-4",
            "optim.lr_warmup_steps=0", "train.ema_decay=0.95", *PRECISION[precision]["ours"],
            "train.checkpoint_every=1000000", "train.validation_prompts=[]", "train.export=false",
            f"train.output_dir={out}", "train.report_to=tensorboard", "train.log_every=10"]  # fmt: skip
    sets += extra or []
    return [sys.executable, "-c", PEAK + "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
            str(ROOT / "train_lcd.py"), "--config", str(ROOT / "configs" / "lcd_tiny_cpu.yaml"),
            "--overwrite", "--set", *sets]  # fmt: skip


def run(argv: list[str], log: Path) -> tuple[float, float, float | None]:
    """(wall s, peak RSS GiB, CUDA max allocated GiB or None); raises with the log's tail on failure."""
    rc, wall, rss = run_measured(argv, log)
    if rc != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"{argv[-1]} failed; {log}:\n{tail}")
    cuda = [int(ln.split()[1]) for ln in log.read_text().splitlines() if ln.startswith("CUDA_PEAK_BYTES")]
    return wall, rss, (cuda[-1] / 2**30 if cuda else None)


def build_cache(args, teacher: Path, shards: str, res: int, work: Path) -> tuple[Path, float]:
    """The latent cache of the shards (our lcm-distill-cache), and its wall time per sample (start-up included)."""
    cache = work / "cache"
    cfg = ours_argv(teacher, shards, res, 1, work / "cache-cfg", [], args.precision)
    from lcm_distill.cli.train import parse_run

    _, c = parse_run(cfg[cfg.index("--config") :], "lcd", "train_lcd.py")
    (work / "cache.yaml").write_text(c.to_yaml())
    wall, *_ = run([sys.executable, "-m", "lcm_distill.cli.cache", "--config", str(work / "cache.yaml"), "--out",
                   str(cache), "--batch-size", str(BATCH), "--overwrite"], work / "logs" / "cache.log")  # fmt: skip
    return cache, wall / N_SAMPLES


def bench(args, name: str) -> dict:
    spec = CONFIGS[name]
    work = args.out / name
    teacher = build_teacher(work / "teacher", spec)
    shards = build_shards(work / "shards", spec["resolution"])
    variants = [v for v in args.ours.split(",") if v]
    needs_cache = any("cache" in v.split("+") for v in variants)
    cache, cache_cost = build_cache(args, teacher, shards, spec["resolution"], work) if needs_cache else (None, None)
    tools = ["reference", *variants]
    walls: dict[tuple[str, int, int], tuple[float, float]] = {}
    for rep in range(args.repeats):
        for steps in (args.steps_short, args.steps_long):
            for tool in tools:
                out = work / "runs" / f"{tool}-{steps}"
                argv = (reference_argv(args, teacher, shards, spec["resolution"], steps, out) if tool == "reference"
                        else ours_argv(teacher, shards, spec["resolution"], steps, out, variant_sets(tool, cache),
                                       args.precision))  # fmt: skip
                walls[(tool, steps, rep)] = run(argv, work / "logs" / f"{tool}-{steps}-rep{rep}.log")
                print(f"[vs_reference] {name} rep {rep} {tool} {steps} steps: {walls[(tool, steps, rep)][0]:.1f} s, "
                      f"peak RSS {walls[(tool, steps, rep)][1]:.2f} GiB", flush=True)  # fmt: skip
    dn = args.steps_long - args.steps_short
    rows = {}
    for tool in tools:
        per_rep = [(walls[(tool, args.steps_long, r)][0] - walls[(tool, args.steps_short, r)][0]) / dn
                   for r in range(args.repeats)]  # fmt: skip
        runs = [walls[(tool, s, r)] for s in (args.steps_short, args.steps_long) for r in range(args.repeats)]
        cuda = [w[2] for w in runs if w[2] is not None]
        rows[tool] = {"s_per_step": per_rep, "peak_rss_gib": max(w[1] for w in runs),
                      "cuda_peak_gib": max(cuda) if cuda else None}  # fmt: skip
    result = {"config": name, "channels": spec.get("channels", spec.get("variant")), "resolution": spec["resolution"],
              "batch": BATCH, "precision": args.precision, "rows": rows, "cache_s_per_sample": cache_cost}  # fmt: skip
    (work / "result.json").write_text(json.dumps(result, indent=1))
    return result


def table(results: list[dict]) -> str:
    lines = ["| config | tool | s/step per repeat | samples/s (median) | vs reference (per repeat) | peak RSS GiB | "
             "CUDA peak GiB (vs reference) |", "|---|---|---|---:|---|---:|---:|"]  # fmt: skip
    notes = []
    for res in results:
        ref = res["rows"]["reference"]["s_per_step"]
        nets = res["channels"] if isinstance(res["channels"], str) else "UNet " + "/".join(map(str, res["channels"]))
        cfg = f"{res['config']} ({nets}, {res['resolution']} px, {res.get('precision', 'fp32')})"
        ref_cuda = res["rows"]["reference"].get("cuda_peak_gib")
        for tool, row in res["rows"].items():
            s = row["s_per_step"]
            ratio = ", ".join(f"{r / o:.2f}x" for r, o in zip(ref, s, strict=True))
            cuda = row.get("cuda_peak_gib")
            mem = f"{cuda:.2f} ({cuda / ref_cuda:.2f}x)" if cuda and ref_cuda else "-"
            per = ", ".join(f"{v:.3f}" for v in s)
            lines.append(f"| {cfg} | {tool} | {per} | {BATCH / statistics.median(s):.1f} | {ratio} | "
                         f"{row['peak_rss_gib']:.2f} | {mem} |")  # fmt: skip
        if res.get("cache_s_per_sample") and "ours+cache" in res["rows"]:
            saved = statistics.median(res["rows"]["ours"]["s_per_step"]) - statistics.median(
                res["rows"]["ours+cache"]["s_per_step"]
            )
            per_epoch = saved * N_SAMPLES / BATCH
            pays = f"after {res['cache_s_per_sample'] * N_SAMPLES / per_epoch:.1f} epochs" if saved > 0 else "never"
            notes.append(f"- {res['config']}: building the cache cost {res['cache_s_per_sample']:.3f} s/sample "
                         f"(one lcm-distill-cache process, start-up included); it saves {saved:.3f} s/step, so it "
                         f"pays for itself {pays}.")  # fmt: skip
    return "\n".join(lines + (["", *notes] if notes else []))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--reference-script",
        type=Path,
        required=True,
        help="train_lcm_distill_sd_wds.py in a diffusers source checkout",
    )
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "vs-reference")
    p.add_argument("--configs", default="tiny,small", help=f"comma-separated: {', '.join(CONFIGS)}")
    p.add_argument("--steps-short", type=int, default=10)
    p.add_argument("--steps-long", type=int, default=60)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--ours",
        default="ours,ours+cache",
        help="our variants to time: 'ours' plus '+cache' / '+channels_last', comma-separated",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=list(PRECISION),
        help="fp32: both in fp32 (CPU); gpu: the reference as shipped (fp16 autocast) vs ours in bf16",
    )
    p.add_argument("--publish", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    if not args.reference_script.is_file():
        p.error(
            f"--reference-script {args.reference_script}: no such file (examples/consistency_distillation/"
            "train_lcm_distill_sd_wds.py of a diffusers checkout)"
        )
    names = [c for c in args.configs.split(",") if c]
    if unknown := [c for c in names if c not in CONFIGS]:
        p.error(f"--configs: unknown {unknown}; known: {', '.join(CONFIGS)}")
    for v in args.ours.split(","):
        try:
            variant_sets(v, None)
        except ValueError as err:
            p.error(str(err))
    if args.steps_long <= args.steps_short:
        p.error("--steps-long must be larger than --steps-short")
    args.out.mkdir(parents=True, exist_ok=True)
    results = [bench(args, n) for n in names]
    text = table(results)
    print(text)
    if args.publish:
        from benchmarks.harness import publish

        publish(
            text,
            ROOT / "benchmarks" / "RESULTS.md",
            "vs-reference",
            "Our LCD step vs diffusers' train_lcm_distill_sd_wds.py, side by side (benchmarks/vs_reference.py)",
            [],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
