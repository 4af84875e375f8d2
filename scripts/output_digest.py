"""Digest of what ``mrisr reconstruct``, ``mrisr batch`` and ``mrisr demo`` write, to prove a refactor
leaves every output byte-identical.

Run it once with each checkout on ``PYTHONPATH`` and compare the two digests::

    cd ../before && PYTHONPATH=$PWD nice -n 5 python ../after/scripts/output_digest.py /tmp/before.json
    cd ../after && PYTHONPATH=$PWD nice -n 5 python scripts/output_digest.py /tmp/after.json
    python scripts/output_digest.py --compare /tmp/before.json /tmp/after.json   # exit 1 on any difference

It uses only the public CLI (``mrisr.cli.main`` in a fresh interpreter per command, so every case starts
from a clean process) and ``mrisr.data.load_sample`` (to cut small sources from the bundled Colin27 slab,
written with nibabel), so the script does not depend on the checkout it lives in.

In a temporary folder it makes small dynamic phantoms with ``mrisr phantom`` (64x64x8 HR, 3 frames, fixed
seeds: plain breathing, a needle entering, a planning scan of swapped contrast), runs the cases of
:func:`cases` and records, per case, the SHA-256 of every file written:

* images (``.nii``, ``.nii.gz``, ``.png``, ``.safetensors``): the raw bytes;
* JSON: re-serialised with sorted keys after dropping wall-clock and file-system keys
  (:data:`VOLATILE_KEYS`) and making paths relative to the temporary folder (``<checkout>`` for paths
  inside the checkout under test, whose location differs between checkouts);
* TSV: with timing columns (:data:`VOLATILE_COLUMNS`) removed, paths normalised;
* logs and other text: paths normalised, time stamps, pids and durations replaced by placeholders.

Each case also records its exit code (``<exit code>``) and, for ``demo``, its printed table without the
time column. Torch runs on one thread (``OMP_NUM_THREADS=1``) in every case: thread count can change
floating-point reduction order. ``--precision auto`` picks bfloat16 on CPUs that have it, so digests
are comparable only between runs on the same machine.

Options: ``--quick`` runs a subset (no demo, no extra cases); ``--keep DIR`` keeps the work folder
(raw outputs) in DIR for diffing instead of deleting it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: JSON keys whose values depend on the wall clock or the file system, not on the computation
VOLATILE_KEYS = frozenset({
    "frame_seconds", "frame_wall_seconds", "total_seconds", "seconds", "timings",
    "finished", "started", "created", "date", "timestamp", "elapsed", "mtime_ns", "inode", "pid", "hostname",
})
#: TSV columns that hold durations
VOLATILE_COLUMNS = frozenset({"seconds", "total_seconds", "time", "time_s", "duration"})
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".png", ".safetensors", ".npy", ".npz")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:?\d{2}|Z)?")
DURATION = re.compile(r"\b\d+(\.\d+)? ?(s|ms|min)\b")
PID = re.compile(r"\bpid \d+")

#: the CLI in a fresh interpreter (mrisr.cli has no __main__; this is what the console script runs)
CLI = [sys.executable, "-c", "import sys; from mrisr.cli import main; sys.argv[0] = 'mrisr'; main()"]

# small phantoms: a 64x64x8 crop of the 128x144x32 bundled slab (3 frames, 6.25 % of k-space: LR 16x16x8)
# and, for the batch cohort, the 24x24x8 crop the batch tests use (25 % of k-space: LR 12x12x8)
CROP_SMALL = (slice(32, 96), slice(40, 104), slice(12, 20))
CROP_COHORT = (slice(52, 76), slice(60, 84), slice(12, 20))
FRAMES = 3


@dataclass
class Case:
    """One CLI run: ``args`` (after ``mrisr``) run in ``folder`` (relative to the work folder), whose
    new files are digested; ``quick`` cases also run with ``--quick``."""

    name: str
    args: list[str]
    folder: str
    quick: bool = False
    table: bool = False  # digest the printed rich table too (demo), without its time column
    setup: Callable[[Path], None] | None = field(default=None, repr=False)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Normaliser:
    """Makes text and JSON independent of the work folder, the checkout location and the clock."""

    def __init__(self, work: Path, checkout: Path) -> None:
        # longest first: the work folder may sit inside the checkout or the other way round
        self.replacements = sorted(
            {(str(work.resolve()) + "/", ""), (str(work) + "/", ""), (str(work.resolve()), "."), (str(work), "."),
             (str(checkout.resolve()), "<checkout>")},
            key=lambda pair: -len(pair[0]),
        )

    def path_text(self, text: str) -> str:
        for old, new in self.replacements:
            text = text.replace(old, new)
        return text

    def json_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.json_value(v) for k, v in value.items() if k not in VOLATILE_KEYS}
        if isinstance(value, list):
            return [self.json_value(v) for v in value]
        if isinstance(value, str):
            return ISO_DATE.sub("<date>", self.path_text(value))
        return value

    def digest(self, path: Path) -> str:
        name = path.name.lower()
        raw = path.read_bytes()
        if name.endswith(IMAGE_SUFFIXES):
            return sha256_bytes(raw)
        if name.endswith(".json"):
            data = self.json_value(json.loads(raw))
            return sha256_bytes(json.dumps(data, sort_keys=True, indent=1).encode())
        text = raw.decode("utf-8", errors="replace")
        if name.endswith(".tsv"):
            return sha256_bytes(self.tsv(text).encode())
        return sha256_bytes(self.log_text(text).encode())

    def tsv(self, text: str) -> str:
        rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
        if not rows:
            return ""
        keep = [i for i, col in enumerate(rows[0]) if col not in VOLATILE_COLUMNS and not col.endswith("_seconds")]
        out = io.StringIO()
        writer = csv.writer(out, delimiter="\t", lineterminator="\n")
        for row in rows:
            writer.writerow([self.path_text(row[i]) if i < len(row) else "" for i in keep])
        return out.getvalue()

    def log_text(self, text: str) -> str:
        text = ISO_DATE.sub("<date>", self.path_text(text))
        return DURATION.sub("<duration>", PID.sub("pid <pid>", text))


def table_text(stdout: str) -> str:
    """The rows of a rich table in ``stdout`` without the last column (the demo's ``time (s)``)."""
    lines = []
    for line in stdout.splitlines():
        for bar in ("│", "┃"):
            if line.count(bar) >= 3:
                cells = [c.strip() for c in line.split(bar)[1:-1]]
                lines.append("\t".join(cells[:-1]))
    return "\n".join(lines) + "\n"


def write_source(path: Path, crop: tuple[slice, slice, slice]) -> None:
    """A crop of the bundled sample as a NIfTI file, affine moved to the crop's first voxel."""
    import nibabel as nib
    import numpy as np

    from mrisr.data import load_sample

    sample = load_sample()
    affine = np.array(sample.affine, dtype=np.float64)
    offset = np.array([s.start for s in crop], dtype=np.float64)
    affine[:3, 3] = affine[:3, :3] @ offset + affine[:3, 3]
    image = nib.Nifti1Image(np.ascontiguousarray(np.asarray(sample.data)[crop], dtype=np.float32), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))


