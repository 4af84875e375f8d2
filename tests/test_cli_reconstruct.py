"""`mrisr reconstruct` end to end, and every kind of bad input: one-line error naming the file, no output left."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.data import load_sample
from mrisr.io import Volume, load
from mrisr.models import file_sha256, make_tiny_checkpoint
from mrisr.phantom import make_dynamic
from mrisr.reconstruct import ReconstructOptions
from mrisr.workflow import reconstruct_file

runner = CliRunner()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A 3-frame phantom (48 x 48 x 8 real anatomy, 12 x 12 LR) and tiny models, on disk."""
    folder = tmp_path_factory.mktemp("cli_reconstruct")
    sample = load_sample()
    affine = sample.affine.copy()
    affine[:3, 3] = sample.affine[:3, :3] @ np.array([40, 40, 10]) + sample.affine[:3, 3]
    crop = Volume(data=np.ascontiguousarray(sample.data[40:88, 40:88, 10:18]), affine=affine, qform_code=1,
                  sform_code=1)
    files = make_dynamic(crop, frames=3, keep=6.25, seed=4, tr=0.5).save(folder / "phantom")
    files["tiny"] = make_tiny_checkpoint(folder / "tiny.safetensors", prior=True)
    files["tiny_noprior"] = make_tiny_checkpoint(folder / "tiny_noprior.safetensors", prior=False)
    return files


@pytest.fixture
def work(case, tmp_path):
    """A fresh folder holding a copy of the dynamic (``scan.nii.gz``) and the planning scan."""
    shutil.copy(case["lr"], tmp_path / "scan.nii.gz")
    shutil.copy(case["planning"], tmp_path / "planning.nii.gz")
    return tmp_path


def _invoke(*args):
    result = runner.invoke(app, ["reconstruct", *[str(a) for a in args], "--quiet"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def _assert_failed_cleanly(result, folder, names_file: str, *fragments: str, before=None, exit_code: int = 1):
    """A failed run exits 1 (docs/cli.md, 'Exit codes'); a bad command line 2."""
    assert result.exit_code == exit_code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert names_file in errors[0], errors[0]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    # nothing written: no output, no sidecar, no temporary
    left = sorted(p.name for p in folder.iterdir())
    assert left == sorted(before or ["scan.nii.gz", "planning.nii.gz"]), left


def test_reconstruct_with_prior_writes_output_and_sidecar(case, work):
    result = _invoke(work / "scan.nii.gz", "--prior", work / "planning.nii.gz", "--model", case["tiny"],
                     "-o", work / "out" / "sr.nii.gz")
    assert result.exit_code == 0, result.output
    out = load(work / "out" / "sr.nii.gz")
    truth = load(case["hr"])
    assert out.data.shape == truth.data.shape
    np.testing.assert_allclose(out.affine, truth.affine, atol=1e-5)
    assert out.tr == pytest.approx(0.5)
    side = json.loads((work / "out" / "sr.json").read_text())
    assert side["inputs"]["dynamic_sha256"] == file_sha256(work / "scan.nii.gz")
    assert "48x48x8 grid (LR = 6.25% of k-space)" in result.output


def test_default_output_name_next_to_the_input(case, work):
    digest = file_sha256(work / "scan.nii.gz")
    result = _invoke(work / "scan.nii.gz", "--model", case["tiny_noprior"])
    assert result.exit_code == 0, result.output
    assert (work / "scan_sr.nii.gz").exists() and (work / "scan_sr.json").exists()
    assert file_sha256(work / "scan.nii.gz") == digest
    assert load(work / "scan_sr.nii.gz").data.shape == (48, 48, 8, 3)  # default factor 4


def test_prior_outside_the_field_of_view(case, work):
    img = nib.load(str(work / "planning.nii.gz"))
    far = img.affine.copy()
    far[:3, 3] += 500.0  # half a metre away
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), far), str(work / "elsewhere.nii.gz"))
    result = _invoke(work / "scan.nii.gz", "--prior", work / "elsewhere.nii.gz", "--model", case["tiny"],
                     "-o", work / "sr.nii.gz")
    _assert_failed_cleanly(result, work, "elsewhere.nii.gz", "field of view covers only 0%",
                           before=["scan.nii.gz", "planning.nii.gz", "elsewhere.nii.gz"])


def test_four_d_prior(case, work):
    shutil.copy(case["hr"], work / "series.nii.gz")
    result = _invoke(work / "scan.nii.gz", "--prior", work / "series.nii.gz", "--model", case["tiny"],
                     "-o", work / "sr.nii.gz")
    _assert_failed_cleanly(result, work, "series.nii.gz", "4-D series", "3-D planning scan",
                           before=["scan.nii.gz", "planning.nii.gz", "series.nii.gz"])


