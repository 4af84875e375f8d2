"""Checks and counters of an ISMRMRD raw file's acquisition headers: frames, slices, directions, and
the coverage of k-space (every frame and slice acquires the same full block of lines).

Each check raises a one-line :class:`~mrisr.io.MrisrInputError` naming the file, the problem and the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrisr.io.errors import MrisrInputError
from mrisr.io.mrd_layout import AxisPlan, axis_plan


def fail(path: Path, problem: str, fix: str) -> MrisrInputError:
    """The one-line error ``"{path}: {problem}; {fix}"``."""
    return MrisrInputError(f"{path}: {problem}; {fix}")


def single_value(path: Path, heads: dict, key: str, what: str, fix: str) -> int:
    """The one value every acquisition has for ``key``; more than one is a mix of matrices."""
    values = np.unique(heads[key])
    if len(values) > 1:
        shown = ", ".join(str(int(v)) for v in values[:6])
        raise fail(path, f"mixed matrices: acquisitions have {len(values)} different {what} ({shown})", fix)
    return int(values[0])


def frame_numbers(path: Path, heads: dict) -> tuple[np.ndarray, str | None]:
    """Frame number of each acquisition: repetitions, else cardiac phases, else one frame."""
    repetitions, phases = np.unique(heads["repetition"]), np.unique(heads["phase"])
    if len(repetitions) > 1 and len(phases) > 1:
        raise fail(path, f"acquisitions span {len(repetitions)} repetitions and {len(phases)} phases",
                    "split the file so the frames follow one counter")
    for name, values in (("repetition", repetitions), ("phase", phases)):
        if len(values) > 1:
            return np.searchsorted(values, heads[name]).astype(np.int64), name
    return np.zeros(len(heads["repetition"]), dtype=np.int64), None


def check_directions(path: Path, heads: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dirs = []
    for key in ("read_dir", "phase_dir", "slice_dir"):
        values = heads[key].astype(np.float64)
        first = values[0]
        if np.abs(values - first).max() > 1e-4:
            raise fail(path, f"the {key.replace('_', ' ')}ection changes between acquisitions",
                        "split the file so it holds one orientation")
        norm = np.linalg.norm(first)
        if not np.isfinite(norm) or norm < 0.5:
            raise fail(path, f"acquisition {key} {first.tolist()} is not a direction",
                        "convert the raw data again (the acquisition headers lack their geometry)")
        dirs.append(first / norm)
    return dirs[0], dirs[1], dirs[2]


def slice_ranks(path: Path, heads: dict, values: np.ndarray, slice_dir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each acquisition's slice (0 = lowest along the slice direction) and each slice's centre."""
    counter = heads["slice"]
    which = np.searchsorted(values, counter)
    positions = heads["position"].astype(np.float64)
    centres = np.zeros((len(values), 3))
    for k in range(len(values)):
        own = positions[which == k]
        centres[k] = own[0]
        if np.abs(own - own[0]).max() > 1e-2:
            raise fail(path, f"the position of slice {int(values[k])} changes during the series (slice tracking "
                              "or table motion)", "reconstruct it to images first and pass the NIfTI")
    ranks = np.argsort(np.argsort(centres @ slice_dir, kind="stable"), kind="stable")
    return ranks[which].astype(np.int64), centres[np.argsort(ranks)]


def axis_from_lines(path: Path, index: np.ndarray, limit, matrix: int, encoded_fov: float, recon_fov: float,
          what: str) -> AxisPlan:
    first, last = int(index.min()), int(index.max())
    centre = getattr(limit, "center", None) if limit is not None else None
    centre = int(matrix) // 2 if centre is None else int(centre)
    if not first <= centre <= last:
        raise fail(path, f"the k-space centre ({what} {centre}) is not acquired (acquired {first}..{last})",
                    "pass data that samples the centre of k-space")
    return axis_plan(first, last, centre, float(encoded_fov), float(recon_fov))


def check_coverage(path: Path, frame: np.ndarray, slice_rank: np.ndarray, heads: dict, phase: AxisPlan,
                    partition: AxisPlan | None, n_slices: int) -> None:
    """Every frame and slice acquires the same full rectangle of lines (and partitions)."""
    lines = heads["line"].astype(np.int64) - phase.first
    n_lines = phase.last - phase.first + 1
    parts = heads["partition"].astype(np.int64) - partition.first if partition is not None else np.zeros_like(lines)
    n_parts = partition.last - partition.first + 1 if partition is not None else 1
    groups = int(frame.max() + 1) * n_slices
    group = frame * n_slices + (slice_rank if partition is None else 0)
    for values in (lines, parts):
        low = np.full(groups, np.iinfo(np.int64).max)
        high = np.full(groups, -1)
        np.minimum.at(low, group, values)
        np.maximum.at(high, group, values)
        if len(np.unique(low)) > 1 or len(np.unique(high)) > 1:
            bad = int(np.flatnonzero((low != low[0]) | (high != high[0]))[0])
            what = "phase-encode lines" if values is lines else "partitions"
            raise fail(path, f"mixed matrices: {_where(bad, n_slices)} acquires {what} "
                              f"{_span(low[bad], high[bad], values is lines, phase, partition)} but "
                              f"{_where(0, n_slices)} acquires {_span(low[0], high[0], values is lines, phase, partition)}",
                        "split the file so every frame holds the same lines")
    cell = np.unique((group * n_lines + lines) * n_parts + parts)
    counts = np.bincount(cell // (n_lines * n_parts), minlength=groups)
    if np.any(counts != n_lines * n_parts):
        bad = int(np.flatnonzero(counts != n_lines * n_parts)[0])
        have = np.zeros((n_lines, n_parts), dtype=bool)
        own = cell[cell // (n_lines * n_parts) == bad] % (n_lines * n_parts)
        have.ravel()[own] = True
        missing = np.flatnonzero(~have.all(axis=1)) + phase.first
        shown = ", ".join(str(int(m)) for m in missing[:6]) + (", ..." if len(missing) > 6 else "")
        raise fail(path, f"missing lines inside the encoded centre: {_where(bad, n_slices)} lacks phase-encode "
                          f"line(s) {shown} of {phase.first}..{phase.last}",
                    "mrisr needs every line of the sampled centre; reconstruct undersampled (parallel-imaging or "
                    "compressed-sensing) data to images first and pass the NIfTI")


def _where(group: int, n_slices: int) -> str:
    frame, slice_rank = divmod(group, n_slices)
    return f"frame {frame}" + (f" slice {slice_rank}" if n_slices > 1 else "")


def _span(low: int, high: int, is_lines: bool, phase: AxisPlan, partition: AxisPlan | None) -> str:
    base = phase.first if is_lines else (partition.first if partition is not None else 0)
    return f"{int(low) + base}..{int(high) + base}"


def frame_seconds(time: np.ndarray, frame: np.ndarray) -> float | None:
    """Median time between the first acquisitions of consecutive frames, in seconds.

    ISMRMRD leaves the clock's unit to the vendor; the 2.5 ms tick is Siemens' (and the one
    Gadgetron and the MRD DICOM converters assume).
    """
    n = int(frame.max()) + 1
    if n < 2:
        return None
    start = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(start, frame, time.astype(np.int64))
    steps = np.diff(start)
    if np.any(steps <= 0):
        return None
    return float(np.median(steps)) * 2.5e-3
