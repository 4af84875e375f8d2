"""Sanity checks at the file boundary, made before anything is allocated.

One header check for every format (:func:`check_image_header`): each format's header is read into
a :class:`Declared` (shape, voxel type, components, voxel size, position, data files) and
:func:`check_declared` applies the same rules to all of them. A header is never trusted for
sizes: the bytes it declares are compared with its data files' real size (a gzip stream cannot
expand more than :data:`MAX_DEFLATE_RATIO` times) and with the memory available to this process
(free memory, its address-space limit, its cgroup's limit), so a 100-byte file that claims 1000³
voxels is refused in microseconds. Headers that would give silently wrong results (zero voxel
size, a singular affine, complex or RGB voxels, an unknown voxel type, a position that is not a
number) are refused; detached data files must lie beside their header. A missing orientation
and disagreeing qform/sform are reported as warnings.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrisr.io.errors import MrisrInputError

__all__ = [
    "MAX_DEFLATE_RATIO",
    "available_memory",
    "check_fits_memory",
    "Declared",
    "check_declared",
    "check_gzip",
    "check_image_header",
    "check_nifti_header",
    "gib",
]

#: deflate's largest expansion (a stream of zeros): about 1032 to 1
MAX_DEFLATE_RATIO = 1032
#: world distance (mm) over the image above which qform and sform are reported as disagreeing
QFORM_SFORM_TOLERANCE_MM = 0.1


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GB" if nbytes >= 2**28 else f"{nbytes / 2**20:.1f} MB"


def _system_available() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def _address_space_left() -> int:
    """What ``ulimit -v`` (RLIMIT_AS) leaves this process, beyond what it has mapped already."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return 1 << 62
        with open("/proc/self/statm") as handle:
            mapped = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        return max(soft - mapped, 0)
    except (ImportError, OSError, ValueError, IndexError):
        return 1 << 62


def _cgroup_left() -> int:
    """What this process's cgroup (v2) memory limit leaves (a container, a batch job)."""
    try:
        with open("/proc/self/cgroup") as handle:
            relative = next(line.split("::", 1)[1].strip() for line in handle if line.startswith("0::"))
        folder = Path("/sys/fs/cgroup") / relative.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return 1 << 62
        return max(int(limit) - int((folder / "memory.current").read_text()), 0)
    except (OSError, ValueError, StopIteration):
        return 1 << 62


def available_memory() -> int:
    """Bytes of memory available to a new allocation: the least of the machine's ``MemAvailable``,
    what the process's address-space limit leaves and what its cgroup's memory limit leaves."""
    return min(_system_available(), _address_space_left(), _cgroup_left())


def check_fits_memory(nbytes: float, what: str, fix: str) -> None:
    """Refuse work that needs more memory than is available.

    Raises:
        MrisrInputError: ``"{what}: needs about X GB of memory, more than the Y GB available; {fix}"``.
    """
    free = available_memory()
    if nbytes > free:
        raise MrisrInputError(f"{what}: needs about {gib(nbytes)} of memory, more than the {gib(free)} available; {fix}")


def check_gzip(path: str | Path, on_block: Callable[[bytes], None] | None = None, chunk: int = 1 << 20) -> int:
    """Read a ``.gz`` file once, front to back, checking its CRC and length; its decompressed size.

    Args:
        on_block: called with each block of raw (compressed) bytes, e.g. to hash the file in the same pass.

    Raises:
        MrisrInputError: a corrupt or truncated stream, naming the file and the fix.
    """
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    length = 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            if on_block is not None:
                on_block(block)
            try:
                while block and not inflater.eof:
                    length += len(inflater.decompress(block, chunk * 8))
                    block = inflater.unconsumed_tail
            except zlib.error as exc:
                raise MrisrInputError(
                    f"{path}: corrupt gzip data ({exc}); replace it with a complete copy of the image"
                ) from None
    if not inflater.eof:
        raise MrisrInputError(
            f"{path}: truncated .gz file (the compressed data end early); replace it with a complete copy of the image"
        )
    return length


