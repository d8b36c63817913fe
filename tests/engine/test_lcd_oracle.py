"""The whole LCD loss against an independent re-implementation of diffusers' training step
(diffusers' examples/consistency_distillation/train_lcm_distill_sd_wds.py, its training step): same latents,
prompts, timesteps, w and noise; eps and v teachers; l2 and pseudo-Huber. The oracle uses only diffusers and torch
(DDPMScheduler's alphas_cumprod, the pipeline's guidance-scale embedding, two separate teacher forwards), none of
lcm_distill.functional. It fails on the plausible wrong variants: teacher CFG with w+1 instead of w, the target
network without the w embedding, t_n and t_{n+k} swapped, alpha vs alpha_prev in the DDIM step.

SDXL (train_lcm_distill_sdxl_wds.py with --use_fix_crop_and_size): both encoders' penultimate hidden states
concatenated, the second encoder's projected pooled output, time ids (r, r, 0, 0, r, r), an unconditional branch of
zeros with the same time ids. That oracle fails on: the last hidden state instead of the penultimate, the empty
prompt's embeddings instead of zeros for the unconditional branch, time ids in another order, CFG with w + 1."""

from __future__ import annotations

import pytest
import torch

from lcm_distill.config import load_config
from lcm_distill.engine import load_run_models
from lcm_distill.objectives import ConsistencyStep, StepNoise

SIGMA_DATA, TIMESTEP_SCALING = 0.5, 10.0


def _boundary(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scaled = t.double() * TIMESTEP_SCALING
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2) ** 0.5
    return c_skip.float().view(-1, 1, 1, 1), c_out.float().view(-1, 1, 1, 1)


def _x0_eps(out, x, a, prediction_type):
    sa, s1 = a.sqrt(), (1 - a).sqrt()
    if prediction_type == "epsilon":
        return (x - s1 * out) / sa, out
    return sa * x - s1 * out, sa * out + s1 * x  # v-prediction


def diffusers_lcd_loss(teacher_dir, student, target, latents, prompt_embeds, start, w, z, loss, huber_c, k):
    """diffusers' LCD step 2-7 on given inputs (student and target: UNets with a time_cond_proj)."""
    from diffusers import DDPMScheduler, LatentConsistencyModelPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    sched = DDPMScheduler.from_pretrained(teacher_dir, subfolder="scheduler")
    ptype = sched.config.prediction_type
    acp = sched.alphas_cumprod.float()
    teacher = UNet2DConditionModel.from_pretrained(teacher_dir, subfolder="unet")
    tok = CLIPTokenizer.from_pretrained(teacher_dir, subfolder="tokenizer")
    enc = CLIPTextModel.from_pretrained(teacher_dir, subfolder="text_encoder")
    n = latents.shape[0]
    ids = tok([""] * n, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        uncond = enc(ids.input_ids)[0]
    end = (start - k).clamp(min=0)
    a_s, a_e = acp[start].view(-1, 1, 1, 1), acp[end].view(-1, 1, 1, 1)
    x = a_s.sqrt() * latents + (1 - a_s).sqrt() * z  # add_noise at t_{n+k}
    w_emb = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=32)
    cs_s, co_s = _boundary(start)
    x0, _ = _x0_eps(student(x, start, prompt_embeds, timestep_cond=w_emb).sample, x, a_s, ptype)
    model_pred = cs_s * x + co_s * x0
    with torch.no_grad():
        x0_c, eps_c = _x0_eps(teacher(x, start, prompt_embeds).sample, x, a_s, ptype)
        x0_u, eps_u = _x0_eps(teacher(x, start, uncond).sample, x, a_s, ptype)
        wv = w.view(-1, 1, 1, 1)
        x0_g, eps_g = x0_c + wv * (x0_c - x0_u), eps_c + wv * (eps_c - eps_u)
        x_prev = a_e.sqrt() * x0_g + (1 - a_e).sqrt() * eps_g  # DDIMSolver.ddim_step to t_n
        cs_e, co_e = _boundary(end)
        x0_t, _ = _x0_eps(target(x_prev, end, prompt_embeds, timestep_cond=w_emb).sample, x_prev, a_e, ptype)
        tgt = cs_e * x_prev + co_e * x0_t
    if loss == "l2":
        return torch.nn.functional.mse_loss(model_pred.float(), tgt.float())
    return torch.mean(torch.sqrt((model_pred.float() - tgt.float()) ** 2 + huber_c**2) - huber_c)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("loss", ["l2", "huber"])
