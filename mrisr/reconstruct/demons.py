"""Symmetric-forces demons registration in torch (small 3-D images, CPU or GPU).

A dense displacement ``u`` (in voxels) is refined so that ``moving(x + u(x))`` matches ``fixed(x)``:
each iteration adds the symmetric demons force ``-(m(x+u) - f) g / (|g|^2 + (m(x+u) - f)^2)`` with
``g`` the mean of the fixed and warped moving gradients, then smooths ``u`` with a Gaussian (the
elastic regulariser of Thirion's demons, as in ITK's ``FastSymmetricForcesDemonsRegistrationFilter``
with a smoothed displacement field). It works in voxel units, so smoothing widths are in voxels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

_SMOOTH: dict[tuple, torch.Tensor] = {}


def _smooth_matrix(n: int, sigma: float, device) -> torch.Tensor:
    """``(n, n)`` Gaussian smoothing along one axis with replicated borders (rows sum to 1): as a
    dense matrix product it is much faster on small 3-D images than a 1-channel convolution."""
    key = (n, round(float(sigma), 6), str(device))
    if key not in _SMOOTH:
        radius = max(1, int(math.ceil(2.5 * sigma)))
        taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
        weights = torch.exp(-(taps**2) / (2 * sigma**2))
        weights = weights / weights.sum()
        mat = torch.zeros(n, n, dtype=torch.float64)
        rows = torch.arange(n)
        for t, w in zip(taps.long().tolist(), weights.tolist()):
            mat[rows, (rows + t).clamp(0, n - 1)] += w
        if len(_SMOOTH) > 32:
            _SMOOTH.clear()
        _SMOOTH[key] = mat.float().to(device)
    return _SMOOTH[key]


def smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(C, X, Y, Z)`` (replicated borders), ``sigma`` in voxels.

    Three batched matrix products on views of the field (no permuted copies): the same values as
    the equivalent ``einsum`` in about half its time (benchmarks/RESULTS.md, 'Design decisions and
    their measurements').
    """
    if sigma <= 0:
        return field
    c, nx, ny, nz = field.shape
    out = torch.matmul(_smooth_matrix(nx, sigma, field.device), field.reshape(c, nx, ny * nz)).view(c, nx, ny, nz)
    out = torch.matmul(_smooth_matrix(ny, sigma, field.device), out.view(c * nx, ny, nz)).view(c, nx, ny, nz)
    return torch.matmul(out, _smooth_matrix(nz, sigma, field.device).T)


def gradient(volume: torch.Tensor) -> torch.Tensor:
    """Central-difference gradient ``(3, X, Y, Z)`` of ``(X, Y, Z)`` in voxel units (one-sided at borders)."""
    grads = []
    for axis in range(3):
        if volume.shape[axis] < 2:
            grads.append(torch.zeros_like(volume))
        else:
            grads.append(torch.gradient(volume, dim=axis)[0])
    return torch.stack(grads)


