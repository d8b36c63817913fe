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

    def with_time_ids(self, time_ids: Tensor | None) -> Conditioning:
        return replace(self, time_ids=time_ids)


SDXL_TIME_IDS = ("sample", "fixed")  # data.sdxl_time_ids: each sample's size/crop, or (r, r, 0, 0, r, r)


def time_ids(height: int, width: int, top: int, left: int, resolution: int) -> Tensor:
    """SDXL's micro-conditioning (6,) of one sample in the pipeline's order: original (h, w), crop (top, left),
    target (h, w) = (R, R) for the engine's square crops. The one place that order is written."""
    return torch.tensor([height, width, top, left, resolution, resolution], dtype=torch.float32)


def fixed_time_ids(n: int, resolution: int) -> Tensor:
    """(n, 6) of a square crop taken from an image already at ``resolution``: (r, r, 0, 0, r, r) - what diffusers'
    SDXL LCM scripts use with ``--use_fix_crop_and_size``."""
    return time_ids(resolution, resolution, 0, 0, resolution).repeat(n, 1)


def _token_ids(tokenizer: Any, captions: list[str]) -> Tensor:
    """Ids (B, 77) padded to the tokenizer's max length, as the SD / SDXL pipelines tokenize."""
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids  # fmt: skip


@torch.no_grad()
def encode_prompts(tokenizer: Any, text_encoder: nn.Module, captions: list[str]) -> Tensor:
    """Text-encoder hidden states (B, 77, D) for the captions (SD 1.x / 2.x: the last hidden state)."""
    device = next(text_encoder.parameters()).device
    return text_encoder(_token_ids(tokenizer, captions).to(device))[0].float()  # fp32; teacher_pair casts back


class TextStack:
    """A family's text encoders and tokenizers: captions -> :class:`Conditioning` (hidden, pooled; no time ids).

    One encoder (SD 1.x / 2.x): its last hidden state. Two (SDXL): both encoders' penultimate hidden states
    concatenated on the feature axis, and the last encoder's projected pooled output (``text_embeds``).
    """

    def __init__(self, tokenizers: list[Any], encoders: list[nn.Module]) -> None:
        if len(tokenizers) != len(encoders) or len(encoders) not in (1, 2):
            raise ValueError(f"a text stack has one or two (tokenizer, encoder) pairs, got {len(encoders)}")
        self.tokenizers, self.encoders = tokenizers, encoders

    @classmethod
    def of(cls, tokenizer: Any, encoder: nn.Module, tokenizer_2: Any = None, encoder_2: nn.Module | None = None
           ) -> TextStack:  # fmt: skip
        """The stack of a run's components: the second pair only when there is one (SDXL)."""
        if encoder_2 is None:
            return cls([tokenizer], [encoder])
        return cls([tokenizer, tokenizer_2], [encoder, encoder_2])

    @property
    def dual(self) -> bool:
        return len(self.encoders) == 2

    @torch.no_grad()
    def encode(self, captions: list[str]) -> Conditioning:
        if not self.dual:
            return Conditioning(encode_prompts(self.tokenizers[0], self.encoders[0], captions))
        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.encoders, strict=True):
            ids = _token_ids(tokenizer, captions).to(next(encoder.parameters()).device)
            out = encoder(ids, output_hidden_states=True)
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
