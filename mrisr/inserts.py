"""Structures and contrasts that make a phantom's prior wrong: needles and a swapped contrast.

Interventional dynamic MRI exists to see what changes: a needle advancing, a device withdrawn, a
bolus. A prior-guided method must show a structure the planning scan lacks and must not show one
that only the planning scan has. :func:`mrisr.phantom.make_dynamic` uses these helpers to build
such phantoms (``insert="needle"``, ``planning_insert="needle"``, ``planning_contrast="swap"``).

A needle is a straight signal void (default 2.5 mm across), modelled as the fraction of each voxel
it occupies, computed by supersampling the slice thickness and a one-voxel linear edge in-plane,
so thick slices show it with partial volume, as a scanner would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["INSERTS", "PLANNING_CONTRASTS", "NeedlePath", "needle_occupancy", "plan_needle", "swap_contrast"]

#: structures :func:`mrisr.phantom.make_dynamic` can insert
INSERTS = ("needle",)
#: contrasts the planning scan can be given
PLANNING_CONTRASTS = ("same", "swap")

#: needle diameter in mm (a 12-14 G biopsy needle's signal void)
NEEDLE_DIAMETER_MM = 2.5
#: how far the needle starts outside the object, mm
NEEDLE_OUTSIDE_MM = 10.0
#: deepest insertion as a fraction of the entry-to-centre distance
NEEDLE_DEPTH_FRACTION = 0.6


@dataclass(frozen=True)
class NeedlePath:
    """A straight in-plane needle path in a volume's voxel frame.

    Attributes:
        entry_mm: where the path crosses the object's edge, ``(x, y, z)`` in mm from voxel 0.
        direction: unit vector (mm space) pointing into the object.
        max_depth_mm: deepest insertion beyond the edge.
        diameter_mm: needle diameter.
    """

    entry_mm: tuple[float, float, float]
    direction: tuple[float, float, float]
    max_depth_mm: float
    diameter_mm: float = NEEDLE_DIAMETER_MM

    def as_dict(self) -> dict:
        return {"entry_mm": [round(v, 3) for v in self.entry_mm], "direction": [round(v, 5) for v in self.direction],
                "max_depth_mm": round(self.max_depth_mm, 3), "diameter_mm": self.diameter_mm}


def plan_needle(static: np.ndarray, zooms: Sequence[float], rng: np.random.Generator,
                diameter_mm: float = NEEDLE_DIAMETER_MM) -> NeedlePath:
    """A random in-plane needle path from the object's edge towards its centre.

    The slice is drawn from the middle third of the slab, the direction uniformly in-plane; the
    path enters where a ray from the object's centroid (in that slice) leaves the object.

    Args:
        static: ``(X, Y, Z)`` volume the needle goes into.
        zooms: voxel sizes in mm.
        rng: random generator (slice and angle).
        diameter_mm: needle diameter.

    Returns:
        The path; its deepest insertion is 60 % of the entry-to-centre distance.
    """
    from mrisr.metrics.masks import object_mask

    zooms_arr = np.asarray(zooms, dtype=np.float64)
    nz = static.shape[2]
    z0 = int(rng.integers(nz // 3, max(nz // 3 + 1, nz - nz // 3)))
    inside = object_mask(static[:, :, z0 : z0 + 1], dilation=0)[:, :, 0]
    if not inside.any() or inside.all():
        inside = np.ones(static.shape[:2], dtype=bool)
    centroid = np.argwhere(inside).mean(axis=0) * zooms_arr[:2]
    angle = float(rng.uniform(0.0, 2.0 * np.pi))
    direction = np.array([np.cos(angle), np.sin(angle)])
    step = 0.5 * float(zooms_arr[:2].min())
    limit = float(np.hypot(*(np.asarray(static.shape[:2]) * zooms_arr[:2])))
    distance = 0.0
    # walk outwards (against the insertion direction) until the ray leaves the object
    while distance < limit:
        point = centroid - (distance + step) * direction
        idx = np.round(point / zooms_arr[:2]).astype(int)
        if np.any(idx < 0) or np.any(idx >= static.shape[:2]) or not inside[idx[0], idx[1]]:
            break
        distance += step
    entry = centroid - distance * direction
    return NeedlePath(
        entry_mm=(float(entry[0]), float(entry[1]), float(z0 * zooms_arr[2])),
        direction=(float(direction[0]), float(direction[1]), 0.0),
        max_depth_mm=float(max(NEEDLE_DEPTH_FRACTION * distance, 2.0 * diameter_mm)),
        diameter_mm=float(diameter_mm),
    )


def needle_occupancy(shape: Sequence[int], zooms: Sequence[float], path: NeedlePath, depth_mm: float,
                     z_samples: int = 7) -> np.ndarray:
    """Fraction of each voxel the needle occupies, ``(X, Y, Z)`` float32 in ``[0, 1]``.

    The needle runs from ``NEEDLE_OUTSIDE_MM`` outside the entry point to ``depth_mm`` beyond it
    (a cylinder with a rounded tip). In-plane the edge is a linear ramp over one voxel (the area
    fraction of a straight edge); through-plane the slice thickness is sampled ``z_samples`` times.

    Args:
        shape: ``(X, Y, Z)``.
        zooms: voxel sizes in mm.
        path: the needle path.
        depth_mm: insertion depth beyond the entry point (0 or less: no needle).
    """
    out = np.zeros(tuple(int(s) for s in shape), dtype=np.float32)
    if depth_mm <= 0:
        return out
    zooms_arr = np.asarray(zooms, dtype=np.float64)
    radius = 0.5 * path.diameter_mm
    direction = np.asarray(path.direction, dtype=np.float64)
    start = np.asarray(path.entry_mm) - NEEDLE_OUTSIDE_MM * direction
    length = NEEDLE_OUTSIDE_MM + float(depth_mm)
    end = start + length * direction
    margin = radius + zooms_arr
    low = np.maximum(np.floor((np.minimum(start, end) - margin) / zooms_arr).astype(int), 0)
    high = np.minimum(np.ceil((np.maximum(start, end) + margin) / zooms_arr).astype(int) + 1, out.shape)
    if np.any(high <= low):
        return out
    grids = np.meshgrid(*[np.arange(lo, hi) * z for lo, hi, z in zip(low, high, zooms_arr)], indexing="ij")
    edge = float(zooms_arr[:2].min())
    acc = np.zeros(grids[0].shape, dtype=np.float64)
    for offset in (np.arange(z_samples) + 0.5) / z_samples - 0.5:
        rel = [grids[0] - start[0], grids[1] - start[1], grids[2] + offset * zooms_arr[2] - start[2]]
        along = rel[0] * direction[0] + rel[1] * direction[1] + rel[2] * direction[2]
        perp2 = sum(r * r for r in rel) - along * along
        dist = np.sqrt(np.maximum(perp2, 0.0))
        # rounded ends: beyond them the distance grows along the axis too
        over = np.maximum(np.maximum(-along, along - length), 0.0)
        dist = np.sqrt(dist * dist + over * over)
        acc += np.clip(0.5 + (radius - dist) / edge, 0.0, 1.0)
    out[low[0] : high[0], low[1] : high[1], low[2] : high[2]] = (acc / z_samples).astype(np.float32)
    return out


def swap_contrast(image: np.ndarray) -> np.ndarray:
    """A non-monotone intensity remap, as between T1- and T2-weighted scans of one subject.

    Intensities relative to the 99th percentile ``u`` map piecewise-linearly through
    ``(0, 0) (0.1, 0.1) (0.35, 1) (0.65, 0.7) (1, 0.35) (1.5, 0.3)`` and back to the original
    scale: air stays dark, dark tissue (fluid on T1) becomes the brightest, bright tissue (white
    matter on T1) becomes dark. Edges stay where they are; intensities no longer order the same way.
    """
    data = np.asarray(image, dtype=np.float32)
    level = float(np.percentile(data, 99))
    if not level > 0:
        return data.copy()
    u = data / level
    knots_u = np.array([0.0, 0.1, 0.35, 0.65, 1.0, 1.5])
    knots_v = np.array([0.0, 0.1, 1.0, 0.7, 0.35, 0.3])
    return (np.interp(u, knots_u, knots_v) * level).astype(np.float32)


def warp_mask(occupancy: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """Core of a structure after a pull-back warp: where the warped occupancy (linear) reaches half
    of the structure's largest occupancy (slices thicker than the needle never hold all of it)."""
    grids = np.ogrid[tuple(slice(0, n) for n in occupancy.shape)]
    coords = [np.asarray(displacement[a], dtype=np.float64) + grids[a] for a in range(3)]
    peak = float(occupancy.max())
    if peak <= 0:
        return np.zeros(occupancy.shape, dtype=bool)
    return ndimage.map_coordinates(occupancy, coords, order=1, mode="nearest") >= 0.5 * peak
