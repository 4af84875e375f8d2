"""Non-NIfTI formats through SimpleITK: NRRD, MetaImage and a DICOM series folder keep world geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.io import MrisrInputError, load, save_like, volume_to_sitk


def _no_leftovers(folder: Path) -> None:
    assert [p.name for p in folder.iterdir() if "partial" in p.name or p.suffix in (".raw", ".mhd")] == []


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_save_like_other_format_roundtrip(tmp_path, tiny_volume, suffix):
    out = save_like(tmp_path / f"vol{suffix}", tiny_volume.data, tiny_volume)
    assert out.exists() and out.stat().st_size > tiny_volume.data.size * 4  # one file holding the data
    _no_leftovers(tmp_path)
    back = load(out)
    assert back.data.shape == tiny_volume.data.shape
    assert back.data.dtype == np.float32
    np.testing.assert_allclose(back.affine, tiny_volume.affine, atol=1e-4)
    np.testing.assert_array_equal(back.data, tiny_volume.data)
    np.testing.assert_allclose(back.world_centroid(), tiny_volume.world_centroid(), atol=1e-4)
    # SimpleITK itself sees the LPS version of the RAS geometry
    image = sitk.ReadImage(str(out))
    lps_origin = np.diag([-1.0, -1.0, 1.0]) @ tiny_volume.affine[:3, 3]
    np.testing.assert_allclose(image.GetOrigin(), lps_origin, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), tiny_volume.zooms, rtol=1e-6)


def test_nrrd_and_nifti_agree(tmp_path, nifti_3d):
    from_nifti = load(nifti_3d)
    nrrd = save_like(tmp_path / "same.nrrd", from_nifti.data, from_nifti)
    from_nrrd = load(nrrd)
    np.testing.assert_allclose(from_nrrd.affine, from_nifti.affine, atol=1e-4)
    np.testing.assert_array_equal(from_nrrd.data, from_nifti.data)


def test_lps_file_read_as_ras(tmp_path):
    """An axis-aligned NRRD written by SimpleITK (LPS) gets the RAS affine diag(-sx, -sy, sz)."""
    arr = np.zeros((5, 6, 7), np.float32)  # SimpleITK order (Z, Y, X)
    arr[1, 2, 3] = 1.0
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.5, 0.75, 2.0))
    image.SetOrigin((10.0, 20.0, 30.0))
    path = tmp_path / "lps.nrrd"
    sitk.WriteImage(image, str(path))
    vol = load(path)
    assert vol.data.shape == (7, 6, 5)  # (X, Y, Z)
    assert vol.data[3, 2, 1] == 1.0
    expected = np.diag([-0.5, -0.75, 2.0, 1.0])
    expected[:3, 3] = (-10.0, -20.0, 30.0)
    np.testing.assert_allclose(vol.affine, expected)
    # the voxel's world point agrees with SimpleITK's own (LPS) answer
    lps = np.array(image.TransformIndexToPhysicalPoint((3, 2, 1)))
    np.testing.assert_allclose(vol.affine @ [3, 2, 1, 1], [-lps[0], -lps[1], lps[2], 1.0])


def test_4d_metaimage_reads_tr(tmp_path):
    arr = np.random.default_rng(1).random((3, 4, 5, 6)).astype(np.float32) + 0.1  # (T, Z, Y, X)
    image = sitk.GetImageFromArray(arr, isVector=False)
    image.SetSpacing((1.0, 1.5, 3.0, 0.45))
    path = tmp_path / "series.mha"
    sitk.WriteImage(image, str(path))
    vol = load(path)
    assert vol.data.shape == (6, 5, 4, 3)
    assert vol.tr == pytest.approx(0.45)
    np.testing.assert_array_equal(vol.frame(2), np.transpose(arr[2], (2, 1, 0)))


def test_4d_to_non_nifti_is_refused(tmp_path, tiny_series):
    with pytest.raises(MrisrInputError, match="4-D"):
        save_like(tmp_path / "series.nrrd", tiny_series.data, tiny_series)
    assert list(tmp_path.iterdir()) == []


def _write_dicom_series(folder: Path, volume) -> None:
    """A minimal MR DICOM series with the volume's oblique geometry (int16 slices)."""
    folder.mkdir()
    image = volume_to_sitk(volume)
    slices16 = sitk.Cast(sitk.Round(image), sitk.sitkInt16)
    d = image.GetDirection()
    orientation = "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    series_uid = "1.2.826.0.1.3680043.2.1125.1.42"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        piece = slices16[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "MR",
            "0020|000d": series_uid + ".0",
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0037": orientation,
            "0020|0032": "\\".join(str(p) for p in position),
            "0018|0050": str(image.GetSpacing()[2]),
            "0028|0030": f"{image.GetSpacing()[1]}\\{image.GetSpacing()[0]}",
        }
        for tag, value in tags.items():
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(piece)


def test_dicom_series_folder(tmp_path, tiny_volume):
    folder = tmp_path / "dicom"
    _write_dicom_series(folder, tiny_volume)
    vol = load(folder)
    assert vol.data.shape == tiny_volume.data.shape
    np.testing.assert_allclose(vol.affine, tiny_volume.affine, atol=1e-4)
    np.testing.assert_array_equal(vol.data, np.round(tiny_volume.data))


def test_folder_without_dicom_is_a_clear_error(tmp_path):
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    with pytest.raises(MrisrInputError, match="nothing_here: folder holds no DICOM series"):
        load(empty)


def test_unreadable_nrrd_names_file(tmp_path):
    bad = tmp_path / "broken.nrrd"
    bad.write_text("NRRD0004\nthis is not a header\n")
    with pytest.raises(MrisrInputError, match="broken.nrrd: not a readable image"):
        load(bad)
