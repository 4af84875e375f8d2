"""DICOM series written by the tests, with pydicom directly (not through :mod:`mrisr.io`).

:func:`write_classic` writes one file per slice (and frame) in the layouts scanners export: a 3-D
series, or a dynamic one whose slice positions repeat, told apart by one chosen tag
(TemporalPositionIdentifier, AcquisitionNumber, TriggerTime, InstanceNumber or AcquisitionTime);
file names are shuffled so no reader can rely on them. :func:`write_enhanced` writes one enhanced
MR multi-frame file with per-frame functional groups. :data:`ORIENTATIONS` are the affines of the
orientation matrix (axial, coronal, sagittal, oblique about 20 degrees, left-handed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mrisr_testdata import rotation
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid


def _axes(columns: list[list[float]], zooms=(1.5, 1.5, 3.0), origin=(-40.0, -30.0, 12.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.array(columns, dtype=float).T * np.asarray(zooms)
    affine[:3, 3] = origin
    return affine


def _oblique() -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = rotation((20.0, -8.0, 5.0)) @ np.diag((1.5, 1.5, 3.0))
    affine[:3, 3] = (-40.0, -30.0, 12.0)
    return affine


#: voxel-to-world (RAS, mm) of each orientation: voxel axes as world directions
ORIENTATIONS = {
    "axial": _axes([[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
    # voxel axis 1 is world z, voxel axis 2 world y: the affine napari once crashed on
    "coronal": _axes([[1, 0, 0], [0, 0, 1], [0, 1, 0]]),
    "sagittal": _axes([[0, 1, 0], [0, 0, 1], [1, 0, 0]]),
    "oblique": _oblique(),
    "left_handed": _axes([[-1, 0, 0], [0, 1, 0], [0, 0, 1]]),
}


#: acquisition parameters the test files name (classic: top level; enhanced: RepetitionTime, FlipAngle and
#: EchoTime in the shared functional groups, as scanners write them)
ACQUISITION = {"RepetitionTime": "4.2", "EchoTime": "1.9", "FlipAngle": "12", "ImagingFrequency": "123.25",
               "MagneticFieldStrength": "3", "PatientPosition": "HFS"}
_GROUPED = {"RepetitionTime": ("MRTimingAndRelatedParametersSequence", "RepetitionTime"),
            "FlipAngle": ("MRTimingAndRelatedParametersSequence", "FlipAngle"),
            "EchoTime": ("MREchoSequence", "EffectiveEchoTime")}


def _base(series_uid: str, description: str, study_uid: str, number: int) -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "MRISR-T1", "19700101", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study_uid, "20240101", "120000", "1"
    ds.ReferringPhysicianName = ds.AccessionNumber = ""
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.PositionReferenceIndicator = ""
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = "MR", series_uid, number, description
    ds.Manufacturer = "TEST"
    for keyword in ("ImagingFrequency", "MagneticFieldStrength", "PatientPosition"):
        setattr(ds, keyword, ACQUISITION[keyword])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def _plane(affine: np.ndarray) -> tuple[list[float], list[float], np.ndarray, np.ndarray]:
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :]
    zooms = np.linalg.norm(lps[:, :3], axis=0)
    orientation = [*(lps[:, 0] / zooms[0]), *(lps[:, 1] / zooms[1])]
    return [round(v, 8) for v in orientation], [float(zooms[1]), float(zooms[0])], lps[:, 3], lps[:, 2]


def _save(ds: Dataset, sop_class: str, path: Path) -> None:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def write_classic(folder: Path, data: np.ndarray, affine: np.ndarray, order: str = "TemporalPositionIdentifier",
                  tr: float = 0.5, description: str = "dynamic", series_uid: str | None = None,
                  study_uid: str = "1.2.826.0.1.3680043.8.498.2", number: int = 5, seed: int = 0,
                  drop: tuple[int, int] | None = None) -> Path:
    """Write ``data`` ``(X, Y, Z[, T])`` (non-negative) as classic MR files in ``folder``.

    ``order`` is the one tag that orders the frames of a dynamic series; ``drop=(z, t)`` leaves out
    one image (a missing slice). Returns ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    data = np.asarray(data)
    frames = data.shape[3] if data.ndim == 4 else 1
    orientation, spacing, origin, step = _plane(affine)
    scale = 4000.0 / max(float(data.max()), 1e-6)
    rng = np.random.default_rng(seed)
    names = rng.permutation(data.shape[2] * frames)
    for t in range(frames):
        volume = data[..., t] if data.ndim == 4 else data
        for z in range(data.shape[2]):
            if drop == (z, t):
                continue
            ds = _base(series_uid, description, study_uid, number)
            for keyword in _GROUPED:
                setattr(ds, keyword, ACQUISITION[keyword])
            ds.Rows, ds.Columns = data.shape[1], data.shape[0]
            ds.PixelSpacing = [f"{v:.6g}" for v in spacing]
            ds.SliceThickness = f"{np.linalg.norm(step):.6g}"
            ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
            ds.ImagePositionPatient = [f"{v:.6f}" for v in origin + z * step]
            if frames > 1:
                if order == "TemporalPositionIdentifier":
                    ds.TemporalPositionIdentifier = t + 1
                elif order == "AcquisitionNumber":
                    ds.AcquisitionNumber = t + 1
                elif order == "TriggerTime":
                    ds.TriggerTime = f"{t * tr * 1000 + z:.1f}"
                elif order == "InstanceNumber":
                    pass
                elif order == "AcquisitionTime":
                    seconds = 36000 + t * tr + z * 0.01
                    ds.AcquisitionTime = f"{int(seconds // 3600):02d}{int(seconds % 3600 // 60):02d}{seconds % 60:09.6f}"
                else:
                    raise ValueError(order)
            if order != "AcquisitionTime":  # that layout orders by time alone
                ds.InstanceNumber = t * data.shape[2] + z + 1
            ds.RescaleSlope, ds.RescaleIntercept = f"{1 / scale:.10g}", "0"
            ds.PixelData = np.rint(volume[:, :, z].T * scale).astype("<u2").tobytes()
            _save(ds, MRImageStorage, folder / f"IM{names[t * data.shape[2] + z]:05d}")
    return folder


