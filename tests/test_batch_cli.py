"""`mrisr batch` end to end on the tiny 3-subject cohort (real NIfTI files, the tiny model): BIDS
derivatives layout, sidecars, summary.tsv, resume, reruns on changed options and inputs, failure
isolation (also in worker processes), interrupted runs, fine-tuning and up-front validation."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from mrisr_testdata import make_finetuning_improve
from test_batch_cohort import LABELS, bids_names, build_cohort, truncate
from typer.testing import CliRunner

import mrisr
from mrisr.cli import app
from mrisr.io import load, save_like
from mrisr.metrics import SCORE_COLUMNS, score_frames, summarise

runner = CliRunner()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict[str, Path]:
    return build_cohort(tmp_path_factory.mktemp("batch-cli"))


def batch(*args) -> object:
    return runner.invoke(app, ["batch", *[str(a) for a in args]])


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def summary(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert list(rows[0]) == ["subject", "status", "seconds", "frames", "ssim_tissue_mean", "psnr_tissue_mean",
                             "ssim_whole_mean", "max_consistency_nrmse", "error"]
    return {row["subject"]: row for row in rows}


def statuses(out: Path) -> dict[str, str]:
    return {label: row["status"] for label, row in summary(out).items()}


def sr_path(out: Path, label: str) -> Path:
    return out / f"sub-{label}" / "func" / f"sub-{label}_task-dynamic_desc-sr_bold.nii.gz"


def sidecar(out: Path, label: str) -> dict:
    return json.loads(sr_path(out, label).with_name(f"sub-{label}_task-dynamic_desc-sr_bold.json").read_text())


def no_partials(out: Path) -> bool:
    return not [p for p in out.rglob("*") if ".partial" in p.name or p.name.startswith(".mrisr-write-test")]


def test_bids_cohort_end_to_end_resume_and_reruns(cohort, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(cohort["bids"], bids)
    out = tmp_path / "derivatives" / "mrisr"
    common = ("--model", cohort["model"], "--device", "cpu")

    result = batch(bids, out, *common)
    assert result.exit_code == 0, result.output
    assert "3 done, 0 skipped (up to date), 0 failed" in result.stdout

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"]
    assert (description["GeneratedBy"][0]["Name"], description["GeneratedBy"][0]["Version"]) == (
        "mrisr",
        mrisr.__version__,
    )
    # the source dataset is linked relatively: moving the two together keeps the link
    assert description["SourceDatasets"] == [{"URL": "bids:raw:"}]
    assert (out / description["DatasetLinks"]["raw"]).resolve() == bids.resolve()

    rows = summary(out)
    model_sha = sha256(cohort["model"])
    for label in LABELS:
        names = bids_names(label)
        predicted, truth = load(sr_path(out, label)), load(bids / names["hr"])
        # SR on the planning scan's grid: the ground truth's shape, affine and TR
        assert predicted.data.shape == truth.data.shape == (24, 24, 8, 3)
        np.testing.assert_allclose(predicted.affine, truth.affine, atol=1e-4)
        assert predicted.tr == pytest.approx(0.5)

        meta = sidecar(out, label)
        # the ground truth only feeds the metrics: not a source of the SR series
        assert meta["Sources"] == [f"bids:raw:{names['lr']}", f"bids:raw:{names['planning']}"]
        assert meta["SkullStripped"] is False
        assert meta["RepetitionTime"] == pytest.approx(0.5)
        block = meta["MrisrBatch"]
        for role, key in (("dynamic", "lr"), ("planning", "planning"), ("ground_truth", "hr")):
            assert block["inputs"][role]["sha256"] == sha256(bids / names[key])
        assert block["model"]["sha256"] == model_sha
        assert block["options"]["prior_mode"] == "tracked" and block["runtime"]["device"] == "cpu"
        assert block["output"]["sha256"] == sha256(sr_path(out, label))
        assert block["frames"] == 3 and len(block["timings"]["frame_s"]) == 3 and block["timings"]["total_s"] > 0
        expected = summarise(score_frames(predicted.data, truth.data), SCORE_COLUMNS)
        assert block["metrics"]["summary"]["ssim_tissue_mean"] == pytest.approx(expected["ssim_tissue_mean"])

        row = rows[label]
        assert (row["status"], row["frames"], row["error"]) == ("done", "3", "n/a")
        assert float(row["ssim_tissue_mean"]) == pytest.approx(expected["ssim_tissue_mean"], abs=1e-4)
        assert float(row["psnr_tissue_mean"]) == pytest.approx(expected["psnr_tissue_mean"], abs=1e-4)
        assert float(row["ssim_whole_mean"]) == pytest.approx(expected["ssim_whole_mean"], abs=1e-4)
        assert row["max_consistency_nrmse"] == "n/a"  # maps off
        assert 0.5 < float(row["ssim_tissue_mean"]) <= 1.0
        log = (out / f"sub-{label}" / "log" / f"sub-{label}_mrisr.log").read_text()
        assert "frame 3/3" in log and f"sub-{label} done" in log
    assert no_partials(out)

    # second run: everything is up to date, nothing is rewritten
    written = {p: p.stat().st_mtime_ns for p in out.rglob("sub-*_desc-sr_bold.*")}
    result = batch(bids, out, *common)
    assert result.exit_code == 0, result.output
    assert "0 done, 3 skipped (up to date), 0 failed" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("sub-*_desc-sr_bold.*")} == written
    assert statuses(out) == dict.fromkeys(LABELS, "skipped")
    assert summary(out)["01"]["ssim_tissue_mean"] == rows["01"]["ssim_tissue_mean"]

    # a changed option reruns every subject; the same option again skips them
    config = tmp_path / "previous-prior.yaml"
    config.write_text("reconstruct:\n  prior_mode: previous\n")
    result = batch(bids, out, *common, "--config", config)
    assert "3 done, 0 skipped" in result.stdout, result.output
    assert sidecar(out, "01")["MrisrBatch"]["options"]["prior_mode"] == "previous"
    result = batch(bids, out, *common, "--config", config, "--quiet")
    assert "0 done, 3 skipped" in result.stdout, result.output

    # deleting one subject's output reruns only that subject
    sr_path(out, "02").unlink()
    result = batch(bids, out, *common, "--config", config)
    assert "1 done, 2 skipped" in result.stdout, result.output
    assert statuses(out) == {"01": "skipped", "02": "done", "03": "skipped"}

    # a changed input (new planning scan) reruns only that subject
    planning = load(bids / bids_names("03")["planning"])
    save_like(bids / bids_names("03")["planning"], np.asarray(planning.data) * 1.1, planning)
    result = batch(bids, out, *common, "--config", config)
    assert "1 done, 2 skipped" in result.stdout, result.output
    assert statuses(out) == {"01": "skipped", "02": "skipped", "03": "done"}
    assert sidecar(out, "03")["MrisrBatch"]["inputs"]["planning"]["sha256"] == sha256(
        bids / bids_names("03")["planning"]
    )

    # --force recomputes up-to-date subjects
    result = batch(bids, out, *common, "--config", config, "--force", "--participant-label", "01")
    assert "1 done, 0 skipped" in result.stdout, result.output


def test_interrupted_runs_leave_nothing_corrupt_and_resume(cohort, tmp_path):
    out = tmp_path / "out"
    common = ("--model", cohort["model"], "--device", "cpu", "--quiet")
    assert batch(cohort["bids"], out, *common).exit_code == 0
    # killed while sub-01's series was being rewritten: its old sidecar was already removed and a
    # temporary file of the library's atomic writer is left behind
    marker = sr_path(out, "01").with_name("sub-01_task-dynamic_desc-sr_bold.json")
    marker.unlink()
    (sr_path(out, "01").parent / ".sub-01_task-dynamic_desc-sr_bold.nii.gz.x1y2.partial").write_bytes(b"\x1f\x8b half")
    # killed after the library's own sidecar, before the batch provenance: no completion marker
    meta = sidecar(out, "02")
    del meta["MrisrBatch"]
    sr_path(out, "02").with_name("sub-02_task-dynamic_desc-sr_bold.json").write_text(json.dumps(meta))

    result = batch(cohort["bids"], out, *common)
    assert result.exit_code == 0, result.output
    assert "2 done, 1 skipped" in result.stdout
    assert statuses(out) == {"01": "done", "02": "done", "03": "skipped"}
    assert no_partials(out)
    for label in LABELS:
        assert load(sr_path(out, label)).data.shape == (24, 24, 8, 3)
        assert sidecar(out, label)["MrisrBatch"]["fingerprint"]


@pytest.mark.parametrize("field", ["sparse_changes", "match_contrast", "denoise_prior"])
def test_recipe_gate_options_reach_the_library(cohort, tmp_path, field):
    """``reconstruct.sparse_changes: false`` (``match_contrast: false``, ``denoise_prior: false``) in the
    recipe gives the library's result with that option off, which differs from the default's (the
    subject's planning scan is given another contrast so that the contrast map applies, or noise of
    its own so that the filter does)."""
    from mrisr.inserts import swap_contrast
    from mrisr.reconstruct import ReconstructOptions, reconstruct_volume

    bids = tmp_path / "bids"
    shutil.copytree(cohort["bids"], bids)
    names = bids_names("01")
    if field == "match_contrast":
        planning = load(bids / names["planning"])
        save_like(bids / names["planning"], swap_contrast(np.asarray(planning.data)), planning)
    if field == "denoise_prior":
        planning = load(bids / names["planning"])
        data = np.asarray(planning.data, dtype=np.float32)
        rng = np.random.default_rng(0)
        sigma = 0.1 * float(data[data > 0.1 * data.max()].mean())
        noisy = np.hypot(data + rng.normal(0, sigma, data.shape), rng.normal(0, sigma, data.shape))
        save_like(bids / names["planning"], noisy.astype(np.float32), planning)
    config = tmp_path / "off.yaml"
    config.write_text(f"reconstruct:\n  method: keyhole-gated\n  {field}: false\n")
    out = tmp_path / "out"
    result = batch(bids, out, "--config", config, "--participant-label", "01", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    written = load(sr_path(out, "01")).data
    lr, planning = load(bids / names["lr"]), load(bids / names["planning"])
    off = reconstruct_volume(lr, planning, ReconstructOptions(method="keyhole-gated", **{field: False})).data
    on = reconstruct_volume(lr, planning, ReconstructOptions(method="keyhole-gated")).data
    np.testing.assert_allclose(written, off, rtol=1e-5, atol=1e-4 * float(np.abs(off).max()))
    assert np.abs(on - off).max() > 1e-3 * float(np.abs(off).max())


def test_manifest_cohort_with_participant_labels(cohort, tmp_path):
    out = tmp_path / "out"
    common = ("--model", cohort["model"], "--device", "cpu")
    result = batch(cohort["manifest"], out, "--participant-label", "01", "sub-03", *common)
    assert result.exit_code == 0, result.output
    assert "2 done" in result.stdout
    # non-BIDS input names: outputs named from the subject column
    series = out / "sub-01" / "func" / "sub-01_desc-sr_bold.nii.gz"
    assert load(series).data.shape == (24, 24, 8, 3)
    meta = json.loads(series.with_name("sub-01_desc-sr_bold.json").read_text())
    assert meta["Sources"][0] == "bids:raw:phantoms/s01/dynamic_lr.nii.gz"
    assert meta["MrisrBatch"]["inputs"]["dynamic"]["sha256"] == sha256(cohort["phantoms"] / "s01" / "dynamic_lr.nii.gz")
    assert set(summary(out)) == {"01", "03"}
    # a later run over another participant keeps the earlier rows
    result = batch(cohort["manifest"], out, "--participant-label", "02", *common)
    assert "1 done" in result.stdout, result.output
    assert statuses(out) == {"01": "done", "02": "done", "03": "done"}


def test_corrupt_subjects_fail_alone_in_parallel_workers(cohort, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(cohort["bids"], bids)
    # sub-02: a truncated copy (caught while its inputs are hashed, before any model is loaded)
    truncated = bids / bids_names("02")["lr"]
    truncate(truncated)
    # sub-03: a readable series whose last frame holds NaN (fails in a worker, mid-series)
    broken = bids / bids_names("03")["lr"]
    series = load(broken)
    data = np.asarray(series.data, dtype=np.float32).copy()
    data[2, 3, 1, 2] = np.nan
    save_like(broken, data, series)
    out = tmp_path / "out"
    common = ("--model", cohort["model"], "--device", "cpu")

    result = batch(bids, out, *common, "--jobs", "2")
    assert result.exit_code == 1, result.output
    assert "1 done, 0 skipped (up to date), 2 failed" in result.stdout
    rows = summary(out)
    assert rows["01"]["status"] == "done" and sr_path(out, "01").exists()
    assert rows["02"]["status"] == rows["03"]["status"] == "failed"
    assert rows["02"]["frames"] == rows["03"]["frames"] == "n/a"
    assert str(truncated) in rows["02"]["error"] and "truncated .gz file" in rows["02"]["error"]
    assert str(broken) in rows["03"]["error"] and "frame 2 contains NaN/Inf" in rows["03"]["error"]
    assert "sub-02" in result.stderr and "sub-03" in result.stderr
    # nothing half-written: the failing worker had written two frames when it stopped
    assert not sr_path(out, "02").exists() and not sr_path(out, "03").exists()
    assert no_partials(out)
    log = (out / "sub-03" / "log" / "sub-03_mrisr.log").read_text()
    assert "frame 2/3" in log and "sub-03 failed" in log
    assert "failed while checking its inputs" in (out / "sub-02" / "log" / "sub-02_mrisr.log").read_text()
    status = out / "sub-02" / "log" / "sub-02_status.json"
    assert json.loads(status.read_text())["error"] == rows["02"]["error"]

    # still corrupt: they fail again, the finished subject is skipped
    result = batch(bids, out, *common, "--jobs", "2")
    assert result.exit_code == 1 and "0 done, 1 skipped (up to date), 2 failed" in result.stdout, result.output
    # one repaired: only it runs
    shutil.copyfile(cohort["bids"] / bids_names("02")["lr"], truncated)
    result = batch(bids, out, *common, "--jobs", "2")
    assert result.exit_code == 1 and "1 done, 1 skipped (up to date), 1 failed" in result.stdout, result.output
    assert statuses(out) == {"01": "skipped", "02": "done", "03": "failed"}
    assert not status.exists()


def test_finetune_writes_the_subject_model(cohort, tmp_path, monkeypatch):
    from mrisr.models import read_metadata

    make_finetuning_improve(monkeypatch)
    out = tmp_path / "out"
    config = tmp_path / "short.yaml"
    config.write_text("reconstruct:\n  finetune_minutes: 5\n")  # make_finetuning_improve: 60 steps end it
    result = batch(
        cohort["bids"],
        out,
        "--participant-label",
        "01",
        "--finetune",
        "--config",
        config,
        "--model",
        cohort["model"],
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    tuned = out / "sub-01" / "func" / "sub-01_task-dynamic_desc-finetuned_model.safetensors"
    block = sidecar(out, "01")["MrisrBatch"]
    assert block["options"]["finetune"] is True
    assert block["finetuned_model"] is not None, (result.output, sidecar(out, "01").get("finetune"))
    assert block["finetuned_model"]["sha256"] == sha256(tuned)
    assert read_metadata(tuned)["planning_sha256"] == sha256(cohort["bids"] / bids_names("01")["planning"])
    # the subject model is part of the result: without it the subject reruns
    tuned.unlink()
    result = batch(
        cohort["bids"],
        out,
        "--participant-label",
        "01",
        "--finetune",
        "--config",
        config,
        "--model",
        cohort["model"],
        "--device",
        "cpu",
        "--quiet",
    )
    assert "1 done" in result.stdout and tuned.is_file(), result.output


def test_validation_reports_every_problem_before_any_work(cohort, tmp_path):
    phantoms = cohort["phantoms"]
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(
        "subject,dynamic,planning,ground_truth\n"
        f"01,{phantoms}/s01/dynamic_lr.nii.gz,{phantoms}/s01/planning.nii.gz,{phantoms}/s01/dynamic_hr.nii.gz\n"
        f"02,{phantoms}/s02/missing.nii.gz,{phantoms}/s02/planning.nii.gz,\n"
        f"02,{phantoms}/s03/dynamic_lr.nii.gz,{phantoms}/s03/planning.nii.gz,\n"
    )
    out = tmp_path / "new" / "out"
    result = batch(
        manifest,
        out,
        "--participant-label",
        "01",
        "02",
        "07",
        "--model",
        tmp_path / "nope.safetensors",
        "--jobs",
        "0",
        "--device",
        "cpu",
    )
    assert result.exit_code == 1, result.output
    message = result.stderr
    assert message.startswith(f"error: {manifest}: 5 problems found, nothing was run")
    for expected in (
        "--jobs 0: must be >= 1",
        "line 4: duplicate subject 02 (also on line 3)",
        "--participant-label 07: no participant '07'",
        "line 3 (subject 02): dynamic",
        "nope.safetensors: model file not found",
    ):
        assert expected in message, message
    assert not (tmp_path / "new").exists()


def test_output_inside_the_source_dataset_is_refused(cohort):
    result = batch(cohort["bids"], cohort["bids"], "--model", cohort["model"])
    assert result.exit_code == 1
    assert "would mix raw and derived files" in result.stderr and "derivatives" in result.stderr