def test_lcd_loss_equals_diffusers_training_step(make_cfg, prediction_type, loss):
    cfg = make_cfg(f"objective.loss={loss}", "objective.huber_c=0.05", "objective.solver=ddim",
                   prediction_type=prediction_type)  # fmt: skip
    models = load_run_models(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a cond_proj that matters, and a target that differs from the student
        for p in models.student.time_embedding.cond_proj.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for (_, pt), (_, ps) in zip(models.target.named_parameters(), models.student.named_parameters(), strict=True):
            pt.copy_(ps + 0.02 * torch.randn(ps.shape, generator=gen))
    n, shape = 4, models.latent_shape(cfg.data.resolution)
    k = models.schedule.num_train_timesteps // cfg.objective.num_points
    start = torch.tensor([k - 1, 3 * k - 1, 25 * k - 1, 50 * k - 1])  # includes t_n = 0 (index 0) and T - 1
    w = torch.tensor([2.0, 5.5, 8.0, 14.0])
    z = torch.randn((n, *shape), generator=gen)
    latents = torch.randn((n, *shape), generator=gen) * 0.8
    prompt_embeds = torch.randn((n, 77, 32), generator=gen)
    batch = {"latent_mean": latents, "latent_std": torch.zeros_like(latents), "prompt_embeds": prompt_embeds,
             "pixel_values": None, "captions": [""] * n}  # fmt: skip
    noise = StepNoise(start, (start - k).clamp(min=0), w, z, torch.zeros_like(z))
    ours = ConsistencyStep(models, cfg.objective, cfg.data.resolution)(batch, noise).loss
    oracle = diffusers_lcd_loss(cfg.model.teacher, models.student, models.target, latents, prompt_embeds, start, w, z,
                                loss, cfg.objective.huber_c, k)  # fmt: skip
    rel = abs(ours.item() - oracle.item()) / abs(oracle.item())
    assert ours.item() > 0
    assert rel <= 1e-5, (ours.item(), oracle.item(), rel)


def diffusers_sdxl_lcd_loss(folder, student, target, pixels, captions, start, w, z, k, resolution):
    """diffusers' SDXL LCD step (fixed crop and size) on given inputs; student/target have a time_cond_proj."""
    from diffusers import AutoencoderKL, DDPMScheduler, LatentConsistencyModelPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    sched = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    acp = sched.alphas_cumprod.float()
    teacher = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
        embeds = []
        for sub, cls in (("", CLIPTextModel), ("_2", CLIPTextModelWithProjection)):
            tok = CLIPTokenizer.from_pretrained(folder, subfolder=f"tokenizer{sub}")
            enc = cls.from_pretrained(folder, subfolder=f"text_encoder{sub}")
            ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids  # fmt: skip
            out = enc(ids, output_hidden_states=True)
            embeds.append(out.hidden_states[-2])
            pooled = out[0]
        prompt_embeds = torch.cat(embeds, dim=-1)
    n = latents.shape[0]
    time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=torch.float32).repeat(n, 1)
    added = {"text_embeds": pooled, "time_ids": time_ids}
    uncond_added = {"text_embeds": torch.zeros_like(pooled), "time_ids": time_ids}
    uncond = torch.zeros_like(prompt_embeds)
    end = (start - k).clamp(min=0)
    a_s, a_e = acp[start].view(-1, 1, 1, 1), acp[end].view(-1, 1, 1, 1)
    x = a_s.sqrt() * latents + (1 - a_s).sqrt() * z
    w_emb = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=32)
    cs_s, co_s = _boundary(start)
    out = student(x, start, timestep_cond=w_emb, encoder_hidden_states=prompt_embeds, added_cond_kwargs=added).sample
    model_pred = cs_s * x + co_s * _x0_eps(out, x, a_s, "epsilon")[0]
    with torch.no_grad():
        x0_c, eps_c = _x0_eps(teacher(x, start, prompt_embeds, added_cond_kwargs=added).sample, x, a_s, "epsilon")
        x0_u, eps_u = _x0_eps(teacher(x, start, uncond, added_cond_kwargs=uncond_added).sample, x, a_s, "epsilon")
        wv = w.view(-1, 1, 1, 1)
        x0_g, eps_g = x0_c + wv * (x0_c - x0_u), eps_c + wv * (eps_c - eps_u)
        x_prev = a_e.sqrt() * x0_g + (1 - a_e).sqrt() * eps_g
        cs_e, co_e = _boundary(end)
        out_t = target(x_prev, end, timestep_cond=w_emb, encoder_hidden_states=prompt_embeds,
                       added_cond_kwargs=added).sample  # fmt: skip
        tgt = cs_e * x_prev + co_e * _x0_eps(out_t, x_prev, a_e, "epsilon")[0]
    return torch.nn.functional.mse_loss(model_pred.float(), tgt.float())


def test_sdxl_lcd_loss_equals_diffusers_sdxl_training_step(sdxl_dir, data_dir):
    cfg = load_config(None, [f"model.teacher={sdxl_dir}", "model.omega_embed_dim=32", f"data.dataset={data_dir}",
                             "data.resolution=16", "train.ema_decay=0.5", "objective.solver=ddim"])  # fmt: skip
    models = load_run_models(cfg)
    assert models.text_encoder_2 is not None and models.vae.config.scaling_factor == 0.13025
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a cond_proj and an added embedding that matter, and a target that differs
        for p in models.student.time_embedding.cond_proj.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for p in models.student.add_embedding.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
        for (_, pt), (_, ps) in zip(models.target.named_parameters(), models.student.named_parameters(), strict=True):
            pt.copy_(ps + 0.02 * torch.randn(ps.shape, generator=gen))
    n, shape = 4, models.latent_shape(16)
    k = models.schedule.num_train_timesteps // cfg.objective.num_points
    start = torch.tensor([k - 1, 3 * k - 1, 25 * k - 1, 50 * k - 1])
    w = torch.tensor([2.0, 5.5, 8.0, 14.0])
    z = torch.randn((n, *shape), generator=gen)
    pixels = torch.rand((n, 3, 16, 16), generator=gen) * 2 - 1
    captions = ["a red circle", "blue square", "", "a green triangle on grey"]
    batch = {"pixel_values": pixels, "captions": captions}
    noise = StepNoise(start, (start - k).clamp(min=0), w, z, torch.zeros_like(z))  # latent = the posterior mean
    ours = ConsistencyStep(models, cfg.objective, 16)(batch, noise).loss
    oracle = diffusers_sdxl_lcd_loss(sdxl_dir, models.student, models.target, pixels, captions, start, w, z, k, 16)
    rel = abs(ours.item() - oracle.item()) / abs(oracle.item())
    assert ours.item() > 0
    assert rel <= 1e-5, (ours.item(), oracle.item(), rel)
