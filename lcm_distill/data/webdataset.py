"""webdataset tar shards (what img2dataset writes: ``<key>.jpg`` + ``<key>.txt`` + ``<key>.json`` per sample).

``data.shards`` takes local paths, brace patterns (``/data/laion/{00000..01210}.tar``), ``pipe:`` commands
(``pipe:aws s3 cp s3://bucket/{00000..00099}.tar -``) and http(s) URLs, several joined by ``::``; expansion and
opening use the webdataset package (``pip install webdataset``), reading and grouping are ours so that a truncated
tar or a sample without an image is skipped and counted instead of stopping the run.

Sample fields: the image is the first of jpg / jpeg / png / webp; the caption the first of txt / text / caption,
else the json's ``caption``; the json (if any) is the metadata the filters read (data.min_width, ...).
Rank/worker splitting, shuffling, decoding and the resumable position are in :mod:`lcm_distill.data.iterable`.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTS = ("txt", "text", "caption")


def expand_shards(pattern: str) -> list[str]:
    """``a::b{0..2}`` -> every shard URL, in order; local files must exist (a typo fails here, not mid-run)."""
    try:
        from webdataset.shardlists import expand_urls
    except ImportError as err:  # pragma: no cover - webdataset is a declared extra
        raise ImportError("data.source=webdataset needs webdataset: pip install webdataset") from err
    urls = [u.strip() for u in expand_urls(pattern) if u.strip()]
    if not urls:
        raise ValueError(f"data.shards={pattern!r} expands to no shard.")
    missing = [u for u in urls if _is_local(u) and not Path(u.removeprefix("file:")).is_file()]
    if missing:
        raise FileNotFoundError(
            f"data.shards={pattern!r}: {len(missing)} of {len(urls)} local shards do not exist, e.g. {missing[0]}."
        )
    return urls


def _is_local(url: str) -> bool:
    scheme = urlparse(url).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and url[1:3] in (":\\", ":/"))  # Windows drive letters


def _split_name(name: str) -> tuple[str, str] | None:
    """webdataset's convention: the key is the path up to the first dot of the file name, the rest the extension."""
    folder, _, base = name.rpartition("/")
    if "." not in base or base.startswith("__"):
        return None
    stem, ext = base.split(".", 1)
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _record(key: str, files: dict[str, bytes]) -> dict:
    meta, error = None, None
    if "json" in files:
        try:
            meta = json.loads(files["json"])
        except ValueError:
            error = "unreadable json"
    image = next((files[e] for e in IMAGE_EXTS if e in files), None)
    if image is None:
        error = error or f"no image ({'/'.join(IMAGE_EXTS)}) among {sorted(files)}"
    caption = next((files[e].decode("utf-8", "replace") for e in CAPTION_EXTS if e in files), None)
    if caption is None and isinstance(meta, dict):
        caption = meta.get("caption")
    return {"key": key, "image": image, "caption": caption, "meta": meta if isinstance(meta, dict) else None,
            "error": error}  # fmt: skip


def iter_tar(fileobj) -> Iterator[dict]:
    """Records of a tar stream, grouping consecutive members that share a key."""
    key, files = None, {}
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            if not member.isreg():
                continue
            split = _split_name(member.name)
            if split is None:
                continue
            if split[0] != key or split[1] in files:
                if key is not None:
                    yield _record(key, files)
                key, files = split[0], {}
            files[split[1]] = tar.extractfile(member).read()
    if key is not None:
        yield _record(key, files)


class TarShards:
    """A :class:`~lcm_distill.data.iterable.ShardSource` over webdataset tar shards."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.urls = expand_shards(pattern)

    def open(self, shard: int) -> Iterator[dict]:
        from webdataset import gopen

        stream = gopen(self.urls[shard])
        try:
            yield from iter_tar(stream)
        finally:
            stream.close()
