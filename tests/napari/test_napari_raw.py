"""The napari reader opens ISMRMRD raw files (reconstructed by mrisr.io) and leaves other HDF5 alone."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ismrmrd")

import h5py  # noqa: E402
from mrd_testdata import write_raw  # noqa: E402
from mrisr_testdata import head_phantom, oblique  # noqa: E402

from mrisr.io import load  # noqa: E402
from mrisr.napari._reader import get_reader, read_layer_data, read_nifti  # noqa: E402


def test_reader_opens_a_raw_dynamic_in_world_space(tmp_path):
    affine = oblique((0.9, 1.1, 3.0))
    frames = np.stack([head_phantom((32, 24, 8), shift=(t, 0, 0)) for t in range(3)], axis=-1)
    raw = write_raw(tmp_path / "scan.h5", frames, affine, lines=8, coils=2, oversampling=2)
    assert get_reader(str(raw)) is read_nifti
    data, kwargs, kind = read_layer_data(raw)
    volume = load(raw)
    assert kind == "image" and kwargs["name"] == "scan"
    assert data.shape == (3, 8, 8, 32)  # time, z, y (8 central lines), x
    np.testing.assert_allclose(kwargs["metadata"]["mrisr"]["affine"], volume.affine, atol=1e-6)
    np.testing.assert_allclose(np.asarray(data)[1], volume.data[..., 1].transpose(2, 1, 0), rtol=1e-6)


def test_reader_leaves_other_hdf5_files_alone(tmp_path):
    other = tmp_path / "weights.h5"
    with h5py.File(other, "w") as h5:
        h5.create_dataset("layer0", data=np.zeros(4))
    assert get_reader(str(other)) is None
    assert get_reader(str(tmp_path / "missing.h5")) is None
