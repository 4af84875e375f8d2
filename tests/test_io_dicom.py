"""DICOM in: 3-D, dynamic (repeated slice positions, enhanced multi-frame) in every orientation, checked
against dcm2niix's reading of the same files; refusals with one-line messages; the files pydicom and
nibabel ship."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_testdata import ORIENTATIONS, dcm2niix_volume, write_classic, write_enhanced

from mrisr.io import MrisrInputError, load
from mrisr.io.stream import iter_frames

ORDERS = ("TemporalPositionIdentifier", "AcquisitionNumber", "TriggerTime", "InstanceNumber", "AcquisitionTime")


@pytest.fixture(scope="module")
def sample_series() -> np.ndarray:
    """Three frames ``(16, 18, 6, 3)`` of the bundled sample slab (the anatomy moves between frames)."""
    from mrisr.data import load_sample

    slab = np.asarray(load_sample().data, dtype=np.float32)[::8, ::8, 4:28:4]
    return np.stack([np.roll(slab, t, axis=0) for t in range(3)], axis=-1) + 1.0


def canonical(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    return nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine))


def assert_same_image(ours: nib.Nifti1Image, reference: nib.Nifti1Image, rtol: float = 1e-3) -> None:
    """Same world grid (affine within 1e-3 mm) and same voxels in the same frame order (up to one scale)."""
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours.affine, reference.affine, atol=1e-3)
    a, b = ours.get_fdata(), reference.get_fdata()
    np.testing.assert_allclose(a / a.max(), b / b.max(), atol=rtol)


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
@pytest.mark.parametrize("order", ORDERS)
def test_repeated_positions_match_dcm2niix(tmp_path, sample_series, orientation, order):
    folder = write_classic(tmp_path / "dyn", sample_series, ORIENTATIONS[orientation], order=order, tr=0.5)
    volume = load(folder)
    assert volume.data.shape == sample_series.shape
    assert volume.extra["dicom"]["order_key"] == order
    truth = canonical(sample_series, ORIENTATIONS[orientation])
    assert_same_image(canonical(volume.data, volume.affine), truth)
    if order in ("TriggerTime", "AcquisitionTime"):
        assert volume.tr == pytest.approx(0.5, abs=0.02)
    else:
        assert volume.tr is None  # no timing tag: no invented interval
    if order != "AcquisitionTime":  # dcm2niix orders repeats by InstanceNumber, which that layout lacks
        reference, _ = dcm2niix_volume(folder, tmp_path / "dcm2niix")
        assert_same_image(canonical(volume.data, volume.affine), nib.as_closest_canonical(reference))


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_enhanced_multiframe_matches_dcm2niix(tmp_path, sample_series, orientation):
    (tmp_path / "enh").mkdir()
    path = write_enhanced(tmp_path / "enh" / "dynamic.dcm", sample_series, ORIENTATIONS[orientation], tr=0.4)
    volume = load(path)
    assert volume.extra["dicom"]["enhanced"] and volume.extra["dicom"]["order_key"] == "TemporalPositionIndex"
    assert volume.tr == pytest.approx(0.4)
    ours = canonical(volume.data, volume.affine)
    assert_same_image(ours, canonical(sample_series, ORIENTATIONS[orientation]))
    reference, _ = dcm2niix_volume(tmp_path / "enh", tmp_path / "dcm2niix")
    assert_same_image(ours, nib.as_closest_canonical(reference))


def test_3d_series_and_one_file_of_it(tmp_path, sample_series):
    folder = write_classic(tmp_path / "planning", sample_series[..., 0], ORIENTATIONS["oblique"])
    volume = load(folder)
    assert volume.data.shape == sample_series.shape[:3] and not volume.is_4d
    reference, _ = dcm2niix_volume(folder, tmp_path / "dcm2niix")
    assert_same_image(canonical(volume.data, volume.affine), nib.as_closest_canonical(reference))
    # one file of the series reads the whole series, never one slice
    one = load(sorted(folder.iterdir())[0])
    np.testing.assert_array_equal(one.data, volume.data)
    np.testing.assert_allclose(one.affine, volume.affine)


def test_lazy_dynamic_streams_frames(tmp_path, sample_series):
    folder = write_classic(tmp_path / "dyn", sample_series, ORIENTATIONS["coronal"])
    eager = load(folder)
    lazy = load(folder, lazy=True)
    assert not isinstance(lazy.data, np.ndarray) and lazy.data.shape == eager.data.shape
    for t, frame in enumerate(iter_frames(lazy)):
        np.testing.assert_array_equal(frame, np.asarray(eager.data)[..., t])


def test_several_series_are_refused_with_a_list_and_picked(tmp_path, sample_series):
    write_classic(tmp_path / "study" / "a", sample_series, ORIENTATIONS["axial"], description="dyn", number=7,
                  series_uid="1.2.3.7")
    write_classic(tmp_path / "study" / "b", sample_series[..., 0], ORIENTATIONS["axial"], description="T1w planning",
                  number=3, series_uid="1.2.3.3")
    with pytest.raises(MrisrInputError) as err:
        load(tmp_path / "study")
    message = str(err.value)
    assert "2 DICOM series" in message and "1.2.3.7" in message and "'T1w planning'" in message
    assert "3 frame(s) x 6 slice(s)" in message and "1 frame(s) x 6 slice(s)" in message and "--series" in message
    assert "\n" not in message
    assert load(tmp_path / "study", series="1.2.3.7").n_frames == 3
    assert load(tmp_path / "study", series="3").n_frames == 1
    assert load(tmp_path / "study", series="T1w planning").n_frames == 1
    with pytest.raises(MrisrInputError, match="names none"):
        load(tmp_path / "study", series="9.9")


@pytest.mark.parametrize("problem", ["missing_slice", "uneven", "mixed_orientation", "missing_frame_image"])
def test_broken_series_are_refused_in_one_line(tmp_path, sample_series, problem):
    import pydicom

    static = sample_series[..., 0]
    if problem == "missing_slice":
        folder = write_classic(tmp_path / "s", static, ORIENTATIONS["axial"], drop=(2, 0))
        expected = "missing slices"
    elif problem == "missing_frame_image":
        folder = write_classic(tmp_path / "s", sample_series, ORIENTATIONS["axial"], drop=(2, 1))
        expected = "missing slices"
    else:
        folder = write_classic(tmp_path / "s", static, ORIENTATIONS["axial"])
        victim = next(p for p in sorted(folder.iterdir()) if pydicom.dcmread(p).InstanceNumber == 3)
        ds = pydicom.dcmread(victim)
        if problem == "uneven":
            ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 1.0
            expected = "uneven slice spacing"
        else:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9, 0.43588989]
            expected = "mixed slice orientations"
        ds.save_as(victim)
    with pytest.raises(MrisrInputError, match=expected) as err:
        load(folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_repeats_without_an_ordering_tag_are_refused(tmp_path, sample_series):
    import pydicom

    folder = write_classic(tmp_path / "s", sample_series, ORIENTATIONS["axial"], order="InstanceNumber")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = 1
        ds.save_as(path)
    with pytest.raises(MrisrInputError, match="no tag .* tells the repeats apart"):
        load(folder)


def test_files_pydicom_and_nibabel_ship(tmp_path):
    from pydicom.data import get_testdata_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own notes about its sample files
        small = get_testdata_file("MR_small.dcm")
        volume = load(small)
    assert volume.data.shape == (64, 64, 1)
    np.testing.assert_allclose(volume.zooms, (0.3125, 0.3125, 0.8))
    shutil.copy(small, tmp_path / "MR_small.dcm")
    reference, _ = dcm2niix_volume(tmp_path, tmp_path / "dcm2niix")
    np.testing.assert_allclose(canonical(volume.data, volume.affine).affine[:3, 3],
                               nib.as_closest_canonical(reference).affine[:3, 3], atol=1e-3)
    compressed = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    try:
        load(compressed)
    except MrisrInputError as exc:  # no JPEG-LS decoder installed: a one-line refusal that names the fix
        assert "pixel data" in str(exc) and "\n" not in str(exc)
    nibabel_data = Path(nib.__file__).parent / "nicom" / "tests" / "data"
    if (nibabel_data / "0.dcm").exists():
        with pytest.raises(MrisrInputError, match="Siemens mosaic"):
            load(nibabel_data / "0.dcm")
        decimal = load(nibabel_data / "decimal_rescale.dcm")
        assert decimal.data.shape[2] == 1 and np.isfinite(decimal.data).all()
