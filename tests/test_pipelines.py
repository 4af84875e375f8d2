"""pipelines/Snakefile with the real snakemake (a subprocess, the venv's bin on PATH) on the tiny
3-subject cohort: full run, nothing to do, a deleted output reruns only its subject, a corrupt
subject with --keep-going leaves the others finished, and the SLURM profile builds the job graph."""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_batch_cohort import LABELS, bids_names, build_cohort, truncate

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "pipelines" / "Snakefile"
PROFILES = REPO / "pipelines" / "profiles"
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed in this environment"),
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict[str, Path]:
    return build_cohort(tmp_path_factory.mktemp("pipelines"))


def snakemake(workdir: Path, *args: str, **config: object) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1")
    command = [str(SNAKEMAKE), "-s", str(SNAKEFILE), *args, "--config", *[f"{k}={v}" for k, v in config.items()]]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    result.log = result.stdout + result.stderr
    return result


def job_counts(log: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake run."""
    table = log.split("Job stats:", 1)[1].split("total", 1)[0]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.MULTILINE)}


def summary(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.tsv", newline="") as handle:
        return {row["subject"]: row for row in csv.DictReader(handle, delimiter="\t")}


def outputs(out: Path, label: str) -> list[Path]:
    folder = out / f"sub-{label}" / "func"
    return [
        folder / f"sub-{label}_task-dynamic_desc-sr_bold.nii.gz",
        folder / f"sub-{label}_task-dynamic_desc-sr_bold.json",
    ]


def test_slurm_profile_builds_the_job_graph(cohort, tmp_path):
    config = {"input": cohort["bids"], "output": tmp_path / "out", "model": cohort["model"], "device": "cuda"}
    profile = ("--profile", str(PROFILES / "slurm"))
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        # without the plugin snakemake refuses the profile's `executor: slurm`, even for a dry run...
        refused = snakemake(tmp_path, "-n", *profile, **config)
        assert refused.returncode != 0 and "slurm" in refused.log
        # ...so the graph is built with the profile's settings and the dry-run executor
        profile += ("--executor", "dryrun")
    result = snakemake(tmp_path, "-n", *profile, **config)
    assert result.returncode == 0, result.log
    assert job_counts(result.log) == {"all": 1, "sub_01": 1, "sub_02": 1, "sub_03": 1, "summary": 1}
    # one GPU job per subject on the GPU partition, with the profile's default resources
    for label in LABELS:
        block = result.log.split(f"rule sub_{label}:", 1)[1].split("rule ", 1)[0]
        assert "gpu=1" in block and "mem_mb=16000" in block and "runtime=60" in block, block
        assert "slurm_partition=gpu" in block and "slurm_account" not in block, block
        assert f"--participant-label {label} --force" in block
    assert not (tmp_path / "out").exists()

    # device=cpu: the CPU partition and no GPU; the account is charged when set
    cpu = snakemake(tmp_path, "-n", *profile, **{**config, "device": "cpu", "slurm_account": "mri_lab"})
    assert cpu.returncode == 0, cpu.log
    for label in LABELS:
        block = cpu.log.split(f"rule sub_{label}:", 1)[1].split("rule ", 1)[0]
        assert "slurm_partition=cpu" in block and "slurm_account=mri_lab" in block and "gpu=0" in block, block


def test_snakemake_run_resume_rerun_and_keep_going(cohort, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(cohort["bids"], bids)
    out = tmp_path / "derivatives" / "mrisr"
    config = {"input": bids, "output": out, "model": cohort["model"], "device": "cpu", "threads": 1}

    result = snakemake(tmp_path, "--cores", "1", **config)
    assert result.returncode == 0, result.log
    assert job_counts(result.log) == {"all": 1, "sub_01": 1, "sub_02": 1, "sub_03": 1, "summary": 1}
    rows = summary(out)
    assert {label: row["status"] for label, row in rows.items()} == dict.fromkeys(LABELS, "done")
    assert all(row["frames"] == "3" and 0.5 < float(row["ssim_tissue_mean"]) <= 1 for row in rows.values())
    assert (out / "dataset_description.json").is_file()
    for label in LABELS:
        assert all(path.is_file() for path in outputs(out, label))
        assert (out / f"sub-{label}" / "log" / f"sub-{label}_mrisr.log").is_file()
        assert (out / f"sub-{label}" / "log" / f"sub-{label}_snakemake.log").is_file()

    result = snakemake(tmp_path, "--cores", "1", **config)
    assert result.returncode == 0 and "Nothing to be done" in result.log, result.log

    # a deleted output: the plan reruns that subject (and the summary) only
    outputs(out, "02")[0].unlink()
    result = snakemake(tmp_path, "-n", "--cores", "1", **config)
    assert job_counts(result.log) == {"all": 1, "sub_02": 1, "summary": 1}, result.log

    # a corrupt subject, run first: with --keep-going the deleted subject is still rebuilt and the
    # others stay finished; summary.tsv records the failure
    truncate(bids / bids_names("03")["lr"])
    finished = {path: path.stat().st_mtime_ns for path in outputs(out, "01")}
    result = snakemake(tmp_path, "--cores", "1", "--keep-going", "--prioritize", str(outputs(out, "03")[1]), **config)
    assert result.returncode != 0, result.log
    assert "Error in rule sub_03" in result.log
    assert result.log.index("Error in rule sub_03") < result.log.index("(Rule: sub_02)"), result.log
    assert all(path.is_file() for path in outputs(out, "02"))
    assert not any(path.exists() for path in outputs(out, "03"))
    assert {path: path.stat().st_mtime_ns for path in outputs(out, "01")} == finished
    rows = summary(out)
    assert {label: row["status"] for label, row in rows.items()} == {"01": "done", "02": "done", "03": "failed"}
    assert "sub-03_task-dynamic_bold.nii.gz: truncated .gz file" in rows["03"]["error"]
    assert "failed while checking its inputs" in (out / "sub-03" / "log" / "sub-03_mrisr.log").read_text()
