"""LCF (teacher-free fine-tuning): from a stock diffusers LCM folder, held-out loss, the split utility."""

from __future__ import annotations

import json

import pytest
import torch

from lcm_distill.cli import main
from lcm_distill.cli.split import main as split_main
from lcm_distill.cli.split import split_indices
from lcm_distill.config import load_config
from lcm_distill.engine import load_run_models, train
from lcm_distill.objectives import ConsistencyStep


@pytest.fixture(scope="module")
def stock_lcm_dir(tmp_path_factory):
    """An LCM saved by stock diffusers (LatentConsistencyModelPipeline + LCMScheduler), no code of ours."""
    from diffusers import LatentConsistencyModelPipeline

    from lcm_distill.testing import tiny_components

    root = tmp_path_factory.mktemp("stock-lcm")
    comps = tiny_components(root / "build", time_cond_proj_dim=32, scheduler="lcm")
    pipe = LatentConsistencyModelPipeline(**comps, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)  # fmt: skip
    pipe.save_pretrained(root / "lcm")
    return root / "lcm"


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    from lcm_distill.testing import make_imagefolder

    src = make_imagefolder(tmp_path_factory.mktemp("src") / "all", n=40, size=16, seed=3)
    out = tmp_path_factory.mktemp("split")
    assert split_main(["--dataset", str(src), "--out", str(out), "--test-fraction", "0.2", "--seed", "0"]) == 0
    return out


@torch.no_grad()
def heldout_loss(models, unet, data, objective, num_batches=4, batch_size=8, seed=1234, target=None) -> float:
    """The training objective on held-out data with fixed noise: the same batches, timesteps and noise for every
    model evaluated (seeded by ``seed`` and the batch index), so two numbers differ only through the networks.
    ``target`` defaults to ``unet`` itself (self-consistency)."""
    from lcm_distill.data import ResumableBatches, build_dataset

    batches = iter(ResumableBatches(build_dataset(data, seed), batch_size, seed=seed))
    step = ConsistencyStep(models, objective, data.resolution, student=unet, target=target or unet)
    was_training = unet.training
    unet.eval()
    outs = [step(next(batches), step.draw(seed, i, batch_size)) for i in range(num_batches)]
    losses = [out.loss.item() for out in outs if out is not None]
    unet.train(was_training)
    assert losses, f"no readable held-out sample in {data.dataset}"
    return sum(losses) / len(losses)


def test_split_is_deterministic_and_disjoint(split_dir, tmp_path):
    train_rows = [json.loads(x) for x in (split_dir / "train" / "metadata.jsonl").read_text().splitlines()]
    test_rows = [json.loads(x) for x in (split_dir / "test" / "metadata.jsonl").read_text().splitlines()]
    assert (len(train_rows), len(test_rows)) == (32, 8)
    assert not {r["file_name"] for r in train_rows} & {r["file_name"] for r in test_rows}
    assert split_indices(40, 0.2, 0) == split_indices(40, 0.2, 0) != split_indices(40, 0.2, 1)
    with pytest.raises(ValueError, match="test-fraction"):
        split_indices(10, 1.5)
    assert split_main(["--dataset", str(split_dir / "train"), "--out", str(tmp_path), "--test-fraction", "0.001"]) == 2


def _lcf_overrides(student, data, out):
    return [f"model.student={student}", f"data.dataset={data}", "data.resolution=16", "objective.kind=lcf",
            f"train.output_dir={out}", "train.per_device_batch_size=4", "train.report_to=none",
            "train.validation_prompts=[]", "train.checkpoint_every=1000", "optim.learning_rate=1e-3",
            "objective.omega_min=2", "objective.omega_max=6", "train.ema_decay=0.9"]  # fmt: skip


