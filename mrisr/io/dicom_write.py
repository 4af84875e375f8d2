"""Write a result as a derived DICOM MR series, one frame at a time (streamed like :class:`FrameWriter`).

Written with pydicom as classic MR Image Storage, one file per slice and frame: every PACS and
viewer reads that layout, while enhanced multi-frame MR (highdicom's strength) is still refused by
some archives and cannot be written frame by frame without holding the whole series. Each file
carries ImageType ``DERIVED\\SECONDARY\\OTHER`` (Value 3 of the MR Image Module names what kind of
MR image it is; ``OTHER`` is its Defined Term for an image that is none of the maps, projections or
subtractions it lists, and readers such as python-ismrmrd-server's dicom2mrd.py need a third value),
a new SeriesInstanceUID, a SeriesDescription naming mrisr and its version, its slice's position and
orientation, and (for a series) TemporalPositionIdentifier, AcquisitionNumber and the frame's time.
When the input was DICOM its patient, study and frame-of-reference modules are copied, so the
result files into the same study, and so are the acquisition parameters it names
(:data:`ACQUISITION_TAGS`: RepetitionTime, EchoTime, FlipAngle, ImagingFrequency; read from an
enhanced input's functional groups where they live there); what the input does not name stays
empty (the Type 2 RepetitionTime and EchoTime) or absent, never guessed. A NIfTI input gets a new
study and an ImageComments note that the series is not for clinical use.

SeriesNumber: a DICOM input's SeriesNumber plus 1000 (the derived series sorts next to its
source); otherwise, or when the input has none, a number in 1000..9999 derived from ``uid_seed``
(:func:`derived_series_number`), so the same inputs and options give the same number and results
of different inputs get different ones (a tie is a 1-in-9000 chance).

Voxel values are stored as signed 16-bit integers with one RescaleSlope per frame (the largest
magnitude of the frame maps to 32767), so the float result comes back to about 1 part in 30 000.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mrisr.io.dicom_series import dicom_time
from mrisr.io.errors import MrisrInputError
from mrisr.io.guard import check_target, is_stale_partial, write_errors
from mrisr.io.volume import Volume

__all__ = ["ACQUISITION_TAGS", "IMAGE_TYPE", "DicomSeriesWriter", "check_dicom_target", "derived_series_number",
           "dicom_geometry", "export_dicom"]

#: copied from the input's header when it was DICOM (patient, study, frame of reference, equipment position)
COPIED_TAGS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientSize", "PatientWeight", "OtherPatientIDs", "PatientComments",
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "StudyDescription", "FrameOfReferenceUID", "PositionReferenceIndicator", "PatientPosition",
    "InstitutionName", "BodyPartExamined", "MagneticFieldStrength",
)
#: acquisition parameters copied from a DICOM input: keyword -> (functional group sequence, keyword in its
#: item) where an enhanced MR file keeps it (``None``: top level only)
ACQUISITION_TAGS = {
    "RepetitionTime": ("MRTimingAndRelatedParametersSequence", "RepetitionTime"),
    "EchoTime": ("MREchoSequence", "EffectiveEchoTime"),
    "FlipAngle": ("MRTimingAndRelatedParametersSequence", "FlipAngle"),
    "ImagingFrequency": None,
}
#: Type 2 in the MR Image Module: present, empty when the input does not name them
_TYPE2_ACQUISITION = ("RepetitionTime", "EchoTime")
IMAGE_TYPE = ("DERIVED", "SECONDARY", "OTHER")
NOT_CLINICAL = "mrisr research output; not for clinical use"
INT16_MAX = 32767


def check_dicom_target(folder: str | Path, inputs: tuple[str | Path | None, ...] = ()) -> Path:
    """Validate a DICOM output folder before any work: not an input, and absent or empty.

    Raises:
        MrisrInputError: the folder is an input, a file, or holds files already.
    """
    folder = check_target(Path(folder), inputs)
    if folder.exists() and not folder.is_dir():
        raise MrisrInputError(f"{folder}: --output-format dicom writes a folder, and this is a file; give a folder name")
    if folder.is_dir() and any(folder.iterdir()):
        raise MrisrInputError(f"{folder}: output folder is not empty; remove it or choose a new folder with -o")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MrisrInputError(f"{folder}: cannot create {folder.parent} ({exc.strerror}); choose another -o") from None
    return folder


def dicom_geometry(affine: np.ndarray) -> tuple[list[float], list[float], np.ndarray, np.ndarray, float]:
    """Image plane of a RAS voxel-to-world matrix in DICOM terms.

    Returns:
        ImageOrientationPatient (6 cosines, LPS), PixelSpacing (between rows, between columns),
        the origin (LPS), the slice step vector (LPS, mm) and the slice spacing (mm).

    Raises:
        MrisrInputError: a grid whose axes are not perpendicular (DICOM planes cannot hold it).
    """
    lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)[:3, :]
    columns = lps[:, :3]
    zooms = np.linalg.norm(columns, axis=0)
    unit = columns / zooms
    gram = unit.T @ unit - np.eye(3)
    if np.abs(gram).max() > 1e-4:
        raise MrisrInputError(
            f"the result's grid is sheared (axes at {np.degrees(np.arccos(np.clip(unit[:, 0] @ unit[:, 1], -1, 1))):.2f} "
            "degrees), which DICOM image planes cannot hold; write NIfTI instead"
        )
    orientation = [*unit[:, 0], *unit[:, 1]]
    return orientation, [float(zooms[1]), float(zooms[0])], lps[:, 3], columns[:, 2], float(zooms[2])


def derived_series_number(seed: str, source: int | None = None) -> int:
    """The SeriesNumber of a derived series: ``source + 1000`` when the input series has a number,
    else a stable number in 1000..9999 from ``seed`` (the same seed, the same number)."""
    import hashlib

    if source is not None and source >= 0:
        return int(source) + 1000
    return 1000 + int.from_bytes(hashlib.sha256(seed.encode("utf-8")).digest()[:8], "big") % 9000


def _acquisition_value(template, keyword: str):
    """``keyword``'s value in ``template``: top level, else (enhanced MR) the shared, then the first
    per-frame functional group; ``None`` when absent or empty."""
    value = template.get(keyword)
    if value not in (None, ""):
        return value
    place = ACQUISITION_TAGS.get(keyword)
    if place is None:
        return None
    sequence, inner = place
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = template.get(groups) or []
        if not items:
            continue
        nested = items[0].get(sequence) or []
        if nested and nested[0].get(inner) not in (None, ""):
            return nested[0].get(inner)
    return None


def _acquisition_text(template, keyword: str) -> str | None:
    """``keyword``'s value as DICOM decimal text (an enhanced file stores some as binary floats, FD)."""
    value = _acquisition_value(template, keyword)
    if value is None:
        return None
    try:
        number = float(value[0] if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue" else value)
    except (TypeError, ValueError, IndexError):
        return None
    return _ds(number) if np.isfinite(number) else None


def _tm(seconds: float) -> str:
    seconds = seconds % 86400
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}{int(minutes):02d}{secs:09.6f}"


