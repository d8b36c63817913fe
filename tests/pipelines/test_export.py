"""save/load round trips, the exported folder in stock diffusers and via custom_pipeline, model card, push_to_hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import ClassVar

import huggingface_hub
import pytest
import torch
import yaml
from diffusers import DiffusionPipeline, LatentConsistencyModelPipeline
from lcm_distill.pipelines import LCMPipeline, pipeline_lcm

from lcm_distill.export import REPO_PLACEHOLDER, ModelCardInfo, push_to_hub, render_model_card, save_lcm_pipeline
from lcm_distill.testing import tiny_scheduler_config

PROMPT = "a photo of a cat"


def run(pipe, **kw) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    kw = {"num_inference_steps": 2, "output_type": "pt", **kw}
    return pipe(PROMPT, generator=torch.Generator().manual_seed(0), **kw).images


def test_save_pretrained_round_trip_is_exact(lcm_pipe, tmp_path, realign):
    before = run(lcm_pipe, noise_fraction=0.5)
    lcm_pipe.save_pretrained(tmp_path / "p")
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    assert index["_class_name"] == "LatentConsistencyModelPipeline"
    assert (tmp_path / "p" / "pipeline_lcm.py").read_bytes() == Path(pipeline_lcm.__file__).read_bytes()
    assert list((tmp_path / "p" / "unet").glob("*.safetensors"))
    loaded = LCMPipeline.from_pretrained(tmp_path / "p")
    assert type(loaded) is LCMPipeline
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(lcm_pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert loaded.tokenizer(PROMPT).input_ids == lcm_pipe.tokenizer(PROMPT).input_ids
    assert {k: v for k, v in loaded.scheduler.config.items() if not k.startswith("_")} == {
        k: v for k, v in lcm_pipe.scheduler.config.items() if not k.startswith("_")
    }
    # mmap'd weights change CPU summation order (~1e-6); in fresh memory the outputs are identical
    torch.testing.assert_close(run(loaded, noise_fraction=0.5), before, rtol=0, atol=1e-4)
    assert torch.equal(run(realign(loaded), noise_fraction=0.5), before)


def test_exported_folder_layout_and_scheduler(lcm_folder):
    names = {p.name for p in lcm_folder.iterdir()}
    assert {"model_index.json", "pipeline_lcm.py", "README.md", "unet", "vae", "text_encoder", "tokenizer"} <= names
    sched = json.loads((lcm_folder / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "LCMScheduler"
    assert sched["original_inference_steps"] == 50
    assert sched["prediction_type"] == "epsilon" and sched["beta_schedule"] == "scaled_linear"
    assert not list(lcm_folder.rglob("*.bin"))


def test_exported_folder_runs_in_stock_diffusers_and_custom_pipeline(lcm_folder, realign):
    ours = run(realign(LCMPipeline.from_pretrained(lcm_folder)))
    stock = LatentConsistencyModelPipeline.from_pretrained(lcm_folder)
    assert torch.equal(run(realign(stock)), ours)
    generic = DiffusionPipeline.from_pretrained(lcm_folder)  # no custom code: the stock class from model_index.json
    assert type(generic) is LatentConsistencyModelPipeline
    custom = DiffusionPipeline.from_pretrained(
        lcm_folder, custom_pipeline=str(lcm_folder / "pipeline_lcm.py"), trust_remote_code=True
    )
    assert type(custom).__name__ == "LCMPipeline" and not type(custom).__module__.startswith("lcm_distill")
    assert torch.equal(run(realign(custom)), ours)
    by_name = DiffusionPipeline.from_pretrained(lcm_folder, custom_pipeline="pipeline_lcm", trust_remote_code=True)
    assert type(by_name).__name__ == "LCMPipeline"  # the Hub form: the file beside the weights, by name


def test_export_grid_size_and_validation(make_components, tmp_path):
    comps = make_components("v_prediction")
    card = ModelCardInfo(base_model="tiny/sd", method="lcf")
    kw = dict(unet=comps["unet"], vae=comps["vae"], text_encoder=comps["text_encoder"], tokenizer=comps["tokenizer"])
    folder = save_lcm_pipeline(
        tmp_path / "n100",
        teacher_scheduler_config=tiny_scheduler_config("v_prediction"),
        num_points=100,
        card=card,
        **kw,
    )
    pipe = LCMPipeline.from_pretrained(folder)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.get_timesteps(4) == [999, 749, 499, 249]
    with pytest.raises(ValueError, match="must divide num_train_timesteps"):
        save_lcm_pipeline(
            tmp_path / "bad", teacher_scheduler_config=tiny_scheduler_config(), num_points=30, card=card, **kw
        )


def test_model_card(lcm_folder):
    text = (lcm_folder / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["base_model"] == "tiny/sd-teacher" and front["library_name"] == "diffusers"
    assert front["license"] == "openrail++" and front["datasets"] == ["tiny/captions"]
    assert {"lcm", "lcd", "latent-consistency-model"} <= set(front["tags"])
    assert text.split("---\n")[2].startswith("\n# tiny-lcm\n")  # title: the folder name unless model_name is set
    assert "Latent Consistency Distillation" in text and "Recommended steps**: 1, 2, 4" in text
    assert "ω = guidance_scale − 1 = 7.5" in text and "guidance_scale ∈ [3, 15]" in text
    assert 'custom_pipeline="pipeline_lcm", trust_remote_code=True' in text and REPO_PLACEHOLDER in text
    no_omega = render_model_card(ModelCardInfo(base_model="b", method="LCF"), 50, has_omega_embedding=False)
    assert "no ω input" in no_omega and "Latent Consistency Fine-tuning" in no_omega
    assert "StableDiffusionPipeline + LCMScheduler" in no_omega and "guidance_scale=1.0)" in no_omega
    fixed = render_model_card(ModelCardInfo(base_model="b", omega_range=(7.5, 7.5)), 50, has_omega_embedding=False)
    assert "ω = 7.5 (diffusers guidance_scale 8.5) is distilled into the weights" in fixed
    ranged = render_model_card(ModelCardInfo(base_model="b", omega_range=(2, 14)), 50, has_omega_embedding=False)
    assert "average of those guidance strengths" in ranged
    with pytest.raises(ValueError, match="method='XYZ'"):
        ModelCardInfo(base_model="b", method="xyz")


class FakeApi:
    """Stands in for huggingface_hub.HfApi: records calls, touches no network."""

    calls: ClassVar[list] = []

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, folder_path, repo_id, **kw):
        self.calls.append(
            (
                "upload_folder",
                folder_path,
                repo_id,
                sorted(p.name for p in Path(folder_path).iterdir()),
            )
        )
        return type("CommitInfo", (), {"commit_url": f"https://hub.example/{repo_id}/commit/1"})()


def test_push_to_hub_uses_upload_folder(lcm_folder, tmp_path, monkeypatch):
    folder = tmp_path / "copy"
    shutil.copytree(lcm_folder, folder)
    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = push_to_hub(folder, "me/tiny-lcm", token="tok", private=True)
    assert url == "https://hub.example/me/tiny-lcm/commit/1"
    assert FakeApi.calls[0] == ("init", "tok")
    assert FakeApi.calls[1][:2] == ("create_repo", "me/tiny-lcm") and FakeApi.calls[1][2]["private"] is True
    assert FakeApi.calls[2][2] == "me/tiny-lcm" and "pipeline_lcm.py" in FakeApi.calls[2][3]
    readme = (folder / "README.md").read_text()
    assert REPO_PLACEHOLDER not in readme and 'from_pretrained("me/tiny-lcm")' in readme
    with pytest.raises(ValueError, match="write it with save_lcm_pipeline"):
        push_to_hub(tmp_path, "me/x")


def test_pipeline_save_pretrained_push_to_hub(lcm_pipe, tmp_path, monkeypatch):
    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    lcm_pipe.save_pretrained(tmp_path / "p", push_to_hub=True, repo_id="me/p", token="t")
    assert [c[0] for c in FakeApi.calls] == ["init", "create_repo", "upload_folder"]
    assert "pipeline_lcm.py" in FakeApi.calls[2][3]  # uploaded after the file was copied in