@pytest.mark.parametrize("kind", ["random", "pickle"])
def test_checkpoint_that_is_not_mrisr(work, kind):
    fake = work / ("model.safetensors" if kind == "random" else "model.pt")
    fake.write_bytes(np.random.default_rng(1).bytes(2048) if kind == "random" else b"\x80\x04K\x01.")
    result = _invoke(work / "scan.nii.gz", "--prior", work / "planning.nii.gz", "--model", fake,
                     "-o", work / "sr.nii.gz")
    _assert_failed_cleanly(result, work, str(fake), "expected an mrisr checkpoint",
                           before=["scan.nii.gz", "planning.nii.gz", fake.name])


def test_prior_model_without_prior(case, work):
    result = _invoke(work / "scan.nii.gz", "--model", case["tiny"], "-o", work / "sr.nii.gz")
    _assert_failed_cleanly(result, work, str(case["tiny"]), "trained with a prior", "--prior")


def test_no_prior_model_with_prior_warns_and_uses_it_for_the_grid(case, work):
    result = _invoke(work / "scan.nii.gz", "--prior", work / "planning.nii.gz", "--model", case["tiny_noprior"],
                     "-o", work / "sr.nii.gz")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output
    assert "model has no prior channel; the planning scan is only used for the HR grid" in result.output
    side = json.loads((work / "sr.json").read_text())
    assert side["grid"]["how"] == "prior"
    assert any("no prior channel" in w for w in side["warnings"])


def test_nan_frame(case, work):
    img = nib.load(str(work / "scan.nii.gz"))
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    data[..., 1] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(work / "nan.nii.gz"))
    result = _invoke(work / "nan.nii.gz", "--model", case["tiny_noprior"], "-o", work / "sr.nii.gz")
    _assert_failed_cleanly(result, work, "nan.nii.gz", "frame 1 contains NaN",
                           before=["scan.nii.gz", "planning.nii.gz", "nan.nii.gz"])


def test_output_equal_to_input(case, work):
    digest = file_sha256(work / "scan.nii.gz")
    result = _invoke(work / "scan.nii.gz", "--model", case["tiny_noprior"], "-o", work / "scan.nii.gz")
    _assert_failed_cleanly(result, work, "scan.nii.gz", "output path is the same as the input")
    assert file_sha256(work / "scan.nii.gz") == digest


def test_bogus_prior_mode(case, work):
    result = _invoke(work / "scan.nii.gz", "--model", case["tiny_noprior"], "--prior-mode", "bogus")
    _assert_failed_cleanly(result, work, "bogus", "choose one of tracked, planning, previous", exit_code=2)


def test_finetune_without_prior(case, work):
    result = _invoke(work / "scan.nii.gz", "--model", case["tiny"], "--finetune")
    _assert_failed_cleanly(result, work, "scan.nii.gz", "--finetune needs the planning scan", exit_code=2)


def test_interrupt_leaves_no_output(case, work):
    seen = []

    def interrupt_at_frame_1(result):
        seen.append(result.index)
        if result.index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct_file(work / "scan.nii.gz", work / "sr.nii.gz", work / "planning.nii.gz",
                         ReconstructOptions(model=str(case["tiny"])), on_frame=interrupt_at_frame_1)
    assert seen == [0, 1]
    assert sorted(p.name for p in work.iterdir()) == ["planning.nii.gz", "scan.nii.gz"]


def test_non_nifti_output_is_refused(case, work):
    # frames are streamed as NIfTI: an .mha name would hold NIfTI bytes no reader accepts
    result = _invoke(work / "scan.nii.gz", "--model", case["tiny_noprior"], "-o", work / "sr.mha")
    _assert_failed_cleanly(result, work, "sr.mha", "name the output .nii.gz or .nii")


def test_precision_is_recorded_and_checked(case, work):
    from mrisr.models.predictor import native_bf16_cpu

    for precision, dtype in (("fp32", "float32"), ("auto", "bfloat16" if native_bf16_cpu() else "float32")):
        out = work / f"sr_{precision}.nii.gz"
        result = _invoke(work / "scan.nii.gz", "--prior", work / "planning.nii.gz", "--model", case["tiny"],
                         "--precision", precision, "-o", out)
        assert result.exit_code == 0, result.output
        side = json.loads(out.with_name(f"sr_{precision}.json").read_text())
        assert side["options"]["precision"] == precision
        assert side["model"]["compute_dtype"] == dtype
        # the whole pipeline per frame: one time per frame, each at least the reconstruction's
        walls, recs = side["frame_wall_seconds"], side["frame_seconds"]
        assert len(walls) == len(recs) == side["frames"] == 3
        assert all(w >= r - 1e-3 for w, r in zip(walls, recs))
    result = _invoke(work / "scan.nii.gz", "--prior", work / "planning.nii.gz", "--precision", "half")
    _assert_failed_cleanly(result, work, "precision", "half", "auto, fp32",
                           before=["scan.nii.gz", "planning.nii.gz", "sr_fp32.nii.gz", "sr_fp32.json",
                                   "sr_auto.nii.gz", "sr_auto.json"], exit_code=2)
