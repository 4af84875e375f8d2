"""Pure k-space operations on numpy arrays or torch tensors.

Conventions:
    * Images are magnitude volumes ``(X, Y, Z[, T])``; the in-plane axes are ``(0, 1)`` and the
      slice axis (2) is never touched unless ``axes`` says so (3-D mode: ``(0, 1, 2)``).
    * FFTs are centred (DC at index ``N // 2``) and use ``norm="forward"``: the DC coefficient is
      the image mean, so cropping or zero-filling k-space keeps the mean intensity, and keeping
      100 % is the identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Axes = Sequence[int]


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def fftc(image, axes: Axes = (0, 1)):
    """Centred forward FFT over ``axes`` (DC at ``N // 2``, coefficients scaled by ``1/N``)."""
    axes = tuple(axes)
    if _is_torch(image):
        import torch

        return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(image, dim=axes), dim=axes, norm="forward"), dim=axes)
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(image, axes=axes), axes=axes, norm="forward"), axes=axes)


def ifftc(kspace, axes: Axes = (0, 1)):
    """Inverse of :func:`fftc`."""
    axes = tuple(axes)
    if _is_torch(kspace):
        import torch

        return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(kspace, dim=axes), dim=axes, norm="forward"), dim=axes)
    return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(kspace, axes=axes), axes=axes, norm="forward"), axes=axes)


def center_keep_shape(shape: Sequence[int], keep: float) -> tuple[int, ...]:
    """Size of the centred k-space block kept at ``keep`` percent.

    The block keeps the matrix's aspect ratio and is cropped symmetrically (each size has the
    parity of the full size); it is the largest such block whose kept fraction is ``<= keep``.
    On 256x256: 25 -> 128², 10 -> 80², 6.25 -> 64², 4 -> 50².

    Args:
        shape: full matrix along the cropped axes, e.g. ``(256, 256)`` or ``(256, 256, 32)``.
        keep: percentage of k-space samples to keep, in ``(0, 100]``.
    """
    if not (0 < keep <= 100):
        raise ValueError(f"keep must be in (0, 100] percent, got {keep}")
    shape = tuple(int(s) for s in shape)
    total = math.prod(shape)
    if keep >= 100:
        return shape
    target = keep / 100.0
    first = shape[0]
    best = tuple(1 if s % 2 else 2 for s in shape)
    for m0 in range(first, 0, -2):
        sizes = [m0]
        for s in shape[1:]:
            ideal = m0 * s / first
            # nearest size of the right parity
            cand = int(round((ideal - (s % 2)) / 2)) * 2 + (s % 2)
            sizes.append(min(max(cand, 1 if s % 2 else 2), s))
        if math.prod(sizes) / total <= target + 1e-12:
            best = tuple(sizes)
            break
    return best


def keep_percent_of(full_shape: Sequence[int], kept_shape: Sequence[int]) -> float:
    """Percentage of k-space a block of ``kept_shape`` keeps from ``full_shape``."""
    return 100.0 * math.prod(int(s) for s in kept_shape) / math.prod(int(s) for s in full_shape)


def _slices(full: Sequence[int], part: Sequence[int], axes: Axes, ndim: int):
    index = [slice(None)] * ndim
    for axis, n, m in zip(axes, full, part):
        start = n // 2 - m // 2
        index[axis] = slice(start, start + m)
    return tuple(index)


def crop_kspace(kspace, size: Sequence[int], axes: Axes = (0, 1)):
    """Keep the centred block of ``size`` along ``axes`` (DC stays at the block's ``M // 2``)."""
    full = [kspace.shape[a] for a in axes]
    for n, m in zip(full, size):
        if m > n:
            raise ValueError(f"cannot crop {n} samples to {m}")
    return kspace[_slices(full, size, axes, kspace.ndim)]