def write_first_frame(series: Path, out: Path) -> None:
    """Frame 0 of a 4-D series as a 3-D file (the CLI's one-frame input path)."""
    import nibabel as nib
    import numpy as np

    image = nib.load(str(series))
    frame = nib.Nifti1Image(np.asarray(image.dataobj)[..., 0], image.affine, image.header)
    frame.header.set_data_shape(frame.shape)
    nib.save(frame, str(out))


def bids_cohort(work: Path, labels: tuple[str, ...] = ("01", "02")) -> None:
    """The batch tests' tiny cohort, made with ``mrisr phantom``: phantoms/s<label> and bids/."""
    bids = work / "bids"
    bids.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "tiny phantom cohort", "BIDSVersion": "1.10.0"}))
    (bids / "participants.tsv").write_text("participant_id\n" + "".join(f"sub-{label}\n" for label in labels))
    for index, label in enumerate(labels):
        folder = work / "phantoms" / f"s{label}"
        run_cli(["phantom", "-o", str(folder), "--source", "cohort_source.nii.gz", "--frames", str(FRAMES),
                 "--keep", "25", "--seed", str(index), "--motion-mm", "2"], work, check=True)
        names = {
            "planning.nii.gz": f"sub-{label}/anat/sub-{label}_acq-planning_T1w.nii.gz",
            "dynamic_lr.nii.gz": f"sub-{label}/func/sub-{label}_task-dynamic_bold.nii.gz",
            "dynamic_hr.nii.gz": f"sub-{label}/func/sub-{label}_task-dynamic_acq-groundtruth_bold.nii.gz",
        }
        for source, target in names.items():
            (bids / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / source, bids / target)


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "PYTHONHASHSEED": "0", "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "MPLBACKEND": "Agg",
                "TZ": "UTC"})
    return env


