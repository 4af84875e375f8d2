"""Streaming frames from NIfTI files: identical to the full load, frame by frame, for every encoding."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from mrisr.io import MrisrInputError, load
from mrisr.io.stream import iter_frames


def _frames_equal_full_load(path, atol=0.0):
    lazy = load(path, lazy=True)
    assert not isinstance(lazy.data, np.ndarray)  # the streaming path, not slicing
    full = load(path)
    frames = list(iter_frames(lazy))
    assert len(frames) == full.n_frames
    for t, frame in enumerate(frames):
        assert frame.dtype == np.float32
        assert frame.shape == full.spatial_shape
        np.testing.assert_allclose(frame, full.frame(t), rtol=0, atol=atol)
    return frames


def test_nii_gz_series_streams_like_the_full_load(nifti_4d, tiny_series):
    frames = _frames_equal_full_load(nifti_4d)
    assert len(frames) == 3
    for t, frame in enumerate(frames):
        np.testing.assert_array_equal(frame, tiny_series.data[..., t])


def test_uncompressed_nii(tmp_path, tiny_series, write_nifti):
    path = write_nifti(tmp_path / "series.nii", tiny_series.data, tiny_series.affine, tr=0.45)
    _frames_equal_full_load(path)


def test_scaled_int16(tmp_path, tiny_series):
    img = nib.Nifti1Image(tiny_series.data, tiny_series.affine)
    img.set_data_dtype(np.int16)  # nibabel picks scl_slope / scl_inter
    path = tmp_path / "int16.nii.gz"
    nib.save(img, str(path))
    proxy = nib.load(str(path)).dataobj
    assert proxy.slope != 1.0
    _frames_equal_full_load(path, atol=1e-3 * float(tiny_series.data.max()))


def test_big_endian(tmp_path, tiny_series):
    img = nib.Nifti1Image(tiny_series.data, tiny_series.affine, header=nib.Nifti1Header(endianness=">"))
    path = tmp_path / "big.nii.gz"
    nib.save(img, str(path))
    assert nib.load(str(path)).header.endianness == ">"
    frames = _frames_equal_full_load(path)
    np.testing.assert_array_equal(frames[2], tiny_series.data[..., 2])


def test_three_d_file_is_one_frame(nifti_3d, tiny_volume):
    frames = _frames_equal_full_load(nifti_3d)
    assert len(frames) == 1
    np.testing.assert_array_equal(frames[0], tiny_volume.data)


def test_in_memory_volume_is_sliced(tiny_series):
    frames = list(iter_frames(tiny_series))
    assert len(frames) == 3
    np.testing.assert_array_equal(frames[1], tiny_series.data[..., 1])


def test_frames_are_read_in_order_without_rereading(nifti_4d):
    # a generator: the first frame is available before the rest is read
    stream = iter_frames(load(nifti_4d, lazy=True))
    first = next(stream)
    assert first.shape == (32, 28, 12)
    assert len(list(stream)) == 2


def test_truncated_file_names_the_frame(tmp_path, nifti_4d):
    raw = gzip.decompress(nifti_4d.read_bytes())
    frame_bytes = 32 * 28 * 12 * 4
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(gzip.compress(raw[: len(raw) - frame_bytes // 2]))
    lazy = load(truncated, lazy=True)
    stream = iter_frames(lazy)
    next(stream)
    next(stream)
    with pytest.raises(MrisrInputError, match=r"cut\.nii\.gz: file ends in frame 2 of 3; the file is truncated"):
        next(stream)