def warp(volume: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """``volume(x + disp(x))`` for ``(X, Y, Z)`` and a displacement ``(3, X, Y, Z)`` in voxels;
    trilinear, border values outside."""
    return warp_rows(volume, disp, 0)


#: replicated rows above and below each slice of :func:`rows_image`: the reach of a bicubic kernel,
#: so no sample of one slice ever reads its neighbour's rows
ROW_PAD = 2


def rows_image(volume: torch.Tensor) -> torch.Tensor:
    """``(X, Y, Z)`` as the ``(1, 1, Z * (X + 2P), Y)`` image :func:`warp_rows` samples, ``P`` =
    :data:`ROW_PAD`: slice ``z`` is rows ``z * (X + 2P) + P .. z * (X + 2P) + P + X - 1``, with its
    first and last row repeated ``P`` times above and below. Pass it to every warp of the same
    volume to build it once."""
    n = volume.shape
    stacked = volume.permute(2, 0, 1)
    padded = torch.cat([stacked[:, :1].expand(-1, ROW_PAD, -1), stacked, stacked[:, -1:].expand(-1, ROW_PAD, -1)], dim=1)
    return padded.reshape(1, 1, n[2] * (n[0] + 2 * ROW_PAD), n[1])


def rows_volume(rows_view: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """The ``(X, Y, Z)`` volume inside a :func:`rows_image` (a view, no copy)."""
    nx, ny, nz = shape
    return rows_view.view(nz, nx + 2 * ROW_PAD, ny)[:, ROW_PAD : ROW_PAD + nx].permute(1, 2, 0)


def warp_rows(volume: torch.Tensor, disp: torch.Tensor, x0: int, rows_view: torch.Tensor | None = None,
              mode: str = "linear") -> torch.Tensor:
    """Rows ``x0 .. x0 + disp.shape[1]`` of ``volume(x + disp(x))`` (``volume`` ``(X, Y, Z)``, ``disp``
    ``(3, rows, Y, Z)`` in voxels): a block of :func:`warp` that needs memory for the block only.

    Args:
        mode: ``"linear"``: trilinear; ``"cubic"``: bicubic in-plane (PyTorch's cubic convolution,
            ``a = -0.75``, interpolating) and linear between slices. Coordinates are clamped to the
            volume (border values); cubic values can overshoot the input's range slightly.

    Both run as two samples of the stacked slices (:func:`rows_image`, or ``rows_view`` when the
    caller has it) and a linear step between slices: torch's 2-D sampler is vectorised on the CPU
    while the 3-D one is not (benchmarks/RESULTS.md, 'Design decisions and their measurements').
    The repeated rows around each slice keep every
    sample inside its own slice, so the linear mode equals the 3-D sampler up to float32 rounding of
    the tall image's normalised row coordinate (tested).
    """
    if mode not in ("linear", "cubic"):
        raise ValueError(f"warp mode must be 'linear' or 'cubic', not {mode!r}")
    n = volume.shape
    rows = disp.shape[1]
    tall = rows_image(volume) if rows_view is None else rows_view
    stride = n[0] + 2 * ROW_PAD
    dev = volume.device
    ix = (torch.arange(x0, x0 + rows, dtype=torch.float32, device=dev).view(-1, 1, 1) + disp[0]).clamp_(0, n[0] - 1)
    iy = (torch.arange(n[1], dtype=torch.float32, device=dev).view(1, -1, 1) + disp[1]).clamp_(0, n[1] - 1)
    iz = (torch.arange(n[2], dtype=torch.float32, device=dev).view(1, 1, -1) + disp[2]).clamp_(0, n[2] - 1)
    z0 = iz.floor()
    wz = iz - z0
    z1 = (z0 + 1).clamp_(max=n[2] - 1)
    scale = 2.0 / max(n[2] * stride - 1, 1)
    ix.add_(ROW_PAD)
    # grid_sample wants (column, row) = (Y, tall row) last, in [-1, 1]; both slices in one call
    grid = torch.empty((2, rows, n[1], n[2], 2), dtype=torch.float32, device=dev)
    grid[..., 0] = iy.mul_(2.0 / max(n[1] - 1, 1)).sub_(1.0)
    grid[0, ..., 1] = (z0 * stride + ix).mul_(scale).sub_(1.0)
    grid[1, ..., 1] = (z1 * stride + ix).mul_(scale).sub_(1.0)
    out = F.grid_sample(tall, grid.view(1, 2 * rows, n[1] * n[2], 2), mode="bilinear" if mode == "linear" else "bicubic",
                        padding_mode="border", align_corners=True).view(2, rows, n[1], n[2])
    return torch.lerp(out[0], out[1], wz)


def _background_level(image: np.ndarray, threshold: float) -> float:
    """Median of the voxels at or below ``threshold`` (the air's level; 0 without air)."""
    background = image.ravel()[image.ravel() <= threshold]
    return float(np.median(background)) if background.size else 0.0


def match_histogram(moving: np.ndarray, fixed: np.ndarray, points: int = 15, foreground: float = 0.05,
                    background: bool = False) -> np.ndarray:
    """Map ``moving``'s intensities so its quantiles above ``foreground`` times its 99.5th percentile
    (the object, not the air) match ``fixed``'s above the same fraction of ``fixed``'s.

    Below the lowest quantile the map runs linearly to 0 -> 0. With ``background``, when the air of
    ``moving`` lies higher than ``fixed``'s (median of the voxels below the foreground threshold), the
    map runs to ``moving``'s air level -> ``fixed``'s instead, and below it linearly to 0: a planning
    scan with noise of its own has a Rician floor in the air (its band-limited magnitude keeps it)
    that the frame lacks, and an air brighter than the frame's pulls the registration at every edge
    of the object (benchmarks/RESULTS.md, 'Registration on noisy planning scans').
    """
    def threshold(a):
        return foreground * np.percentile(a, 99.5)

    def fg(a):
        v = a.ravel()
        return v[v > threshold(a)]

    q = np.linspace(0.02, 0.98, points)
    moving_fg, fixed_fg = fg(moving), fg(fixed)
    if moving_fg.size == 0 or fixed_fg.size == 0:
        return np.asarray(moving, dtype=np.float32)  # an image without signal has no histogram to match
    src, dst = np.quantile(moving_fg, q), np.quantile(fixed_fg, q)
    low_src, low_dst = 0.0, 0.0
    if background:
        moving_air, fixed_air = _background_level(moving, threshold(moving)), _background_level(fixed, threshold(fixed))
        if moving_air > fixed_air and moving_air < src[0]:
            low_src, low_dst = moving_air, min(fixed_air, float(dst[0]))
    src = np.maximum.accumulate(src + np.arange(points) * 1e-6 * max(float(src[-1]), 1e-6))
    anchors_src, anchors_dst = ([0.0, low_src], [0.0, low_dst]) if low_src > 0 else ([0.0], [0.0])
    out = np.interp(moving, np.concatenate([anchors_src, src]), np.concatenate([anchors_dst, dst]))
    return out.astype(np.float32)


def demons(fixed: torch.Tensor, moving: torch.Tensor, iterations: int, sigma: float,
           init: torch.Tensor | None = None, max_step: float = 1.0) -> torch.Tensor:
    """Displacement ``(3, X, Y, Z)`` (voxels) such that ``moving(x + u) ~ fixed``.

    Args:
        fixed / moving: ``(X, Y, Z)`` float tensors on the same grid, similar intensities.
        iterations: number of demons iterations.
        sigma: Gaussian smoothing of the displacement per iteration, in voxels.
        init: starting displacement (e.g. the previous frame's).
        max_step: largest update per voxel and iteration, in voxels (keeps the force stable).
    """
    u = torch.zeros((3, *fixed.shape), dtype=torch.float32, device=fixed.device) if init is None else init.clone()
    grad_f = gradient(fixed)
    scale = float(fixed.abs().max()) or 1.0
    moving_rows = rows_image(moving)
    for _ in range(int(iterations)):
        mw = warp_rows(moving, u, 0, moving_rows)
        diff = (mw - fixed) / scale
        g = (grad_f + gradient(mw)) * (0.5 / scale)
        g2 = g[0] * g[0] + g[1] * g[1] + g[2] * g[2]
        amount = -diff / (g2 + diff * diff + 1e-12)  # the step is amount * g
        # limit the step length |amount| * |g| to max_step voxels
        amount = amount * torch.clamp(max_step / (amount.abs() * g2.sqrt() + 1e-12), max=1.0)
        u = smooth(u + amount * g, sigma)
    return u
