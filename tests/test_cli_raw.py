"""`mrisr reconstruct scan.h5` and `mrisr simulate scan.h5`: raw ISMRMRD in, the same result as the
NIfTI run on the same frames."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("ismrmrd")

from mrd_testdata import write_raw  # noqa: E402

from mrisr.cli import app  # noqa: E402
from mrisr.data import load_sample  # noqa: E402
from mrisr.io import Volume, coarsen_affine, load, save_like  # noqa: E402
from mrisr.kspace.functional import crop_lowres  # noqa: E402
from mrisr.models import make_tiny_checkpoint  # noqa: E402
from mrisr.phantom import make_dynamic  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A 3-frame phantom of real anatomy (48 x 48 x 8, LR 12 x 12 at 6.25 %), a tiny prior model, and
    the HR frames' central 12 x 12 k-space written as raw acquisitions."""
    folder = tmp_path_factory.mktemp("cli_raw")
    sample = load_sample()
    affine = sample.affine.copy()
    affine[:3, 3] = sample.affine[:3, :3] @ np.array([40, 40, 10]) + sample.affine[:3, 3]
    crop = Volume(data=np.ascontiguousarray(sample.data[40:88, 40:88, 10:18]), affine=affine, qform_code=1,
                  sform_code=1)
    files = make_dynamic(crop, frames=3, keep=6.25, seed=4, tr=0.5).save(folder / "phantom")
    files["tiny"] = make_tiny_checkpoint(folder / "tiny.safetensors", prior=True)
    hr = load(files["hr"])
    files["raw"] = write_raw(folder / "scan.h5", hr.data, hr.affine, lines=12, readout=12)
    return files


def _run(*args):
    result = runner.invoke(app, [*[str(a) for a in args]])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def _reconstruct(dynamic, case, output):
    result = _run("reconstruct", dynamic, "--prior", case["planning"], "--model", case["tiny"], "-o", output,
                  "--quiet", "--device", "cpu", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    return load(output)


def test_reconstruct_raw_equals_the_nifti_run(case, tmp_path):
    raw_lr, nifti_lr = load(case["raw"]), load(case["lr"])
    assert np.abs(raw_lr.affine - nifti_lr.affine).max() < 1e-3
    from_raw = _reconstruct(case["raw"], case, tmp_path / "raw_sr.nii.gz")
    from_nifti = _reconstruct(case["lr"], case, tmp_path / "nifti_sr.nii.gz")
    assert from_raw.data.shape == from_nifti.data.shape == (48, 48, 8, 3)
    assert np.abs(from_raw.affine - from_nifti.affine).max() < 1e-3
    assert np.abs(from_raw.data - from_nifti.data).max() <= 1e-4 * np.abs(from_nifti.data).max()


def test_reconstruct_asymmetric_keyhole_raw_end_to_end(case, tmp_path):
    """Full 2x-oversampled readout, 12 central phase-encode lines: a 48 x 12 LR matrix the pipeline
    zero-fills along phase only, equal to the NIfTI run on the same LR frames."""
    hr = load(case["hr"])
    raw = write_raw(tmp_path / "keyhole.h5", hr.data, hr.affine, lines=12, oversampling=2, coils=1)
    lr_shape = (48, 12, 8)
    nifti = save_like(tmp_path / "keyhole_lr.nii.gz", crop_lowres(hr.data, lr_shape[:2], axes=(0, 1)), hr,
                      affine=coarsen_affine(hr.affine, hr.spatial_shape, lr_shape), tr=hr.tr)
    from_raw = _reconstruct(raw, case, tmp_path / "raw_sr.nii.gz")
    from_nifti = _reconstruct(nifti, case, tmp_path / "nifti_sr.nii.gz")
    assert from_raw.data.shape == (48, 48, 8, 3)
    assert np.abs(from_raw.affine - hr.affine).max() < 1e-3
    assert np.abs(from_raw.data - from_nifti.data).max() <= 1e-4 * np.abs(from_nifti.data).max()


def test_simulate_undersamples_a_fully_sampled_raw_scan(case, tmp_path):
    """A fully sampled 4-coil acquisition with 2x readout oversampling is the HR volume `simulate` crops."""
    planning = load(case["planning"])
    raw = write_raw(tmp_path / "full.h5", planning.data, planning.affine, coils=4, oversampling=2, three_d=True)
    for source, name in ((raw, "raw"), (case["planning"], "nifti")):
        result = _run("simulate", source, "-o", tmp_path / f"{name}_lr.nii.gz", "--keep", "25")
        assert result.exit_code == 0, result.output
    from_raw, from_nifti = load(tmp_path / "raw_lr.nii.gz"), load(tmp_path / "nifti_lr.nii.gz")
    assert from_raw.data.shape == from_nifti.data.shape == (24, 24, 8)
    assert np.abs(from_raw.affine - from_nifti.affine).max() < 1e-3
    assert np.abs(from_raw.data - from_nifti.data).max() <= 1e-4 * np.abs(from_nifti.data).max()


def test_unsupported_raw_fails_with_one_line(case, tmp_path):
    hr = load(case["hr"])
    radial = write_raw(tmp_path / "radial.h5", hr.data[..., 0], hr.affine, trajectory="radial")
    result = _run("reconstruct", radial, "--prior", case["planning"], "--model", case["tiny"], "--quiet")
    assert result.exit_code == 1, result.output  # a failed run, not a bad command line
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "radial.h5" in errors[0] and "non-Cartesian" in errors[0], result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["radial.h5"]
