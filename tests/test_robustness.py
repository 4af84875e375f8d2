"""Hostile and careless inputs, one class of promise each (the cases of issue 32; the full probe is
``benchmarks/robustness.py``): one header check for every volume format, one safe config loader,
manifests parsed as CSV, one output-location rule for every batch input form, bounded work, one
writer per phantom folder, no leftovers and the exit codes of docs/cli.md."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.io import MrisrInputError, load

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def _probe():
    """The probe's builders of raw headers (NIfTI-1/2, MetaImage, NRRD) and tiny datasets."""
    spec = importlib.util.spec_from_file_location("mrisr_robustness_probe", REPO / "benchmarks" / "robustness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


probe = _probe()
VOLUME = probe.phantom_volume()  # (24, 20, 6) float32


def _refused_at_load(path: Path, *fragments: str) -> str:
    with pytest.raises(MrisrInputError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- one header check, every format


def test_nifti2_gets_every_nifti1_check(tmp_path):
    _refused_at_load(probe.raw_image(tmp_path / "huge.nii", probe.nifti2_header(dims=(1000, 1000, 1000)), b"\0" * 8),
                     "1000x1000x1000", "holds only")
    payload = np.ones(VOLUME.shape, np.complex64).tobytes(order="F")
    _refused_at_load(probe.raw_image(tmp_path / "c.nii", probe.nifti2_header(datatype=32, bitpix=64), payload),
                     "complex")
    _refused_at_load(probe.raw_image(tmp_path / "z.nii", probe.nifti2_header(pixdim=(0.0, 1.0, 1.0)),
                                     VOLUME.tobytes(order="F")), "voxel size")


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"datatype": 999}, "type code 999"),
    ({"vox_offset": float("nan")}, "vox_offset"),
    ({"vox_offset": float("inf")}, "vox_offset"),
])
def test_nifti1_header_values_that_ended_in_tracebacks(tmp_path, fields, fragment):
    path = probe.raw_image(tmp_path / "x.nii", probe.nifti1_header(**fields), VOLUME.tobytes(order="F"))
    _refused_at_load(path, fragment)


def test_detached_data_files_must_lie_beside_their_header(tmp_path):
    inner = tmp_path / "inner"
    inner.mkdir()
    (tmp_path / "secret.raw").write_bytes(VOLUME.tobytes(order="F"))
    _refused_at_load(probe.mhd(inner / "up.mhd", "../secret.raw"), "outside the header's folder")
    _refused_at_load(probe.mhd(inner / "abs.mhd", str(tmp_path / "secret.raw")), "outside the header's folder")
    _refused_at_load(probe.nhdr(inner / "up.nhdr", "../secret.raw"), "outside the header's folder")
    for z in range(6):
        (inner / f"s{z}.raw").write_bytes(VOLUME[..., z].tobytes(order="F"))
    names = "\n".join(f"s{z}.raw" if z != 3 else "../secret.raw" for z in range(6))
    _refused_at_load(probe.mhd(inner / "list.mhd", "LIST 2D", extra_lines=names + "\n"), "outside")
    # the same slices beside the header, as a pattern: read
    loaded = load(probe.mhd(inner / "pattern.mhd", "s%d.raw 0 5 1"))
    assert np.allclose(loaded.data, VOLUME)


def test_detached_data_size_is_checked_before_reading(tmp_path):
    (tmp_path / "small.raw").write_bytes(b"\0" * 64)
    _refused_at_load(probe.mhd(tmp_path / "big.mhd", "small.raw", dims=(512, 512, 512)), "holds only")
    _refused_at_load(probe.nhdr(tmp_path / "big.nhdr", "small.raw", dims=(512, 512, 512)), "holds only")


def test_metaimage_and_nrrd_geometry_that_itk_reads_as_zero(tmp_path):
    _refused_at_load(probe.mha(tmp_path / "o.mha", VOLUME, offset="inf 0 0"), "offset", "finite")
    _refused_at_load(probe.mha(tmp_path / "s.mha", VOLUME, spacing="0 1 2"), "voxel size")


