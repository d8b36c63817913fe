"""Model families (lcm_distill/families.py): read from the folder's configs, SD 1.x trained through the same engine
as SD 2.x (full LCD and LCM-LoRA, exports that stock diffusers loads); what an SDXL folder cannot run refused before
any weight is loaded. SDXL training itself: tests/engine/test_sdxl.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lcm_distill.config import load_config
from lcm_distill.errors import ConfigError
from lcm_distill.families import FAMILIES, family_of
from lcm_distill.testing import save_tiny_sd, save_tiny_sdxl


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {"sd1": save_tiny_sd(root / "sd1", family="sd1"), "sd2": save_tiny_sd(root / "sd2", family="sd2"),
            "sdxl": save_tiny_sdxl(root / "sdxl")}  # fmt: skip


def test_family_rules_read_what_changes_a_code_path():
    from lcm_distill.known_configs import sd15_unet_config, sd21_unet_config

    assert family_of(sd15_unet_config()).name == "sd1" and family_of(sd21_unet_config("sd21")).name == "sd2"
    assert family_of({"use_linear_projection": True, "addition_embed_type": "text_time"}).name == "sdxl"
    assert family_of({"use_linear_projection": True}, {"text_encoder_2": ["transformers", "CLIP"]}).name == "sdxl"
    assert family_of({}).name == "sd1"  # diffusers' default: no linear projection
    assert [f.name for f in FAMILIES.values() if f.extra_components] == ["sdxl"]


def test_tiny_kit_folders_are_told_apart(folders):
    from diffusers import UNet2DConditionModel

    from lcm_distill.models import read_family

    assert {name: read_family(str(path)).name for name, path in folders.items()} == {
        "sd1": "sd1", "sd2": "sd2", "sdxl": "sdxl"}  # fmt: skip
    sd1 = UNet2DConditionModel.from_pretrained(folders["sd1"] / "unet")
    assert isinstance(sd1.down_blocks[0].attentions[0].proj_in, torch.nn.Conv2d)  # SD 1.x: 1x1 conv projections


def _cfg(folders, data_dir, tmp_path, family: str, *extra: str):
    base = [f"model.teacher={folders[family]}", "model.omega_embed_dim=32", f"data.dataset={data_dir}",
            "data.resolution=16", f"train.output_dir={tmp_path / family}", "train.per_device_batch_size=2",
            "train.max_train_steps=2", "train.report_to=none", "train.validation_prompts=[]",
            "train.checkpoint_every=1000", "optim.learning_rate=1e-3"]  # fmt: skip
    return load_config(None, [*base, *extra])


def test_what_an_sdxl_folder_cannot_run_is_refused_before_any_weight_is_loaded(folders, data_dir, tmp_path, caplog):
    """The preflight (config and folder reads only, before models load) names the family it read, refuses SDXL's
    own VAE in fp16 (naming the keys and what to do) and an SDXL folder without its second encoder."""
    import shutil

    from lcm_distill.engine import preflight

    caplog.set_level("INFO", logger="lcm_distill.engine.preflight")
    preflight(_cfg(folders, data_dir, tmp_path, "sdxl"))
    assert "model.teacher: Stable Diffusion XL model" in caplog.text
    with pytest.raises(ConfigError, match=r"model\.frozen_dtype=fp16 .*VAE overflows in fp16.*model\.vae"):
        preflight(_cfg(folders, data_dir, tmp_path, "sdxl", "model.frozen_dtype=fp16"))
    preflight(_cfg(folders, data_dir, tmp_path, "sdxl", "model.frozen_dtype=fp16",
                   f"model.vae={folders['sdxl'] / 'vae'}"))  # an fp16-safe VAE given: accepted  # fmt: skip
    broken = shutil.copytree(folders["sdxl"], tmp_path / "no-encoder-2")
    shutil.rmtree(broken / "text_encoder_2")
    lcf = load_config(None, ["objective.kind=lcf", f"model.student={broken}", f"data.dataset={data_dir}",
                             "data.resolution=16", f"train.output_dir={tmp_path / 'lcf'}"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"model\.student=.*lacks \['text_encoder_2'\]"):
        preflight(lcf)
    preflight(_cfg(folders, data_dir, tmp_path, "sd1"))
    assert "model.teacher: Stable Diffusion 1.x model" in caplog.text


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_sd1_trains_through_the_same_engine_and_exports_for_stock_diffusers(folders, data_dir, tmp_path, lora):
    """SD 1.x conditions the UNet as SD 2.x does (one encoder's last hidden state): the same LCD step trains it,
    and stock diffusers loads the export - the full student in LatentConsistencyModelPipeline, the LoRA (which
    here also targets SD 1.x's 1x1-conv attention projections) through load_lora_weights on the SD 1.x base."""
    from diffusers import DiffusionPipeline, LCMScheduler, StableDiffusionPipeline

    from lcm_distill.engine import train

    extra = ("model.lora.enabled=true", "train.ema_decay=0") if lora else ("train.ema_decay=0.5",)
    cfg = _cfg(folders, data_dir, tmp_path, "sd1", "train.export=true", *extra)
    result = train(cfg)
    assert result.status == "finished" and all(np.isfinite(result.losses))
    pipe = DiffusionPipeline.from_pretrained(result.output_dir / "student")
    assert not pipe.unet.config.use_linear_projection and isinstance(pipe.scheduler, LCMScheduler)
    gen = torch.Generator().manual_seed(0)
    kw = dict(num_inference_steps=2, height=16, width=16, output_type="latent", guidance_scale=1.0 if lora else 8.0)
    ours = pipe("a red square", generator=gen, **kw).images
    assert torch.isfinite(ours).all()
    if lora:
        stock = StableDiffusionPipeline.from_pretrained(folders["sd1"], safety_checker=None)
        stock.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
        stock.load_lora_weights(result.output_dir / "lora")
        theirs = stock("a red square", generator=torch.Generator().manual_seed(0), **kw).images
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)  # fused vs unfused adapters: ~1e-5 apart
        base = StableDiffusionPipeline.from_pretrained(folders["sd1"], safety_checker=None)
        base.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
        plain = base("a red square", generator=torch.Generator().manual_seed(0), **kw).images
        assert (plain - ours).abs().max() > 1e-3  # the adapters changed what is drawn: the check above can fail


def test_sd15_network_configs_have_the_hub_parameter_counts():
    """SD 1.5 at its true shapes (meta device, no memory): the planner's offline copy of the Hub configs."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lcm_distill.known_configs import SD15, SD15_PARAMS, known_network_config

    hub = SD15["hub_id"]
    with torch.device("meta"):
        nets = {"unet": UNet2DConditionModel(**known_network_config(hub, "unet")),
                "vae": AutoencoderKL(**known_network_config(hub, "vae")),
                "text_encoder": CLIPTextModel(CLIPTextConfig(**known_network_config(hub, "text_encoder")))}
    assert {k: sum(p.numel() for p in v.parameters()) for k, v in nets.items()} == SD15_PARAMS
    assert known_network_config("runwayml/stable-diffusion-v1-5", "unet") == known_network_config(hub, "unet")
    assert family_of(known_network_config(hub, "unet")).name == "sd1"


def test_test_kit_cli_writes_each_family(tmp_path, capsys):
    from lcm_distill.models import read_family
    from lcm_distill.testing.__main__ import main

    for family in ("sd1", "sdxl"):
        assert main(["--out", str(tmp_path / family), "--family", family]) == 0
        assert read_family(str(tmp_path / family)).name == family
