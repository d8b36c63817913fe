"""Hugging Face caches laid out as their libraries write them, for offline tests of hub ids.

- :func:`add_to_hub_cache`: huggingface_hub's cache (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``):
  ``models--ORG--NAME/blobs/<sha256>`` holding each file once, ``snapshots/<commit>/<path>`` as relative symlinks to
  the blobs, and ``refs/main`` naming the commit - what ``hf download`` or any ``from_pretrained`` online leaves.
- :func:`add_prepared_dataset`: the ``datasets`` cache (``HF_DATASETS_CACHE``) after an online
  ``load_dataset("ORG/NAME")``: ``ORG___NAME/default/0.0.0/<hash>/`` with ``dataset_info.json`` and
  ``NAME-<split>.arrow``, which ``load_dataset("ORG/NAME")`` reads offline. Built by preparing the same files with the
  parquet builder and filing them under the dataset's name, as datasets names them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def add_to_hub_cache(cache: str | Path, repo_id: str, folder: str | Path, repo_type: str = "model",
                     commit: str | None = None) -> Path:  # fmt: skip
    """File every file of ``folder`` as ``repo_id`` at ``commit`` (refs/main) in the hub cache ``cache``; returns
    the snapshot folder."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in files)).hexdigest()
    commit = commit or digest
    repo = Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for f in files:
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / f.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snapshot


def add_prepared_dataset(datasets_cache: str | Path, repo_id: str, split_files: dict[str, str | Path]) -> Path:
    """The prepared cache of Hub dataset ``repo_id`` whose splits are the parquet files ``split_files``
    ({split: file}); returns its folder."""
    import datasets

    work = Path(datasets_cache) / ".prepare"
    builder = datasets.load_dataset_builder("parquet", data_files={k: str(v) for k, v in split_files.items()},
                                            cache_dir=str(work))  # fmt: skip
    builder.download_and_prepare()
    prepared = Path(builder.cache_dir)
    org_name = repo_id.replace("/", "___")
    name = repo_id.rpartition("/")[2]
    target = Path(datasets_cache) / org_name / "default" / "0.0.0" / prepared.name
    target.mkdir(parents=True, exist_ok=True)
    for f in prepared.iterdir():
        if f.suffix == ".arrow":
            shutil.copy(f, target / f.name.replace("parquet-", f"{name}-", 1))
        elif f.name == "dataset_info.json":
            shutil.copy(f, target / f.name)
    shutil.rmtree(work, ignore_errors=True)
    return target


def captioned_parquet(folder: str | Path, rows: int, seed: int = 0, size: int = 16) -> Path:
    """``folder/data/train-00000-of-00001.parquet``: image bytes + text with datasets' features metadata, the layout
    of Hub datasets such as the Pokemon and Simpsons captions; returns the file."""
    import datasets

    from .img2dataset import jpeg

    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": [{"bytes": jpeg(seed * 100 + i, size), "path": None}
                                               for i in range(rows)],
                                     "text": [f"caption {i}" for i in range(rows)]}, features=features)  # fmt: skip
    out = Path(folder) / "data" / "train-00000-of-00001.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(out))
    return out
