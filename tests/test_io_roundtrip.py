"""NIfTI load / save_like / FrameWriter: geometry, codes, TR, dtype and atomic writes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrisr.io import FrameWriter, Volume, load, save_like

# the conftest fixtures' geometry (tiny_volume / tiny_series / nifti_3d / nifti_4d)
SHAPE_3D = (32, 28, 12)
ZOOMS = (0.9, 1.1, 3.0)
TR = 0.45
QFORM_CODE, SFORM_CODE = 1, 2


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name)


def test_load_3d_keeps_geometry_and_codes(nifti_3d, tiny_volume):
    vol = load(nifti_3d)
    assert vol.data.shape == SHAPE_3D
    assert not vol.is_4d and vol.n_frames == 1
    np.testing.assert_allclose(vol.affine, tiny_volume.affine, atol=1e-5)
    assert (vol.qform_code, vol.sform_code) == (QFORM_CODE, SFORM_CODE)
    np.testing.assert_allclose(vol.zooms, ZOOMS, rtol=1e-6)
    assert vol.tr is None
    assert vol.source == nifti_3d
    np.testing.assert_array_equal(vol.data, tiny_volume.data)


def test_load_4d_reads_tr_in_seconds(nifti_4d, tiny_series):
    vol = load(nifti_4d)
    assert vol.is_4d and vol.n_frames == 3
    assert vol.tr == pytest.approx(TR)
    np.testing.assert_array_equal(vol.frame(2), tiny_series.data[..., 2])


def test_load_converts_msec_tr(tmp_path, tiny_series):
    img = nib.Nifti1Image(tiny_series.data, tiny_series.affine)
    img.header.set_xyzt_units("mm", "msec")
    img.header.set_zooms((*ZOOMS, 450.0))
    path = tmp_path / "msec.nii.gz"
    nib.save(img, str(path))
    assert load(path).tr == pytest.approx(0.45)


def test_lazy_load_reads_frames_on_demand(nifti_4d, tiny_series):
    vol = load(nifti_4d, lazy=True)
    assert not isinstance(vol.data, np.ndarray)  # a proxy, not the whole series in memory
    for t in range(3):
        frame = vol.frame(t)
        assert frame.dtype == np.float32
        np.testing.assert_array_equal(frame, tiny_series.data[..., t])


def _check_header(path: Path, affine: np.ndarray, shape: tuple[int, ...], tr: float | None):
    img = nib.load(str(path))
    hdr = img.header
    assert img.shape == shape
    assert int(hdr["qform_code"]) == QFORM_CODE
    assert int(hdr["sform_code"]) == SFORM_CODE
    np.testing.assert_allclose(hdr.get_sform(), affine, atol=1e-5)
    np.testing.assert_allclose(hdr.get_qform(), affine, atol=1e-4)
    assert hdr.get_data_dtype() == np.dtype(np.float32)
    assert hdr.get_xyzt_units() == ("mm", "sec")
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(hdr.get_zooms()[:3], zooms, rtol=1e-6)
    if tr is not None:
        assert float(hdr["pixdim"][4]) == pytest.approx(tr)
    return img


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_save_like_3d_roundtrip(tmp_path, tiny_volume, suffix):
    out = save_like(tmp_path / f"out{suffix}", tiny_volume.data * 2.0, tiny_volume)
    assert out.exists()
    img = _check_header(out, tiny_volume.affine, SHAPE_3D, None)
    np.testing.assert_array_equal(np.asarray(img.dataobj), (tiny_volume.data * 2.0).astype(np.float32))
    back = load(out)
    np.testing.assert_allclose(back.affine, tiny_volume.affine, atol=1e-5)
    assert (back.qform_code, back.sform_code) == (QFORM_CODE, SFORM_CODE)
    np.testing.assert_allclose(back.zooms, ZOOMS, rtol=1e-6)
    assert back.data.dtype == np.float32
    np.testing.assert_array_equal(back.data, tiny_volume.data * 2.0)
    assert _leftovers(tmp_path) == []


def test_save_like_4d_roundtrip(tmp_path, tiny_series):
    out = save_like(tmp_path / "series.nii.gz", tiny_series.data, tiny_series)
    img = _check_header(out, tiny_series.affine, (*SHAPE_3D, 3), TR)
    assert img.header.get_zooms()[3] == pytest.approx(TR)
    back = load(out)
    assert back.tr == pytest.approx(TR)
    assert (back.qform_code, back.sform_code) == (QFORM_CODE, SFORM_CODE)
    np.testing.assert_allclose(back.affine, tiny_series.affine, atol=1e-5)
    np.testing.assert_array_equal(back.data, tiny_series.data)
    assert _leftovers(tmp_path) == []


def test_save_like_overrides_affine_and_tr(tmp_path, tiny_series):
    new_affine = tiny_series.affine.copy()
    new_affine[:3, :3] *= 2.0
    new_affine[:3, 3] += (1.0, -2.0, 3.0)
    out = save_like(tmp_path / "o.nii.gz", tiny_series.data[::2, ::2], tiny_series, affine=new_affine, tr=1.25)
    img = _check_header(out, new_affine, (16, 14, 12, 3), 1.25)
    np.testing.assert_allclose(img.header.get_zooms()[:3], 2 * np.array(ZOOMS), rtol=1e-6)
    assert load(out).tr == pytest.approx(1.25)


def test_save_like_file_from_disk_roundtrip_is_stable(tmp_path, nifti_4d):
    """Loading and saving again changes neither header geometry nor data."""
    first = load(nifti_4d)
    out = save_like(tmp_path / "again.nii.gz", first.data, first)
    second = load(out)
    np.testing.assert_array_equal(second.affine, first.affine)
    assert second.tr == first.tr
    assert (second.qform_code, second.sform_code) == (first.qform_code, first.sform_code)
    np.testing.assert_array_equal(second.data, first.data)


def test_save_like_dtype_none_keeps_integer_type(tmp_path, tiny_volume):
    labels = (tiny_volume.data > 50).astype(np.int16)
    out = save_like(tmp_path / "labels.nii.gz", labels, tiny_volume, dtype=None)
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.dtype(np.int16)
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)


@pytest.mark.parametrize("background", [False, True])
def test_frame_writer_streams_frames(tmp_path, tiny_series, background):
    out = tmp_path / "stream.nii.gz"
    with FrameWriter(out, tiny_series, SHAPE_3D, n_frames=3, background=background) as writer:
        for frame in tiny_series.frames():
            assert not out.exists()  # only renamed into place at the end
            writer.write(frame)
    back = load(out)
    assert back.tr == pytest.approx(TR)
    np.testing.assert_array_equal(back.data, tiny_series.data)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("background", [False, True])
def test_frame_writer_exception_leaves_nothing(tmp_path, tiny_series, background):
    out = tmp_path / "broken.nii.gz"
    with pytest.raises(RuntimeError, match="model crashed"):
        with FrameWriter(out, tiny_series, SHAPE_3D, n_frames=3, background=background) as writer:
            writer.write(tiny_series.frame(0))
            raise RuntimeError("model crashed")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("background", [False, True])
def test_frame_writer_ctrl_c_keeps_previous_output(tmp_path, tiny_series, background):
    out = save_like(tmp_path / "result.nii.gz", tiny_series.data, tiny_series)
    before = out.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with FrameWriter(out, tiny_series, SHAPE_3D, n_frames=3, background=background) as writer:
            writer.write(np.zeros(SHAPE_3D, np.float32))
            raise KeyboardInterrupt
    assert out.read_bytes() == before
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("background", [False, True])
def test_frame_writer_too_few_frames_raises_and_leaves_nothing(tmp_path, tiny_series, background):
    out = tmp_path / "short.nii.gz"
    with pytest.raises(ValueError, match="2 of 3"):
        with FrameWriter(out, tiny_series, SHAPE_3D, n_frames=3, background=background) as writer:
            writer.write(tiny_series.frame(0))
            writer.write(tiny_series.frame(1))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("background", [False, True])
def test_frame_writer_rejects_extra_and_misshapen_frames(tmp_path, tiny_series, background):
    out = tmp_path / "bad.nii.gz"
    with pytest.raises(ValueError, match="frame shape"):
        with FrameWriter(out, tiny_series, SHAPE_3D, n_frames=2, background=background) as writer:
            writer.write(np.zeros((32, 28, 11), np.float32))
    with pytest.raises(ValueError, match="already written"):
        with FrameWriter(out, tiny_series, SHAPE_3D, n_frames=1, background=background) as writer:
            writer.write(tiny_series.frame(0))
            writer.write(tiny_series.frame(1))
    assert list(tmp_path.iterdir()) == []


def test_reference_without_codes_is_written_as_scanner_space(tmp_path, tiny_volume):
    bare = Volume(data=tiny_volume.data, affine=tiny_volume.affine, qform_code=0, sform_code=0)
    out = save_like(tmp_path / "bare.nii.gz", bare.data, bare)
    hdr = nib.load(str(out)).header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 1)
    np.testing.assert_allclose(hdr.get_best_affine(), tiny_volume.affine, atol=1e-5)


def test_series_without_tr_reads_back_without_tr(tmp_path, tiny_volume):
    """A 4-D series saved like a 3-D reference with no TR must not gain an invented one."""
    series = np.stack([tiny_volume.data, tiny_volume.data + 1.0], axis=-1)
    out = save_like(tmp_path / "no_tr.nii.gz", series, tiny_volume)
    assert float(nib.load(str(out)).header["pixdim"][4]) == 0.0
    back = load(out)
    assert back.is_4d and back.tr is None
    assert load(save_like(tmp_path / "tr.nii.gz", series, tiny_volume, tr=0.3)).tr == pytest.approx(0.3)


def test_singleton_time_axis_loads_as_3d(tmp_path, write_nifti, tiny_volume):
    path = write_nifti(tmp_path / "t1.nii.gz", tiny_volume.data[..., None], tiny_volume.affine, tr=2.0)
    vol = load(path)
    assert vol.data.shape == SHAPE_3D and not vol.is_4d
    np.testing.assert_array_equal(vol.data, tiny_volume.data)


def test_validate_false_accepts_all_zero(tmp_path, write_nifti, tiny_volume):
    path = write_nifti(tmp_path / "zero.nii.gz", np.zeros(SHAPE_3D, np.float32), tiny_volume.affine)
    assert not load(path, validate=False).data.any()


def test_background_writer_writes_the_same_bytes(tmp_path, tiny_series):
    """The worker thread compresses and writes exactly what the caller's thread would."""
    files = []
    for background in (False, True):
        out = tmp_path / f"bg_{background}.nii.gz"
        with FrameWriter(out, tiny_series, SHAPE_3D, n_frames=3, background=background) as writer:
            for frame in tiny_series.frames():
                mine = frame.copy()
                writer.write(mine)
                mine[...] = -1  # the caller may reuse its array as soon as write() returns
        files.append(out.read_bytes())
    assert files[0] == files[1]
    np.testing.assert_array_equal(load(tmp_path / "bg_True.nii.gz").data, tiny_series.data)


