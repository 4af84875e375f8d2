"""Adversarial probe: what a hostile or careless user would try, one case per line.

Each case runs the real CLI (or, for header bombs, :func:`mrisr.io.load` under an address-space
limit) in a subprocess on tiny files made in a temporary folder, and checks a promise: a one-line
error instead of a traceback, the right exit code, nothing written where it must not be, bounded
memory and time. Prints a table (case, class, expected, got, pass/fail) and exits 1 if any case
fails.

Usage::

    python benchmarks/robustness.py               # the code of this checkout
    python benchmarks/robustness.py --repo /path  # another checkout (e.g. before a fix)
    python benchmarks/robustness.py --only header # the cases of one class (substring of the class)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
#: the ``mrisr`` command of the probed checkout (its code first on PYTHONPATH)
MRISR = [PYTHON, "-P", "-c", "import sys; from mrisr.cli import main; sys.argv[0] = 'mrisr'; main()"]
#: address-space limit of the header-bomb loader (a bomb must be refused, not allocated)
LOAD_LIMIT_BYTES = 3 << 30


@dataclass
class Outcome:
    ok: bool
    got: str


@dataclass
class Case:
    name: str
    cls: str
    expected: str
    run: Callable[[Path], Outcome]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def cli(args: list[str], timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([*MRISR, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=env(), cwd=cwd, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, -999, stdout="", stderr=f"timed out after {timeout:.0f} s")


def traceback_in(text: str) -> bool:
    return "Traceback (most recent call last)" in text or "Exception ignored" in text


def last_line(text: str, width: int = 70) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def refused(proc: subprocess.CompletedProcess, code: int = 1) -> Outcome:
    """A one-line ``error:`` and exit ``code`` (no traceback, no timeout)."""
    if proc.returncode == -999:
        return Outcome(False, proc.stderr)
    if traceback_in(proc.stderr):
        return Outcome(False, f"rc {proc.returncode}, traceback: {last_line(proc.stderr)}")
    # mrisr's one-line "error: ..."; click's own usage errors (exit 2) say "Error: ..."
    errors = [line for line in proc.stderr.splitlines()
              if line.startswith("error:") or (code == 2 and line.startswith("Error:"))]
    ok = proc.returncode == code and len(errors) >= 1
    return Outcome(ok, f"rc {proc.returncode}: {last_line(proc.stderr) or last_line(proc.stdout)}")


LOADER = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from mrisr.io import MrisrInputError, load
    from mrisr.io.stream import iter_frames
    lazy = sys.argv[2] == "lazy"
    try:
        volume = load(sys.argv[1], lazy=lazy)
        if lazy:
            for frame in iter_frames(volume):
                pass
    except MrisrInputError as exc:
        print("error:", exc, file=sys.stderr)
        sys.exit(1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("loaded", volume.data.shape, "peak_kb", peak)
""")


