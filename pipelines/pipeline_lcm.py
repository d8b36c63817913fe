"""LCMPipeline: multistep latent-consistency sampling (txt2img and img2img) in 1-8 steps.

This file is self-contained on purpose (torch, diffusers, transformers only): ``save_pretrained`` copies it beside
the weights as ``pipeline_lcm.py`` so that anyone can run a model folder or Hub repo without installing lcm-distill::

    DiffusionPipeline.from_pretrained(repo, custom_pipeline="pipeline_lcm", trust_remote_code=True)

The saved ``model_index.json`` names diffusers' stock ``LatentConsistencyModelPipeline``, so the same folder also
loads with plain ``DiffusionPipeline.from_pretrained(repo)``. The omega embedding and the grid/timestep selection
below are copies of the canonical ``lcm_distill.functional`` ones; tests assert that the two agree exactly.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, LCMScheduler, UNet2DConditionModel
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer

PIPELINE_FILE_NAME = "pipeline_lcm.py"
STOCK_PIPELINE_CLASS = "LatentConsistencyModelPipeline"
STOCK_CLASS_WITHOUT_OMEGA = "StableDiffusionPipeline"  # + LCMScheduler: how stock diffusers runs LCM-LoRA UNets
DEFAULT_GUIDANCE_SCALE = 8.5  # diffusers' LatentConsistencyModelPipeline default
DEFAULT_IMG2IMG_STRENGTH = 0.8  # diffusers' LatentConsistencyModelImg2ImgPipeline default
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def skipping_grid(num_train_timesteps: int, num_points: int) -> list[int]:
    """Ascending training grid [k-1, 2k-1, ..., T-1], k = T // N (copy of ``SkippingGrid.timesteps``)."""
    if num_points < 1 or num_points > num_train_timesteps or num_train_timesteps % num_points:
        raise ValueError(
            f"original_inference_steps={num_points} (the training grid size N) must divide num_train_timesteps="
            f"{num_train_timesteps}; fix `original_inference_steps` in the scheduler config to the N used in training."
        )
    k = num_train_timesteps // num_points
    return [(i + 1) * k - 1 for i in range(num_points)]


def select_timesteps(num_train_timesteps: int, num_points: int, num_steps: int, strength: float = 1.0) -> list[int]:
    """Descending n-step schedule on the grid, as LCMScheduler.set_timesteps(n, strength=s) chooses it.

    Copy of ``SkippingGrid.inference_timesteps``: evenly spaced indices floor(i * usable / n) into the reversed first
    ``usable = int(N * strength)`` grid points.
    """
    grid = skipping_grid(num_train_timesteps, num_points)
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength={strength} must lie in (0, 1]; 1 means start from pure noise.")
    usable = int(num_points * strength)
    if num_steps < 1:
        raise ValueError(f"num_inference_steps={num_steps} must be at least 1; use 1-8 steps.")
    if usable < 1 or num_steps > usable:
        raise ValueError(
            f"num_inference_steps={num_steps} exceeds the {usable} grid points available "
            f"(num_points={num_points} x strength={strength}); use fewer steps or a larger strength."
        )
    grid = grid[:usable][::-1]
    step = usable / num_steps
    return [grid[math.floor(i * step)] for i in range(num_steps)]


def check_timesteps(num_train_timesteps: int, num_points: int, timesteps: list[int]) -> list[int]:
    """Validate custom timesteps: non-empty, on the training grid, strictly descending (copy of ``validate``)."""
    ts = [int(t) for t in timesteps]
    if not ts:
        raise ValueError("timesteps must not be empty.")
    grid = skipping_grid(num_train_timesteps, num_points)
    off = [t for t in ts if t not in set(grid)]
    if off:
        k = num_train_timesteps // num_points
        raise ValueError(
            f"timesteps {off} are not on the training grid (k={k}: {k - 1}, {2 * k - 1}, ..., "
            f"{num_train_timesteps - 1}); the student was trained only there."
        )
    if any(a <= b for a, b in itertools.pairwise(ts)):
        raise ValueError(f"timesteps {ts} must be strictly descending.")
    return ts


