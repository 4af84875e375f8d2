"""The HR series of a phantom: every frame the static anatomy, enhanced and cut by the inserted
needle as the frame asks, then moved by that frame's motion."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mrisr.inserts import warp_mask
from mrisr.phantom.contrast import CONTRAST_PEAK, ContrastUptake
from mrisr.phantom.motion import Motion, warp_prefiltered
from mrisr.phantom.structures import Structures

__all__ = ["render_frames"]


def render_frames(
    image: np.ndarray,
    zooms: tuple[float, float, float],
    coefficients: np.ndarray,
    motion: Motion,
    uptake: ContrastUptake,
    structures: Structures,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The HR frames of ``image`` ``(X, Y, Z)`` (``coefficients``: its B-spline coefficients).

    Returns:
        ``hr`` ``(X, Y, Z, T)`` float32 (clipped at 0), the inserted needle's core per frame
        ``(X, Y, Z, T)`` bool (or None), and where each frame carries the planning-only needle's
        site ``(X, Y, Z, T)`` bool (or None).
    """
    shape = image.shape
    frames = len(motion.breathing)
    needle, planning_occupancy = structures.needle, structures.planning_occupancy
    hr_data = np.empty((*shape, frames), dtype=np.float32)
    insert_mask = np.zeros((*shape, frames), dtype=bool) if needle else None
    planning_insert_mask = np.zeros((*shape, frames), dtype=bool) if structures.planning_needle else None
    for t in range(frames):
        displacement = motion.frame_displacement(float(motion.breathing[t]), t)
        if planning_occupancy is not None:
            # where the motion carries the site of the needle only the planning scan has
            planning_insert_mask[..., t] = warp_mask(planning_occupancy, displacement)
        if needle is not None:
            occupancy = structures.frame_occupancy(shape, zooms, t, frames)
            enhanced = image * (1.0 + np.float32(uptake.curve[t]) * CONTRAST_PEAK * uptake.weight)
            coef = ndimage.spline_filter(enhanced * (1.0 - occupancy), order=3, mode="nearest", output=np.float32)
            insert_mask[..., t] = warp_mask(occupancy, displacement)
        elif uptake.coefficients is None:
            coef = coefficients
        else:
            coef = coefficients + np.float32(uptake.curve[t]) * uptake.coefficients
        hr_data[..., t] = np.clip(warp_prefiltered(coef, displacement), 0.0, None)
    return hr_data, insert_mask, planning_insert_mask
