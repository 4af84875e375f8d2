"""Super-resolution of dynamic series, frame by frame (streaming, geometry-exact).

:mod:`~mrisr.reconstruct.pipeline` holds the per-frame pipeline (:func:`prepare_state`,
:func:`reconstruct_frame`); each of its steps is a function in a module of its own
(``grid``, ``prior``/``motion``, ``gate``, ``changes``, ``network_input``, ``change_guard``,
``keyhole``, ``maps``). :mod:`~mrisr.reconstruct.run` streams files through it;
:mod:`~mrisr.reconstruct.options` is the option schema every face reads. Fine-tuning before a
reconstruction is the caller layer's (:mod:`mrisr.workflow`).

The names below are imported on first use (PEP 562): reading the option schema (which the command
line does at start-up to build its flags) does not load torch and the reconstruction itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the submodule that defines it
_EXPORTS = {
    "FrameResult": "pipeline",
    "HRGrid": "grid",
    "PreparedPrior": "prior",
    "ReconstructOptions": "options",
    "ReconstructionReport": "run",
    "ReconstructionState": "pipeline",
    "data_consistency": "keyhole",
    "default_output": "run",
    "frame_to_grid": "grid",
    "iter_reconstruct": "pipeline",
    "open_file_job": "run",
    "plan_grid": "grid",
    "prepare_prior": "prior",
    "prepare_state": "pipeline",
    "reconstruct_frame": "pipeline",
    "reconstruct_frames": "pipeline",
    "reconstruct_volume": "pipeline",
    "resample_to_grid": "prior",
    "run_file_job": "run",
    "sidecar_path": "sidecar",
}

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


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    else:
        try:  # a submodule, as ``import mrisr.reconstruct`` used to import them all
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from mrisr.reconstruct.grid import HRGrid, frame_to_grid, plan_grid
    from mrisr.reconstruct.keyhole import data_consistency
    from mrisr.reconstruct.options import ReconstructOptions
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
