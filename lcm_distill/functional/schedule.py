"""Noise schedule, forward noising and prediction-type conversions.

Notation (docs/design.md, LCM paper §3): ``abar_t = alphas_cumprod[t]``, ``alpha_t = sqrt(abar_t)``,
``sigma_t = sqrt(1 - abar_t)``, ``lambda_t = log(alpha_t / sigma_t)``; integer t in ``{0..T-1}``.

The schedule is built in fp32 exactly as diffusers builds it, so ``alphas_cumprod`` matches
``DDPMScheduler(...).alphas_cumprod`` bit for bit; every gather returns fp32 (never float64), which
keeps the consistency targets in fp32 whatever dtype the networks run in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..conventions import num_train_timesteps

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _betas_for_alpha_bar(num_steps: int, max_beta: float = 0.999) -> Tensor:
    """Cosine ("squaredcos_cap_v2") betas, Nichol & Dhariwal 2021 Eq. 17, as diffusers computes them."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float32)


def _rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. 2023 Alg. 1: shift/scale sqrt(abar) so that the last timestep has zero SNR."""
    alphas_bar_sqrt = (1.0 - betas).cumprod(dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


def betas_from_config(config: Mapping[str, Any]) -> Tensor:
    """The teacher's betas, from a diffusers scheduler config (dict or FrozenDict)."""
    num = num_train_timesteps(config)
    kind = config.get("beta_schedule", "linear")
    start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    trained = config.get("trained_betas")
    if trained is not None:
        betas = torch.tensor(trained, dtype=torch.float32)
    elif kind == "linear":
        betas = torch.linspace(start, end, num, dtype=torch.float32)
    elif kind == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, num, dtype=torch.float32) ** 2
    elif kind == "squaredcos_cap_v2":
        betas = _betas_for_alpha_bar(num)
    else:
        raise ValueError(
            f"scheduler config key 'beta_schedule'={kind!r} is not supported; "
            "use 'linear', 'scaled_linear' or 'squaredcos_cap_v2' (or give 'trained_betas')."
        )
    if config.get("rescale_betas_zero_snr", False):
        betas = _rescale_zero_terminal_snr(betas)
    return betas


def _per_sample(values: Tensor, ndim: int) -> Tensor:
    """Reshape a (B,) tensor to (B, 1, ..., 1) so it broadcasts against an ndim-d batch."""
    return values.reshape(values.shape[0], *([1] * (ndim - 1)))


@dataclass(frozen=True)
class NoiseSchedule:
    """Discrete VP schedule of the teacher: the only source of alpha/sigma/lambda in the toolkit.

    ``alphas_cumprod`` is fp32 by default; :meth:`to` moves or re-types it (tests use float64).
    """

    alphas_cumprod: Tensor
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type={self.prediction_type!r} is not supported; use one of {PREDICTION_TYPES}."
            )

    @classmethod
    def from_config(cls, config: Mapping[str, Any], prediction_type: str | None = None) -> NoiseSchedule:
        """Build from a diffusers scheduler config; prediction type defaults to the config's."""
        betas = betas_from_config(config)
        abar = torch.cumprod(1.0 - betas, dim=0)
        return cls(abar, prediction_type or config.get("prediction_type", "epsilon"))

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> NoiseSchedule:
        return NoiseSchedule(self.alphas_cumprod.to(device=device, dtype=dtype), self.prediction_type)

    @property
    def alphas(self) -> Tensor:
        return self.alphas_cumprod.sqrt()

    @property
    def sigmas(self) -> Tensor:
        return (1.0 - self.alphas_cumprod).sqrt()

    @property
    def lambdas(self) -> Tensor:
        return self.alphas.log() - self.sigmas.log()

    def alpha_sigma(self, t: Tensor, ndim: int = 4) -> tuple[Tensor, Tensor]:
        """alpha_t, sigma_t for per-sample timesteps t (B,), shaped (B, 1, 1, 1) for ndim=4.

        Integer t gathers the table; floating t (DPM-Solver midpoints) interpolates lambda linearly between
        neighbouring integers, the exact inverse of :meth:`timestep_for_lambda`.
        """
        if t.is_floating_point():
            alpha, sigma = alpha_sigma_from_lambda(self.lambda_at(t))
            return _per_sample(alpha, ndim), _per_sample(sigma, ndim)
        abar = self.alphas_cumprod.to(t.device)[t.long()]
        return _per_sample(abar.sqrt(), ndim), _per_sample((1.0 - abar).sqrt(), ndim)

    def lambda_at(self, t: Tensor) -> Tensor:
        """lambda at continuous timesteps: piecewise-linear interpolation of the discrete table."""
        lam = self.lambdas.to(t.device)
        tf = t.to(lam.dtype).clamp(0, lam.shape[0] - 1)
        lo = tf.floor().long().clamp(max=lam.shape[0] - 2)
        w = tf - lo
        return (1 - w) * lam[lo] + w * lam[lo + 1]

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Forward process q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) (LCM paper Eq. 1)."""
        alpha, sigma = self.alpha_sigma(t, x0.ndim)
        return alpha * x0 + sigma * noise

    def timestep_for_lambda(self, lam: Tensor) -> Tensor:
        """Continuous timestep whose log-sigma matches ``lam`` (DPM-Solver midpoints).

        Linear interpolation of log(sigma_t/alpha_t) = -lambda_t over the discrete table, as diffusers'
        ``_sigma_to_t`` does, so a midpoint in lambda maps to a (generally non-integer) timestep.
        """
        table = -self.lambdas.to(lam.device, torch.float64)  # increasing in t
        x = (-lam).to(torch.float64).clamp(table[0], table[-1])
        hi = torch.searchsorted(table, x).clamp(1, table.shape[0] - 1)
        lo = hi - 1
        w = (x - table[lo]) / (table[hi] - table[lo])
        return (lo.to(torch.float64) + w).to(lam.dtype)


def alpha_sigma_from_lambda(lam: Tensor) -> tuple[Tensor, Tensor]:
    """VP alpha, sigma with log(alpha/sigma) = lambda: alpha^2 = sigmoid(2 lambda), sigma^2 = sigmoid(-2 lambda)."""
    return torch.sigmoid(2 * lam).sqrt(), torch.sigmoid(-2 * lam).sqrt()


def to_x0_eps(output: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, prediction_type: str) -> tuple[Tensor, Tensor]:
    """Turn any network output into (x0_hat, eps_hat) given x_t = alpha x0 + sigma eps.

    eps: x0 = (x - sigma out)/alpha; v (Salimans & Ho 2022): x0 = alpha x - sigma out, eps = alpha out + sigma x;
    sample: eps = (x - alpha out)/sigma. Using the raw output as eps for a v-teacher is the bug that made SD 2.1
    (768, v) distillations sample noise, so every caller goes through here.
    """
    if prediction_type == "epsilon":
        return (x - sigma * output) / alpha, output
    if prediction_type == "v_prediction":
        return alpha * x - sigma * output, alpha * output + sigma * x
    if prediction_type == "sample":
        return output, (x - alpha * output) / sigma
    raise ValueError(f"prediction_type={prediction_type!r} is not supported; use one of {PREDICTION_TYPES}.")


def from_x0_eps(x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor, prediction_type: str) -> Tensor:
    """The network output that :func:`to_x0_eps` maps back to (x0, eps): the regression target of DDPM training."""
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        return alpha * eps - sigma * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"prediction_type={prediction_type!r} is not supported; use one of {PREDICTION_TYPES}.")
