"""A DICOM series as an MRD HDF5 file of 2-D image slices, written by the tests with pydicom and
ismrmrd directly (not through :mod:`mrisr.io`), in two layouts:

- ``mrd``: ISMRMRD's definitions. ``position`` is the world point (LPS) of voxel
  ``(Columns // 2, Rows // 2)``, ``field_of_view`` is ``(Columns * column spacing, Rows * row
  spacing, SliceThickness)``, pixel values are the rescaled DICOM values (float32), frames are
  counted by ``repetition``.
- ``dicom2mrd``: what python-ismrmrd-server's ``dicom2mrd.py`` writes (from its documented output,
  not its code): ``position`` is ImagePositionPatient (the first voxel), ``field_of_view`` is
  ``(PixelSpacing[1] * Rows, PixelSpacing[0] * Columns, SliceThickness)``, pixel values are the
  stored integers (RescaleSlope dropped), ``slice`` counts SliceLocation and ``phase`` TriggerTime,
  ``image_series_index`` is 0, and the meta keeps the DICOM header as base64 JSON (``DicomJson``).

:func:`vary_rescale` copies a DICOM folder with its own RescaleSlope (and for some, a
RescaleIntercept) per image, as scanners and mrisr's own writer may store a dynamic, so the
``dicom2mrd`` layout's stored integers differ in scale from image to image.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np


def _xml(first, layout: str) -> str:
    """The XML header: ``mrd`` names the study, frame of reference and patient position;
    ``dicom2mrd`` is what dicom2mrd.py writes (measurement and frame-of-reference UIDs, no study, the
    matrix and field of view as an encoding, and no ``patientPosition`` when the DICOM has no
    PatientPosition, which ismrmrd-python's schema-bound parse then refuses)."""
    import ismrmrd

    header = ismrmrd.xsd.ismrmrdHeader(
        experimentalConditions=ismrmrd.xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000))
    position = str(first.get("PatientPosition", "") or "")
    header.measurementInformation = ismrmrd.xsd.measurementInformationType(
        frameOfReferenceUID=str(first.FrameOfReferenceUID), protocolName=str(first.get("SeriesDescription", "")),
        patientPosition=ismrmrd.xsd.patientPositionType(position or "HFS"))
    if layout == "mrd":
        header.studyInformation = ismrmrd.xsd.studyInformationType(studyInstanceUID=str(first.StudyInstanceUID))
        return ismrmrd.xsd.ToXML(header)
    header.measurementInformation.measurementID = str(first.SeriesInstanceUID)
    rows, columns = int(first.Rows), int(first.Columns)
    space = ismrmrd.xsd.encodingSpaceType(
        matrixSize=ismrmrd.xsd.matrixSizeType(x=columns, y=rows, z=1),
        fieldOfView_mm=ismrmrd.xsd.fieldOfViewMm(x=float(first.PixelSpacing[0]) * rows,
                                                 y=float(first.PixelSpacing[1]) * columns,
                                                 z=float(first.SliceThickness)))
    header.encoding.append(ismrmrd.xsd.encodingType(encodedSpace=space, reconSpace=space,
                                                    encodingLimits=ismrmrd.xsd.encodingLimitsType(),
                                                    trajectory=ismrmrd.xsd.trajectoryType("cartesian")))
    xml = ismrmrd.xsd.ToXML(header)
    return xml if position else re.sub(r"\s*<patientPosition>[^<]*</patientPosition>", "", xml)


#: per image (InstanceNumber modulo 3): the factor its RescaleSlope is multiplied by, and its RescaleIntercept
RESCALES = ((1.0, 0.0), (1.15, 0.0), (1.3, -2.5))


