"""Find the DICOM series in a folder (or around one ``.dcm`` file) and pick the one to read.

Headers only are read here (``stop_before_pixels``); every image of a series becomes one or more
:class:`SliceRecord` (one per file of a classic series, one per frame of an enhanced multi-frame
file) that :mod:`mrisr.io.dicom_read` turns into a grid and a frame order.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrisr.io.errors import MrisrInputError

__all__ = ["DicomSeries", "SliceRecord", "choose_series", "dicom_time", "find_series", "is_dicom_file", "series_table"]

#: tags read from every classic image (the frame order and timing come from these)
CLASSIC_TIME_KEYS = ("TemporalPositionIdentifier", "AcquisitionNumber", "TriggerTime", "InstanceNumber",
                     "AcquisitionTime")
#: the same for the frames of an enhanced multi-frame image (from their functional groups)
ENHANCED_TIME_KEYS = ("TemporalPositionIndex", "TriggerTime", "FrameAcquisitionDateTime", "FrameIndex")


def is_dicom_file(path: Path) -> bool:
    """A Part-10 file (``DICM`` after the 128-byte preamble) or a ``.dcm``/``.ima`` name."""
    if path.suffix.lower() in (".dcm", ".ima", ".dicom"):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


@dataclass
class SliceRecord:
    """One 2-D image: a classic file, or one frame of an enhanced multi-frame file.

    Attributes:
        path: the file.
        frame: the frame index inside an enhanced file (``None`` for a classic file).
        orientation: ImageOrientationPatient (row cosines, column cosines; LPS).
        position: ImagePositionPatient of the first voxel (mm, LPS).
        rows, columns: image size.
        spacing: PixelSpacing (between rows, between columns; mm).
        thickness: SliceThickness or SpacingBetweenSlices (mm), or ``None``.
        keys: the timing/ordering tags this image carries (numbers; times in seconds).
        slope, intercept: the rescale to stored values.
    """

    path: Path
    frame: int | None
    orientation: np.ndarray
    position: np.ndarray
    rows: int
    columns: int
    spacing: tuple[float, float]
    thickness: float | None
    keys: dict[str, float] = field(default_factory=dict)
    slope: float = 1.0
    intercept: float = 0.0


@dataclass
class DicomSeries:
    """The images of one SeriesInstanceUID."""

    uid: str
    description: str
    number: int | None
    enhanced: bool
    records: list[SliceRecord]
    files: list[Path]
    #: a header of the series (patient, study and frame-of-reference modules are copied from it)
    header: object = None
    #: images in the acquisition as the header declares them (``ImagesInAcquisition``), if it does
    declared_images: int | None = None

    def shape_text(self) -> str:
        positions = len({round(float(np.dot(r.position, _normal(r.orientation))), 2) for r in self.records})
        frames = len(self.records) // max(positions, 1)
        return f"{frames} frame(s) x {positions} slice(s)"


def _normal(orientation: np.ndarray) -> np.ndarray:
    return np.cross(orientation[:3], orientation[3:])


def _number(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def dicom_time(value) -> float | None:
    """``HHMMSS.ffffff`` (TM) -> seconds after midnight."""
    text = str(value or "").strip()
    if len(text) < 2 or not text.split(".")[0].isdigit():
        return None
    whole, _, frac = text.partition(".")
    whole = whole.ljust(6, "0")
    seconds = int(whole[:2]) * 3600 + int(whole[2:4]) * 60 + int(whole[4:6])
    return seconds + (float("0." + frac) if frac.isdigit() else 0.0)


def _dicom_datetime(value) -> float | None:
    """``YYYYMMDDHHMMSS.ffffff`` (DT) -> seconds since the epoch (no time zone)."""
    text = str(value or "").strip()
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        day = _dt.datetime.strptime(text[:8], "%Y%m%d").replace(tzinfo=_dt.timezone.utc).timestamp()
    except ValueError:
        return None
    rest = text[8:].split("+")[0].split("-")[0]
    return day + (dicom_time(rest) or 0.0)


def _first(item, name: str):
    sequence = getattr(item, name, None)
    return sequence[0] if sequence else None


def _group_value(per_frame, shared, sequence: str, attribute: str):
    for group in (per_frame, shared):
        item = _first(group, sequence) if group is not None else None
        if item is not None and attribute in item:
            return item.get(attribute)
    return None


def _classic_record(path: Path, ds) -> SliceRecord:
    missing = [name for name in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")
               if ds.get(name) in (None, "")]
    if missing:
        raise MrisrInputError(
            f"{path}: DICOM image has no {', '.join(missing)}, so its voxels have no position; "
            "export the series with its geometry (a secondary capture or a localizer cannot be used)"
        )
    keys = {name: _number(ds.get(name)) for name in CLASSIC_TIME_KEYS[:4]}
    keys["AcquisitionTime"] = dicom_time(ds.get("AcquisitionTime"))
    keys["ContentTime"] = dicom_time(ds.get("ContentTime"))
    thickness = _number(ds.get("SpacingBetweenSlices")) or _number(ds.get("SliceThickness"))
    return SliceRecord(
        path=path, frame=None,
        orientation=np.array([float(v) for v in ds.ImageOrientationPatient]),
        position=np.array([float(v) for v in ds.ImagePositionPatient]),
        rows=int(ds.Rows), columns=int(ds.Columns),
        spacing=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])), thickness=thickness,
        keys={k: v for k, v in keys.items() if v is not None},
        slope=_number(ds.get("RescaleSlope")) or 1.0, intercept=_number(ds.get("RescaleIntercept")) or 0.0,
    )


def _enhanced_records(path: Path, ds) -> list[SliceRecord]:
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    per_frames = ds.get("PerFrameFunctionalGroupsSequence") or []
    count = int(ds.get("NumberOfFrames") or 1)
    if len(per_frames) != count:
        raise MrisrInputError(
            f"{path}: enhanced DICOM declares {count} frames but has {len(per_frames)} per-frame functional "
            "groups; the file is damaged; export it again"
        )
    records = []
    for index, per in enumerate(per_frames):
        orientation = _group_value(per, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        position = _group_value(per, shared, "PlanePositionSequence", "ImagePositionPatient")
        spacing = _group_value(per, shared, "PixelMeasuresSequence", "PixelSpacing")
        if orientation is None or position is None or spacing is None:
            raise MrisrInputError(
                f"{path}: frame {index + 1} of the enhanced DICOM has no plane position, orientation or pixel "
                "spacing; export the series with its geometry"
            )
        thickness = (_number(_group_value(per, shared, "PixelMeasuresSequence", "SpacingBetweenSlices"))
                     or _number(_group_value(per, shared, "PixelMeasuresSequence", "SliceThickness")))
        keys = {
            "TemporalPositionIndex": _number(_group_value(per, shared, "FrameContentSequence", "TemporalPositionIndex")),
            "TriggerTime": _number(_group_value(per, shared, "CardiacSynchronizationSequence",
                                                "NominalCardiacTriggerDelayTime")),
            "FrameAcquisitionDateTime": _dicom_datetime(
                _group_value(per, shared, "FrameContentSequence", "FrameAcquisitionDateTime")),
            "FrameIndex": float(index),
        }
        slope = _number(_group_value(per, shared, "PixelValueTransformationSequence", "RescaleSlope"))
        intercept = _number(_group_value(per, shared, "PixelValueTransformationSequence", "RescaleIntercept"))
        records.append(SliceRecord(
            path=path, frame=index,
            orientation=np.array([float(v) for v in orientation]), position=np.array([float(v) for v in position]),
            rows=int(ds.Rows), columns=int(ds.Columns), spacing=(float(spacing[0]), float(spacing[1])),
            thickness=thickness, keys={k: v for k, v in keys.items() if v is not None},
            slope=slope or _number(ds.get("RescaleSlope")) or 1.0,
            intercept=intercept if intercept is not None else (_number(ds.get("RescaleIntercept")) or 0.0),
        ))
    return records


def _files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.name.upper() != "DICOMDIR" and is_dicom_file(p))


def find_series(path: Path) -> list[DicomSeries]:
    """The image series in a folder (searched recursively), or the series a ``.dcm`` file belongs to
    (its folder is searched for the other images of that series).

    Raises:
        MrisrInputError: no DICOM image in the folder, or an unreadable header.
    """
    import pydicom

    folder = path if path.is_dir() else path.parent
    files = _files_of(folder) if path.is_dir() else [path] + [p for p in _files_of(folder) if p != path]
    if not files:
        raise MrisrInputError(f"{path}: folder holds no DICOM series; pass a NIfTI file or a DICOM series folder")
    series: dict[str, DicomSeries] = {}
    seen: set[str] = set()  # SOPInstanceUIDs: a copy of an image (another transfer syntax, a backup) counts once
    wanted = None
    for file in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's notes on how a file bends the standard
                ds = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception as exc:
            if file == path or path.is_dir() and len(files) == 1:
                raise MrisrInputError(
                    f"{file}: not a readable DICOM file ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); "
                    "pass a DICOM series folder or a NIfTI file") from None
            continue  # another file of the folder: not part of any series we read
        if "PixelData" not in ds and "FloatPixelData" not in ds and not hasattr(ds, "Rows"):
            continue  # DICOMDIR-like, reports, presentation states
        instance = str(ds.get("SOPInstanceUID", "") or "")
        if instance and instance in seen:
            continue
        seen.add(instance)
        uid = str(ds.get("SeriesInstanceUID", "") or f"(no SeriesInstanceUID) {file.parent}")
        if file == path and not path.is_dir():
            wanted = uid
        if wanted is not None and not path.is_dir() and uid != wanted:
            continue
        if "MOSAIC" in [str(v).upper() for v in (ds.get("ImageType") or [])]:
            raise MrisrInputError(
                f"{file}: a Siemens mosaic (all slices tiled in one image), which mrisr does not unpack; "
                "convert the series with dcm2niix and pass the NIfTI file"
            )
        enhanced = int(ds.get("NumberOfFrames") or 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds
        entry = series.get(uid)
        if entry is None:
            entry = series[uid] = DicomSeries(
                uid=uid, description=str(ds.get("SeriesDescription", "") or ""),
                number=int(ds.SeriesNumber) if ds.get("SeriesNumber") not in (None, "") else None,
                enhanced=enhanced, records=[], files=[], header=ds,
                declared_images=int(ds.ImagesInAcquisition) if ds.get("ImagesInAcquisition") not in (None, "") else None,
            )
        entry.enhanced = entry.enhanced or enhanced
        entry.files.append(file)
        entry.records.extend(_enhanced_records(file, ds) if enhanced else [_classic_record(file, ds)])
    if not series:
        raise MrisrInputError(f"{path}: no DICOM image series found (only non-image DICOM files); "
                              "pass the folder of an MR series")
    return sorted(series.values(), key=lambda s: (s.number if s.number is not None else 1 << 30, s.uid))


def series_table(series: list[DicomSeries]) -> str:
    """One line per series: number, SeriesInstanceUID, description, frames and slices."""
    return "; ".join(
        f"[{s.number if s.number is not None else '-'}] {s.uid} '{s.description}' {s.shape_text()}" for s in series
    )


def choose_series(path: Path, series: list[DicomSeries], choice: str | None) -> DicomSeries:
    """The series to read: the only one, or the one ``choice`` names (its SeriesInstanceUID,
    SeriesNumber or SeriesDescription).

    Raises:
        MrisrInputError: several series and no choice, or a choice that names none (or several) of them,
            with the list of the series found.
    """
    if choice is None or str(choice).strip() == "":
        if len(series) == 1:
            return series[0]
        raise MrisrInputError(
            f"{path}: holds {len(series)} DICOM series: {series_table(series)}; pick one with --series "
            "(its SeriesInstanceUID, number or description) or the batch key series"
        )
    text = str(choice).strip()
    matches = [s for s in series if text in (s.uid, s.description) or (s.number is not None and text == str(s.number))]
    if len(matches) == 1:
        return matches[0]
    what = "names none" if not matches else f"matches {len(matches)}"
    raise MrisrInputError(f"{path}: --series {text!r} {what} of its series: {series_table(series)}; "
                          "give a SeriesInstanceUID from this list")
