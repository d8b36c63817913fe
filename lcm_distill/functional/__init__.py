"""Pure tensor math of LCD/LCF (imports torch only): schedule, grid, solvers, scalings, guidance, losses."""

from .consistency import SIGMA_DATA, TIMESTEP_SCALING, boundary_scalings, consistency_function
from .grid import SkippingGrid
from .guidance import cfg_combine, omega_embedding, omega_from_guidance_scale, sample_omega
from .losses import LOSS_TYPES, consistency_loss, l1_loss, l2_loss, pseudo_huber_loss
from .schedule import (
    PREDICTION_TYPES,
    NoiseSchedule,
    alpha_sigma_from_lambda,
    betas_from_config,
    from_x0_eps,
    to_x0_eps,
)
from .solvers import (
    CFG_PLACEMENTS,
    SOLVERS,
    ddim_step,
    dpm_solver_first_order,
    dpm_solver_pp_first_order,
    guided_solver_step,
    lambda_midpoint,
    solver_step,
)

__all__ = [
    "CFG_PLACEMENTS",
    "LOSS_TYPES",
    "PREDICTION_TYPES",
    "SIGMA_DATA",
    "SOLVERS",
    "TIMESTEP_SCALING",
    "NoiseSchedule",
    "SkippingGrid",
    "alpha_sigma_from_lambda",
    "betas_from_config",
    "boundary_scalings",
    "cfg_combine",
    "consistency_function",
    "consistency_loss",
    "ddim_step",
    "dpm_solver_first_order",
    "dpm_solver_pp_first_order",
    "from_x0_eps",
    "guided_solver_step",
    "l1_loss",
    "l2_loss",
    "lambda_midpoint",
    "omega_embedding",
    "omega_from_guidance_scale",
    "pseudo_huber_loss",
    "sample_omega",
    "solver_step",
    "to_x0_eps",
]
