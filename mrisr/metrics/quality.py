"""SSIM, PSNR and NRMSE on the true intensity range (conventions: :mod:`mrisr.metrics`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from mrisr.metrics._inputs import K1, K2, _check_spatial, _data_range, _mask_array, _pair


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
    target_noise_power: float = 0.0,
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
        target_noise_power: the variance of noise the target carries, independent of ``pred`` and
            of mean zero: taken off the target's local variance (at least 0). Means and covariance
            need no correction. Fine-tuning's check scores against a noisy target this way
            (:mod:`mrisr.training.finetune_check`); 0 (the default) is the plain SSIM.

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
    if target_noise_power:
        var_y -= np.float32(target_noise_power)
        np.maximum(var_y, 0, out=var_y)
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
