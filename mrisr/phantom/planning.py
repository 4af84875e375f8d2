"""The planning scan of a phantom: the static anatomy at its own motion state, without contrast,
optionally with another tissue contrast, a needle the series does not have, and noise of its own."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mrisr.inserts import swap_contrast, warp_mask
from mrisr.kspace.functional import add_complex_noise
from mrisr.metrics.fidelity import structure_contrast
from mrisr.phantom.motion import warp_prefiltered

__all__ = ["render_planning"]


def render_planning(
    image: np.ndarray,
    coefficients: np.ndarray,
    planning_field: np.ndarray,
    planning_contrast: str,
    planning_occupancy: np.ndarray | None,
    noise_snr: float | None,
    noise_rng: np.random.Generator,
) -> tuple[np.ndarray, float | None]:
    """The planning scan of ``image`` ``(X, Y, Z)`` moved by ``planning_field`` ``(3, X, Y, Z)``.

    Args:
        image: the static anatomy; ``coefficients`` are its B-spline coefficients.
        planning_contrast: ``"same"``, or ``"swap"`` (:func:`mrisr.inserts.swap_contrast`).
        planning_occupancy: ``(X, Y, Z)`` needle only the planning scan has, or None.
        noise_snr: complex Gaussian noise added at this SNR (magnitude, so Rician), or None.
        noise_rng: the planning scan's noise stream.

    Returns:
        ``(X, Y, Z)`` float32, and the planning-only needle's contrast in it
        (:func:`mrisr.metrics.structure_contrast`, before noise) or None.
    """
    planning_source = swap_contrast(image) if planning_contrast == "swap" else image
    if planning_occupancy is not None:
        planning_source = planning_source * (1.0 - planning_occupancy)
    planning_coef = (coefficients if planning_source is image
                     else ndimage.spline_filter(planning_source, order=3, mode="nearest", output=np.float32))
    planning_data = np.clip(warp_prefiltered(planning_coef, planning_field), 0.0, None)
    planning_insert_contrast = None
    if planning_occupancy is not None:
        planning_insert_contrast = structure_contrast(planning_data, warp_mask(planning_occupancy, planning_field))
    if noise_snr is not None:
        planning_data = np.abs(add_complex_noise(planning_data, float(noise_snr), noise_rng)).astype(np.float32)
    return planning_data, planning_insert_contrast
