"""Smooth deformations for dynamic phantoms: random fields, a breathing field and trace, warping.

Conventions used throughout:

* Displacement fields have shape ``(3, X, Y, Z)``; component ``c`` is the displacement along
  voxel axis ``c`` **in voxels** (not mm). Conversions to and from mm use the volume's
  ``zooms`` (voxel sizes in mm along X, Y, Z).
* :func:`warp` is a pull-back: the output at voxel ``x`` is the input sampled at ``x + d(x)``.
  The anatomy therefore appears shifted by about ``-d``.

Everything random takes a :class:`numpy.random.Generator`; the global RNG is never touched.

Example:
    >>> rng = np.random.default_rng(0)
    >>> field = smooth_random_field((32, 28, 12), (1.5, 1.5, 3.0), max_mm=2.0, rng=rng)
    >>> field.shape
    (3, 32, 28, 12)
    >>> moved = warp(np.ones((32, 28, 12)), field)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.interpolate import make_interp_spline

__all__ = ["breathing_field", "breathing_trace", "field_magnitude_mm", "smooth_random_field", "warp"]


def _check_shape_zooms(shape: Sequence[int], zooms: Sequence[float]) -> tuple[tuple[int, int, int], np.ndarray]:
    shape = tuple(int(s) for s in shape)
    zooms_arr = np.asarray(zooms, dtype=np.float64)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes (X, Y, Z), got {shape}")
    if zooms_arr.shape != (3,) or not np.all(zooms_arr > 0):
        raise ValueError(f"zooms must be three positive voxel sizes in mm, got {tuple(zooms)}")
    return shape, zooms_arr  # type: ignore[return-value]


def _upsample_matrix(n_out: int, n_ctrl: int) -> np.ndarray:
    """``(n_out, n_ctrl)`` matrix interpolating ``n_ctrl`` control values spread over ``n_out`` voxels.

    Control points sit evenly from the first to the last voxel; the interpolant is a cubic
    spline (quadratic/linear when there are too few control points), so the field is smooth.
    """
    if n_ctrl == 1 or n_out == 1:
        return np.ones((n_out, n_ctrl)) / n_ctrl
    knots = np.linspace(0.0, n_out - 1.0, n_ctrl)
    spline = make_interp_spline(knots, np.eye(n_ctrl), k=min(3, n_ctrl - 1))
    return spline(np.arange(n_out, dtype=np.float64))


def field_magnitude_mm(displacement: np.ndarray, zooms: Sequence[float]) -> np.ndarray:
    """Per-voxel displacement magnitude in mm, ``(X, Y, Z)``, of a ``(3, X, Y, Z)`` voxel field."""
    zooms_arr = np.asarray(zooms, dtype=np.float64).reshape(3, 1, 1, 1)
    return np.sqrt(((np.asarray(displacement, dtype=np.float64) * zooms_arr) ** 2).sum(axis=0))


def _scale_to_max(field_mm: np.ndarray, max_mm: float, zooms: np.ndarray) -> np.ndarray:
    """Scale an mm field so its largest magnitude is ``max_mm``; return it in voxels (float32)."""
    peak = float(np.sqrt((field_mm**2).sum(axis=0)).max())
    if peak > 0:
        field_mm = field_mm * (float(max_mm) / peak)
    return (field_mm / zooms.reshape(3, 1, 1, 1)).astype(np.float32)


def smooth_random_field(
    shape: Sequence[int],
    zooms: Sequence[float],
    max_mm: float,
    rng: np.random.Generator,
    control_spacing_mm: float = 40.0,
) -> np.ndarray:
    """A smooth random displacement field whose largest magnitude is ``max_mm``.

    Random normal vectors on a coarse control grid (one point every ``control_spacing_mm``
    along each axis, at least two per axis, spanning the field of view) are interpolated
    with separable cubic splines to every voxel, then scaled so that
    ``max |d| == max_mm`` (in mm, magnitude over the three components).

    Args:
        shape: spatial shape ``(X, Y, Z)``.
        zooms: voxel sizes in mm along X, Y, Z.
        max_mm: largest displacement magnitude in mm (``0`` gives a zero field).
        rng: NumPy generator (the same generator state gives the same field).
        control_spacing_mm: distance between control points; larger means smoother.

    Returns:
        ``(3, X, Y, Z)`` float32 displacement in voxels along each axis.
    """
    shape, zooms_arr = _check_shape_zooms(shape, zooms)
    if max_mm < 0:
        raise ValueError(f"max_mm must be >= 0, got {max_mm}")
    if control_spacing_mm <= 0:
        raise ValueError(f"control_spacing_mm must be > 0, got {control_spacing_mm}")
    extent_mm = (np.asarray(shape) - 1) * zooms_arr
    n_ctrl = [max(2, int(round(e / control_spacing_mm)) + 1) if n > 1 else 1 for n, e in zip(shape, extent_mm)]
    control = rng.standard_normal((3, *n_ctrl))
    if max_mm == 0:
        return np.zeros((3, *shape), dtype=np.float32)
    mx, my, mz = (_upsample_matrix(n, c) for n, c in zip(shape, n_ctrl))
    field_mm = np.einsum("xi,cijk->cxjk", mx, control)
    field_mm = np.einsum("yj,cxjk->cxyk", my, field_mm)
    field_mm = np.einsum("zk,cxyk->cxyz", mz, field_mm)
    return _scale_to_max(field_mm, max_mm, zooms_arr)


def breathing_field(
    shape: Sequence[int],
    zooms: Sequence[float],
    amplitude_mm: float = 4.0,
    axis: int = 1,
    expansion: float = 0.3,
    body_wall: float = 0.35,
) -> np.ndarray:
    """Displacement of a unit breathing phase (full inspiration), smooth over the field of view.

    The model, in the image's own voxel axes:

    * a dominant shift along the in-plane ``axis`` (default ``1`` = Y; in a sagittal or
      coronal abdominal slice this is the cranio-caudal direction the diaphragm moves in),
      strongest at the centre of the field of view and tapering smoothly (Gaussian in the
      distance from the centre, mostly in-plane) to ``body_wall`` times that value at the
      edges, as organs move more than the body wall;
    * a smaller expansion along the other in-plane axis (``expansion`` times the dominant
      amplitude, signed by the side of the centre each voxel is on), as the trunk widens
      on inspiration;
    * nothing through-plane (axis 2 = Z, the slice axis), so the slab stays the slab.

    The field is scaled so its largest magnitude is ``amplitude_mm``. Multiply it by a
    breathing phase from :func:`breathing_trace` to get the field of one frame.

    Args:
        shape: spatial shape ``(X, Y, Z)``.
        zooms: voxel sizes in mm along X, Y, Z.
        amplitude_mm: largest displacement magnitude in mm at unit phase.
        axis: in-plane axis of the dominant motion, ``0`` (X) or ``1`` (Y).
        expansion: relative size of the orthogonal in-plane expansion component.
        body_wall: relative motion left at the edge of the field of view, in ``[0, 1]``.

    Returns:
        ``(3, X, Y, Z)`` float32 displacement in voxels (pull-back convention of :func:`warp`).
    """
    shape, zooms_arr = _check_shape_zooms(shape, zooms)
    if axis not in (0, 1):
        raise ValueError(f"axis must be an in-plane axis, 0 (X) or 1 (Y), got {axis}")
    if not 0.0 <= body_wall <= 1.0:
        raise ValueError(f"body_wall must be in [0, 1], got {body_wall}")
    other = 1 - axis
    # normalised position in [-1, 1] from the centre of the field of view, per axis
    pos = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in shape]
    px, py, pz = np.meshgrid(*pos, indexing="ij", sparse=True)
    # distance mostly in-plane: the slab is thin and moves almost as a whole through Z
    r2 = px**2 + py**2 + 0.25 * pz**2
    taper = body_wall + (1.0 - body_wall) * np.exp(-r2 / (2 * 0.45**2))
    field_mm = np.zeros((3, *shape), dtype=np.float64)
    field_mm[axis] = taper
    field_mm[other] = expansion * taper * (px if other == 0 else py)
    return _scale_to_max(field_mm, amplitude_mm, zooms_arr)


def breathing_trace(
    frames: int,
    tr: float,
    rng: np.random.Generator,
    period_s: float = 4.0,
    irregularity: float = 0.15,
    sharpness: int = 2,
) -> np.ndarray:
    """A quasi-periodic breathing phase per frame, in ``[0, 1]`` (0 = end-expiration, 1 = full inspiration).

    Follows the ``cos^(2n)`` model of free breathing (Lujan et al. 1999): the phase rests
    near end-expiration and peaks briefly at inspiration. Period and depth of each breath
    drift smoothly from breath to breath by about ``irregularity`` (relative), and the
    start of the cycle is random.

    Args:
        frames: number of frames ``T``.
        tr: time between frames in seconds.
        rng: NumPy generator.
        period_s: mean breathing period in seconds.
        irregularity: relative variation of period and depth, in ``[0, 1)``; ``0`` is periodic.
        sharpness: ``n`` of ``cos^(2n)``; larger gives shorter inspirations.

    Returns:
        ``(T,)`` float32 phase in ``[0, 1]``.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if tr <= 0 or period_s <= 0:
        raise ValueError(f"tr and period_s must be > 0, got tr={tr}, period_s={period_s}")
    if not 0.0 <= irregularity < 1.0:
        raise ValueError(f"irregularity must be in [0, 1), got {irregularity}")
    times = np.arange(frames, dtype=np.float64) * tr
    n_knots = int(np.ceil(times[-1] / period_s)) + 2
    knot_times = np.arange(n_knots) * period_s
    period_jitter = np.interp(times, knot_times, rng.uniform(-1.0, 1.0, n_knots))
    depth_jitter = np.interp(times, knot_times, rng.uniform(0.0, 1.0, n_knots))
    start = rng.uniform(0.0, 2 * np.pi)
    periods = period_s * (1.0 + irregularity * period_jitter)
    phase = start + 2 * np.pi * np.concatenate([[0.0], np.cumsum(tr / periods[:-1])])
    depth = 1.0 - irregularity * depth_jitter
    trace = depth * np.cos(phase / 2.0) ** (2 * int(sharpness))
    return np.clip(trace, 0.0, 1.0).astype(np.float32)


def warp(image: np.ndarray, displacement: np.ndarray, order: int = 1) -> np.ndarray:
    """Resample ``image`` at ``x + displacement(x)`` (pull-back), edges extended.

    Args:
        image: ``(X, Y, Z)`` array.
        displacement: ``(3, X, Y, Z)`` displacement in voxels.
        order: spline order of the interpolation (1 = trilinear, 3 = cubic).

    Returns:
        ``(X, Y, Z)`` float32 warped image.
    """
    image = np.asarray(image)
    displacement = np.asarray(displacement)
    if image.ndim != 3:
        raise ValueError(f"image must be 3-D (X, Y, Z), got shape {image.shape}")
    if displacement.shape != (3, *image.shape):
        raise ValueError(f"displacement must have shape {(3, *image.shape)}, got {displacement.shape}")
    grids = np.ogrid[tuple(slice(0, n) for n in image.shape)]
    coords = np.empty(displacement.shape, dtype=np.float64)
    for axis in range(3):
        np.add(displacement[axis], grids[axis], out=coords[axis])
    source = image.astype(np.float32, copy=False)
    return ndimage.map_coordinates(source, coords, order=order, mode="nearest", output=np.float32)