def load_file(path: Path, lazy: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
    code = LOADER.format(limit=LOAD_LIMIT_BYTES)
    try:
        return subprocess.run([PYTHON, "-P", "-c", code, str(path), "lazy" if lazy else "eager"], capture_output=True,
                              text=True, timeout=timeout, env=env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, -999, stdout="", stderr=f"timed out after {timeout:.0f} s")


def load_refused(path: Path) -> Outcome:
    return refused(load_file(path))


# ---------------------------------------------------------------- builders


def phantom_volume(shape=(24, 20, 6)) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (sum(g**2 for g in grids) < 0.8).astype(np.float32)
    return body * 100 + 10 * np.random.default_rng(0).random(shape, dtype=np.float32)


def write_nifti(path: Path, data: np.ndarray, zooms=(1.0, 1.0, 2.0)) -> Path:
    import nibabel as nib

    affine = np.diag([*zooms, 1.0])
    image = nib.Nifti1Image(data.astype(np.float32), affine)
    image.header.set_xyzt_units("mm", "sec")
    if data.ndim == 4:
        image.header.set_zooms((*zooms, 0.5))
    nib.save(image, str(path))
    return path


def nifti1_header(dims=(24, 20, 6), datatype=16, bitpix=32, pixdim=(1.0, 1.0, 1.0), vox_offset=352.0) -> bytes:
    """A raw NIfTI-1 header (348 bytes) plus the 4-byte extension flag, fields as given."""
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    dim = [len(dims), *dims] + [1] * (7 - len(dims))
    struct.pack_into("<8h", hdr, 40, *dim)
    struct.pack_into("<h", hdr, 70, datatype)
    struct.pack_into("<h", hdr, 72, bitpix)
    struct.pack_into("<8f", hdr, 76, 1.0, *pixdim, *([1.0] * (7 - len(pixdim))))
    struct.pack_into("<f", hdr, 108, vox_offset)
    struct.pack_into("<f", hdr, 112, 1.0)  # scl_slope
    struct.pack_into("<h", hdr, 252, 0)
    struct.pack_into("<h", hdr, 254, 1)  # sform code
    struct.pack_into("<4f", hdr, 280, pixdim[0], 0, 0, 0)
    struct.pack_into("<4f", hdr, 296, 0, pixdim[1], 0, 0)
    struct.pack_into("<4f", hdr, 312, 0, 0, pixdim[2], 0)
    hdr[344:348] = b"n+1\0"
    return bytes(hdr) + b"\0\0\0\0"


def nifti2_header(dims=(24, 20, 6), datatype=16, bitpix=32, pixdim=(1.0, 1.0, 1.0), vox_offset=544) -> bytes:
    """A raw NIfTI-2 header (540 bytes) plus the extension flag."""
    hdr = bytearray(540)
    struct.pack_into("<i", hdr, 0, 540)
    hdr[4:12] = b"n+2\0\r\n\x1a\n"
    struct.pack_into("<h", hdr, 12, datatype)
    struct.pack_into("<h", hdr, 14, bitpix)
    dim = [len(dims), *dims] + [1] * (7 - len(dims))
    struct.pack_into("<8q", hdr, 16, *dim)
    struct.pack_into("<8d", hdr, 104, 1.0, *pixdim, *([1.0] * (7 - len(pixdim))))
    struct.pack_into("<q", hdr, 168, vox_offset)
    struct.pack_into("<d", hdr, 176, 1.0)  # scl_slope
    struct.pack_into("<i", hdr, 344, 1)  # sform code
    struct.pack_into("<4d", hdr, 400, pixdim[0], 0, 0, 0)
    struct.pack_into("<4d", hdr, 432, 0, pixdim[1], 0, 0)
    struct.pack_into("<4d", hdr, 464, 0, 0, pixdim[2], 0)
    return bytes(hdr) + b"\0\0\0\0"


def raw_image(path: Path, header: bytes, payload: bytes = b"") -> Path:
    path.write_bytes(header + payload)
    return path


def mhd(path: Path, data_file: str, dims=(24, 20, 6), element="MET_FLOAT", spacing="1 1 2", offset="0 0 0",
        extra_lines: str = "") -> Path:
    ndim = len(dims)
    path.write_text(
        f"ObjectType = Image\nNDims = {ndim}\nDimSize = {' '.join(map(str, dims))}\nElementType = {element}\n"
        f"ElementSpacing = {spacing}\nOffset = {offset}\nElementDataFile = {data_file}\n{extra_lines}"
    )
    return path


def mha(path: Path, data: np.ndarray, spacing="1 1 2", offset="0 0 0", element="MET_FLOAT") -> Path:
    dims = " ".join(map(str, data.shape))
    header = (f"ObjectType = Image\nNDims = {data.ndim}\nDimSize = {dims}\nElementType = {element}\n"
              f"ElementSpacing = {spacing}\nOffset = {offset}\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + np.asarray(data, np.float32).tobytes(order="F"))
    return path


def nhdr(path: Path, data_file: str, dims=(24, 20, 6), directions="(1,0,0) (0,1,0) (0,0,2)") -> Path:
    path.write_text(
        f"NRRD0004\ntype: float\ndimension: {len(dims)}\nspace: left-posterior-superior\nsizes: {' '.join(map(str, dims))}\n"
        f"space directions: {directions}\nendian: little\nencoding: raw\nspace origin: (0,0,0)\ndata file: {data_file}\n"
    )
    return path


def nrrd_attached(path: Path, data: np.ndarray, dims=None, directions="(1,0,0) (0,1,0) (0,0,2)") -> Path:
    dims = dims or data.shape
    if len(dims) == 4:  # ITK reads a 4-D NRRD without a space (per-axis spacings)
        geometry = "spacings: 1 1 2 0.5\n"
    else:
        geometry = f"space: left-posterior-superior\nspace directions: {directions}\nspace origin: (0,0,0)\n"
    header = (f"NRRD0004\ntype: float\ndimension: {len(dims)}\nsizes: {' '.join(map(str, dims))}\n{geometry}"
              "endian: little\nencoding: raw\n\n")
    path.write_bytes(header.encode() + np.asarray(data, np.float32).tobytes(order="F"))
    return path


def tiny_bids(root: Path, subjects=("01",)) -> Path:
    """A raw BIDS dataset: LR bold series and a T1w planning scan per subject."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "raw", "BIDSVersion": "1.8.0"}))
    hr = phantom_volume((32, 32, 8))  # 8 slices: thick enough to fine-tune on
    for label in subjects:
        anat, func = root / f"sub-{label}" / "anat", root / f"sub-{label}" / "func"
        anat.mkdir(parents=True, exist_ok=True)
        func.mkdir(parents=True, exist_ok=True)
        write_nifti(anat / f"sub-{label}_T1w.nii.gz", hr)
        lr = np.stack([hr[::4, ::4] * (1 + 0.01 * t) for t in range(2)], axis=-1)
        write_nifti(func / f"sub-{label}_task-rest_bold.nii.gz", lr, zooms=(4.0, 4.0, 2.0))
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- cases: output location


def case_manifest_into_bids_root(tmp: Path) -> Outcome:
    root = tiny_bids(tmp / "raw")
    manifest = tmp / "m.csv"
    manifest.write_text("subject,dynamic,planning\n01,raw/sub-01/func/sub-01_task-rest_bold.nii.gz,"
                        "raw/sub-01/anat/sub-01_T1w.nii.gz\n")
    before = snapshot(root)
    proc = cli(["batch", manifest, root, "--model", "default", "-q"])
    changed = snapshot(root) != before
    outcome = refused(proc)
    return Outcome(outcome.ok and not changed, f"{outcome.got}{'; dataset CHANGED' if changed else ''}")


def case_manifest_into_bids_subject(tmp: Path) -> Outcome:
    root = tiny_bids(tmp / "raw")
    manifest = tmp / "m.csv"
    manifest.write_text(f"subject,dynamic,planning\n01,{root}/sub-01/func/sub-01_task-rest_bold.nii.gz,"
                        f"{root}/sub-01/anat/sub-01_T1w.nii.gz\n")
    before = snapshot(root)
    proc = cli(["batch", manifest, root / "sub-01" / "func", "-q"])
    changed = snapshot(root) != before
    outcome = refused(proc)
    return Outcome(outcome.ok and not changed, f"{outcome.got}{'; dataset CHANGED' if changed else ''}")


def case_manifest_into_input_folder(tmp: Path) -> Outcome:
    data = tmp / "data"
    data.mkdir()
    hr = phantom_volume((32, 32, 4))
    write_nifti(data / "plan.nii.gz", hr)
    write_nifti(data / "dyn.nii.gz", np.stack([hr[::4, ::4]] * 2, -1), zooms=(4.0, 4.0, 2.0))
    manifest = data / "m.csv"
    manifest.write_text("subject,dynamic,planning\n01,dyn.nii.gz,plan.nii.gz\n")
    before = snapshot(data)
    proc = cli(["batch", manifest, data, "-q"])
    changed = snapshot(data) != before
    outcome = refused(proc)
    return Outcome(outcome.ok and not changed, f"{outcome.got}{'; input folder CHANGED' if changed else ''}")


def case_bids_into_bids_root(tmp: Path) -> Outcome:
    root = tiny_bids(tmp / "raw")
    before = snapshot(root)
    proc = cli(["batch", root, root, "-q"])
    changed = snapshot(root) != before
    outcome = refused(proc)
    return Outcome(outcome.ok and not changed, f"{outcome.got}{'; dataset CHANGED' if changed else ''}")


# ---------------------------------------------------------------- cases: headers of every format


def case_nifti2_huge(tmp: Path) -> Outcome:
    return load_refused(raw_image(tmp / "huge.nii", nifti2_header(dims=(1000, 1000, 1000)), b"\0" * 56))


def case_nifti2_complex(tmp: Path) -> Outcome:
    payload = np.ones((24, 20, 6), np.complex64).tobytes(order="F")
    return load_refused(raw_image(tmp / "c.nii", nifti2_header(datatype=32, bitpix=64), payload))


def case_nifti2_zero_voxel(tmp: Path) -> Outcome:
    payload = phantom_volume().tobytes(order="F")
    return load_refused(raw_image(tmp / "z.nii", nifti2_header(pixdim=(0.0, 1.0, 1.0)), payload))


def case_nifti1_unknown_datatype(tmp: Path) -> Outcome:
    payload = phantom_volume().tobytes(order="F")
    return load_refused(raw_image(tmp / "u.nii", nifti1_header(datatype=999), payload))


def case_nifti1_nan_offset(tmp: Path) -> Outcome:
    payload = phantom_volume().tobytes(order="F")
    return load_refused(raw_image(tmp / "o.nii", nifti1_header(vox_offset=float("nan")), payload))


def case_nifti1_inf_offset(tmp: Path) -> Outcome:
    payload = phantom_volume().tobytes(order="F")
    return load_refused(raw_image(tmp / "o.nii", nifti1_header(vox_offset=float("inf")), payload))


def case_nifti1_dims_max(tmp: Path) -> Outcome:
    return load_refused(raw_image(tmp / "m.nii", nifti1_header(dims=(32767, 32767, 32767)), b"\0" * 64))


def case_nifti1_inf_pixdim(tmp: Path) -> Outcome:
    payload = phantom_volume().tobytes(order="F")
    return load_refused(raw_image(tmp / "p.nii", nifti1_header(pixdim=(float("inf"), 1.0, 1.0)), payload))


def case_mhd_huge_data(tmp: Path) -> Outcome:
    data = tmp / "big.raw"
    with open(data, "wb") as handle:  # sparse: no disk used
        handle.truncate(6 << 30)
    return load_refused(mhd(tmp / "big.mhd", "big.raw", dims=(1024, 1024, 768), element="MET_DOUBLE"))


def case_mhd_parent_path(tmp: Path) -> Outcome:
    inner = tmp / "inner"
    inner.mkdir()
    (tmp / "secret.raw").write_bytes(phantom_volume().tobytes(order="F"))
    return load_refused(mhd(inner / "x.mhd", "../secret.raw"))


def case_mhd_absolute_path(tmp: Path) -> Outcome:
    inner = tmp / "inner"
    inner.mkdir()
    (tmp / "secret.raw").write_bytes(phantom_volume().tobytes(order="F"))
    return load_refused(mhd(inner / "x.mhd", str(tmp / "secret.raw")))


def case_mhd_list_parent(tmp: Path) -> Outcome:
    inner = tmp / "inner"
    inner.mkdir()
    volume = phantom_volume()
    for z in range(6):
        target = (tmp if z == 3 else inner) / f"s{z}.raw"
        target.write_bytes(volume[..., z].tobytes(order="F"))
    names = "\n".join(("../" if z == 3 else "") + f"s{z}.raw" for z in range(6))
    return load_refused(mhd(inner / "x.mhd", "LIST 2D", extra_lines=names + "\n"))


def case_mhd_pattern_ok(tmp: Path) -> Outcome:
    volume = phantom_volume()
    for z in range(6):
        (tmp / f"s{z:02d}.raw").write_bytes(volume[..., z].tobytes(order="F"))
    proc = load_file(mhd(tmp / "x.mhd", "s%02d.raw 0 5 1"))
    ok = proc.returncode == 0 and "loaded" in proc.stdout
    return Outcome(ok, f"rc {proc.returncode}: {last_line(proc.stdout or proc.stderr)}")


def case_nhdr_parent_path(tmp: Path) -> Outcome:
    inner = tmp / "inner"
    inner.mkdir()
    (tmp / "secret.raw").write_bytes(phantom_volume().tobytes(order="F"))
    return load_refused(nhdr(inner / "x.nhdr", "../secret.raw"))


def case_nhdr_huge(tmp: Path) -> Outcome:
    data = tmp / "big.raw"
    with open(data, "wb") as handle:
        handle.truncate(6 << 30)
    return load_refused(nhdr(tmp / "big.nhdr", "big.raw", dims=(2048, 1024, 768)))


def case_nrrd_attached_huge(tmp: Path) -> Outcome:
    return load_refused(nrrd_attached(tmp / "h.nrrd", np.zeros(8, np.float32), dims=(2048, 2048, 1024)))


def case_nrrd_nan_direction(tmp: Path) -> Outcome:
    return load_refused(nrrd_attached(tmp / "n.nrrd", phantom_volume(), directions="(nan,0,0) (0,1,0) (0,0,2)"))


def case_mha_zero_spacing(tmp: Path) -> Outcome:
    return load_refused(mha(tmp / "z.mha", phantom_volume(), spacing="0 1 2"))


def case_mha_inf_offset(tmp: Path) -> Outcome:
    return load_refused(mha(tmp / "o.mha", phantom_volume(), offset="inf 0 0"))


def case_mha_complex(tmp: Path) -> Outcome:
    path = tmp / "c.mha"
    header = ("ObjectType = Image\nNDims = 3\nDimSize = 24 20 6\nElementType = MET_FLOAT\nElementNumberOfChannels = 2\n"
              "ElementSpacing = 1 1 2\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + np.ones((2, 24, 20, 6), np.float32).tobytes())
    return load_refused(path)


def _streamed_peak(path: Path) -> Outcome:
    proc = load_file(path, lazy=True)
    if proc.returncode != 0:
        return Outcome(False, f"rc {proc.returncode}: {last_line(proc.stderr)}")
    peak_mb = int(proc.stdout.split("peak_kb")[1]) / 1024
    baseline = load_file(write_nifti(path.parent / "small.nii", phantom_volume((64, 64, 8))), lazy=True)
    base_mb = int(baseline.stdout.split("peak_kb")[1]) / 1024
    grew = peak_mb - base_mb
    return Outcome(grew < 40, f"streamed, peak {grew:+.0f} MB over a one-frame read (series is {path.stat().st_size >> 20} MB)")


def case_mha_4d_streamed(tmp: Path) -> Outcome:
    series = np.repeat(phantom_volume((64, 64, 8))[..., None], 400, axis=-1)
    return _streamed_peak(mha(tmp / "s.mha", series, spacing="1 1 2 0.5", offset="0 0 0 0"))


def case_nrrd_4d_streamed(tmp: Path) -> Outcome:
    series = np.repeat(phantom_volume((64, 64, 8))[..., None], 400, axis=-1)
    return _streamed_peak(nrrd_attached(tmp / "s.nrrd", series))


# ---------------------------------------------------------------- cases: special files


def case_fifo_input(tmp: Path) -> Outcome:
    fifo = tmp / "pipe.nii"
    os.mkfifo(fifo)
    return refused(cli(["simulate", fifo, "-o", tmp / "out.nii.gz"], timeout=60))


def case_dev_zero_input(tmp: Path) -> Outcome:
    link = tmp / "zero.nii"
    link.symlink_to("/dev/zero")
    return refused(cli(["simulate", link, "-o", tmp / "out.nii.gz"], timeout=60))


def case_symlink_loop_input(tmp: Path) -> Outcome:
    (tmp / "a.nii.gz").symlink_to(tmp / "b.nii.gz")
    (tmp / "b.nii.gz").symlink_to(tmp / "a.nii.gz")
    return refused(cli(["simulate", tmp / "a.nii.gz", "-o", tmp / "out.nii.gz"], timeout=60))


def case_dicom_folder_symlink_loop(tmp: Path) -> Outcome:
    folder = tmp / "dicom"
    folder.mkdir()
    (folder / "loop").symlink_to(folder)
    return refused(cli(["simulate", folder, "-o", tmp / "out.nii.gz"], timeout=60))


def case_truncated_gzip_simulate(tmp: Path) -> Outcome:
    path = write_nifti(tmp / "hr.nii.gz", phantom_volume((32, 32, 8)))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) * 2 // 3])
    return refused(cli(["simulate", path, "-o", tmp / "lr.nii.gz", "--noise-snr", "20"], timeout=60))


def case_corrupt_gzip_simulate(tmp: Path) -> Outcome:
    path = write_nifti(tmp / "hr.nii.gz", phantom_volume((32, 32, 8)))
    blob = bytearray(path.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(blob))
    return refused(cli(["simulate", path, "-o", tmp / "lr.nii.gz", "--noise-snr", "20"], timeout=60))


# ---------------------------------------------------------------- cases: config parsers

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


def case_yaml_alias_bomb_batch(tmp: Path) -> Outcome:
    config = tmp / "bomb.yaml"
    config.write_text(ALIAS_BOMB)
    root = tiny_bids(tmp / "raw")
    start = time.monotonic()
    proc = cli(["batch", root, tmp / "out", "--config", config, "-q"], timeout=40)
    outcome = refused(proc)
    seconds = time.monotonic() - start
    return Outcome(outcome.ok and seconds < 30, f"{outcome.got} ({seconds:.0f} s)")


def case_yaml_alias_bomb_train_set(tmp: Path) -> Outcome:
    value = "{" + ALIAS_BOMB.replace("\n", ", ").rstrip(", ") + "}"
    start = time.monotonic()
    proc = cli(["train", "default", "-o", tmp / "m.safetensors", "--set", f"optim.steps={value}"], timeout=40)
    outcome = refused(proc)
    seconds = time.monotonic() - start
    long_line = any(len(line) > 400 for line in proc.stderr.splitlines())
    return Outcome(outcome.ok and seconds < 30 and not long_line,
                   f"{outcome.got} ({seconds:.0f} s{', a line > 400 chars' if long_line else ''})")


def case_yaml_huge_file(tmp: Path) -> Outcome:
    config = tmp / "huge.yaml"
    config.write_text("desc: sr\n" + "# padding\n" * 3_000_000)
    root = tiny_bids(tmp / "raw")
    return refused(cli(["batch", root, tmp / "out", "--config", config, "-q"], timeout=60))


def case_yaml_long_value_message(tmp: Path) -> Outcome:
    config = tmp / "long.yaml"
    config.write_text("desc: " + "x-" * 20000 + "\n")
    root = tiny_bids(tmp / "raw")
    proc = cli(["batch", root, tmp / "out", "--config", config, "-q"], timeout=60)
    outcome = refused(proc)
    longest = max((len(line) for line in proc.stderr.splitlines()), default=0)
    return Outcome(outcome.ok and longest < 400, f"{outcome.got[:40]}... longest line {longest} chars")


def case_manifest_quoted_newline(tmp: Path) -> Outcome:
    hr = phantom_volume((32, 32, 4))
    write_nifti(tmp / "plan.nii.gz", hr)
    write_nifti(tmp / "dyn.nii.gz", np.stack([hr[::4, ::4]] * 2, -1), zooms=(4.0, 4.0, 2.0))
    manifest = tmp / "m.csv"
    manifest.write_text('subject,dynamic,planning\n01,dyn.nii.gz,"plan.nii.gz\n02,dyn.nii.gz,plan.nii.gz"\n')
    return refused(cli(["batch", manifest, tmp / "out", "-q"], timeout=120))


def case_checkpoint_nested_metadata(tmp: Path) -> Outcome:
    from safetensors.numpy import save_file

    path = tmp / "bad.safetensors"
    meta = {"format": "mrisr-checkpoint", "format_version": 1, "architecture": "prior-sr-unet",
            "arguments": {"use_prior": True}, "training": {"config": {"loss": ["tissue", 1]}},
            "normalisation": 99.5}
    save_file({"w": np.zeros(1, np.float32)}, str(path), metadata={"mrisr": json.dumps(meta)})
    hr = write_nifti(tmp / "p.nii.gz", phantom_volume((32, 32, 4)))
    return refused(cli(["finetune", "--planning", hr, "--keep", "25", "--model", path, "-o", tmp / "t.safetensors",
                        "--steps", "1"], timeout=120))


# ---------------------------------------------------------------- cases: size and time bounds


def case_demo_frames_huge(tmp: Path) -> Outcome:
    start = time.monotonic()
    proc = cli(["demo", "-o", tmp / "demo", "--frames", "2000000"], timeout=60)
    seconds = time.monotonic() - start
    outcome = refused(proc, code=2) if proc.returncode == 2 else refused(proc)
    return Outcome(outcome.ok and seconds < 45, f"{outcome.got} ({seconds:.0f} s)")


def case_finetune_one_slice(tmp: Path) -> Outcome:
    hr = write_nifti(tmp / "slab.nii.gz", phantom_volume((32, 32, 1)))
    return refused(cli(["finetune", "--planning", hr, "--keep", "25", "-o", tmp / "t.safetensors", "--steps", "1"],
                       timeout=120))


def case_phantom_frames_zero(tmp: Path) -> Outcome:
    return refused(cli(["phantom", "-o", tmp / "ph", "--frames", "0"], timeout=60), code=2)


def case_simulate_keep_tiny(tmp: Path) -> Outcome:
    hr = write_nifti(tmp / "hr.nii.gz", phantom_volume((32, 32, 4)))
    proc = cli(["simulate", hr, "-o", tmp / "lr.nii.gz", "--keep", "1e-300"], timeout=60)
    return refused(proc, code=proc.returncode if proc.returncode in (1, 2) else 1)


# ---------------------------------------------------------------- cases: concurrent writers, stale results


def _spawn(args: list) -> subprocess.Popen:
    return subprocess.Popen([*MRISR, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), stdin=subprocess.DEVNULL)


def case_two_phantoms_one_folder(tmp: Path) -> Outcome:
    import nibabel as nib

    write_nifti(tmp / "a.nii.gz", phantom_volume((40, 40, 4)))
    write_nifti(tmp / "b.nii.gz", phantom_volume((48, 44, 4)))
    out = tmp / "ph"
    runs = [_spawn(["phantom", "-o", out, "--source", tmp / src, "--frames", frames])
            for src, frames in (("a.nii.gz", 2), ("b.nii.gz", 3))]
    codes = [run.wait(timeout=180) for run in runs]
    errs = [run.stderr.read() for run in runs]
    if any(traceback_in(e) for e in errs):
        return Outcome(False, f"rc {codes}, traceback")
    if 0 not in codes:
        return Outcome(False, f"rc {codes}: neither run finished")
    planning = nib.load(str(out / "planning.nii.gz")).shape
    hr = nib.load(str(out / "dynamic_hr.nii.gz")).shape
    lr = nib.load(str(out / "dynamic_lr.nii.gz")).shape
    frames = json.loads((out / "phantom.json").read_text()).get("frames")
    consistent = planning == hr[:3] and hr[3] == lr[3] and (frames is None or frames == hr[3])
    return Outcome(consistent, f"rc {codes}: planning {planning}, hr {hr}, lr {lr}, json frames {frames}")


def case_two_simulates_one_output(tmp: Path) -> Outcome:
    import nibabel as nib

    a = write_nifti(tmp / "a.nii.gz", phantom_volume((32, 32, 4)))
    b = write_nifti(tmp / "b.nii.gz", phantom_volume((48, 48, 4)))
    out = tmp / "lr.nii.gz"
    runs = [_spawn(["simulate", src, "-o", out, "--keep", "25"]) for src in (a, b)]
    codes = [run.wait(timeout=120) for run in runs]
    errs = [run.stderr.read() for run in runs]
    if any(traceback_in(e) for e in errs):
        return Outcome(False, f"rc {codes}, traceback")
    shape = nib.load(str(out)).get_fdata().shape
    return Outcome(shape in ((16, 16, 4), (24, 24, 4)), f"rc {codes}: output {shape}, complete")


def case_resume_mhd_data_changed(tmp: Path) -> Outcome:
    volume = phantom_volume((32, 32, 4))
    write_nifti(tmp / "plan.nii.gz", volume)
    series = np.stack([volume[::4, ::4]] * 2, -1)
    (tmp / "dyn.raw").write_bytes(series.astype(np.float32).tobytes(order="F"))
    mhd(tmp / "dyn.mhd", "dyn.raw", dims=series.shape, spacing="4 4 2 0.5", offset="0 0 0 0")
    manifest = tmp / "m.csv"
    manifest.write_text("subject,dynamic,planning\n01,dyn.mhd,plan.nii.gz\n")
    code = textwrap.dedent(f"""
        from pathlib import Path
        import numpy as np
        from mrisr.batch.resume import plan_subject
        from mrisr.batch.validation import validate_batch
        cohort, settings = validate_batch(Path({str(manifest)!r}), Path({str(tmp / 'out')!r}))
        subject = cohort.subjects["01"]
        first = plan_subject(subject, Path({str(tmp / 'out')!r}), settings, {{}}).series[0].fingerprint
        raw = Path({str(tmp / 'dyn.raw')!r})
        data = bytearray(raw.read_bytes()); data[100] ^= 0xFF; raw.write_bytes(bytes(data))
        second = plan_subject(subject, Path({str(tmp / 'out')!r}), settings, {{}}).series[0].fingerprint
        print("changed" if first != second else "same")
    """)
    proc = subprocess.run([PYTHON, "-P", "-c", code], capture_output=True, text=True, env=env(), timeout=120)
    ok = proc.returncode == 0 and "changed" in proc.stdout
    return Outcome(ok, f"fingerprint {proc.stdout.strip() or last_line(proc.stderr)}")


# ---------------------------------------------------------------- cases: leftovers


def _no_leftover_folder(tmp: Path, command: list) -> Outcome:
    """``command`` (its output under ``tmp/new/deeper``) is refused and leaves no ``tmp/new``."""
    outcome = refused(cli(command, timeout=60))
    left = (tmp / "new").exists()
    return Outcome(outcome.ok and not left, f"{outcome.got}{'; left new/' if left else ''}")


def _not_an_image(tmp: Path) -> Path:
    bad = tmp / "bad.nii.gz"
    bad.write_bytes(b"not an image at all")
    return bad


def case_simulate_leftover_folder(tmp: Path) -> Outcome:
    return _no_leftover_folder(tmp, ["simulate", _not_an_image(tmp), "-o", tmp / "new" / "deeper" / "lr.nii.gz"])


def case_evaluate_leftover_folder(tmp: Path) -> Outcome:
    a = write_nifti(tmp / "a.nii.gz", phantom_volume((32, 32, 4)))
    b = write_nifti(tmp / "b.nii.gz", phantom_volume((24, 24, 4)))
    return _no_leftover_folder(tmp, ["evaluate", a, b, "-o", tmp / "new" / "deeper" / "m.csv"])


def case_reconstruct_leftover_folder(tmp: Path) -> Outcome:
    return _no_leftover_folder(tmp, ["reconstruct", _not_an_image(tmp), "-o", tmp / "new" / "deeper" / "sr.nii.gz"])


# ---------------------------------------------------------------- cases: exit codes and signals


def case_runtime_error_exit_1(tmp: Path) -> Outcome:
    return refused(cli(["simulate", tmp / "missing.nii.gz", "-o", tmp / "lr.nii.gz"], timeout=60), code=1)


def case_usage_error_exit_2(tmp: Path) -> Outcome:
    proc = cli(["simulate", "--no-such-option"], timeout=60)
    return Outcome(proc.returncode == 2 and not traceback_in(proc.stderr), f"rc {proc.returncode}")


def _terminal_sigint() -> None:
    """In the child: SIGINT as a terminal's foreground job gets it. A probe started in the background
    by a shell inherits SIGINT ignored (shells do that to background jobs), and so would the CLI."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def case_ctrl_c_exit_130(tmp: Path) -> Outcome:
    run = subprocess.Popen([*MRISR, "demo", "-o", str(tmp / "demo"), "--frames", "3"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                           start_new_session=True, preexec_fn=_terminal_sigint)
    time.sleep(8)
    os.killpg(run.pid, signal.SIGINT)
    try:
        _, err = run.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        return Outcome(False, "did not stop within 60 s of Ctrl-C")
    left = sorted(p.name for p in (tmp / "demo").rglob("*")) if (tmp / "demo").exists() else []
    return Outcome(run.returncode == 130 and not traceback_in(err) and not left,
                   f"rc {run.returncode}: {last_line(err)}; left {left}")


def case_ctrl_c_batch_jobs2(tmp: Path) -> Outcome:
    root = tiny_bids(tmp / "raw", subjects=("01", "02"))
    config = tmp / "slow.yaml"
    config.write_text("reconstruct:\n  finetune: true\n  finetune_minutes: 2\n")
    run = subprocess.Popen([*MRISR, "batch", str(root), str(root / "derivatives" / "mrisr"),
                            "--jobs", "2", "--config", str(config), "-q"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                           start_new_session=True, preexec_fn=_terminal_sigint)
    # wait until both workers hold a subject (each writes its log), then Ctrl-C the whole group
    logs = root / "derivatives" / "mrisr"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(logs.rglob("*.log"))) < 2 and run.poll() is None:
        time.sleep(0.5)
    time.sleep(3)
    os.killpg(run.pid, signal.SIGINT)
    try:
        _, err = run.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        return Outcome(False, "did not stop within 90 s of Ctrl-C")
    return Outcome(run.returncode == 130 and not traceback_in(err),
                   f"rc {run.returncode}{', worker traceback' if traceback_in(err) else ''}: {last_line(err)}")


CASES = [
    Case("manifest batch -> raw BIDS root", "output-location", "refused, dataset unchanged", case_manifest_into_bids_root),
    Case("manifest batch -> raw sub-01/func", "output-location", "refused, dataset unchanged", case_manifest_into_bids_subject),
    Case("manifest batch -> the inputs' folder", "output-location", "refused, folder unchanged", case_manifest_into_input_folder),
    Case("BIDS batch -> its own root", "output-location", "refused, dataset unchanged", case_bids_into_bids_root),
    Case("NIfTI-2 declaring 1000^3", "header", "one-line refusal", case_nifti2_huge),
    Case("NIfTI-2 complex voxels", "header", "one-line refusal", case_nifti2_complex),
    Case("NIfTI-2 zero voxel size", "header", "one-line refusal", case_nifti2_zero_voxel),
    Case("NIfTI-1 datatype code 999", "header", "one-line refusal", case_nifti1_unknown_datatype),
    Case("NIfTI-1 vox_offset NaN", "header", "one-line refusal", case_nifti1_nan_offset),
    Case("NIfTI-1 vox_offset inf", "header", "one-line refusal", case_nifti1_inf_offset),
    Case("NIfTI-1 dim 32767^3", "header", "one-line refusal", case_nifti1_dims_max),
    Case("NIfTI-1 pixdim inf", "header", "one-line refusal", case_nifti1_inf_pixdim),
    Case(".mhd -> 6 GB sparse .raw", "header", "refused before allocation", case_mhd_huge_data),
    Case(".mhd data file ../x.raw", "header", "one-line refusal", case_mhd_parent_path),
    Case(".mhd data file /abs/x.raw", "header", "one-line refusal", case_mhd_absolute_path),
    Case(".mhd LIST with ../ entry", "header", "one-line refusal", case_mhd_list_parent),
    Case(".mhd pattern s%02d.raw 0 5 1", "header", "loads", case_mhd_pattern_ok),
    Case(".nhdr data file ../x.raw", "header", "one-line refusal", case_nhdr_parent_path),
    Case(".nhdr -> 6 GB sparse .raw", "header", "refused before allocation", case_nhdr_huge),
    Case(".nrrd declaring 4G voxels", "header", "one-line refusal", case_nrrd_attached_huge),
    Case(".nrrd space direction NaN", "header", "one-line refusal", case_nrrd_nan_direction),
    Case(".mha zero spacing", "header", "one-line refusal", case_mha_zero_spacing),
    Case(".mha offset inf", "header", "one-line refusal", case_mha_inf_offset),
    Case(".mha two channels (complex)", "header", "one-line refusal", case_mha_complex),
    Case("4-D .mha 400 frames, lazy", "header", "streamed (bounded memory)", case_mha_4d_streamed),
    Case("4-D .nrrd 400 frames, lazy", "header", "streamed (bounded memory)", case_nrrd_4d_streamed),
    Case("FIFO as input", "special-files", "one-line refusal, no hang", case_fifo_input),
    Case("/dev/zero as input", "special-files", "one-line refusal, no hang", case_dev_zero_input),
    Case("symlink loop as input", "special-files", "one-line refusal", case_symlink_loop_input),
    Case("DICOM folder with a link loop", "special-files", "one-line refusal", case_dicom_folder_symlink_loop),
    Case("simulate truncated .nii.gz", "special-files", "one-line refusal", case_truncated_gzip_simulate),
    Case("simulate corrupt .nii.gz", "special-files", "one-line refusal", case_corrupt_gzip_simulate),
    Case("batch --config alias bomb", "config", "refused in seconds", case_yaml_alias_bomb_batch),
    Case("train --set alias bomb", "config", "refused in seconds, short line", case_yaml_alias_bomb_train_set),
    Case("batch --config 30 MB", "config", "refused by size", case_yaml_huge_file),
    Case("batch --config 40k-char value", "config", "error line < 400 chars", case_yaml_long_value_message),
    Case("manifest quoted newline", "config", "refused, not two subjects", case_manifest_quoted_newline),
    Case("checkpoint nested metadata", "config", "one-line refusal", case_checkpoint_nested_metadata),
    Case("demo --frames 2000000", "bounds", "refused at once", case_demo_frames_huge),
    Case("finetune one-slice slab", "bounds", "one-line refusal", case_finetune_one_slice),
    Case("phantom --frames 0", "bounds", "usage error (2)", case_phantom_frames_zero),
    Case("simulate --keep 1e-300", "bounds", "one-line refusal", case_simulate_keep_tiny),
    Case("two phantoms, one folder", "concurrency", "one run's files only", case_two_phantoms_one_folder),
    Case("two simulates, one output", "concurrency", "one complete output", case_two_simulates_one_output),
    Case("resume: .mhd data changed", "concurrency", "fingerprint changes", case_resume_mhd_data_changed),
    Case("failed simulate -o new/dir/", "leftovers", "new/ removed", case_simulate_leftover_folder),
    Case("failed evaluate -o new/dir/", "leftovers", "new/ removed", case_evaluate_leftover_folder),
    Case("failed reconstruct -o new/dir/", "leftovers", "new/ removed", case_reconstruct_leftover_folder),
    Case("missing input", "exit-codes", "exit 1", case_runtime_error_exit_1),
    Case("unknown option", "exit-codes", "exit 2", case_usage_error_exit_2),
    Case("Ctrl-C during demo", "signals", "exit 130, no traceback", case_ctrl_c_exit_130),
    Case("Ctrl-C group, batch --jobs 2", "signals", "exit 130, no worker traceback", case_ctrl_c_batch_jobs2),
]


def main(argv: list[str] | None = None) -> int:
    global REPO
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose mrisr is probed")
    parser.add_argument("--only", default="", help="run only cases whose class or name contains this")
    args = parser.parse_args(argv)
    REPO = args.repo.resolve()
    selected = [c for c in CASES if args.only in c.cls or args.only in c.name]
    rows = []
    for case in selected:
        tmp = Path(tempfile.mkdtemp(prefix="mrisr-probe-"))
        try:
            outcome = case.run(tmp)
        except Exception as exc:  # the probe itself must report, not stop
            outcome = Outcome(False, f"probe error: {type(exc).__name__}: {exc}"[:90])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append((case, outcome))
        print(f"{case.name:<34} {case.cls:<16} {case.expected:<32} {'pass' if outcome.ok else 'FAIL'}  {outcome.got}",
              flush=True)
    failed = sum(not outcome.ok for _, outcome in rows)
    print(f"\n{len(rows)} cases, {len(rows) - failed} pass, {failed} fail ({REPO})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
