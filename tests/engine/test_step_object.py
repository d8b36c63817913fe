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


def test_the_step_logs_the_gradient_norm_before_clipping(make_cfg):
    """grad_norm (tensorboard, every log_every steps) is the global norm the optimiser would have seen unclipped:
    with a huge max_grad_norm it equals the norm of the gradients the optimiser steps on; with a tiny one it stays
    that pre-clip value while the optimiser sees gradients clipped to max_grad_norm."""
    from lcm_distill.engine import set_up_run
    from lcm_distill.engine.engine_choice import resolve_engine
    from lcm_distill.engine.parallel import Parallel

    seen = {}
    for max_norm in (1e9, 1e-4):
        cfg = make_cfg(f"optim.max_grad_norm={max_norm:g}")
        parallel = Parallel(resolve_engine(cfg))
        parallel.build_accelerator(cfg)
        run = set_up_run(cfg, parallel)
        stepped = []
        original = run.optimizer.step

        def record(*a, _orig=original, _params=run.step.params, _stepped=stepped, **k):
            _stepped.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in _params])).item())
            return _orig(*a, **k)

        run.optimizer.step = record
        result = run.step(0, iter(run.batches))
        seen[max_norm] = (result.logs["grad_norm"], stepped[-1])
    logged, applied = seen[1e9]
    assert logged > 1e-3 and abs(logged - applied) <= 1e-5 * logged
    logged_small, applied_small = seen[1e-4]
    assert abs(logged_small - logged) <= 1e-5 * logged  # same seed, same batch: the same pre-clip norm
    assert abs(applied_small - 1e-4) < 1e-6
