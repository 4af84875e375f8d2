"""Read a DICOM series (classic or enhanced multi-frame MR, 3-D or dynamic) into a :class:`Volume`.

The grid comes from the images' own geometry (ImageOrientationPatient, ImagePositionPatient,
PixelSpacing), never from a slice-thickness tag: slices are sorted along the normal of the image
plane, and repeated slice positions make a dynamic series. The frames of such a series are ordered
by the first tag of TemporalPositionIdentifier, AcquisitionNumber, TriggerTime, InstanceNumber
and AcquisitionTime (for enhanced files: TemporalPositionIndex, the trigger delay, the frame
acquisition time, the frame number) that tells the images at each position apart; the frame
interval is the median step of the trigger or acquisition times between frames.

Mixed orientations or image sizes, uneven slice spacing, missing slices and a single slice of a
multi-slice series are refused with a one-line :class:`MrisrInputError`. Voxel axes follow the
convention of SimpleITK and the rest of mrisr: ``(X, Y, Z[, T])`` with X along a row (the columns),
Y down the rows, Z along the slice normal; the affine is RAS+ in mm. A lazy read keeps only the
file list: :meth:`Volume.frame` decodes one frame's images at a time.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrisr.io.dicom_series import (
    CLASSIC_TIME_KEYS,
    ENHANCED_TIME_KEYS,
    DicomSeries,
    SliceRecord,
    choose_series,
    find_series,
)
from mrisr.io.errors import MrisrInputError
from mrisr.io.volume import Volume

__all__ = ["DicomFrames", "DicomGrid", "dicom_grid", "read_dicom"]

#: orientation cosines that differ by more than this are "mixed orientations"
ORIENTATION_TOLERANCE = 1e-4
#: slice positions closer than this (mm) are the same position
SAME_POSITION_MM = 1e-2
#: relative spread of slice gaps above which the spacing is "uneven"
SPACING_TOLERANCE = 0.01


@dataclass
class DicomGrid:
    """The voxel grid of a series and its images in ``[z][t]`` order."""

    affine: np.ndarray
    shape: tuple[int, int, int]
    slices: list[list[SliceRecord]]  # slices[z][t]
    n_frames: int
    order_key: str | None
    frame_times: list[float] | None
    tr: float | None
    time_source: str | None


def _check_same(path: Path, records: list[SliceRecord]) -> np.ndarray:
    first = records[0]
    for record in records[1:]:
        if np.abs(record.orientation - first.orientation).max() > ORIENTATION_TOLERANCE:
            raise MrisrInputError(
                f"{path}: series has mixed slice orientations ({_cosines(first)} in {first.path.name}, "
                f"{_cosines(record)} in {record.path.name}); export each orientation as its own series"
            )
        if (record.rows, record.columns) != (first.rows, first.columns) or \
                np.abs(np.subtract(record.spacing, first.spacing)).max() > 1e-4:
            raise MrisrInputError(
                f"{path}: series mixes image sizes ({first.columns}x{first.rows} at {first.spacing} mm and "
                f"{record.columns}x{record.rows} at {record.spacing} mm); export each as its own series"
            )
    return np.cross(first.orientation[:3], first.orientation[3:])


def _cosines(record: SliceRecord) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in record.orientation) + "]"


def _group_positions(path: Path, records: list[SliceRecord], normal: np.ndarray) -> list[list[SliceRecord]]:
    by_depth = sorted(records, key=lambda r: float(np.dot(r.position, normal)))
    groups: list[list[SliceRecord]] = []
    last = None
    for record in by_depth:
        depth = float(np.dot(record.position, normal))
        if last is None or depth - last > SAME_POSITION_MM:
            groups.append([])
        groups[-1].append(record)
        last = depth
    counts = sorted({len(g) for g in groups})
    if len(counts) > 1:
        short = [i for i, g in enumerate(groups) if len(g) < counts[-1]]
        raise MrisrInputError(
            f"{path}: missing slices: {len(short)} of {len(groups)} slice positions have fewer than "
            f"{counts[-1]} images (slice {short[0] + 1} has {len(groups[short[0]])}); copy the complete series"
        )
    return groups


def _check_spacing(path: Path, depths: np.ndarray) -> float:
    gaps = np.diff(depths)
    step = float(np.median(gaps))
    uneven = np.abs(gaps - step) > max(SPACING_TOLERANCE * step, SAME_POSITION_MM)
    if uneven.any():
        where = int(np.argmax(uneven))
        ratio = gaps[where] / step
        if abs(ratio - round(ratio)) < SPACING_TOLERANCE and round(ratio) >= 2:
            raise MrisrInputError(
                f"{path}: missing slices: a gap of {gaps[where]:.3f} mm after slice {where + 1} where the spacing is "
                f"{step:.3f} mm ({int(round(ratio)) - 1} slice(s) missing); copy the complete series"
            )
        raise MrisrInputError(
            f"{path}: uneven slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm between slice positions); "
            "mrisr needs a regular grid; resample the series or export it with even spacing"
        )
    return step


def _frame_order(path: Path, groups: list[list[SliceRecord]], keys: tuple[str, ...]) -> str | None:
    """Sort the images of every position into frame order in place; the tag that ordered them."""
    if len(groups[0]) == 1:
        return None
    for key in keys:
        if not all(key in r.keys for g in groups for r in g):
            continue
        if all(len({r.keys[key] for r in g}) == len(g) for g in groups):
            for group in groups:
                group.sort(key=lambda r: (r.keys[key], r.keys.get("InstanceNumber", 0.0)))
            if key in ("TemporalPositionIdentifier", "AcquisitionNumber", "TemporalPositionIndex"):
                labels = [tuple(r.keys[key] for r in g) for g in groups]
                if len(set(labels)) > 1:
                    raise MrisrInputError(
                        f"{path}: missing slices: the slice positions do not all have the same {key}s "
                        f"({labels[0]} at slice 1); copy the complete series"
                    )
            return key
    raise MrisrInputError(
        f"{path}: slice positions repeat {len(groups[0])} times but no tag ({', '.join(keys)}) tells the "
        "repeats apart; export the dynamic series with its timing tags"
    )


def _frame_times(groups: list[list[SliceRecord]], n_frames: int) -> tuple[list[float] | None, str | None]:
    for key, scale in (("TriggerTime", 1e-3), ("FrameAcquisitionDateTime", 1.0), ("AcquisitionTime", 1.0),
                       ("ContentTime", 1.0)):
        if not all(key in r.keys for g in groups for r in g):
            continue
        times = [float(np.mean([g[t].keys[key] for g in groups])) * scale for t in range(n_frames)]
        if n_frames > 1 and np.all(np.diff(times) > 0):
            return [round(t - times[0], 6) for t in times], key
    return None, None


def dicom_grid(path: Path, series: DicomSeries) -> DicomGrid:
    """The grid, slice/frame order and frame interval of one series (headers only).

    Raises:
        MrisrInputError: mixed orientations or sizes, uneven spacing, missing slices, no way to order
            repeated positions, or one slice of a series declared larger.
    """
    records = series.records
    normal = _check_same(path, records)
    groups = _group_positions(path, records, normal)
    n_frames = len(groups[0])
    first = records[0]
    if len(groups) == 1 and path.is_file() and (series.declared_images or 1) > 1:
        raise MrisrInputError(
            f"{path}: one slice of a series of {series.declared_images} images (the others are not in its "
            "folder); pass the folder that holds the whole series"
        )
    order_key = _frame_order(path, groups, ENHANCED_TIME_KEYS if series.enhanced else CLASSIC_TIME_KEYS)
    depths = np.array([float(np.dot(g[0].position, normal)) for g in groups])
    if len(groups) > 1:
        _check_spacing(path, depths)
        step = (groups[-1][0].position - groups[0][0].position) / (len(groups) - 1)
    else:
        step = normal * (first.thickness or 1.0)
    row_cos, col_cos = first.orientation[:3], first.orientation[3:]
    lps = np.eye(4)
    lps[:3, 0] = row_cos * first.spacing[1]  # X: along a row, one column to the next
    lps[:3, 1] = col_cos * first.spacing[0]  # Y: down a column, one row to the next
    lps[:3, 2] = step
    lps[:3, 3] = groups[0][0].position
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    times, source = _frame_times(groups, n_frames)
    tr = float(np.median(np.diff(times))) if times else None
    return DicomGrid(affine=affine, shape=(first.columns, first.rows, len(groups)), slices=groups,
                     n_frames=n_frames, order_key=order_key, frame_times=times, tr=tr, time_source=source)


def _pixels(record: SliceRecord) -> np.ndarray:
    import pydicom
    from pydicom.pixels import pixel_array

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's notes on how a file bends the standard
            if record.frame is None:
                raw = pydicom.dcmread(record.path).pixel_array
            else:
                raw = pixel_array(str(record.path), index=record.frame)
    except Exception as exc:
        raise MrisrInputError(
            f"{record.path}: cannot decode the DICOM pixel data ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:160]}); convert it to an uncompressed transfer syntax "
            "(e.g. gdcmconv --raw) or install the pydicom decoder it names"
        ) from None
    if raw.ndim != 2:
        raise MrisrInputError(f"{record.path}: pixel data of shape {raw.shape} is not one grey-scale image; "
                              "mrisr reads MR magnitude images")
    image = raw.astype(np.float32)
    if record.slope != 1.0 or record.intercept != 0.0:
        image = image * np.float32(record.slope) + np.float32(record.intercept)
    return image.T  # (rows, columns) -> (X, Y)


class DicomFrames:
    """Array-like ``(X, Y, Z, T)`` over a DICOM series: ``[..., t]`` decodes frame ``t`` only."""

    def __init__(self, grid: DicomGrid, source: Path) -> None:
        self.grid = grid
        self.source = source
        self.shape = (*grid.shape, grid.n_frames)
        self.ndim = 4
        self.dtype = np.dtype(np.float32)

    def frame(self, t: int) -> np.ndarray:
        if not 0 <= t < self.grid.n_frames:
            raise IndexError(f"{self.source}: series has {self.grid.n_frames} frames, asked for {t}")
        return np.stack([_pixels(group[t]) for group in self.grid.slices], axis=2)

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) == 2 and key[0] is Ellipsis and isinstance(key[1], int | np.integer):
            return self.frame(int(key[1]))
        return np.asarray(self)[key]

    def __array__(self, dtype=None, copy=None):
        data = np.stack([self.frame(t) for t in range(self.grid.n_frames)], axis=3)
        return data if dtype is None else data.astype(dtype)


def read_dicom(path: str | Path, series: str | None = None, lazy: bool = False) -> Volume:
    """A DICOM series folder, or a ``.dcm`` file and the rest of its series beside it, as a :class:`Volume`.

    Args:
        path: folder (searched recursively) or one file of the series.
        series: which series of a folder holding several (SeriesInstanceUID, SeriesNumber or
            SeriesDescription).
        lazy: keep only the headers; frames are decoded on demand (streaming).

    Returns:
        ``(X, Y, Z)`` or ``(X, Y, Z, T)`` float32 data, a RAS+ affine (mm), the frame interval in
        seconds (``tr``, ``None`` when the series carries no timing), and in ``extra["dicom"]`` the
        series UID, description, order tag, frame times and the first file (a header template).

    Raises:
        MrisrInputError: see :func:`dicom_grid` and :func:`mrisr.io.dicom_series.choose_series`.
    """
    from mrisr.io.checks import Declared, check_declared

    path = Path(path)
    chosen = choose_series(path, find_series(path), series)
    grid = dicom_grid(path, chosen)
    # the one header check every format goes through (size against memory, voxel size, position),
    # on the grid the headers declare; float32 is what the frames are decoded to
    check_declared(Declared(path=path, shape=(*grid.shape, grid.n_frames), dtype=np.dtype(np.float32), components=1,
                            spacing=tuple(float(v) for v in np.linalg.norm(grid.affine[:3, :3], axis=0)),
                            origin=tuple(float(v) for v in grid.affine[:3, 3]),
                            data_files=tuple(chosen.files), offset=0, compressed=True), lazy=lazy)
    proxy = DicomFrames(grid, path)
    if grid.n_frames == 1:
        data = proxy.frame(0)
    else:
        data = proxy if lazy else np.asarray(proxy)
    info = {"series_uid": chosen.uid, "description": chosen.description, "enhanced": chosen.enhanced,
            "order_key": grid.order_key, "frame_times": grid.frame_times, "time_source": grid.time_source,
            "template": str(chosen.files[0]), "files": len(chosen.files)}
    return Volume(data=data, affine=grid.affine, tr=grid.tr, qform_code=1, sform_code=1, source=path,
                  xyzt_units=("mm", "sec"), extra={"dicom": info})
