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
    """Separable Gaussian smoothing of ``(C, X, Y, Z)`` (replicated borders), ``sigma`` in voxels."""
    if sigma <= 0:
        return field
    _, nx, ny, nz = field.shape
    out = torch.einsum("cxyz,Xx->cXyz", field, _smooth_matrix(nx, sigma, field.device))
    out = torch.einsum("cxyz,Yy->cxYz", out, _smooth_matrix(ny, sigma, field.device))
    return torch.einsum("cxyz,Zz->cxyZ", out, _smooth_matrix(nz, sigma, field.device))


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


def warp_rows(volume: torch.Tensor, disp: torch.Tensor, x0: int) -> torch.Tensor:
    """Rows ``x0 .. x0 + disp.shape[1]`` of ``volume(x + disp(x))`` (``volume`` ``(X, Y, Z)``, ``disp``
    ``(3, rows, Y, Z)`` in voxels): a block of :func:`warp` that needs memory for the block only."""
    n = volume.shape
    rows = disp.shape[1]
    idx = [torch.arange(x0, x0 + rows, dtype=torch.float32, device=volume.device),
           torch.arange(n[1], dtype=torch.float32, device=volume.device),
           torch.arange(n[2], dtype=torch.float32, device=volume.device)]
    coords = []
    for a in (2, 1, 0):  # grid_sample wants (W, H, D) = (Z, Y, X) last
        shape = [1, 1, 1]
        shape[a] = -1
        pos = idx[a].view(shape) + disp[a]
        coords.append(pos * (2.0 / max(n[a] - 1, 1)) - 1.0)
    grid = torch.stack(coords, dim=-1)[None]
    return F.grid_sample(volume[None, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0, 0]


def match_histogram(moving: np.ndarray, fixed: np.ndarray, points: int = 15, foreground: float = 0.05) -> np.ndarray:
    """Map ``moving``'s intensities so its quantiles above ``foreground`` times its 99.5th percentile
    (the object, not the air) match ``fixed``'s above the same fraction of ``fixed``'s."""
    def fg(a):
        v = a.ravel()
        return v[v > foreground * np.percentile(v, 99.5)]

    q = np.linspace(0.02, 0.98, points)
    moving_fg, fixed_fg = fg(moving), fg(fixed)
    if moving_fg.size == 0 or fixed_fg.size == 0:
        return np.asarray(moving, dtype=np.float32)  # an image without signal has no histogram to match
    src, dst = np.quantile(moving_fg, q), np.quantile(fixed_fg, q)
    src = np.maximum.accumulate(src + np.arange(points) * 1e-6 * max(float(src[-1]), 1e-6))
    return np.interp(moving, np.concatenate([[0.0], src]), np.concatenate([[0.0], dst])).astype(np.float32)


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
    for _ in range(int(iterations)):
        mw = warp(moving, u)
        diff = (mw - fixed) / scale
        g = (grad_f + gradient(mw)) * (0.5 / scale)
        g2 = g[0] * g[0] + g[1] * g[1] + g[2] * g[2]
        amount = -diff / (g2 + diff * diff + 1e-12)  # the step is amount * g
        # limit the step length |amount| * |g| to max_step voxels
        amount = amount * torch.clamp(max_step / (amount.abs() * g2.sqrt() + 1e-12), max=1.0)
        u = smooth(u + amount * g, sigma)
    return u
