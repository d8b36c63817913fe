"""Deterministic, resumable, rank-sharded batching for map-style sources.

Epoch e visits a permutation seeded by (seed, e). Global micro-batch j of that epoch is
``perm[j*G : (j+1)*G]`` with G = per_device_batch * world_size, and rank r takes its r-th slice of B, so a run on
P processes sees exactly the samples of a 1-process run with batch G. The position is (epoch, micro-batches
consumed): stored in checkpoints, it makes a resumed run continue with the very next batch. The last incomplete
global batch of an epoch is dropped (every rank must step together).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .batch import Batch, DataError, Sample, make_batch


@dataclass
class DataPosition:
    epoch: int = 0
    batches: int = 0  # global micro-batches consumed in this epoch
    skipped_samples: int = 0  # unreadable/corrupt samples dropped so far (this rank)
    missing_captions: int = 0  # samples trained with an empty caption (missing or "" in the caption column)
    upscaled_samples: int = 0  # delivered samples stored smaller than data.resolution (enlarged)
    filtered_samples: int = 0  # rows the data.min_*/max_* filters removed when the dataset was opened (not per epoch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches": self.batches, "skipped_samples": self.skipped_samples,
                "missing_captions": self.missing_captions, "upscaled_samples": self.upscaled_samples,
                "filtered_samples": self.filtered_samples}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])
        self.skipped_samples = int(state.get("skipped_samples", 0))
        self.missing_captions = int(state.get("missing_captions", 0))
        self.upscaled_samples = int(state.get("upscaled_samples", 0))


class _EpochBatchSampler(torch.utils.data.Sampler):
    def __init__(self, n: int, epoch: int, start: int, batch: int, rank: int, world: int, seed: int) -> None:
        self.n, self.epoch, self.start, self.batch, self.rank, self.world, self.seed = (
            n, epoch, start, batch, rank, world, seed
        )  # fmt: skip

    def __len__(self) -> int:
        return self.n // (self.batch * self.world) - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        G = self.batch * self.world
        for j in range(self.start, self.n // G):
            lo = j * G + self.rank * self.batch
            yield [(self.epoch, i) for i in perm[lo : lo + self.batch]]


def collate_skipping(samples: list[Sample | None]) -> Batch:
    """Stack readable samples; count the unreadable ones (returned as None by the dataset)."""
    return make_batch(samples)


class ResumableBatches:
    """Endless iterator of this rank's batches; ``position`` advances as batches are handed out."""

    def __init__(
        self, dataset, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, num_workers: int = 0
    ) -> None:
        if len(dataset) < batch_size * world_size:
            raise ValueError(
                f"the dataset has {len(dataset)} usable rows, fewer than one global batch "
                f"({batch_size} x {world_size} processes); lower train.per_device_batch_size or add data."
            )
        self.dataset, self.batch_size, self.rank, self.world = dataset, batch_size, rank, world_size
        self.seed, self.num_workers = seed, num_workers
        self.position = DataPosition(filtered_samples=getattr(dataset, "filtered_rows", 0))

    def __iter__(self) -> Iterator[Batch]:
        while True:
            pos = self.position
            sampler = _EpochBatchSampler(
                len(self.dataset), pos.epoch, pos.batches, self.batch_size, self.rank, self.world, self.seed
            )
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=sampler, collate_fn=collate_skipping, num_workers=self.num_workers
            )
            seen_good = False
            for batch in loader:
                pos.batches += 1
                pos.skipped_samples += batch["skipped"]
                pos.missing_captions += batch["missing_captions"]
                pos.upscaled_samples += batch["upscaled"]
                seen_good = seen_good or len(batch["captions"]) > 0
                yield batch
            if not seen_good and sampler.start == 0:
                raise DataError(
                    f"no readable sample in a whole epoch of data.dataset ({pos.skipped_samples} unreadable so far): "
                    "check the files, e.g. python -c 'from PIL import Image; Image.open(PATH)'."
                )
            pos.epoch, pos.batches = pos.epoch + 1, 0
