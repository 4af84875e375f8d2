"""Masks of the imaged object, the region tissue metrics are averaged over."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from mrisr.metrics._inputs import _as_array


def _otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (maximal between-class variance) of a 1-D sample."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    hist = hist.astype(np.float64)
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(hist * centres)
    mean_low = sum_low / np.maximum(weight_low, 1e-12)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1e-12)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes in 3-D, then slice by slice, so cavities cut open by a thin slab are filled too."""
    filled = ndimage.binary_fill_holes(mask)
    for z in range(filled.shape[2]):
        filled[:, :, z] = ndimage.binary_fill_holes(filled[:, :, z])
    return filled


def foreground_mask(
    target: Any,
    smoothing: float = 1.0,
    threshold_scale: float = 0.5,
    closing: int = 2,
    largest_component: bool = True,
) -> np.ndarray:
    """Boolean mask of the imaged object (head, abdomen, phantom) in a ground-truth volume.

    Steps: Gaussian smoothing (``smoothing`` voxels) to suppress noise; threshold at
    ``threshold_scale`` times Otsu's threshold of the smoothed image's absolute values (Otsu
    alone often splits dim tissue from bright tissue, half of it reliably separates tissue
    from air); binary closing with a ``closing``-voxel ball; keep the largest connected
    component (drops specks of background noise); fill holes in 3-D and slice by slice
    (ventricles, airways, slab-truncated cavities).

    Args:
        target: ground truth ``(X, Y, Z)`` or ``(X, Y, Z, T)`` (then one mask per frame).
        smoothing: Gaussian sigma in voxels before thresholding (0 disables).
        threshold_scale: fraction of the Otsu threshold used.
        closing: radius (voxels) of the closing structuring element (0 disables).
        largest_component: keep only the largest connected component.

    Returns:
        Boolean array of the input shape. A constant image (no threshold exists) gives an
        all-True mask, so metrics fall back to the whole volume.
    """
    image = _as_array(target, "target")
    if image.ndim == 4:
        return np.stack(
            [
                foreground_mask(image[..., t], smoothing, threshold_scale, closing, largest_component)
                for t in range(image.shape[3])
            ],
            axis=-1,
        )
    if image.ndim != 3:
        raise ValueError(f"foreground_mask needs (X, Y, Z) or (X, Y, Z, T), got shape {image.shape}")
    magnitude = np.abs(image.astype(np.float32))
    if smoothing > 0:
        magnitude = ndimage.gaussian_filter(magnitude, sigma=smoothing, mode="nearest")
    low, high = float(magnitude.min()), float(magnitude.max())
    if not high > low:
        return np.ones(image.shape, dtype=bool)
    threshold = threshold_scale * _otsu_threshold(magnitude.ravel())
    mask = magnitude > max(threshold, low)
    if not mask.any():
        return np.ones(image.shape, dtype=bool)
    if closing > 0:
        ball = _ball(closing)
        # pad so the closing does not erode objects touching the border
        padded = np.pad(mask, closing, mode="edge")
        mask = ndimage.binary_closing(padded, structure=ball)[(slice(closing, -closing),) * 3]
    if largest_component:
        labels, count = ndimage.label(mask)
        if count > 1:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            mask = labels == int(np.argmax(sizes))
    return _fill_holes(mask)


def _ball(radius: int) -> np.ndarray:
    grid = np.indices((2 * radius + 1,) * 3) - radius
    return (grid**2).sum(axis=0) <= radius * radius


def object_mask(
    target: Any,
    threshold: float = 0.10,
    percentile: float = 99.0,
    dilation: int = 2,
) -> np.ndarray:
    """Boolean mask of the object: where **tissue** metrics are averaged.

    Ground-truth voxels above ``threshold`` times its ``percentile``-th percentile, holes filled
    in 3-D, dilated by ``dilation`` voxels (a 3-D ball). Unlike :func:`foreground_mask` there is
    no smoothing or component selection: the definition is short enough to be reproduced by
    anyone comparing numbers with ours.

    Args:
        target: ground truth ``(X, Y, Z)`` or ``(X, Y, Z, T)`` (then one mask per frame).
        threshold: fraction of the percentile value above which a voxel is object.
        percentile: the reference percentile (99: robust to a few bright voxels).
        dilation: dilation radius in voxels (keeps the object's edge, where blur shows, inside).

    Returns:
        Boolean array of the input shape. When the percentile is 0 (an object covering less than
        1 % of the volume) the object's maximum takes its place; an all-zero ground truth gives an
        all-True mask, so metrics fall back to the whole volume.

    Example:
        >>> gt = np.zeros((16, 16, 8)); gt[4:12, 4:12, 2:6] = 1.0
        >>> int(object_mask(gt, dilation=0).sum())
        256
    """
    image = _as_array(target, "target")
    if image.ndim == 4:
        return np.stack(
            [object_mask(image[..., t], threshold, percentile, dilation) for t in range(image.shape[3])], axis=-1
        )
    if image.ndim != 3:
        raise ValueError(f"object_mask needs (X, Y, Z) or (X, Y, Z, T), got shape {image.shape}")
    magnitude = np.abs(image.astype(np.float32, copy=False))
    level = float(np.percentile(magnitude, percentile))
    if not level > 0:
        # an object smaller than 1 % of the volume: the percentile is air; use the object's own peak
        level = float(magnitude.max())
    if not level > 0:
        return np.ones(image.shape, dtype=bool)
    mask = magnitude > threshold * level
    if not mask.any():
        return np.ones(image.shape, dtype=bool)
    mask = ndimage.binary_fill_holes(mask)
    if dilation > 0:
        mask = ndimage.binary_dilation(mask, structure=_ball(dilation))
    return mask
