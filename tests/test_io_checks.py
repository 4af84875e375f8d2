"""Headers are never trusted: size bombs are refused before any allocation (peak memory measured in a
real subprocess), damaged payloads (CRC) are never read as numbers, RGB / complex / zero voxel size /
singular affines / empty shapes are one-line errors, missing orientation and disagreeing qform/sform
are reported, and an image without orientation is not written back as scanner space."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.io import MrisrInputError, load, save_like
from mrisr.models import make_tiny_checkpoint

runner = CliRunner()
TWO_GB_KB = 2 * 1024 * 1024  # ru_maxrss is in KiB on Linux


def raw_nifti(path: Path, shape, dtype=np.float32, data: bytes | None = None, stored: bool = False, **fields) -> Path:
    """Write header bytes (``fields`` set as stored, nothing repaired) and ``data`` (default: none)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr.set_qform(np.diag([2.0, 2.0, 3.0, 1.0]), code=1)
    hdr.set_sform(np.diag([2.0, 2.0, 3.0, 1.0]), code=1)
    hdr["vox_offset"] = 352
    for key, value in fields.items():
        hdr[key] = value
    payload = hdr.binaryblock + b"\0" * 4 + (data or b"")
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=0 if stored else 9, mtime=0)
    path.write_bytes(payload)
    return path


def _bomb(folder: Path, side: int = 1000, gz: bool = True) -> Path:
    return raw_nifti(folder / f"bomb{side}.nii{'.gz' if gz else ''}", (side, side, side))


def _error_line(result) -> str:
    assert result.exit_code == 1, result.output  # a failed run, not a usage error
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def case(phantom_files):
    return phantom_files


# ------------------------------------------------------------------ memory bombs, in a real process


PEAK_SCRIPT = """
import resource, sys
from mrisr.cli import main
sys.argv = ["mrisr", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "EXIT", code, file=sys.stderr)
"""


def _run_measured(*args) -> tuple[int, int, list[str]]:
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    last = lines[-1].split()
    assert last[0] == "MAXRSS_KB", done.stderr
    return int(last[1]), int(last[3]), lines[:-1]


def test_a_103_byte_header_declaring_1000_cubed_voxels_is_refused_in_every_command(case, tmp_path):
    bomb = _bomb(tmp_path)
    assert bomb.stat().st_size < 200  # the ~100-byte file of the report
    commands = [
        ["simulate", bomb, "-o", tmp_path / "lr.nii.gz"],
        ["evaluate", case["hr"], bomb],
        ["reconstruct", case["lr"], "--prior", bomb, "--model", case["tiny"], "-o", tmp_path / "sr.nii.gz", "--quiet"],
        ["reconstruct", bomb, "--model", case["tiny"], "-o", tmp_path / "sr2.nii.gz", "--quiet"],
    ]
    for args in commands:
        peak_kb, code, errors = _run_measured(*args)
        assert code == 1  # a failed run, not a usage error
        assert len(errors) == 1 and str(bomb) in errors[0] and "1000x1000x1000" in errors[0], errors
        assert "the file holds only" in errors[0]
        assert peak_kb < TWO_GB_KB, (args[0], peak_kb)
    assert sorted(p.name for p in tmp_path.iterdir()) == [bomb.name]


@pytest.mark.parametrize(("side", "gz"), [(4000, True), (1000, False)])
def test_other_size_bombs_are_refused_before_allocation(tmp_path, side, gz):
    bomb = _bomb(tmp_path, side, gz)
    peak_kb, code, errors = _run_measured("simulate", bomb, "-o", tmp_path / "lr.nii.gz")
    assert code == 1 and len(errors) == 1 and "the file holds only" in errors[0], errors
    assert peak_kb < TWO_GB_KB


def test_a_checkpoint_asking_for_huge_channels_is_refused_before_building(case, tmp_path):
    from safetensors.torch import load_file, save_file

    from mrisr.models.checkpoint import read_metadata

    meta = read_metadata(case["tiny"])
    meta["arguments"]["channels"] = [100000, 200000]
    bomb = tmp_path / "bomb.safetensors"
    save_file(load_file(str(case["tiny"])), str(bomb), metadata={"mrisr": json.dumps(meta)})
    assert bomb.stat().st_size < 100_000
    peak_kb, code, errors = _run_measured("reconstruct", case["lr"], "--prior", case["planning"], "--model", bomb,
                                          "-o", tmp_path / "sr.nii.gz", "--quiet")
    assert code == 1 and len(errors) == 1 and "arguments.channels" in errors[0] and "1..512" in errors[0], errors
    assert peak_kb < TWO_GB_KB


# ------------------------------------------------------------------ damaged or unusable headers


def _simulate(path: Path, tmp_path: Path) -> str:
    out = tmp_path / "out" / "lr.nii.gz"
    result = runner.invoke(app, ["simulate", str(path), "-o", str(out)])
    line = _error_line(result)
    assert str(path) in line
    assert not out.parent.exists() or not list(out.parent.iterdir())
    return line


def test_rgb_and_complex_voxels_are_refused(tmp_path):
    rgb = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb_path = raw_nifti(tmp_path / "rgb.nii", (8, 8, 4), rgb, data=bytes(8 * 8 * 4 * 3))
    assert "RGB" in _simulate(rgb_path, tmp_path)
    complex_path = raw_nifti(tmp_path / "c.nii.gz", (8, 8, 4), np.complex64,
                             data=np.ones(256, np.complex64).tobytes())
    assert "complex" in _simulate(complex_path, tmp_path)


