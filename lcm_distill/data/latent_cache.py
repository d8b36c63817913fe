"""Latent and text-embedding cache: the VAE posterior (mean, std) and the text-encoder states, in safetensors shards.

Training samples a fresh latent mean + std * eps each step (as without the cache), so caching the posterior loses
nothing but the random crop/flip, which cannot be cached: the cache fixes center crop and no flip, and a run reading
it must say so (data.center_crop=true, data.random_flip=false; the config validator insists).

Layout of ``cache_dir``: ``latents-r<rank>-<n>.safetensors`` (tensors latent_mean, latent_std, prompt_embeds, and
for SDXL pooled_embeds and time_ids - the centre crop's size/crop conditioning; the samples' keys and captions in
the header metadata), ``part-r<rank>.json`` per writing process, and ``manifest.json``
(written last, by rank 0: every file, the sample count and the key). The key records what produced the cache: VAE
and text-encoder config hashes and weight samples, the tokenizer, resolution, interpolation and the fixed crop/flip.
A run whose models or transforms give another key is refused, naming the fields that differ. Weights are compared
to within bf16 rounding, so a cache encoded with frozen bf16/fp16 encoders serves an fp32 run of the same
checkpoint (and back); the dtypes it was encoded in are recorded and a difference is logged, not refused.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..functional import dtype_from_name

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
TRANSFORM_VERSION = 1  # bump when prepare_image changes what a cached sample means
MANIFEST = "manifest.json"
WEIGHT_RTOL = 4e-3  # about 2 bf16 half-ulps: the same checkpoint in fp32/bf16/fp16 agrees, a fine-tune does not


class CacheKeyError(ValueError):
    """The cache was built by other models/transforms than the run's; the message names the fields."""


def cache_data_config(cfg):
    """The data config a cache is built with: the run's, with crop/flip fixed to center / none."""
    return dataclasses.replace(cfg, center_crop=True, random_flip=False)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _config_digest(config: Any) -> str:
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    skip = {"transformers_version", "torch_dtype", "dtype", "architectures"}  # saving metadata, not the network
    return _digest({k: v for k, v in d.items() if not k.startswith("_") and k not in skip})


