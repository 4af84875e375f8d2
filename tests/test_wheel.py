"""The package as `pip install mrisr` delivers it: build the sdist and, from it, the wheel; install the
wheel in a fresh virtual environment and, from a folder far from this checkout, run `info`, the
packaged recipes, the Snakemake workflow's location and the README's command-line tour.

The fresh environment takes mrisr's dependencies (torch, MONAI, ...) from this environment through
a ``.pth`` line (a second multi-GB torch install would add minutes and nothing to the test); mrisr
itself, its data, recipes and workflow come only from the wheel.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import mrisr

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        capture_output=True, text=True, encoding="utf-8", timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    # the SPDX licence: no deprecation warnings from setuptools
    assert "deprecated" not in (build.stdout + build.stderr).lower(), build.stderr[-3000:]
    (path,) = dist.glob("mrisr-*.whl")
    return path


@pytest.fixture(scope="module")
def fresh(wheel, tmp_path_factory) -> dict:
    """A new virtual environment with the wheel installed; returns how to run its ``mrisr``."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, encoding="utf-8", check=True).stdout.strip()
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    Path(purelib, "mrisr_test_dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                             capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert install.returncode == 0, install.stderr
    work = tmp_path_factory.mktemp("user")
    return {"venv": venv, "bin": venv / "bin", "site": Path(purelib), "work": work}


def mrisr_in(fresh: dict, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="2", PATH=f"{fresh['bin']}:{env.get('PATH', '')}")
    result = subprocess.run([str(fresh["bin"] / "mrisr"), *map(str, args)], cwd=fresh["work"], capture_output=True,
                            text=True, encoding="utf-8", env=env, timeout=600)
    assert result.returncode == 0, f"mrisr {' '.join(map(str, args))}: {result.stderr[-3000:]}"
    return result


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    info = f"mrisr-{mrisr.__version__}.dist-info"
    assert f"{info}/licenses/LICENSE" in names and "mrisr/py.typed" in names
    for shipped in ("configs/default.yaml", "configs/default-noprior.yaml", "configs/default-recurrent.yaml",
                    "configs/batch.yaml", "pipelines/Snakefile", "pipelines/config.yaml", "pipelines/README.md",
                    "pipelines/profiles/local/config.yaml", "pipelines/profiles/slurm/config.yaml"):
        assert f"mrisr/_shipped/{shipped}" in names, shipped
    assert {"mrisr/data/colin27_slab.nii.gz", "mrisr/models/bundled/default.safetensors",
            "mrisr/napari/napari.yaml"} <= names
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Apache License" in zipfile.ZipFile(wheel).read(f"{info}/licenses/LICENSE").decode()


def test_installed_wheel_runs_info_recipes_and_workflow(fresh):
    assert mrisr_in(fresh, "--version").stdout == f"mrisr {mrisr.__version__}\n"
    info = mrisr_in(fresh, "info").stdout
    # the bundled sample and models come from the fresh environment, not from this checkout
    assert str(fresh["site"] / "mrisr" / "data") in info and str(ROOT) not in info
    assert set(mrisr_in(fresh, "config", "list").stdout.split()) == {"batch", "default", "default-gated",
                                                                     "default-noprior", "default-recurrent",
                                                                     "default-sites", "default-noise", "default-real"}
    assert mrisr_in(fresh, "config", "show", "default").stdout == (ROOT / "configs" / "default.yaml").read_text()
    workflow = Path(mrisr_in(fresh, "pipeline", "path").stdout.strip())
    assert workflow.is_relative_to(fresh["site"])
    assert (workflow / "Snakefile").read_text() == (ROOT / "pipelines" / "Snakefile").read_text()
    assert (workflow / "profiles" / "slurm" / "config.yaml").is_file()

    # a packaged recipe by name, for two steps
    tiny = ["--set", "optim.steps=2", "--set", "data.train=[colin27]", "--set", "data.validation=[]",
            "--set", "data_workers=0", "--set", "optim.batch_size=1", "--set", "data.inplane_mm=[2.0]",
            "--set", "data.slice_mm=[4.0]", "--set", "data.orientations=[axial]", "--quiet"]
    trained = mrisr_in(fresh, "train", "default", "-o", "runs/two_steps.safetensors", *tiny)
    assert "runs/two_steps.safetensors: trained" in trained.stdout
    # the README's spelling of it works from the wheel too
    mrisr_in(fresh, "config", "show", "default-noprior")
    mrisr_in(fresh, "train", "configs/default-noprior.yaml", "-o", "runs/noprior.safetensors", *tiny)


def test_installed_wheel_runs_the_readme_tour(fresh):
    mrisr_in(fresh, "phantom", "-o", "phantom/", "--frames", "2", "--keep", "6.25", "--seed", "0")
    mrisr_in(fresh, "simulate", "phantom/dynamic_hr.nii.gz", "-o", "phantom/sinc.nii.gz", "--keep", "6.25",
             "--zero-fill")
    result = mrisr_in(fresh, "reconstruct", "phantom/dynamic_lr.nii.gz", "--prior", "phantom/planning.nii.gz",
                      "-o", "phantom/sr.nii.gz")
    assert result.stdout.startswith("phantom/sr.nii.gz: 2 frame(s)") and result.stdout.count("\n") == 1
    scores = mrisr_in(fresh, "evaluate", "phantom/sr.nii.gz", "phantom/dynamic_hr.nii.gz", "--baseline",
                      "phantom/sinc.nii.gz", "-o", "phantom/metrics.csv", "--quiet")
    assert (fresh["work"] / "phantom" / "metrics.csv").is_file() and "SSIM" in scores.stdout
