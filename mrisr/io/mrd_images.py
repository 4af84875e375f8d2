"""MRD (ISMRMRD) images to and from ``(X, Y, Z)`` volumes, their geometry kept.

Scanners and python-ismrmrd-server send images either as 2-D slices (one ``ismrmrd.Image`` per
slice, with ``slice`` and ``repetition`` or ``phase`` counters) or as 3-D images. :func:`stack_images`
puts the images of one frame into one ``(X, Y, Z)`` array with its RAS+ affine;
:func:`images_like` turns a result on a finer in-plane grid back into images that keep every
geometry field of the input (``position``, ``read_dir``, ``phase_dir``, ``slice_dir``,
``field_of_view``, ``slice``, ``repetition``, ``image_index``), with the new matrix and series.

Geometry convention (the same as :mod:`mrisr.io.mrd_geometry` for raw data, ISMRMRD's and
Gadgetron's): an image's ``position`` is the world point (LPS, mm) of voxel
``(X // 2, Y // 2, Z // 2)``; voxel indices grow along ``read_dir``, ``phase_dir`` and the slice
direction; the voxel size is ``field_of_view / matrix_size``. A finer matrix over the same field of
view keeps ``position`` where it is (the centred k-space zero-filling of :mod:`mrisr.io.geometry`),
so the output headers carry the input's ``position`` unchanged.

python-ismrmrd-server's ``dicom2mrd.py`` writes another layout (``geometry="dicom2mrd"``): DICOM's
ImagePositionPatient, the centre of the first voxel, as ``position``, and ``field_of_view`` as
``(PixelSpacing[1] * Rows, PixelSpacing[0] * Columns, SliceThickness)``, so the voxel size is
``(field_of_view[0] / Y, field_of_view[1] / X)``. Read as MRD, such a series lies half a field of
view off and, for a matrix that is not square, has the wrong voxel size; :func:`stack_images` reads
it exactly when told, and :func:`images_like` then writes the SR grid's first voxel as ``position``
(the field of view stays the input's, which keeps python-ismrmrd-server's ``mrd2dicom.py`` right).
:func:`looks_like_dicom2mrd` tells such images by the DICOM header ``dicom2mrd.py`` keeps in the meta.

Pixel values: an image whose meta carries ``RescaleSlope`` / ``RescaleIntercept`` (as plain meta
keys, or inside the DICOM header ``dicom2mrd.py`` keeps as ``DicomJson``) is read as ``stored *
slope + intercept`` in float32, image by image, as the DICOM reader of :mod:`mrisr.io` reads the
same files: ``dicom2mrd.py`` sends the stored integers, and each DICOM image may have its own slope.
Plain meta keys win over ``DicomJson`` (as python-ismrmrd-server's ``mrd2dicom.py`` reads them);
:func:`images_like` then writes ``RescaleSlope = 1`` and ``RescaleIntercept = 0`` into the output
meta, so ``mrd2dicom.py`` does not scale the result a second time.

Pixel layout: ``Image.data`` is ``(channels, z, y, x)``; a volume here is ``(X, Y, Z)``. Complex
images are read as their magnitude; images of more than one channel are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mrisr.io.errors import MrisrInputError
from mrisr.io.mrd_geometry import LPS_TO_RAS

__all__ = ["GEOMETRIES", "ImageStack", "images_like", "looks_like_dicom2mrd", "raw_stack", "rescale_of",
           "stack_images", "volume_to_images"]

#: ``ImageProcessingHistory`` entry added to every image mrisr sends
HISTORY_ENTRY = "MRISR"
#: how ``position`` and ``field_of_view`` are read: ISMRMRD's definition, or dicom2mrd.py's layout
GEOMETRIES = ("mrd", "dicom2mrd")
#: DICOM tags (group, element as DICOM JSON keys) of RescaleIntercept and RescaleSlope
_INTERCEPT_TAG, _SLOPE_TAG = "00281052", "00281053"


@dataclass
class ImageStack:
    """The images of one frame as a volume.

    Attributes:
        data: float32 ``(X, Y, Z)``.
        affine: 4x4 voxel-to-world, RAS+ (mm).
        heads: the ``ismrmrd.ImageHeader`` of each z slice (2-D input, by rank along the slice
            direction) or the one header of a 3-D image.
        attributes: the attribute (meta) string of each header.
        three_d: whether the input was one 3-D image.
        geometry: the layout the headers were read in (one of :data:`GEOMETRIES`).
        rescaled: whether any image's pixels were rescaled by the slope / intercept in its meta.
    """

    data: np.ndarray
    affine: np.ndarray
    heads: list = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    three_d: bool = False
    geometry: str = "mrd"
    rescaled: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]


def _vector(values) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=np.float64)


def _attribute_text(image) -> str:
    value = image.attribute_string
    return value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")


def _meta_number(value) -> float | None:
    """A number from a meta value (text, a one-item list) or a DICOM JSON element (``{"Value": [...]}``)."""
    if isinstance(value, dict):
        value = value.get("Value")
    if isinstance(value, list | tuple):
        value = value[0] if len(value) == 1 else None
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def rescale_of(attributes: str, name: str = "stream") -> tuple[float, float] | None:
    """The ``(slope, intercept)`` an image's meta asks for, or ``None`` when it names neither.

    Plain ``RescaleSlope`` / ``RescaleIntercept`` meta keys are read first, then the DICOM header
    ``dicom2mrd.py`` keeps as ``DicomJson`` (base64 JSON); a missing slope is 1, a missing intercept 0.

    Raises:
        MrisrInputError: a slope of 0 or a value that is not finite.
    """
    if "Rescale" not in attributes and "DicomJson" not in attributes:
        return None  # the usual case, without parsing the meta
    import base64
    import json

    import ismrmrd

    try:
        meta = ismrmrd.Meta.deserialize(attributes)
    except Exception:  # noqa: BLE001 - ElementTree raises several kinds; such meta carries no rescale
        return None
    slope, intercept = _meta_number(meta.get("RescaleSlope")), _meta_number(meta.get("RescaleIntercept"))
    if slope is None and intercept is None and meta.get("DicomJson"):
        try:
            header = json.loads(base64.b64decode(meta["DicomJson"]))
        except (TypeError, ValueError):
            header = {}
        if isinstance(header, dict):
            slope, intercept = _meta_number(header.get(_SLOPE_TAG)), _meta_number(header.get(_INTERCEPT_TAG))
    if slope is None and intercept is None:
        return None
    slope = 1.0 if slope is None else slope
    intercept = 0.0 if intercept is None else intercept
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise MrisrInputError(f"{name}: image meta names RescaleSlope {slope:g} and RescaleIntercept {intercept:g}; "
                              "send a finite, non-zero slope (or leave both out)")
    return slope, intercept


def _pixels(image, name: str, rescale: tuple[float, float] | None = None) -> np.ndarray:
    """``(X, Y, Z)`` float32 of one image (magnitude of complex data), times ``rescale``'s slope plus
    its intercept (in float32, as :mod:`mrisr.io.dicom_read` rescales DICOM pixels)."""
    data = np.asarray(image.data)
    if data.shape[0] != 1:
        raise MrisrInputError(f"{name}: image {int(image.image_index)} has {data.shape[0]} channels; "
                              "send coil-combined images (one channel)")
    data = data[0]
    data = np.abs(data) if np.iscomplexobj(data) else data
    data = np.ascontiguousarray(data.transpose(2, 1, 0), dtype=np.float32)
    if rescale is not None and rescale != (1.0, 0.0):
        data = data * np.float32(rescale[0]) + np.float32(rescale[1])
    return data


def _directions(head, name: str) -> np.ndarray:
    """``(3, 3)`` columns read, phase, slice (unit, LPS)."""
    dirs = []
    for key in ("read_dir", "phase_dir", "slice_dir"):
        v = _vector(getattr(head, key))
        norm = np.linalg.norm(v)
        if not np.isfinite(norm) or norm < 0.5:
            raise MrisrInputError(f"{name}: image {key} {v.tolist()} is not a direction; send images with their geometry")
        dirs.append(v / norm)
    return np.stack(dirs, axis=1)


def stack_images(images: list, name: str = "stream", geometry: str = "mrd", rescale: bool = True) -> ImageStack:
    """The images of one frame as one volume with its affine.

    Args:
        images: one 3-D ``ismrmrd.Image``, or 2-D images (one per slice, any order) of one frame.
        name: how the data is named in errors.
        geometry: ``mrd`` (``position`` is voxel ``(X // 2, Y // 2[, Z // 2])``, the voxel size
            ``field_of_view / matrix``) or ``dicom2mrd`` (2-D slices as dicom2mrd.py writes them:
            ``position`` is voxel ``(0, 0)``, the voxel size ``(field_of_view[0] / Y,
            field_of_view[1] / X)``; see the module docstring).
        rescale: apply each image's ``RescaleSlope`` / ``RescaleIntercept`` meta (see
            :func:`rescale_of`).

    Returns:
        :class:`ImageStack`; 2-D slices are ordered by their position along the slice direction.

    Raises:
        MrisrInputError: no images, several 3-D images, images of different matrices, fields of
            view or orientations, two images of one slice, slices not equally spaced, a rescale
            slope of 0.
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry {geometry!r} is not one of {', '.join(GEOMETRIES)}")
    if not images:
        raise MrisrInputError(f"{name}: a frame without images; send at least one image")
    heads = [image.getHead() for image in images]
    matrices = {tuple(int(n) for n in h.matrix_size) for h in heads}
    if len(matrices) > 1:
        raise MrisrInputError(f"{name}: images of one frame have different matrices "
                              f"({', '.join('x'.join(map(str, m)) for m in sorted(matrices))}); send one matrix per series")
    nx, ny, nz = matrices.pop()
    first = heads[0]
    dirs = _directions(first, name)
    fov = _vector(first.field_of_view)
    for head in heads[1:]:
        if np.abs(_directions(head, name) - dirs).max() > 1e-4 or np.abs(_vector(head.field_of_view) - fov).max() > 1e-3:
            raise MrisrInputError(f"{name}: images of one frame differ in orientation or field of view; "
                                  "send one slice group per series")
    if np.any(fov[:2] <= 0):
        raise MrisrInputError(f"{name}: image field of view {fov.tolist()} mm is empty; send images with their geometry")
    corner = geometry == "dicom2mrd"
    if corner and nz > 1:
        raise MrisrInputError(f"{name}: a 3-D image ({nx}x{ny}x{nz}) with geometry dicom2mrd, which describes 2-D "
                              "slices; send the slices, or the 3-D image with geometry mrd")
    in_plane = (fov[0] / ny, fov[1] / nx) if corner else (fov[0] / nx, fov[1] / ny)
    spacing = np.array([*in_plane, (fov[2] / nz if fov[2] > 0 else 1.0)])
    # the voxel whose world point ``position`` names
    anchor = np.zeros(3) if corner else np.array([nx // 2, ny // 2, nz // 2], dtype=float)
    columns = dirs * spacing[None, :]
    attributes = [_attribute_text(image) for image in images]
    rescales = [rescale_of(text, name) if rescale else None for text in attributes]
    if nz > 1 or len(images) == 1:
        if len(images) > 1:
            raise MrisrInputError(f"{name}: {len(images)} 3-D images in one frame; send one 3-D image per frame")
        data = _pixels(images[0], name, rescales[0])
        origin = _vector(first.position) - columns @ anchor
        three_d = nz > 1
        order = [0]
    else:
        positions = np.stack([_vector(h.position) for h in heads])
        along = positions @ dirs[:, 2]
        order = list(np.argsort(along, kind="stable"))
        steps = np.diff(positions[order], axis=0)
        if np.any(np.linalg.norm(steps, axis=1) < 1e-3):
            raise MrisrInputError(f"{name}: two images of one frame lie at the same position (slice "
                                  f"{int(heads[order[0]].slice)}); send each slice once per frame")
        step = (positions[order[-1]] - positions[order[0]]) / (len(order) - 1)
        if np.abs(steps - step).max() > 1e-2:
            gaps = np.round(np.linalg.norm(steps, axis=1), 3)
            raise MrisrInputError(f"{name}: slices are not equally spaced (steps {', '.join(f'{g:g}' for g in gaps[:6])} "
                                  "mm); send equally spaced slice groups as separate series")
        columns[:, 2] = step
        data = np.stack([_pixels(images[i], name, rescales[i])[:, :, 0] for i in order], axis=2)
        origin = positions[order[0]] - columns @ np.array([anchor[0], anchor[1], 0.0])
        three_d = False
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = origin
    return ImageStack(data=data, affine=LPS_TO_RAS @ affine, heads=[heads[i] for i in order],
                      attributes=[attributes[i] for i in order], three_d=three_d, geometry=geometry,
                      rescaled=any(r is not None and r != (1.0, 0.0) for r in rescales))


def looks_like_dicom2mrd(image) -> bool:
    """Whether ``image``'s ``position`` is the ImagePositionPatient of the DICOM header
    python-ismrmrd-server's ``dicom2mrd.py`` keeps in the meta (``DicomJson``): a sign that the
    series should be read with ``geometry="dicom2mrd"``."""
    import base64
    import json

    import ismrmrd

    attributes = _attribute_text(image)
    if "DicomJson" not in attributes:
        return False
    try:
        header = json.loads(base64.b64decode(ismrmrd.Meta.deserialize(attributes)["DicomJson"]))
        corner = np.array([float(v) for v in header["00200032"]["Value"]])
    except (KeyError, TypeError, ValueError):
        return False
    return corner.shape == (3,) and bool(np.abs(corner - _vector(image.position)).max() < 1e-3)


def _meta_with_history(attributes: str, extra: dict | None):
    import ismrmrd

    meta = ismrmrd.Meta.deserialize(attributes) if attributes.strip() else ismrmrd.Meta()
    if rescale_of(attributes) is not None:
        # the pixels sent back are already rescaled; these keys override DicomJson's in mrd2dicom.py
        meta["RescaleSlope"], meta["RescaleIntercept"] = "1", "0"
    history = meta.get("ImageProcessingHistory")
    if history is None:
        history = [HISTORY_ENTRY]
    elif isinstance(history, str):
        history = [history, HISTORY_ENTRY]
    else:
        history = [*history, HISTORY_ENTRY]
    meta["ImageProcessingHistory"] = history
    meta["Keep_image_geometry"] = 1
    for key, value in (extra or {}).items():
        meta[key] = value
    return meta


def images_like(stack: ImageStack, data: np.ndarray, series_index: int, meta: dict | None = None) -> list:
    """``data`` on a finer in-plane grid as images that keep ``stack``'s geometry fields.

    Args:
        stack: the input frame (its headers and attributes).
        data: ``(X', Y', Z)`` over the same field of view (``Z`` as the input's).
        series_index: the new ``image_series_index``.
        meta: extra meta entries (e.g. ``ImageComments``).

    Returns:
        ``ismrmrd.Image`` float32 magnitude images: one per input slice (2-D) or one (3-D). Each
        header is the input's with ``matrix_size``, ``data_type``, ``channels``, ``image_type`` and
        ``image_series_index`` set; the meta gains ``Keep_image_geometry = 1`` and an
        ``ImageProcessingHistory`` entry (and ``RescaleSlope = 1``, ``RescaleIntercept = 0`` where
        the input's meta named a rescale, which :func:`stack_images` applied). With ``stack.geometry == "dicom2mrd"`` the ``position``
        is the first voxel of the finer grid (voxel ``(X // 2, Y // 2)`` keeps its world point, as
        in :mod:`mrisr.io.geometry`), so the result lines up when read in that layout.
    """
    import ismrmrd

    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 3 or data.shape[2] != stack.shape[2]:
        raise ValueError(f"data {data.shape} does not match the frame's {stack.shape[2]} slices")
    corners = None
    if stack.geometry == "dicom2mrd":
        lps = LPS_TO_RAS @ stack.affine
        (nx, ny, _), (fx, fy) = stack.shape, data.shape[:2]
        fine = lps[:3, :2] * np.array([nx / fx, ny / fy])[None, :]
        shift = lps[:3, :2] @ np.array([nx // 2, ny // 2], dtype=float) - fine @ np.array([fx // 2, fy // 2], dtype=float)
        corners = [lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3] + shift for k in range(data.shape[2])]
    out = []
    blocks = [data] if stack.three_d else [data[:, :, k:k + 1] for k in range(data.shape[2])]
    for k, (head, attributes, block) in enumerate(zip(stack.heads, stack.attributes, blocks)):
        new_head = ismrmrd.ImageHeader.from_buffer_copy(bytes(head))
        if corners is not None:
            new_head.position[:] = [float(v) for v in corners[k]]
        new_head.image_series_index = int(series_index)
        new_head.image_type = ismrmrd.IMTYPE_MAGNITUDE
        image = ismrmrd.Image(head=bytes(new_head), data=np.ascontiguousarray(block.transpose(2, 1, 0))[None])
        image.attribute_string = _meta_with_history(attributes, meta).serialize()
        out.append(image)
    return out


def raw_stack(image: np.ndarray, affine: np.ndarray, layout, acquisitions: list, first_index: int = 1) -> ImageStack:
    """The image headers a frame reconstructed from raw acquisitions would carry, as an :class:`ImageStack`.

    Args:
        image: ``(X, Y, Z)`` from :func:`mrisr.io.mrd.frame_from_acquisitions`.
        affine: its RAS+ affine.
        layout: its :class:`~mrisr.io.mrd_layout.RawLayout`.
        acquisitions: the frame's acquisitions (counters, time stamps and table position are
            copied from its first image acquisition).
        first_index: ``image_index`` of the first slice (the others count on).

    Returns:
        :class:`ImageStack` with one header per slice (2-D) or one (3-D): ``position`` at voxel
        ``(X // 2, Y // 2[, Z // 2])`` of each slice or the slab, ``field_of_view`` the matrix
        times the voxel size, ``slice`` the slice's rank.
    """
    import ismrmrd

    first = acquisitions[int(layout.frames[0].acquisitions[0])]
    nx, ny, nz = layout.shape
    fov_x, fov_y = layout.readout.keep * layout.readout.spacing, layout.phase.keep * layout.phase.spacing
    if layout.three_d:
        positions, matrix = layout.slice_positions[:1], (nx, ny, nz)
        fov_z = layout.partition.keep * layout.partition.spacing
    else:
        positions, matrix, fov_z = layout.slice_positions, (nx, ny, 1), layout.partition.spacing
    heads = []
    for k, position in enumerate(positions):
        head = ismrmrd.ImageHeader()
        head.version = 1
        head.data_type = ismrmrd.DATATYPE_FLOAT
        head.channels = 1
        head.matrix_size[:] = matrix
        head.field_of_view[:] = (fov_x, fov_y, fov_z)
        head.position[:] = [float(v) for v in position]
        head.read_dir[:] = [float(v) for v in layout.read_dir]
        head.phase_dir[:] = [float(v) for v in layout.phase_dir]
        head.slice_dir[:] = [float(v) for v in layout.slice_dir]
        head.patient_table_position[:] = list(first.patient_table_position)
        head.measurement_uid = first.measurement_uid
        head.acquisition_time_stamp = first.acquisition_time_stamp
        head.physiology_time_stamp[:] = list(first.physiology_time_stamp)
        head.slice = k
        head.repetition = first.idx.repetition
        head.phase = first.idx.phase
        head.contrast = first.idx.contrast
        head.set = first.idx.set
        head.average = first.idx.average
        head.image_type = ismrmrd.IMTYPE_MAGNITUDE
        head.image_index = first_index + k
        heads.append(head)
    return ImageStack(data=np.asarray(image, dtype=np.float32), affine=np.asarray(affine, dtype=float), heads=heads,
                      attributes=[""] * len(heads), three_d=layout.three_d)


def volume_to_images(data: np.ndarray, affine: np.ndarray, *, slices: bool = True, series_index: int = 0,
                     repetition: int = 0, phase: int = 0, first_index: int = 1) -> list:
    """A frame ``(X, Y, Z)`` with its RAS+ affine as MRD images: the inverse of :func:`stack_images`.

    Args:
        data: the frame (written as float32 magnitude).
        affine: its voxel-to-world affine (RAS+, mm); its columns must be orthogonal.
        slices: one 2-D image per z slice (as scanners send them), else one 3-D image.
        series_index, repetition, phase: the header counters.
        first_index: ``image_index`` of the first image.

    Returns:
        ``ismrmrd.Image`` list whose ``position`` is the world point (LPS) of voxel
        ``(X // 2, Y // 2[, Z // 2])`` of each slice or of the volume.
    """
    import ismrmrd

    data = np.asarray(data, dtype=np.float32)
    nx, ny, nz = data.shape
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=float)
    columns = lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    dirs = columns / spacing
    slice_dir = np.cross(dirs[:, 0], dirs[:, 1])
    if np.dot(slice_dir, dirs[:, 2]) < 0:
        raise ValueError("affine is left-handed (z runs against read x phase); flip z before sending")

    def head_for(centre_voxel, matrix, fov_z, index, slice_number):
        head = ismrmrd.ImageHeader()
        head.version = 1
        head.matrix_size[:] = matrix
        head.field_of_view[:] = (nx * spacing[0], ny * spacing[1], fov_z)
        head.position[:] = [float(v) for v in lps[:3, :3] @ np.asarray(centre_voxel, dtype=float) + lps[:3, 3]]
        head.read_dir[:] = [float(v) for v in dirs[:, 0]]
        head.phase_dir[:] = [float(v) for v in dirs[:, 1]]
        head.slice_dir[:] = [float(v) for v in dirs[:, 2]]
        head.image_series_index = series_index
        head.repetition = repetition
        head.phase = phase
        head.slice = slice_number
        head.image_index = index
        head.image_type = ismrmrd.IMTYPE_MAGNITUDE
        return head

    if not slices:
        head = head_for([nx // 2, ny // 2, nz // 2], (nx, ny, nz), nz * spacing[2], first_index, 0)
        return [ismrmrd.Image(head=bytes(head), data=np.ascontiguousarray(data.transpose(2, 1, 0))[None])]
    out = []
    for k in range(nz):
        head = head_for([nx // 2, ny // 2, k], (nx, ny, 1), spacing[2], first_index + k, k)
        out.append(ismrmrd.Image(head=bytes(head), data=np.ascontiguousarray(data[:, :, k:k + 1].transpose(2, 1, 0))[None]))
    return out
