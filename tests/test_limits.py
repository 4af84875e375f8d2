"""Bounds on every numeric option: out-of-range values are one-line errors naming the option (never a
run that does not end, a silent no-op, a 2x2 "image" or a terabyte allocation), and nothing is written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.limits import cpu_count

runner = CliRunner()


@pytest.fixture
def case(phantom_files):
    return phantom_files


#: a value outside its fixed range is a usage error (exit 2); one that does not fit the given image
#: (too small a k-space fraction of this matrix, too large a grid for this series) a failed run (exit 1)
FITS_THE_IMAGE = ("2x2", "HR grid")


def _refused(tmp_path, args, *fragments) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    expected = 1 if any(marker in fragment for fragment in fragments for marker in FITS_THE_IMAGE) else 2
    assert result.exit_code == expected, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
    return lines[0]


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["--matrix", "100000", "100000"], ["--matrix 100000 100000", "2..4096"]),
        (["--matrix", "1000", "1000"], ["HR grid 1000x1000x8", "more than 16x"]),
        (["--tile", "0", "0", "0"], ["--tile 0 0 0"]),
        (["--tile", "1", "1", "1"], ["--tile 1 1 1", "16..4096"]),
        (["--threads", "0"], ["--threads 0"]),
        (["--threads", "-1"], ["--threads -1"]),
        (["--threads", "1000"], ["--threads 1000", f"{cpu_count()} CPU core(s)"]),
        (["--finetune", "--finetune-minutes", "nan"], ["--finetune-minutes nan"]),
        (["--finetune", "--finetune-minutes", "0"], ["--finetune-minutes 0"]),
    ],
)
def test_reconstruct_options(case, tmp_path, options, fragments):
    _refused(tmp_path, ["reconstruct", case["lr"], "--prior", case["planning"], "--model", case["tiny"],
                        "-o", tmp_path / "sr.nii.gz", "--quiet", *options], *fragments)


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["--minutes", "0"], ["--minutes 0"]),
        (["--minutes", "-1"], ["--minutes -1"]),
        (["--minutes", "nan"], ["--minutes nan"]),
        (["--steps", "-1"], ["--steps -1"]),
        (["--steps", "0"], ["--steps 0"]),
        (["--lr", "nan"], ["--lr nan"]),
        (["--lr", "-1"], ["--lr -1"]),
        (["--threads", "0"], ["--threads 0"]),
        (["--keep", "1e-9"], ["--keep 1e-09", "2x2", "24x24"]),
    ],
)
def test_finetune_options(case, tmp_path, options, fragments):
    keep = [] if "--keep" in options else ["--keep", "25"]
    _refused(tmp_path, ["finetune", "--planning", case["planning"], *keep, "--model", case["tiny"],
                        "-o", tmp_path / "m.safetensors", "--quiet", *options], *fragments)


def test_simulate_and_phantom_bounds(case, tmp_path):
    _refused(tmp_path, ["simulate", case["hr"], "-o", tmp_path / "lr.nii.gz", "--keep", "1e-9"], "--keep 1e-09", "2x2")
    _refused(tmp_path, ["phantom", "--source", case["planning"], "-o", tmp_path / "ph", "--frames", "100000"],
             "--frames 100000", "1..10000")
    _refused(tmp_path, ["phantom", "--source", case["planning"], "-o", tmp_path / "ph", "--keep", "1e-9"], "keep 1e-09", "2x2")


def test_memory_bound_names_the_need_and_what_is_available():
    from mrisr.io import MrisrInputError
    from mrisr.io.checks import available_memory, check_fits_memory

    free = available_memory()
    check_fits_memory(free // 4, "small", "no fix needed")
    with pytest.raises(MrisrInputError, match=r"big: needs about .* GB of memory, more than the .* available; crop"):
        check_fits_memory(free * 2, "big", "crop it")