def pad_kspace(kspace, size: Sequence[int], axes: Axes = (0, 1)):
    """Zero-fill k-space to ``size`` along ``axes``, the inverse placement of :func:`crop_kspace`."""
    part = [kspace.shape[a] for a in axes]
    shape = list(kspace.shape)
    for a, m in zip(axes, size):
        shape[a] = int(m)
    for n, m in zip(size, part):
        if m > n:
            raise ValueError(f"cannot zero-fill {m} samples to {n}")
    if _is_torch(kspace):
        import torch

        out = torch.zeros(shape, dtype=kspace.dtype, device=kspace.device)
    else:
        out = np.zeros(shape, dtype=kspace.dtype)
    out[_slices(size, part, axes, kspace.ndim)] = kspace
    return out


def _abs(x):
    return x.abs() if _is_torch(x) else np.abs(x)


def _real_dtype(x):
    if _is_torch(x):
        return x.real.dtype if x.is_complex() else x.dtype
    return np.float32 if x.dtype in (np.float32, np.complex64) else np.float64


# Shift-free transforms on the large grid (torch tensors, even sizes). One fftshift is a full copy
# that costs more than the 2-D FFT itself (benchmarks/RESULTS.md, 'Design decisions and their
# measurements'), and a centred crop or zero-fill needs two of them on the large grid. For an
# even size ``N`` the shifts are sign flips of the spectrum: ``ifftshift`` of an image multiplies its spectrum by
# ``(-1)^f``, and ``fftshift`` of an inverse transform's output is the inverse transform of the
# spectrum times ``(-1)^f``. Both are applied on the small central block, which is gathered from
# (or scattered into) the unshifted spectrum by index; each axis is transformed in turn, so the
# second transform only runs on the block's rows. Same values as the shifted path to float
# rounding (tested).


def _shift_free(x, axes: Axes, size: Sequence[int] | None = None) -> bool:
    """Whether the torch shift-free path applies: a torch tensor and even sizes on the large grid."""
    if not _is_torch(x):
        return False
    large = [x.shape[a] for a in axes] if size is None else list(size)
    return all(int(n) % 2 == 0 for n in large)


def _block_index(n: int, m: int, device):
    """Unshifted indices of the centred ``m``-block of an ``n``-point spectrum (centred order) and
    the signs ``(-1)^f`` of its frequencies ``f = j - m // 2``."""
    import torch

    f = torch.arange(m, device=device) - m // 2
    return torch.remainder(f, n), (1 - 2 * torch.remainder(f, 2)).to(torch.float32)


def _along(v, axis: int, ndim: int):
    shape = [1] * ndim
    shape[axis] = -1
    return v.view(shape)


def _centre_spectrum(image, size: Sequence[int], axes: tuple[int, ...]):
    """``crop_kspace(fftc(image, axes), size, axes)`` without shifting the large grid (even sizes)."""
    import torch

    out = image
    for axis, m in zip(axes, size):
        n = int(out.shape[axis])
        if int(m) > n:
            raise ValueError(f"cannot crop {n} samples to {m}")
        index, sign = _block_index(n, int(m), out.device)
        out = torch.fft.fft(out, dim=axis, norm="forward").index_select(axis, index) * _along(sign, axis, out.ndim)
    return out


def _expand_spectrum(centre, size: Sequence[int], axes: tuple[int, ...]):
    """``ifftc(pad_kspace(centre, size, axes), axes)`` without shifting the large grid (even sizes)."""
    import torch

    out = centre
    # the reverse order of _centre_spectrum: the axis transformed last there (the smaller stride,
    # whose transform is the slower one: benchmarks/RESULTS.md, 'Design decisions and their
    # measurements') is transformed first here, on the block's rows only
    for axis, n in reversed(list(zip(axes, size))):
        m = int(out.shape[axis])
        if m > int(n):
            raise ValueError(f"cannot zero-fill {m} samples to {n}")
        index, sign = _block_index(int(n), m, out.device)
        shape = list(out.shape)
        shape[axis] = int(n)
        full = torch.zeros(shape, dtype=out.dtype, device=out.device)
        full.index_copy_(axis, index, out * _along(sign, axis, out.ndim))
        out = torch.fft.ifft(full, dim=axis, norm="forward")
    return out


