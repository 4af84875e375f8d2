"""Sanity checks at the file boundary, made before anything is allocated.

A header is never trusted for sizes: the bytes it declares are compared with the file's real size
(a gzip stream cannot expand more than :data:`MAX_DEFLATE_RATIO` times) and with the memory
available, so a 100-byte file that claims 1000³ voxels is refused in microseconds. Headers that
would give silently wrong results (zero voxel size, a singular affine, complex or RGB voxels) are
refused; a missing orientation and disagreeing qform/sform are reported as warnings.
"""

from __future__ import annotations

import gzip
import os
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mrisr.io.errors import MrisrInputError

__all__ = [
    "MAX_DEFLATE_RATIO",
    "available_memory",
    "check_fits_memory",
    "check_gzip",
    "check_nifti_header",
    "gib",
]

#: deflate's largest expansion (a stream of zeros): about 1032 to 1
MAX_DEFLATE_RATIO = 1032
#: world distance (mm) over the image above which qform and sform are reported as disagreeing
QFORM_SFORM_TOLERANCE_MM = 0.1


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GB" if nbytes >= 2**28 else f"{nbytes / 2**20:.1f} MB"


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``MemAvailable`` on Linux)."""
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


def _raw_header(path: Path):
    """The NIfTI-1 header as stored, before nibabel repairs anything; ``None`` if it is not one."""
    import nibabel as nib

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            block = handle.read(348)
    except (OSError, EOFError, zlib.error):
        return None  # the reader reports an unreadable file
    if len(block) < 348:
        return None
    sizes = int.from_bytes(block[:4], "little"), int.from_bytes(block[:4], "big")
    if 348 not in sizes:
        return None  # NIfTI-2 or not NIfTI: the reader decides
    try:
        return nib.Nifti1Header(binaryblock=block, check=False)
    except Exception:
        return None


def _declared(hdr) -> tuple[tuple[int, ...], np.dtype, int]:
    dim = [int(d) for d in hdr["dim"]]
    ndim = dim[0]
    shape = tuple(dim[1 : ndim + 1]) if 1 <= ndim <= 7 else ()
    return shape, hdr.get_data_dtype(), int(float(hdr["vox_offset"]))


def check_nifti_header(path: str | Path, lazy: bool = False) -> None:
    """Check a NIfTI file's header against its real size, the memory available and common damage.

    Args:
        path: ``.nii`` or ``.nii.gz``.
        lazy: the data will be streamed frame by frame (memory is checked for one frame).

    Raises:
        MrisrInputError: empty or impossible dimensions, a size the file cannot hold, more memory than
            available, complex or RGB voxels, zero voxel size, a singular affine.
    """
    path = Path(path)
    hdr = _raw_header(path)
    if hdr is None:
        return
    shape, dtype, offset = _declared(hdr)
    ndim = int(hdr["dim"][0])
    if not 1 <= ndim <= 7 or any(n < 1 for n in shape):
        raise MrisrInputError(
            f"{path}: header declares an empty or invalid shape (dim = {[int(d) for d in hdr['dim']]}); "
            "the file is damaged or not an image; re-export it"
        )
    if dtype.fields is not None or dtype.kind == "V":
        raise MrisrInputError(
            f"{path}: voxels are RGB colour ({dtype}); mrisr needs scalar magnitude images; convert to grey values first"
        )
    if dtype.kind == "c":
        raise MrisrInputError(
            f"{path}: voxels are complex ({dtype}); mrisr needs magnitude images; save the magnitude (abs) first"
        )
    voxels = int(np.prod(shape, dtype=np.float64))
    declared = offset + voxels * dtype.itemsize
    size = path.stat().st_size
    gzipped = path.name.lower().endswith(".gz")
    capacity = size * MAX_DEFLATE_RATIO + 1024 if gzipped else size
    shape_text = "x".join(str(n) for n in shape)
    if offset < 0 or declared > capacity:
        raise MrisrInputError(
            f"{path}: header declares {shape_text} voxels of {dtype} ({gib(voxels * dtype.itemsize)} from byte {offset}) "
            f"but the file holds only {size} bytes{' compressed' if gzipped else ''}; the file is truncated or its "
            "header is wrong: replace it with a complete copy"
        )
    frame_voxels = int(np.prod(shape[:3], dtype=np.float64))
    in_memory = (frame_voxels if lazy else voxels) * max(dtype.itemsize, 4) * 2
    check_fits_memory(in_memory, f"{path} ({shape_text} voxels)", "crop or split the image first")
    zooms = np.asarray(hdr["pixdim"][1:4], dtype=np.float64)
    if not np.all(np.isfinite(zooms)) or np.any(zooms[: min(3, ndim)] == 0):
        raise MrisrInputError(
            f"{path}: voxel size (pixdim) is {tuple(float(z) for z in zooms)} mm, zero or not a number; "
            "fix the header with the true voxel size (e.g. nibabel's header.set_zooms)"
        )
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
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
            stacklevel=3,
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
