"""Sharded iterable sources (webdataset tars, streamed HF datasets) with a resumable, per-rank position.

Plan. A source has N shards. When N < world x workers, each shard is cut into ``parts`` virtual shards (part p keeps
the samples whose index i in the shard has i % parts == p), so every reader gets work. Epoch e visits a permutation
of the virtual shards seeded by (seed, e); rank r reads every world-th of it and its DataLoader worker w every W-th
of those, so no sample is read twice in an epoch. Each rank's stream is endless (epoch after epoch); ranks with one
shard more than others simply start their next epoch a little later.

Per worker: read shards in order -> metadata filters (cheap, before decoding) -> a shuffle buffer of raw records
(bytes, not tensors: 1000 decoded 512-px images would be 3 GB) -> decode + transform (corrupt images dropped and
counted) -> batches of B. Every batch also carries accounting: the ids (epoch, virtual shard, ordinal) it
delivers, the ids dropped since the previous batch, and which shards were read to the end with how many samples.

Position (:class:`ShardPosition`, per rank, in checkpoints). The main process applies a batch's accounting when it
hands the batch to the training loop, so the position says exactly which samples were consumed: per epoch the virtual
shards fully consumed, and for shards in flight a prefix length plus the few consumed ordinals beyond it (at most
about a shuffle buffer's worth). On resume, readers skip consumed shards and consumed samples.
Exact on resume: the set of samples each rank sees per epoch (nothing repeated, nothing lost) and each sample's
crop/flip/caption choice (seeded by its identity). Not exact: order and batch composition after the resume (the
shuffle buffer and prefetched batches are refilled from what is left), so losses are not bitwise those of an
uninterrupted run; skipped/filtered counters may count again a drop that sat in a prefetched batch. The shard list
and world size must be those of the saved run (checked); num_workers may change.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch

from .batch import DataError, Sample, StreamBatch, decode_sample, make_batch
from .filters import MetadataFilter
from .transforms import sample_rng

logger = logging.getLogger(__name__)

DECODE_FAILURE_LIMIT = 1000  # this many undecodable samples in a row on one reader means the data is broken


class ShardSource(Protocol):
    """Yields raw records {"key", "image", "caption", "meta", "error"} of one shard, in a fixed order."""

    urls: list[str]  # one URL per shard; the hash of their file names identifies the shard list in checkpoints

    def open(self, shard: int) -> Iterator[dict]: ...


@dataclass(frozen=True)
class ShardPlan:
    """Which virtual shards a rank reads in an epoch (module docstring)."""

    num_shards: int
    parts: int
    world: int
    seed: int

    @classmethod
    def build(cls, num_shards: int, world: int, num_workers: int, seed: int) -> ShardPlan:
        readers = world * max(1, num_workers)
        return cls(num_shards, 1 if num_shards >= readers else -(-readers // num_shards), world, seed)

    @property
    def num_virtual(self) -> int:
        return self.num_shards * self.parts

    def rank_shards(self, epoch: int, rank: int) -> list[int]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_virtual)
        return [int(v) for v in order[rank :: self.world]]

    def split(self, virtual: int) -> tuple[int, int]:
        """(real shard, part)."""
        return divmod(virtual, self.parts)

    def share_imbalance(self, num_workers: int) -> tuple[int, int]:
        """(fewest, most) virtual shards a reader (rank x loader worker) gets per epoch. Each reader cycles its own
        shards, so with unequal shares the shards of a small share are read most/fewest times as often."""
        workers = max(1, num_workers)
        per_rank = [len(range(r, self.num_virtual, self.world)) for r in range(self.world)]
        shares = [len(range(w, n, workers)) for n in per_rank for w in range(workers)]
        return min(shares), max(shares)


def fingerprint(urls: list[str]) -> str:
    """The shard list's identity in a data position: shard file names in order, not folders (a moved copy of the
    same shards resumes; data.webdataset.shard_name)."""
    from .webdataset import shard_name

    return hashlib.sha256("\n".join(shard_name(u) for u in urls).encode()).hexdigest()[:16]


def legacy_fingerprint(urls: list[str]) -> str:
    """Before 0.2.0 the whole URLs were hashed; such a checkpoint still resumes from the same URLs."""
    return hashlib.sha256("\n".join(urls).encode()).hexdigest()[:16]


@dataclass
class ShardPosition:
    """Consumed samples of one rank; see the module docstring for what is exact on resume."""

    plan: ShardPlan
    rank: int
    fingerprint: str
    legacy: str = ""  # the pre-0.2.0 fingerprint of the same list (accepted on load)
    epoch: int = 0  # oldest epoch with samples this rank has not consumed
    done: dict[int, set[int]] = field(default_factory=dict)  # epoch -> virtual shards fully consumed
    partial: dict[tuple[int, int], list] = field(default_factory=dict)  # (epoch, v) -> [prefix, extra, total]
    samples: int = 0  # delivered in batches
    skipped_samples: int = 0  # corrupt / unreadable (and unreadable shards)
    filtered_samples: int = 0  # rejected by the metadata filters, of the read_samples
    read_samples: int = 0  # taken from the shards by the readers, incl. read-ahead that fills the shuffle buffers
    missing_captions: int = 0  # delivered with an empty caption
    truncated_shards: int = 0  # shards whose read ended in an error (the rest of each is lost, count unknown)
    lost_shards: list[str] = field(default_factory=list)  # "name: error" of those shards (each once)
    upscaled_samples: int = 0  # delivered samples stored smaller than data.resolution

    def is_done(self, epoch: int, v: int) -> bool:
        return v in self.done.get(epoch, ()) or epoch < self.epoch

    def consume(self, epoch: int, v: int, k: int) -> None:
        if self.is_done(epoch, v):
            return
        entry = self.partial.setdefault((epoch, v), [0, set(), None])
        if k == entry[0]:
            entry[0] += 1
            while entry[0] in entry[1]:
                entry[1].discard(entry[0])
                entry[0] += 1
        elif k > entry[0]:
            entry[1].add(k)
        self._check(epoch, v)

    def finish(self, epoch: int, v: int, total: int) -> None:
        if not self.is_done(epoch, v):
            self.partial.setdefault((epoch, v), [0, set(), None])[2] = total
            self._check(epoch, v)

    def _check(self, epoch: int, v: int) -> None:
        prefix, _, total = self.partial[(epoch, v)]
        if total is None or prefix < total:
            return
        del self.partial[(epoch, v)]
        self.done.setdefault(epoch, set()).add(v)
        while set(self.plan.rank_shards(self.epoch, self.rank)) <= self.done.get(self.epoch, set()):
            self.done.pop(self.epoch, None)
            self.epoch += 1

    def apply(self, batch: StreamBatch) -> None:
        """The accounting of a batch handed to the training loop."""
        for e, v, k in (*batch["ids"], *batch["dropped"]):
            self.consume(e, v, k)
        for e, v, total in batch["finished"]:
            self.finish(e, v, total)
        self.samples += len(batch["ids"])
        self.skipped_samples += batch["skipped"]
        self.filtered_samples += batch["filtered"]
        self.read_samples += batch.get("read", 0)
        self.missing_captions += batch["missing_captions"]
        self.truncated_shards += batch["truncated"]
        self.upscaled_samples += batch.get("upscaled", 0)
        for lost in batch.get("lost", ()):
            if lost not in self.lost_shards:
                self.lost_shards.append(lost)

    def state_dict(self) -> dict:
        return {
            "kind": "shards", "fingerprint": self.fingerprint, "world": self.plan.world, "rank": self.rank,
            "parts": self.plan.parts, "epoch": self.epoch,
            "done": {e: sorted(vs) for e, vs in self.done.items()},
            "partial": [[e, v, p, sorted(x), t] for (e, v), (p, x, t) in sorted(self.partial.items())],
            "samples": self.samples, "skipped_samples": self.skipped_samples,
            "filtered_samples": self.filtered_samples, "read_samples": self.read_samples,
            "missing_captions": self.missing_captions,
            "truncated_shards": self.truncated_shards, "lost_shards": list(self.lost_shards),
            "upscaled_samples": self.upscaled_samples,
        }  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "shards":
            raise ValueError("the checkpoint's data position is from a map-style source (data.source=hf); resume "
                             "with the data.source it was trained with.")  # fmt: skip
        if state["fingerprint"] not in (self.fingerprint, self.legacy):
            raise ValueError("data.shards (or data.dataset) lists other shards than the checkpointed run; resume "
                             "with the same shard list, or start a new run.")  # fmt: skip
        if state["world"] != self.plan.world or state["rank"] != self.rank:
            raise ValueError(
                f"the data position was saved by rank {state['rank']} of {state['world']} processes; "
                f"this is rank {self.rank} of {self.plan.world}. Resume with the same process count."
            )
        self.plan = replace(self.plan, parts=int(state["parts"]))
        self.epoch = int(state["epoch"])
        self.done = {int(e): set(vs) for e, vs in state["done"].items()}
        self.partial = {(e, v): [p, set(x), t] for e, v, p, x, t in state["partial"]}
        self.samples, self.skipped_samples = int(state["samples"]), int(state["skipped_samples"])
        self.filtered_samples = int(state["filtered_samples"])
        self.read_samples = int(state.get("read_samples", 0))
        self.missing_captions = int(state.get("missing_captions", 0))
        self.truncated_shards = int(state.get("truncated_shards", 0))
        self.lost_shards = list(state.get("lost_shards", []))
        self.upscaled_samples = int(state.get("upscaled_samples", 0))


class _Accounting:
    """What a worker read and dropped since its last batch."""

    def __init__(self) -> None:
        self.dropped: list[tuple[int, int, int]] = []
        self.finished: list[tuple[int, int, int]] = []
        self.lost: list[str] = []
        self.skipped = self.filtered = self.truncated = self.read = 0

    def flush(self) -> dict:
        out = {"dropped": self.dropped, "finished": self.finished, "skipped": self.skipped, "filtered": self.filtered,
               "truncated": self.truncated, "lost": self.lost, "read": self.read}  # fmt: skip
        self.__init__()
        return out


def decode_record(record: dict, cfg, seed: int, epoch: int, shard: int, index: int) -> Sample | None:
    """Raw record -> sample (lcm_distill.data.batch.decode_sample), seeded by the sample's identity."""
    rng = sample_rng(seed, epoch, (shard << 32) + index)
    return decode_sample(record["image"], record.get("caption"), cfg, rng, record.get("key"), record.get("meta"))