def _ds(value: float) -> str:
    text = f"{value:.6g}"
    return text if len(text) <= 16 else f"{value:.8e}"[:16]


class DicomSeriesWriter:
    """Stream an ``(X, Y, Z)`` frame at a time into a folder of DICOM files, atomically.

    The files go to a hidden temporary folder beside ``folder``, renamed into place when every frame
    arrived; an error or Ctrl-C removes it.

    Args:
        folder: the output folder (absent or empty).
        reference: the input volume; with ``extra["dicom"]["template"]`` its header's patient and
            study modules are copied.
        spatial_shape: ``(X, Y, Z)`` of the frames.
        n_frames: ``T``, or ``None`` for one 3-D volume.
        affine: RAS voxel-to-world matrix of the frames (default: the reference's).
        tr: frame interval in seconds (default: the reference's).
        uid_seed: text the UIDs are derived from (the same seed gives the same UIDs); default random.
        description: what follows ``mrisr <version>`` in SeriesDescription.
    """

    def __init__(self, folder: str | Path, reference: Volume, spatial_shape: tuple[int, int, int],
                 n_frames: int | None, affine: np.ndarray | None = None, tr: float | None = None,
                 uid_seed: str | None = None, description: str = "SR") -> None:
        from mrisr import __version__

        self.folder = Path(folder)
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.n_frames = n_frames
        self.affine = np.asarray(reference.affine if affine is None else affine, dtype=np.float64)
        self.tr = reference.tr if tr is None else tr
        self.geometry = dicom_geometry(self.affine)
        self.template = self._template(reference)
        seed = uid_seed if uid_seed is not None else os.urandom(16).hex()
        self._seed = f"mrisr-{__version__}-{seed}"
        self.series_uid = self._uid("series")
        self.version = __version__
        source = str(self.template.get("SeriesDescription", "") or "") if self.template is not None else ""
        self.description = f"mrisr {__version__} {description}{(' of ' + source) if source else ''}"[:64]
        self.note = NOT_CLINICAL if self.template is not None else (
            f"{NOT_CLINICAL}; made from a NIfTI file, so this is a new study with no patient data")
        self._tmp: Path | None = None
        self._written = 0

    @staticmethod
    def _template(reference: Volume):
        info = reference.extra.get("dicom") if reference.extra else None
        if not info or not info.get("template"):
            return None
        import pydicom

        return pydicom.dcmread(info["template"], stop_before_pixels=True)

    def _uid(self, *parts: object) -> str:
        from pydicom.uid import generate_uid

        return generate_uid(entropy_srcs=[self._seed, *map(str, parts)])

    def __enter__(self) -> DicomSeriesWriter:
        check_target(self.folder)
        parent = self.folder.parent
        for entry in parent.glob(f".{self.folder.name}.*.partial"):
            if entry.is_dir() and is_stale_partial(entry.name, self.folder.name):
                shutil.rmtree(entry, ignore_errors=True)
        with write_errors(self.folder):
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.{os.getpid()}.", suffix=".partial",
                                              dir=parent))
        return self

    def _base(self):
        from pydicom.dataset import Dataset

        ds = Dataset()
        template = self.template
        if template is not None:
            for tag in COPIED_TAGS:
                if tag in template:
                    setattr(ds, tag, template.get(tag))
            try:
                source = int(template.get("SeriesNumber"))
            except (TypeError, ValueError):
                source = None
            ds.SeriesNumber = derived_series_number(self._seed, source)
            base_time = template.get("AcquisitionTime") or template.get("SeriesTime") or ""
        else:
            ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "MRISR^RESEARCH", "MRISR", "", ""
            ds.StudyInstanceUID = self._uid("study")
            ds.FrameOfReferenceUID = self._uid("frame-of-reference")
            ds.StudyDate = ds.StudyTime = ds.ReferringPhysicianName = ds.AccessionNumber = ""
            ds.StudyID, ds.PositionReferenceIndicator = "MRISR", ""
            ds.StudyDescription = "mrisr research output (not for clinical use)"
            ds.SeriesNumber = derived_series_number(self._seed)
            base_time = ""
        for key in ("StudyInstanceUID", "FrameOfReferenceUID"):
            if not ds.get(key):
                setattr(ds, key, self._uid(key))
        ds.Modality = "MR"
        ds.SeriesInstanceUID = self.series_uid
        ds.SeriesDescription = self.description
        ds.ImageType = list(IMAGE_TYPE)
        ds.Manufacturer = "mrisr"
        ds.SoftwareVersions = self.version
        ds.DerivationDescription = f"prior-guided super-resolution by mrisr {self.version}"
        ds.ImageComments = self.note
        ds.BurnedInAnnotation = "NO"
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "RM", "NONE", "", "2D"
        ds.EchoTrainLength = ""
        for keyword in ACQUISITION_TAGS:
            value = _acquisition_text(template, keyword) if template is not None else None
            if value is not None:
                setattr(ds, keyword, value)
            elif keyword in _TYPE2_ACQUISITION:
                setattr(ds, keyword, "")
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.Columns, ds.Rows = self.spatial_shape[0], self.spatial_shape[1]
        orientation, spacing, _, _, slice_spacing = self.geometry
        ds.ImageOrientationPatient = [_ds(v) for v in orientation]
        ds.PixelSpacing = [_ds(v) for v in spacing]
        ds.SliceThickness = ds.SpacingBetweenSlices = _ds(slice_spacing)
        if self.n_frames is not None:
            ds.NumberOfTemporalPositions = self.n_frames
        return ds, base_time

    def write(self, frame: np.ndarray) -> None:
        """Write frame ``t`` (the next one): its slices as DICOM files."""
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage

        frame = np.asarray(frame, dtype=np.float32)
        if frame.shape != self.spatial_shape:
            raise ValueError(f"{self.folder}: frame shape {frame.shape} != {self.spatial_shape}")
        if self._written >= (self.n_frames or 1):
            raise ValueError(f"{self.folder}: all {self.n_frames or 1} frame(s) already written")
        t = self._written
        peak = float(np.abs(frame).max()) if frame.size else 0.0
        slope = peak / INT16_MAX if peak > 0 else 1.0
        stored = np.clip(np.rint(frame / slope), -INT16_MAX - 1, INT16_MAX).astype("<i2")
        _, _, origin, step, _ = self.geometry
        normal = np.cross(np.asarray(self.geometry[0][:3]), np.asarray(self.geometry[0][3:]))
        base, base_time = self._base()
        seconds = t * float(self.tr) if self.tr else 0.0
        for z in range(self.spatial_shape[2]):
            ds = base.copy()
            instance = t * self.spatial_shape[2] + z + 1
            ds.SOPClassUID = MRImageStorage
            ds.SOPInstanceUID = self._uid("instance", t, z)
            ds.InstanceNumber = instance
            position = origin + z * step
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.SliceLocation = _ds(float(position @ normal))
            if self.n_frames is not None:
                ds.TemporalPositionIdentifier = t + 1
                ds.AcquisitionNumber = t + 1
                if self.tr:
                    ds.TriggerTime = _ds(seconds * 1000.0)
            start = dicom_time(base_time)
            if start is not None or self.tr:
                ds.AcquisitionTime = ds.ContentTime = _tm((start or 0.0) + seconds)
            ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), "0"
            ds.WindowCenter, ds.WindowWidth = _ds(peak / 2), _ds(max(peak, 1e-6))
            ds.PixelData = np.ascontiguousarray(stored[:, :, z].T).tobytes()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds.file_meta.ImplementationVersionName = f"MRISR_{self.version}"[:16]
            with write_errors(self.folder):
                ds.save_as(self._tmp / f"MR{instance:06d}.dcm", enforce_file_format=True)
        self._written += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                expected = self.n_frames or 1
                if self._written != expected:
                    raise ValueError(f"{self.folder}: {self._written} of {expected} frame(s) written")
                with write_errors(self.folder):
                    os.chmod(self._tmp, 0o755)
                    if self.folder.is_dir():
                        self.folder.rmdir()  # empty (checked before the run): replaced by the finished folder
                    os.replace(self._tmp, self.folder)
        finally:
            if self._tmp is not None and self._tmp.exists():
                shutil.rmtree(self._tmp, ignore_errors=True)


