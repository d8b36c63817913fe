"""``python -m lcm_distill.cli.evaluate``: FID / KID / CLIP score / prompt accuracy / latency at 1-2-4-8 steps.

Examples::

    # an LCM student on the digits testbed (domain FID + prompt accuracy), omega = 8
    python -m lcm_distill.cli.evaluate --model outputs/demo/lcm --kind lcm --steps 1 2 4 8 --guidance 9 \\
        --reference outputs/testbed-digits --fid-features testbed --prompt-accuracy testbed --out outputs/eval/lcm
    # the teacher with DDIM and DPM-Solver++ at the same step counts (swaps only the scheduler)
    python -m lcm_distill.cli.evaluate --model assets/testbed/teacher-eps --kind teacher-ddim --steps 1 2 4 8 50 ...
    # a real SD model: Inception FID against an imagefolder of reference photos, CLIP ViT-g/14 score
    python -m lcm_distill.cli.evaluate --model my-lcm --kind lcm --reference coco-val --fid-features inception \\
        --clip-model ViT-g-14 --clip-pretrained laion2b_s12b_b42k --num-images 5000 --device cuda --dtype fp16
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ..conventions import DTYPE_NAMES, dtype_arg
from ..evaluation.generation import KINDS, TIMESTEP_SPACINGS
from ..paths import TESTBED_DIR, is_testbed_reference

DEFAULT_TESTBED = str(TESTBED_DIR)  # the checkout's, not ./assets/testbed: the command works from any folder


class FlagError(ValueError):
    """A command-line value that cannot work; the message names the flag."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lcm-distill-evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="diffusers pipeline folder (or Hub id when online)")
    p.add_argument("--kind", required=True, choices=KINDS, help="lcm = student with LCMScheduler; teacher-* = "
                   "StableDiffusionPipeline with DDIM / DPM-Solver++ / DPM-Solver")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8], help="inference step counts")
    p.add_argument("--guidance", type=float, nargs="+", default=[9.0],
                   help="diffusers guidance_scale g (omega = g - 1; paper omega=8 -> 9)")
    p.add_argument("--negative-prompt", default=None, help="one negative prompt for every image (lcm: needs "
                   "--cfg-scale > 1; teachers: their own CFG)")
    p.add_argument("--cfg-scale", type=float, default=1.0, help="--kind lcm only: real CFG on the consistency model "
                   "(2x UNet per step; default 1 = off)")
    p.add_argument("--timestep-spacing", default="trailing", choices=TIMESTEP_SPACINGS,
                   help="teacher samplers only")
    p.add_argument("--reference", help="imagefolder (metadata.jsonl with file_name, text) of real images: FID/KID "
                   "reference and, without --prompts, the source of the prompts")
    p.add_argument("--split", default="test", help="split subfolder of --reference (ignored if absent)")
    p.add_argument("--prompts", help="text file, one prompt per line (default: captions of --reference)")
    p.add_argument("--num-images", type=int, default=1000, help="images generated per setting")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fid-features", default="auto", help="inception | testbed | none | auto (testbed when "
                   "--reference is the digits testbed, else inception)")
    p.add_argument("--testbed-dir", default=DEFAULT_TESTBED,
                   help="folder with the testbed classifier (default: this checkout's assets/testbed)")
    p.add_argument("--prompt-accuracy", default="auto", choices=["auto", "testbed", "none"],
                   help="testbed classifier: does each image show the digit and colour asked for?")
    p.add_argument("--prompt-accuracy-dir", default=None,
                   help="folder whose classifier/ judges the prompts (default: --testbed-dir); e.g. a LCF domain "
                   "written by `python -m lcm_distill.testbed.domains --classifier`")
    p.add_argument("--clip-model", default="none", help="open_clip model for CLIP score, e.g. ViT-g-14; none = off")
    p.add_argument("--clip-pretrained", default="laion2b_s12b_b42k",
                   help="open_clip tag or checkpoint path; 'random' = untrained weights (plumbing checks only)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", type=dtype_arg, default="fp32", choices=DTYPE_NAMES, help="weights dtype")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--grid-prompts", type=int, default=8)
    p.add_argument("--fid-size", type=int, default=None,
                   help="square size both image sets are resized to for FID/KID (default: the reference images' "
                   "size, when square; the COCO protocol fixes one, e.g. 512 or 256)")
    p.add_argument("--chunk-images", type=int, default=1024,
                   help="images generated and scored at a time (memory: chunk x 3 x H x W x 4 bytes)")
    p.add_argument("--out", required=True, help="output folder: report.json, quality_vs_steps.png, grid_g*.png")
    return p