def run_cli(args: list[str], cwd: Path, check: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, *args], cwd=cwd, env=cli_env(), capture_output=True, text=True)
    if result.returncode != 0:
        message = f"mrisr {' '.join(args)} exited {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
        if check:
            raise SystemExit(message)
        print(message, file=sys.stderr)
    return result


def cases() -> list[Case]:
    """Every case, in run order. Phantoms (made first): ``ph`` plain breathing with contrast uptake,
    ``needle`` a needle entering (absent from the planning scan), ``swap`` a planning scan of swapped
    contrast. Reconstructions read ``../ph`` etc. from their own folder."""
    lr, prior = "../ph/dynamic_lr.nii.gz", "../ph/planning.nii.gz"
    phantom = ["phantom", "--source", "../source.nii.gz", "--frames", str(FRAMES), "-o", "."]

    def rec(name: str, *flags: str, quick: bool = False, dynamic: str = lr, planning: str | None = prior,
            setup: Callable[[Path], None] | None = None) -> Case:
        args = ["reconstruct", dynamic, *(["--prior", planning] if planning else []), *flags, "-o", "sr.nii.gz", "-q"]
        return Case(f"reconstruct-{name}", args, f"reconstruct-{name}", quick=quick, setup=setup)

    def first_frame(folder: Path) -> None:
        write_first_frame(folder.parent / "ph" / "dynamic_lr.nii.gz", folder / "frame0.nii.gz")

    def batch_config(folder: Path) -> None:
        (folder / "batch.yaml").write_text("reconstruct:\n  maps: true\n  data_consistency: true\n"
                                           "  prior_mode: previous\n")

    batch = ["batch", "../bids", "out", "--device", "cpu", "-q"]
    return [
        Case("phantom-ph", [*phantom, "--seed", "0"], "ph", quick=True),
        Case("phantom-needle", [*phantom, "--seed", "1", "--insert", "needle"], "needle"),
        Case("phantom-swap", [*phantom, "--seed", "2", "--planning-contrast", "swap"], "swap"),
        # the cases the refactor must keep
        rec("default", quick=True),
        rec("keyhole", "--method", "keyhole", quick=True),
        rec("keyhole-registered", "--method", "keyhole-registered"),
        rec("keyhole-gated", "--method", "keyhole-gated", quick=True),
        rec("prior-planning", "--prior-mode", "planning"),
        rec("prior-previous", "--prior-mode", "previous", quick=True),
        rec("maps", "--maps"),
        rec("data-consistency", "--data-consistency"),
        rec("noprior", "--model", "default-noprior", planning=None, quick=True),
        rec("fp32", "--precision", "fp32"),
        # further paths of the same pipeline
        rec("tile", "--tile", "32", "32", "8"),
        rec("noprior-factor2", "--model", "default-noprior", "--factor", "2", planning=None),
        rec("matrix48", "--matrix", "48", "48"),  # the planning scan resampled to another HR grid
        rec("one-frame", dynamic="frame0.nii.gz", setup=first_frame),
        rec("needle-default", "--maps", dynamic="../needle/dynamic_lr.nii.gz", planning="../needle/planning.nii.gz"),
        rec("needle-gated-no-sparse", "--method", "keyhole-gated", "--no-sparse-changes",
            dynamic="../needle/dynamic_lr.nii.gz", planning="../needle/planning.nii.gz"),
        rec("swap-default", dynamic="../swap/dynamic_lr.nii.gz", planning="../swap/planning.nii.gz"),
        rec("swap-no-match-contrast", "--no-match-contrast",
            dynamic="../swap/dynamic_lr.nii.gz", planning="../swap/planning.nii.gz"),
        Case("batch", batch, "batch", quick=True),
        Case("batch-maps-dc-previous", [*batch, "--config", "batch.yaml"], "batch-maps-dc-previous",
             setup=batch_config),
        # the demo without fine-tuning (time-budgeted): 3 frames of the whole 128x144x32 sample
        Case("demo", ["demo", "-o", ".", "--frames", str(FRAMES), "--finetune-minutes", "0", "--seed", "0"], "demo",
             table=True),
    ]