class ShardStream(torch.utils.data.IterableDataset):
    """One rank's stream of accounted batches; runs inside DataLoader workers (see module docstring)."""

    def __init__(self, source: ShardSource, plan: ShardPlan, rank: int, cfg, batch_size: int, seed: int,
                 resume: ShardPosition | None = None, endless: bool = True) -> None:  # fmt: skip
        self.source, self.plan, self.rank, self.cfg, self.batch_size = source, plan, rank, cfg, batch_size
        self.seed, self.endless, self.filter = seed, endless, MetadataFilter.from_config(cfg)
        self.resume = resume
        self.shuffle_buffer = cfg.shuffle_buffer if endless else 0
        self._warned_buffer = False

    def _skip(self, epoch: int, v: int) -> Callable[[int], bool] | None:
        pos = self.resume
        if pos is None or epoch > max([pos.epoch, *pos.done, *(e for e, _ in pos.partial)]):
            return None
        if pos.is_done(epoch, v):
            return lambda k: True
        prefix, extra, _ = pos.partial.get((epoch, v), [0, set(), None])
        return lambda k: k < prefix or k in extra

    def _records(self, worker: int, workers: int, acc: _Accounting) -> Iterator[tuple]:
        epoch = self.resume.epoch if self.resume is not None else 0
        while True:
            mine = self.plan.rank_shards(epoch, self.rank)[worker::workers]
            if not mine:
                return
            fresh, passed = True, 0
            for v in mine:
                skip = self._skip(epoch, v)
                fresh = fresh and skip is None
                if skip is not None and self.resume.is_done(epoch, v):
                    continue  # consumed before the checkpoint: not even opened
                shard, part = self.plan.split(v)
                total = 0
                try:
                    for i, rec in enumerate(self.source.open(shard)):
                        if i % self.plan.parts != part:
                            continue
                        k, total = i // self.plan.parts, i // self.plan.parts + 1
                        if skip is not None and skip(k):
                            continue
                        acc.read += 1
                        if rec.get("error"):
                            acc.dropped.append((epoch, v, k))
                            acc.skipped += 1
                        elif self.filter.rejects(rec.get("meta")):
                            acc.dropped.append((epoch, v, k))
                            acc.filtered += 1
                        else:
                            passed += 1
                            yield (epoch, v, k, shard, i), rec
                except Exception as err:  # truncated / unreadable shard: what was read counts, the rest is lost
                    logger.warning("shard %s: %s; skipping the rest of it (counted in truncated_shards)",
                                   self.source.urls[shard], err)  # fmt: skip
                    acc.truncated += 1
                    acc.lost.append(f"{self.source.urls[shard]}: {err}")
                acc.finished.append((epoch, v, total))
            if self.shuffle_buffer > passed > 0 and not self._warned_buffer:
                self._warned_buffer = True
                logger.warning(
                    "data.shuffle_buffer=%d exceeds the %d samples this reader sees per epoch: the buffer mixes "
                    "about %d epochs. Lower data.shuffle_buffer (e.g. to %d) for per-epoch shuffling.",
                    self.shuffle_buffer, passed, -(-self.shuffle_buffer // passed), max(1, passed // 2),
                )  # fmt: skip
            if not self.endless:
                return
            if fresh and passed == 0:
                raise DataError(
                    f"rank {self.rank} worker {worker}: no sample of a whole epoch of its shards passed "
                    "the data.min_*/max_* filters or had an image; check data.shards and the filters."
                )
            epoch += 1

    def _shuffled(self, items: Iterator[tuple], rng: np.random.Generator) -> Iterator[tuple]:
        buf: list[tuple] = []
        for item in items:
            if len(buf) < self.shuffle_buffer:
                buf.append(item)
                continue
            j = int(rng.integers(len(buf)))
            buf[j], item = item, buf[j]
            yield item
        rng.shuffle(buf)
        yield from buf

    def __iter__(self) -> Iterator[StreamBatch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        acc = _Accounting()
        items = self._records(worker, workers, acc)
        if self.shuffle_buffer > 1:
            start = self.resume.epoch if self.resume is not None else 0
            items = self._shuffled(items, np.random.default_rng([self.seed, self.rank, worker, start, 1]))
        good: list[tuple] = []
        failures = 0
        for (epoch, v, k, shard, i), rec in items:
            sample = decode_record(rec, self.cfg, self.seed, epoch, shard, i)
            if sample is None:
                acc.dropped.append((epoch, v, k))
                acc.skipped += 1
                failures += 1
                if failures >= DECODE_FAILURE_LIMIT:
                    raise DataError(
                        f"{failures} samples in a row could not be decoded (last: {rec.get('key')} of "
                        f"{self.source.urls[shard]}); check data.shards / data.dataset."
                    )
                continue
            failures = 0
            good.append(((epoch, v, k), f"{self.source.urls[shard]}#{rec.get('key')}", sample))
            if len(good) == self.batch_size:
                yield _collate(good, acc)
                good = []
        if good or acc.dropped or acc.finished:  # finite mode: the last partial batch and the final accounting
            yield _collate(good, acc)


def _collate(good: list[tuple], acc: _Accounting) -> StreamBatch:
    acct = acc.flush()
    batch = make_batch([s for _, _, s in good], acct.pop("skipped"))
    return StreamBatch(**batch, ids=[i for i, _, _ in good], keys=[key for _, key, _ in good], **acct)


def _identity(batch: Any) -> Any:
    return batch


class StreamingBatches:
    """Endless iterator of one rank's batches from a sharded source; ``position`` advances as batches are handed out.

    Same interface as :class:`~lcm_distill.data.loader.ResumableBatches` (what the training loop uses).
    """

    def __init__(self, source: ShardSource, cfg, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, num_workers: int = 0) -> None:  # fmt: skip
        if not source.urls:
            raise DataError("the data source has no shards; check data.shards / data.dataset.")
        self.source, self.cfg, self.batch_size, self.seed, self.num_workers = source, cfg, batch_size, seed, num_workers
        plan = ShardPlan.build(len(source.urls), world_size, num_workers, seed)
        fewest, most = plan.share_imbalance(num_workers)
        if rank == 0 and fewest and most >= 1.25 * fewest:
            logger.warning(
                "%d shards over %d readers (%d processes x data.num_workers=%d): some readers get %d shards per "
                "epoch, others %d, and each cycles its own, so shards of the small shares are read up to %.1fx as "
                "often. Choose data.num_workers so that processes x workers divides %d, or add shards.",
                len(source.urls), world_size * max(1, num_workers), world_size, num_workers, most, fewest,
                most / fewest, plan.num_virtual,
            )  # fmt: skip
        self.position = ShardPosition(plan, rank, fingerprint(source.urls), legacy=legacy_fingerprint(source.urls))

    def stream(self, endless: bool = True) -> ShardStream:
        """The reader; it gets a snapshot of the position (what to skip), never the live one the loop updates."""
        pos = copy.deepcopy(self.position)
        return ShardStream(self.source, pos.plan, pos.rank, self.cfg, self.batch_size, self.seed, pos, endless)

    def batches(self, endless: bool = True) -> Iterator[StreamBatch]:
        """Batches with their accounting applied to ``position``; finite (one epoch, no shuffle) unless endless."""
        loader = torch.utils.data.DataLoader(
            self.stream(endless), batch_size=None, num_workers=self.num_workers, collate_fn=_identity
        )
        for batch in loader:
            self.position.apply(batch)
            yield batch
        if endless:
            raise DataError("every reader of this rank stopped: no shard has readable samples (data.shards).")

    def __iter__(self) -> Iterator[StreamBatch]:
        return self.batches(endless=True)
