"""Image-quality metrics: SSIM, PSNR and NRMSE — the only metric code in mrisr.

Training validation, benchmarks, ``mrisr evaluate``, batch runs and the napari widget all
call these functions, so every number mrisr reports is computed the same way.

Conventions (all functions):

* Images are ``(X, Y, Z)`` volumes (``evaluate_frames`` also takes ``(X, Y, Z, T)`` series);
  numpy arrays, torch tensors and :class:`mrisr.io.Volume` objects are accepted.
* Metrics are computed on the images' **true intensities**. Nothing is rescaled, shifted or
  clipped. ``data_range`` defaults to the ground truth's own range ``target.max() - target.min()``
  (over the whole volume, also when a mask is given). In particular we never map images
  through ``(x + 1) / 2`` before SSIM: that shift raises every local mean, which pushes SSIM's
  luminance term towards 1 and inflates the score (a 4 % phantom goes from 0.887 to 0.961);
  PSNR with a fixed range of 1 gains ~6 dB the same way. Scores computed like that cannot be
  compared with honest baselines.
* A mask restricts where the score is averaged, not what the filters see: SSIM's local
  statistics near the mask edge still use the neighbouring voxels outside the mask.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

K1 = 0.01
K2 = 0.03
METRICS = ("ssim", "psnr", "nrmse")


# --------------------------------------------------------------------------- inputs


def _as_array(image: Any, name: str = "image") -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor or a :class:`mrisr.io.Volume`."""
    if hasattr(image, "affine") and hasattr(image, "data"):  # mrisr.io.Volume
        image = image.data
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch.Tensor, without importing torch
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.dtype == bool:
        return array
    if np.iscomplexobj(array):
        raise ValueError(f"{name}: complex data; pass magnitude images (np.abs) to the metrics")
    return array


def _pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    pred_arr = _as_array(pred, "pred")
    target_arr = _as_array(target, "target")
    if pred_arr.shape != target_arr.shape:
        raise ValueError(
            f"pred shape {pred_arr.shape} != target shape {target_arr.shape}; "
            "both images must be on the same grid (see check_same_grid)"
        )
    return pred_arr, target_arr


