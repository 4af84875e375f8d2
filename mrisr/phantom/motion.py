"""Motion of a phantom: breathing plus a slowly drifting irregular component per frame, the planning
scan's own motion state, and the cubic B-spline warp that moves the anatomy without blurring it.

Displacements are pull-back fields ``(3, X, Y, Z)`` in voxels, float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mrisr.deform import breathing_field, breathing_trace, smooth_random_field, warp

__all__ = [
    "IRREGULAR_FRACTION",
    "PLANNING_EXTRA_FRACTION",
    "Motion",
    "plan_motion",
    "plan_planning_motion",
    "spline_coefficients",
    "warp_prefiltered",
]

#: irregular (non-breathing) motion, relative to ``motion_mm``
IRREGULAR_FRACTION = 0.15
#: extra random deformation of the planning scan, relative to ``motion_mm``
PLANNING_EXTRA_FRACTION = 0.2


@dataclass
class Motion:
    """How every frame (and the planning scan) is moved from the static anatomy.

    Attributes:
        breathing: ``(T,)`` breathing phase per frame in ``[0, 1]`` (1 = full inspiration).
        unit_breath: ``(3, X, Y, Z)`` displacement at breathing phase 1.
        irregular_fields: two ``(3, X, Y, Z)`` smooth random fields.
        irregular_weights: ``(T, 2)`` their weights per frame, drifting over ~2 s.
        planning_phase: breathing phase of the planning scan (set by :func:`plan_planning_motion`).
        planning_field: ``(3, X, Y, Z)`` displacement of the planning scan (idem).
    """

    breathing: np.ndarray
    unit_breath: np.ndarray
    irregular_fields: list[np.ndarray]
    irregular_weights: np.ndarray
    planning_phase: float | None = None
    planning_field: np.ndarray | None = None

    def frame_displacement(self, phase: float, t: int) -> np.ndarray:
        """Breathing at ``phase`` plus frame ``t``'s irregular motion, ``(3, X, Y, Z)`` float32 voxels."""
        displacement = np.float32(phase) * self.unit_breath
        for weight, irregular in zip(self.irregular_weights[t], self.irregular_fields):
            displacement += np.float32(weight) * irregular
        return displacement

    def tracking_displacement(self, t: int, iterations: int = 8) -> np.ndarray:
        """The displacement ``u`` (voxels) with ``planning(x + u(x)) = hr_t(x)``: what a registration
        of the planning scan to frame ``t`` should find (fixed point of ``u = D_t(x) - P(x + u)``)."""
        target = self.frame_displacement(float(self.breathing[t]), t)
        planning_field = self.planning_field
        u = target - planning_field
        for _ in range(iterations):
            shifted = np.stack([warp(planning_field[a], u) for a in range(3)])
            u = target - shifted
        return u.astype(np.float32)


def _smooth_noise(n: int, knot_every: float, rng: np.random.Generator) -> np.ndarray:
    """``(n,)`` smooth random values in ``[-1, 1]``: random knots every ``knot_every`` samples, linear in between."""
    n_knots = int(np.ceil(max(n - 1, 1) / knot_every)) + 1
    knots = rng.uniform(-1.0, 1.0, n_knots)
    return np.interp(np.arange(n), np.arange(n_knots) * knot_every, knots)


def plan_motion(
    shape: tuple[int, int, int],
    zooms: tuple[float, float, float],
    frames: int,
    tr: float,
    motion_mm: float,
    through_plane_mm: float,
    trace_rng: np.random.Generator,
    irregular_rng: np.random.Generator,
) -> Motion:
    """The breathing trace and fields of a ``frames``-frame series (``tr`` seconds apart), breathing
    up to ``motion_mm`` in plane and ``through_plane_mm`` along the slice axis."""
    breathing = breathing_trace(frames, tr, trace_rng)
    unit_breath = breathing_field(shape, zooms, amplitude_mm=motion_mm)
    if through_plane_mm > 0:
        taper_mm = breathing_field(shape, zooms, amplitude_mm=1.0, expansion=0.0)[1] * np.float32(zooms[1])
        unit_breath[2] += taper_mm * np.float32(through_plane_mm / zooms[2])

    # irregular motion: two smooth random fields mixed with weights that drift over ~2 s
    irregular_max = IRREGULAR_FRACTION * motion_mm / np.sqrt(2.0)
    irregular_fields = [smooth_random_field(shape, zooms, irregular_max, irregular_rng) for _ in range(2)]
    knot_every = max(1.0, 2.0 / tr)
    irregular_weights = np.stack([_smooth_noise(frames, knot_every, irregular_rng) for _ in range(2)], axis=1)
    return Motion(breathing, unit_breath, irregular_fields, irregular_weights)


def plan_planning_motion(
    motion: Motion, zooms: tuple[float, float, float], motion_mm: float, rng: np.random.Generator
) -> None:
    """Set the planning scan's motion state on ``motion``: breathing phase 1.0-1.2 (deep inspiration)
    plus a random field up to 20 % of ``motion_mm``."""
    shape = motion.unit_breath.shape[1:]
    motion.planning_phase = float(rng.uniform(1.0, 1.2))
    motion.planning_field = motion.planning_phase * motion.unit_breath + smooth_random_field(
        shape, zooms, PLANNING_EXTRA_FRACTION * motion_mm, rng
    )


def spline_coefficients(image: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients of ``image`` (mode ``nearest``), float32, for :func:`warp_prefiltered`."""
    return ndimage.spline_filter(image, order=3, mode="nearest", output=np.float32)


def warp_prefiltered(coefficients: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """Cubic pull-back warp of B-spline coefficients (already spline-filtered, mode ``nearest``)."""
    grids = np.ogrid[tuple(slice(0, n) for n in coefficients.shape)]
    coords = np.empty(displacement.shape, dtype=np.float64)
    for axis in range(3):
        np.add(displacement[axis], grids[axis], out=coords[axis])
    return ndimage.map_coordinates(coefficients, coords, order=3, mode="nearest", prefilter=False, output=np.float32)
