"""``python -m lcm_distill.testbed.render --out outputs/testbed-digits``: write the digits imagefolder (seconds).

The data is not committed: it is rendered deterministically from scikit-learn's bundled digits, byte-identical
on every machine with the same scikit-learn/Pillow, so training configs can point at the output folder.
"""

from __future__ import annotations

import argparse

from .digits import SPLITS, STYLES, DigitsConfig, write_imagefolder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lcm_distill.testbed.render", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/testbed-digits", help="imagefolder root (train/ and test/ inside)")
    p.add_argument("--size", type=int, default=DigitsConfig.size, help="image side in pixels (teachers: 16)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    p.add_argument("--style", default="plain", choices=list(STYLES),
                   help="plain = the teachers' data; inverted = an unseen style for LCF experiments")
    args = p.parse_args(argv)
    if args.size < 8:
        p.error(f"--size {args.size}: must be >= 8 (the source scans are 8x8)")
    root = write_imagefolder(args.out, DigitsConfig(size=args.size, style=args.style), splits=args.splits)
    for split in args.splits:
        n = len((root / split / "metadata.jsonl").read_text(encoding="utf-8").splitlines())
        print(f"[render] {root / split}: {n} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
