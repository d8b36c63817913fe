"""What each registered data source is, as plain facts the config checks and the preflight read without importing
torch. :data:`lcm_distill.data.SOURCES` binds each kind to the function that opens it; tests/test_conventions.py
keeps the two registries' keys equal."""

from __future__ import annotations

from dataclasses import dataclass

DATASET_FILE_SUFFIXES = (".parquet", ".csv", ".json", ".jsonl")  # data.dataset as one file (data/hf.py's builders)
_DATASET_HINT = "give a Hugging Face dataset id or a local imagefolder/parquet."


@dataclass(frozen=True)
class SourceKind:
    streamed: bool  # shards read in order (StreamingBatches) rather than random access (ResumableBatches)
    location_key: str  # the data.* key that says where the data is: "dataset" (a path or hub id) | "shards"
    location_hint: str  # what to put there (said when it is empty)
    max_samples: bool = False  # data.max_samples applies (random access only)


# data.source -> facts. A new source: one line here, one in data.SOURCES, and its module (docs/extending.md).
SOURCE_KINDS: dict[str, SourceKind] = {
    "hf": SourceKind(streamed=False, location_key="dataset", location_hint=_DATASET_HINT, max_samples=True),
    "hf_streaming": SourceKind(streamed=True, location_key="dataset", location_hint=_DATASET_HINT),
    "webdataset": SourceKind(streamed=True, location_key="shards",
                             location_hint="give tar shards, e.g. /data/laion/{00000..01210}.tar."),
}  # fmt: skip


def sources_where(**facts: object) -> str:
    """The registered sources with these facts, as "a | b" (for error messages)."""
    return " | ".join(k for k, v in SOURCE_KINDS.items() if all(getattr(v, f) == x for f, x in facts.items()))
