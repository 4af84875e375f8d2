"""Step-wise temporal super-resolution of dynamic series (streaming, geometry-exact)."""

from mrisr.reconstruct.grid import HRGrid, plan_grid
from mrisr.reconstruct.prior import PreparedPrior, prepare_prior, resample_to_grid
from mrisr.reconstruct.run import ReconstructionReport, reconstruct_file, sidecar_path
from mrisr.reconstruct.stepwise import (
    FrameResult,
    Reconstruction,
    ReconstructOptions,
    data_consistency,
    default_output,
    iter_reconstruct,
    reconstruct_volume,
)

__all__ = [
    "FrameResult",
    "HRGrid",
    "PreparedPrior",
    "ReconstructOptions",
    "Reconstruction",
    "ReconstructionReport",
    "data_consistency",
    "default_output",
    "iter_reconstruct",
    "plan_grid",
    "prepare_prior",
    "reconstruct_file",
    "reconstruct_volume",
    "resample_to_grid",
    "sidecar_path",
]
