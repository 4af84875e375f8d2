"""Fidelity metrics: does a method show what changed, and hide what is gone?

A prior-guided reconstruction can look sharp and still be wrong where the prior is wrong. Three
numbers measure that on phantoms whose truth is known (:func:`mrisr.phantom.make_dynamic` with
``insert=`` / ``planning_insert=``):

* :func:`contrast_recovery`: a structure that entered during the series (absent from the prior),
  e.g. a needle: the share of its true contrast the output keeps (1 = all of it);
* :func:`core_continuity`: the share of that structure's core voxels that keep at least half of
  their true depth (a needle that looks dotted scores low even when its mean contrast is fair);
* :func:`leakage`: a structure only the prior has (a withdrawn device, tissue that changed):
  the contrast the output shows at its site, relative to its contrast in the planning scan
  (0 = none leaks through);
* :func:`registration_error_mm`: a motion estimate against the phantom's known displacement.

The contrast of a structure is ``(ring mean - core mean) / ring mean`` with the ring the core
dilated by 4 minus the core dilated by 2 voxels (3-D, 6-connected steps): positive for a signal
void such as a needle, negative for a bright structure. Every method goes through these same
functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from mrisr.metrics._inputs import _as_array

#: dilation steps (voxels) of the inner and outer edge of the reference ring around a core
RING = (2, 4)


def _core(core: Any, shape: tuple[int, ...]) -> np.ndarray:
    mask = _as_array(core, "core").astype(bool, copy=False)
    if mask.shape != shape:
        raise ValueError(f"core mask shape {mask.shape} != image shape {shape}")
    if not mask.any():
        raise ValueError("core mask is empty; the structure is not in this frame")
    return mask


def ring_mask(core: Any, inner: int = RING[0], outer: int = RING[1]) -> np.ndarray:
    """The reference ring around a core: ``dilate(core, outer) & ~dilate(core, inner)``.

    Args:
        core: boolean ``(X, Y, Z)`` core of the structure.
        inner / outer: dilation steps in voxels (6-connected), ``outer > inner >= 0``.

    Returns:
        Boolean ``(X, Y, Z)`` ring.
    """
    if not outer > inner >= 0:
        raise ValueError(f"ring needs outer > inner >= 0, got inner={inner}, outer={outer}")
    mask = _as_array(core, "core").astype(bool, copy=False)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    near = ndimage.binary_dilation(mask, structure, iterations=inner) if inner > 0 else mask
    far = ndimage.binary_dilation(mask, structure, iterations=outer)
    return far & ~near


def structure_contrast(image: Any, core: Any) -> float:
    """``(ring mean - core mean) / ring mean`` of ``image`` around ``core``.

    Args:
        image: ``(X, Y, Z)`` image.
        core: boolean ``(X, Y, Z)`` core of the structure (non-empty).

    Returns:
        The relative contrast (about 1 for a complete signal void in uniform tissue, 0 when the
        core looks like its surroundings); ``nan`` if the ring's mean is 0.
    """
    data = _as_array(image, "image").astype(np.float64, copy=False)
    mask = _core(core, data.shape)
    ring = ring_mask(mask)
    if not ring.any():
        raise ValueError("the ring around the core is empty (the core fills the image)")
    ring_mean = float(data[ring].mean())
    if ring_mean == 0.0:
        return float("nan")
    return (ring_mean - float(data[mask].mean())) / ring_mean


def contrast_recovery(output: Any, truth: Any, core: Any) -> float:
    """Share of a structure's true contrast that ``output`` keeps: ``contrast(output) / contrast(truth)``.

    Args:
        output: reconstructed frame ``(X, Y, Z)``.
        truth: ground-truth frame ``(X, Y, Z)``.
        core: boolean core of the structure in this frame.

    Returns:
        1.0 when the output keeps the full contrast, 0 when the structure is invisible (it can
        exceed 1 or be negative).

    Raises:
        ValueError: the structure has no contrast in the truth, or the core is empty.
    """
    reference = structure_contrast(truth, core)
    if not np.isfinite(reference) or abs(reference) < 1e-6:
        raise ValueError(f"the structure has no contrast in the ground truth ({reference:.3g}); nothing to recover")
    return structure_contrast(output, core) / reference


def core_continuity(output: Any, truth: Any, core: Any, share: float = 0.5) -> float:
    """Share of a structure's core voxels where ``output`` keeps at least ``share`` of the voxel's
    true depth: whether an entering needle looks continuous or dotted.

    A voxel's depth is ``(ring mean - voxel) / ring mean`` in each image (the ring of
    :func:`structure_contrast`); a voxel counts when the output's depth, signed like the truth's,
    reaches ``share`` of the truth's. :func:`contrast_recovery` averages the core, so a needle
    half of whose voxels keep all their depth and half none scores 0.5 there and 0.5 here; one
    whose every voxel keeps 60 % scores 0.6 there and 1.0 here.

    Args:
        output: reconstructed frame ``(X, Y, Z)``.
        truth: ground-truth frame ``(X, Y, Z)``.
        core: boolean core of the structure in this frame.
        share: the part of the true depth a voxel must keep, in (0, 1].

    Returns:
        A share in [0, 1] (1: every core voxel keeps at least ``share`` of its depth).

    Raises:
        ValueError: an empty core, a ring that is empty or of mean 0, or no core voxel with a depth
            in the truth.
    """
    if not 0 < share <= 1:
        raise ValueError(f"share {share!r} must be in (0, 1]")
    out = _as_array(output, "output").astype(np.float64, copy=False)
    ref = _as_array(truth, "truth").astype(np.float64, copy=False)
    mask = _core(core, ref.shape)
    if out.shape != ref.shape:
        raise ValueError(f"output shape {out.shape} != truth shape {ref.shape}")
    ring = ring_mask(mask)
    if not ring.any():
        raise ValueError("the ring around the core is empty (the core fills the image)")
    out_ring, ref_ring = float(out[ring].mean()), float(ref[ring].mean())
    if out_ring == 0.0 or ref_ring == 0.0:
        raise ValueError("the ring around the core has a mean of 0; no depth can be measured")
    true_depth = (ref_ring - ref[mask]) / ref_ring
    kept = (out_ring - out[mask]) / out_ring
    deep = np.abs(true_depth) > 1e-6
    if not deep.any():
        raise ValueError("no core voxel has a depth in the ground truth; nothing to keep")
    return float(np.mean(kept[deep] * np.sign(true_depth[deep]) >= share * np.abs(true_depth[deep])))


def leakage(output: Any, site: Any, planning_contrast: float) -> float:
    """Contrast ``output`` shows at the site of a structure only the planning scan has, relative
    to its contrast in the planning scan.

    Args:
        output: reconstructed frame ``(X, Y, Z)``.
        site: boolean core of where the structure would be in this frame (carried by the motion).
        planning_contrast: :func:`structure_contrast` of the planning scan at the structure.

    Returns:
        0 when nothing leaks through, 1 when the output shows the structure as the planning scan does.
    """
    if not np.isfinite(planning_contrast) or abs(planning_contrast) < 1e-6:
        raise ValueError(f"planning_contrast {planning_contrast!r}: the structure has no contrast in the planning scan")
    return structure_contrast(output, site) / float(planning_contrast)


def registration_error_mm(
    estimated: Any, true: Any, zooms: Sequence[float], mask: Any | None = None
) -> dict[str, float]:
    """Error of a displacement field against the known one, in mm.

    Args:
        estimated: ``(3, X, Y, Z)`` displacement in voxels (pull-back, as :mod:`mrisr.deform`).
        true: ``(3, X, Y, Z)`` true displacement in voxels.
        zooms: voxel sizes (mm) of the X, Y, Z axes.
        mask: optional boolean ``(X, Y, Z)`` region (e.g. the object); default everywhere.

    Returns:
        ``{"mean_mm": ..., "p95_mm": ..., "max_mm": ..., "true_mean_mm": ...}`` where
        ``true_mean_mm`` is the mean true motion (the error of doing no registration at all).
    """
    est = _as_array(estimated, "estimated").astype(np.float64, copy=False)
    ref = _as_array(true, "true").astype(np.float64, copy=False)
    if est.shape != ref.shape or est.ndim != 4 or est.shape[0] != 3:
        raise ValueError(f"displacements must both be (3, X, Y, Z), got {est.shape} and {ref.shape}")
    scale = np.asarray(zooms, dtype=np.float64).reshape(3, 1, 1, 1)
    error = np.sqrt((((est - ref) * scale) ** 2).sum(axis=0))
    motion = np.sqrt(((ref * scale) ** 2).sum(axis=0))
    if mask is not None:
        region = _as_array(mask, "mask").astype(bool, copy=False)
        error, motion = error[region], motion[region]
    return {
        "mean_mm": float(error.mean()),
        "p95_mm": float(np.percentile(error, 95)),
        "max_mm": float(error.max()),
        "true_mean_mm": float(motion.mean()),
    }


__all__ = ["RING", "contrast_recovery", "leakage", "registration_error_mm", "ring_mask", "structure_contrast"]
