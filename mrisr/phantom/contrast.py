"""Contrast uptake of a phantom: a gamma-variate curve over time in a smooth spherical region.

A voxel's intensity is multiplied by ``1 + CONTRAST_PEAK * curve[t] * weight`` before warping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["CONTRAST_PEAK", "ContrastUptake", "gamma_variate", "plan_contrast"]

#: largest relative intensity increase of the contrast region at the peak of uptake
CONTRAST_PEAK = 0.4


@dataclass
class ContrastUptake:
    """Contrast of a series.

    Attributes:
        curve: ``(T,)`` relative uptake per frame in ``[0, 1]`` (zeros without contrast).
        weight: ``(X, Y, Z)`` smooth region weight in ``[0, 1]`` in the static anatomy's frame.
        coefficients: B-spline coefficients of the enhancement at full uptake
            (``image * CONTRAST_PEAK * weight``), or None without contrast.
    """

    curve: np.ndarray
    weight: np.ndarray
    coefficients: np.ndarray | None


def gamma_variate(times: np.ndarray, onset: float, time_to_peak: float, alpha: float = 3.0) -> np.ndarray:
    """Gamma-variate uptake normalised to peak 1 at ``onset + time_to_peak`` (0 before ``onset``).

    ``c(t) = (s ** alpha) * exp(alpha * (1 - s))`` with ``s = (t - onset) / time_to_peak``.
    """
    s = np.clip((np.asarray(times, dtype=np.float64) - onset) / time_to_peak, 0.0, None)
    return (s**alpha * np.exp(alpha * (1.0 - s))).astype(np.float32)


def _contrast_region(static: np.ndarray, zooms: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Smooth spherical weight ``(X, Y, Z)`` in ``[0, 1]``, centred on a random bright voxel near the middle."""
    shape = static.shape
    fov = np.asarray(shape) * np.asarray(zooms)
    radius = float(np.clip(0.12 * min(fov[0], fov[1]), 4.0 * max(zooms), 25.0))
    central = np.zeros(shape, dtype=bool)
    central[tuple(slice(n // 4, n - n // 4) if n >= 4 else slice(None) for n in shape)] = True
    bright = static > np.percentile(static[central], 60)
    candidates = np.argwhere(bright & central)
    if len(candidates) == 0:
        candidates = np.argwhere(central)
    centre = candidates[rng.integers(len(candidates))]
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    dist2 = sum(((g - c) * z) ** 2 for g, c, z in zip(grids, centre, zooms))
    edge = 0.25 * radius
    # logistic edge: 1 inside, 0 outside, smooth over ~a quarter radius
    return (1.0 / (1.0 + np.exp((np.sqrt(dist2) - radius) / edge))).astype(np.float32)


def plan_contrast(
    image: np.ndarray,
    zooms: tuple[float, float, float],
    frames: int,
    tr: float,
    contrast: bool,
    rng: np.random.Generator,
) -> ContrastUptake:
    """Uptake starting at 10 % of the series and peaking at 50 %, in a sphere around a bright voxel of
    ``image`` ``(X, Y, Z)``; all zeros when ``contrast`` is False."""
    times = np.arange(frames, dtype=np.float64) * tr
    duration = max(frames * tr, tr)
    if not contrast:
        return ContrastUptake(np.zeros(frames, dtype=np.float32), np.zeros(image.shape, dtype=np.float32), None)
    curve = gamma_variate(times, onset=0.1 * duration, time_to_peak=0.4 * duration)
    weight = _contrast_region(image, zooms, rng)
    # B-spline coefficients are linear in the image: prefilter the enhancement once
    coefficients = ndimage.spline_filter(image * (CONTRAST_PEAK * weight), order=3, mode="nearest", output=np.float32)
    return ContrastUptake(curve, weight, coefficients)