def crop_lowres(image, size: Sequence[int], axes: Axes = (0, 1), magnitude: bool = True):
    """The image reconstructed from the central ``size`` block of ``image``'s k-space: the smaller
    matrix over the same field of view (larger voxels), index ``N // 2`` <-> ``M // 2``."""
    if _shift_free(image, axes):
        out = ifftc(_centre_spectrum(image, size, tuple(axes)), axes)
        return (_abs(out) if magnitude else out).contiguous()
    out = ifftc(crop_kspace(fftc(image, axes), size, axes), axes)
    return _abs(out).astype(_real_dtype(image)) if not _is_torch(out) and magnitude else (_abs(out) if magnitude else out)


def center_crop_lowres(image, keep: float, axes: Axes = (0, 1), magnitude: bool = True):
    """LR image a scanner acquiring only the central ``keep`` % of k-space would reconstruct.

    Returns the genuinely smaller matrix (same field of view, larger voxels); use
    :func:`mrisr.io.coarsen_affine` for its affine.
    """
    return crop_lowres(image, center_keep_shape([image.shape[a] for a in axes], keep), axes, magnitude)


def zero_fill(image, size: Sequence[int], axes: Axes = (0, 1), magnitude: bool = True):
    """Bring an image to a finer matrix by zero-filling its k-space (sinc interpolation).

    This is the standard baseline and the operator that brings LR frames to the HR grid
    before the network. Mean intensity is preserved.

    Args:
        image: ``(X, Y, Z[, T])`` magnitude (or complex) image.
        size: target matrix along ``axes``.
    """
    if _shift_free(image, axes, size):
        # the transforms leave the last-transformed axis innermost: back to the input's layout
        out = _expand_spectrum(fftc(image, axes), size, tuple(axes))
        return (_abs(out).to(_real_dtype(image)) if magnitude else out).contiguous()
    out = ifftc(pad_kspace(fftc(image, axes), size, axes), axes)
    if not magnitude:
        return out
    return _abs(out).astype(_real_dtype(image)) if not _is_torch(out) else _abs(out).to(_real_dtype(image))


def apply_mask(image, mask, axes: Axes = (0, 1), magnitude: bool = True):
    """Keep the k-space samples where ``mask`` is true (broadcast over the other axes); zero-filled."""
    k = fftc(image, axes)
    shape = [1] * k.ndim
    for a in axes:
        shape[a] = k.shape[a]
    mask = mask.reshape(shape)
    out = ifftc(k * mask, axes)
    if not magnitude:
        return out
    return _abs(out).astype(_real_dtype(image)) if not _is_torch(out) else _abs(out)


def add_complex_noise(image, snr: float, rng: np.random.Generator, reference_level: float | None = None):
    """Add complex white Gaussian noise so that ``reference_level / sigma == snr``.

    ``reference_level`` defaults to the mean of the voxels above 10 % of the 99th percentile
    (the object's mean signal). White noise in the image is white in k-space, so the noise
    is added before undersampling. Returns a complex array.
    """
    if snr <= 0:
        raise ValueError(f"noise SNR must be > 0, got {snr}")
    mag = np.abs(image)
    if reference_level is None:
        p99 = np.percentile(mag, 99)
        fg = mag[mag > 0.1 * p99]
        reference_level = float(fg.mean()) if fg.size else float(mag.mean())
    sigma = reference_level / snr
    noise = rng.normal(0.0, sigma, size=image.shape) + 1j * rng.normal(0.0, sigma, size=image.shape)
    return image.astype(np.complex64) + noise.astype(np.complex64)
