"""The bundled Colin27 slab and the locations of the full training templates."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mrisr.data import colin27_path, load_sample, mni152_path, sample_path


def test_sample_file_is_small_and_int16_with_scanner_codes():
    path = sample_path()
    assert path.name == "colin27_slab.nii.gz" and path.exists()
    assert path.stat().st_size < 1_000_000
    header = nib.load(str(path)).header
    assert header.get_data_dtype() == np.int16
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1
    np.testing.assert_allclose(header.get_qform(), header.get_sform(), atol=1e-4)


def test_sample_loads_with_sane_geometry():
    volume = load_sample()
    assert volume.data.shape == (128, 144, 32)
    assert volume.data.dtype == np.float32
    assert not volume.is_4d
    np.testing.assert_allclose(volume.zooms, (1.5, 1.5, 3.0), rtol=1e-5)
    # axial RAS+: X to the right, Y anterior, Z superior
    np.testing.assert_allclose(volume.affine[:3, :3], np.diag([1.5, 1.5, 3.0]), atol=1e-5)
    # the head sits near the middle of the field of view (MNI origin region)
    grid_centre = volume.affine @ np.array([63.5, 71.5, 15.5, 1.0])
    assert np.linalg.norm(volume.world_centroid()[:2] - grid_centre[:2]) < 15.0
    assert abs(grid_centre[2] - 6.0) < 1e-3


def test_sample_has_real_content():
    data = load_sample().data
    assert np.isfinite(data).all()
    assert data.min() >= 0 and data.max() == pytest.approx(32000.0)
    head = data > 0.1 * data.max()
    assert 0.3 < head.mean() < 0.9
    # head inside the field of view: left and right edges are background
    assert data[0].max() == 0 and data[-1].max() == 0
    # anatomy, not a blob: many grey levels and strong in-plane structure in the mid slice
    mid = data[:, :, 16]
    assert len(np.unique(mid)) > 1000
    assert np.abs(np.diff(mid, axis=0)).mean() > 0.01 * data.max()


def test_template_locations():
    colin = colin27_path()
    assert colin.exists()
    assert nib.load(str(colin)).shape == (181, 217, 181)
    mni = mni152_path()
    assert mni.exists() and mni.name.startswith("mni_icbm152_t1")
    image = nib.load(str(mni))
    assert len(image.shape) == 3
    np.testing.assert_allclose(image.header.get_zooms()[:3], (1.0, 1.0, 1.0), rtol=1e-3)
