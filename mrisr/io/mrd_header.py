"""Index an ISMRMRD (MRD) raw file once: its header, its acquisitions' counters, and what they span.

Nothing here reads k-space samples: :func:`index_raw` reads the XML header and the fixed-size
acquisition headers (in chunks), checks that the file is Cartesian raw data mrisr can use, and
returns a :class:`RawLayout` that says, for every frame, which acquisitions to read and where
each of their samples goes. :mod:`mrisr.io.mrd` turns one frame's acquisitions into an image.

Counters: repetitions (or, when there is one repetition, cardiac phases) are frames; slices are
z for 2-D multi-slice data, ``kspace_encode_step_2`` (partitions) is z for 3-D data; repeated
lines (averages) are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrisr.io.errors import MrisrInputError

RAW_SUFFIXES = (".h5", ".mrd")
INSTALL_HINT = "pip install 'mrisr[raw]'"

#: acquisition flags (ISMRMRD bit numbers) of data that is not image data: skipped
_SKIPPED_FLAGS = {
    19: "noise",
    20: "parallel calibration",
    23: "navigator",
    24: "phase correction",
    26: "feedback",
    27: "dummy scan",
    28: "real-time feedback",
    29: "surface coil correction",
    30: "phase stabilisation reference",
    31: "phase stabilisation",
}
_REVERSE_FLAG = 22
#: bytes of acquisitions (samples included) read at a time while indexing. Whole records are read:
#: reading only the ``head`` field of the compound (h5py ``fields("head")``) leaked the skipped
#: variable-length samples (RSS grew by the file's size and was never returned), so the index is
#: built from whole records in bounded chunks that are freed as it goes
_INDEX_CHUNK_BYTES = 8 << 20


def is_raw(path: str | Path) -> bool:
    """Whether ``path`` names an ISMRMRD raw file (``.h5`` or ``.mrd``, case-insensitive)."""
    return str(path).lower().endswith(RAW_SUFFIXES)


def require_ismrmrd(path: str | Path):
    """The ``ismrmrd`` module, or a one-line :class:`MrisrInputError` naming the file and the extra to install."""
    try:
        import ismrmrd
    except ImportError:
        raise MrisrInputError(f"{path}: reading ISMRMRD raw data needs the ismrmrd package; {INSTALL_HINT}") from None
    return ismrmrd


@dataclass(frozen=True)
class AxisPlan:
    """How one encoded k-space axis becomes image voxels.

    The acquired samples (indices ``first..last`` in encoding coordinates, k-space centre at
    ``centre``) are placed in a block of ``block`` samples whose index ``block // 2`` holds the
    centre (missing edge samples of partial Fourier stay zero). The centred inverse FFT of the
    block gives ``block`` voxels of ``spacing`` mm over the encoded field of view; the ``keep``
    central ones (index ``block // 2`` kept at ``keep // 2``) cover the reconstructed field of view.
    """

    first: int
    last: int
    centre: int
    block: int
    keep: int
    spacing: float

    @property
    def offset(self) -> int:
        """Block index of encoding index ``e`` is ``e + offset``."""
        return self.block // 2 - self.centre

    @property
    def crop_start(self) -> int:
        return self.block // 2 - self.keep // 2


def centred_block(first: int, last: int, centre: int) -> int:
    """Smallest block holding samples ``first..last`` with ``centre`` at its index ``block // 2``."""
    below, above = centre - first, last - centre
    even = 2 * max(below, above + 1)
    odd = 2 * max(below, above) + 1
    return min(even, odd)


def axis_plan(first: int, last: int, centre: int, encoded_fov: float, recon_fov: float) -> AxisPlan:
    block = centred_block(first, last, centre)
    keep = block if recon_fov >= encoded_fov else max(1, int(round(block * recon_fov / encoded_fov)))
    return AxisPlan(first, last, centre, block, keep, encoded_fov / block)


@dataclass(frozen=True)
class FrameIndex:
    """The acquisitions of one frame: file indices (ascending) and where each line goes.

    Attributes:
        acquisitions: indices into the file's acquisition list.
        y: block index of each acquisition's phase-encode line.
        z: block index of its partition (3-D) or its slice rank (2-D, 0 = lowest slice).
    """

    acquisitions: np.ndarray
    y: np.ndarray
    z: np.ndarray


@dataclass
class RawLayout:
    """Everything needed to reconstruct any frame of a raw file, without reading its samples.

    Attributes:
        path: the file.
        group: HDF5 group of the dataset (``dataset`` unless the file names another).
        readout, phase, partition: :class:`AxisPlan` of the three encoded axes (``partition`` is
            one voxel of the slice thickness for 2-D data).
        n_slices: number of 2-D slices (1 for 3-D data).
        coils: receiver channels.
        frame_counter: ``repetition``, ``phase`` or ``None`` (a single frame).
        frames: one :class:`FrameIndex` per frame.
        samples, discard_pre: the readout as acquired (the same for every acquisition).
        read_dir, phase_dir, slice_dir: direction cosines (LPS).
        slice_positions: ``(n_slices, 3)`` centre of each slice by rank, or of the slab (LPS, mm).
        frame_seconds: time between frames from the acquisition time stamps (2.5 ms ticks), or ``None``.
        skipped: counts of acquisitions skipped, by kind (noise, navigator, ...).
        header: the parsed ISMRMRD header (``ismrmrd.xsd.ismrmrdHeader``).
    """

    path: Path
    group: str
    readout: AxisPlan
    phase: AxisPlan
    partition: AxisPlan
    n_slices: int
    coils: int
    frame_counter: str | None
    frames: list[FrameIndex]
    samples: int
    discard_pre: int
    read_dir: np.ndarray
    phase_dir: np.ndarray
    slice_dir: np.ndarray
    slice_positions: np.ndarray
    frame_seconds: float | None
    skipped: dict
    header: object

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def three_d(self) -> bool:
        return self.n_slices == 1 and self.partition.block > 1

    @property
    def shape(self) -> tuple[int, int, int]:
        """Image matrix ``(X, Y, Z)`` of one frame: readout, phase, partitions or slices."""
        z = self.n_slices if self.n_slices > 1 else self.partition.keep
        return self.readout.keep, self.phase.keep, z

    def describe(self) -> dict:
        """A JSON-ready summary of what was read (napari layer metadata, volume extra)."""
        return {
            "format": "ISMRMRD raw", "group": self.group, "coils": self.coils, "frames": self.n_frames,
            "frame_counter": self.frame_counter, "slices": self.n_slices, "three_d": self.three_d,
            "readout_samples": self.samples, "readout_oversampling_removed": self.readout.keep < self.readout.block,
            "lines": [self.phase.first, self.phase.last], "line_centre": self.phase.centre,
            "partitions": [self.partition.first, self.partition.last],
            "matrix": list(self.shape), "coil_combination": "sum of squares",
            "skipped_acquisitions": dict(self.skipped),
        }


def _fail(path: Path, problem: str, fix: str) -> MrisrInputError:
    return MrisrInputError(f"{path}: {problem}; {fix}")


def _open(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _fail(path, f"not a readable HDF5 file ({first})",
                    "copy the complete file again, or convert the raw data to ISMRMRD (docs/raw.md)") from None


def _find_group(path: Path, h5) -> str:
    if "dataset" in h5 and "data" in h5["dataset"]:
        return "dataset"
    groups = [name for name in h5 if hasattr(h5[name], "keys") and "data" in h5[name]]
    if len(groups) == 1:
        return groups[0]
    if len(groups) > 1:
        raise _fail(path, f"holds several raw datasets ({', '.join(groups)})", "split the file so it holds one")
    images = [name for name in h5 if hasattr(h5[name], "keys") and any(k.startswith("image") for k in h5[name])]
    if images:
        raise _fail(path, "holds MRD images, not raw acquisitions",
                    "pass the raw k-space file, or save the images as NIfTI or DICOM")
    raise _fail(path, "holds no acquisitions (no /dataset/data)", "pass an ISMRMRD raw file written by a converter (docs/raw.md)")


def _parse_header(path: Path, h5, group: str):
    ismrmrd = require_ismrmrd(path)
    if "xml" not in h5[group]:
        raise _fail(path, "has no ISMRMRD XML header (/dataset/xml)", "convert the raw data again with its header")
    try:
        xml = h5[group]["xml"][0]
        text = xml.decode("utf-8") if isinstance(xml, bytes) else str(xml)
        return ismrmrd.xsd.CreateFromDocument(text)
    except Exception as exc:  # xsdata raises several kinds on a damaged header
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _fail(path, f"ISMRMRD XML header cannot be parsed ({first})", "convert the raw data again") from None


def _read_heads(path: Path, dataset) -> dict[str, np.ndarray]:
    """The fields of every acquisition header that the layout needs, read in chunks."""
    n = int(dataset.shape[0])
    if n == 0:
        raise _fail(path, "holds no acquisitions", "pass the raw file of a measurement that acquired data")
    parts: dict[str, list[np.ndarray]] = {}
    try:
        first = dataset[0]
        per_record = 512 + first["data"].nbytes + first["traj"].nbytes
        chunk = max(16, _INDEX_CHUNK_BYTES // per_record)
        for start in range(0, n, chunk):
            head = dataset[start:start + chunk]["head"]
            idx = head["idx"]
            fields = {
                "flags": head["flags"], "samples": head["number_of_samples"], "channels": head["active_channels"],
                "discard_pre": head["discard_pre"], "discard_post": head["discard_post"],
                "centre_sample": head["center_sample"], "traj_dims": head["trajectory_dimensions"],
                "encoding_ref": head["encoding_space_ref"], "time": head["acquisition_time_stamp"],
                "position": head["position"], "read_dir": head["read_dir"], "phase_dir": head["phase_dir"],
                "slice_dir": head["slice_dir"], "line": idx["kspace_encode_step_1"],
                "partition": idx["kspace_encode_step_2"], "slice": idx["slice"], "repetition": idx["repetition"],
                "phase": idx["phase"], "contrast": idx["contrast"], "set": idx["set"],
            }
            for key, value in fields.items():
                parts.setdefault(key, []).append(np.array(value))
    except (OSError, KeyError, ValueError) as exc:
        raise _fail(path, f"acquisition headers cannot be read ({type(exc).__name__}: {exc})",
                    "copy the complete file again") from None
    return {key: np.concatenate(value) for key, value in parts.items()}


def _flag_set(flags: np.ndarray, bit: int) -> np.ndarray:
    return (flags & np.uint64(1 << (bit - 1))) != 0


def _limit(limits, name: str):
    value = getattr(limits, name, None) if limits is not None else None
    return value


def _single(path: Path, heads: dict, key: str, what: str, fix: str) -> int:
    values = np.unique(heads[key])
    if len(values) > 1:
        shown = ", ".join(str(int(v)) for v in values[:6])
        raise _fail(path, f"mixed matrices: acquisitions have {len(values)} different {what} ({shown})", fix)
    return int(values[0])


def index_raw(path: str | Path) -> RawLayout:
    """Read the header and acquisition headers of an ISMRMRD raw file and check it can be used.

    Raises:
        MrisrInputError: one line naming the file, the problem and the fix, for a file that is not
            HDF5, holds no acquisitions, is not Cartesian, misses lines inside the sampled centre,
            mixes matrices or orientations, or uses counters mrisr cannot map to frames.
    """
    path = Path(path)
    require_ismrmrd(path)
    with _open(path) as h5:
        group = _find_group(path, h5)
        header = _parse_header(path, h5, group)
        heads = _read_heads(path, h5[group]["data"])
    return _layout(path, group, header, heads)


def _layout(path: Path, group: str, header, heads: dict[str, np.ndarray]) -> RawLayout:
    encodings = list(getattr(header, "encoding", None) or [])
    if not encodings:
        raise _fail(path, "ISMRMRD header has no encoding section", "convert the raw data again with its header")
    if len(encodings) > 1 and np.any(heads["encoding_ref"] != 0):
        raise _fail(path, f"acquisitions use {len(encodings)} encoding spaces",
                    "split the file so it holds one encoding (one matrix)")
    encoding = encodings[0]
    trajectory = getattr(encoding.trajectory, "value", str(encoding.trajectory))
    if str(trajectory).lower() != "cartesian" or np.any(heads["traj_dims"] > 0):
        raise _fail(path, f"non-Cartesian trajectory ({trajectory}); mrisr reads Cartesian raw data only",
                    "reconstruct it to images first (e.g. Gadgetron or BART) and pass the NIfTI")
    flags = heads["flags"]
    keep = np.ones(len(flags), dtype=bool)
    skipped: dict[str, int] = {}
    for bit, kind in _SKIPPED_FLAGS.items():
        hit = _flag_set(flags, bit) & keep
        if bit == 20:  # calibration lines that are also image lines stay
            hit &= ~_flag_set(flags, 21)
        if hit.any():
            skipped[kind] = int(hit.sum())
            keep &= ~hit
    if not keep.any():
        raise _fail(path, f"holds no image acquisitions (only {', '.join(skipped) or 'non-image data'})",
                    "pass the raw file of the imaging scan")
    if np.any(_flag_set(flags, _REVERSE_FLAG) & keep):
        raise _fail(path, "has readouts acquired in reverse (EPI-style); mrisr reads plain Cartesian raw data only",
                    "reconstruct it to images first (e.g. Gadgetron) and pass the NIfTI")
    heads = {key: value[keep] for key, value in heads.items()}
    kept_index = np.flatnonzero(keep)

    fix_mixed = "split the file so each holds one matrix"
    samples = _single(path, heads, "samples", "readout lengths", fix_mixed)
    coils = _single(path, heads, "channels", "coil counts", fix_mixed)
    discard_pre = _single(path, heads, "discard_pre", "readout discards", fix_mixed)
    discard_post = _single(path, heads, "discard_post", "readout discards", fix_mixed)
    centre_sample = _single(path, heads, "centre_sample", "readout centres", fix_mixed)
    for counter in ("contrast", "set"):
        if len(np.unique(heads[counter])) > 1:
            raise _fail(path, f"acquisitions span {len(np.unique(heads[counter]))} {counter}s",
                        f"split the file so it holds one {counter}")

    enc, rec = encoding.encodedSpace, encoding.reconSpace
    try:
        enc_fov = np.array([enc.fieldOfView_mm.x, enc.fieldOfView_mm.y, enc.fieldOfView_mm.z], dtype=float)
        rec_fov = np.array([rec.fieldOfView_mm.x, rec.fieldOfView_mm.y, rec.fieldOfView_mm.z], dtype=float)
        enc_matrix = np.array([enc.matrixSize.x, enc.matrixSize.y, enc.matrixSize.z], dtype=int)
    except (AttributeError, TypeError, ValueError) as exc:
        raise _fail(path, f"ISMRMRD header's encoded or reconstructed space is incomplete ({exc})",
                    "convert the raw data again with its header") from None
    if np.any(enc_fov <= 0) or np.any(enc_matrix <= 0):
        raise _fail(path, f"encoded space {enc_matrix.tolist()} over {enc_fov.tolist()} mm is empty",
                    "convert the raw data again with its header")
    rec_fov = np.where(rec_fov > 0, rec_fov, enc_fov)
    limits = encoding.encodingLimits

    used = samples - discard_pre - discard_post
    centre = centre_sample - discard_pre
    if used < 2 or not 0 <= centre < used:
        raise _fail(path, f"readout centre sample {centre_sample} lies outside its {samples} samples",
                    "convert the raw data again (the acquisition headers are wrong)")
    # samples are 1 / (encoded FOV) apart, oversampling included; a partial echo's missing side
    # is zero in the block
    readout = axis_plan(0, used - 1, centre, enc_fov[0], rec_fov[0])
    frame, counter = _frames(path, heads)
    three_d = enc_matrix[2] > 1 or len(np.unique(heads["partition"])) > 1
    slice_values = np.unique(heads["slice"])
    if three_d and len(slice_values) > 1:
        raise _fail(path, f"3-D data in {len(slice_values)} slabs", "split the file so it holds one slab")
    read_dir, phase_dir, slice_dir = _directions(path, heads)
    slice_rank, positions = _slices(path, heads, slice_values, slice_dir)
    phase = _axis(path, heads["line"], _limit(limits, "kspace_encoding_step_1"), enc_matrix[1], enc_fov[1],
                  rec_fov[1], "phase-encode line")
    if three_d:
        partition = _axis(path, heads["partition"], _limit(limits, "kspace_encoding_step_2"), enc_matrix[2],
                          enc_fov[2], rec_fov[2], "partition")
        z = heads["partition"].astype(np.int64) + partition.offset
    else:
        partition = AxisPlan(0, 0, 0, 1, 1, float(enc_fov[2]))
        z = slice_rank
    n_slices = 1 if three_d else len(slice_values)
    y = heads["line"].astype(np.int64) + phase.offset
    _check_coverage(path, frame, slice_rank, heads, phase, partition if three_d else None, n_slices)
    order = np.argsort(frame, kind="stable")
    bounds = np.cumsum(np.bincount(frame, minlength=int(frame.max()) + 1))[:-1]
    frames = [FrameIndex(kept_index[part], y[part], z[part]) for part in np.split(order, bounds)]
    return RawLayout(
        path=path, group=group, readout=readout, phase=phase, partition=partition, n_slices=n_slices, coils=coils,
        frame_counter=counter, frames=frames, samples=samples, discard_pre=discard_pre,
        read_dir=read_dir, phase_dir=phase_dir, slice_dir=slice_dir, slice_positions=positions,
        frame_seconds=_frame_seconds(heads["time"], frame), skipped=skipped, header=header,
    )


def _frames(path: Path, heads: dict) -> tuple[np.ndarray, str | None]:
    """Frame number of each acquisition: repetitions, else cardiac phases, else one frame."""
    repetitions, phases = np.unique(heads["repetition"]), np.unique(heads["phase"])
    if len(repetitions) > 1 and len(phases) > 1:
        raise _fail(path, f"acquisitions span {len(repetitions)} repetitions and {len(phases)} phases",
                    "split the file so the frames follow one counter")
    for name, values in (("repetition", repetitions), ("phase", phases)):
        if len(values) > 1:
            return np.searchsorted(values, heads[name]).astype(np.int64), name
    return np.zeros(len(heads["repetition"]), dtype=np.int64), None


def _directions(path: Path, heads: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dirs = []
    for key in ("read_dir", "phase_dir", "slice_dir"):
        values = heads[key].astype(np.float64)
        first = values[0]
        if np.abs(values - first).max() > 1e-4:
            raise _fail(path, f"the {key.replace('_', ' ')}ection changes between acquisitions",
                        "split the file so it holds one orientation")
        norm = np.linalg.norm(first)
        if not np.isfinite(norm) or norm < 0.5:
            raise _fail(path, f"acquisition {key} {first.tolist()} is not a direction",
                        "convert the raw data again (the acquisition headers lack their geometry)")
        dirs.append(first / norm)
    return dirs[0], dirs[1], dirs[2]


def _slices(path: Path, heads: dict, values: np.ndarray, slice_dir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each acquisition's slice (0 = lowest along the slice direction) and each slice's centre."""
    counter = heads["slice"]
    which = np.searchsorted(values, counter)
    positions = heads["position"].astype(np.float64)
    centres = np.zeros((len(values), 3))
    for k in range(len(values)):
        own = positions[which == k]
        centres[k] = own[0]
        if np.abs(own - own[0]).max() > 1e-2:
            raise _fail(path, f"the position of slice {int(values[k])} changes during the series (slice tracking "
                              "or table motion)", "reconstruct it to images first and pass the NIfTI")
    ranks = np.argsort(np.argsort(centres @ slice_dir, kind="stable"), kind="stable")
    return ranks[which].astype(np.int64), centres[np.argsort(ranks)]


def _axis(path: Path, index: np.ndarray, limit, matrix: int, encoded_fov: float, recon_fov: float,
          what: str) -> AxisPlan:
    first, last = int(index.min()), int(index.max())
    centre = getattr(limit, "center", None) if limit is not None else None
    centre = int(matrix) // 2 if centre is None else int(centre)
    if not first <= centre <= last:
        raise _fail(path, f"the k-space centre ({what} {centre}) is not acquired (acquired {first}..{last})",
                    "pass data that samples the centre of k-space")
    return axis_plan(first, last, centre, float(encoded_fov), float(recon_fov))


def _check_coverage(path: Path, frame: np.ndarray, slice_rank: np.ndarray, heads: dict, phase: AxisPlan,
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
            raise _fail(path, f"mixed matrices: {_where(bad, n_slices)} acquires {what} "
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
        raise _fail(path, f"missing lines inside the encoded centre: {_where(bad, n_slices)} lacks phase-encode "
                          f"line(s) {shown} of {phase.first}..{phase.last}",
                    "mrisr needs every line of the sampled centre; reconstruct undersampled (parallel-imaging or "
                    "compressed-sensing) data to images first and pass the NIfTI")


def _where(group: int, n_slices: int) -> str:
    frame, slice_rank = divmod(group, n_slices)
    return f"frame {frame}" + (f" slice {slice_rank}" if n_slices > 1 else "")


def _span(low: int, high: int, is_lines: bool, phase: AxisPlan, partition: AxisPlan | None) -> str:
    base = phase.first if is_lines else (partition.first if partition is not None else 0)
    return f"{int(low) + base}..{int(high) + base}"


def _frame_seconds(time: np.ndarray, frame: np.ndarray) -> float | None:
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