@dataclass(frozen=True)
class Declared:
    """What a header says about its voxels, before any voxel is read (every format fills one).

    Attributes:
        path: the header (or DICOM folder) as given.
        shape: the array's shape, ``(X, Y, Z[, T, ...])``.
        dtype: the stored voxel type, ``None`` when the format names none numpy knows.
        components: values per voxel (RGB, vectors, complex pairs stored as channels).
        spacing: voxel size along each spatial axis (mm).
        origin: world position of the first voxel; ``None`` where the format has none.
        data_files: the files that hold the voxels (the header itself for single-file formats).
        offset: bytes before the voxels in the first data file.
        compressed: the voxels are deflated (``.nii.gz``, MetaImage ``CompressedData``, NRRD gzip).
        big_endian: multi-byte voxels are stored most significant byte first.
        plain: the voxels lie uncompressed, X fastest, in one data file from ``offset`` on, so a frame
            can be read by itself (streaming); ``False`` where that is unknown.
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype | None
    components: int
    spacing: tuple[float, ...]
    origin: tuple[float, ...] | None
    data_files: tuple[Path, ...]
    offset: int
    compressed: bool
    big_endian: bool = False
    plain: bool = False


def _nifti_header_block(path: Path):
    """The NIfTI-1 or NIfTI-2 header as stored, before nibabel repairs anything; ``None`` if neither."""
    import nibabel as nib

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            block = handle.read(540)
    except (OSError, EOFError, zlib.error):
        return None  # the reader reports an unreadable file
    for size, kind in ((348, nib.Nifti1Header), (540, nib.Nifti2Header)):
        if len(block) >= size and size in (int.from_bytes(block[:4], "little"), int.from_bytes(block[:4], "big")):
            try:
                return kind(binaryblock=block[:size], check=False)
            except Exception:
                return None
    return None


def _nifti_declared(path: Path, hdr) -> Declared:
    dim = [int(d) for d in hdr["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7 or any(n < 1 for n in dim[1 : ndim + 1]):
        raise MrisrInputError(
            f"{path}: header declares an empty or invalid shape (dim = {dim}); the file is damaged or not an image; "
            "re-export it"
        )
    code = int(hdr["datatype"])
    try:
        dtype = hdr.get_data_dtype()
    except Exception:  # nibabel: KeyError / HeaderDataError for a code it does not know
        raise MrisrInputError(
            f"{path}: header declares voxel type code {code}, which is not a NIfTI data type; the file is damaged "
            "or not an image; re-export it"
        ) from None
    offset = float(hdr["vox_offset"])
    if not np.isfinite(offset) or offset < 0 or offset > 2**62:
        raise MrisrInputError(
            f"{path}: header declares the voxels start at byte {offset} (vox_offset), which is not a valid position; "
            "the file is damaged; re-export it"
        )
    components = 3 if dtype.fields is not None or dtype.kind == "V" else 1
    return Declared(
        path=path,
        shape=tuple(dim[1 : ndim + 1]),
        dtype=dtype,
        components=components,
        spacing=tuple(float(z) for z in hdr["pixdim"][1 : 1 + min(3, ndim)]),
        origin=None,
        data_files=(path,),
        offset=int(offset),
        compressed=path.name.lower().endswith(".gz"),
        big_endian=dtype.byteorder == ">",
        plain=not path.name.lower().endswith(".gz"),
    )


#: SimpleITK pixel types by name, their numpy types
_SITK_TYPES = {"8-bit unsigned integer": "u1", "8-bit signed integer": "i1", "16-bit unsigned integer": "<u2",
               "16-bit signed integer": "<i2", "32-bit unsigned integer": "<u4", "32-bit signed integer": "<i4",
               "64-bit unsigned integer": "<u8", "64-bit signed integer": "<i8", "32-bit float": "<f4",
               "64-bit float": "<f8"}
#: header text read for the fields SimpleITK does not report (data offset, compression)
_TEXT_HEADER_LIMIT = 1 << 16


def _text_header(path: Path) -> tuple[dict[str, str], int]:
    """The ``key = value`` (MetaImage) or ``key: value`` (NRRD) fields of a text header, and the byte
    where the voxels of a single-file image start (after ``ElementDataFile = LOCAL`` or the blank line)."""
    with open(path, "rb") as handle:
        head = handle.read(_TEXT_HEADER_LIMIT)
    fields: dict[str, str] = {}
    nrrd = head.startswith(b"NRRD")
    position = 0
    for raw in head.split(b"\n"):
        end = position + len(raw) + 1
        line = raw.decode("latin-1").strip()
        if nrrd and not line and position > 0:
            return fields, end
        separator = ":" if nrrd else "="
        if separator in line and not line.startswith("#"):
            key, value = line.split(separator, 1)
            fields[key.strip().lower()] = value.strip()
            if not nrrd and key.strip().lower() == "elementdatafile":
                return fields, end
        position = end
    return fields, len(head)


#: numeric geometry fields of MetaImage and NRRD headers (ITK reads ``inf`` or ``nan`` there as 0)
_GEOMETRY_FIELDS = ("offset", "origin", "position", "elementspacing", "elementsize", "transformmatrix", "rotation",
                    "orientation", "centerofrotation", "space origin", "space directions", "spacings", "thicknesses")


def _check_geometry_fields(path: Path, fields: dict[str, str]) -> None:
    """Every number of a text header's geometry fields must be a finite number."""
    for key in _GEOMETRY_FIELDS:
        if key not in fields:
            continue
        for token in re.split(r"[\s,()]+", fields[key]):
            if not token or token.lower() == "none":
                continue
            try:
                value = float(token)
            except ValueError:
                value = float("nan")
            if not math.isfinite(value):
                raise MrisrInputError(
                    f"{path}: header field {key} holds {token[:40]!r}, not a finite number; fix the header"
                )


