"""Read NIfTI (nibabel) and other formats (SimpleITK) into :class:`Volume`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mrisr.io.checks import Declared, check_gzip, check_image_header
from mrisr.io.errors import MrisrInputError
from mrisr.io.guard import register_input
from mrisr.io.mrd_header import RAW_SUFFIXES, is_raw
from mrisr.io.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".img", ".hdr")

_TIME_SCALE = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6, "unknown": 1.0, None: 1.0}


def image_stem(path: str | Path) -> str:
    """A file name without its image extension: ``scan.nii.gz`` -> ``scan`` (NIfTI and SimpleITK
    formats, case-insensitive); other names are returned whole."""
    name = Path(path).name
    for suffix in sorted(NIFTI_SUFFIXES + SITK_SUFFIXES + RAW_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_nifti(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def _check_exists(path: Path) -> None:
    """The input exists and is a regular file or a folder: a FIFO would block the read forever, a
    device (``/dev/zero``) never ends, a symbolic-link loop has no target."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MrisrInputError(f"{path}: file not found; check the path") from None
    except OSError as exc:  # ELOOP (a symbolic-link loop), EACCES, ENAMETOOLONG
        raise MrisrInputError(f"{path}: cannot be opened ({exc.strerror or exc}); check the path") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise MrisrInputError(
            f"{path}: not a regular file (a FIFO, device or socket); give an image file or a DICOM folder"
        )


def _nifti_volume(path: Path, lazy: bool) -> Volume:
    import nibabel as nib

    # sizes, voxel type and geometry from the header as stored, before anything is allocated
    check_image_header(path, lazy=lazy)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many kinds
        raise MrisrInputError(
            f"{path}: not a readable NIfTI image ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "pass a .nii or .nii.gz file"
        ) from None
    if not lazy and path.name.lower().endswith(".gz"):
        check_gzip(path)  # CRC and length: a damaged payload must not be read as numbers (streaming checks at its end)
    shape = img.shape
    _check_ndim(path, shape)
    if len(shape) == 4 and shape[3] == 1:
        data = img.dataobj[..., 0] if lazy else np.asarray(img.dataobj[..., 0])
    else:
        data = img.dataobj if lazy else np.asarray(img.dataobj)
    if not lazy:
        data = np.asarray(data)
    hdr = img.header
    sform, scode = hdr.get_sform(coded=True)
    qform, qcode = hdr.get_qform(coded=True)
    affine = img.affine
    space, time_unit = hdr.get_xyzt_units()
    tr = None
    if len(shape) == 4:
        raw = float(hdr.get_zooms()[3])
        tr = raw * _TIME_SCALE.get(time_unit, 1.0) if raw > 0 else None
    extra = {"descrip": hdr["descrip"].tobytes().rstrip(b"\0").decode(errors="replace")}
    if qform is None and sform is None:
        extra["no_orientation"] = True  # written back without orientation, never as scanner space
    return Volume(
        data=data,
        affine=affine,
        tr=tr,
        qform_code=int(qcode) if qform is not None else 0,
        sform_code=int(scode) if sform is not None else 0,
        source=path,
        xyzt_units=(space or "mm", "sec"),
        extra=extra,
    )


def _check_ndim(path: Path, shape: tuple[int, ...]) -> None:
    ndim = len(shape)
    if ndim == 4 and shape[3] == 1:
        return
    if ndim < 3:
        raise MrisrInputError(
            f"{path}: image is {ndim}-D with shape {tuple(shape)}; mrisr needs a 3-D volume or a 4-D series (X, Y, Z[, T])"
        )
    if ndim > 4:
        raise MrisrInputError(
            f"{path}: image is {ndim}-D with shape {tuple(shape)}; mrisr needs a 3-D volume or a 4-D series (X, Y, Z, T); "
            "split extra dimensions first"
        )
    if min(shape[:2]) < 2:
        raise MrisrInputError(
            f"{path}: image of shape {tuple(shape)} has fewer than 2 voxels along an in-plane axis; "
            "pass a 3-D volume or a 4-D series of real images (X, Y, Z[, T])"
        )


