"""The derivatives of `mrisr batch` against the official BIDS validator (``bids-validator-deno``, a
real subprocess, offline), and byte-reproducible batch results.

The source dataset is what a scanner export looks like: per subject an anatomical T1w planning
scan (``anat/*_T1w``) and functional bold dynamics (``func/*_bold``), one subject with a session
and two runs, one with a ground truth for the metrics. ``mrisr batch`` also runs as a subprocess.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mrisr_testdata import make_finetuning_improve
from test_batch_cohort import tiny_static

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
VALIDATOR = BIN / "bids-validator-deno"

# role -> path inside the dataset; the phantom file each is a copy of
FILES = {
    "sub-01/anat/sub-01_T1w.nii.gz": ("01", "planning"),
    "sub-01/func/sub-01_task-breath_bold.nii.gz": ("01", "lr"),
    "sub-01/func/sub-01_task-breath_acq-groundtruth_bold.nii.gz": ("01", "hr"),
    "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz": ("02", "planning"),
    "sub-02/ses-1/func/sub-02_ses-1_task-breath_run-1_bold.nii.gz": ("02", "lr"),
    "sub-02/ses-1/func/sub-02_ses-1_task-breath_run-2_bold.nii.gz": ("02b", "lr"),
}
SERIES = (
    "sub-01/func/sub-01_task-breath_desc-sr_bold",
    "sub-02/ses-1/func/sub-02_ses-1_task-breath_run-1_desc-sr_bold",
    "sub-02/ses-1/func/sub-02_ses-1_task-breath_run-2_desc-sr_bold",
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict[str, Path]:
    """A raw BIDS dataset of two subjects (T1w planning scans, bold dynamics) and a tiny model."""
    from mrisr.models import make_tiny_checkpoint
    from mrisr.phantom import make_dynamic

    root = tmp_path_factory.mktemp("bids-valid")
    static = tiny_static()
    phantoms = {
        key: make_dynamic(static, frames=2, keep=25.0, seed=seed, motion_mm=2.0).save(root / "phantoms" / key)
        for seed, key in enumerate(("01", "02", "02b"))
    }
    bids = root / "study"
    for name, (key, role) in FILES.items():
        (bids / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(phantoms[key][role], bids / name)
    (bids / "dataset_description.json").write_text(
        json.dumps({"Name": "breathing study", "BIDSVersion": "1.10.0", "Authors": ["A. Physicist", "B. Radiographer"]})
    )
    (bids / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    (bids / "task-breath_bold.json").write_text(json.dumps({"TaskName": "breath", "RepetitionTime": 0.5}))
    model = make_tiny_checkpoint(root / "tiny.safetensors", prior=True, seed=0)
    return {"bids": bids, "model": model, "root": root}


def mrisr(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(BIN / "mrisr"), *map(str, args)], capture_output=True, text=True, encoding="utf-8", env=env, timeout=600)


def validate(folder: Path) -> subprocess.CompletedProcess:
    """The official validator on ``folder``; exit 0 means no errors (warnings are allowed)."""
    assert VALIDATOR.is_file(), f"{VALIDATOR} missing: pip install -e '.[dev]'"
    return subprocess.run(
        [str(VALIDATOR), str(folder), "--format", "json"], capture_output=True, text=True, encoding="utf-8", timeout=300
    )


def errors(result: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    issues = json.loads(result.stdout)["issues"]["issues"]
    return [(issue["code"], issue.get("location", "")) for issue in issues if issue["severity"] == "error"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def without_timings(sidecar: dict) -> dict:
    """A sidecar less its documented wall-clock fields (:data:`mrisr.batch.derivatives.TIMING_KEYS`)."""
    from mrisr.batch.derivatives import TIMING_KEYS

    sidecar = json.loads(json.dumps(sidecar))
    for key in TIMING_KEYS:
        *parents, leaf = key.split(".")
        holder = sidecar
        for parent in parents:
            holder = holder[parent]
        del holder[leaf]
    return sidecar


def test_derivatives_pass_the_bids_validator_and_reruns_are_byte_identical(dataset):
    out = dataset["bids"] / "derivatives" / "mrisr"
    result = mrisr("batch", dataset["bids"], out, "--model", dataset["model"], "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "2 done" in result.stdout.splitlines()[-1]

    check = validate(out)
    assert check.returncode == 0 and errors(check) == [], (check.returncode, errors(check))
    # what made the validator fail before: our extra files, the required keys, README and Authors
    assert {"summary.tsv", "sub-*/log", "*_model.safetensors"} <= set((out / ".bidsignore").read_text().split())
    assert (out / "README.md").read_text().startswith("# mrisr super-resolution of breathing study")
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["Authors"] == ["A. Physicist", "B. Radiographer"]  # the source dataset's
    assert description["SourceDatasets"] == [{"URL": "bids:raw:"}]
    assert description["DatasetLinks"] == {"raw": "../.."}
    first = json.loads((out / f"{SERIES[0]}.json").read_text())
    assert first["SkullStripped"] is False
    # Sources: the real inputs only (the ground truth fed only the metrics), resolvable through DatasetLinks
    assert first["Sources"] == ["bids:raw:sub-01/func/sub-01_task-breath_bold.nii.gz", "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"]
    assert first["MrisrBatch"]["metrics"]["summary"]["ssim_tissue_mean"] > 0
    for source in first["Sources"]:
        assert (out / description["DatasetLinks"]["raw"] / source.removeprefix("bids:raw:")).is_file()
    for series in SERIES:
        with open(out / f"{series}.nii.gz", "rb") as handle:
            header = handle.read(10)
        # gzip: no FNAME flag (no temporary name), mtime 0
        assert header[3] & 0x08 == 0 and header[4:8] == b"\0\0\0\0", series

    # the same inputs and options again: identical bytes for every image and every non-timing field
    images = {series: sha256(out / f"{series}.nii.gz") for series in SERIES}
    sidecars = {series: json.loads((out / f"{series}.json").read_text()) for series in SERIES}
    fixed = {name: sha256(out / name) for name in ("dataset_description.json", "README.md", ".bidsignore")}
    again = mrisr("batch", dataset["bids"], out, "--model", dataset["model"], "--device", "cpu", "--force")
    assert again.returncode == 0 and "2 done" in again.stdout, again.stderr
    assert {series: sha256(out / f"{series}.nii.gz") for series in SERIES} == images
    for series in SERIES:
        rerun = json.loads((out / f"{series}.json").read_text())
        assert rerun["MrisrBatch"]["timings"]["finished"]
        assert without_timings(rerun) == without_timings(sidecars[series]), series
    assert {name: sha256(out / name) for name in fixed} == fixed

    # the raw dataset and its derivatives moved together: the links still resolve
    moved = dataset["root"] / "moved" / "study"
    shutil.copytree(dataset["bids"], moved)
    link = json.loads((moved / "derivatives" / "mrisr" / "dataset_description.json").read_text())["DatasetLinks"]["raw"]
    assert (moved / "derivatives" / "mrisr" / link).resolve() == moved.resolve()


def test_finetuned_derivatives_with_configured_authors_pass_the_validator(dataset, tmp_path, monkeypatch):
    """In-process (typer's runner), so fine-tuning can be made to improve: a few seconds at the
    bundled rate do not beat the untrained tiny model, and then no subject model is written."""
    from typer.testing import CliRunner

    from mrisr.cli import app

    make_finetuning_improve(monkeypatch)
    config = tmp_path / "batch.yaml"
    config.write_text("authors: [C. Scientist, D. Engineer]\nreconstruct:\n  finetune: true\n  finetune_minutes: 5\n")
    out = tmp_path / "derivatives"
    result = CliRunner().invoke(app, ["batch", str(dataset["bids"]), str(out), "--model", str(dataset["model"]), "--device",
                                      "cpu", "--config", str(config), "--participant-label", "01", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (out / "sub-01" / "func" / "sub-01_task-breath_desc-finetuned_model.safetensors").is_file()
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["Authors"] == ["C. Scientist", "D. Engineer"]
    # outside the source dataset: a relative link all the same
    assert (out / description["DatasetLinks"]["raw"]).resolve() == dataset["bids"].resolve()
    check = validate(out)
    assert check.returncode == 0 and errors(check) == [], (check.returncode, errors(check))


def test_maps_derivatives_pass_the_validator(dataset, tmp_path):
    config = tmp_path / "batch.yaml"
    config.write_text("reconstruct:\n  method: keyhole-registered\n  maps: true\n")
    out = tmp_path / "derivatives"
    result = mrisr("batch", dataset["bids"], out, "--device", "cpu", "--config", config, "--participant-label", "01",
                   "--quiet")
    assert result.returncode == 0, result.stderr
    folder = out / "sub-01" / "func"
    sr = folder / "sub-01_task-breath_desc-sr_bold.nii.gz"
    sidecar = json.loads((folder / "sub-01_task-breath_desc-sr_bold.json").read_text())
    assert sidecar["method"] == "keyhole-registered" and sidecar["model"] is None
    block = sidecar["MrisrBatch"]["maps"]
    for name in ("disagreement", "unmeasured"):
        image = folder / f"sub-01_task-breath_desc-{name}_bold.nii.gz"
        assert block["files"][name]["sha256"] == sha256(image)
        meta = json.loads(image.with_name(image.name.replace(".nii.gz", ".json")).read_text())
        assert meta["Sources"] == ["bids::sub-01/func/sub-01_task-breath_desc-sr_bold.nii.gz"]
        assert (out / meta["Sources"][0].removeprefix("bids::")) == sr
        from mrisr.io import load

        assert load(image).data.shape == load(sr).data.shape
    # summary.tsv: the largest data-consistency residual of the subject's frames
    with open(out / "summary.tsv") as handle:
        row = next(csv.DictReader(handle, delimiter="\t"))
    assert float(row["max_consistency_nrmse"]) == pytest.approx(block["max_consistency_nrmse"], abs=1e-4)
    check = validate(out)
    assert check.returncode == 0 and errors(check) == [], (check.returncode, errors(check))
    # up to date on a second run; a missing map reruns the subject
    again = mrisr("batch", dataset["bids"], out, "--device", "cpu", "--config", config, "--participant-label", "01")
    assert "1 skipped" in again.stdout, again.stdout
    (folder / "sub-01_task-breath_desc-unmeasured_bold.nii.gz").unlink()
    again = mrisr("batch", dataset["bids"], out, "--device", "cpu", "--config", config, "--participant-label", "01")
    assert "1 done" in again.stdout, again.stdout
    assert (folder / "sub-01_task-breath_desc-unmeasured_bold.nii.gz").is_file()