def _check_data_files_inside(path: Path, files: list[Path]) -> None:
    """Detached data files must lie in the header's folder: a header never reads files elsewhere."""
    folder = os.path.normpath(os.path.abspath(path.parent))
    for file in files:
        where = os.path.normpath(os.path.abspath(file))
        if os.path.commonpath([folder, where]) != folder:
            raise MrisrInputError(
                f"{path}: its data file {str(file)[:80]} lies outside the header's folder {path.parent}; a header may "
                "only name data files beside it (no ../ or absolute paths elsewhere): move the data next to the header"
            )


def _sitk_declared(path: Path) -> Declared:
    import SimpleITK as sitk

    from mrisr.io.hashing import image_files

    files = image_files(path)  # the header and its detached data files (a missing one is an error)
    data_files = files[1:] if len(files) > 1 else files
    if len(files) > 1:
        _check_data_files_inside(path, data_files)
    fields, local_offset = (_text_header(path) if path.suffix.lower() in (".mha", ".mhd", ".nrrd", ".nhdr")
                            else ({}, 0))
    _check_geometry_fields(path, fields)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except Exception as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise MrisrInputError(f"{path}: not a readable image header ({first[:120]}); pass a NIfTI, NRRD, MHA or "
                              "DICOM series") from None
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    base = pixel.replace("vector of ", "").replace("complex of ", "").strip()
    dtype = np.dtype(_SITK_TYPES[base]) if base in _SITK_TYPES else None
    if "complex" in pixel and dtype is not None:
        dtype = np.dtype(f"c{2 * dtype.itemsize}")
    components = int(reader.GetNumberOfComponents())
    dimension = reader.GetDimension()
    compressed = (fields.get("compresseddata", "").lower() == "true"
                  or fields.get("encoding", "raw").lower() not in ("raw", "text", "txt", "ascii"))
    big_endian = any(fields.get(key, "").lower() == "true" for key in ("elementbyteordermsb", "binarydatabyteordermsb")
                     ) or fields.get("endian", "little").lower() == "big"
    skips = ("headersize", "byte skip", "byteskip", "line skip", "lineskip")
    plain = (bool(fields) and not compressed and len(data_files) == 1 and not any(key in fields for key in skips)
             and fields.get("encoding", "raw").lower() == "raw")
    return Declared(
        path=path,
        shape=tuple(int(n) for n in reader.GetSize()),
        dtype=dtype,
        components=components,
        spacing=tuple(float(v) for v in reader.GetSpacing()[: min(3, dimension)]),
        origin=tuple(float(v) for v in reader.GetOrigin()) + tuple(float(v) for v in reader.GetDirection()),
        data_files=tuple(data_files),
        offset=local_offset if len(files) == 1 else 0,
        compressed=compressed,
        big_endian=big_endian,
        plain=plain,
    )


