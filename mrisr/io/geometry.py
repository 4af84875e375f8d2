"""Grid geometry for k-space cropping and zero-filling.

Convention (centred FFT): on an axis of ``N`` voxels the k-space centre sits at index
``N // 2`` and so does the image's reference voxel. Cropping k-space to ``M`` samples (or
zero-filling to ``M``) gives a grid whose index ``M // 2`` lies at the same world point
as index ``N // 2`` of the original, with voxel size scaled by ``N / M``. Nothing shifts by
half a voxel, whatever the parity of ``N`` and ``M``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def regrid_affine(
    affine: np.ndarray,
    old_shape: Sequence[int],
    new_shape: Sequence[int],
) -> np.ndarray:
    """Affine of the grid obtained by cropping or zero-filling k-space from ``old_shape`` to ``new_shape``.

    Works for any integer sizes (256 -> 80, 81 -> 256, ...) and either direction, so the same
    function refines an LR grid to HR and coarsens an HR grid to LR. Axes whose size does not
    change keep their geometry.

    Args:
        affine: 4x4 voxel-to-world matrix of the old grid.
        old_shape: spatial shape ``(X, Y, Z)`` (or a prefix of it) of the old grid.
        new_shape: spatial shape of the new grid, same length.

    Returns:
        4x4 affine of the new grid.

    Example:
        >>> a = regrid_affine(np.eye(4), (64, 64, 10), (256, 256, 10))
        >>> float(a[0, 0])
        0.25
    """
    old_shape = [int(s) for s in old_shape]
    new_shape = [int(s) for s in new_shape]
    if len(old_shape) != len(new_shape):
        raise ValueError(f"shape lengths differ: {old_shape} vs {new_shape}")
    # new index j maps to old index c_old + (j - c_new) * old / new
    index_map = np.eye(4)
    for axis, (n_old, n_new) in enumerate(zip(old_shape, new_shape)):
        scale = n_old / n_new
        index_map[axis, axis] = scale
        index_map[axis, 3] = n_old // 2 - scale * (n_new // 2)
    return np.asarray(affine, dtype=np.float64) @ index_map


def refine_affine(lr_affine: np.ndarray, lr_shape: Sequence[int], hr_shape: Sequence[int]) -> np.ndarray:
    """HR affine for zero-filling an LR grid to ``hr_shape`` (in-plane refinement)."""
    return regrid_affine(lr_affine, lr_shape, hr_shape)


def coarsen_affine(hr_affine: np.ndarray, hr_shape: Sequence[int], lr_shape: Sequence[int]) -> np.ndarray:
    """LR affine of the grid a k-space crop of an HR grid gives (as a scanner would write it)."""
    return regrid_affine(hr_affine, hr_shape, lr_shape)


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each of the three axes."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def hr_inplane_matrix(
    lr_shape: Sequence[int],
    lr_affine: np.ndarray,
    factor: float | Sequence[float] | None = None,
    matrix: Sequence[int] | None = None,
    voxel_size: Sequence[float] | None = None,
) -> tuple[int, int]:
    """In-plane HR matrix for an LR grid, from exactly one of ``factor``, ``matrix`` or ``voxel_size``.

    ``voxel_size`` (mm, in-plane X and Y) keeps the LR field of view and picks the nearest
    matrix to that voxel size (used when a prior's resolution defines the HR grid).
    """
    given = [v is not None for v in (factor, matrix, voxel_size)]
    if sum(given) != 1:
        raise ValueError("give exactly one of factor, matrix or voxel_size")
    nx, ny = int(lr_shape[0]), int(lr_shape[1])
    if matrix is not None:
        return int(matrix[0]), int(matrix[1])
    if factor is not None:
        fx, fy = (factor, factor) if np.isscalar(factor) else tuple(factor)  # type: ignore[misc]
        return int(round(nx * fx)), int(round(ny * fy))
    zooms = voxel_sizes(lr_affine)
    fov = np.array([nx * zooms[0], ny * zooms[1]])
    target = np.asarray(voxel_size, dtype=float)[:2]
    return tuple(int(max(n, round(f / v))) for n, f, v in zip((nx, ny), fov, target))  # type: ignore[return-value]
