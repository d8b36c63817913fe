"""A curriculum on the skipping step: few grid points (a large k) first, refined toward N (issue 11).

Why: consistency training learns the data only at the boundary (t_n = 0) and hands it up the grid one skipping step
per target update, so with N = 50 points the high-noise end - which decides layout and background - is the last to
learn a new domain (LCM paper Algorithm 4 as written adapts slowly). With N_s = 5 points a step spans k = 200
timesteps and the boundary is at most 5 hops from t = 999; refining N afterwards makes the targets accurate again.
This is improved consistency training's doubling schedule (Song & Dhariwal 2023, "Improved Techniques for Training
Consistency Models", §3.3: N(step) = min(s0 * 2^floor(step / K'), s1)), kept on our nested grids: every stage's N
divides the final N, so each coarse grid point is also a point of the final grid [k-1, 2k-1, ..., T-1] that
inference uses (a doubled N that does not divide the final N is rounded down to the largest one that does).

The target EMA can be tied to the stage, as consistency training's mu(N) = exp(s0 log mu0 / N) (Song et al. 2023,
"Consistency Models", Appendix C): with mu0 chosen so that the final stage has train.ema_decay, mu(N) = mu^(N_final / N)
- a coarse stage's target follows the student faster, the final stage's is the configured one.

Both are pure functions of the optimiser step, so a resumed run draws exactly what an uninterrupted one does.
"""

from __future__ import annotations

CURRICULA = ("none", "doubling")  # objective.curriculum
EMA_SCHEDULES = ("fixed", "curriculum")  # train.ema_schedule


def curriculum_stages(final_points: int, start_points: int) -> list[int]:
    """The stage sizes N_0 < N_1 < ... = final_points: start, then doubling, each rounded down to a divisor of
    final_points (repeats dropped). ``start_points`` must itself divide ``final_points``."""
    if start_points < 1 or final_points % start_points:
        raise ValueError(
            f"objective.curriculum_start_points={start_points} must be a positive divisor of objective.num_points="
            f"{final_points} (coarse grids must be nested in the final one); e.g. "
            f"{', '.join(str(d) for d in range(1, final_points) if final_points % d == 0)}."
        )
    divisors = [d for d in range(1, final_points + 1) if final_points % d == 0]
    stages, n = [start_points], start_points
    while stages[-1] < final_points:
        n *= 2
        stage = max(d for d in divisors if d <= min(n, final_points))
        if stage > stages[-1]:
            stages.append(stage)
    return stages


def curriculum_points(step: int, final_points: int, curriculum: str = "none", start_points: int = 5,
                      stage_steps: int = 100) -> int:  # fmt: skip
    """N for optimiser step ``step`` (0-based): final_points without a curriculum; with "doubling", stage
    floor(step / stage_steps) of :func:`curriculum_stages`, then final_points for ever."""
    if curriculum == "none":
        return final_points
    if curriculum != "doubling":
        raise ValueError(f"objective.curriculum={curriculum!r} is not one of {list(CURRICULA)}.")
    if stage_steps < 1:
        raise ValueError(f"objective.curriculum_stage_steps={stage_steps} must be positive.")
    stages = curriculum_stages(final_points, start_points)
    return stages[min(step // stage_steps, len(stages) - 1)]


def curriculum_ema(mu: float, points: int, final_points: int, schedule: str = "fixed") -> float:
    """Target EMA rate at a stage of ``points`` grid points: mu (fixed) or mu^(final_points / points) (curriculum;
    consistency training's mu(N) with the final stage at mu). mu = 0 (target = student) stays 0."""
    if schedule == "fixed" or mu == 0.0:
        return mu
    if schedule != "curriculum":
        raise ValueError(f"train.ema_schedule={schedule!r} is not one of {list(EMA_SCHEDULES)}.")
    return mu ** (final_points / points)