def _dicom_declared(path: Path, names: list[str]) -> Declared:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(names[0])
    try:
        reader.ReadImageInformation()
    except Exception as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise MrisrInputError(f"{names[0]}: not a readable DICOM file ({first[:120]})") from None
    size = [int(n) for n in reader.GetSize()]
    shape = (size[0], size[1], len(names)) if len(size) >= 2 else tuple(size)
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    base = pixel.replace("vector of ", "").strip()
    return Declared(
        path=path,
        shape=shape,
        dtype=np.dtype(_SITK_TYPES[base]) if base in _SITK_TYPES else None,
        components=int(reader.GetNumberOfComponents()),
        spacing=tuple(float(v) for v in reader.GetSpacing()[:2]),
        origin=tuple(float(v) for v in reader.GetOrigin()),
        data_files=tuple(Path(n) for n in names),
        offset=0,
        compressed=True,  # DICOM may hold JPEG data: its file sizes bound nothing
    )


def check_declared(declared: Declared, lazy: bool = False) -> None:
    """The checks every format shares, on what its header declares (see :class:`Declared`).

    Raises:
        MrisrInputError: complex, RGB or multi-component voxels, an unknown voxel type, a size the data
            files cannot hold, more memory than available, a zero or non-finite voxel size or position.
    """
    path, shape = declared.path, declared.shape
    shape_text = "x".join(str(n) for n in shape)
    if not shape or any(n < 1 for n in shape):
        raise MrisrInputError(f"{path}: header declares an empty or invalid shape ({shape_text}); re-export the image")
    dtype = declared.dtype
    if dtype is not None and dtype.kind == "c":
        raise MrisrInputError(
            f"{path}: voxels are complex ({dtype}); mrisr needs magnitude images; save the magnitude (abs) first"
        )
    if declared.components > 1 or dtype is not None and (dtype.fields is not None or dtype.kind == "V"):
        raise MrisrInputError(
            f"{path}: voxels have {declared.components} components (RGB colour, vectors or complex pairs); mrisr "
            "needs scalar magnitude images; convert to grey values (or the magnitude) first"
        )
    if dtype is None:
        raise MrisrInputError(f"{path}: voxel type is not a plain integer or float type; convert the image first")
    voxels = float(np.prod(shape, dtype=np.float64))
    nbytes = voxels * dtype.itemsize
    sizes = [os.stat(file).st_size for file in declared.data_files]
    held = float(sum(sizes))
    capacity = held * MAX_DEFLATE_RATIO + 1024 if declared.compressed else held
    if declared.offset + nbytes > capacity:
        raise MrisrInputError(
            f"{path}: header declares {shape_text} voxels of {dtype} ({gib(nbytes)}"
            f"{f' from byte {declared.offset}' if declared.offset else ''}) but "
            f"{'the file holds' if len(sizes) == 1 else f'its {len(sizes)} data files hold'} only {int(held)} bytes"
            f"{' compressed' if declared.compressed else ''}; the file is truncated or its header is wrong: replace "
            "it with a complete copy"
        )
    frame_voxels = float(np.prod(shape[:3], dtype=np.float64))
    in_memory = (frame_voxels if lazy else voxels) * max(dtype.itemsize, 4) * 2
    check_fits_memory(in_memory, f"{path} ({shape_text} voxels)", "crop or split the image first")
    spacing = np.asarray(declared.spacing, dtype=np.float64)
    if not np.all(np.isfinite(spacing)) or np.any(spacing == 0):
        raise MrisrInputError(
            f"{path}: voxel size is {tuple(float(z) for z in spacing)} mm, zero or not a number; "
            "fix the header with the true voxel size"
        )
    if declared.origin is not None and not np.all(np.isfinite(declared.origin)):
        raise MrisrInputError(
            f"{path}: the header's position or orientation (origin / direction) holds a value that is not a finite "
            "number; fix the header"
        )