@pytest.mark.parametrize("writer", ["mha", "nrrd_attached"])
def test_4d_metaimage_and_nrrd_are_streamed(tmp_path, writer):
    series = np.stack([VOLUME * (t + 1) for t in range(5)], axis=-1)
    if writer == "mha":
        path = probe.mha(tmp_path / "s.mha", series, spacing="1 1 2 0.5", offset="0 0 0 0")
    else:
        path = probe.nrrd_attached(tmp_path / "s.nrrd", series)
    volume = load(path, lazy=True)
    assert not isinstance(volume.data, np.ndarray)  # on disk, frames read on demand
    assert volume.n_frames == 5
    assert np.array_equal(volume.frame(3), series[..., 3])
    assert np.array_equal(load(path).data, series)  # the eager read agrees


def test_special_files_are_refused_without_opening_them(tmp_path):
    fifo = tmp_path / "pipe.nii"
    os.mkfifo(fifo)
    _refused_at_load(fifo, "not a regular file")  # opening a FIFO would block forever
    (tmp_path / "zero.nii").symlink_to("/dev/zero")
    _refused_at_load(tmp_path / "zero.nii", "not a regular file")
    (tmp_path / "a.nii").symlink_to(tmp_path / "b.nii")
    (tmp_path / "b.nii").symlink_to(tmp_path / "a.nii")
    _refused_at_load(tmp_path / "a.nii", "cannot be opened")


# ---------------------------------------------------------------- one safe config loader


def test_yaml_alias_bomb_is_refused_in_every_reader(tmp_path):
    from mrisr.batch.config import load_batch_config
    from mrisr.training.config import apply_overrides, load_config

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(probe.ALIAS_BOMB)
    with pytest.raises(MrisrInputError, match="YAML aliases"):
        load_batch_config(bomb)
    with pytest.raises(MrisrInputError, match="YAML aliases"):
        load_config(bomb)
    value = "{" + probe.ALIAS_BOMB.replace("\n", ", ").rstrip(", ") + "}"
    with pytest.raises(MrisrInputError, match="YAML aliases") as info:
        apply_overrides({}, [f"optim.steps={value}"])
    assert len(str(info.value)) < 300  # the value is quoted, not expanded


def test_config_size_and_quoted_values_are_bounded(tmp_path):
    from mrisr.batch.config import load_batch_config

    huge = tmp_path / "huge.yaml"
    huge.write_text("desc: sr\n" + "# padding\n" * 200_000)
    with pytest.raises(MrisrInputError, match="more than the"):
        load_batch_config(huge)
    long_value = tmp_path / "long.yaml"
    long_value.write_text("desc: " + "x-" * 20_000 + "\n")
    with pytest.raises(MrisrInputError) as info:
        load_batch_config(long_value)
    assert len(str(info.value)) < 400, len(str(info.value))


def test_manifest_quoted_newline_is_not_another_subject(tmp_path):
    from mrisr.batch import discover
    from mrisr.batch.cohort import BatchValidationError

    probe.write_nifti(tmp_path / "plan.nii.gz", probe.phantom_volume((32, 32, 4)))
    probe.write_nifti(tmp_path / "dyn.nii.gz", np.stack([probe.phantom_volume((8, 8, 4))] * 2, -1))
    manifest = tmp_path / "m.csv"
    manifest.write_text('subject,dynamic,planning\n01,dyn.nii.gz,"plan.nii.gz\n02,dyn.nii.gz,plan.nii.gz"\n')
    with pytest.raises(BatchValidationError, match="line break") as info:
        discover(manifest)
    # no problem reads "02" as a subject of its own (the paths are left out: pytest's numbered
    # temporary folders, e.g. pytest-202, may hold the digits)
    problems = [problem.replace(str(tmp_path), "<folder>") for problem in info.value.problems]
    assert any("line break" in problem for problem in problems)
    assert not any("02" in problem for problem in problems), problems


