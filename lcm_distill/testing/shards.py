"""LAION-style webdataset shards (jpg + txt + json per sample, as img2dataset writes them) for tests and demos.

Every shard holds the same nine kinds of sample, in order: readable ones, corrupt ones and ones the LAION filters
(:data:`FILTERS`) must reject, so a test can check what a reader delivers, skips and filters.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

# Nine kinds of sample, in this order in every shard. "good" json has a small stored width (img2dataset's resized
# image) but a large original one: the filters must read original_width first. "nojson" / "partialjson" lack the
# filtered fields and must pass.
KINDS = ("good", "badjpg", "small", "nojson", "noimage", "watermark", "partialjson", "badjson", "lowaes")
GOOD = {"good", "nojson", "partialjson"}
CORRUPT = {"badjpg", "noimage", "badjson"}
FILTERED = {"small", "watermark", "lowaes"}
FILTERS = {"min_width": 256, "min_height": 256, "max_pwatermark": 0.5, "min_aesthetic": 6.0}


def _jpeg(seed: int, size: tuple[int, int] = (20, 16)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _meta(kind: str) -> dict | None:
    full = {"original_width": 640, "original_height": 480, "width": 20, "height": 16, "pwatermark": 0.1,
            "aesthetic": 6.4, "caption": "from json"}  # fmt: skip
    return {
        "small": {**full, "original_width": 200},
        "watermark": {**full, "pwatermark": 0.9},
        "lowaes": {**full, "aesthetic": 5.1},
        "partialjson": {"status": "success", "error_message": None},
        "nojson": None,
    }.get(kind, full)


def write_shard(path: Path, start: int, kinds=KINDS) -> list[tuple[str, str]]:
    """One tar shard; returns (key, kind) of its samples in order."""
    out = []
    with tarfile.open(path, "w") as tar:
        for j, kind in enumerate(kinds):
            key = f"{start + j:06d}"
            files: dict[str, bytes] = {"txt": f"caption {key}".encode()}
            if kind != "noimage":
                files["jpg"] = b"\xff\xd8\xff garbage" if kind == "badjpg" else _jpeg(start + j)
            meta = _meta(kind)
            if kind == "badjson":
                files["json"] = b"{not json"
            elif meta is not None:
                files["json"] = json.dumps(meta).encode()
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            out.append((key, kind))
    return out


def write_shards(out_dir: str | Path, n: int = 3) -> dict[str, str]:
    """``n`` shards shard-000.tar ...; returns {key: kind} of every sample."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, str] = {}
    for s in range(n):
        kinds.update(write_shard(out / f"shard-{s:03d}.tar", 100 * s))
    return kinds


def keys_of(kinds: dict[str, str], wanted: set[str]) -> set[str]:
    """Keys of the samples of the wanted kinds."""
    return {k for k, kind in kinds.items() if kind in wanted}
