"""Shared fixtures: tiny volumes with fixed seeds on an oblique grid, written as real NIfTI files.

Everything here is written with nibabel directly (not through :mod:`mrisr.io`), so tests of the
reader and writer compare against files made independently of the code under test.

Fixtures:
    oblique_affine: 4x4 RAS affine with a rotation, anisotropic voxels (0.9, 1.1, 3.0) mm and a
        non-zero origin.
    make_affine: factory ``make_affine(zooms, origin, angles_deg)`` for other oblique grids.
    make_phantom: factory ``make_phantom(shape, seed=0, shift=(0, 0, 0))`` -> float32 head-like volume.
    tiny_volume: 3-D :class:`mrisr.io.Volume` ``(32, 28, 12)`` (head-like ellipsoid, zero background).
    tiny_series: 4-D ``Volume`` ``(32, 28, 12, 3)`` with TR 0.45 s (the object drifts between frames).
    write_nifti: factory ``write_nifti(path, data, affine, qform_code=1, sform_code=2, tr=None)``.
    nifti_3d / nifti_4d: the tiny volume / series on disk (qform code 1, sform code 2).
    phantom_files: a 2-frame phantom of real anatomy and a tiny model on disk (session-wide, read-only).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrisr.io import Volume

os.environ.setdefault("OMP_NUM_THREADS", "1")

from mrisr_testdata import (  # noqa: E402,F401
    ANGLES,
    N_FRAMES,
    ORIGIN,
    QFORM_CODE,
    SFORM_CODE,
    SHAPE_3D,
    TR,
    ZOOMS,
    head_phantom,
    oblique,
    rotation,
)


@pytest.fixture
def oblique_affine() -> np.ndarray:
    return oblique()


@pytest.fixture
def make_affine() -> Callable[..., np.ndarray]:
    return oblique


@pytest.fixture
def make_phantom() -> Callable[..., np.ndarray]:
    return head_phantom


@pytest.fixture
def tiny_volume(oblique_affine) -> Volume:
    return Volume(
        data=head_phantom(SHAPE_3D, seed=0),
        affine=oblique_affine,
        tr=None,
        qform_code=QFORM_CODE,
        sform_code=SFORM_CODE,
    )


@pytest.fixture
def tiny_series(oblique_affine) -> Volume:
    frames = [head_phantom(SHAPE_3D, seed=0, shift=(0.7 * t, -0.4 * t, 0.0)) for t in range(N_FRAMES)]
    return Volume(
        data=np.stack(frames, axis=-1),
        affine=oblique_affine,
        tr=TR,
        qform_code=QFORM_CODE,
        sform_code=SFORM_CODE,
    )


def _write_nifti(
    path: str | Path,
    data: np.ndarray,
    affine: np.ndarray,
    qform_code: int = QFORM_CODE,
    sform_code: int = SFORM_CODE,
    tr: float | None = None,
) -> Path:
    path = Path(path)
    img = nib.Nifti1Image(np.asarray(data), affine)
    # Nifti1Image picks its own codes: set both explicitly
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    img.header.set_xyzt_units("mm", "sec")
    if np.ndim(data) >= 4 and tr is not None:
        zooms = list(img.header.get_zooms())
        zooms[3] = tr
        img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return path


@pytest.fixture
def write_nifti() -> Callable[..., Path]:
    return _write_nifti


@pytest.fixture
def nifti_3d(tmp_path, tiny_volume) -> Path:
    return _write_nifti(tmp_path / "hr3d.nii.gz", tiny_volume.data, tiny_volume.affine)


@pytest.fixture
def nifti_4d(tmp_path, tiny_series) -> Path:
    return _write_nifti(tmp_path / "hr4d.nii.gz", tiny_series.data, tiny_series.affine, tr=TR)


@pytest.fixture(scope="session")
def phantom_files(tmp_path_factory) -> dict[str, Path]:
    """A 2-frame phantom of real anatomy (24x24x8 crop of the bundled slab, 25 % of k-space: LR
    12x12x8) and a tiny prior model, on disk: ``planning``, ``hr``, ``lr``, ``metadata``, ``tiny``.
    Shared by many tests: never modify these files (copy them)."""
    from mrisr.data import load_sample
    from mrisr.models import make_tiny_checkpoint
    from mrisr.phantom import make_dynamic

    folder = tmp_path_factory.mktemp("phantom_files")
    sample = load_sample()
    affine = sample.affine.copy()
    affine[:3, 3] = sample.affine[:3, :3] @ np.array([52, 52, 10]) + sample.affine[:3, 3]
    crop = Volume(data=np.ascontiguousarray(sample.data[52:76, 52:76, 10:18]), affine=affine)
    files = make_dynamic(crop, frames=2, keep=25, seed=1).save(folder / "phantom")
    files["tiny"] = make_tiny_checkpoint(folder / "tiny.safetensors", prior=True)
    return files
