"""Structures the prior does not share with the frame, and priors of another contrast (training).

The network must learn to distrust its prior exactly where the measured frame disagrees with it.
So training pairs get, at random,

* structures in the **target only** (a needle advanced after the planning scan, a vessel that
  filled, a lesion that took up contrast), which the output must show although the prior lacks
  them;
* structures in the **prior only** (a needle since withdrawn, a bolus since washed out), which
  the output must not show although the prior has them;
* a **prior of another contrast**: a random piecewise-linear, usually non-monotone intensity
  remap, so the network uses the prior's edges where they fit and not its intensities.

Shapes are soft-edged (partial volume over one voxel) tubes and ellipsoids, sized in mm. The
benchmark's needles and contrast swap (:mod:`mrisr.inserts`) are built differently on purpose:
the fixed knots of :func:`mrisr.inserts.swap_contrast` are never drawn here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class StructureSettings:
    """Probabilities and sizes of the inserted structures and of the prior's contrast change."""

    target_probability: float = 0.0
    prior_probability: float = 0.0
    remap_probability: float = 0.0
    max_count: int = 3
    needle_radius_mm: tuple[float, float] = (0.8, 2.0)
    vessel_radius_mm: tuple[float, float] = (1.0, 3.0)
    lesion_radius_mm: tuple[float, float] = (2.5, 10.0)


def _axes_mm(shape, zooms) -> list[torch.Tensor]:
    return [torch.arange(n, dtype=torch.float32) * z for n, z in zip(shape, zooms)]


def _soft(distance_mm: torch.Tensor, radius_mm: float, edge_mm: float) -> torch.Tensor:
    """Occupancy in [0, 1]: 1 inside ``radius_mm``, a linear ramp one voxel wide at the edge."""
    return ((radius_mm - distance_mm) / edge_mm + 0.5).clamp(0.0, 1.0)


def tube(shape, zooms, rng: np.random.Generator, radius_mm: float, length_mm: float,
         inside: torch.Tensor | None = None) -> torch.Tensor:
    """Occupancy of a straight segment of radius ``radius_mm`` and length ``length_mm``.

    One end lies at a random voxel of ``inside`` (the object, so the tube reaches tissue), the
    direction is uniform on the sphere.
    """
    ax = _axes_mm(shape, zooms)
    if inside is not None and bool(inside.any()):
        idx = torch.nonzero(inside)
        tip = idx[int(rng.integers(len(idx)))].float() * torch.tensor(zooms, dtype=torch.float32)
    else:
        tip = torch.tensor([rng.uniform(0.2, 0.8) * n * z for n, z in zip(shape, zooms)], dtype=torch.float32)
    u = torch.from_numpy(rng.normal(size=3).astype(np.float32))
    u = u / u.norm().clamp_min(1e-6)
    rel = [ax[0][:, None, None] - tip[0], ax[1][None, :, None] - tip[1], ax[2][None, None, :] - tip[2]]
    along = (rel[0] * u[0] + rel[1] * u[1] + rel[2] * u[2]).clamp(0.0, length_mm)
    dist2 = sum((r - along * c) ** 2 for r, c in zip(rel, u))
    return _soft(dist2.sqrt(), radius_mm, min(zooms))


def ellipsoid(shape, zooms, rng: np.random.Generator, radius_mm: float, inside: torch.Tensor | None = None) -> torch.Tensor:
    """Occupancy of an axis-aligned ellipsoid (semi-axes within 0.6-1.4x ``radius_mm``)."""
    if inside is not None and bool(inside.any()):
        idx = torch.nonzero(inside)
        centre = idx[int(rng.integers(len(idx)))].float() * torch.tensor(zooms, dtype=torch.float32)
    else:
        centre = torch.tensor([rng.uniform(0.3, 0.7) * n * z for n, z in zip(shape, zooms)], dtype=torch.float32)
    semi = radius_mm * rng.uniform(0.6, 1.4, size=3)
    ax = _axes_mm(shape, zooms)
    r2 = sum(((a - c) / s) ** 2 for a, c, s in zip(
        (ax[0][:, None, None], ax[1][None, :, None], ax[2][None, None, :]), centre, semi))
    return _soft(r2.sqrt() * radius_mm, radius_mm, min(zooms))


def bright_level(volume: torch.Tensor) -> float:
    """The 99th percentile of ``volume`` (on at most about 100 000 voxels, every n-th), at least 1e-6:
    the scale that structure contrasts, remaps and site thresholds are relative to."""
    return float(torch.quantile(volume.flatten()[:: max(1, volume.numel() // 100_000)], 0.99).clamp_min(1e-6))


def add_structures(volume: torch.Tensor, zooms, rng: np.random.Generator, settings: StructureSettings) -> torch.Tensor:
    """``volume`` with 1 to ``max_count`` random needles, vessels or lesions inserted into the object."""
    shape = tuple(volume.shape)
    level = bright_level(volume)
    inside = volume > 0.3 * level
    out = volume
    for _ in range(int(rng.integers(1, settings.max_count + 1))):
        kind = rng.choice(["needle", "vessel", "lesion"], p=[0.45, 0.3, 0.25])
        if kind == "needle":
            occ = tube(shape, zooms, rng, rng.uniform(*settings.needle_radius_mm), rng.uniform(15, 80), inside)
            out = out * (1.0 - occ * rng.uniform(0.7, 1.0))
        elif kind == "vessel":
            occ = tube(shape, zooms, rng, rng.uniform(*settings.vessel_radius_mm), rng.uniform(20, 120), inside)
            out = out + occ * level * rng.uniform(0.3, 1.0)
        else:
            occ = ellipsoid(shape, zooms, rng, rng.uniform(*settings.lesion_radius_mm), inside)
            out = out * (1.0 + occ * rng.uniform(-0.7, 1.2))
    return out.clamp_min(0.0)


def random_remap(volume: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A random piecewise-linear intensity remap: air stays dark, tissue intensities reorder.

    Six knots over ``[0, 1.5] x`` the 99th percentile, the first two fixed at ``(0, 0)`` and
    ``(0.08, 0.08)`` so air and the background stay dark, the other values drawn in
    ``[0.15, 1]``: usually non-monotone, as between T1- and T2-weighted scans.
    """
    level = bright_level(volume)
    knots_u = np.array([0.0, 0.08, 0.35, 0.65, 1.0, 1.5])
    knots_v = np.concatenate([[0.0, 0.08], rng.uniform(0.15, 1.0, size=4)])
    u = (volume / level).numpy()
    return torch.from_numpy((np.interp(u, knots_u, knots_v) * level).astype(np.float32))


__all__ = ["StructureSettings", "add_structures", "bright_level", "ellipsoid", "random_remap", "tube"]
