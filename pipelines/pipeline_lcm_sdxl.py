"""LCMXLPipeline: latent-consistency sampling of SDXL students in 1-8 steps, with negative prompts and real CFG.

Self-contained (torch, diffusers, transformers only), like ``pipeline_lcm.py``: the exporter copies it beside an SDXL
LCM's weights, and ``model_index.json`` keeps naming stock ``StableDiffusionXLPipeline``, so a folder or Hub repo
loads either way::

    DiffusionPipeline.from_pretrained(repo)                                     # stock: no negative prompts
    DiffusionPipeline.from_pretrained(repo, custom_pipeline="pipeline_lcm_sdxl", trust_remote_code=True)

Why a sibling and not stock: stock ``StableDiffusionXLPipeline`` turns classifier-free guidance off whenever the
UNet has ``time_cond_proj_dim`` (an omega-conditioned LCM), because it uses the one number ``guidance_scale`` both
as the embedded omega and as the CFG weight. Here they are two knobs, as in our SD ``LCMPipeline``:

- ``guidance_scale`` g: diffusers' convention; the student is conditioned on the paper's omega = g - 1 (default 8.5,
  diffusers' LatentConsistencyModelPipeline's). A UNet without the omega embedding (a merged LCM-LoRA) ignores it.
- ``cfg_scale`` c (default 1 = off, not a single extra operation): real CFG on the consistency model, one 2x batch of
  [negative; prompt] at the same omega, combined as out_neg + c * (out - out_neg) before the consistency step. The
  negative branch is ``negative_prompt`` when given, else SDXL's unconditional: zero embeddings
  (``force_zeros_for_empty_prompt``), what our engine trains the guided target with.

Everything else is stock SDXL: prompt encoding (both encoders, pooled embedding, LoRA scale, clip_skip), the size/
crop micro-conditioning time ids, latents, the LCMScheduler's step, the fp16 VAE upcast and latents_mean/std. With
c = 1 it draws what stock draws for the same arguments; a UNet without the omega embedding at c draws what stock
draws at guidance_scale = c (both tested to 1e-5).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from diffusers import LCMScheduler, StableDiffusionXLPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_output import StableDiffusionXLPipelineOutput

PIPELINE_FILE_NAME = "pipeline_lcm_sdxl.py"
STOCK_PIPELINE_CLASS = "StableDiffusionXLPipeline"
DEFAULT_GUIDANCE_SCALE = 8.5  # diffusers' LatentConsistencyModelPipeline default, as our SD LCMPipeline


class LCMXLPipeline(StableDiffusionXLPipeline):
    r"""Multistep latent-consistency sampling (LCM paper Alg. 3) for SDXL students; see the module docstring for the
    two guidance knobs. Components, loading and saving are StableDiffusionXLPipeline's; the scheduler must be an
    ``LCMScheduler`` (what the exporter writes)."""

    # what callback_on_step_end(pipe, i, t, tensors) may read and replace (the loop's names; under CFG the 2x batch)
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents", "prompt_embeds", "text_embeds", "time_ids"]

    @property
    def num_grid_points(self) -> int:
        """Training grid size N: the scheduler config's ``original_inference_steps`` (our export contract)."""
        return int(self.scheduler.config.get("original_inference_steps", 50) or 50)

    @property
    def has_omega_embedding(self) -> bool:
        """Whether the UNet takes the guidance embedding (``time_cond_proj_dim`` set in its config)."""
        return self.unet.config.get("time_cond_proj_dim") is not None

    def _check_lcm_inputs(self, guidance_scale: float | None, cfg_scale: float, negative: bool) -> None:
        """Raise ValueErrors that name the argument at fault and what to change (before any network runs)."""
        if not isinstance(self.scheduler, LCMScheduler):
            raise ValueError(
                f"the scheduler is {type(self.scheduler).__name__}; LCMXLPipeline samples with an LCMScheduler: "
                "pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)."
            )
        if guidance_scale is not None and guidance_scale != guidance_scale:
            raise ValueError("guidance_scale is NaN; use g >= 1 (1 means no guidance).")
        if cfg_scale != cfg_scale or cfg_scale < 1:
            raise ValueError(f"cfg_scale={cfg_scale} must be >= 1 (1 = off: no unconditional pass).")
        if negative and cfg_scale == 1:
            raise ValueError("negative_prompt / negative_prompt_embeds only act through real CFG: set cfg_scale > 1 "
                             "(e.g. 1.5-2 on top of the distilled guidance).")  # fmt: skip
        if guidance_scale is not None and guidance_scale < 1 and self.has_omega_embedding:
            warnings.warn(f"guidance_scale={guidance_scale} embeds omega = g - 1 < 0, which no LCM is trained on "
                          "(omega >= 0); g = 1 means no guidance.", stacklevel=3)  # fmt: skip
        if guidance_scale not in (None, 1) and not self.has_omega_embedding:
            warnings.warn(f"guidance_scale={guidance_scale} has no effect: this UNet has no omega embedding "
                          "(time_cond_proj_dim is None); use cfg_scale for guidance.", stacklevel=3)  # fmt: skip

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        prompt_2: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 4,
        timesteps: list[int] | None = None,
        guidance_scale: float | None = None,
        cfg_scale: float = 1.0,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_2: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
        clip_skip: int | None = None,
        callback_on_step_end: Callable[[Any, int, Any, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | tuple[str, ...] = ("latents",),
    ) -> StableDiffusionXLPipelineOutput | tuple:
        """Generate images. guidance_scale: omega = g - 1 for an omega-conditioned UNet (None: 8.5). cfg_scale,
        negative_prompt(_2), negative_(pooled_)prompt_embeds: real CFG (module docstring). original_size,
        crops_coords_top_left, target_size: SDXL's micro-conditioning (default (H, W), (0, 0), (H, W)).
        Returns StableDiffusionXLPipelineOutput(images)."""
        # 1. Check inputs (before any network runs): stock SDXL's checks, then the two guidance knobs
        height = height or self.default_sample_size * self.vae_scale_factor
        width = width or self.default_sample_size * self.vae_scale_factor
        original_size, target_size = original_size or (height, width), target_size or (height, width)
        self.check_inputs(prompt, prompt_2, height, width, None, negative_prompt, negative_prompt_2, prompt_embeds,
                          negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds,
                          callback_on_step_end_tensor_inputs=list(callback_on_step_end_tensor_inputs))  # fmt: skip
        negative = any(x is not None for x in (negative_prompt, negative_prompt_2, negative_prompt_embeds))
        self._check_lcm_inputs(guidance_scale, cfg_scale, negative)
        do_cfg = cfg_scale > 1
        # stock's properties (guidance_scale, cross_attention_kwargs, clip_skip) read these
        self._guidance_scale, self._clip_skip = cfg_scale, clip_skip
        self._cross_attention_kwargs = cross_attention_kwargs
        batch = 1 if isinstance(prompt, str) else len(prompt) if isinstance(prompt, list) else prompt_embeds.shape[0]
        total = batch * num_images_per_prompt
        device = self._execution_device

        # 2. Prompts (stock: both encoders, pooled embedding; zeros as the negative when none is given)
        lora_scale = (cross_attention_kwargs or {}).get("scale")
        prompt_embeds, negative_prompt_embeds, pooled, negative_pooled = self.encode_prompt(
            prompt=prompt, prompt_2=prompt_2, device=device, num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=do_cfg, negative_prompt=negative_prompt, negative_prompt_2=negative_prompt_2,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds, negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            lora_scale=lora_scale, clip_skip=clip_skip,
        )  # fmt: skip

        # 3. Timesteps on the training grid (LCMScheduler's choice), starting latents, time ids, omega embedding
        self.scheduler.set_timesteps(None if timesteps else num_inference_steps, device=device, timesteps=timesteps)
        schedule = self.scheduler.timesteps
        latents = self.prepare_latents(total, self.unet.config.in_channels, height, width, prompt_embeds.dtype,
                                       device, generator, latents)  # fmt: skip
        projection_dim = (int(pooled.shape[-1]) if self.text_encoder_2 is None
                          else self.text_encoder_2.config.projection_dim)  # fmt: skip
        time_ids = self._get_add_time_ids(original_size, crops_coords_top_left, target_size, dtype=prompt_embeds.dtype,
                                          text_encoder_projection_dim=projection_dim)  # fmt: skip
        text_embeds = pooled
        if do_cfg:  # one 2x forward per step: [negative; prompt] at the same omega
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
            text_embeds = torch.cat([negative_pooled, pooled])
            time_ids = torch.cat([time_ids, time_ids])
        prompt_embeds, text_embeds = prompt_embeds.to(device), text_embeds.to(device)
        time_ids = time_ids.to(device).repeat(total, 1)
        w_embedding = None
        if self.has_omega_embedding:
            g = DEFAULT_GUIDANCE_SCALE if guidance_scale is None else float(guidance_scale)
            omega = torch.tensor(g - 1).repeat(total * (2 if do_cfg else 1))
            w_embedding = self.get_guidance_scale_embedding(omega, embedding_dim=self.unet.config.time_cond_proj_dim)
            w_embedding = w_embedding.to(device=device, dtype=latents.dtype)

        # 4. Consistency sampling: one UNet call (2x batch under CFG) and one LCMScheduler step per timestep
        self._num_timesteps = len(schedule)
        self.scheduler.set_begin_index(0)
        with self.progress_bar(total=len(schedule)) as progress:
            for i, t in enumerate(schedule):
                x = torch.cat([latents, latents]) if do_cfg else latents
                model_output = self.unet(x, t, encoder_hidden_states=prompt_embeds, timestep_cond=w_embedding,
                                         cross_attention_kwargs=cross_attention_kwargs,
                                         added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids},
                                         return_dict=False)[0]  # fmt: skip
                if do_cfg:  # combined before the consistency step
                    out_neg, out_pos = model_output.chunk(2)
                    model_output = out_neg + cfg_scale * (out_pos - out_neg)
                latents = self.scheduler.step(model_output, t, latents, generator=generator, return_dict=False)[0]
                if callback_on_step_end is not None:
                    scope = locals()
                    out = callback_on_step_end(self, i, t, {k: scope[k] for k in callback_on_step_end_tensor_inputs})
                    out = out or {}
                    latents, prompt_embeds = out.get("latents", latents), out.get("prompt_embeds", prompt_embeds)
                    text_embeds, time_ids = out.get("text_embeds", text_embeds), out.get("time_ids", time_ids)
                progress.update()
        # LCMScheduler.step returns (x at the next timestep, denoised); its last step's x is the denoised sample
        return self._decode(latents, output_type, return_dict)

    def _decode(self, latents: torch.Tensor, output_type: str, return_dict: bool):
        """Stock SDXL's decode: the fp16 VAE upcast (force_upcast), latents_mean/std when the VAE has them."""
        if output_type == "latent":
            images = latents
        else:
            upcast = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
            if upcast:
                self.upcast_vae()
                latents = latents.to(next(iter(self.vae.post_quant_conv.parameters())).dtype)
            mean, std = getattr(self.vae.config, "latents_mean", None), getattr(self.vae.config, "latents_std", None)
            if mean is not None and std is not None:
                mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
                std = torch.tensor(std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
                latents = latents * std / self.vae.config.scaling_factor + mean
            else:
                latents = latents / self.vae.config.scaling_factor
            images = self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0]
            if upcast:
                self.vae.to(dtype=torch.float16)
            if self.watermark is not None:
                images = self.watermark.apply_watermark(images)
            images = self.image_processor.postprocess(images, output_type=output_type)
        self.maybe_free_model_hooks()
        return StableDiffusionXLPipelineOutput(images=images) if return_dict else (images,)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """diffusers' save, plus this file copied beside the weights, and ``model_index.json`` naming stock
        StableDiffusionXLPipeline, so that a plain ``DiffusionPipeline.from_pretrained`` needs no custom code.
        Upload the folder afterwards (``huggingface_hub.upload_folder``; the exporter's train.push_to_hub does)."""
        if kwargs.get("push_to_hub"):
            raise ValueError("save locally, then upload the folder (huggingface_hub.upload_folder): pushing from "
                             "save_pretrained would upload before this file and the stock class name are written.")
        super().save_pretrained(save_directory, **kwargs)
        shutil.copyfile(os.path.abspath(__file__), os.path.join(save_directory, PIPELINE_FILE_NAME))
        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        index["_class_name"] = STOCK_PIPELINE_CLASS
        with open(index_path, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")
