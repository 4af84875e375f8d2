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

from pathlib import Path

import numpy as np

from mrisr.io.errors import MrisrInputError
from mrisr.io.mrd_checks import (
    axis_from_lines,
    check_coverage,
    check_directions,
    fail,
    frame_numbers,
    frame_seconds,
    single_value,
    slice_ranks,
)
from mrisr.io.mrd_layout import AxisPlan, FrameIndex, RawLayout, axis_plan

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


def is_image_acquisition(flags: int) -> bool:
    """Whether an acquisition with these ISMRMRD ``flags`` holds image data (not noise, navigator, ...)."""
    flags = int(flags)
    for bit in _SKIPPED_FLAGS:
        if flags & (1 << (bit - 1)) and not (bit == 20 and flags & (1 << 20)):
            return False
    return True


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


def _open(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise fail(path, f"not a readable HDF5 file ({first})",
                    "copy the complete file again, or convert the raw data to ISMRMRD (docs/raw.md)") from None


def _find_group(path: Path, h5) -> str:
    if "dataset" in h5 and "data" in h5["dataset"]:
        return "dataset"
    groups = [name for name in h5 if hasattr(h5[name], "keys") and "data" in h5[name]]
    if len(groups) == 1:
        return groups[0]
    if len(groups) > 1:
        raise fail(path, f"holds several raw datasets ({', '.join(groups)})", "split the file so it holds one")
    images = [name for name in h5 if hasattr(h5[name], "keys") and any(k.startswith("image") for k in h5[name])]
    if images:
        raise fail(path, "holds MRD images, not raw acquisitions",
                    "pass the raw k-space file, or save the images as NIfTI or DICOM")
    raise fail(path, "holds no acquisitions (no /dataset/data)", "pass an ISMRMRD raw file written by a converter (docs/raw.md)")


def _parse_header(path: Path, h5, group: str):
    ismrmrd = require_ismrmrd(path)
    if "xml" not in h5[group]:
        raise fail(path, "has no ISMRMRD XML header (/dataset/xml)", "convert the raw data again with its header")
    try:
        xml = h5[group]["xml"][0]
        text = xml.decode("utf-8") if isinstance(xml, bytes) else str(xml)
        return ismrmrd.xsd.CreateFromDocument(text)
    except Exception as exc:  # xsdata raises several kinds on a damaged header
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise fail(path, f"ISMRMRD XML header cannot be parsed ({first})", "convert the raw data again") from None


def _head_fields(head: np.ndarray) -> dict[str, np.ndarray]:
    """The fields the layout needs from structured acquisition headers (``ismrmrd.hdf5.acquisition_header_dtype``)."""
    idx = head["idx"]
    return {
        "flags": head["flags"], "samples": head["number_of_samples"], "channels": head["active_channels"],
        "discard_pre": head["discard_pre"], "discard_post": head["discard_post"],
        "centre_sample": head["center_sample"], "traj_dims": head["trajectory_dimensions"],
        "encoding_ref": head["encoding_space_ref"], "time": head["acquisition_time_stamp"],
        "position": head["position"], "read_dir": head["read_dir"], "phase_dir": head["phase_dir"],
        "slice_dir": head["slice_dir"], "line": idx["kspace_encode_step_1"],
        "partition": idx["kspace_encode_step_2"], "slice": idx["slice"], "repetition": idx["repetition"],
        "phase": idx["phase"], "contrast": idx["contrast"], "set": idx["set"],
    }


def _read_heads(path: Path, dataset) -> dict[str, np.ndarray]:
    """The fields of every acquisition header that the layout needs, read in chunks."""
    n = int(dataset.shape[0])
    if n == 0:
        raise fail(path, "holds no acquisitions", "pass the raw file of a measurement that acquired data")
    parts: dict[str, list[np.ndarray]] = {}
    try:
        first = dataset[0]
        per_record = 512 + first["data"].nbytes + first["traj"].nbytes
        chunk = max(16, _INDEX_CHUNK_BYTES // per_record)
        for start in range(0, n, chunk):
            for key, value in _head_fields(dataset[start:start + chunk]["head"]).items():
                parts.setdefault(key, []).append(np.array(value))
    except (OSError, KeyError, ValueError) as exc:
        raise fail(path, f"acquisition headers cannot be read ({type(exc).__name__}: {exc})",
                    "copy the complete file again") from None
    return {key: np.concatenate(value) for key, value in parts.items()}


def _flag_set(flags: np.ndarray, bit: int) -> np.ndarray:
    return (flags & np.uint64(1 << (bit - 1))) != 0


def _limit(limits, name: str):
    value = getattr(limits, name, None) if limits is not None else None
    return value


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


def index_acquisitions(acquisitions: list, header, name: str = "stream") -> RawLayout:
    """The :class:`RawLayout` of acquisitions held in memory (e.g. one frame received on an MRD stream).

    Args:
        acquisitions: ``ismrmrd.Acquisition`` objects, in arrival order; :attr:`FrameIndex.acquisitions`
            index into this list.
        header: the parsed ISMRMRD header (``ismrmrd.xsd.ismrmrdHeader``).
        name: how the data is named in errors (it takes the place of a file path).

    Raises:
        MrisrInputError: as :func:`index_raw`, for data mrisr cannot use.
    """
    from ismrmrd.hdf5 import acquisition_header_dtype

    path = Path(name)
    if not acquisitions:
        raise fail(path, "holds no acquisitions", "send the acquisitions of a frame")
    heads = np.frombuffer(b"".join(bytes(a.getHead()) for a in acquisitions), dtype=acquisition_header_dtype)
    return _layout(path, "stream", header, {key: np.array(value) for key, value in _head_fields(heads).items()})


def _layout(path: Path, group: str, header, heads: dict[str, np.ndarray]) -> RawLayout:
    encodings = list(getattr(header, "encoding", None) or [])
    if not encodings:
        raise fail(path, "ISMRMRD header has no encoding section", "convert the raw data again with its header")
    if len(encodings) > 1 and np.any(heads["encoding_ref"] != 0):
        raise fail(path, f"acquisitions use {len(encodings)} encoding spaces",
                    "split the file so it holds one encoding (one matrix)")
    encoding = encodings[0]
    trajectory = getattr(encoding.trajectory, "value", str(encoding.trajectory))
    if str(trajectory).lower() != "cartesian" or np.any(heads["traj_dims"] > 0):
        raise fail(path, f"non-Cartesian trajectory ({trajectory}); mrisr reads Cartesian raw data only",
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
        raise fail(path, f"holds no image acquisitions (only {', '.join(skipped) or 'non-image data'})",
                    "pass the raw file of the imaging scan")
    if np.any(_flag_set(flags, _REVERSE_FLAG) & keep):
        raise fail(path, "has readouts acquired in reverse (EPI-style); mrisr reads plain Cartesian raw data only",
                    "reconstruct it to images first (e.g. Gadgetron) and pass the NIfTI")
    heads = {key: value[keep] for key, value in heads.items()}
    kept_index = np.flatnonzero(keep)

    fix_mixed = "split the file so each holds one matrix"
    samples = single_value(path, heads, "samples", "readout lengths", fix_mixed)
    coils = single_value(path, heads, "channels", "coil counts", fix_mixed)
    discard_pre = single_value(path, heads, "discard_pre", "readout discards", fix_mixed)
    discard_post = single_value(path, heads, "discard_post", "readout discards", fix_mixed)
    centre_sample = single_value(path, heads, "centre_sample", "readout centres", fix_mixed)
    for counter in ("contrast", "set"):
        if len(np.unique(heads[counter])) > 1:
            raise fail(path, f"acquisitions span {len(np.unique(heads[counter]))} {counter}s",
                        f"split the file so it holds one {counter}")

    enc, rec = encoding.encodedSpace, encoding.reconSpace
    try:
        enc_fov = np.array([enc.fieldOfView_mm.x, enc.fieldOfView_mm.y, enc.fieldOfView_mm.z], dtype=float)
        rec_fov = np.array([rec.fieldOfView_mm.x, rec.fieldOfView_mm.y, rec.fieldOfView_mm.z], dtype=float)
        enc_matrix = np.array([enc.matrixSize.x, enc.matrixSize.y, enc.matrixSize.z], dtype=int)
    except (AttributeError, TypeError, ValueError) as exc:
        raise fail(path, f"ISMRMRD header's encoded or reconstructed space is incomplete ({exc})",
                    "convert the raw data again with its header") from None
    if np.any(enc_fov <= 0) or np.any(enc_matrix <= 0):
        raise fail(path, f"encoded space {enc_matrix.tolist()} over {enc_fov.tolist()} mm is empty",
                    "convert the raw data again with its header")
    rec_fov = np.where(rec_fov > 0, rec_fov, enc_fov)
    limits = encoding.encodingLimits

    used = samples - discard_pre - discard_post
    centre = centre_sample - discard_pre
    if used < 2 or not 0 <= centre < used:
        raise fail(path, f"readout centre sample {centre_sample} lies outside its {samples} samples",
                    "convert the raw data again (the acquisition headers are wrong)")
    # samples are 1 / (encoded FOV) apart, oversampling included; a partial echo's missing side
    # is zero in the block
    readout = axis_plan(0, used - 1, centre, enc_fov[0], rec_fov[0])
    frame, counter = frame_numbers(path, heads)
    three_d = enc_matrix[2] > 1 or len(np.unique(heads["partition"])) > 1
    slice_values = np.unique(heads["slice"])
    if three_d and len(slice_values) > 1:
        raise fail(path, f"3-D data in {len(slice_values)} slabs", "split the file so it holds one slab")
    read_dir, phase_dir, slice_dir = check_directions(path, heads)
    slice_rank, positions = slice_ranks(path, heads, slice_values, slice_dir)
    phase = axis_from_lines(path, heads["line"], _limit(limits, "kspace_encoding_step_1"), enc_matrix[1], enc_fov[1],
                  rec_fov[1], "phase-encode line")
    if three_d:
        partition = axis_from_lines(path, heads["partition"], _limit(limits, "kspace_encoding_step_2"), enc_matrix[2],
                          enc_fov[2], rec_fov[2], "partition")
        z = heads["partition"].astype(np.int64) + partition.offset
    else:
        partition = AxisPlan(0, 0, 0, 1, 1, float(enc_fov[2]))
        z = slice_rank
    n_slices = 1 if three_d else len(slice_values)
    y = heads["line"].astype(np.int64) + phase.offset
    check_coverage(path, frame, slice_rank, heads, phase, partition if three_d else None, n_slices)
    order = np.argsort(frame, kind="stable")
    bounds = np.cumsum(np.bincount(frame, minlength=int(frame.max()) + 1))[:-1]
    frames = [FrameIndex(kept_index[part], y[part], z[part]) for part in np.split(order, bounds)]
    return RawLayout(
        path=path, group=group, readout=readout, phase=phase, partition=partition, n_slices=n_slices, coils=coils,
        frame_counter=counter, frames=frames, samples=samples, discard_pre=discard_pre,
        read_dir=read_dir, phase_dir=phase_dir, slice_dir=slice_dir, slice_positions=positions,
        frame_seconds=frame_seconds(heads["time"], frame), skipped=skipped, header=header,
    )