def test_background_writer_reports_a_failed_write_as_one_line(tmp_path, tiny_series):
    """An error in the worker (here: the stream closed under it) surfaces on the next write or on
    exit as the one-line write error, and nothing is left behind."""
    from mrisr.io.errors import MrisrInputError

    out = tmp_path / "failing.nii.gz"
    with pytest.raises(MrisrInputError, match="cannot write"):
        with FrameWriter(out, tiny_series, SHAPE_3D, n_frames=3, background=True) as writer:
            writer.write(tiny_series.frame(0))
            writer._finish_pending()
            writer._fh.write = _failing_write
            writer.write(tiny_series.frame(1))
            writer.write(tiny_series.frame(2))
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def _failing_write(data):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("leaving", [KeyboardInterrupt, ValueError])
def test_background_writer_keeps_the_callers_exception(tmp_path, tiny_series, leaving):
    """Leaving with Ctrl-C (or any error) while the frame in flight failed to write: the caller's
    exception wins (the CLI's exit code depends on it), and nothing is left behind."""
    out = tmp_path / "interrupted.nii.gz"
    with pytest.raises(leaving):
        with FrameWriter(out, tiny_series, SHAPE_3D, n_frames=3, background=True) as writer:
            writer.write(tiny_series.frame(0))
            writer._finish_pending()
            writer._fh.write = _failing_write
            writer.write(tiny_series.frame(1))
            raise leaving()
    assert not out.exists()
    assert _leftovers(tmp_path) == []
