"""Images from an LCM folder or Hub id: ``python -m lcm_distill.cli.generate`` / ``lcm-distill-generate``.

Example::

    lcm-distill-generate --model user/my-lcm --prompt "a red fox" --prompt "a castle" --steps 4 \\
        --guidance-scale 8.5 --seed 0 --num-images 2 --out samples/

``--out`` ending in ``.png`` names the file (several images get ``-<i>`` suffixes); anything else is a directory
that receives ``<prompt#>-<image#>-<slug>.png``. Bad flags exit with status 2 and a message naming the flag.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ..conventions import DEFAULT_GUIDANCE_SCALE, DTYPE_NAMES, dtype_arg


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (see the module docstring)."""
    p = argparse.ArgumentParser(prog="lcm-distill-generate", description="Sample 1-8 step images from an LCM.")
    p.add_argument("--model", required=True, help="diffusers folder or Hub id (e.g. user/my-lcm)")
    p.add_argument("--prompt", action="append", required=True, help="text prompt; repeat the flag for several")
    p.add_argument("--steps", type=int, default=4, help="consistency steps on the training grid (default 4)")
    p.add_argument("--timesteps", type=int, nargs="+", help="custom descending grid timesteps (overrides --steps)")
    p.add_argument(
        "--guidance-scale", type=float, default=None,
        help=f"diffusers guidance_scale g (ω = g - 1); default {DEFAULT_GUIDANCE_SCALE}"
    )
    p.add_argument("--negative-prompt", default=None, help="what to steer away from (needs --cfg-scale > 1)")
    p.add_argument("--cfg-scale", type=float, default=1.0,
                   help="real CFG on the consistency model, 2x UNet cost per step (default 1 = off)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the torch.Generator (default 0)")
    p.add_argument("--height", type=int, default=None, help="image height in pixels (default: the model's)")
    p.add_argument("--width", type=int, default=None, help="image width in pixels (default: the model's)")
    p.add_argument("--num-images", type=int, default=1, help="images per prompt (default 1)")
    p.add_argument(
        "--noise-fraction", type=float, default=1.0, help="fresh noise between steps: 1 LCM, 0 deterministic"
    )
    p.add_argument("--image", type=Path, default=None, help="input image for img2img")
    p.add_argument("--strength", type=float, default=None, help="img2img strength in (0, 1] (default 0.8)")
    p.add_argument("--out", type=Path, default=Path("samples"), help="output .png file or directory (default samples/)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", type=dtype_arg, choices=DTYPE_NAMES, default="fp32", help="weights dtype (default fp32)")
    return p


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag checks that need no model; each error names its flag."""
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: use at least 1 (1-8 is the LCM range).")
    if args.num_images < 1:
        parser.error(f"--num-images {args.num_images}: use at least 1.")
    if not 0.0 <= args.noise_fraction <= 1.0:
        parser.error(f"--noise-fraction {args.noise_fraction}: must lie in [0, 1] (0 deterministic, 1 LCM).")
    for flag in ("height", "width"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            parser.error(f"--{flag} {getattr(args, flag)}: use a positive size in pixels (a multiple of 8 for SD).")
    if args.guidance_scale is not None and not args.guidance_scale >= 1:
        parser.error(f"--guidance-scale {args.guidance_scale}: omega = g - 1 would be below 0, where no LCM is "
                     "trained; use g >= 1 (1 means no guidance).")  # fmt: skip
    if args.strength is not None and args.image is None:
        parser.error("--strength only applies to img2img: add --image PATH or drop --strength.")
    if args.strength is not None and not 0.0 < args.strength <= 1.0:
        parser.error(f"--strength {args.strength}: must lie in (0, 1].")
    if args.image is not None and not args.image.is_file():
        parser.error(f"--image {args.image}: no such file.")
    if any(not p.strip() for p in args.prompt):
        parser.error("--prompt: empty prompt; give some text.")
    from ..hub import HubUnavailable, is_local_path, model_location

    try:
        args.location = model_location(args.model)  # offline: the hub id's cached snapshot folder
    except HubUnavailable as err:
        parser.error(f"--model {args.model}: {err}")
    model = Path(args.location).expanduser()
    if is_local_path(args.location) and not model.is_dir():
        parser.error(f"--model {args.model}: neither a local folder nor a Hub id of the form owner/name.")
    if model.exists() and not (model / "model_index.json").is_file():
        parser.error(f"--model {args.model}: the folder has no model_index.json (not a diffusers pipeline folder).")


def init_image(args: argparse.Namespace):
    """The img2img input as RGB (None for txt2img)."""
    from PIL import Image

    return None if args.image is None else Image.open(args.image).convert("RGB")


def _output_paths(out: Path, prompts: Sequence[str], num_images: int) -> list[Path]:
    """One path per image, in the pipeline's order (each prompt's images together)."""
    if out.suffix.lower() == ".png":
        total = len(prompts) * num_images
        return [out] if total == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(total)]
    paths = []
    for p, prompt in enumerate(prompts):
        slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "image"
        paths += [out / f"{p:02d}-{i:02d}-{slug}.png" for i in range(num_images)]
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, load the pipeline, generate, save PNGs; returns the exit status (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)

    import torch

    from ..functional import dtype_from_name
    from ..models import read_family
    from ..pipelines import LCMPipeline, LCMXLPipeline

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        sdxl = read_family(args.location).name == "sdxl"
        dtype = {} if args.dtype == "fp32" else {"torch_dtype": dtype_from_name(args.dtype, "--dtype")}
        pipe = (LCMXLPipeline if sdxl else LCMPipeline).from_pretrained(args.location, **dtype)
    except (OSError, ValueError) as err:
        parser.error(f"--model {args.model}: could not load a diffusers pipeline ({err}).")
    sd_only = {"--image": args.image is not None, "--noise-fraction": args.noise_fraction != 1.0}
    if sdxl and any(sd_only.values()):
        flag = next(k for k, v in sd_only.items() if v)
        parser.error(f"{flag}: SDXL LCMs sample txt2img with the LCM sampler only (LCMXLPipeline); drop {flag}.")
    sampler = {} if sdxl else {"image": init_image(args), "strength": args.strength,
                               "noise_fraction": args.noise_fraction}  # fmt: skip
    pipe = pipe.to(device)
    strength = 1.0 if args.image is None else (0.8 if args.strength is None else args.strength)
    usable = int(pipe.num_grid_points * strength)
    if args.timesteps is None and args.steps > usable:
        parser.error(
            f"--steps {args.steps}: this model's training grid offers {usable} points"
            f"{'' if args.image is None else f' at --strength {strength}'}; use --steps {usable} or fewer."
        )
    for flag in ("height", "width"):
        value = getattr(args, flag)
        if value is not None and value % pipe.vae_scale_factor:
            parser.error(f"--{flag} {value}: use a multiple of this model's VAE factor {pipe.vae_scale_factor}.")
    try:
        images = pipe(
            prompt=list(args.prompt),
            height=args.height,
            width=args.width,
            num_inference_steps=args.steps,
            timesteps=args.timesteps,
            guidance_scale=args.guidance_scale,
            **sampler,
            negative_prompt=args.negative_prompt,
            cfg_scale=args.cfg_scale,
            num_images_per_prompt=args.num_images,
            generator=torch.Generator(device="cpu").manual_seed(args.seed),
        ).images
    except ValueError as err:
        parser.error(f"invalid generation settings: {err}")
    paths = _output_paths(args.out, args.prompt, args.num_images)
    for image, path in zip(images, paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
