"""Deterministic train/test split of a captioned dataset into two imagefolders (the LCM paper uses 90/10 for LCF).

    python -m lcm_distill.cli.split --dataset reach-vb/pokemon-blip-captions --out data/pokemon --test-fraction 0.1

writes ``<out>/train`` and ``<out>/test`` (PNG files + metadata.jsonl with ``file_name`` and ``text``), which
training (``data.dataset: <out>/train``) and evaluation
(``lcm-distill-evaluate --reference <out>/test``) read. The split depends only on
the dataset's row order, ``--seed`` and ``--test-fraction``: rerunning it reproduces the same files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import DataConfig
from ..data.batch import open_image
from ..data.hf import load_hf_dataset
from ..data.transforms import pick_caption, sample_rng


def split_indices(n: int, test_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """A seeded permutation cut at round(n * test_fraction); both parts sorted. Raises when a part would be empty."""
    import numpy as np

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"--test-fraction {test_fraction} must lie strictly between 0 and 1 (the paper uses 0.1).")
    n_test = round(n * test_fraction)
    if n_test == 0 or n_test == n:
        raise ValueError(f"{n} rows with --test-fraction {test_fraction} leaves an empty part; change the fraction.")
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[n_test:].tolist()), sorted(perm[:n_test].tolist())


def write_split(cfg: DataConfig, out: str | Path, test_fraction: float = 0.1, seed: int = 0) -> dict[str, int]:
    """Write the two imagefolders; unreadable rows are dropped and counted. Returns row counts per part."""
    rows = load_hf_dataset(cfg)
    train_idx, test_idx = split_indices(len(rows), test_fraction, seed)
    counts = {"train": 0, "test": 0, "skipped": 0}
    for part, idx in (("train", train_idx), ("test", test_idx)):
        folder = Path(out) / part
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "metadata.jsonl", "w", encoding="utf-8") as meta:
            for i in idx:
                row = rows[i]
                try:
                    image = open_image(row[cfg.image_column]).convert("RGB")
                except Exception:  # unreadable source row: leave it out of both parts
                    counts["skipped"] += 1
                    continue
                name = f"{i:06d}.png"
                image.save(folder / name)
                caption = pick_caption(row[cfg.caption_column], sample_rng(seed, 0, i))
                meta.write(json.dumps({"file_name": name, "text": caption}) + "\n")
                counts[part] += 1
    return counts


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (see the module docstring)."""
    p = argparse.ArgumentParser(prog="lcm-distill-split", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="Hugging Face dataset id or local imagefolder/parquet path")
    p.add_argument("--out", required=True, help="output folder; gets train/ and test/")
    p.add_argument("--config-name", default=None)
    p.add_argument("--split", default="train", help="source split to divide (default: train)")
    p.add_argument("--image-column", default="image")
    p.add_argument("--caption-column", default="text")
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = DataConfig(dataset=args.dataset, config_name=args.config_name, split=args.split,
                     image_column=args.image_column, caption_column=args.caption_column)  # fmt: skip
    from ..hub import HubUnavailable, dataset_location, is_local_path

    try:
        dataset_location(args.dataset, args.config_name)  # offline: from the Hub cache or datasets' own cache
    except HubUnavailable as err:
        print(f"lcm-distill-split: --dataset {args.dataset}: {err}", file=sys.stderr)
        return 2
    if is_local_path(args.dataset) and not Path(args.dataset).expanduser().exists():
        print(f"lcm-distill-split: --dataset {args.dataset}: no such file or folder.", file=sys.stderr)
        return 2
    try:
        counts = write_split(cfg, args.out, args.test_fraction, args.seed)
    except (ValueError, OSError, ConnectionError) as err:  # datasets' hub errors are OSError/ConnectionError
        print(f"lcm-distill-split: --dataset {args.dataset}: {err}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
