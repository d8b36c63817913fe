"""webdataset tar shards (what img2dataset writes: ``<key>.jpg`` + ``<key>.txt`` + ``<key>.json`` per sample).

``data.shards`` takes local paths, brace patterns (``/data/laion/{00000..01210}.tar``), a folder (its ``*.tar``:
img2dataset's output folder as it is), globs (``/data/laion/*.tar``), ``pipe:`` commands
(``pipe:aws s3 cp s3://bucket/{00000..00099}.tar -``) and http(s) URLs, several joined by ``::``; ``$VAR`` and
``${VAR}`` are read from the environment (a moved copy of the shards is one variable away). Expansion and opening use
the webdataset package (``pip install webdataset``), reading and grouping are ours so that a truncated tar or a
sample without an image is skipped and counted instead of stopping the run.

A shard's identity is its file name and (for local files) its size, not its folder: :func:`shard_identity` is what a
checkpoint records, so a run resumes from a moved copy of the same shards and refuses a different shard set.

Sample fields: the image is the first of jpg / jpeg / png / webp; the caption the first of txt / text / caption,
else the json's ``caption``; the json (if any) is the metadata the filters read (data.min_width, ...).
Rank/worker splitting, shuffling, decoding and the resumable position are in :mod:`lcm_distill.data.iterable`.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTS = ("txt", "text", "caption")


_UNSET_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
_GLOB = re.compile(r"[*?\[]")
_WDS_VAR = re.compile(r"\$\{(\w+)\}")


def _wds_lookup(m: re.Match) -> str:
    """webdataset's own form: ``${ROOT}`` reads WDS_ROOT; else the plain variable ROOT (os.path.expandvars)."""
    return os.environ.get(f"WDS_{m.group(1)}", m.group(0))


def expand_shards(pattern: str) -> list[str]:
    """``a::b{0..2}`` -> every shard URL, in order; local files must exist (a typo fails here, not mid-run).

    Per ``::`` part: environment variables are substituted; a local folder stands for its ``*.tar`` files and a
    glob for its matches (both sorted by name); anything else goes through webdataset's brace expansion.
    """
    try:
        from webdataset.shardlists import expand_urls
    except ImportError as err:  # pragma: no cover - webdataset is a declared extra
        raise ImportError("data.source=webdataset needs webdataset: pip install webdataset") from err
    urls: list[str] = []
    for part in (p.strip() for p in pattern.split("::")):
        if not part:
            continue
        expanded = os.path.expandvars(_WDS_VAR.sub(_wds_lookup, part))
        unset = _UNSET_VAR.search(expanded)
        if unset:
            raise ValueError(f"data.shards={pattern!r}: the environment variable {unset.group(1)} (or webdataset's "
                             f"WDS_{unset.group(1)}) is not set; export it or write the path out.")  # fmt: skip
        local = expanded.removeprefix("file:") if _is_local(expanded) else None
        if local is not None and Path(local).expanduser().is_dir():
            found = sorted(str(f) for f in Path(local).expanduser().glob("*.tar"))
            if not found:
                raise ValueError(f"data.shards={pattern!r}: the folder {local} holds no *.tar shard.")
            urls += found
        elif local is not None and _GLOB.search(local) and "{" not in local:
            found = sorted(glob.glob(os.path.expanduser(local)))
            if not found:
                raise ValueError(f"data.shards={pattern!r}: {local} matches no file.")
            urls += found
        else:
            urls += [u.strip() for u in expand_urls(expanded) if u.strip()]
    if not urls:
        raise ValueError(f"data.shards={pattern!r} expands to no shard.")
    missing = [u for u in urls if _is_local(u) and not Path(u.removeprefix("file:")).expanduser().is_file()]
    if missing:
        raise FileNotFoundError(
            f"data.shards={pattern!r}: {len(missing)} of {len(urls)} local shards do not exist, e.g. {missing[0]}."
        )
    return urls


def shard_name(url: str) -> str:
    """The file name of a shard URL or ``pipe:`` command (its last ``.tar`` argument), without the folder."""
    if url.startswith("pipe:"):
        args = [a for a in url[5:].split() if ".tar" in a]
        url = args[-1] if args else url
    return urlparse(url).path.rstrip("/").rpartition("/")[2] if not _is_local(url) else Path(url).name


def shard_identity(urls: list[str]) -> dict:
    """What a checkpoint records of a shard list: names in order and local sizes (None where not local)."""
    sizes = []
    for u in urls:
        path = Path(u.removeprefix("file:")).expanduser() if _is_local(u) else None
        sizes.append(path.stat().st_size if path is not None and path.is_file() else None)
    return {"names": [shard_name(u) for u in urls], "sizes": sizes}


def identity_difference(saved: dict, now: dict) -> str | None:
    """None when ``now`` is the same shard set as ``saved`` (same names in order, equal sizes where both are known),
    else what differs, for the error message."""
    a, b = saved["names"], now["names"]
    if len(a) != len(b):
        return f"{len(a)} shards were checkpointed, {len(b)} are listed now"
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return f"shard {i} was {x}, is {y} now"
    for i, (x, y) in enumerate(zip(saved.get("sizes") or [None] * len(a), now["sizes"], strict=True)):
        if x is not None and y is not None and x != y:
            return f"shard {i} ({a[i]}) had {x} bytes, has {y} now"
    return None


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
