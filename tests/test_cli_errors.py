"""Bad input to `mrisr simulate`: non-zero exit, one line naming the file, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli import app

runner = CliRunner()


def _fails_cleanly(folder: Path, args: list, names: str, output: Path) -> str:
    """Run, check the failure contract and return the error line."""
    before = {p.name for p in folder.iterdir()}
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no traceback
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert names in lines[0], lines[0]
    assert not output.exists()
    after = {p.name for p in folder.iterdir()}
    assert after == before, after - before
    return lines[0]


@pytest.fixture
def inputs(tmp_path, write_nifti, tiny_volume):
    """The bad (and one good) input files, each written for real."""
    folder = tmp_path / "in"
    folder.mkdir()
    affine = tiny_volume.affine
    good = write_nifti(folder / "good.nii.gz", tiny_volume.data, affine)
    text = folder / "notes.nii.gz"
    text.write_text("this is a text file, not an image\n")
    flat = write_nifti(folder / "flat.nii.gz", tiny_volume.data[..., 0], affine)
    five = write_nifti(folder / "five.nii.gz", np.ones((8, 8, 4, 2, 2), np.float32), affine)
    with_nan = tiny_volume.data.copy()
    with_nan[3, 4, 5] = np.nan
    nan = write_nifti(folder / "nan.nii.gz", with_nan, affine)
    zero = write_nifti(folder / "zero.nii.gz", np.zeros((32, 28, 12), np.float32), affine)
    blocker = folder / "somefile.txt"
    blocker.write_text("a file where a folder would have to be\n")
    return {
        "good": good, "text": text, "flat": flat, "five": five, "nan": nan, "zero": zero, "blocker": blocker,
        "missing": folder / "missing.nii.gz",
    }


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("missing", "file not found"),
        ("text", "not a readable NIfTI image"),
        ("flat", "2-D"),
        ("five", "5-D"),
        ("nan", "NaN"),
        ("zero", "all zero"),
    ],
)
def test_bad_input_file(tmp_path, inputs, which, message):
    output = tmp_path / "out" / "lr.nii.gz"
    line = _fails_cleanly(inputs["good"].parent, ["simulate", inputs[which], "-o", output], str(inputs[which]), output)
    assert message in line


def test_nan_in_one_frame_names_the_frame(tmp_path, write_nifti, tiny_series):
    data = tiny_series.data.copy()
    data[1, 2, 3, 2] = np.inf
    path = write_nifti(tmp_path / "series.nii.gz", data, tiny_series.affine, tr=0.45)
    output = tmp_path / "lr.nii.gz"
    line = _fails_cleanly(tmp_path, ["simulate", path, "-o", output], str(path), output)
    assert "frame(s) 2" in line


@pytest.mark.parametrize("keep", ["0", "150", "-1", "nan"])
def test_bad_keep(tmp_path, inputs, keep):
    output = tmp_path / "lr.nii.gz"
    line = _fails_cleanly(tmp_path, ["simulate", inputs["good"], "-o", output, "--keep", keep], str(inputs["good"]), output)
    assert f"--keep {keep}" in line and "(0, 100]" in line


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--mode", "bogus"], "center, random, equispaced, variable-density"), (["--noise-snr", "-3"], "--noise-snr -3")],
)
def test_bad_options(tmp_path, inputs, extra, message):
    output = tmp_path / "lr.nii.gz"
    line = _fails_cleanly(tmp_path, ["simulate", inputs["good"], "-o", output, *extra], str(inputs["good"]), output)
    assert message in line


def test_output_under_a_file(tmp_path, inputs):
    output = inputs["blocker"] / "lr.nii.gz"
    _fails_cleanly(inputs["blocker"].parent, ["simulate", inputs["good"], "-o", output], str(output), output)
    assert inputs["blocker"].is_file()


def test_output_in_unwritable_place(tmp_path, inputs):
    """/proc refuses new files even to root (for whom chmod-protected folders are writable)."""
    if not Path("/proc/self").exists():
        pytest.skip("no /proc on this system")
    output = Path("/proc/mrisr-test-lr.nii.gz")
    _fails_cleanly(tmp_path, ["simulate", inputs["good"], "-o", output], str(output), output)


@pytest.mark.parametrize("spelling", ["same", "relative", "symlink"])
def test_output_equal_to_input(tmp_path, inputs, monkeypatch, spelling):
    good = inputs["good"]
    before = good.read_bytes()
    output = str(good)
    if spelling == "relative":
        monkeypatch.chdir(good.parent)
        output = good.name
    elif spelling == "symlink":
        link = tmp_path / "link.nii.gz"
        link.symlink_to(good)
        output = str(link)
    result = runner.invoke(app, ["simulate", str(good), "-o", output])
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "same as the input" in lines[0] and output in lines[0]
    assert good.read_bytes() == before  # the input is untouched


def test_output_is_a_folder_or_unknown_format(tmp_path, inputs):
    folder_output = tmp_path / "a_folder"
    folder_output.mkdir()
    _fails_cleanly(tmp_path, ["simulate", inputs["good"], "-o", folder_output], str(folder_output), folder_output / "x")
    png = tmp_path / "lr.png"
    line = _fails_cleanly(tmp_path, ["simulate", inputs["good"], "-o", png], str(png), png)
    assert ".nii.gz" in line