def check_image_header(path: str | Path, lazy: bool = False) -> Declared | None:
    """The one header check of every format mrisr reads, made before any voxel is read.

    NIfTI-1 and NIfTI-2 (``.nii``, ``.nii.gz``), MetaImage (``.mha``, ``.mhd`` with ``.raw``, ``LIST``
    or pattern data files), NRRD (attached ``.nrrd``, detached ``.nhdr``), Analyze and DICOM series
    folders: the header is read, what it declares checked by :func:`check_declared`, and detached
    data files must lie in the header's folder. NIfTI files are also checked for a singular sform
    and qform/sform disagreement.

    Args:
        path: the image file, header or DICOM folder.
        lazy: the data will be streamed frame by frame (memory is checked for one frame).

    Returns:
        What the header declares, or ``None`` for a file that is not an image header (the reader says so).

    Raises:
        MrisrInputError: one line naming the file, what is wrong and the fix.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        import SimpleITK as sitk

        try:
            names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        except Exception:
            names = ()
        if not names:
            return None
        declared = _dicom_declared(path, list(names))
        check_declared(declared, lazy=lazy)
        return declared
    if name.endswith((".nii", ".nii.gz")):
        hdr = _nifti_header_block(path)
        if hdr is None:
            return None  # not NIfTI: the reader reports it
        declared = _nifti_declared(path, hdr)
        check_declared(declared, lazy=lazy)
        _check_nifti_geometry(path, hdr)
        return declared
    declared = _sitk_declared(path)
    check_declared(declared, lazy=lazy and declared.plain)
    return declared


def check_nifti_header(path: str | Path, lazy: bool = False) -> None:
    """:func:`check_image_header` of a NIfTI file (kept for callers of the former NIfTI-only check)."""
    check_image_header(path, lazy=lazy)


def _check_nifti_geometry(path: Path, hdr) -> None:
    """A singular sform is refused; a missing orientation and disagreeing qform/sform are warnings."""
    dim = [int(d) for d in hdr["dim"]]
    shape = tuple(dim[1 : dim[0] + 1])
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    quaternion = [float(hdr[key]) for key in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y",
                                                "qoffset_z")]
    if qcode > 0 and not np.all(np.isfinite(quaternion)):
        raise MrisrInputError(
            f"{path}: the header's qform (code {qcode}) holds a value that is not a finite number (quatern_b..d, "
            f"qoffset_x..z = {quaternion}); fix the header (or set qform_code 0 to use the sform)"
        )
    if scode > 0:
        sform = hdr.get_sform()
        if not np.all(np.isfinite(sform)) or abs(np.linalg.det(sform[:3, :3])) < 1e-12:
            raise MrisrInputError(
                f"{path}: the header's sform (code {scode}) is all zero or singular, so voxels have no position; "
                "fix the header (set a valid sform, or sform_code 0 to use the qform)"
            )
        if qcode > 0:
            _check_qform_sform(path, hdr, shape)
    if qcode == 0 and scode == 0:
        warnings.warn(
            f"{path}: the header has no orientation (qform and sform codes are 0): voxel axes are taken as "
            "RAS with the pixdim voxel size, and outputs are written without orientation too",
            stacklevel=4,
        )


def _check_qform_sform(path: Path, hdr, shape: tuple[int, ...]) -> None:
    try:
        qform, sform = hdr.get_qform(), hdr.get_sform()
    except Exception:  # a qform nibabel cannot compute as stored (e.g. qfac 0): it repairs it on load
        return
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    ) if len(shape) >= 3 else np.array([[0.0, 0.0, 0.0, 1.0]])
    distance = float(np.max(np.linalg.norm((corners @ (qform - sform).T)[:, :3], axis=1)))
    if distance > QFORM_SFORM_TOLERANCE_MM:
        warnings.warn(
            f"{path}: qform and sform disagree (by up to {distance:.1f} mm over the image); the sform is used "
            "and written to both; fix the header if the qform is the right one",
            stacklevel=3,
        )