def _sitk_volume(path: Path, lazy: bool = False) -> Volume:
    import SimpleITK as sitk

    # sizes, voxel type, geometry and detached data files from the header, before anything is read
    declared = check_image_header(path, lazy=lazy)
    if lazy and declared is not None and declared.plain and len(declared.shape) == 4 and declared.shape[3] > 1:
        return _raw_series_volume(path, declared)
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            names = reader.GetGDCMSeriesFileNames(str(path))
            if not names:
                raise MrisrInputError(f"{path}: folder holds no DICOM series; pass a NIfTI file or a DICOM series folder")
            reader.SetFileNames(names)
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except MrisrInputError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise MrisrInputError(f"{path}: not a readable image ({first}); pass a NIfTI, NRRD, MHA or DICOM series") from None
    return sitk_to_volume(image, source=path)


def _raw_series_volume(path: Path, declared: Declared) -> Volume:
    """A 4-D MetaImage or NRRD series stored uncompressed, its frames read on demand (streaming)."""
    import SimpleITK as sitk

    from mrisr.io.stream import RawFrames

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    dtype = declared.dtype.newbyteorder(">" if declared.big_endian else "<")
    data = RawFrames(declared.data_files[0], declared.offset, declared.shape, dtype)
    _check_ndim(path, data.shape)
    affine = _lps_to_ras_affine(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), 4)
    return Volume(data=data, affine=affine, tr=float(reader.GetSpacing()[3]), source=path)


def _lps_to_ras_affine(spacing, origin, direction, dim: int) -> np.ndarray:
    """The RAS voxel-to-world matrix of an ITK (LPS) image's spacing, origin and direction."""
    spacing = np.array(spacing[:3], dtype=np.float64)
    origin = np.array(origin[:3], dtype=np.float64)
    direction = np.array(direction, dtype=np.float64).reshape(dim, dim)[:3, :3]
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = lps_to_ras @ direction @ np.diag(spacing)
    affine[:3, 3] = lps_to_ras @ origin
    return affine


