"""How much noise of its own an image carries: the level and the SNR of a magnitude volume.

Used by the benchmarks' independent-noise phantoms (the truth's denoising, the frames' SNR); the
planning scan's filter (:mod:`mrisr.reconstruct.denoise`) reads its noise in the spectrum instead.
"""

from __future__ import annotations

import numpy as np


def estimate_noise_sigma(data: np.ndarray) -> float:
    """The noise standard deviation of a magnitude image ``(X, Y, Z)``: the median absolute value of
    its finest diagonal Haar wavelet coefficients in-plane over 0.6745 (Donoho's estimate, what
    ``skimage.restoration.estimate_sigma`` computes with another wavelet, which needs PyWavelets).

    On the benchmarks' phantoms (planning scans at SNR 10-40 of a real scan and of MNI152) it reads
    0.8-1.5x the noise added, and 1/160 of the object's mean or less on a noise-free one; the
    corners of the in-plane spectrum (:func:`mrisr.reconstruct.denoise.planning_noise_power`) read
    a noise-free real scan at 1/19 of its mean (its anatomy's own fine detail).
    """
    d = np.asarray(data, dtype=np.float64)
    if d.ndim < 2 or d.shape[0] < 2 or d.shape[1] < 2:
        return 0.0
    nx, ny = (d.shape[0] // 2) * 2, (d.shape[1] // 2) * 2
    d = d[:nx, :ny]
    diagonal = (d[0::2, 0::2] - d[1::2, 0::2] - d[0::2, 1::2] + d[1::2, 1::2]) / 2
    return float(np.median(np.abs(diagonal)) / 0.6745)


def object_mean(data: np.ndarray) -> float:
    """The reference level of :func:`mrisr.kspace.functional.add_complex_noise`: the mean above 10 %
    of the 99th percentile (0 for an empty image)."""
    d = np.asarray(data, dtype=np.float64)
    if not d.size:
        return 0.0
    inside = d[d > 0.1 * np.percentile(d, 99)]
    return float(inside.mean()) if inside.size else 0.0


def image_snr(data: np.ndarray) -> float:
    """:func:`object_mean` over :func:`estimate_noise_sigma` (``inf`` for a noise-free image)."""
    sigma = estimate_noise_sigma(data)
    return object_mean(data) / sigma if sigma > 0 else float("inf")


__all__ = ["estimate_noise_sigma", "image_snr", "object_mean"]
