"""`mrisr simulate` and `mrisr info` through typer's CliRunner and one real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr import kspace
from mrisr.cli import app
from mrisr.io import coarsen_affine, load

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _mrisr_executable() -> Path:
    exe = Path(sys.executable).parent / "mrisr"
    if not exe.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    return exe


@pytest.mark.parametrize("keep", [6.25, 25.0])
def test_simulate_3d_writes_lr_matrix_with_coarsened_affine(tmp_path, nifti_3d, keep):
    out = tmp_path / "lr.nii.gz"
    result = _run("simulate", nifti_3d, "-o", out, "--keep", keep)
    assert result.exit_code == 0, result.output
    lr_inplane = kspace.center_keep_shape((32, 28), keep)
    lr_shape = (*lr_inplane, 12)
    assert "x".join(map(str, lr_shape)) in result.stdout
    assert f"{kspace.keep_percent_of((32, 28), lr_inplane):.2f}%" in result.stdout
    hr = load(nifti_3d)
    lr = load(out)
    assert lr.data.shape == lr_shape
    np.testing.assert_allclose(lr.affine, coarsen_affine(hr.affine, hr.spatial_shape, lr_shape), atol=1e-5)
    assert (lr.qform_code, lr.sform_code) == (1, 2)
    assert lr.tr is None
    np.testing.assert_allclose(lr.data, kspace.center_crop_lowres(hr.data, keep), atol=1e-3)
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_simulate_4d_keeps_tr(tmp_path, nifti_4d):
    out = tmp_path / "lr4d.nii.gz"
    result = _run("simulate", nifti_4d, "-o", out, "--keep", "6.25")
    assert result.exit_code == 0, result.output
    lr_shape = (*kspace.center_keep_shape((32, 28), 6.25), 12, 3)
    img = nib.load(str(out))
    assert img.shape == lr_shape
    assert float(img.header["pixdim"][4]) == pytest.approx(0.45)
    assert img.header.get_xyzt_units() == ("mm", "sec")
    hr = load(nifti_4d)
    lr = load(out)
    assert lr.tr == pytest.approx(0.45)
    np.testing.assert_allclose(lr.affine, coarsen_affine(hr.affine, hr.spatial_shape, lr_shape[:3]), atol=1e-5)
    # frame by frame the same as the 3-D simulation of that frame
    np.testing.assert_allclose(lr.frame(2), kspace.center_crop_lowres(hr.frame(2), 6.25), atol=1e-3)


def test_zero_fill_keeps_hr_grid(tmp_path, nifti_4d):
    out = tmp_path / "zf.nii.gz"
    result = _run("simulate", nifti_4d, "-o", out, "--keep", "10", "--zero-fill")
    assert result.exit_code == 0, result.output
    hr = load(nifti_4d)
    zf = load(out)
    assert zf.data.shape == hr.data.shape
    np.testing.assert_allclose(zf.affine, hr.affine, atol=1e-6)
    assert zf.tr == pytest.approx(0.45)
    assert zf.data.mean() == pytest.approx(hr.data.mean(), rel=0.01)
    assert not np.allclose(zf.data, hr.data)


def test_random_mode_is_reproducible_by_seed(tmp_path, nifti_3d):
    paths = {}
    for name, seed in [("a", 3), ("b", 3), ("c", 4)]:
        paths[name] = tmp_path / f"{name}.nii.gz"
        result = _run("simulate", nifti_3d, "-o", paths[name], "--keep", "25", "--mode", "random", "--seed", seed)
        assert result.exit_code == 0, result.output
        assert "random mask" in result.stdout
    a, b, c = (load(paths[k]).data for k in "abc")
    assert a.shape == (32, 28, 12)  # masks give zero-filled output on the HR grid
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_three_d_mode_and_noise(tmp_path, nifti_3d):
    out = tmp_path / "3d.nii.gz"
    result = _run("simulate", nifti_3d, "-o", out, "--keep", "12.5", "--3d")
    assert result.exit_code == 0, result.output
    assert load(out).data.shape == kspace.center_keep_shape((32, 28, 12), 12.5)
    clean, noisy = tmp_path / "clean.nii.gz", tmp_path / "noisy.nii.gz"
    assert _run("simulate", nifti_3d, "-o", clean, "--keep", "25").exit_code == 0
    assert _run("simulate", nifti_3d, "-o", noisy, "--keep", "25", "--noise-snr", "10").exit_code == 0
    difference = load(noisy).data - load(clean).data
    assert 0.5 < difference.std() < 10.0  # signal ~100, sigma = mean/snr * sqrt(0.25)


def test_simulate_to_nrrd(tmp_path, nifti_3d):
    out = tmp_path / "lr.nrrd"
    result = _run("simulate", nifti_3d, "-o", out, "--keep", "25")
    assert result.exit_code == 0, result.output
    hr = load(nifti_3d)
    lr = load(out)
    np.testing.assert_allclose(lr.affine, coarsen_affine(hr.affine, (32, 28, 12), (16, 14, 12)), atol=1e-4)


def test_info_prints_versions():
    import monai
    import nibabel
    import torch

    import mrisr

    result = _run("info")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"mrisr      {mrisr.__version__}" in text
    assert torch.__version__ in text
    assert monai.__version__ in text
    assert nibabel.__version__ in text
    assert "device" in text and ("cpu" in text or "cuda" in text)


def test_help_lists_commands():
    result = _run("--help")
    assert result.exit_code == 0
    assert "simulate" in result.stdout and "info" in result.stdout


def test_real_console_script(tmp_path, nifti_4d):
    exe = _mrisr_executable()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "sub" / "lr.nii.gz"
    done = subprocess.run(
        [str(exe), "simulate", str(nifti_4d), "-o", str(out), "--keep", "6.25"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    lr = load(out)
    assert lr.data.shape == (*kspace.center_keep_shape((32, 28), 6.25), 12, 3)
    assert lr.tr == pytest.approx(0.45)
    # and a failure: one line on stderr, exit code 2, nothing written
    bad = subprocess.run(
        [str(exe), "simulate", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "x.nii.gz")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.nii.gz'}: file not found; check the path"]
    assert not (tmp_path / "x.nii.gz").exists()
