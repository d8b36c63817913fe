"""Precompute the latent/text cache of a run's data: ``python -m lcm_distill.cli.cache --config FILE --out DIR``.

Reads the run's data source (data.source / dataset / shards / filters / resolution) and its frozen VAE, text encoder
and tokenizer (model.*, in model.frozen_dtype), and writes the VAE posterior mean and std and the text embeddings
(see lcm_distill.data.latent_cache for the layout and the key). Crop and flip are fixed to center / none, whatever the
config says. Under ``accelerate launch`` (or torchrun) every process encodes and writes its own part of the data;
rank 0 writes manifest.json when all are done. Train from it with ``--set data.cache_dir=DIR
data.center_crop=true data.random_flip=false``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from ..config import Config, ConfigError, load_config
from ..conventions import DTYPE_NAMES, dtype_arg
from ..objective_kinds import OBJECTIVE_KINDS

logger = logging.getLogger("lcm_distill.cli.cache")


def _map_style_batches(cfg, batch_size: int, rank: int, world: int, seed: int) -> Iterator[dict]:
    """Rows rank, rank + world, ... of a map-style source, in order (world 1: cache index == row index)."""
    from ..data import build_dataset, collate_skipping

    dataset = build_dataset(cfg, seed)
    rows = list(range(rank, len(dataset), world))
    filtered = getattr(dataset, "filtered_rows", 0) if rank == 0 else 0  # removed when opened: counted once
    chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]

    def collate(items: list[tuple[int, dict | None]]) -> dict:
        batch = collate_skipping([s for _, s in items])
        batch["keys"] = [str(i) for i, s in items if s is not None]
        batch["filtered"] = 0
        return batch

    if filtered:
        yield {"pixel_values": None, "skipped": 0, "filtered": filtered, "keys": [], "captions": []}

    loader = torch.utils.data.DataLoader(
        _Keyed(dataset), batch_sampler=chunks, collate_fn=collate, num_workers=cfg.num_workers
    )
    yield from loader


class _Keyed(torch.utils.data.Dataset):
    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, dict | None]:
        return index, self.dataset[(0, index)]


def write_part(cfg: Config, out: Path, rank: int, world: int, device: torch.device, dtype: str = "fp16",
               batch_size: int = 32, shard_size: int = 1024) -> dict:  # fmt: skip
    """Encode this process's share of the data into ``out``; returns its part record (also in part-r*.json)."""
    from ..conditioning import TextStack
    from ..data import StreamingBatches, shard_source
    from ..data.latent_cache import CacheWriter, cache_data_config, cache_key, encoder_dtypes
    from ..models import encode_images, load_frozen_encoders, load_second_encoder
    from ..source_kinds import SOURCE_KINDS

    data = cache_data_config(cfg.data)
    with_teacher = OBJECTIVE_KINDS[cfg.objective.kind].needs_teacher
    vae, text_encoder, tokenizer = load_frozen_encoders(cfg.model, with_teacher)
    text_encoder_2, tokenizer_2 = load_second_encoder(cfg.model, with_teacher)  # SDXL's, else None
    vae, text_encoder = vae.to(device), text_encoder.to(device)
    text_encoder_2 = text_encoder_2.to(device) if text_encoder_2 is not None else None
    text = TextStack.of(tokenizer, text_encoder, tokenizer_2, text_encoder_2)
    key = cache_key(vae, text_encoder, tokenizer, data, text_encoder_2, tokenizer_2)
    writer = CacheWriter(out, rank, dtype, shard_size)
    skipped = filtered = 0
    lost: list[str] = []
    if not SOURCE_KINDS[data.source].streamed:
        batches = _map_style_batches(data, batch_size, rank, world, cfg.train.seed)
    else:  # one pass over this rank's shards, in shard order (no shuffle)
        streaming = StreamingBatches(shard_source(data, cfg.train.seed), data, batch_size, rank, world, cfg.train.seed,
                                     data.num_workers)  # fmt: skip
        batches = streaming.batches(endless=False)
        lost = streaming.position.lost_shards  # filled as the batches are read
    for batch in batches:
        skipped += batch["skipped"]
        filtered += batch.get("filtered", 0)
        if batch["pixel_values"] is None:
            continue
        mean, std = encode_images(vae, batch["pixel_values"].to(device))
        cond = text.encode(batch["captions"])  # the training step's own encoding (lcm_distill/conditioning.py)
        time_ids = batch["time_ids"] if cond.added else None  # SDXL: the centre crop's size/crop conditioning
        writer.add(mean, std, cond.hidden, batch["keys"], batch["captions"], cond.pooled, time_ids)
    info = {"skipped_samples": skipped, "filtered_samples": filtered, "lost_shards": list(lost)}
    info["encoder_dtypes"] = encoder_dtypes(vae, text_encoder)
    writer.close(key, info)
    return {"rank": rank, "files": writer.files, **info}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lcm-distill-cache", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the training YAML whose data and frozen models to cache")
    p.add_argument("--out", required=True, help="cache folder (then train with data.cache_dir=DIR)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
                   help="override config keys (one or more per --set), as for training")
    p.add_argument("--dtype", type=dtype_arg, default="fp16", choices=DTYPE_NAMES,
                   help="storage dtype of the cached tensors (fp32 for bit-exact parity tests)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-size", type=int, default=1024, help="samples per safetensors file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cache in --out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # The run config may point data.cache_dir at the folder being built; reading the source is what we want.
        cfg = load_config(args.config, [*args.overrides, "data.cache_dir=null"])
        from ..engine.preflight import check_data, check_model_folder

        lcf_start = not OBJECTIVE_KINDS[cfg.objective.kind].needs_teacher and cfg.model.student
        source = cfg.model.student if lcf_start else cfg.model.teacher
        key = "model.student" if lcf_start else "model.teacher"
        check_model_folder(key, source, cfg.model.revision, ("vae", "text_encoder", "tokenizer"))
        check_data(cfg)
    except ConfigError as err:
        print(f"lcm-distill-cache: config error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from accelerate import PartialState

    cpu_group = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    state = PartialState(cpu=cpu_group)
    rank, world = state.process_index, state.num_processes
    if state.is_main_process:
        if (out / "manifest.json").exists() or list(out.glob("part-r*.json")):
            if not args.overwrite:
                print(f"lcm-distill-cache: {out} already holds a cache; pass --overwrite to replace it.",
                      file=sys.stderr)  # fmt: skip
                return 2
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    if cfg.data.random_flip or not cfg.data.center_crop:
        logger.warning("random crop/flip cannot be cached: this cache uses center crop and no flip")
    part = write_part(cfg, out, rank, world, state.device, args.dtype, args.batch_size, args.shard_size)
    logger.info("rank %d wrote %d samples", rank, sum(f["count"] for f in part["files"]))
    state.wait_for_everyone()
    if state.is_main_process:
        from ..data.latent_cache import finalize_cache

        extra = {
            "source": {k: getattr(cfg.data, k) for k in ("source", "dataset", "shards", "split")},
            "models": {"teacher": cfg.model.teacher, "vae": cfg.model.vae, "revision": cfg.model.revision},
        }
        manifest = finalize_cache(out, world, extra)  # fmt: skip
        print(f"cached {manifest['samples']} samples ({manifest['skipped_samples']} unreadable, "
              f"{manifest['filtered_samples']} filtered) in {len(manifest['files'])} files under {out}")  # fmt: skip
        for lost in manifest["lost_shards"]:
            print(f"lcm-distill-cache: warning: shard lost (read error; its rest is not cached): {lost}",
                  file=sys.stderr)  # fmt: skip
    state.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
