"""The write guard: no command writes over a file it reads (same path, symbolic or hard link), nothing
is written outside a confined folder, and partials of dead writers are removed by the next write."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.io import MrisrInputError, file_sha256, load, save_like
from mrisr.io.guard import check_target, partial_file, remove_stale_partials, write_scope

runner = CliRunner()


@pytest.fixture
def case(phantom_files):
    return phantom_files


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def _snapshot(folder):
    return {p.name: file_sha256(p) for p in folder.iterdir() if p.is_file()}


# ------------------------------------------------------------------ the guard itself


def test_same_path_symlink_and_hard_link_are_refused(tmp_path, tiny_volume):
    source = save_like(tmp_path / "in.nii.gz", tiny_volume.data, tiny_volume)
    (tmp_path / "link.nii.gz").symlink_to(source)
    os.link(source, tmp_path / "hard.nii.gz")
    before = file_sha256(source)
    with write_scope(inputs=[source]):
        for target, how in [(source, "same as the input"), (tmp_path / "link.nii.gz", "symbolic link"),
                            (tmp_path / "hard.nii.gz", "hard link"), (tmp_path / "sub" / ".." / "in.nii.gz", "same")]:
            with pytest.raises(MrisrInputError, match=how) as exc:
                save_like(target, tiny_volume.data + 1, tiny_volume)
            assert "\n" not in str(exc.value) and "choose another name" in str(exc.value)
        save_like(tmp_path / "other.nii.gz", tiny_volume.data, tiny_volume)  # anything else is fine
    assert file_sha256(source) == before
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_files_loaded_in_a_scope_become_inputs(tmp_path, tiny_volume):
    source = save_like(tmp_path / "in.nii.gz", tiny_volume.data, tiny_volume)
    save_like(tmp_path / "in.nii.gz", tiny_volume.data, tiny_volume)  # outside any scope: a plain overwrite
    with write_scope():
        load(source)
        with pytest.raises(MrisrInputError, match="same as the input"):
            save_like(source, tiny_volume.data, tiny_volume)


def test_a_confined_scope_refuses_links_out_of_its_folder(tmp_path, tiny_volume):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sub-01").symlink_to(elsewhere, target_is_directory=True)
    with write_scope(confine_to=out):
        save_like(out / "fine.nii.gz", tiny_volume.data, tiny_volume)
        with pytest.raises(MrisrInputError, match="outside the output folder"):
            check_target(out / "sub-01" / "x.nii.gz")
    assert list(elsewhere.iterdir()) == []


def test_stale_partials_of_dead_writers_are_removed_live_ones_kept(tmp_path, tiny_volume):
    target = tmp_path / "out.nii.gz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".out.nii.gz.{dead_pid}.abcd1234.partial"
    old_style = tmp_path / ".out.nii.gz.x1y2.partial"
    live = tmp_path / f".out.nii.gz.{os.getpid()}.zzzz9999.partial"
    other = tmp_path / f".other.nii.gz.{dead_pid}.abcd1234.partial"
    for path in (stale, old_style, live, other):
        path.write_bytes(b"half")
    assert set(remove_stale_partials(target)) == {stale, old_style}
    assert live.exists() and other.exists()
    tmp = partial_file(target)
    assert tmp.name.startswith(f".out.nii.gz.{os.getpid()}.") and ".partial" in tmp.name
    tmp.unlink()


# ------------------------------------------------------------------ the commands of the report


def test_finetune_never_writes_over_its_base_model(case, tmp_path):
    base = shutil.copy(case["tiny"], tmp_path / "base.safetensors")
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["finetune", "--planning", str(case["planning"]), "--keep", "25", "--model", str(base),
                                 "-o", str(base), "--steps", "1", "--quiet"])
    line = _one_error_line(result)
    assert str(base) in line and "same as the input" in line
    assert _snapshot(tmp_path) == before


def test_finetune_refuses_a_hard_link_to_the_planning_scan(case, tmp_path):
    planning = shutil.copy(case["planning"], tmp_path / "planning.nii.gz")
    os.link(planning, tmp_path / "m.safetensors")
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["finetune", "--planning", str(planning), "--keep", "25", "--model", str(case["tiny"]),
                                 "-o", str(tmp_path / "m.safetensors"), "--steps", "1", "--quiet"])
    assert "hard link" in _one_error_line(result)
    assert _snapshot(tmp_path) == before


def test_phantom_never_writes_over_its_source(case, tmp_path):
    source = shutil.copy(case["planning"], tmp_path / "planning.nii.gz")
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["phantom", "--source", str(source), "-o", str(tmp_path), "--frames", "2"])
    line = _one_error_line(result)
    assert "planning.nii.gz" in line and "same as the input" in line
    assert _snapshot(tmp_path) == before


def test_reconstruct_finetune_never_replaces_the_model_it_reads(case, tmp_path):
    model = shutil.copy(case["tiny"], tmp_path / "sr_model.safetensors")
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["reconstruct", str(case["lr"]), "--prior", str(case["planning"]), "--model", str(model),
                                 "--finetune", "--finetune-minutes", "0.01", "-o", str(tmp_path / "sr.nii.gz"),
                                 "--quiet"])
    line = _one_error_line(result)
    assert "sr_model.safetensors" in line and "same as the input" in line
    assert _snapshot(tmp_path) == before


def test_reconstruct_output_through_a_symlink_to_the_input_is_refused(case, tmp_path):
    dynamic = shutil.copy(case["lr"], tmp_path / "scan.nii.gz")
    (tmp_path / "alias.nii.gz").symlink_to(dynamic)
    before = file_sha256(dynamic)
    result = runner.invoke(app, ["reconstruct", str(dynamic), "--prior", str(case["planning"]), "--model",
                                 str(case["tiny"]), "-o", str(tmp_path / "alias.nii.gz"), "--quiet"])
    assert "symbolic link" in _one_error_line(result)
    assert file_sha256(dynamic) == before


def test_remove_own_partials_sweeps_this_processs_temporary_files_only(tmp_path):
    """After an interruption the CLI sweeps the temporary files this process left (a signal can land
    between a file's creation and its writer's ``try``); other processes' files stay."""
    from mrisr.io.guard import partial_file, remove_own_partials

    mine = partial_file(tmp_path / "a.json")
    other = tmp_path / ".b.json.999999999.abcd.partial"
    other.write_text("x")
    final = tmp_path / "c.json"
    final.write_text("{}")
    removed = remove_own_partials()
    assert mine in removed and not mine.exists()
    assert other.exists() and final.exists()