def write_enhanced(path: Path, data: np.ndarray, affine: np.ndarray, tr: float = 0.5,
                   description: str = "enhanced dynamic", series_uid: str | None = None) -> Path:
    """Write ``data`` ``(X, Y, Z[, T])`` as one enhanced MR multi-frame file (frames time-major,
    TemporalPositionIndex and FrameAcquisitionDateTime per frame)."""
    data = np.asarray(data)
    frames = data.shape[3] if data.ndim == 4 else 1
    orientation, spacing, origin, step = _plane(affine)
    scale = 4000.0 / max(float(data.max()), 1e-6)
    ds = _base(series_uid or generate_uid(), description, "1.2.826.0.1.3680043.8.498.2", 6)
    ds.Rows, ds.Columns = data.shape[1], data.shape[0]
    ds.NumberOfFrames = data.shape[2] * frames
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.InstanceNumber = 1
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [f"{v:.6g}" for v in spacing]
    measures.SliceThickness = f"{np.linalg.norm(step):.6g}"
    shared.PixelMeasuresSequence = Sequence([measures])
    plane = Dataset()
    plane.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    shared.PlaneOrientationSequence = Sequence([plane])
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = f"{1 / scale:.10g}", "0", "US"
    shared.PixelValueTransformationSequence = Sequence([transform])
    for keyword, (sequence, inner) in _GROUPED.items():
        if sequence not in shared:
            setattr(shared, sequence, Sequence([Dataset()]))
        setattr(getattr(shared, sequence)[0], inner, float(ACQUISITION[keyword]))  # FD in the groups
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    pixels = []
    for t in range(frames):
        volume = data[..., t] if data.ndim == 4 else data
        for z in range(data.shape[2]):
            item = Dataset()
            position = Dataset()
            position.ImagePositionPatient = [f"{v:.6f}" for v in origin + z * step]
            item.PlanePositionSequence = Sequence([position])
            content = Dataset()
            content.TemporalPositionIndex = t + 1
            content.InStackPositionNumber = z + 1
            content.StackID = "1"
            seconds = 36000 + t * tr
            content.FrameAcquisitionDateTime = (
                f"20240101{int(seconds // 3600):02d}{int(seconds % 3600 // 60):02d}{seconds % 60:09.6f}")
            content.DimensionIndexValues = [1, z + 1, t + 1]
            item.FrameContentSequence = Sequence([content])
            per_frame.append(item)
            pixels.append(np.rint(volume[:, :, z].T * scale).astype("<u2"))
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.stack(pixels).tobytes()
    _save(ds, EnhancedMRImageStorage, path)
    return path


def dcm2niix_volume(folder: Path, out: Path):
    """dcm2niix's reading of a DICOM folder: ``(nibabel image, its JSON sidecar)`` (exactly one output)."""
    import json
    import subprocess
    import sys

    import nibabel as nib

    exe = Path(sys.executable).with_name("dcm2niix")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(exe), "-z", "n", "-b", "y", "-f", "%s", "-o", str(out), str(folder)], check=True,
                   capture_output=True, text=True)
    images = sorted(out.glob("*.nii"))
    assert len(images) == 1, [p.name for p in out.iterdir()]
    return nib.load(str(images[0])), json.loads(images[0].with_suffix(".json").read_text())
