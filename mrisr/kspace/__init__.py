"""k-space undersampling simulation: functional core, masks, volume-level simulation.

The MONAI transforms live in :mod:`mrisr.kspace.transforms` (imported on demand: MONAI is heavy).
"""

from mrisr.kspace.functional import (
    add_complex_noise,
    apply_mask,
    center_crop_lowres,
    center_keep_shape,
    crop_kspace,
    crop_lowres,
    fftc,
    ifftc,
    keep_percent_of,
    pad_kspace,
    zero_fill,
)
from mrisr.kspace.masks import (
    MASKS,
    CenterMask,
    EquispacedLineMask,
    KspaceMask,
    RandomLineMask,
    VariableDensityMask,
    make_mask,
)
from mrisr.kspace.simulate import SimulationInfo, simulate_volume, undersample_array

__all__ = [
    "MASKS",
    "CenterMask",
    "EquispacedLineMask",
    "KspaceMask",
    "RandomLineMask",
    "SimulationInfo",
    "VariableDensityMask",
    "add_complex_noise",
    "apply_mask",
    "center_crop_lowres",
    "crop_lowres",
    "center_keep_shape",
    "crop_kspace",
    "fftc",
    "ifftc",
    "keep_percent_of",
    "make_mask",
    "pad_kspace",
    "simulate_volume",
    "undersample_array",
    "zero_fill",
]
