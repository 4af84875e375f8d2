"""`mrisr batch` under hostile conditions, with real processes and real signals: symbolic links out of
the output folder, devices in a manifest, a second run on the same subjects (lock, holder named, stale
lock taken over), SIGTERM of the run (one line, non-zero exit, no partial left) and SIGKILL of the
parent of ``--jobs 2`` (its workers die too)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_batch_cohort import build_cohort
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.io import load, save_like
from mrisr.io.guard import is_stale_partial, pid_alive

runner = CliRunner()
MAIN = "from mrisr.cli import main; main()"
#: frames of the long series: enough that a run is still writing when it is signalled
LONG_FRAMES = 400


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict[str, Path]:
    return build_cohort(tmp_path_factory.mktemp("batch-safety"), labels=("01", "02"))


@pytest.fixture(scope="module")
def long_cohort(cohort, tmp_path_factory) -> dict[str, Path]:
    """A manifest of two subjects whose series are the tiny cohort's, repeated to LONG_FRAMES frames."""
    root = tmp_path_factory.mktemp("batch-long")
    rows = ["subject,dynamic,planning"]
    for label in ("01", "02"):
        lr = load(cohort["phantoms"] / f"s{label}" / "dynamic_lr.nii.gz")
        data = np.tile(np.asarray(lr.data), (1, 1, 1, LONG_FRAMES // lr.n_frames + 1))[..., :LONG_FRAMES]
        dynamic = save_like(root / f"s{label}_lr.nii.gz", data, lr, tr=lr.tr)
        planning = shutil.copy(cohort["phantoms"] / f"s{label}" / "planning.nii.gz", root / f"s{label}_planning.nii.gz")
        rows.append(f"{label},{dynamic.name},{Path(planning).name}")
    (root / "cohort.csv").write_text("\n".join(rows) + "\n")
    return {"manifest": root / "cohort.csv", "model": cohort["model"]}


def _partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".partial" in p.name]


def _lasting_partials(folder: Path, seconds: float = 0.3):
    """A condition for :func:`_wait_for`: the partials seen at least ``seconds`` ago that still exist.
    The output check at start-up creates and removes a probe partial within milliseconds; a poll
    that catches it must not take it for the writer's file."""
    first_seen: dict[Path, float] = {}

    def condition() -> list[Path]:
        now = time.monotonic()
        present = _partials(folder)
        for path in list(first_seen):
            if path not in present:
                del first_seen[path]
        for path in present:
            first_seen.setdefault(path, now)
        return [p for p, seen in first_seen.items() if now - seen >= seconds]

    return condition


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", MAIN, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(condition, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"gave up waiting for {what}")


def test_a_subject_folder_linked_out_of_the_output_folder_is_refused(cohort, tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    decoy = elsewhere / ".keep.nii.gz.1.abcdefgh.partial"
    decoy.write_bytes(b"not ours")
    (out / "sub-01").symlink_to(elsewhere, target_is_directory=True)
    result = runner.invoke(app, ["batch", str(cohort["bids"]), str(out), "--model", str(cohort["model"]),
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 1, result.output
    assert str(out / "sub-01") in result.stderr and "outside the output folder" in result.stderr
    assert "Traceback" not in result.output
    assert [p.name for p in elsewhere.iterdir()] == [decoy.name]  # nothing written there, nothing deleted


def test_a_device_in_the_manifest_is_refused(cohort, tmp_path):
    manifest = tmp_path / "cohort.csv"
    planning = cohort["phantoms"] / "s01" / "planning.nii.gz"
    manifest.write_text(f"subject,dynamic,planning\n01,/dev/zero,{planning}\n")
    result = runner.invoke(app, ["batch", str(manifest), str(tmp_path / "out"), "--model", str(cohort["model"]),
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "/dev/zero is not a regular file" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_second_run_on_the_same_subjects_says_who_holds_them(cohort, tmp_path):
    out = tmp_path / "out"
    lock = out / "sub-01" / "log" / "sub-01_mrisr.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from mrisr.batch.lock import acquire; held = acquire(sys.argv[1], 'x'); print('held', flush=True); "
         "sys.stdin.read()", str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["batch", str(cohort["bids"]), str(out), "--model", str(cohort["model"]), "--device", "cpu", "--quiet"]
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1, result.stderr
        assert f"pid {holder.pid} on " in errors[0] and "sub-01" in errors[0] and "started" in errors[0]
        assert not (out / "sub-02" / "func").exists()  # all or nothing: sub-02 was not started either
        # the holder is killed: its lock is stale and the next run takes it over
        holder.kill()
        holder.wait()
        assert lock.exists()
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "2 done" in result.stdout
        assert not lock.exists()
    finally:
        holder.kill()
        holder.wait()


def test_sigterm_stops_the_run_with_one_line_and_no_partial(long_cohort, tmp_path):
    out = tmp_path / "out"
    run = _start("batch", long_cohort["manifest"], out, "--model", long_cohort["model"], "--device", "cpu", "--quiet")
    _wait_for(lambda: _partials(out), "the first partial output")
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 143, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("terminated (SIGTERM): "), stderr
    assert "Traceback" not in stderr
    assert _partials(out) == []
    assert not list(out.rglob("*desc-sr_bold.nii.gz"))
    assert not list(out.rglob("*.lock"))


def test_killing_the_parent_of_parallel_workers_kills_the_workers(long_cohort, tmp_path):
    out = tmp_path / "out"
    run = _start("batch", long_cohort["manifest"], out, "--model", long_cohort["model"], "--device", "cpu",
                 "--quiet", "--jobs", "2")
    # each worker names its partial output after its pid
    lasting = _lasting_partials(out)
    partials = _wait_for(lambda: len(found := lasting()) >= 2 and found, "both workers writing")
    workers = {int(p.name.split(".partial")[0].split(".")[-2]) for p in partials}
    assert run.pid not in workers and len(workers) == 2
    run.kill()
    run.wait()
    _wait_for(lambda: not any(pid_alive(pid) for pid in workers), "the workers to exit")
    # what they leave behind is recognisably stale: the next write of those outputs removes it
    assert all(is_stale_partial(p.name) for p in _partials(out))


def test_a_sigkilled_reconstruction_leaves_a_partial_the_next_run_removes(long_cohort, cohort, tmp_path):
    manifest_dir = long_cohort["manifest"].parent
    dynamic, planning = manifest_dir / "s01_lr.nii.gz", manifest_dir / "s01_planning.nii.gz"
    out = tmp_path / "sr.nii.gz"
    for _attempt in range(3):
        run = _start("reconstruct", dynamic, "--prior", planning, "--model", cohort["model"], "-o", out, "--quiet")
        left = _wait_for(_lasting_partials(tmp_path), "the partial output")
        run.kill()
        _, stderr = run.communicate(timeout=120)
        if run.returncode == -signal.SIGKILL:
            break
        # the run ended by itself before the signal landed (this process was not scheduled in time):
        # the premise of the test did not hold, so run it again from a clean folder
        for leftover in tmp_path.iterdir():
            leftover.unlink()
    else:
        raise AssertionError(f"the reconstruction was never killed mid-run (exit {run.returncode}): {stderr[-1500:]}")
    gone = [p.name for p in left if not p.exists()]
    assert not gone and not out.exists(), f"partials {gone} vanished after SIGKILL; stderr: {stderr[-1500:]}"
    short = cohort["phantoms"] / "s01" / "dynamic_lr.nii.gz"
    result = runner.invoke(app, ["reconstruct", str(short), "--prior", str(planning), "--model", str(cohort["model"]),
                                 "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert out.exists() and _partials(tmp_path) == []


def test_sigterm_of_a_reconstruction_is_like_ctrl_c(long_cohort, cohort, tmp_path):
    manifest_dir = long_cohort["manifest"].parent
    out = tmp_path / "sr.nii.gz"
    run = _start("reconstruct", manifest_dir / "s02_lr.nii.gz", "--prior", manifest_dir / "s02_planning.nii.gz",
                 "--model", cohort["model"], "-o", out, "--quiet")
    _wait_for(lambda: _partials(tmp_path), "the partial output")
    os.kill(run.pid, signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 143, stderr
    assert [line for line in stderr.splitlines() if line.strip()] == ["terminated (SIGTERM): no output was written"]
    assert list(tmp_path.iterdir()) == []
