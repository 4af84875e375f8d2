"""Volume-level undersampling simulation: geometry-correct LR data from HR volumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrisr.io.geometry import coarsen_affine
from mrisr.io.volume import Volume
from mrisr.kspace.functional import (
    add_complex_noise,
    apply_mask,
    center_keep_shape,
    crop_kspace,
    fftc,
    ifftc,
    keep_percent_of,
    pad_kspace,
)
from mrisr.kspace.masks import make_mask


@dataclass
class SimulationInfo:
    """What a simulation kept: the LR in-plane matrix, the true kept percentage and the mask."""

    mode: str
    keep_requested: float
    keep_actual: float
    lr_inplane: tuple[int, int]
    mask: np.ndarray


def undersample_array(
    image: np.ndarray,
    keep: float,
    mode: str = "center",
    zero_fill: bool = False,
    noise_snr: float | None = None,
    rng: np.random.Generator | None = None,
    axes: tuple[int, ...] = (0, 1),
) -> tuple[np.ndarray, SimulationInfo]:
    """Undersample a magnitude array ``(X, Y, Z[, T])`` in k-space.

    ``center`` without ``zero_fill`` returns the genuinely smaller LR matrix; every other case
    returns the zero-filled image on the input grid. Noise (complex Gaussian, at ``noise_snr``
    relative to the mean object signal) is added before sampling. ``axes=(0, 1, 2)`` crops the
    slice axis too (3-D acquisitions).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    data = np.asarray(image, dtype=np.float32)
    complex_image = add_complex_noise(data, noise_snr, rng) if noise_snr else data
    full = tuple(data.shape[a] for a in axes)
    if mode == "center":
        size = center_keep_shape(full, keep)
        k = crop_kspace(fftc(complex_image, axes), size, axes)
        if zero_fill:
            k = pad_kspace(k, full, axes)
        out = np.abs(ifftc(k, axes)).astype(np.float32)
        mask = make_mask("center", keep)(full[:2]) if len(axes) == 2 else None
        info = SimulationInfo(mode, keep, keep_percent_of(full, size), tuple(int(s) for s in size[:2]), mask)
        return out, info
    if len(axes) != 2:
        raise ValueError(f"mask mode {mode!r} is in-plane only; use mode='center' for 3-D cropping")
    mask = make_mask(mode, keep)(full, rng)
    out = apply_mask(complex_image, mask, axes)
    out = np.abs(out).astype(np.float32)
    info = SimulationInfo(mode, keep, 100.0 * mask.mean(), full, mask)
    return out, info


def simulate_volume(
    volume: Volume,
    keep: float,
    mode: str = "center",
    zero_fill: bool = False,
    noise_snr: float | None = None,
    seed: int | None = 0,
    three_d: bool = False,
) -> tuple[Volume, SimulationInfo]:
    """Simulate an LR acquisition of a 3-D or 4-D HR volume, with the right geometry.

    The LR affine of a cropped matrix follows the centred-FFT convention of
    :func:`mrisr.io.coarsen_affine`, so LR and HR overlay in world space. Each frame of a 4-D
    series gets its own noise (and, for random masks, the same mask unless the caller loops).

    Args:
        volume: HR magnitude volume ``(X, Y, Z[, T])``.
        keep: percentage of k-space kept, ``(0, 100]``.
        mode: ``center`` (default), ``random``, ``equispaced`` or ``variable-density``.
        zero_fill: return the LR data zero-filled back to the HR matrix (sinc interpolation).
        noise_snr: optional SNR of added complex Gaussian noise.
        seed: seed of the generator for masks and noise (global RNG is never touched).
        three_d: crop the slice axis as well (``center`` mode only).

    Returns:
        The LR :class:`~mrisr.io.Volume` (``(X', Y', Z[, T])`` with its coarser affine, or the HR
        matrix with ``zero_fill`` or a non-``center`` mode) and the :class:`SimulationInfo`
        (mask, kept percentage).

    Raises:
        ValueError: ``keep`` outside ``(0, 100]``, an unknown ``mode``, or ``three_d`` with a
            mode other than ``center``.
    """
    if not (0 < keep <= 100):
        raise ValueError(f"keep must be in (0, 100] percent, got {keep}")
    rng = np.random.default_rng(seed)
    axes = (0, 1, 2) if three_d else (0, 1)
    data = np.asarray(volume.data, dtype=np.float32)
    out, info = undersample_array(data, keep, mode, zero_fill, noise_snr, rng, axes)
    affine = volume.affine
    if out.shape[:3] != data.shape[:3]:
        affine = coarsen_affine(volume.affine, data.shape[:3], out.shape[:3])
    result = volume.with_data(out, affine=affine)
    result.extra = {"keep_requested": keep, "keep_actual": info.keep_actual, "mode": mode}
    return result, info