def test_nested_checkpoint_metadata_is_one_line(tmp_path):
    from safetensors.numpy import save_file

    from mrisr.models.checkpoint import read_metadata

    for extra in ({"normalisation": 99.5}, {"training": {"config": {"loss": ["tissue"]}}}, {"training": [1]},
                  {"arguments": {"prior_input": ["prior"]}}):
        meta = {"format": "mrisr-checkpoint", "format_version": 1, "architecture": "prior-sr-unet",
                "arguments": {"use_prior": True}}
        for key, value in extra.items():
            meta[key] = {**meta[key], **value} if key == "arguments" else value
        path = tmp_path / "bad.safetensors"
        save_file({"w": np.zeros(1, np.float32)}, str(path), metadata={"mrisr": json.dumps(meta)})
        with pytest.raises(MrisrInputError, match="checkpoint"):
            read_metadata(path)


# ---------------------------------------------------------------- one output-location rule


@pytest.mark.parametrize("target", ["root", "func", "inputs"])
def test_no_batch_writes_into_a_raw_dataset_or_an_input_folder(tmp_path, target):
    from mrisr.batch import validate_batch
    from mrisr.batch.cohort import BatchValidationError

    root = probe.tiny_bids(tmp_path / "raw")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"subject,dynamic,planning\n01,{root}/sub-01/func/sub-01_task-rest_bold.nii.gz,"
                        f"{root}/sub-01/anat/sub-01_T1w.nii.gz\n")
    output = {"root": root, "func": root / "sub-01" / "func", "inputs": root / "sub-01"}[target]
    before = probe.snapshot(root)
    with pytest.raises(BatchValidationError, match="raw BIDS dataset|holds the input folder"):
        validate_batch(manifest, output, check_model=False)
    assert probe.snapshot(root) == before
    validate_batch(manifest, root / "derivatives" / "mrisr", check_model=False)  # the BIDS place is fine


# ---------------------------------------------------------------- bounds, writers, leftovers, exit codes


def test_exit_codes_usage_2_failed_run_1(tmp_path, phantom_files):
    missing = runner.invoke(app, ["simulate", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "lr.nii.gz")])
    assert missing.exit_code == 1, missing.output
    assert missing.stderr.startswith("error: ") and len(missing.stderr.strip().splitlines()) == 1
    usage = runner.invoke(app, ["phantom", "-o", str(tmp_path / "ph"), "--frames", "0"])
    assert usage.exit_code == 2, usage.output
    demo = runner.invoke(app, ["demo", "-o", str(tmp_path / "demo"), "--frames", "2000"])
    assert demo.exit_code == 2 and not (tmp_path / "demo").exists(), demo.output


def test_a_failed_command_removes_the_folders_it_made(tmp_path, phantom_files):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    result = runner.invoke(app, ["simulate", str(bad), "-o", str(tmp_path / "new" / "deeper" / "lr.nii.gz")])
    assert result.exit_code == 1 and not (tmp_path / "new").exists(), result.output
    other = probe.write_nifti(tmp_path / "other.nii.gz", probe.phantom_volume((16, 16, 4)))
    result = runner.invoke(app, ["evaluate", str(other), str(phantom_files["hr"]),
                                 "-o", str(tmp_path / "new2" / "deeper" / "m.csv")])
    assert result.exit_code == 1 and not (tmp_path / "new2").exists(), result.output


def test_finetune_refuses_a_slab_too_thin_for_its_loss(tmp_path, phantom_files):
    slab = probe.write_nifti(tmp_path / "slab.nii.gz", probe.phantom_volume((32, 32, 1)))
    result = runner.invoke(app, ["finetune", "--planning", str(slab), "--keep", "25", "--model",
                                 str(phantom_files["tiny"]), "-o", str(tmp_path / "t.safetensors"), "--steps", "1",
                                 "--quiet"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "at least 8" in result.stderr


def test_a_second_writer_of_a_phantom_folder_is_refused(tmp_path):
    from mrisr.io.guard import folder_lock

    with folder_lock(tmp_path, "a phantom"):
        with pytest.raises(MrisrInputError, match="another process is writing"):
            with folder_lock(tmp_path, "a phantom"):
                pass
    with folder_lock(tmp_path, "a phantom"):  # released
        pass
    assert list(tmp_path.iterdir()) == []  # the lock leaves nothing behind