def guidance_scale_embedding(omega: torch.Tensor, dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embedding of omega (x1000; sin half, then cos half; odd dim zero-padded), fed as timestep_cond.

    Copy of ``lcm_distill.functional.omega_embedding``, bit-identical to diffusers' get_guidance_scale_embedding.
    """
    if omega.ndim != 1:
        raise ValueError(f"omega must be 1-D (one value per sample), got shape {tuple(omega.shape)}.")
    half = dim // 2
    if half < 2:
        raise ValueError(f"time_cond_proj_dim={dim} is too small for the omega embedding; use at least 4.")
    w = omega * 1000.0
    freq = torch.log(torch.tensor(10000.0)) / (half - 1)
    freq = torch.exp(torch.arange(half, dtype=dtype) * -freq)
    arg = w.to(dtype)[:, None] * freq[None, :].to(w.device)
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class LCMPipeline(DiffusionPipeline):
    r"""Latent Consistency Model sampling (LCM paper Alg. 3 = Consistency Models Alg. 1) for SD-style students.

    Guidance convention (lcm_distill/conventions.py, restated because this file runs alone): ``guidance_scale`` g
    means what it means in diffusers' ``StableDiffusionPipeline`` (``g * cond - (g - 1) * uncond``), so the student
    is conditioned on the paper's omega = g - 1. guidance_scale 8.5 embeds omega 7.5; g = 1 embeds omega 0. A UNet
    without ``time_cond_proj_dim`` (e.g. an LCM distilled as LoRA) gets no omega input: it samples without CFG and
    guidance_scale has no effect.

    Timesteps lie on the training grid of N = ``scheduler.config.original_inference_steps`` points (default 50,
    written by our exporter), chosen like diffusers' LCMScheduler (also for img2img ``strength``). Each step
    evaluates the consistency function D = c_skip(t) x_t + c_out(t) x0_hat and, unless it is the last step, moves to
    the next timestep s by x_s = alpha_s D + sigma_s n, where the noise n depends on ``noise_fraction`` (gamma):

        n = sqrt(1 - gamma) * eps_hat + sqrt(gamma) * z,   eps_hat = (x_t - alpha_t D) / sigma_t,  z ~ N(0, I).

    gamma = 1 (default) is LCM's sampler (fresh noise each step; identical to stock diffusers); gamma = 0 is
    deterministic (a DDIM jump to s with the denoised estimate: after the initial noise nothing is random). In between
    it is TCD's stochastic step: move deterministically to the intermediate time r between 0 and s whose signal-to-
    noise ratio is SNR(s) / (1 - gamma) (r = s at gamma 0, clean data at gamma 1), then diffuse forward from r to s
    with fresh noise; gamma is the fraction of the noise variance at s that is fresh. (TCD places r = (1 - gamma) s
    in timestep units instead, so the same number is not the same setting.) TCD reports that less fresh noise keeps
    more detail as the number of steps grows; with 1 step gamma has no effect.

    Real CFG and negative prompts (off by default, and then not a single extra operation): ``cfg_scale`` c > 1 runs
    the consistency model twice per step (one 2x batch: negative / empty prompt and prompt, same omega) and combines
    its outputs as out_neg + c * (out - out_neg) before the consistency step. ``negative_prompt`` (or
    ``negative_prompt_embeds``) replaces the empty prompt in that pass. This is guidance on top of the distilled one
    (stock LatentConsistencyModelPipeline has neither): it doubles the UNet cost per step, and large c pushes the
    few-step samples off the data manifold faster than it does for the teacher.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components: ClassVar[list[str]] = ["safety_checker", "feature_extractor"]
    _exclude_from_cpu_offload: ClassVar[list[str]] = ["safety_checker"]
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents", "denoised", "prompt_embeds", "w_embedding"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: LCMScheduler,
        safety_checker: Any = None,
        feature_extractor: CLIPImageProcessor | None = None,
        requires_safety_checker: bool = False,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
        )
        self.register_to_config(requires_safety_checker=requires_safety_checker)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 8
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @property
    def num_grid_points(self) -> int:
        """Training grid size N: the scheduler config's ``original_inference_steps`` (our export contract)."""
        return int(self.scheduler.config.get("original_inference_steps", 50) or 50)

    @property
    def has_omega_embedding(self) -> bool:
        """Whether the UNet takes the guidance embedding (``time_cond_proj_dim`` set in its config)."""
        return self.unet.config.get("time_cond_proj_dim") is not None

    def get_timesteps(
        self, num_inference_steps: int = 4, strength: float = 1.0, timesteps: list[int] | None = None
    ) -> list[int]:
        """The descending schedule: n steps on the grid, or validated custom ``timesteps`` (then n is ignored).

        With custom timesteps and strength < 1 only the last int(len * strength) are kept, as LCMScheduler does.
        """
        T, N = int(self.scheduler.config.num_train_timesteps), self.num_grid_points
        if timesteps is None:
            return select_timesteps(T, N, int(num_inference_steps), strength)
        ts = check_timesteps(T, N, list(timesteps))
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength={strength} must lie in (0, 1]; 1 means start from pure noise.")
        keep = min(int(len(ts) * strength), len(ts))
        if keep < 1:
            raise ValueError(f"strength={strength} keeps none of the {len(ts)} custom timesteps; raise strength.")
        return ts[len(ts) - keep :]

    def encode_prompt(
        self, prompt: str | list[str], device: torch.device, num_images_per_prompt: int = 1
    ) -> torch.Tensor:
        """CLIP last hidden states for the prompts, each repeated num_images_per_prompt times (no negative prompt:
        guided distillation baked the unconditional "" into the student)."""
        tok = self.tokenizer
        ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        mask = ids.attention_mask.to(device) if getattr(self.text_encoder.config, "use_attention_mask", False) else None
        embeds = self.text_encoder(ids.input_ids.to(device), attention_mask=mask)[0]
        return embeds.to(dtype=self.text_encoder.dtype, device=device).repeat_interleave(num_images_per_prompt, dim=0)

    def _encode_image(self, image: torch.Tensor, batch: int, generator: Any) -> torch.Tensor:
        """VAE latents (posterior samples x scaling_factor) of a preprocessed image batch, expanded to ``batch``."""
        if image.shape[1] == self.vae.config.latent_channels:  # already latents
            return image.repeat_interleave(batch // image.shape[0], dim=0)
        if isinstance(generator, list):  # one posterior sample per generator, as the stock pipeline does
            image = image.repeat_interleave(batch // image.shape[0], dim=0)
            posterior = [self.vae.encode(image[i : i + 1]).latent_dist for i in range(batch)]
            latents = torch.cat([p.sample(g) for p, g in zip(posterior, generator, strict=True)])
        else:
            latents = self.vae.encode(image).latent_dist.sample(generator)
        latents = latents * self.vae.config.scaling_factor
        return latents.repeat_interleave(batch // latents.shape[0], dim=0)

    def consistency_step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor,
        sample: torch.Tensor,
        next_timestep: torch.Tensor | None,
        noise_fraction: float = 1.0,
        generator: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One multistep-consistency step: (x at next_timestep, denoised D). On the last step (next_timestep None)
        both are D. Arithmetic follows LCMScheduler.step term for term, so noise_fraction=1 matches it bit-exactly."""
        cfg = self.scheduler.config
        alphas_cumprod = self.scheduler.alphas_cumprod.to(sample.device)
        alpha_prod_t = alphas_cumprod[timestep]
        beta_prod_t = 1 - alpha_prod_t
        scaled = timestep * cfg.get("timestep_scaling", 10.0)
        c_skip = 0.5**2 / (scaled**2 + 0.5**2)
        c_out = scaled / (scaled**2 + 0.5**2) ** 0.5
        if cfg.prediction_type == "epsilon":
            x0 = (sample - beta_prod_t.sqrt() * model_output) / alpha_prod_t.sqrt()
        elif cfg.prediction_type == "sample":
            x0 = model_output
        elif cfg.prediction_type == "v_prediction":
            x0 = alpha_prod_t.sqrt() * sample - beta_prod_t.sqrt() * model_output
        else:
            raise ValueError(f"prediction_type={cfg.prediction_type!r}: use epsilon, v_prediction or sample.")
        if cfg.get("thresholding", False):
            x0 = self.scheduler._threshold_sample(x0)
        elif cfg.get("clip_sample", False):
            x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
        denoised = c_out * x0 + c_skip * sample
        if next_timestep is None:
            return denoised, denoised
        if noise_fraction > 0:
            z = randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=denoised.dtype)
        if noise_fraction < 1:
            eps_hat = (sample - alpha_prod_t.sqrt() * denoised) / beta_prod_t.sqrt()
            noise = eps_hat if noise_fraction == 0 else (1 - noise_fraction) ** 0.5 * eps_hat + noise_fraction**0.5 * z
        else:
            noise = z
        alpha_prod_s = alphas_cumprod[next_timestep]
        return alpha_prod_s.sqrt() * denoised + (1 - alpha_prod_s).sqrt() * noise, denoised

    def run_safety_checker(self, image: torch.Tensor, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
        """Stock SD safety check when a checker is loaded; None flags otherwise."""
        if self.safety_checker is None:
            return image, None
        pil = self.image_processor.postprocess(image, output_type="pil")
        clip_input = self.feature_extractor(pil, return_tensors="pt").to(device).pixel_values.to(dtype)
        return self.safety_checker(images=image, clip_input=clip_input)

    def check_inputs(self, prompt: Any, prompt_embeds: Any, batch: int, **kw: Any) -> None:
        """Raise ValueErrors that name the argument at fault and what to change."""
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("Pass exactly one of `prompt` (text) or `prompt_embeds` (precomputed CLIP states).")
        if prompt is not None and not (
            isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt))
        ):
            raise ValueError(f"`prompt` must be a string or a non-empty list of strings, got {prompt!r}.")
        if prompt_embeds is not None and prompt_embeds.ndim != 3:
            raise ValueError(f"`prompt_embeds` must be (batch, tokens, dim), got shape {tuple(prompt_embeds.shape)}.")
        if kw["num_images_per_prompt"] < 1:
            raise ValueError(f"num_images_per_prompt={kw['num_images_per_prompt']} must be at least 1.")
        for name in ("height", "width"):
            if kw[name] is not None and (kw[name] <= 0 or kw[name] % self.vae_scale_factor):
                raise ValueError(f"{name}={kw[name]} must be a positive multiple of {self.vae_scale_factor}.")
        if kw["output_type"] not in OUTPUT_TYPES:
            raise ValueError(f"output_type={kw['output_type']!r} must be one of {OUTPUT_TYPES}.")
        g = kw["guidance_scale"]
        if g is not None and g != g:
            raise ValueError("guidance_scale is NaN; use g >= 1 (1 means no guidance).")
        if g is not None and g < 1:  # accepted, as stock LatentConsistencyModelPipeline does (same images)
            warnings.warn(
                f"guidance_scale={g} embeds omega = g - 1 = {g - 1:g} < 0, which no LCM is trained on (omega >= 0); "
                "g = 1 means no guidance. Stock LatentConsistencyModelPipeline accepts it too and gives the same "
                "images.",
                stacklevel=3,
            )
        c = kw["cfg_scale"]
        if c != c or c < 1:
            raise ValueError(f"cfg_scale={c} must be >= 1 (1 = off: no unconditional pass).")
        negative = kw["negative_prompt"] is not None or kw["negative_prompt_embeds"] is not None
        if negative and c == 1:
            raise ValueError("negative_prompt / negative_prompt_embeds only act through real CFG: set cfg_scale > 1 "
                             "(e.g. 1.5-2 on top of the distilled guidance).")  # fmt: skip
        if kw["negative_prompt"] is not None and kw["negative_prompt_embeds"] is not None:
            raise ValueError("Pass at most one of `negative_prompt` or `negative_prompt_embeds`.")
        if not 0.0 <= kw["noise_fraction"] <= 1.0:
            raise ValueError(f"noise_fraction={kw['noise_fraction']} must lie in [0, 1] (0 deterministic, 1 LCM).")
        bad = [k for k in kw["tensor_inputs"] if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {bad} not allowed; use {self._callback_tensor_inputs}."
            )
        total = batch * kw["num_images_per_prompt"]
        gen = kw["generator"]
        if isinstance(gen, list) and len(gen) != total:
            raise ValueError(f"Got {len(gen)} generators for {total} images (prompts x num_images_per_prompt).")
        if kw["latents"] is not None and kw["latents"].shape[0] != total:
            raise ValueError(f"`latents` has batch {kw['latents'].shape[0]} but the prompts ask for {total} images.")
        image = kw["image"]
        n_img = len(image) if isinstance(image, list) or (isinstance(image, torch.Tensor) and image.ndim == 4) else 1
        if image is not None and n_img not in (1, batch):
            raise ValueError(f"Got {n_img} images for {batch} prompts; pass one image or one per prompt.")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: PipelineImageInput | None = None,
        strength: float | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 4,
        timesteps: list[int] | None = None,
        guidance_scale: float | None = None,
        noise_fraction: float = 1.0,
        negative_prompt: str | list[str] | None = None,
        cfg_scale: float = 1.0,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable[[Any, int, Any, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | tuple[str, ...] = ("latents",),
    ) -> StableDiffusionPipelineOutput | tuple:
        """Generate images; ``image`` switches to img2img (strength default 0.8, timesteps as LCMScheduler's).

        guidance_scale: diffusers convention (omega = g - 1, see the class docstring); None means 8.5, or "no
        guidance input" for a UNet without the omega embedding. noise_fraction: gamma of the class docstring.
        cfg_scale, negative_prompt, negative_prompt_embeds: real CFG on the consistency model (class docstring).
        latents: the starting latent at the first timestep (txt2img: the initial noise; img2img: the noised image
        latent), overriding the generator for that draw. callback_on_step_end(pipe, i, t, tensors) may return a dict
        that replaces any of the tensors. Returns StableDiffusionPipelineOutput(images, nsfw_content_detected).
        """
        # 1. Check inputs (before any network runs)
        if image is None and strength not in (None, 1.0):
            raise ValueError(f"strength={strength} only applies to img2img; pass `image=` or drop `strength`.")
        strength = (DEFAULT_IMG2IMG_STRENGTH if image is not None else 1.0) if strength is None else strength
        batch = 1 if isinstance(prompt, str) else len(prompt) if isinstance(prompt, list) else None
        batch = prompt_embeds.shape[0] if batch is None and prompt_embeds is not None else batch
        self.check_inputs(
            prompt,
            prompt_embeds,
            batch or 1,
            num_images_per_prompt=num_images_per_prompt,
            height=height,
            width=width,
            output_type=output_type,
            noise_fraction=noise_fraction,
            guidance_scale=guidance_scale,
            cfg_scale=cfg_scale,
            negative_prompt=negative_prompt,
            negative_prompt_embeds=negative_prompt_embeds,
            generator=generator,
            latents=latents,
            image=image,
            tensor_inputs=list(callback_on_step_end_tensor_inputs),
        )
        # 2. Timesteps on the training grid (LCMScheduler's choice; img2img starts later by strength)
        schedule = self.get_timesteps(num_inference_steps, strength, timesteps)
        device = self._execution_device
        total = batch * num_images_per_prompt
        t_all = torch.tensor(schedule, dtype=torch.long, device=device)

        # 3. Encode the prompt (and, for real CFG, the negative prompt). The working dtype of latents, the omega
        # embedding and the consistency step is the text encoder's (the UNet and VAE get inputs in their own dtype).
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt(prompt, device, num_images_per_prompt)
        else:
            dtype = self.text_encoder.dtype if self.text_encoder is not None else self.unet.dtype
            prompt_embeds = prompt_embeds.to(device=device, dtype=dtype).repeat_interleave(num_images_per_prompt, 0)
        dtype = prompt_embeds.dtype  # the working dtype (see 3.)
        do_cfg = cfg_scale > 1
        if do_cfg:
            if negative_prompt_embeds is not None:
                negative = negative_prompt_embeds.to(device=device, dtype=dtype)
                negative = negative.repeat_interleave(total // negative.shape[0], 0)
            else:
                neg = "" if negative_prompt is None else negative_prompt
                neg = [neg] * batch if isinstance(neg, str) else list(neg)
                if len(neg) != batch:
                    raise ValueError(f"Got {len(neg)} negative prompts for {batch} prompts; pass one or one each.")
                negative = self.encode_prompt(neg, device, num_images_per_prompt)

        # 4. Starting latents: given, fresh noise (txt2img), or the noised image latent (img2img)
        if latents is not None:
            latents = latents.to(device=device, dtype=dtype)
        elif image is None:
            f, size = self.vae_scale_factor, self.unet.config.sample_size
            shape = (total, self.unet.config.in_channels, (height or size * f) // f, (width or size * f) // f)
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
            latents = latents * self.scheduler.init_noise_sigma
        else:
            pixels = self.image_processor.preprocess(image, height=height, width=width)
            x0 = self._encode_image(pixels.to(device=device, dtype=self.vae.dtype), total, generator)
            x0 = x0.to(dtype)
            noise = randn_tensor(x0.shape, generator=generator, device=device, dtype=dtype)
            latents = self.scheduler.add_noise(x0, noise, t_all[:1])

        # 5. The guidance input: omega = guidance_scale - 1, embedded as in training
        w_embedding = None
        if self.has_omega_embedding:
            omega = torch.tensor(float(DEFAULT_GUIDANCE_SCALE if guidance_scale is None else guidance_scale) - 1)
            w_embedding = guidance_scale_embedding(omega.repeat(total), self.unet.config.time_cond_proj_dim)
            w_embedding = w_embedding.to(device=device, dtype=latents.dtype)
        elif guidance_scale is not None and guidance_scale != 1:
            warnings.warn(
                f"guidance_scale={guidance_scale} has no effect: this UNet has no omega embedding "
                "(time_cond_proj_dim is None), so it samples without CFG. Leave guidance_scale unset or 1.",
                UserWarning,
                stacklevel=2,
            )

        # 6. Consistency sampling: one UNet call and one consistency step per timestep
        denoised = latents
        with self.progress_bar(total=len(schedule)) as progress:
            for i, t in enumerate(t_all):
                latents = latents.to(dtype)
                x, w, embeds = latents, w_embedding, prompt_embeds
                if do_cfg:  # one 2x forward: [negative; prompt] at the same omega (built per step: the callback may
                    x, embeds = torch.cat([x, x]), torch.cat([negative, embeds])  # replace prompt_embeds / w)
                    w = None if w is None else torch.cat([w, w])
                # Components may differ in dtype (an fp32 UNet beside a bf16 text encoder / VAE, as in training's
                # validation with model.frozen_dtype=bf16): each network gets inputs in its own dtype.
                model_output = self.unet(
                    x.to(self.unet.dtype),
                    t,
                    timestep_cond=None if w is None else w.to(self.unet.dtype),
                    encoder_hidden_states=embeds.to(self.unet.dtype),
                    cross_attention_kwargs=cross_attention_kwargs,
                    return_dict=False,
                )[0].to(latents.dtype)
                if do_cfg:  # combined before the consistency step
                    out_neg, out_pos = model_output.chunk(2)
                    model_output = out_neg + cfg_scale * (out_pos - out_neg)
                t_next = t_all[i + 1] if i + 1 < len(schedule) else None
                latents, denoised = self.consistency_step(model_output, t, latents, t_next, noise_fraction, generator)
                if callback_on_step_end is not None:
                    scope = locals()  # the tensors named in _callback_tensor_inputs are local variables
                    wanted = {k: scope[k] for k in callback_on_step_end_tensor_inputs}
                    out = callback_on_step_end(self, i, t, wanted) or {}
                    latents, denoised = out.get("latents", latents), out.get("denoised", denoised)
                    prompt_embeds = out.get("prompt_embeds", prompt_embeds)
                    w_embedding = out.get("w_embedding", w_embedding)
                progress.update()

        # 7. Decode (and run the safety checker when the pipeline has one)
        denoised = denoised.to(dtype)
        nsfw = None
        if output_type == "latent":
            images = denoised
        else:
            scaled = (denoised / self.vae.config.scaling_factor).to(self.vae.dtype)
            decoded = self.vae.decode(scaled, return_dict=False)[0]
            decoded = decoded.to(dtype)
            decoded, nsfw = self.run_safety_checker(decoded, device, dtype)
            denorm = [True] * decoded.shape[0] if nsfw is None else [not flag for flag in nsfw]
            images = self.image_processor.postprocess(decoded, output_type=output_type, do_denormalize=denorm)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, nsfw
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=nsfw)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """diffusers' save, plus this file copied beside the weights, and ``model_index.json`` naming the stock
        class (LatentConsistencyModelPipeline; StableDiffusionPipeline for a UNet without the omega embedding) so that
        a plain ``DiffusionPipeline.from_pretrained`` needs no custom code.

        ``push_to_hub=True`` uploads after those edits (repo_id, token, private, commit_message as in diffusers).
        """
        push = kwargs.pop("push_to_hub", False)
        hub = {k: kwargs.pop(k) for k in ("repo_id", "token", "private", "commit_message") if k in kwargs}
        super().save_pretrained(save_directory, push_to_hub=False, **kwargs)
        shutil.copyfile(os.path.abspath(__file__), os.path.join(save_directory, PIPELINE_FILE_NAME))
        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        # The stock LCM pipeline needs the omega embedding (it raises TypeError on a UNet without time_cond_proj_dim);
        # such a UNet (merged LCM-LoRA) runs in stock StableDiffusionPipeline with the LCMScheduler saved here.
        has_omega = self.unet.config.get("time_cond_proj_dim") is not None
        index["_class_name"] = STOCK_PIPELINE_CLASS if has_omega else STOCK_CLASS_WITHOUT_OMEGA
        index.setdefault("image_encoder", [None, None])  # the stock pipelines' optional IP-adapter component
        if not has_omega:
            index.setdefault("safety_checker", [None, None])
            index.setdefault("feature_extractor", [None, None])
            index.setdefault("requires_safety_checker", False)
        with open(index_path, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")
        if push:
            from huggingface_hub import HfApi

            api = HfApi(token=hub.get("token"))
            repo_id = hub.get("repo_id") or os.path.basename(os.path.normpath(save_directory))
            api.create_repo(repo_id, private=hub.get("private"), exist_ok=True)
            api.upload_folder(folder_path=save_directory, repo_id=repo_id, commit_message=hub.get("commit_message"))
