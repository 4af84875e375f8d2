"""A full disk: one line naming the file that could not be written, non-zero exit, nothing left behind
(no partial, and no finished file of a set that could not be completed).

The disk is a real 2 MB tmpfs when the tests run as root (``mount -t tmpfs``); elsewhere the command
runs under a 2 MB file-size limit (``RLIMIT_FSIZE``, SIGXFSZ ignored), which fails writes the same way
(``EFBIG`` instead of ``ENOSPC``)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mrisr.data import load_sample
from mrisr.io import Volume, load, save_like
from mrisr.models import make_tiny_checkpoint
from mrisr.phantom import make_dynamic

LIMIT = 2 * 1024 * 1024
MAIN = "from mrisr.cli import main; main()"


@pytest.fixture
def small_disk(tmp_path):
    """``(folder, preexec)``: a folder on a 2 MB file system, or a folder plus a 2 MB write limit."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True
    ).returncode == 0

    def limit_writes() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))

    try:
        yield folder, (None if mounted else limit_writes)
    finally:
        if mounted:
            with contextlib.suppress(Exception):
                subprocess.run(["umount", str(folder)], check=True)


def _run(preexec, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", MAIN, *map(str, args)], capture_output=True, text=True,
                          preexec_fn=preexec, timeout=300)


def _one_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_phantom_on_a_full_disk_leaves_nothing_and_names_the_file(tmp_path, small_disk):
    folder, preexec = small_disk
    rng = np.random.default_rng(0)
    noisy = (rng.random((64, 64, 16)) * 100 + 50).astype(np.float32)  # barely compressible
    source = save_like(tmp_path / "source.nii.gz", noisy, Volume(data=noisy, affine=np.diag([2.0, 2.0, 3.0, 1.0])))
    out = folder / "phantom"
    line = _one_error(_run(preexec, "phantom", "--source", source, "-o", out, "--frames", "20", "--keep", "25"))
    assert str(out / "dynamic_hr.nii.gz") in line and "cannot write" in line
    assert ("No space left on device" if preexec is None else "File too large") in line
    # the planning scan written first was removed too, and the folder the run created for -o
    assert not out.exists()


def test_reconstruct_on_a_full_disk_leaves_nothing_and_names_the_file(tmp_path, small_disk):
    folder, preexec = small_disk
    sample = load_sample()
    crop = Volume(data=np.ascontiguousarray(sample.data[52:76, 52:76, 10:18]), affine=sample.affine)
    files = make_dynamic(crop, frames=3, keep=25, seed=3).save(tmp_path / "phantom")
    lr = load(files["lr"])
    long = np.tile(np.asarray(lr.data), (1, 1, 1, 100))  # 300 frames: ~5 MB of float32 HR output
    dynamic = save_like(tmp_path / "long.nii.gz", long, lr, tr=lr.tr)
    model = make_tiny_checkpoint(tmp_path / "tiny.safetensors", prior=True)
    out = folder / "sr.nii.gz"
    line = _one_error(_run(preexec, "reconstruct", dynamic, "--prior", files["planning"], "--model", model,
                           "--prior-mode", "planning", "-o", out, "--quiet"))
    assert str(out) in line and "cannot write" in line
    assert list(Path(folder).iterdir()) == []