def _mask_array(mask: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask_arr = _as_array(mask, "mask")
    if mask_arr.shape != shape:
        raise ValueError(f"mask shape {mask_arr.shape} != image shape {shape}")
    mask_arr = mask_arr.astype(bool, copy=False)
    if not mask_arr.any():
        raise ValueError("mask is empty (no voxel inside); pass a mask that covers the object or no mask")
    return mask_arr


def _check_spatial(image: np.ndarray) -> None:
    if image.ndim not in (2, 3):
        raise ValueError(
            f"ssim needs a 2-D or 3-D image, got shape {image.shape}; use evaluate_frames for (X, Y, Z, T) series"
        )


def _data_range(target: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        if not data_range > 0:
            raise ValueError(f"data_range {data_range}: must be > 0")
        return float(data_range)
    value = float(np.max(target)) - float(np.min(target))
    # a constant ground truth has no range; fall back to its magnitude (or 1) so C1, C2 stay > 0
    return value if value > 0 else (abs(float(np.max(target))) or 1.0)


# --------------------------------------------------------------------------- SSIM


def _gaussian_smooth(image: np.ndarray, sigma: float, truncate: float) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(image, sigma, truncate=truncate, mode="reflect")`` in float32.

    The first (largest-stride) axis is filtered as a weighted sum of shifted slabs instead:
    scipy walks that axis line by line through cache-unfriendly memory and takes about three
    times longer on it than on the other two axes; the result is the same to float32 rounding.
    """
    radius = int(truncate * sigma + 0.5)
    if radius < 1 or image.shape[0] <= radius:
        return ndimage.gaussian_filter(image, sigma=sigma, truncate=truncate, mode="reflect", output=np.float32)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights = (weights / weights.sum()).astype(np.float32)
    # numpy's "symmetric" padding is scipy's "reflect" (the edge voxel is repeated)
    padded = np.pad(image, [(radius, radius)] + [(0, 0)] * (image.ndim - 1), mode="symmetric")
    n = image.shape[0]
    out = padded[:n] * weights[0]
    term = np.empty_like(out)
    for i in range(1, 2 * radius + 1):
        np.multiply(padded[i : i + n], weights[i], out=term)
        out += term
    for axis in range(1, image.ndim):
        ndimage.gaussian_filter1d(out, sigma, axis=axis, truncate=truncate, mode="reflect", output=out)
    return out


def ssim_map(
    pred: Any,
    target: Any,
    data_range: float | None = None,
    sigma: float = 1.5,
    truncate: float = 3.5,
) -> np.ndarray:
    """Voxel-wise SSIM map with a Gaussian window.

    Same definition as ``skimage.metrics.structural_similarity(pred, target, data_range=...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)``: local weighted
    means, population variances and covariance from separable Gaussian filters (radius
    ``int(truncate * sigma + 0.5)`` = 5 voxels, i.e. an 11-tap window, ``mode="reflect"`` at the
    borders), ``K1 = 0.01``, ``K2 = 0.03``. The window is isotropic in voxels (like skimage),
    whatever the voxel size.

    Filtering runs in float32 after subtracting one common offset (the target's mean) from
    both images: variances and covariance do not change under a common shift, and removing it
    avoids the cancellation in ``E[x²] - E[x]²`` that float32 would otherwise suffer on
    large raw intensities. The means are shifted back before the luminance term.

    Args:
        pred: predicted image, ``(X, Y, Z)`` (2-D images work too).
        target: ground truth, same shape.
        data_range: dynamic range ``L`` in ``C1 = (K1 L)²``, ``C2 = (K2 L)²``; default
            ``target.max() - target.min()``.
        sigma: Gaussian window standard deviation in voxels.
        truncate: window radius in standard deviations.

    Returns:
        float32 array of the input shape (no border cropped).
    """
    pred_arr, target_arr = _pair(pred, target)
    _check_spatial(pred_arr)
    L = _data_range(target_arr, data_range)
    c1 = (K1 * L) ** 2
    c2 = (K2 * L) ** 2
    offset = float(np.mean(target_arr, dtype=np.float64))
    x = (pred_arr.astype(np.float64) - offset).astype(np.float32)
    y = (target_arr.astype(np.float64) - offset).astype(np.float32)

    def smooth(image: np.ndarray) -> np.ndarray:
        return _gaussian_smooth(image, sigma, truncate)

    mu_x = smooth(x)
    mu_y = smooth(y)
    var_x = smooth(x * x)
    var_x -= mu_x * mu_x
    var_y = smooth(y * y)
    var_y -= mu_y * mu_y
    cov = smooth(x * y)
    cov -= mu_x * mu_y
    mu_x += np.float32(offset)
    mu_y += np.float32(offset)
    # S = (2 mx my + C1)(2 cov + C2) / ((mx² + my² + C1)(vx + vy + C2)), built in place
    numerator = mu_x * mu_y
    numerator *= 2
    numerator += np.float32(c1)
    cov *= 2
    cov += np.float32(c2)
    numerator *= cov
    mu_x *= mu_x
    mu_y *= mu_y
    mu_x += mu_y
    mu_x += np.float32(c1)
    var_x += var_y
    var_x += np.float32(c2)
    mu_x *= var_x
    numerator /= mu_x
    return numerator


def ssim(
    pred: Any,
    target: Any,
    mask: Any | None = None,
    data_range: float | None = None,
    sigma: float = 1.5,
    truncate: float = 3.5,
) -> float:
    """Mean 3-D SSIM of ``pred`` against the ground truth ``target``.

    The map is :func:`ssim_map` (skimage-compatible Gaussian SSIM). Border convention: unlike
    skimage, which averages only the interior after cropping ``(win_size - 1) // 2`` = 5
    voxels from every side, we average the whole map (border voxels are filtered with
    reflected borders, exactly as skimage computes them). A 12-slice dynamic slab would
    otherwise keep only 2 of its slices. The maps agree voxel for voxel, so the two means
    agree on the same region.

    Args:
        pred: prediction, ``(X, Y, Z)``; numpy array or torch tensor.
        target: ground truth, same shape.
        mask: optional boolean ``(X, Y, Z)``; the map is averaged inside it (the filters still
            see the whole image).
        data_range: default ``target.max() - target.min()`` (true range, never rescaled).
        sigma: Gaussian window standard deviation in voxels (1.5).
        truncate: window radius in standard deviations (3.5, an 11-tap window).

    Returns:
        SSIM in [-1, 1]; 1.0 for identical images.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> gt = rng.random((16, 16, 12))
        >>> ssim(gt, gt)
        1.0
    """
    pred_arr, target_arr = _pair(pred, target)
    _check_spatial(pred_arr)
    mask_arr = _mask_array(mask, target_arr.shape)
    if np.array_equal(pred_arr, target_arr):
        return 1.0
    smap = ssim_map(pred_arr, target_arr, data_range=data_range, sigma=sigma, truncate=truncate)
    values = smap[mask_arr] if mask_arr is not None else smap
    return float(np.mean(values, dtype=np.float64))


# --------------------------------------------------------------------------- PSNR / NRMSE


def _squared_error(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    diff = pred.astype(np.float64) - target.astype(np.float64)
    if mask is not None:
        diff = diff[mask]
    return diff * diff


def psnr(pred: Any, target: Any, mask: Any | None = None, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(L² / MSE)``.

    Matches ``skimage.metrics.peak_signal_noise_ratio(target, pred, data_range=L)``.

    Args:
        pred: prediction, any shape; numpy array or torch tensor.
        target: ground truth, same shape.
        mask: optional boolean array; MSE is taken over the voxels inside it.
        data_range: ``L``; default ``target.max() - target.min()`` over the whole target.

    Returns:
        PSNR in dB; ``float("inf")`` when the images are identical (inside the mask).
    """
    pred_arr, target_arr = _pair(pred, target)
    mask_arr = _mask_array(mask, target_arr.shape)
    L = _data_range(target_arr, data_range)
    mse = float(np.mean(_squared_error(pred_arr, target_arr, mask_arr)))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * math.log10(L * L / mse))


def nrmse(pred: Any, target: Any, mask: Any | None = None) -> float:
    """Normalised root-mean-square error, Euclidean normalisation.

    ``NRMSE = sqrt(mean((pred - target)²)) / sqrt(mean(target²)) = ||pred - target|| / ||target||``,
    i.e. ``skimage.metrics.normalized_root_mse(target, pred, normalization="euclidean")``. It
    does not depend on a data range and is unchanged when both images are scaled together.
    With a mask, both means are over the voxels inside it.

    Returns:
        NRMSE >= 0 (0 for identical images; ``inf`` if the target is all zero and pred is not).
    """
    pred_arr, target_arr = _pair(pred, target)
    mask_arr = _mask_array(mask, target_arr.shape)
    error = math.sqrt(float(np.mean(_squared_error(pred_arr, target_arr, mask_arr))))
    reference = target_arr.astype(np.float64)
    if mask_arr is not None:
        reference = reference[mask_arr]
    norm = math.sqrt(float(np.mean(reference * reference)))
    if norm == 0.0:
        return 0.0 if error == 0.0 else float("inf")
    return error / norm


# --------------------------------------------------------------------------- masks


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


# --------------------------------------------------------------------------- per-frame evaluation


def _frame(array: np.ndarray, t: int) -> np.ndarray:
    return array if array.ndim == 3 else array[..., t]


def evaluate_frames(
    pred: Any,
    target: Any,
    mask: Any | None = None,
    data_range: float | None = None,
) -> list[dict[str, float | int]]:
    """SSIM, PSNR and NRMSE of every frame.

    Args:
        pred: prediction ``(X, Y, Z)`` or ``(X, Y, Z, T)`` (numpy, torch or Volume).
        target: ground truth of the same shape.
        mask: optional boolean ``(X, Y, Z)`` (used for every frame) or ``(X, Y, Z, T)`` (one per
            frame), e.g. from :func:`foreground_mask`.
        data_range: fixed range for all frames; default: each ground-truth frame's own
            ``max - min``.

    Returns:
        One dict per frame: ``{"frame": t, "ssim": ..., "psnr": ..., "nrmse": ...}``.
    """
    pred_arr, target_arr = _pair(pred, target)
    if pred_arr.ndim not in (3, 4):
        raise ValueError(f"evaluate_frames needs (X, Y, Z) or (X, Y, Z, T), got shape {pred_arr.shape}")
    mask_arr = None if mask is None else _as_array(mask, "mask").astype(bool, copy=False)
    if mask_arr is not None and mask_arr.shape not in (target_arr.shape[:3], target_arr.shape):
        raise ValueError(f"mask shape {mask_arr.shape} fits neither {target_arr.shape[:3]} nor {target_arr.shape}")
    frames = 1 if target_arr.ndim == 3 else target_arr.shape[3]
    rows: list[dict[str, float | int]] = []
    for t in range(frames):
        p, g = _frame(pred_arr, t), _frame(target_arr, t)
        m = None if mask_arr is None else _frame(mask_arr, t)
        rows.append(evaluate_frame(p, g, m, data_range=data_range, frame=t))
    return rows


def evaluate_frame(
    pred: Any,
    target: Any,
    mask: Any | None = None,
    data_range: float | None = None,
    frame: int = 0,
) -> dict[str, float | int]:
    """The row :func:`evaluate_frames` makes for one ``(X, Y, Z)`` frame (for streaming callers)."""
    pred_arr, target_arr = _pair(pred, target)
    return {
        "frame": int(frame),
        "ssim": ssim(pred_arr, target_arr, mask=mask, data_range=data_range),
        "psnr": psnr(pred_arr, target_arr, mask=mask, data_range=data_range),
        "nrmse": nrmse(pred_arr, target_arr, mask=mask),
    }


def summarise(rows: Iterable[dict[str, Any]], metrics: Sequence[str] = METRICS) -> dict[str, float | int]:
    """Mean and standard deviation of each metric over frames.

    The standard deviation is the population one (``ddof=0``, numpy's default). A metric that
    is ``inf`` in every frame (PSNR of identical images) has mean ``inf`` and std 0.

    Returns:
        ``{"n": frames, "ssim_mean": ..., "ssim_std": ..., "psnr_mean": ..., ...}``.
    """
    rows = list(rows)
    summary: dict[str, float | int] = {"n": len(rows)}
    for name in metrics:
        values = np.array([float(row[name]) for row in rows], dtype=np.float64)
        if values.size == 0:
            summary[f"{name}_mean"] = float("nan")
            summary[f"{name}_std"] = float("nan")
        elif np.all(values == values[0]):
            summary[f"{name}_mean"] = float(values[0])
            summary[f"{name}_std"] = 0.0
        elif not np.all(np.isfinite(values)):
            summary[f"{name}_mean"] = float(np.mean(values))
            summary[f"{name}_std"] = float("nan")
        else:
            summary[f"{name}_mean"] = float(np.mean(values))
            summary[f"{name}_std"] = float(np.std(values))
    return summary


# --------------------------------------------------------------------------- grids


def check_same_grid(
    pred_volume: Any,
    target_volume: Any,
    atol_mm: float = 1e-3,
    check_frames: bool = True,
    hint: str | None = None,
) -> None:
    """Raise :class:`mrisr.io.MrisrInputError` unless two volumes share shape, frames and affine.

    Args:
        pred_volume: :class:`mrisr.io.Volume` of the prediction (or a mask).
        target_volume: :class:`mrisr.io.Volume` of the ground truth.
        atol_mm: tolerance on every affine entry (mm).
        check_frames: also require the same number of frames (off for a 3-D mask of a series).
        hint: the fix to suggest; default: put the ground truth on the SR grid.

    Raises:
        MrisrInputError: one line naming both files, what differs and how to fix it.
    """
    from mrisr.io import MrisrInputError

    pred_name, target_name = _volume_name(pred_volume, "prediction"), _volume_name(target_volume, "ground truth")
    pred_shape = tuple(int(s) for s in pred_volume.data.shape[:3])
    target_shape = tuple(int(s) for s in target_volume.data.shape[:3])
    frames_hint = hint or "pass the ground truth of the same series (same number of frames)"
    hint = hint or (
        "pass the ground truth on the SR grid (reconstruct onto the ground truth's matrix, "
        "or resample one image onto the other's grid) before evaluating"
    )
    if pred_shape != target_shape:
        raise MrisrInputError(
            f"{pred_name}: grid {_fmt_shape(pred_shape)} differs from {target_name} grid {_fmt_shape(target_shape)}; {hint}"
        )
    pred_frames = pred_volume.data.shape[3] if pred_volume.data.ndim == 4 else 1
    target_frames = target_volume.data.shape[3] if target_volume.data.ndim == 4 else 1
    if check_frames and pred_frames != target_frames:
        raise MrisrInputError(
            f"{pred_name}: {pred_frames} frame(s) but {target_name} has {target_frames}; {frames_hint}"
        )
    pred_affine = np.asarray(pred_volume.affine, dtype=np.float64)
    target_affine = np.asarray(target_volume.affine, dtype=np.float64)
    if not np.allclose(pred_affine, target_affine, rtol=0.0, atol=atol_mm):
        worst = float(np.max(np.abs(pred_affine - target_affine)))
        pred_zooms = np.sqrt((pred_affine[:3, :3] ** 2).sum(axis=0))
        target_zooms = np.sqrt((target_affine[:3, :3] ** 2).sum(axis=0))
        raise MrisrInputError(
            f"{pred_name}: affine differs from {target_name} by up to {worst:.4g} mm "
            f"(voxel {_fmt_zooms(pred_zooms)} vs {_fmt_zooms(target_zooms)} mm, origin "
            f"{_fmt_zooms(pred_affine[:3, 3])} vs {_fmt_zooms(target_affine[:3, 3])}); {hint}"
        )


def _volume_name(volume: Any, default: str) -> str:
    source = getattr(volume, "source", None)
    return str(source) if source is not None else default


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _fmt_zooms(values: Sequence[float]) -> str:
    return "x".join(f"{float(v):.4g}" for v in values)


__all__ = [
    "METRICS",
    "check_same_grid",
    "evaluate_frame",
    "evaluate_frames",
    "foreground_mask",
    "nrmse",
    "psnr",
    "ssim",
    "ssim_map",
    "summarise",
]