def export_dicom(image: str | Path, folder: str | Path, reference: str | Path | None = None,
                 series: str | None = None, uid_seed: str | None = None) -> Path:
    """Write a NIfTI result (``(X, Y, Z[, T])``) as a derived DICOM series in ``folder``, frame by frame.

    Args:
        image: the result (``.nii.gz``).
        folder: the output folder (absent or empty).
        reference: the input the result was made from; when it is DICOM its patient and study are
            copied (``series`` picks its series as :func:`mrisr.io.load` does).
        uid_seed: as for :class:`DicomSeriesWriter` (default: the image's path).

    Returns:
        ``folder``.
    """
    from mrisr.io.load import is_dicom, load
    from mrisr.io.stream import iter_frames

    volume = load(image, lazy=True, validate=False)
    template = volume
    if reference is not None and is_dicom(reference):
        template = load(reference, lazy=True, validate=False, series=series)
    folder = check_dicom_target(folder, inputs=(image, reference))
    with DicomSeriesWriter(folder, template, volume.spatial_shape, volume.n_frames if volume.is_4d else None,
                           affine=volume.affine, tr=volume.tr,
                           uid_seed=uid_seed or str(Path(image).resolve())) as writer:
        for frame in iter_frames(volume):
            writer.write(frame)
    return folder