def weights_sample(module: nn.Module, per_tensor: int = 8) -> dict[str, list[float]]:
    """``per_tensor`` evenly spaced values of every tensor (plus its shape): tells checkpoints apart, in ms, while
    a hash could not survive a dtype cast of the same checkpoint."""
    out = {}
    for name, t in sorted(module.state_dict().items()):
        flat = t.detach().reshape(-1)
        values = flat[:: max(1, flat.numel() // per_tensor)][:per_tensor].to("cpu", torch.float64).tolist()
        out[f"{name}{list(t.shape)}"] = [float(f"{v:.6g}") for v in values]
    return out


def _same_weights(a: Any, b: Any) -> bool:
    if not isinstance(a, dict) or not isinstance(b, dict) or a.keys() != b.keys():
        return False
    return all(abs(x - y) <= WEIGHT_RTOL * abs(x) + 1e-6 for k in a for x, y in zip(a[k], b[k], strict=True))


def encoder_dtypes(vae: nn.Module, text_encoder: nn.Module) -> dict[str, str]:
    return {"vae": str(next(vae.parameters()).dtype), "text_encoder": str(next(text_encoder.parameters()).dtype)}


def _tokenizer_digest(tokenizer: Any) -> str:
    probe = ["a photo of an astronaut riding a horse", "Ünïcode, numbers 12345 & punctuation!?", "x " * 100]
    ids = tokenizer(probe, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids
    vocab = sorted(tokenizer.get_vocab().items())
    return _digest([type(tokenizer).__name__, tokenizer.model_max_length, ids, _digest(vocab)])


def cache_key(vae: nn.Module, text_encoder: nn.Module, tokenizer: Any, data_cfg,
              text_encoder_2: nn.Module | None = None, tokenizer_2: Any = None) -> dict[str, Any]:  # fmt: skip
    """What a cached sample depends on; matching keys mean the same cached tensors up to the encoders' precision.
    SDXL's second encoder and tokenizer add their own fields (an SD key has none, so SD caches keep their key)."""
    second = {} if text_encoder_2 is None else {
        "text_encoder_2.config": _config_digest(text_encoder_2.config),
        "text_encoder_2.weights": weights_sample(text_encoder_2),
        "tokenizer_2": _tokenizer_digest(tokenizer_2),
    }  # fmt: skip
    return {**second,
        "vae.config": _config_digest(vae.config),
        "vae.weights": weights_sample(vae),
        "text_encoder.config": _config_digest(text_encoder.config),
        "text_encoder.weights": weights_sample(text_encoder),
        "tokenizer": _tokenizer_digest(tokenizer),
        "resolution": str(data_cfg.resolution),
        "interpolation": data_cfg.interpolation,
        "crop": "center",
        "flip": "none",
        "transform_version": str(TRANSFORM_VERSION),
    }


def check_key(cached: dict[str, Any], run: dict[str, Any], where: str) -> None:
    bad = []
    for k in sorted(set(cached) | set(run)):
        if k.endswith(".weights"):
            if not _same_weights(cached.get(k), run.get(k)):
                bad.append(f"{k} (other weights or architecture than the cache was encoded with)")
        elif cached.get(k) != run.get(k):
            bad.append(f"{k} (cache {cached.get(k)!r}, run {run.get(k)!r})")
    if bad:
        raise CacheKeyError(
            f"data.cache_dir={where} was built with other models or transforms than this run; differing fields: "
            f"{'; '.join(bad)}. Rebuild it (python -m lcm_distill.cli.cache --config ... --out DIR) or fix the run."
        )


class CacheWriter:
    """One process's part of a cache: buffered samples flushed into safetensors files of ``shard_size``."""

    def __init__(self, out_dir: str | Path, rank: int, dtype: str = "fp16", shard_size: int = 1024) -> None:
        self.out, self.rank, self.shard_size = Path(out_dir), rank, shard_size
        self.dtype = dtype_from_name(dtype, "cache --dtype")
        self.dtype_name = dtype
        self.out.mkdir(parents=True, exist_ok=True)
        self.files: list[dict] = []
        self._rows: list[tuple[Tensor, Tensor, Tensor, str, str]] = []

    def add(self, mean: Tensor, std: Tensor, embeds: Tensor, keys: list[str], captions: list[str],
            pooled: Tensor | None = None, time_ids: Tensor | None = None) -> None:  # fmt: skip
        """One batch: posterior, text hidden states and, for SDXL, the pooled embeddings and time ids."""
        extra = {} if pooled is None else {"pooled_embeds": pooled.cpu(), "time_ids": time_ids.cpu()}
        for i, row in enumerate(zip(mean.cpu(), std.cpu(), embeds.cpu(), keys, captions, strict=True)):
            self._rows.append((*row, {k: v[i] for k, v in extra.items()}))
            if len(self._rows) == self.shard_size:
                self._flush()

    def _flush(self) -> None:
        from safetensors.torch import save_file

        if not self._rows:
            return
        mean, std, emb, keys, caps, extra = zip(*self._rows, strict=True)
        name = f"latents-r{self.rank:04d}-{len(self.files):05d}.safetensors"
        tensors = {"latent_mean": torch.stack(mean), "latent_std": torch.stack(std), "prompt_embeds": torch.stack(emb)}
        tensors |= {k: torch.stack([e[k] for e in extra]) for k in extra[0]}  # SDXL: pooled_embeds, time_ids
        # time ids are pixel counts (up to thousands): fp16 would round them, so they stay fp32
        save_file({k: v.to(torch.float32 if k == "time_ids" else self.dtype).contiguous() for k, v in tensors.items()},
                  str(self.out / name),
                  metadata={"keys": json.dumps(keys), "captions": json.dumps(caps)})  # fmt: skip
        self.files.append({"name": name, "count": len(keys)})
        self._rows = []

    def close(self, key: dict[str, str], info: dict) -> Path:
        self._flush()
        part = self.out / f"part-r{self.rank:04d}.json"
        part.write_text(json.dumps({"rank": self.rank, "key": key, "dtype": self.dtype_name, "files": self.files,
                                    **info}, indent=1))  # fmt: skip
        return part


def finalize_cache(out_dir: str | Path, world: int, extra: dict | None = None) -> dict:
    """Merge the ``world`` part files into manifest.json (rank 0, after every process closed its writer)."""
    out = Path(out_dir)
    parts = [json.loads((out / f"part-r{r:04d}.json").read_text()) for r in range(world)]
    key = parts[0]["key"]
    for p in parts[1:]:
        check_key(key, p["key"], f"{out} (rank {p['rank']} vs rank 0)")
    files = [f for p in parts for f in p["files"]]
    manifest = {
        "format": CACHE_FORMAT, "key": key, "dtype": parts[0]["dtype"], "world": world, "files": files,
        "encoder_dtypes": parts[0].get("encoder_dtypes"),
        "samples": sum(f["count"] for f in files),
        "skipped_samples": sum(p.get("skipped_samples", 0) for p in parts),
        "filtered_samples": sum(p.get("filtered_samples", 0) for p in parts),
        "lost_shards": [s for p in parts for s in p.get("lost_shards", [])],  # read errors: their rest is missing
        "transforms": "center crop, no flip (random crop/flip cannot be cached)", **(extra or {}),
    }  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


class CachedLatents(torch.utils.data.Dataset):
    """Map-style view of a cache (so ResumableBatches gives exact resume and rank sharding, as for images)."""

    def __init__(self, cache_dir: str | Path, run_key: dict[str, Any] | None = None,
                 run_dtypes: dict[str, str] | None = None, open_files: int = 32) -> None:  # fmt: skip
        self.dir = Path(cache_dir)
        path = self.dir / MANIFEST
        if not path.is_file():
            hint = " (parts exist: a cache command did not finish)" if list(self.dir.glob("part-r*.json")) else ""
            raise FileNotFoundError(f"data.cache_dir={cache_dir}: no {MANIFEST}{hint}; build the cache with "
                                    "python -m lcm_distill.cli.cache --config ... --out DIR.")  # fmt: skip
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != CACHE_FORMAT:
            raise CacheKeyError(f"data.cache_dir={cache_dir}: cache format {self.manifest.get('format')} is not "
                                f"{CACHE_FORMAT}; rebuild it.")  # fmt: skip
        if run_key is not None:
            check_key(self.manifest["key"], run_key, str(cache_dir))
        encoded = self.manifest.get("encoder_dtypes")
        if run_dtypes is not None and encoded != run_dtypes:
            logger.warning(
                "data.cache_dir=%s was encoded with %s encoders; this run's are %s (model.frozen_dtype): "
                "same checkpoints, latents differ only by that rounding",
                cache_dir,
                encoded,
                run_dtypes,
            )
        self.files = [f["name"] for f in self.manifest["files"]]
        self.starts = [0]
        for f in self.manifest["files"]:
            self.starts.append(self.starts[-1] + f["count"])
        self.open_files = open_files
        self._handles: OrderedDict[str, tuple[Any, list[str]]] = OrderedDict()

    def __len__(self) -> int:
        return self.starts[-1]

    def _handle(self, name: str) -> tuple[Any, list[str]]:
        """safetensors handles (memory-mapped) of recently read files, per process (DataLoader workers too)."""
        from safetensors import safe_open

        if name in self._handles:
            self._handles.move_to_end(name)
        else:
            f = safe_open(str(self.dir / name), framework="pt")
            self._handles[name] = (f, json.loads((f.metadata() or {}).get("captions", "[]")))
            if len(self._handles) > self.open_files:
                self._handles.popitem(last=False)
        return self._handles[name]

    def __getitem__(self, key: tuple[int, int] | int) -> dict:
        index = key[1] if isinstance(key, tuple) else key
        if not 0 <= index < len(self):
            raise IndexError(index)
        file = bisect.bisect_right(self.starts, index) - 1
        f, captions = self._handle(self.files[file])
        row = index - self.starts[file]
        names = f.keys()  # safetensors' handle (not a dict): + pooled_embeds, time_ids in SDXL caches
        out = {k: f.get_slice(k)[row : row + 1][0] for k in names}
        out["caption"] = captions[row] if row < len(captions) else ""
        return out
