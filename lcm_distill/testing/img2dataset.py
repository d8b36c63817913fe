"""What img2dataset (1.47) writes for LAION-Aesthetics, built here without the network: a folder of ``00000.tar``,
``00000.parquet`` and ``00000_stats.json`` per shard, tar members ``<9-digit key>.jpg / .txt / .json``, the json
holding img2dataset's own fields (url, key, status, width/height of the stored image, original_width/height) plus the
LAION columns kept with ``--save_additional_columns`` (similarity, punsafe, pwatermark, AESTHETIC_SCORE).

Images are stored at ``image_size`` (img2dataset's default is 256, below the 512 recipe: the upscaled case).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

LAION_COLUMNS = ("URL", "TEXT", "WIDTH", "HEIGHT", "similarity", "punsafe", "pwatermark", "AESTHETIC_SCORE", "hash")


def laion_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` rows with the LAION-Aesthetics columns; every third row has punsafe 0.95, every fourth pwatermark 0.9."""
    rng = np.random.default_rng(seed)
    return [
        {"URL": f"https://example.invalid/{i}.jpg", "TEXT": f"a photo number {i}", "WIDTH": 1024, "HEIGHT": 768,
         "similarity": 0.31, "punsafe": 0.95 if i % 3 == 0 else 0.01, "pwatermark": 0.9 if i % 4 == 0 else 0.05,
         "AESTHETIC_SCORE": float(6.0 + rng.random()), "hash": int(rng.integers(2**62))}
        for i in range(n)
    ]  # fmt: skip


def jpeg(seed: int, size: int) -> bytes:
    """A random JPEG whose shorter side is ``size`` (4:3 landscape)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size * 4 // 3, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def write_img2dataset_output(out_dir: str | Path, rows: list[dict], per_shard: int = 4,
                             image_size: int = 256) -> list[Path]:  # fmt: skip
    """The output folder of ``img2dataset --output_format webdataset --input_format parquet --url_col URL
    --caption_col TEXT --save_additional_columns '[similarity,hash,punsafe,pwatermark,AESTHETIC_SCORE]'``.
    Returns the tar paths. The stored image's shorter side is ``image_size``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tars = []
    for s in range(0, len(rows), per_shard):
        shard, chunk = s // per_shard, rows[s : s + per_shard]
        name = f"{shard:05d}"
        records = []
        with tarfile.open(out / f"{name}.tar", "w") as tar:
            for j, row in enumerate(chunk):
                key = f"{shard:05d}{j:04d}"
                meta = {"url": row["URL"], "caption": row["TEXT"], "key": key, "status": "success",
                        "error_message": None, "width": image_size * 4 // 3, "height": image_size,
                        "original_width": row["WIDTH"], "original_height": row["HEIGHT"], "exif": "{}",
                        "sha256": f"{row['hash']:064x}"[:64],
                        **{c: row[c] for c in ("similarity", "hash", "punsafe", "pwatermark", "AESTHETIC_SCORE")}}
                records.append(meta)
                for ext, data in (("jpg", jpeg(s + j, image_size)), ("txt", row["TEXT"].encode()),
                                  ("json", json.dumps(meta).encode())):  # fmt: skip
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        pq.write_table(pa.Table.from_pylist(records), out / f"{name}.parquet")
        stats = {"count": len(chunk), "successes": len(chunk), "failed_to_download": 0, "status_dict": {}}
        (out / f"{name}_stats.json").write_text(json.dumps(stats))
        tars.append(out / f"{name}.tar")
    return tars
