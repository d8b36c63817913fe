"""What a UNet is conditioned on besides (x, t), as data: one record for every model family.

SD 1.x / 2.x condition the UNet on one text encoder's last hidden state (``encoder_hidden_states``). SDXL adds
``added_cond_kwargs``: the pooled, projected embedding of its second text encoder (``text_embeds``) and six "micro-
conditioning" numbers per sample (``time_ids`` = original size (h, w), crop top-left (top, left), target size
(h, w); SDXL report, section 2.2), and its cross-attention context is the two encoders' penultimate hidden states
side by side. The consistency step, the teacher's CFG pair and the target only ever pass a :class:`Conditioning`
through (``unet(x, t, **cond.unet_kwargs(dtype))``), so LCD, LCF, LoRA, omega-conditioning and every solver work
for SDXL with no SDXL-only fork of the step.

The unconditional branch of classifier-free guidance follows each family's inference convention: SD encodes the
empty prompt; SDXL uses zeros for both the hidden states and the pooled embedding with the sample's own time ids
(``force_zeros_for_empty_prompt`` in the SDXL pipeline's config, and what diffusers' SDXL LCM scripts train with).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Conditioning:
    """Per-sample UNet conditioning: ``hidden`` (B, L, D); for SDXL also ``pooled`` (B, P) and ``time_ids`` (B, 6)."""

    hidden: Tensor
    pooled: Tensor | None = None
    time_ids: Tensor | None = None

    def __len__(self) -> int:
        return self.hidden.shape[0]

    @property
    def added(self) -> bool:
        """Whether the UNet takes added (text, time) conditioning: SDXL."""
        return self.pooled is not None

    def unet_kwargs(self, dtype: torch.dtype | None = None) -> dict[str, Any]:
        """Keyword arguments of ``UNet2DConditionModel.forward`` (cast to ``dtype`` when given)."""

        def cast(t: Tensor) -> Tensor:
            return t if dtype is None else t.to(dtype)

        kwargs: dict[str, Any] = {"encoder_hidden_states": cast(self.hidden)}
        if self.added:
            kwargs["added_cond_kwargs"] = {"text_embeds": cast(self.pooled), "time_ids": cast(self.time_ids)}
        return kwargs

    def cat(self, other: Conditioning) -> Conditioning:
        """This batch followed by ``other`` (the teacher's [cond; uncond] forward)."""
        join = (lambda a, b: None if a is None else torch.cat([a, b]))  # noqa: E731
        return Conditioning(torch.cat([self.hidden, other.hidden]), join(self.pooled, other.pooled),
                            join(self.time_ids, other.time_ids))  # fmt: skip

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Conditioning:
        move = (lambda t: None if t is None else t.to(device, dtype))  # noqa: E731
        return Conditioning(move(self.hidden), move(self.pooled), move(self.time_ids))

    def with_time_ids(self, time_ids: Tensor | None) -> Conditioning:
        return replace(self, time_ids=time_ids)


SDXL_TIME_IDS = ("sample", "fixed")  # data.sdxl_time_ids: each sample's size/crop, or (r, r, 0, 0, r, r)


def sdxl_time_ids(original_size: Tensor, crop_top_left: Tensor, target_size: Tensor) -> Tensor:
    """SDXL's micro-conditioning (B, 6) in the pipeline's order: original (h, w), crop (top, left), target (h, w).
    Each argument is (B, 2) or (2,) (broadcast over the batch)."""
    parts = [torch.as_tensor(p, dtype=torch.float32) for p in (original_size, crop_top_left, target_size)]
    batch = max(p.shape[0] if p.ndim == 2 else 1 for p in parts)
    return torch.cat([p.expand(batch, 2) if p.ndim == 2 else p.view(1, 2).expand(batch, 2) for p in parts], dim=1)


def fixed_time_ids(n: int, resolution: int) -> Tensor:
    """Micro-conditioning of a square crop taken from an image already at ``resolution``: (r, r, 0, 0, r, r) - what
    diffusers' SDXL LCM scripts use with ``--use_fix_crop_and_size``."""
    r = float(resolution)
    return sdxl_time_ids(torch.tensor([r, r]), torch.tensor([0.0, 0.0]), torch.tensor([r, r])).expand(n, 6).clone()


@torch.no_grad()
def encode_prompts(tokenizer: Any, text_encoder: nn.Module, captions: list[str]) -> Tensor:
    """Text-encoder hidden states (B, 77, D) for the captions, padded to the tokenizer's max length.

    Module-level (not only a method) so the latent cache (lcm_distill.cli.cache) encodes exactly as training.
    """
    ids = tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    device = next(text_encoder.parameters()).device
    return text_encoder(ids.to(device))[0].float()  # fp32 for the student; teacher_pair casts back


class TextStack:
    """A family's text encoders and tokenizers: captions -> :class:`Conditioning` (hidden, pooled; no time ids).

    One encoder (SD 1.x / 2.x): its last hidden state. Two (SDXL): both encoders' penultimate hidden states
    concatenated on the feature axis, and the last encoder's projected pooled output (``text_embeds``).
    """

    def __init__(self, tokenizers: list[Any], encoders: list[nn.Module]) -> None:
        if len(tokenizers) != len(encoders) or len(encoders) not in (1, 2):
            raise ValueError(f"a text stack has one or two (tokenizer, encoder) pairs, got {len(encoders)}")
        self.tokenizers, self.encoders = tokenizers, encoders

    @property
    def dual(self) -> bool:
        return len(self.encoders) == 2

    @torch.no_grad()
    def encode(self, captions: list[str]) -> Conditioning:
        if not self.dual:
            return Conditioning(encode_prompts(self.tokenizers[0], self.encoders[0], captions))
        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.encoders, strict=True):
            ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids  # fmt: skip
            out = encoder(ids.to(next(encoder.parameters()).device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2].float())
            pooled = out[0].float()  # the last encoder's: CLIPTextModelWithProjection's text_embeds (B, P)
        return Conditioning(torch.cat(hidden, dim=-1), pooled)

    def unconditional(self, n: int) -> Conditioning:
        """The CFG branch without a prompt (module docstring): SD encodes "", SDXL uses zeros."""
        if not self.dual:
            return self.encode([""] * n)
        device = next(self.encoders[0].parameters()).device
        width = sum(int(e.config.hidden_size) for e in self.encoders)
        length = int(self.tokenizers[0].model_max_length)
        return Conditioning(torch.zeros(n, length, width, device=device),
                            torch.zeros(n, int(self.encoders[-1].config.projection_dim), device=device))  # fmt: skip
