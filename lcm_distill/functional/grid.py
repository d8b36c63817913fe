"""The skipping-step grid shared by training targets and inference (LCM paper §4.2, Eq. 8-9).

With T training timesteps and N solver points, the skipping step is k = T // N and the grid is
``[k-1, 2k-1, ..., N*k-1]`` (N=50, T=1000: ``[19, 39, ..., 999]``, k=20 as in the paper). A training pair is
(t_{n+k}, t_n) = (grid[i], max(grid[i] - k, 0)): the first step lands on t=0, whose abar is abar[0], not 1.
This equals diffusers' DDIMScheduler with ``timestep_spacing="trailing"`` and LCMScheduler's origin grid, and
inference timesteps are chosen on it, so the student is never asked about a timestep it was not trained on.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..conventions import DEFAULT_NUM_TRAIN_TIMESTEPS, grid_problem

TIMESTEP_SAMPLINGS = ("uniform", "high_noise")  # objective.timestep_sampling


def timestep_weights(num_points: int, sampling: str = "uniform") -> Tensor:
    """Probabilities of the N grid points (ascending t) as the training t_{n+k}: "uniform" (LCM Algorithm 1/4) or
    "high_noise", p(i) proportional to i + 1 (t = 999 drawn N times as often as the first point, mean index ~2N/3).

    Why high noise (issue 11): consistency training learns the data at the boundary and passes it up the grid, so
    the high-noise end - layout, background - moves last when fine-tuning on a new domain; drawing it more often
    gives it more updates. (Improved CT's lognormal instead favours mid noise; this is the opposite bet for LCF.)
    """
    if sampling == "uniform":
        return torch.full((num_points,), 1.0 / num_points, dtype=torch.float64)
    if sampling == "high_noise":
        ramp = torch.arange(1, num_points + 1, dtype=torch.float64)
        return ramp / ramp.sum()
    raise ValueError(f"objective.timestep_sampling={sampling!r} is not one of {list(TIMESTEP_SAMPLINGS)}.")


@dataclass(frozen=True)
class SkippingGrid:
    """Grid of N solver points over T training timesteps; N must divide T (otherwise the grid ends below T-1)."""

    num_train_timesteps: int = DEFAULT_NUM_TRAIN_TIMESTEPS
    num_points: int = 50

    def __post_init__(self) -> None:
        problem = grid_problem(self.num_train_timesteps, self.num_points)
        if problem:
            raise ValueError(problem)

    @property
    def k(self) -> int:
        """Skipping step k = T // N (paper's k; k=20 for N=50)."""
        return self.num_train_timesteps // self.num_points

    @property
    def timesteps(self) -> Tensor:
        """Ascending grid [k-1, 2k-1, ..., T-1] (int64)."""
        return torch.arange(1, self.num_points + 1, dtype=torch.int64) * self.k - 1

    def previous(self, t: Tensor) -> Tensor:
        """t_n = t_{n+k} - k, clamped at 0."""
        return (t - self.k).clamp_min(0)

    def sample_pairs(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        sampling: str = "uniform",
    ) -> tuple[Tensor, Tensor]:
        """Per-sample (t_{n+k}, t_n), t_{n+k} drawn over the N grid points: uniform (Algorithm 1 line 3) or with
        :func:`timestep_weights` ("uniform" keeps the exact random stream of the unweighted draw)."""
        if sampling == "uniform":
            index = torch.randint(0, self.num_points, (batch_size,), generator=generator, device="cpu")
        else:
            weights = timestep_weights(self.num_points, sampling)
            index = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
        start = self.timesteps[index].to(device)
        return start, self.previous(start)

    def inference_timesteps(self, num_steps: int, strength: float = 1.0) -> list[int]:
        """Descending n-step schedule on the grid, chosen as diffusers' LCMScheduler does (evenly spaced, PR #5836).

        ``strength`` < 1 (img2img) restricts the grid to its first floor(N * strength) points, so sampling starts
        from a partly noised input.
        """
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength={strength} must lie in (0, 1]; 1 means start from pure noise.")
        usable = int(self.num_points * strength)
        if num_steps < 1:
            raise ValueError(f"num_inference_steps={num_steps} must be at least 1.")
        if usable < 1 or num_steps > usable:
            raise ValueError(
                f"num_inference_steps={num_steps} exceeds the {usable} grid points available "
                f"(num_points={self.num_points} x strength={strength}); use fewer steps or a larger strength."
            )
        grid = self.timesteps[:usable].flip(0)
        step = usable / num_steps  # float64 step, exactly as numpy.linspace(0, usable, n, endpoint=False)
        index = [math.floor(i * step) for i in range(num_steps)]
        return [int(grid[i]) for i in index]

    def validate(self, timesteps: list[int]) -> list[int]:
        """Check custom inference timesteps: strictly descending and on the grid. Returns them as ints."""
        ts = [int(t) for t in timesteps]
        if not ts:
            raise ValueError("timesteps must not be empty.")
        on_grid = set(self.timesteps.tolist())
        off = [t for t in ts if t not in on_grid]
        if off:
            raise ValueError(
                f"timesteps {off} are not on the training grid (k={self.k}: {self.k - 1}, {2 * self.k - 1}, ..., "
                f"{self.num_train_timesteps - 1}); the student was trained only there."
            )
        if any(a <= b for a, b in itertools.pairwise(ts)):
            raise ValueError(f"timesteps {ts} must be strictly descending.")
        return ts
