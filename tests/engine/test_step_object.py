"""The step object: its logs reach tensorboard, the resolved config travels with every checkpoint and export, and
its pieces (grid, latent shape, target, teacher) are built once from the models."""

from __future__ import annotations

import torch

from lcm_distill.config import load_config
from lcm_distill.engine import RunLayout, load_run_models, train
from lcm_distill.objectives import ConsistencyStep


def _scalar_tags(logs) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for f in sorted(logs.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


def test_step_logs_reach_tensorboard_and_the_config_travels_with_checkpoints_and_exports(make_cfg):
    cfg = make_cfg("train.report_to=tensorboard", "train.log_every=1", "train.export=true")
    result = train(cfg)
    layout = RunLayout(result.output_dir)
    assert {"loss", "lr", "omega_mean", "t_mean", "skipped_samples"} <= _scalar_tags(layout.logs)
    resolved = layout.config.read_text()
    assert resolved == cfg.to_yaml()
    for folder in (result.last_checkpoint, layout.export("student"), layout.export("target")):
        assert (folder / "config.resolved.yaml").read_text() == resolved, folder
    again = load_config(result.last_checkpoint / "config.resolved.yaml")
    assert again == cfg


def test_consistency_step_builds_its_pieces_once_from_the_models(make_cfg):
    cfg = make_cfg("objective.num_points=20", "train.ema_decay=0.5")
    models = load_run_models(cfg)
    step = ConsistencyStep(models, cfg.objective, cfg.data.resolution)
    assert step.grid.k == 50 and step.latent_shape == models.latent_shape(16)
    assert step.target is models.target and step.student is models.student
    with step.teacher_ctx() as teacher:
        assert teacher is models.teacher
    noise = step.draw(cfg.train.seed, 3, 4)
    assert torch.equal(noise.start - noise.end, torch.full((4,), 50).minimum(noise.start))
    assert torch.equal(step.draw(cfg.train.seed, 3, 4).noise, noise.noise)
    lcf = load_config(None, [f"model.teacher={cfg.model.teacher}", f"data.dataset={cfg.data.dataset}",
                             "objective.kind=lcf", "train.ema_decay=0"])  # fmt: skip
    no_target = ConsistencyStep(load_run_models(lcf), lcf.objective, 16)
    assert no_target.teacher_ctx is None and no_target.target is no_target.student  # mu = 0: the student itself
