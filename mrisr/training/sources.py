"""Static HR volumes for training, resampled into a bank of slab geometries.

Each source (a real static scan) is resampled to several in-plane voxel sizes, slice
thicknesses and orientations, so one model sees the range of geometries dynamic scans use.
Slice thickening averages (a Gaussian of matching width) before sampling, as a thick slice does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrisr.io.errors import MrisrInputError

INIA19_PATH = Path("/usr/share/mricron/templates/inia19-t1-brain.nii.gz")
#: real single-subject sources: name -> file in :func:`sources_folder`, made by
#: ``scripts/make_training_sources.py`` (not bundled: only training needs them)
REAL_SOURCES = {"brain2": "pyradiomics_brain2.nii.gz"}
#: a source whose voxels are coarser than this multiple of a requested in-plane size cannot supply
#: that in-plane detail; the bank skips such geometries rather than interpolate it
INPLANE_TOLERANCE = 1.05

_ORIENTATIONS = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}


def sources_folder() -> Path:
    """Where derived training sources live: ``$MRISR_SOURCES``, else ``~/.cache/mrisr/sources``."""
    import os

    folder = os.environ.get("MRISR_SOURCES")
    return Path(folder) if folder else Path.home() / ".cache" / "mrisr" / "sources"


def source_path(name: str) -> Path:
    """Resolve a source name (``colin27``, ``mni152``, ``inia19``, ``brain2``) or a path to a file."""
    from mrisr.data import colin27_path, mni152_path

    if name == "colin27":
        return colin27_path()
    if name == "mni152":
        return mni152_path()
    if name == "inia19":
        if not INIA19_PATH.exists():
            raise MrisrInputError(f"{INIA19_PATH}: INIA19 template not found; install it with `apt-get install mricron-data`")
        return INIA19_PATH
    if name in REAL_SOURCES:
        path = sources_folder() / REAL_SOURCES[name]
        if not path.exists():
            raise MrisrInputError(f"{path}: training source {name!r} not found; make it with "
                                  "`python scripts/make_training_sources.py` (fetches pyradiomics' brain2 from PyPI)")
        return path
    path = Path(name)
    if not path.exists():
        raise MrisrInputError(f"{name}: training source not found; use colin27, mni152, inia19, brain2 or a NIfTI path")
    return path


@dataclass
class SlabVolume:
    """One resampled source: array ``(X, Y, Z)`` with Z the slice axis, float32 scaled to ~[0, 1]."""

    data: np.ndarray
    zooms: tuple[float, float, float]
    source: str
    orientation: str


def _load_normalised(path: Path, treat_voxel_mm: float | None) -> tuple[np.ndarray, np.ndarray]:
    from mrisr.io import load

    vol = load(path)
    data = np.asarray(vol.data, dtype=np.float32)
    data = np.maximum(data, 0)
    hi = np.percentile(data[data > 0], 99.5) if np.any(data > 0) else 1.0
    data = data / hi
    zooms = np.array(vol.zooms) if treat_voxel_mm is None else np.full(3, treat_voxel_mm)
    return data, zooms


def _crop_to_object(data: np.ndarray, margin: int = 4) -> np.ndarray:
    mask = data > 0.05
    if not mask.any():
        return data
    idx = np.where(mask)
    sl = tuple(slice(max(0, i.min() - margin), min(n, i.max() + margin + 1)) for i, n in zip(idx, data.shape))
    return data[sl]


def resample_slab(data: np.ndarray, zooms: np.ndarray, inplane_mm: float, slice_mm: float) -> np.ndarray:
    """Resample ``(X, Y, Z)`` (Z = slice axis) to ``inplane_mm`` x ``inplane_mm`` x ``slice_mm``."""
    target = np.array([inplane_mm, inplane_mm, slice_mm])
    factor = zooms / target  # output voxels per input voxel
    sigma = np.where(factor < 1, np.sqrt(np.maximum((1 / factor) ** 2 - 1, 0)) / 2.355 * 1.0, 0)
    smoothed = ndimage.gaussian_filter(data, sigma) if np.any(sigma > 0) else data
    out = ndimage.zoom(smoothed, factor, order=1, prefilter=False)
    return np.ascontiguousarray(out.astype(np.float32))


def build_bank(
    names: list[str],
    inplane_mm: list[float],
    slice_mm: list[float],
    orientations: list[str],
) -> list[SlabVolume]:
    """Resample every source into every (orientation, in-plane size, slice thickness) it can supply.

    A source only supplies what it measured: an orientation whose in-plane voxels are coarser than
    the requested in-plane size (beyond :data:`INPLANE_TOLERANCE`) is skipped, and slices are never
    made thinner than the source's own (a 6.5 mm clinical scan gives axial slabs at 6.5 mm), so no
    slab is interpolated detail. Each source must supply at least one slab.

    Raises:
        MrisrInputError: a source that is not found, or supplies no geometry asked for.
    """
    bank: list[SlabVolume] = []
    for name in names:
        path = source_path(name)
        # INIA19 is a macaque brain at 0.5 mm: treated as 1 mm voxels it is a plausible small head
        data, zooms = _load_normalised(path, 1.0 if name == "inia19" else None)
        data = _crop_to_object(data)
        count = len(bank)
        for orient in orientations:
            if orient not in _ORIENTATIONS:
                raise ValueError(f"unknown orientation {orient!r}; use {', '.join(_ORIENTATIONS)}")
            perm = _ORIENTATIONS[orient]
            arr = np.transpose(data, perm)
            z = zooms[list(perm)]
            for ip in inplane_mm:
                if max(z[0], z[1]) > ip * INPLANE_TOLERANCE:
                    continue
                done: set[float] = set()
                for sl in slice_mm:
                    thickness = float(max(sl, z[2]))
                    if thickness in done:
                        continue
                    done.add(thickness)
                    bank.append(SlabVolume(resample_slab(arr, z, ip, thickness), (ip, ip, thickness), name, orient))
        if len(bank) == count:
            raise MrisrInputError(f"{path}: training source {name!r} has {zooms[0]:.2f}x{zooms[1]:.2f}x{zooms[2]:.2f} mm "
                                  f"voxels and supplies none of the geometries asked for (in-plane {inplane_mm} mm, "
                                  f"orientations {orientations}); ask for a coarser in-plane size or another orientation")
    return bank