def checkout_root() -> Path:
    import mrisr

    return Path(mrisr.__file__).resolve().parents[1]


def describe(root: Path) -> str:
    try:
        result = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--tags"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"n/a ({exc})"
    return result.stdout.strip() or f"n/a ({result.stderr.strip()})"


def environment() -> str:
    import nibabel
    import numpy
    import torch

    return (f"python {sys.version.split()[0]}, numpy {numpy.__version__}, torch {torch.__version__}, "
            f"nibabel {nibabel.__version__}")


def run_digest(output: Path, quick: bool, keep: Path | None) -> int:
    import mrisr

    started = time.monotonic()
    # a terminated run still removes its work folder (subprocess.run kills the running case on the way out)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    root = checkout_root()
    work = Path(tempfile.mkdtemp(prefix="mrisr-digest-"))
    normaliser = Normaliser(work, root)
    digest: dict[str, Any] = {"mrisr_version": mrisr.__version__, "git_describe": describe(root),
                              "environment": environment()}
    failed = []
    try:
        write_source(work / "source.nii.gz", CROP_SMALL)
        write_source(work / "cohort_source.nii.gz", CROP_COHORT)
        bids_cohort(work)
        for case in cases():
            if quick and not case.quick:
                continue
            folder = work / case.folder
            folder.mkdir(parents=True, exist_ok=True)
            if case.setup is not None:
                case.setup(folder)
            before = {p for p in folder.rglob("*") if p.is_file()}
            t0 = time.monotonic()
            result = run_cli(case.args, folder)
            files = {str(p.relative_to(folder)): normaliser.digest(p)
                     for p in folder.rglob("*") if p.is_file() and p not in before}
            files["<exit code>"] = str(result.returncode)
            if case.table:
                files["<printed table>"] = sha256_bytes(table_text(result.stdout).encode())
            digest[case.name] = dict(sorted(files.items()))
            if result.returncode != 0:
                failed.append(case.name)
            print(f"{case.name}: {len(files) - 1} files, exit {result.returncode}, {time.monotonic() - t0:.1f} s",
                  flush=True)
    finally:
        if keep is not None:
            if keep.exists():
                shutil.rmtree(keep)
            shutil.copytree(work, keep, symlinks=True)
        shutil.rmtree(work, ignore_errors=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(dict(sorted(digest.items())), indent=1, sort_keys=True) + "\n")
    print(f"{output}: {sum(isinstance(v, dict) for v in digest.values())} cases in {time.monotonic() - started:.0f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def compare(first: Path, second: Path) -> int:
    """Print every case/file whose digest differs or exists on one side only; 1 if any does."""
    a, b = (json.loads(Path(p).read_text()) for p in (first, second))
    differences = 0
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if not isinstance(left, dict) and not isinstance(right, dict):
            if left != right:
                print(f"note {key}: {left!r} vs {right!r}")
            continue
        if left is None or right is None:
            print(f"{key}: only in {first if right is None else second}")
            differences += 1
            continue
        for name in sorted(set(left) | set(right)):
            if left.get(name) != right.get(name):
                print(f"{key}/{name}: {left.get(name, '<missing>')} vs {right.get(name, '<missing>')}")
                differences += 1
    print(f"{differences} difference(s) between {first} and {second}")
    return 1 if differences else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", nargs="?", type=Path, help="digest JSON to write")
    parser.add_argument("--quick", action="store_true", help="a subset of the cases (no demo)")
    parser.add_argument("--keep", type=Path, help="copy the work folder (raw outputs) here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two digests")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if args.output is None:
        parser.error("give OUT.json to write a digest, or --compare A.json B.json")
    return run_digest(args.output, args.quick, args.keep)


if __name__ == "__main__":
    sys.exit(main())
