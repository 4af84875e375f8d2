"""One SHA-256 for every image: a file hashes like ``sha256sum``, a DICOM folder by its sorted files'
names and contents, and a header with detached data together with that data; and one atomic JSON
writer that keeps files strict JSON and never leaves half a file."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import mrisr.models.checkpoint
from mrisr.io import MrisrInputError, file_sha256, image_files, write_json_atomic


def _sha256(*chunks: bytes) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _folder(root, files: dict[str, bytes]):
    """A folder with ``files`` (relative name -> bytes), created in the order given."""
    root.mkdir()
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


SLICES = {"IM0002.dcm": b"second slice", "IM0001.dcm": b"first slice", "sub/IM0003.dcm": b"third slice"}


def test_a_file_hashes_like_sha256sum(tmp_path):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 5000)
    assert file_sha256(path) == _sha256(path.read_bytes())
    assert file_sha256(path, chunk=7) == file_sha256(path)


def test_a_folder_hashes_its_files_in_a_stable_order(tmp_path):
    forward = _folder(tmp_path / "a", SLICES)
    backward = _folder(tmp_path / "b", dict(reversed(list(SLICES.items()))))
    digest = file_sha256(forward)
    assert digest == file_sha256(backward)  # creation (directory listing) order does not matter
    # sorted relative names, each followed by its contents
    expected = _sha256(b"IM0001.dcm", b"first slice", b"IM0002.dcm", b"second slice", b"sub/IM0003.dcm",
                       b"third slice")
    assert digest == expected
    assert [p.relative_to(forward).as_posix() for p in image_files(forward)] == [
        "IM0001.dcm", "IM0002.dcm", "sub/IM0003.dcm"]


def test_a_folder_hash_changes_with_any_slice_or_name(tmp_path):
    folder = _folder(tmp_path / "dicom", SLICES)
    digest = file_sha256(folder)
    (folder / "sub" / "IM0003.dcm").write_bytes(b"third slice, edited")
    edited = file_sha256(folder)
    assert edited != digest
    (folder / "IM0001.dcm").rename(folder / "IM0009.dcm")
    assert file_sha256(folder) not in (digest, edited)
    (folder / "IM0004.dcm").write_bytes(b"")
    assert len(image_files(folder)) == 4


def test_a_dicom_series_folder_is_hashed_not_refused(tmp_path, tiny_volume):
    """The folder a manifest or ``--prior`` may name (a real DICOM series) hashes instead of failing
    with "Is a directory", through the name reconstruct still imports from the checkpoint module."""
    folder = tmp_path / "dicom"
    folder.mkdir()
    image = sitk.Cast(sitk.GetImageFromArray(np.round(tiny_volume.data.T * 100)), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        piece.SetMetaData("0008|0060", "MR")
        piece.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(piece)
    assert mrisr.models.checkpoint.file_sha256 is file_sha256
    digest = mrisr.models.checkpoint.file_sha256(folder)
    assert len(digest) == 64 and digest == file_sha256(folder)
    assert len(image_files(folder)) == image.GetDepth()


def test_a_metaimage_header_hashes_its_detached_data(tmp_path):
    header = tmp_path / "scan.mhd"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(60, dtype=np.float32).reshape(3, 4, 5)), str(header))
    data = tmp_path / "scan.raw"
    assert image_files(header) == [header, data]
    digest = file_sha256(header)
    assert digest == _sha256(header.read_bytes(), data.read_bytes())
    raw = bytearray(data.read_bytes())
    raw[17] ^= 0xFF  # one voxel changes, the header does not
    data.write_bytes(bytes(raw))
    assert file_sha256(header) != digest


def test_a_detached_nrrd_header_hashes_its_data(tmp_path):
    header = tmp_path / "scan.nhdr"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 3, 4), dtype=np.float32)), str(header))
    assert image_files(header) == [header, tmp_path / "scan.raw"]


def test_metaimage_list_pattern_and_local_data(tmp_path):
    for k in range(1, 4):
        (tmp_path / f"slice{k:02d}.raw").write_bytes(bytes([k]) * 8)
    listed = tmp_path / "listed.mhd"
    listed.write_text("NDims = 3\nDimSize = 2 2 3\nElementDataFile = LIST 2D\nslice01.raw\nslice02.raw\nslice03.raw\n")
    pattern = tmp_path / "pattern.mhd"
    pattern.write_text("NDims = 3\nDimSize = 2 2 3\nElementDataFile = slice%02d.raw 1 3 1\n")
    slices = [tmp_path / f"slice{k:02d}.raw" for k in range(1, 4)]
    assert image_files(listed) == [listed, *slices]
    assert image_files(pattern) == [pattern, *slices]
    local = tmp_path / "local.mhd"
    local.write_bytes(b"NDims = 1\nDimSize = 4\nElementDataFile = LOCAL\n\x00\x01\x02\x03")
    assert image_files(local) == [local]
    assert file_sha256(local) == _sha256(local.read_bytes())


def test_a_header_without_its_data_is_a_clear_error(tmp_path):
    header = tmp_path / "scan.mhd"
    header.write_text("NDims = 3\nDimSize = 2 2 2\nElementType = MET_FLOAT\nElementDataFile = scan.raw\n")
    with pytest.raises(MrisrInputError, match=r"scan\.mhd: its data file .*scan\.raw is missing"):
        file_sha256(header)


def test_an_analyze_pair_hashes_header_and_data(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 3, 4), dtype=np.float32)), str(tmp_path / "scan.hdr"))
    pair = [tmp_path / "scan.hdr", tmp_path / "scan.img"]
    assert image_files(pair[0]) == pair and image_files(pair[1]) == pair
    assert file_sha256(pair[0]) == file_sha256(pair[1]) == _sha256(*(p.read_bytes() for p in pair))


def test_write_json_atomic_writes_strict_shared_json(tmp_path):
    path = tmp_path / "deeper" / "status.json"
    data = {"nan": float("nan"), "inf": float("inf"), "array": np.arange(3), "scalar": np.float32(0.5),
            "path": tmp_path, "tuple": (1, 2)}
    assert write_json_atomic(path, data) == path
    text = path.read_text()
    assert text.endswith("}\n")
    assert json.loads(text, parse_constant=pytest.fail) == {"nan": None, "inf": "inf", "array": [0, 1, 2], "scalar": 0.5,
                                "path": str(tmp_path), "tuple": [1, 2]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]  # no partial left


def test_one_file_of_a_dicom_series_hashes_the_series_the_reader_reads(tmp_path):
    """``--prior IM00001`` reads the whole series beside that file: its hash covers every slice of that
    series (any of its files gives the same digest) and no file of another series in the folder."""
    import pydicom
    from dicom_testdata import ORIENTATIONS, write_classic

    from mrisr.io import load

    rng = np.random.default_rng(0)
    folder = write_classic(tmp_path / "study", rng.random((8, 6, 5)) + 0.1, ORIENTATIONS["coronal"],
                           series_uid="1.2.3.1")
    series_files = sorted(folder.iterdir())
    other = write_classic(tmp_path / "other", rng.random((8, 6, 3)) + 0.1, ORIENTATIONS["axial"],
                          series_uid="1.2.3.2", seed=1)
    for path in sorted(other.iterdir()):  # a second series in the same folder
        path.rename(folder / f"B{path.name}")
    one = series_files[2]
    assert load(one).data.shape == (8, 6, 5)  # what the reader reads for that file
    assert image_files(one) == series_files
    digest = file_sha256(one)
    assert digest != _sha256(one.read_bytes())
    assert all(file_sha256(path) == digest for path in series_files)
    # another series' file changes nothing; any slice of this series changes the digest
    stranger = next(folder.glob("BIM*"))
    stranger.write_bytes(stranger.read_bytes() + b"\0")
    assert file_sha256(one) == digest
    victim = series_files[4]
    ds = pydicom.dcmread(victim)
    ds.PixelData = bytes(len(ds.PixelData))
    ds.save_as(victim)
    assert file_sha256(one) != digest


def test_a_lone_dicom_file_hashes_like_sha256sum(tmp_path):
    import shutil
    import warnings

    from pydicom.data import get_testdata_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "MR_small.dcm"))
    (tmp_path / "notes.txt").write_text("not an image")
    assert image_files(path) == [path]
    assert file_sha256(path) == _sha256(path.read_bytes())
