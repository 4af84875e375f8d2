"""`mrisr finetune`: a normal mrisr checkpoint recording the base model and the planning scan's hash."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.data import load_sample
from mrisr.io import Volume, file_sha256
from mrisr.models import load, make_tiny_checkpoint, read_metadata
from mrisr.phantom import make_dynamic

runner = CliRunner()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_finetune")
    sample = load_sample()
    affine = sample.affine.copy()
    affine[:3, 3] = sample.affine[:3, :3] @ np.array([40, 40, 10]) + sample.affine[:3, 3]
    crop = Volume(data=np.ascontiguousarray(sample.data[40:88, 40:88, 10:18]), affine=affine, qform_code=1,
                  sform_code=1)
    files = make_dynamic(crop, frames=3, keep=6.25, seed=5, tr=0.5).save(folder / "phantom")
    files["tiny"] = make_tiny_checkpoint(folder / "tiny.safetensors", prior=True)
    return files


def _invoke(*args):
    result = runner.invoke(app, ["finetune", *[str(a) for a in args], "--quiet"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def _error_line(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_finetune_with_keep(case, tmp_path):
    out = tmp_path / "subject.safetensors"
    # the untrained tiny model returns its sinc input: 60 steps at 6.25 % beat it on the check pairs
    # (at 25 % its sinc is already close to the planning scan, and tuning does not beat it there)
    result = _invoke("--planning", case["planning"], "--keep", 6.25, "--steps", 60, "--lr", 3e-3, "--model",
                     case["tiny"], "-o", out)
    assert result.exit_code == 0, result.output
    assert f"{out}: fine-tuned 60 steps" in result.output
    meta = read_metadata(out)
    assert meta["base_model"] == str(case["tiny"])
    assert meta["base_model_sha256"] == file_sha256(case["tiny"])
    assert meta["planning_sha256"] == file_sha256(case["planning"])
    assert meta["finetune"]["steps"] == 60
    assert meta["finetune"]["lr"] == 3e-3
    assert meta["finetune"]["improved"] is True
    assert meta["finetune"]["check_tuned_loss"] < meta["finetune"]["check_base_loss"]
    assert meta["finetune_keep_percent"] == pytest.approx(6.25)
    assert meta["format"] == "mrisr-checkpoint" and meta["uses_prior"] is True
    assert "sha256" not in meta  # the file's own hash is computed on load, never stored stale
    model = load(out)
    assert model.meta["sha256"] == file_sha256(out)
    assert [p.name for p in tmp_path.iterdir()] == ["subject.safetensors"]


def test_finetune_like_a_dynamic(case, tmp_path):
    out = tmp_path / "subject.safetensors"
    result = _invoke("--planning", case["planning"], "--like", case["lr"], "--steps", 60, "--lr", 3e-3,
                     "--model", case["tiny"], "-o", out)
    assert result.exit_code == 0, result.output
    meta = read_metadata(out)
    assert meta["finetune_keep_percent"] == pytest.approx(6.25)  # 12 x 12 of 48 x 48
    assert meta["finetune"]["lr"] == 3e-3
    assert meta["planning_sha256"] == file_sha256(case["planning"])
    assert meta["planning_contrast"]["applied"] is False  # a same-contrast planning scan is not mapped


def test_finetune_on_a_planning_scan_of_another_contrast(case, tmp_path):
    """--like a dynamic of another contrast: the planning scan is mapped first (recorded), unless
    --no-match-contrast."""
    from mrisr.inserts import swap_contrast
    from mrisr.io import load as load_volume
    from mrisr.io import save_like

    planning = load_volume(case["planning"])
    swapped = save_like(tmp_path / "swapped.nii.gz", swap_contrast(np.asarray(planning.data)), planning)
    for flags, expected in (([], True), (["--no-match-contrast"], None)):
        out = tmp_path / f"subject_{expected}.safetensors"
        result = _invoke("--planning", swapped, "--like", case["lr"], "--steps", 60, "--lr", 3e-3, "--model",
                         case["tiny"], "-o", out, *flags)
        assert result.exit_code == 0, result.output
        contrast = read_metadata(out)["planning_contrast"]
        assert (contrast if contrast is None else contrast["applied"]) is expected


def test_fine_tuning_that_never_improves_says_so_and_writes_nothing(case, tmp_path):
    """At a learning rate too small to move the held-out loss, no copy of the base weights is
    written or presented as a tuned model."""
    out = tmp_path / "subject.safetensors"
    result = _invoke("--planning", case["planning"], "--keep", 25, "--steps", 10, "--lr", 1e-12, "--model", case["tiny"],
                     "-o", out)
    assert result.exit_code == 0, result.output
    assert "fine-tuning did not improve on the base model; the base model is used" in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("choice", [[], ["--keep", "25", "--like", "LR"]])
def test_needs_exactly_one_of_like_and_keep(case, tmp_path, choice):
    args = [case["lr"] if a == "LR" else a for a in choice]
    out = tmp_path / "m.safetensors"
    result = _invoke("--planning", case["planning"], *args, "--model", case["tiny"], "-o", out)
    assert result.exit_code == 2
    assert "exactly one of --like" in _error_line(result)
    assert not out.exists()


def test_bad_keep_output_and_planning(case, tmp_path):
    result = _invoke("--planning", case["planning"], "--keep", 150, "--model", case["tiny"], "-o",
                     tmp_path / "m.safetensors")
    assert "--keep 150: must be a percentage" in _error_line(result)
    result = _invoke("--planning", case["planning"], "--keep", 25, "--model", case["tiny"], "-o", tmp_path / "m.pt")
    assert "must be a .safetensors file" in _error_line(result)
    series = shutil.copy(case["hr"], tmp_path / "series.nii.gz")
    result = _invoke("--planning", series, "--keep", 25, "--model", case["tiny"], "-o", tmp_path / "m.safetensors")
    assert result.exit_code == 1
    assert "series.nii.gz: the planning scan is 4-D" in _error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series.nii.gz"]