def _valid_bytes(shape=(8, 8, 4)) -> bytes:
    return (np.arange(np.prod(shape), dtype=np.float32) + 1).tobytes()


def test_zero_voxel_size_singular_affine_and_empty_shapes_are_refused(tmp_path):
    zero = raw_nifti(tmp_path / "zero.nii.gz", (8, 8, 4), data=_valid_bytes(), pixdim=[1, 0, 2, 3, 0, 0, 0, 0])
    assert "voxel size" in _simulate(zero, tmp_path)
    flat = raw_nifti(tmp_path / "flat.nii.gz", (8, 8, 4), data=_valid_bytes(), srow_x=[0] * 4, srow_y=[0] * 4,
                     srow_z=[0] * 4)
    line = _simulate(flat, tmp_path)
    assert "sform" in line and "all zero" in line and "--factor" not in line
    empty = raw_nifti(tmp_path / "t0.nii.gz", (8, 8, 4, 1), data=_valid_bytes(), dim=[4, 8, 8, 4, 0, 1, 1, 1])
    assert "empty or invalid shape" in _simulate(empty, tmp_path)
    far = raw_nifti(tmp_path / "offset.nii", (8, 8, 4), data=_valid_bytes(), vox_offset=1e12)
    assert "the file holds only" in _simulate(far, tmp_path)


def test_a_corrupt_gzip_payload_is_never_read_as_numbers(case, tmp_path):
    # stored (uncompressed) deflate blocks: a flipped payload byte still inflates, only the CRC tells
    data = _valid_bytes((24, 24, 8))
    good = raw_nifti(tmp_path / "good.nii.gz", (24, 24, 8), data=data, stored=True)
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(MrisrInputError, match="corrupt gzip data") as exc:
        load(bad)
    assert "\n" not in str(exc.value)
    assert "corrupt" in _simulate(bad, tmp_path)
    # streamed (a series read frame by frame): the run fails at the end of the stream, no output is left
    lr = load(case["lr"])
    series = tmp_path / "series.nii"
    save_like(series, lr.data, lr, tr=0.5)
    packed = bytearray(gzip.compress(series.read_bytes(), compresslevel=0, mtime=0))
    packed[len(packed) // 2] ^= 0x01
    broken = tmp_path / "series_bad.nii.gz"
    broken.write_bytes(bytes(packed))
    out = tmp_path / "sr" / "sr.nii.gz"
    result = runner.invoke(app, ["reconstruct", str(broken), "--prior", str(case["planning"]), "--model",
                                 str(case["tiny"]), "-o", str(out), "--quiet"])
    line = _error_line(result)
    assert str(broken) in line and "corrupt" in line
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_missing_orientation_is_reported_and_not_written_back_as_scanner_space(case, tmp_path):
    lr = load(case["lr"])
    img = nib.Nifti1Image(np.asarray(lr.data, np.float32), None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    img.header.set_zooms((*lr.zooms, 0.5))
    bare = tmp_path / "bare.nii.gz"
    nib.save(img, str(bare))
    assert (int(nib.load(str(bare)).header["qform_code"]), int(nib.load(str(bare)).header["sform_code"])) == (0, 0)
    out = tmp_path / "sr.nii.gz"
    noprior = make_tiny_checkpoint(tmp_path / "noprior.safetensors", prior=False)
    result = runner.invoke(app, ["reconstruct", str(bare), "--model", str(noprior), "--factor", "2", "-o", str(out),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("no orientation" in line for line in warnings), result.stderr
    assert "warning" not in result.stdout and "no orientation" not in result.stdout
    hdr = nib.load(str(out)).header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (0, 0)


def test_disagreeing_qform_and_sform_are_reported(tmp_path):
    shifted = np.diag([2.0, 2.0, 3.0, 1.0])
    shifted[:3, 3] = [10.0, 0.0, 0.0]
    path = raw_nifti(tmp_path / "two.nii.gz", (8, 8, 4), data=_valid_bytes(), srow_x=shifted[0], srow_y=shifted[1],
                     srow_z=shifted[2])
    with pytest.warns(UserWarning, match="qform and sform disagree"):
        volume = load(path)
    np.testing.assert_allclose(volume.affine[:3, 3], [10.0, 0.0, 0.0])
    result = runner.invoke(app, ["simulate", str(path), "-o", str(tmp_path / "lr.nii.gz"), "--keep", "50"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "disagree" in warnings[0], result.stderr


def test_a_one_voxel_image_is_refused_at_load(tmp_path):
    path = raw_nifti(tmp_path / "one.nii.gz", (1, 1, 1), data=np.ones(1, np.float32).tobytes())
    line = _simulate(path, tmp_path)
    assert "coverage" not in line and "in-plane" in line


def test_copy_of_a_real_file_still_loads(case, tmp_path):
    copy = shutil.copy(case["hr"], tmp_path / "hr.nii.gz")
    assert load(copy).data.shape == (24, 24, 8, 2)


def test_a_header_nibabel_must_repair_is_no_traceback(tmp_path):
    qfac = raw_nifti(tmp_path / "qfac.nii.gz", (8, 8, 4), data=_valid_bytes(), pixdim=[0, 2, 2, 3, 0, 0, 0, 0])
    result = runner.invoke(app, ["simulate", str(qfac), "-o", str(tmp_path / "lr.nii.gz"), "--keep", "50"])
    assert result.exit_code == 0, result.output
    assert all(line.startswith("warning: ") for line in result.stderr.splitlines() if line.strip())
