"""DICOM through `mrisr reconstruct`: a dynamic (both layouts) and a planning series written from the
bundled sample go in, a derived DICOM series comes out, and dcm2niix, SimpleITK and pydicom read it
on the grid the reconstruction reports; a NIfTI dynamic with a DICOM planning folder works too."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_testdata import ACQUISITION, ORIENTATIONS, dcm2niix_volume, write_classic, write_enhanced
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.io import Volume, load, regrid_affine
from mrisr.io.dicom_write import DicomSeriesWriter

runner = CliRunner()


def canonical_affine(affine: np.ndarray, shape) -> np.ndarray:
    return nib.as_closest_canonical(nib.Nifti1Image(np.zeros(shape, np.float32), affine)).affine


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """A 2-frame phantom (24x24x6 of the sample, LR 12x12) on a coronal grid, as DICOM and NIfTI."""
    from mrisr.data import load_sample
    from mrisr.models import make_tiny_checkpoint
    from mrisr.phantom import make_dynamic

    folder = tmp_path_factory.mktemp("dicom_e2e")
    sample = load_sample()
    affine = ORIENTATIONS["coronal"].copy()
    crop = Volume(data=np.ascontiguousarray(sample.data[52:76, 52:76, 10:16], dtype=np.float32), affine=affine)
    files = make_dynamic(crop, frames=2, keep=25, seed=1, tr=0.5).save(folder / "phantom")
    lr, planning = load(files["lr"]), load(files["planning"])
    lr_data = np.clip(np.asarray(lr.data), 0, None)
    files["dyn_classic"] = write_classic(folder / "dyn_classic", lr_data, lr.affine, order="TriggerTime", tr=0.5,
                                         description="dynamic", series_uid="1.2.826.0.1.3680043.8.498.10")
    (folder / "dyn_enhanced").mkdir()
    write_enhanced(folder / "dyn_enhanced" / "dyn.dcm", lr_data, lr.affine, tr=0.5)
    files["dyn_enhanced"] = folder / "dyn_enhanced"
    files["planning_dicom"] = write_classic(folder / "planning_dicom", np.clip(np.asarray(planning.data), 0, None),
                                            planning.affine, description="T1w planning", number=3)
    files["tiny"] = make_tiny_checkpoint(folder / "tiny.safetensors", prior=True)
    return files


def _reconstruct(*args):
    result = runner.invoke(app, ["reconstruct", *[str(a) for a in args], "--quiet"])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("layout", ["dyn_classic", "dyn_enhanced"])
def test_dicom_in_dicom_out_matches_dcm2niix(scans, tmp_path, layout):
    import SimpleITK as sitk

    out = tmp_path / "sr_series"
    result = _reconstruct(scans[layout], "--prior", scans["planning_dicom"], "--model", scans["tiny"],
                          "-o", out, "--output-format", "dicom")
    assert "not for clinical use" in result.output
    sidecar = json.loads((tmp_path / "sr_series.json").read_text())
    hr_shape = tuple(sidecar["grid"]["hr_shape"])
    lr = load(scans[layout])
    reference_in, _ = dcm2niix_volume(scans[layout], tmp_path / "dcm2niix_in")
    # the input as mrisr reads it is dcm2niix's reading of it ...
    np.testing.assert_allclose(canonical_affine(lr.affine, lr.spatial_shape),
                               nib.as_closest_canonical(reference_in).affine, atol=1e-3)
    # ... and the output, as dcm2niix reads it, is on the SR grid of that input, frame for frame
    expected = canonical_affine(regrid_affine(lr.affine, lr.spatial_shape, hr_shape), hr_shape)
    reference_out, meta = dcm2niix_volume(out, tmp_path / "dcm2niix_out")
    np.testing.assert_allclose(nib.as_closest_canonical(reference_out).affine, expected, atol=1e-3)
    assert reference_out.shape == (*hr_shape, 2)
    ours = load(out)
    assert ours.data.shape == (*hr_shape, 2) and ours.tr == pytest.approx(0.5)
    np.testing.assert_allclose(canonical_affine(ours.affine, hr_shape), expected, atol=1e-3)
    reference_data = nib.as_closest_canonical(reference_out).get_fdata()
    our_data = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(ours.data), ours.affine)).get_fdata()
    np.testing.assert_allclose(our_data / our_data.max(), reference_data / reference_data.max(), atol=1e-3)
    # SimpleITK reads the same geometry (one frame's files)
    first_frame = sorted(p for p in out.iterdir() if int(pydicom.dcmread(p, stop_before_pixels=True)
                                                         .TemporalPositionIdentifier) == 1)
    image = sitk.ReadImage([str(p) for p in first_frame])
    from mrisr.io import sitk_to_volume

    itk = sitk_to_volume(image)
    np.testing.assert_allclose(canonical_affine(itk.affine, itk.spatial_shape), expected, atol=1e-3)
    # the derived series: new series, same patient and study, mrisr named
    header = pydicom.dcmread(first_frame[0], stop_before_pixels=True)
    source = pydicom.dcmread(next(scans[layout].iterdir()), stop_before_pixels=True)
    assert list(header.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
    # the acquisition parameters of the input (an enhanced file keeps some in its functional groups)
    for keyword, value in ACQUISITION.items():
        assert str(header.get(keyword)) == value, keyword
    assert int(header.SeriesNumber) == int(source.SeriesNumber) + 1000
    assert header.SeriesInstanceUID != source.SeriesInstanceUID
    assert header.StudyInstanceUID == source.StudyInstanceUID and header.PatientID == source.PatientID
    assert header.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert header.SeriesDescription.startswith("mrisr ") and "not for clinical use" in header.ImageComments
    assert meta["SeriesDescription"] == header.SeriesDescription


def test_nifti_dynamic_with_a_dicom_planning_folder(scans, tmp_path):
    out = tmp_path / "sr.nii.gz"
    _reconstruct(scans["lr"], "--prior", scans["planning_dicom"], "--model", scans["tiny"], "-o", out)
    sidecar = json.loads((tmp_path / "sr.json").read_text())
    assert len(sidecar["inputs"]["prior_sha256"]) == 64 and sidecar["frames"] == 2
    assert load(out).n_frames == 2


def test_nifti_input_to_dicom_is_a_new_study(scans, tmp_path):
    out = tmp_path / "sr_dicom"
    _reconstruct(scans["lr"], "--prior", scans["planning"], "--model", scans["tiny"], "-o", out,
                 "--output-format", "dicom")
    header = pydicom.dcmread(sorted(out.iterdir())[0], stop_before_pixels=True)
    assert header.PatientID == "MRISR" and "made from a NIfTI file" in header.ImageComments
    assert "not for clinical use" in header.StudyDescription
    # a NIfTI names no acquisition parameters: the Type 2 ones stay empty, the others absent, none invented
    assert header.RepetitionTime in ("", None) and header.EchoTime in ("", None)
    for keyword in ("FlipAngle", "ImagingFrequency", "MagneticFieldStrength", "PatientPosition"):
        assert keyword not in header, keyword
    assert list(header.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
    # the series number is stable for the same inputs, options and output name, and differs for another input
    again = tmp_path / "again" / "sr_dicom"
    _reconstruct(scans["lr"], "--prior", scans["planning"], "--model", scans["tiny"], "-o", again,
                 "--output-format", "dicom")
    other_input = tmp_path / "other_lr.nii.gz"
    shutil.copyfile(scans["lr"], other_input)
    other = tmp_path / "other" / "sr_dicom"
    _reconstruct(other_input, "--prior", scans["planning"], "--model", scans["tiny"], "-o", other,
                 "--output-format", "dicom")
    numbers = [int(pydicom.dcmread(sorted(folder.iterdir())[0], stop_before_pixels=True).SeriesNumber)
               for folder in (out, again, other)]
    assert numbers[0] == numbers[1] != numbers[2] and all(1000 <= n <= 9999 for n in numbers)


def test_writer_refuses_a_full_folder_and_a_sheared_grid(tmp_path, scans):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    result = runner.invoke(app, ["reconstruct", str(scans["lr"]), "-o", str(tmp_path / "full"),
                                 "--output-format", "dicom", "--quiet"])
    assert result.exit_code == 1 and "output folder is not empty" in result.output
    sheared = np.eye(4)
    sheared[0, 1] = 0.3
    from mrisr.io import MrisrInputError

    with pytest.raises(MrisrInputError, match="sheared"):
        DicomSeriesWriter(tmp_path / "s", Volume(np.zeros((4, 4, 2), np.float32), sheared), (4, 4, 2), None)


def test_batch_with_dicom_series_and_a_dicom_copy(scans, tmp_path):
    """Two subjects (the dynamic in each DICOM layout) with a DICOM planning scan, through `mrisr batch`;
    the recipe's dicom block asks for a DICOM copy of each result."""
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("subject,dynamic,planning\n"
                        f"01,{scans['dyn_classic']},{scans['planning_dicom']}\n"
                        f"02,{scans['dyn_enhanced']},{scans['planning_dicom']}\n")
    config = tmp_path / "batch.yaml"
    config.write_text("dicom:\n  output_format: dicom\n")
    out = tmp_path / "derivatives"
    result = runner.invoke(app, ["batch", str(manifest), str(out), "--config", str(config), "--model",
                                 str(scans["tiny"]), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "2 done" in result.stdout
    for label in ("01", "02"):
        series = out / f"sub-{label}" / "func" / f"sub-{label}_desc-sr_bold.nii.gz"
        nifti = load(series)
        copy = load(series.with_name(f"sub-{label}_desc-sr_bold_dicom"))
        np.testing.assert_allclose(copy.affine, nifti.affine, atol=1e-3)
        assert copy.data.shape == nifti.data.shape and copy.tr == pytest.approx(0.5)
        meta = json.loads(series.with_name(f"sub-{label}_desc-sr_bold.json").read_text())
        assert meta["MrisrBatch"]["dicom"].endswith("_dicom")
    assert "*_dicom" in (out / ".bidsignore").read_text()
    # a rerun finds everything up to date
    again = runner.invoke(app, ["batch", str(manifest), str(out), "--config", str(config), "--model",
                                str(scans["tiny"]), "--device", "cpu"])
    assert again.exit_code == 0 and "2 skipped (up to date)" in again.stdout, again.output
