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


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(C, X, Y, Z)`` (replicate borders), ``sigma`` in voxels."""
    if sigma <= 0:
        return field
    k = _gaussian_kernel(sigma).to(field)
    r = (k.numel() - 1) // 2
    out = field[:, None]
    for axis in range(3):
        if out.shape[2 + axis] == 1:
            continue
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = min(r, out.shape[2 + axis] - 1)
        if pad[2 * (2 - axis)] < r:  # replicate padding needs a longer axis: shrink the kernel
            rr = pad[2 * (2 - axis)]
            kk = k[r - rr : r + rr + 1]
            shape[2 + axis] = kk.numel()
            out = F.conv3d(F.pad(out, pad, mode="replicate"), (kk / kk.sum()).view(shape))
        else:
            out = F.conv3d(F.pad(out, pad, mode="replicate"), k.view(shape))
    return out[:, 0]


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
    """``volume(x + disp(x))`` for ``(X, Y, Z)`` (or ``(C, X, Y, Z)``) and a displacement
    ``(3, X, Y, Z)`` in voxels; trilinear, border values outside."""
    return warp_to(volume, disp, volume.shape[-3:])


_BASE: dict[tuple, torch.Tensor] = {}


def _base_positions(n_in, n_out, device) -> torch.Tensor:
    """Input-grid positions ``(3, *n_out)`` of the output voxels: output index ``i`` lies at input
    index ``(i - n_out // 2) * n_in / n_out + n_in // 2`` (the k-space zero-fill convention)."""
    key = (tuple(n_in), tuple(n_out), str(device))
    if key not in _BASE:
        axes = [(torch.arange(o, dtype=torch.float32, device=device) - o // 2) * (i / o) + i // 2
                for i, o in zip(n_in, n_out)]
        if len(_BASE) > 16:
            _BASE.clear()
        _BASE[key] = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    return _BASE[key]


def warp_to(volume: torch.Tensor, disp: torch.Tensor | None, shape) -> torch.Tensor:
    """Sample ``volume`` (``(X, Y, Z)`` or ``(C, X, Y, Z)``) on a grid of ``shape`` covering the same
    field of view, displaced by ``disp`` (``(3, *shape)`` in voxels of *that* grid, or None)."""
    squeeze = volume.dim() == 3
    vol = volume[None] if squeeze else volume
    n_in, n_out = tuple(vol.shape[-3:]), tuple(int(s) for s in shape)
    pos = _base_positions(n_in, n_out, vol.device)
    if disp is not None:
        pos = pos + disp * torch.tensor([i / o for i, o in zip(n_in, n_out)], device=vol.device).view(3, 1, 1, 1)
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in n_in], device=vol.device).view(3, 1, 1, 1)
    norm = pos * scale - 1.0
    grid = norm.flip(0).permute(1, 2, 3, 0)[None]  # grid_sample wants (W, H, D) = (Z, Y, X) last
    out = F.grid_sample(vol[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    return out[0] if squeeze else out


def match_histogram(moving: np.ndarray, fixed: np.ndarray, points: int = 15) -> np.ndarray:
    """Map ``moving``'s intensities so its quantiles (above a background threshold) match ``fixed``'s."""
    def fg(a):
        v = a.ravel()
        return v[v > 0.05 * np.percentile(v, 99.5)]

    q = np.linspace(0.02, 0.98, points)
    src, dst = np.quantile(fg(moving), q), np.quantile(fg(fixed), q)
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
        g = 0.5 * (grad_f + gradient(mw)) / scale
        denom = (g * g).sum(0) + diff * diff
        step = torch.where(denom > 1e-9, -diff / denom.clamp_min(1e-9), torch.zeros_like(diff)) * g
        norm = step.norm(dim=0, keepdim=True)
        step = step * torch.clamp(max_step / norm.clamp_min(1e-9), max=1.0)
        u = smooth(u + step, sigma)
    return u