def test_lcf_from_stock_lcm_folder_runs_end_to_end(stock_lcm_dir, split_dir, tmp_path, capsys):
    cfg_file = tmp_path / "lcf.yaml"
    cfg_file.write_text("objective: {kind: lcf}\n")
    args = ["--config", str(cfg_file)]
    for o in [*_lcf_overrides(stock_lcm_dir, split_dir / "train", tmp_path / "run"), "train.max_train_steps=2",
              "train.validation_prompts=['a red square']", "train.validation_steps=[1]"]:  # fmt: skip
        args += ["--set", o]
    assert main(args, kind="lcf", prog="train_lcf.py") == 0
    assert "finished at step 2" in capsys.readouterr().out
    card = (tmp_path / "run" / "target" / "README.md").read_text()
    assert "LCF" in card and str(split_dir / "train") in card
    from diffusers import LatentConsistencyModelPipeline

    pipe = LatentConsistencyModelPipeline.from_pretrained(tmp_path / "run" / "target")
    assert pipe("a red square", num_inference_steps=1, output_type="np").images.shape == (1, 16, 16, 3)


def test_lcf_lowers_heldout_consistency_loss(stock_lcm_dir, split_dir, tmp_path):
    cfg = load_config(None, [*_lcf_overrides(stock_lcm_dir, split_dir / "train", tmp_path / "run"),
                             "train.max_train_steps=25", "train.export=true", "optim.learning_rate=2e-3"])  # fmt: skip
    test_data = load_config(None, [*_lcf_overrides(stock_lcm_dir, split_dir / "test", tmp_path / "x")]).data
    test_data.random_flip = False
    models = load_run_models(cfg)
    before = heldout_loss(models, models.student, test_data, cfg.objective, num_batches=2, batch_size=4)
    result = train(cfg)
    from diffusers import UNet2DConditionModel

    trained = UNet2DConditionModel.from_pretrained(result.output_dir / "student", subfolder="unet")
    after = heldout_loss(models, trained, test_data, cfg.objective, num_batches=2, batch_size=4)
    assert after < 0.8 * before, (before, after)
    assert torch.isfinite(torch.tensor(result.losses)).all()


CURRICULUM = ["objective.curriculum=doubling", "objective.curriculum_start_points=5", "objective.num_points=20",
              "objective.curriculum_stage_steps=1", "train.ema_schedule=curriculum"]  # stages 5, 10, 20 at steps 0-2


@pytest.mark.parametrize("extra", [[], CURRICULUM], ids=["paper", "curriculum"])
def test_lcf_resume_is_bitwise(stock_lcm_dir, split_dir, tmp_path, extra):
    """Resumed after step 1 - mid-curriculum for the curriculum run - equals the uninterrupted run bit for bit."""
    from safetensors.torch import load_file

    over = ["train.max_train_steps=3", "train.export=true", *extra]
    full = train(load_config(None, [*_lcf_overrides(stock_lcm_dir, split_dir / "train", tmp_path / "full"), *over]))
    part_cfg = load_config(None, [*_lcf_overrides(stock_lcm_dir, split_dir / "train", tmp_path / "part"), *over])
    assert train(part_cfg, stop_after=1).status == "interrupted"
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    resumed = train(part_cfg, resume="latest")
    assert resumed.losses == full.losses[1:]
    for name in ("student", "target"):
        a = load_file(str(full.output_dir / name / "unet" / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(resumed.output_dir / name / "unet" / "diffusion_pytorch_model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_lcf_from_public_lcm_layout_says_the_safety_checker_is_not_exported(stock_lcm_dir, split_dir, tmp_path,
                                                                             caplog):
    """The public LCM repos ship safety_checker/ + feature_extractor/; the export writes neither, and says so (run
    log before models load, and the card) instead of dropping them silently."""
    import logging

    from lcm_distill.models import components_not_exported
    from lcm_distill.testing import save_tiny_public_lcm

    public = save_tiny_public_lcm(tmp_path / "public-lcm")
    assert components_not_exported(str(public)) == ["feature_extractor", "safety_checker"]
    assert components_not_exported(str(stock_lcm_dir)) == []  # saved with safety_checker=None: nothing dropped
    cfg = load_config(None, [*_lcf_overrides(public, split_dir / "train", tmp_path / "run"),
                             "train.max_train_steps=1", "train.export=true"])  # fmt: skip
    with caplog.at_level(logging.WARNING):
        result = train(cfg)
    assert "safety_checker" in caplog.text and "not" in caplog.text
    card = (result.output_dir / "target" / "README.md").read_text()
    assert "`safety_checker`" in card and "**not** passed through a safety checker" in card
    assert not (result.output_dir / "target" / "safety_checker").exists()
