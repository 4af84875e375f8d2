"""Super-resolution of dynamic series, frame by frame (streaming, geometry-exact).

:mod:`~mrisr.reconstruct.pipeline` holds the per-frame pipeline (:func:`prepare_state`,
:func:`reconstruct_frame`); each of its steps is a function in a module of its own
(``grid``, ``prior``/``motion``, ``gate``, ``changes``, ``network_input``, ``change_guard``,
``keyhole``, ``maps``). :mod:`~mrisr.reconstruct.run` streams files through it. Fine-tuning before a
reconstruction is the caller layer's (:mod:`mrisr.workflow`).
"""

from mrisr.reconstruct.grid import HRGrid, frame_to_grid, plan_grid
from mrisr.reconstruct.keyhole import data_consistency
from mrisr.reconstruct.pipeline import (
    FrameResult,
    ReconstructionState,
    iter_reconstruct,
    prepare_state,
    reconstruct_frame,
    reconstruct_frames,
    reconstruct_volume,
)
from mrisr.reconstruct.prior import PreparedPrior, prepare_prior, resample_to_grid
from mrisr.reconstruct.run import ReconstructionReport, default_output, open_file_job, run_file_job
from mrisr.reconstruct.sidecar import sidecar_path
from mrisr.reconstruct.stepwise import ReconstructOptions

__all__ = [
    "FrameResult",
    "HRGrid",
    "PreparedPrior",
    "ReconstructOptions",
    "ReconstructionReport",
    "ReconstructionState",
    "data_consistency",
    "default_output",
    "frame_to_grid",
    "iter_reconstruct",
    "open_file_job",
    "plan_grid",
    "prepare_prior",
    "prepare_state",
    "reconstruct_frame",
    "reconstruct_frames",
    "reconstruct_volume",
    "resample_to_grid",
    "run_file_job",
    "sidecar_path",
]
