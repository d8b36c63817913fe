"""Per-image latency of a diffusers text-to-image pipeline, split into text encoding, UNet and VAE decode.

The point of an LCM is fewer UNet calls, so a single wall-clock number hides what changed: at 1-4 steps the text
encoder and the VAE decoder become a visible share. Timing hooks wrap the three components of any SD-style
pipeline (``text_encoder``, ``unet``, ``vae.decode``) without touching its code; the remainder (scheduler,
latents, post-processing) is reported as ``other``. Every boundary synchronises the accelerator, so GPU kernels are
counted where they run rather than where they are queued.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch

COMPONENTS = ("text_encoder", "unet", "vae_decode")


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued accelerator work (CUDA / MPS); a no-op on CPU."""
    dev = torch.device(device) if device is not None else None
    if (dev is not None and dev.type == "cuda") or (dev is None and torch.cuda.is_available()):
        torch.cuda.synchronize(dev)
    elif dev is not None and dev.type == "mps":
        torch.mps.synchronize()


@dataclass
class LatencySplit:
    """Seconds per image, by component; ``calls`` counts forward calls per component over the timed run."""

    text_encoder_s: float = 0.0
    unet_s: float = 0.0
    vae_decode_s: float = 0.0
    other_s: float = 0.0
    total_s: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class LatencyMeter:
    """Accumulates component times while :meth:`attach` is active; :meth:`split` divides by the image count."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.seconds = dict.fromkeys(COMPONENTS, 0.0)
        self.calls = dict.fromkeys(COMPONENTS, 0)
        self.total = 0.0
        self.images = 0
        self._starts: dict[str, float] = {}

    def _start(self, name: str) -> None:
        synchronize(self.device)
        self._starts[name] = time.perf_counter()

    def _stop(self, name: str) -> None:
        synchronize(self.device)
        self.seconds[name] += time.perf_counter() - self._starts.pop(name)
        self.calls[name] += 1

    def _timed(self, name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            self._start(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stop(name)

        return wrapper

    @contextmanager
    def attach(self, pipe) -> Iterator[LatencyMeter]:
        """Install timing hooks on ``pipe``'s text encoder(s), UNet and VAE decoder for the duration of the block.

        Forward pre/post hooks time the two ``nn.Module`` calls; ``vae.decode`` is a method, not ``forward``, so it
        is shadowed by an instance attribute and restored afterwards.
        """
        handles = []
        for name, bucket in (("text_encoder", "text_encoder"), ("text_encoder_2", "text_encoder"), ("unet", "unet")):
            module = getattr(pipe, name, None)  # text_encoder_2: SDXL's second encoder, counted with the first
            if module is None:
                continue
            handles.append(module.register_forward_pre_hook(lambda *_, n=bucket: self._start(n)))
            handles.append(module.register_forward_hook(lambda *_, n=bucket: self._stop(n)))
        vae = getattr(pipe, "vae", None)
        patched = vae is not None and "decode" not in vars(vae)
        if patched:
            vae.decode = self._timed("vae_decode", vae.decode)
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            if patched:
                del vae.decode
            self._starts.clear()

    @contextmanager
    def run(self, num_images: int) -> Iterator[None]:
        """Time one pipeline call (the wall-clock total) that produces ``num_images`` images."""
        synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.total += time.perf_counter() - t0
            self.images += num_images

    def split(self) -> LatencySplit:
        n = max(1, self.images)
        parts = {k: v / n for k, v in self.seconds.items()}
        total = self.total / n
        return LatencySplit(
            text_encoder_s=parts["text_encoder"],
            unet_s=parts["unet"],
            vae_decode_s=parts["vae_decode"],
            other_s=max(0.0, total - sum(parts.values())),
            total_s=total,
            calls=dict(self.calls),
        )