def _protocol(reference: str) -> dict | None:
    """How lcm-distill-reference made the reference set (its reference.json), for the report header."""
    from .reference import PROTOCOL_FILE

    path = Path(reference) / PROTOCOL_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def check_args(args: argparse.Namespace) -> None:
    """Fail before loading anything, naming the flag at fault."""
    from ..hub import HubUnavailable, is_local_path, model_location

    try:
        model = model_location(args.model)  # offline: the hub id's cached snapshot folder
    except HubUnavailable as err:
        raise FlagError(f"--model {args.model}: {err}") from err
    if is_local_path(model) and not Path(model).expanduser().is_dir():
        raise FlagError(f"--model {args.model}: no such folder; give a diffusers pipeline folder or a Hub id.")
    if Path(model).exists() and not (Path(model) / "model_index.json").exists():
        raise FlagError(f"--model {args.model}: not a diffusers pipeline folder (no model_index.json)")
    if any(s < 1 for s in args.steps):
        raise FlagError(f"--steps {args.steps}: every step count must be >= 1")
    if args.fid_size is not None and args.fid_size < 8:
        raise FlagError(f"--fid-size {args.fid_size}: use a square size in pixels, e.g. 512 or 256")
    if args.chunk_images < 1:
        raise FlagError(f"--chunk-images {args.chunk_images}: must be >= 1")
    if args.cfg_scale != 1.0 and args.kind != "lcm":
        raise FlagError(f"--cfg-scale {args.cfg_scale}: only for --kind lcm (teachers use --guidance as their CFG)")
    if args.cfg_scale < 1:
        raise FlagError(f"--cfg-scale {args.cfg_scale}: must be >= 1 (1 = off)")
    if args.negative_prompt is not None and args.kind == "lcm" and args.cfg_scale == 1.0:
        raise FlagError("--negative-prompt with --kind lcm acts only through real CFG: add --cfg-scale > 1")
    if args.num_images < 1:
        raise FlagError(f"--num-images {args.num_images}: must be >= 1")
    if args.batch_size < 1:
        raise FlagError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.kind.startswith("teacher") and any(g < 1.0 for g in args.guidance):
        raise FlagError(f"--guidance {args.guidance}: teacher CFG scales below 1 extrapolate away from the prompt")
    if args.reference is not None and not Path(args.reference).exists():
        raise FlagError(f"--reference {args.reference}: no such folder")
    if args.prompts is not None and not Path(args.prompts).is_file():
        raise FlagError(f"--prompts {args.prompts}: no such file")
    if args.reference is None and args.prompts is None:
        raise FlagError("--reference or --prompts is required (where do the prompts come from?)")
    if args.fid_features not in ("auto", "inception", "testbed", "none"):
        raise FlagError(f"--fid-features {args.fid_features}: use inception, testbed, none or auto")
    if args.fid_features in ("inception", "testbed") and args.reference is None:
        raise FlagError(f"--fid-features {args.fid_features} needs --reference (the real images to compare with)")
    needs_testbed = args.fid_features == "testbed" or args.prompt_accuracy == "testbed"
    if needs_testbed and not (Path(args.testbed_dir) / "classifier" / "model.safetensors").exists():
        raise FlagError(f"--testbed-dir {args.testbed_dir}: no classifier/model.safetensors there")
    acc_dir = args.prompt_accuracy_dir
    if acc_dir is not None and args.prompt_accuracy == "none":
        raise FlagError(f"--prompt-accuracy-dir {acc_dir} with --prompt-accuracy none: drop one of them")
    if acc_dir is not None and not (Path(acc_dir) / "classifier" / "model.safetensors").exists():
        raise FlagError(f"--prompt-accuracy-dir {acc_dir}: no classifier/model.safetensors there (train one with "
                        "`python -m lcm_distill.testbed.domains --classifier`)")
    if args.device is not None and args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise FlagError(f"--device {args.device}: CUDA is not available on this machine")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[evaluate] %(message)s")
    try:
        check_args(args)
    except FlagError as err:
        parser.error(str(err))
    import torch

    from ..evaluation import (
        ClipScoreConfig,
        ClipScorer,
        EvalConfig,
        InceptionV3Features,
        extract_features,
        load_pipeline,
        run_evaluation,
        select_prompts,
    )
    from ..evaluation.harness import fid_sized
    from ..evaluation.imagefolder import imagefolder_rows, iter_image_batches
    from ..functional import dtype_from_name

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    on_testbed = is_testbed_reference(args.reference)
    fid_kind = args.fid_features if args.fid_features != "auto" else (
        "testbed" if on_testbed else "inception" if args.reference else "none")
    acc_kind = args.prompt_accuracy if args.prompt_accuracy != "auto" else ("testbed" if on_testbed else "none")
    for flag, value in (("--fid-features", fid_kind), ("--prompt-accuracy", acc_kind)):
        if value == "testbed" and not (Path(args.testbed_dir) / "classifier" / "model.safetensors").exists():
            parser.error(f"{flag} {value}: --testbed-dir {args.testbed_dir} has no classifier/model.safetensors")

    ref_rows, captions = [], []
    if args.reference is not None:
        ref_folder, ref_rows = imagefolder_rows(args.reference, args.split)
        captions = [str(r.get("text", "")) for r in ref_rows]
    if args.prompts is not None:
        captions = [ln.strip() for ln in Path(args.prompts).read_text().splitlines() if ln.strip()]
        if not captions:
            parser.error(f"--prompts {args.prompts}: the file holds no prompts")
    prompts = select_prompts(captions, args.num_images)

    extractor = None
    if fid_kind == "inception":
        try:
            extractor = InceptionV3Features(args.device)
        except (ModuleNotFoundError, FileNotFoundError) as err:
            parser.error(f"--fid-features inception: {err}")
    elif fid_kind == "testbed":
        from ..testbed.scorers import load_testbed_features

        extractor = load_testbed_features(args.testbed_dir, args.device)
    ref_feats, fid_size = None, args.fid_size
    if extractor is not None:  # read and featurised a batch at a time: a 30k reference set never sits in memory
        feats = []
        for batch in iter_image_batches(ref_folder, ref_rows):
            if fid_size is None and batch.shape[-1] == batch.shape[-2]:
                fid_size = batch.shape[-1]  # default: generated images meet the reference at its own (square) size
            feats.append(extract_features(extractor, fid_sized(batch, args.fid_size), device=args.device))
        ref_feats = torch.cat(feats)

    scorers = []
    if acc_kind == "testbed":
        from ..testbed.scorers import load_prompt_accuracy

        scorers.append(load_prompt_accuracy(args.prompt_accuracy_dir or args.testbed_dir, args.device))
    if args.clip_model != "none":
        pretrained = None if args.clip_pretrained == "random" else args.clip_pretrained
        try:
            scorers.append(ClipScorer(ClipScoreConfig(args.clip_model, pretrained, args.device)))
        except (RuntimeError, ValueError, OSError) as err:
            parser.error(f"--clip-model {args.clip_model} --clip-pretrained {args.clip_pretrained}: {err}")

    from ..hub import model_location

    pipe = load_pipeline(model_location(args.model), args.kind, args.device, dtype_from_name(args.dtype, "--dtype"),
                         args.timestep_spacing)
    call = {} if args.negative_prompt is None else {"negative_prompt": args.negative_prompt}
    call |= {"cfg_scale": args.cfg_scale} if args.cfg_scale != 1.0 else {}
    config = EvalConfig(steps=tuple(args.steps), guidance_scales=tuple(args.guidance), batch_size=args.batch_size,
                        seed=args.seed, grid_prompts=args.grid_prompts, call_kwargs=call,
                        chunk_images=args.chunk_images, fid_image_size=fid_size)
    reference = None if args.reference is None else {
        "path": str(args.reference), "split": args.split, "num_images": len(ref_rows),
        "fid_image_size": fid_size, "protocol": _protocol(args.reference)}
    meta = {"model": args.model, "kind": args.kind, "reference": reference,
            "timestep_spacing": None if args.kind == "lcm" else args.timestep_spacing}
    report = run_evaluation(pipe, prompts, config, args.out, extractor, ref_feats, scorers, meta)
    rows = [{k: r.__dict__[k] for k in ("steps", "guidance_scale", "fid", "scores")} for r in report.results]
    print(json.dumps(rows, indent=1))
    print(f"[evaluate] wrote {Path(args.out) / 'report.json'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
