"""`mrisr phantom`: writes planning, HR and LR files with the right shapes; bad input fails cleanly."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.io import coarsen_affine, load
from mrisr.kspace import center_keep_shape

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["phantom", *map(str, args)])


def test_phantom_from_a_file(tmp_path, nifti_3d, tiny_volume):
    out = tmp_path / "phantom"
    result = _run("--source", nifti_3d, "-o", out, "--frames", 3, "--keep", 25, "--seed", 2, "--tr", 0.7)
    assert result.exit_code == 0, result.output
    shape = tiny_volume.spatial_shape
    lr_inplane = center_keep_shape(shape[:2], 25)
    planning = load(out / "planning.nii.gz")
    hr = load(out / "dynamic_hr.nii.gz")
    lr = load(out / "dynamic_lr.nii.gz")
    assert planning.data.shape == shape
    assert hr.data.shape == (*shape, 3)
    assert lr.data.shape == (*lr_inplane, shape[2], 3)
    np.testing.assert_allclose(hr.affine, tiny_volume.affine, atol=1e-4)
    np.testing.assert_allclose(lr.affine, coarsen_affine(tiny_volume.affine, shape, lr.spatial_shape), atol=1e-4)
    assert hr.tr == pytest.approx(0.7) and lr.tr == pytest.approx(0.7)
    # it tells the user what it wrote
    assert "dynamic_lr.nii.gz" in result.output
    assert f"{lr_inplane[0]}x{lr_inplane[1]}x{shape[2]}x3" in result.output
    kept = 100.0 * np.prod(lr_inplane) / np.prod(shape[:2])
    assert f"kept {kept:.2f}% of k-space" in result.output


def test_phantom_default_source_is_the_bundled_sample(tmp_path):
    out = tmp_path / "sample_phantom"
    result = _run("-o", out, "--frames", 1, "--no-contrast", "--noise-snr", 30)
    assert result.exit_code == 0, result.output
    assert load(out / "dynamic_hr.nii.gz").data.shape == (128, 144, 32)  # one frame loads as 3-D
    lr = load(out / "dynamic_lr.nii.gz")
    assert lr.data.shape == (32, 36, 32)
    np.testing.assert_allclose(lr.zooms, (6.0, 6.0, 3.0), rtol=1e-5)
    assert "colin27_slab.nii.gz" in result.output
    assert "6.25%" in result.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--keep", 0), "--keep"),
        (("--keep", 150), "--keep"),
        (("--frames", 0), "--frames"),
        (("--tr", -1), "--tr"),
        (("--noise-snr", 0), "--noise-snr"),
    ],
)
def test_bad_options_fail_without_output(tmp_path, nifti_3d, extra, message):
    out = tmp_path / "never"
    result = _run("--source", nifti_3d, "-o", out, *extra)
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert result.output.startswith("error:") and message in result.output
    assert not out.exists()


def test_missing_source_fails_without_output(tmp_path):
    out = tmp_path / "never"
    result = _run("--source", tmp_path / "nope.nii.gz", "-o", out, "--frames", 2)
    assert result.exit_code == 1
    assert "nope.nii.gz" in result.output and "not found" in result.output
    assert not out.exists()


def test_4d_source_fails_without_output(tmp_path, nifti_4d):
    out = tmp_path / "never"
    result = _run("--source", nifti_4d, "-o", out, "--frames", 2)
    assert result.exit_code == 1
    assert "4-D" in result.output and nifti_4d.name in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()