def sitk_to_volume(image, source: Path | None = None) -> Volume:
    """Convert a SimpleITK image (LPS world) to a :class:`Volume` (RAS world, ``(X, Y, Z[, T])``)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(image)  # (Z, Y, X) or (T, Z, Y, X)
    dim = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise MrisrInputError(f"{source}: image has {image.GetNumberOfComponentsPerPixel()} components per voxel; pass a scalar image")
    if dim == 2:
        raise MrisrInputError(f"{source}: image is 2-D; mrisr needs a 3-D volume or a 4-D series")
    if np.iscomplexobj(arr):
        raise MrisrInputError(f"{source}: voxels are complex; mrisr needs magnitude images; save the magnitude (abs) first")
    data = np.transpose(arr, tuple(range(arr.ndim - 1, -1, -1)))
    affine = _lps_to_ras_affine(image.GetSpacing(), image.GetOrigin(), image.GetDirection(), dim)
    tr = float(image.GetSpacing()[3]) if dim == 4 else None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    _check_ndim(source or Path("<image>"), data.shape)
    return Volume(data=np.ascontiguousarray(data), affine=affine, tr=tr, source=source)


def volume_to_sitk(volume: Volume, frame: int | None = None):
    """A 3-D SimpleITK image (LPS world) of a volume (or one of its frames)."""
    import SimpleITK as sitk

    data = volume.frame(frame or 0) if (volume.is_4d or frame) else np.asarray(volume.data, dtype=np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
    zooms = np.array(volume.zooms)
    lps = np.diag([-1.0, -1.0, 1.0])
    direction = lps @ volume.affine[:3, :3] / zooms
    image.SetSpacing(tuple(float(z) for z in zooms))
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    image.SetOrigin(tuple(float(v) for v in lps @ volume.affine[:3, 3]))
    return image


def validate_values(volume: Volume, what: str = "image") -> None:
    """Raise :class:`MrisrInputError` if data holds NaN/Inf or is all zero (eager volumes only)."""
    data = np.asarray(volume.data)
    finite = np.isfinite(data)
    if not finite.all():
        bad = int((~finite).sum())
        where = ""
        if data.ndim == 4:
            frames = np.where(~finite.reshape(-1, data.shape[3]).all(axis=0))[0]
            where = f" in frame(s) {', '.join(str(f) for f in frames[:5])}{'...' if len(frames) > 5 else ''}"
        raise MrisrInputError(
            f"{volume.source}: {what} contains {bad} NaN/Inf voxel(s){where}; replace them (e.g. with 0) before running mrisr"
        )
    if not np.any(data):
        raise MrisrInputError(f"{volume.source}: {what} is all zero; check that the right file was given")


def check_frame(frame: np.ndarray, source: Path | str | None, t: int) -> None:
    """Validate one streamed frame: finite and not all zero."""
    if not np.isfinite(frame).all():
        raise MrisrInputError(
            f"{source}: frame {t} contains NaN/Inf voxels; replace them (e.g. with 0) or drop the frame before running mrisr"
        )
    if not np.any(frame):
        # nothing was measured: a dropped or blanked frame, which no prior can be matched to
        raise MrisrInputError(
            f"{source}: frame {t} is all zero (no signal); drop the frame or replace it before running mrisr"
        )


def is_dicom(path: str | Path) -> bool:
    """A folder (read as a DICOM series) or a DICOM file (``.dcm``, ``.ima`` or a Part-10 preamble)."""
    from mrisr.io.dicom_series import is_dicom_file

    path = Path(path)
    return path.is_dir() or (path.is_file() and is_dicom_file(path))


def load(path: str | Path, validate: bool = True, lazy: bool = False, series: str | None = None) -> Volume:
    """Load a 3-D or 4-D image.

    NIfTI (``.nii``, ``.nii.gz``) is read with nibabel, keeping qform/sform codes and TR;
    DICOM (a series folder, or one file of a series) is read with pydicom
    (:func:`mrisr.io.dicom_read.read_dicom`: 3-D, dynamic and enhanced multi-frame series);
    ISMRMRD Cartesian raw data (``.h5``, ``.mrd``) is reconstructed frame by frame
    (:func:`mrisr.io.mrd.load_mrd`: the measured k-space block per frame, readout oversampling
    removed, coils combined by sum of squares; needs the ``raw`` extra); NRRD, MHA/MHD and Analyze
    are read with SimpleITK. The result is always ``(X, Y, Z[, T])`` with a RAS+ affine in mm and TR in seconds.

    Args:
        path: image file or DICOM folder.
        validate: reject NaN/Inf and all-zero data (not done when ``lazy``).
        lazy: keep the data on disk so frames are read on demand (streaming): a nibabel array
            proxy for NIfTI, a frame reader for DICOM, :class:`mrisr.io.stream.RawFrames` for a 4-D
            MetaImage or NRRD series stored uncompressed; ``Volume.frame(t)`` then reads only frame
            ``t``. Compressed MetaImage/NRRD series are read whole (their size was checked against
            memory). For raw data, a multi-frame series is reconstructed one frame at a time when read.
        series: for a DICOM folder holding several series, the one to read (SeriesInstanceUID,
            SeriesNumber or SeriesDescription); a folder with several and none chosen is refused.

    Returns:
        The :class:`Volume`: data ``(X, Y, Z[, T])``, affine (RAS+, mm), TR (s) and NIfTI codes.

    Raises:
        MrisrInputError: with a one-line message naming the file, the problem and the fix.
    """
    path = Path(path)
    _check_exists(path)
    register_input(path)
    if is_nifti(path):
        volume = _nifti_volume(path, lazy=lazy)
    elif is_raw(path):
        from mrisr.io.mrd import load_mrd

        volume = load_mrd(path, lazy=lazy)
    elif is_dicom(path):
        from mrisr.io.dicom_read import read_dicom

        volume = read_dicom(path, series=series, lazy=lazy)
    else:
        volume = _sitk_volume(path, lazy=lazy)
    if validate and not lazy:
        validate_values(volume)
    return volume