def vary_rescale(folder: Path, out: Path) -> dict[int, tuple[float, float]]:
    """Copy the classic MR files of ``folder`` to ``out`` with a slope and intercept per image
    (:data:`RESCALES` by InstanceNumber), the stored integers recomputed so every file keeps its values
    (to the rounding of the new slope).

    Returns:
        ``{InstanceNumber: (RescaleSlope, RescaleIntercept)}`` of the files written.
    """
    import pydicom

    out.mkdir(parents=True)
    rescales = {}
    for path in sorted(Path(folder).glob("*.dcm")):
        d = pydicom.dcmread(path)
        values = d.pixel_array.astype(np.float64) * float(d.RescaleSlope) + float(d.RescaleIntercept)
        factor, intercept = RESCALES[int(d.InstanceNumber) % len(RESCALES)]
        slope = float(f"{float(d.RescaleSlope) * factor:.6g}")  # what a DS of 16 characters holds
        stored = np.clip(np.rint((values - intercept) / slope), -32768, 32767).astype("<i2")
        d.RescaleSlope, d.RescaleIntercept = f"{slope:.6g}", f"{intercept:g}"
        d.PixelData = np.ascontiguousarray(stored).tobytes()
        d.save_as(out / path.name)
        rescales[int(d.InstanceNumber)] = (slope, intercept)
    return rescales


def dicom_to_mrd(folder: Path, path: Path, layout: str = "mrd") -> Path:
    """Write the classic MR files of ``folder`` (one series) as an MRD file of 2-D images at ``path``."""
    import ismrmrd
    import pydicom

    datasets = sorted((pydicom.dcmread(p) for p in Path(folder).glob("*.dcm")), key=lambda d: int(d.InstanceNumber))
    locations = sorted({float(d.SliceLocation) for d in datasets})
    triggers = sorted({float(d.get("TriggerTime", 0) or 0) for d in datasets})
    images = []
    for d in datasets:
        rows, columns = int(d.Rows), int(d.Columns)
        row_spacing, column_spacing = (float(v) for v in d.PixelSpacing)
        cosines = np.array([float(v) for v in d.ImageOrientationPatient])
        along_row, along_column = cosines[:3], cosines[3:]
        corner = np.array([float(v) for v in d.ImagePositionPatient])
        thickness = float(d.SliceThickness)
        frame = int(d.get("TemporalPositionIdentifier", 1) or 1) - 1
        slope = float(d.get("RescaleSlope", 1) or 1)
        stored = d.pixel_array  # (rows, columns)
        if layout == "mrd":
            pixels = stored.astype(np.float32) * np.float32(slope) + np.float32(float(d.get("RescaleIntercept", 0) or 0))
            position = corner + (columns // 2) * column_spacing * along_row + (rows // 2) * row_spacing * along_column
            fov = (columns * column_spacing, rows * row_spacing, thickness)
        elif layout == "dicom2mrd":
            pixels = stored
            position = corner
            fov = (column_spacing * rows, row_spacing * columns, thickness)
        else:
            raise ValueError(layout)
        image = ismrmrd.Image.from_array(pixels, transpose=False)
        image.field_of_view = fov
        image.position = tuple(float(v) for v in position)
        image.read_dir = tuple(float(v) for v in along_row)
        image.phase_dir = tuple(float(v) for v in along_column)
        image.slice_dir = tuple(float(v) for v in np.cross(along_row, along_column))
        image.image_type = ismrmrd.IMTYPE_MAGNITUDE
        image.image_index = int(d.InstanceNumber)
        image.slice = locations.index(float(d.SliceLocation))
        meta = ismrmrd.Meta()
        meta["SequenceDescription"] = str(d.get("SeriesDescription", ""))
        if layout == "mrd":
            image.repetition = frame
            image.image_series_index = int(d.SeriesNumber)
        else:
            image.phase = triggers.index(float(d.get("TriggerTime", 0) or 0))
            image.image_series_index = 0
            header = d.copy()
            del header["PixelData"]
            meta["DicomJson"] = base64.b64encode(header.to_json().encode("utf-8")).decode("utf-8")
        image.attribute_string = meta.serialize()
        images.append(image)
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    dataset.write_xml_header(_xml(datasets[0], layout).encode("utf-8"))
    for image in images:
        dataset.append_image(f"image_{int(image.image_series_index)}", image)
    dataset.close()
    return path
