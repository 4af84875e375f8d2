"""Step-wise temporal super-resolution of dynamic series (streaming, geometry-exact).

The names below are imported on first use (PEP 562): reading the option schema
(:mod:`mrisr.reconstruct.options`, which the command line does at start-up to build its flags)
does not load torch and the reconstruction itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the submodule that defines it
_EXPORTS = {
    "FrameResult": "stepwise",
    "HRGrid": "grid",
    "PreparedPrior": "prior",
    "ReconstructOptions": "options",
    "Reconstruction": "stepwise",
    "ReconstructionReport": "run",
    "data_consistency": "stepwise",
    "default_output": "stepwise",
    "iter_reconstruct": "stepwise",
    "plan_grid": "grid",
    "prepare_prior": "prior",
    "reconstruct_file": "run",
    "reconstruct_volume": "stepwise",
    "resample_to_grid": "prior",
    "sidecar_path": "run",
}

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
    from mrisr.reconstruct.grid import HRGrid, plan_grid
    from mrisr.reconstruct.options import ReconstructOptions
    from mrisr.reconstruct.prior import PreparedPrior, prepare_prior, resample_to_grid
    from mrisr.reconstruct.run import ReconstructionReport, reconstruct_file, sidecar_path
    from mrisr.reconstruct.stepwise import (
        FrameResult,
        Reconstruction,
        data_consistency,
        default_output,
        iter_reconstruct,
        reconstruct_volume,
    )
