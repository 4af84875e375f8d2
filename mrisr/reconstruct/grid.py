"""The HR grid a reconstruction writes: matrix, affine and how it was chosen."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrisr.io.geometry import refine_affine, voxel_sizes
from mrisr.io.volume import Volume
from mrisr.kspace.functional import zero_fill

DEFAULT_FACTOR = 4.0


@dataclass
class HRGrid:
    """Target grid of a reconstruction.

    Attributes:
        lr_shape: the dynamic's spatial matrix ``(X, Y, Z)``.
        hr_shape: the output matrix ``(X', Y', Z)`` (slices untouched).
        hr_affine: output voxel-to-world affine (k-space zero-fill convention of :mod:`mrisr.io`).
        keep: percentage of the HR k-space the LR matrix represents.
        how: which rule chose the grid (``prior``, ``factor``, ``matrix``, ``default``).
    """

    lr_shape: tuple[int, int, int]
    hr_shape: tuple[int, int, int]
    hr_affine: np.ndarray
    keep: float
    how: str

    @property
    def hr_inplane(self) -> tuple[int, int]:
        return self.hr_shape[0], self.hr_shape[1]

    def as_dict(self) -> dict:
        return {"lr_shape": list(self.lr_shape), "hr_shape": list(self.hr_shape), "keep_percent": round(self.keep, 4),
                "how": self.how, "hr_voxel_mm": [round(float(v), 5) for v in voxel_sizes(self.hr_affine)],
                "hr_affine": np.round(self.hr_affine, 6).tolist()}


def spacing_along(affine: np.ndarray, direction: np.ndarray) -> float:
    """Voxel spacing (mm) of a grid along a world direction."""
    inv = np.linalg.inv(np.asarray(affine)[:3, :3])
    d = np.asarray(direction, dtype=float)
    d = d / np.linalg.norm(d)
    return float(1.0 / np.linalg.norm(inv @ d))


def plan_grid(
    dynamic: Volume,
    prior: Volume | None = None,
    factor: float | None = None,
    matrix: tuple[int, int] | None = None,
) -> HRGrid:
    """Choose the HR grid: from ``matrix``, else ``factor``, else the prior's in-plane voxel size
    over the dynamic's field of view, else the default in-plane factor of 4."""
    lr = dynamic.spatial_shape
    if matrix is not None:
        hr_xy, how = (int(matrix[0]), int(matrix[1])), "matrix"
    elif factor is not None:
        hr_xy, how = (int(round(lr[0] * factor)), int(round(lr[1] * factor))), "factor"
    elif prior is not None:
        dirs = dynamic.affine[:3, :2].T
        fov = np.array([lr[0], lr[1]]) * voxel_sizes(dynamic.affine)[:2]
        spacing = np.array([spacing_along(prior.affine, d) for d in dirs])
        hr_xy = tuple(int(max(n, round(f / s))) for n, f, s in zip(lr[:2], fov, spacing))
        how = "prior"
    else:
        hr_xy, how = (int(round(lr[0] * DEFAULT_FACTOR)), int(round(lr[1] * DEFAULT_FACTOR))), "default"
    if hr_xy[0] < lr[0] or hr_xy[1] < lr[1]:
        raise ValueError(f"HR matrix {hr_xy} is smaller than the dynamic's matrix {lr[:2]}")
    hr_shape = (hr_xy[0], hr_xy[1], lr[2])
    hr_affine = refine_affine(dynamic.affine, lr, hr_shape)
    keep = 100.0 * lr[0] * lr[1] / (hr_xy[0] * hr_xy[1])
    return HRGrid(tuple(lr), hr_shape, hr_affine, keep, how)


def frame_to_grid(frame: np.ndarray, hr_inplane: tuple[int, int], backend: str = "torch") -> np.ndarray:
    """An LR frame ``(X, Y, Z)`` on the HR grid by in-plane k-space zero-filling (sinc), float32.

    ``backend="torch"`` (torch.fft, complex64) is faster than ``"numpy"`` and agrees with it within
    ~1e-6 of the intensity scale (benchmarks/RESULTS.md, 'Speed', the zero-fill lever).
    """
    if backend == "numpy":
        return zero_fill(frame, hr_inplane).astype(np.float32, copy=False)
    import torch

    data = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))
    return zero_fill(data, hr_inplane).numpy()
