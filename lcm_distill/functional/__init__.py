"""Pure tensor math of LCD/LCF (imports torch only): schedule, grid, solvers, scalings, guidance, losses."""

from ..conventions import (
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_NUM_TRAIN_TIMESTEPS,
    guidance_scale_from_omega,
    num_train_timesteps,
    omega_from_guidance_scale,
)
from .consistency import SIGMA_DATA, TIMESTEP_SCALING, boundary_scalings, consistency_function
from .dtypes import DTYPE_NAMES, DTYPES, dtype_from_name, dtype_name
from .grid import TIMESTEP_SAMPLINGS, SkippingGrid, timestep_weights
from .guidance import cfg_combine, omega_embedding, sample_omega
from .losses import LOSS_TYPES, LOSSES, consistency_loss, l1_loss, l2_loss, pseudo_huber_ict_loss, pseudo_huber_loss
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
    Solver,
    ddim_step,
    dpm_solver_first_order,
    dpm_solver_pp_first_order,
    guided_solver_step,
    lambda_midpoint,
    solver_step,
)

__all__ = [
    "CFG_PLACEMENTS",
    "DEFAULT_GUIDANCE_SCALE",
    "DEFAULT_NUM_TRAIN_TIMESTEPS",
    "DTYPES",
    "DTYPE_NAMES",
    "LOSSES",
    "LOSS_TYPES",
    "PREDICTION_TYPES",
    "SIGMA_DATA",
    "SOLVERS",
    "TIMESTEP_SAMPLINGS",
    "TIMESTEP_SCALING",
    "NoiseSchedule",
    "SkippingGrid",
    "Solver",
    "alpha_sigma_from_lambda",
    "betas_from_config",
    "boundary_scalings",
    "cfg_combine",
    "consistency_function",
    "consistency_loss",
    "ddim_step",
    "dpm_solver_first_order",
    "dpm_solver_pp_first_order",
    "dtype_from_name",
    "dtype_name",
    "from_x0_eps",
    "guidance_scale_from_omega",
    "guided_solver_step",
    "l1_loss",
    "l2_loss",
    "lambda_midpoint",
    "num_train_timesteps",
    "omega_embedding",
    "omega_from_guidance_scale",
    "pseudo_huber_ict_loss",
    "pseudo_huber_loss",
    "sample_omega",
    "solver_step",
    "timestep_weights",
    "to_x0_eps",
]
