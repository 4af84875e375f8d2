"""Every image write goes through here: geometry from a reference, atomic on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mrisr.io.errors import MrisrInputError, one_line
from mrisr.io.guard import check_target, make_folder, partial_file, write_errors
from mrisr.io.load import is_nifti
from mrisr.io.volume import Volume


def _partial_path(path: Path, extension: str = "") -> Path:
    # writers that pick their format from the name (MetaImage: .mha is one file, anything else
    # a header plus a .raw) need the real extension at the end of the temporary name; the guard
    # refuses a target that is an input or lies outside the output folder
    return partial_file(path, extension)


def _read_umask() -> int:
    # read once at import: changing the umask later, even briefly, races with other threads
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _publish(tmp: Path | str, path: Path) -> None:
    """Give the finished temporary file normal permissions (mkstemp makes it owner-only) and
    move it into place atomically."""
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


def check_writable(path: str | Path, inputs: tuple[str | Path, ...] = ()) -> Path:
    """Validate an output path before any work starts.

    Raises:
        MrisrInputError: if the output is an input (same path, symbolic or hard link; see
            :mod:`mrisr.io.guard`), its folder cannot be created or written, or it is an existing folder.
    """
    path = check_target(path, inputs)
    if path.is_dir():
        raise MrisrInputError(f"{path}: output path is a folder; give a file name such as {path / 'out.nii.gz'}")
    if not (str(path).lower().endswith((".nii", ".nii.gz", ".nrrd", ".mha"))):
        raise MrisrInputError(f"{path}: unsupported output extension; use .nii.gz, .nii, .nrrd or .mha")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        make_folder(parent)
    except OSError as exc:
        raise MrisrInputError(
            f"{path}: cannot create output folder {parent} ({exc.strerror}); choose a writable location with -o"
        ) from None
    # os.access says yes to root everywhere (and nothing of read-only or virtual file systems):
    # create and remove the temporary file the write will use
    try:
        _partial_path(path).unlink()
    except OSError as exc:
        raise MrisrInputError(
            f"{path}: output folder {parent} is not writable ({exc.strerror}); choose a writable location with -o"
        ) from None
    return path


def nifti_header(
    reference: Volume,
    shape: tuple[int, ...],
    affine: np.ndarray | None = None,
    tr: float | None = None,
    dtype: np.dtype | type = np.float32,
):
    """A NIfTI-1 header for data of ``shape`` with the reference's geometry codes."""
    import nibabel as nib

    affine = reference.affine if affine is None else np.asarray(affine, dtype=np.float64)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.dtype(dtype))
    hdr.set_data_shape(shape)
    qcode = reference.qform_code or 0
    scode = reference.sform_code or 0
    if reference.extra.get("no_orientation"):
        pass  # read from a file without orientation: none is invented on the way out
    elif qcode == 0 and scode == 0:
        # a geometry nobody claimed: still store it, marked as scanner space
        qcode = scode = 1
    hdr.set_qform(affine, code=int(qcode) if qcode else 0)
    hdr.set_sform(affine, code=int(scode) if scode else 0)
    zooms = list(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    tr = reference.tr if tr is None else tr
    if len(shape) == 4:
        # 0 = unknown: an invented 1 s would read back as a real TR
        zooms.append(float(tr) if tr else 0.0)
    hdr.set_zooms(tuple(zooms[: len(shape)]))
    hdr.set_xyzt_units("mm", "sec")
    hdr["scl_slope"] = 1.0
    hdr["scl_inter"] = 0.0
    hdr["descrip"] = b"mrisr"
    if len(shape) == 4 and tr:
        hdr["pixdim"][4] = float(tr)
    return hdr


def save_like(
    path: str | Path,
    data: np.ndarray,
    reference: Volume,
    affine: np.ndarray | None = None,
    tr: float | None = None,
    dtype: np.dtype | type | None = np.float32,
) -> Path:
    """Write ``data`` with the geometry of ``reference`` (or ``affine``), atomically.

    Both qform and sform are written with the reference's codes, zooms follow the affine,
    TR goes into ``pixdim[4]`` with time units in seconds. ``dtype=None`` keeps the data's
    dtype; SR output is float32.

    Args:
        path: ``.nii``/``.nii.gz`` (any dimension), or ``.nrrd``/``.mha`` (3-D, via SimpleITK).
        data: ``(X, Y, Z)`` or ``(X, Y, Z, T)``.
        reference: volume whose header codes (and, by default, affine and TR) are used.
        affine: voxel-to-world matrix ``(4, 4)`` (RAS+, mm) instead of the reference's.
        tr: repetition time in seconds instead of the reference's (4-D only).
        dtype: data type on disk; ``None`` keeps the data's.

    Returns:
        ``path``. Identical data and geometry give identical bytes (a ``.nii.gz`` has no file
        name and mtime 0 in its gzip header).

    Raises:
        MrisrInputError: a 4-D series to a format other than NIfTI.
        OSError: the file cannot be written (nothing is left behind).
    """
    path = Path(path)
    data = np.asarray(data)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    affine = reference.affine if affine is None else affine
    if is_nifti(path):
        with FrameWriter(path, reference, data.shape[:3], data.shape[3] if data.ndim == 4 else None,
                         affine=affine, tr=tr, dtype=data.dtype) as writer:
            if data.ndim == 4:
                for t in range(data.shape[3]):
                    writer.write(data[..., t])
            else:
                writer.write(data)
        return path
    import SimpleITK as sitk

    from mrisr.io.load import volume_to_sitk

    if data.ndim != 3:
        raise MrisrInputError(f"{path}: only NIfTI can hold a 4-D series; use .nii.gz")
    tmp = _partial_path(path, extension=path.suffix)
    try:
        image = volume_to_sitk(Volume(data=data, affine=affine))
        try:
            sitk.WriteImage(image, str(tmp), imageIO="NrrdImageIO" if str(path).endswith(".nrrd") else "MetaImageIO")
        except RuntimeError as exc:  # SimpleITK reports a failed write (disk full) this way
            raise MrisrInputError(f"{path}: cannot write ({one_line(exc)[-200:]}); free some space or choose another location") from None
        with write_errors(path):
            _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


#: ISA-L deflate level of every .gz mrisr writes (ISA-L has levels 0-3)
GZIP_LEVEL = 1


def gzip_writer(raw: BinaryIO) -> BinaryIO:
    """A gzip stream over ``raw`` with no file name and mtime 0 in its header (same voxels, same bytes
    on one machine; ISA-L picks CPU-specific code, so another CPU type may compress differently).

    Compression uses Intel's ISA-L (``isal.igzip``, a standard gzip stream any reader opens): an
    order of magnitude faster than zlib's level 4, which mrisr used before, for a file about 1 %
    larger; with zlib, writing the output cost half as much as reconstructing the frame
    (benchmarks/RESULTS.md, 'Design decisions and their measurements').
    """
    from isal import igzip

    return igzip.IGzipFile(filename="", fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)


class FrameWriter:
    """Stream a NIfTI series to disk one frame at a time (memory does not grow with T).

    The file is written under a temporary name in the destination folder and renamed only
    when every frame arrived and the context exits cleanly; an exception or Ctrl-C removes
    it, so no half-written output is ever left.

    With ``background=True`` each frame is compressed and written by a worker thread while the
    caller computes the next one (the compressor releases the GIL, and much of a frame's
    reconstruction runs on one core): at most one frame is in flight, so memory holds one
    frame's bytes more than without, and an error of the worker is raised by the next
    :meth:`write` or on exit. The file's bytes are the same either way.

    Example:
        >>> with FrameWriter(out, reference, (64, 64, 16), n_frames=3) as w:  # doctest: +SKIP
        ...     for frame in frames:
        ...         w.write(frame)
    """

    def __init__(
        self,
        path: str | Path,
        reference: Volume,
        spatial_shape: tuple[int, int, int],
        n_frames: int | None,
        affine: np.ndarray | None = None,
        tr: float | None = None,
        dtype: np.dtype | type = np.float32,
        background: bool = False,
    ) -> None:
        self.path = Path(path)
        self.background = bool(background)
        self._pool = None
        self._pending = None
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.n_frames = n_frames
        self.dtype = np.dtype(dtype)
        shape = self.spatial_shape + ((n_frames,) if n_frames is not None else ())
        self.header = nifti_header(reference, shape, affine=affine, tr=tr, dtype=self.dtype)
        self.header.set_data_offset(352)
        self._written = 0
        self._tmp: Path | None = None
        self._fh: BinaryIO | None = None
        self._raw: BinaryIO | None = None

    def __enter__(self) -> FrameWriter:
        self._tmp = _partial_path(self.path)
        try:
            with write_errors(self.path):
                self._open_and_write_header()
        except BaseException:
            self._close()
            self._tmp.unlink(missing_ok=True)
            raise
        return self

    def _open_and_write_header(self) -> None:
        self._raw = raw = open(self._tmp, "wb")
        # no file name (it would be the temporary one) and mtime 0 in the gzip header: the same
        # voxels always give the same bytes, so the SHA-256s recorded in sidecars mean something
        self._fh = gzip_writer(raw) if str(self.path).endswith(".gz") else raw
        # nibabel writes the 348-byte header and, for single files, the 4-byte "no extensions"
        # flag; pad up to vox_offset whatever it wrote so the data start where the header says
        self.header.write_to(self._fh)
        offset = int(self.header.get_data_offset())
        written = self._fh.tell()
        if written > offset:
            raise ValueError(f"{self.path}: NIfTI header took {written} bytes, more than vox_offset {offset}")
        self._fh.write(b"\0" * (offset - written))
        if self.background:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mrisr-writer")

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.shape != self.spatial_shape:
            raise ValueError(f"{self.path}: frame shape {frame.shape} != {self.spatial_shape}")
        expected = self.n_frames or 1
        if self._written >= expected:
            raise ValueError(f"{self.path}: all {expected} frame(s) already written")
        data = np.asarray(frame, dtype=self.dtype).tobytes(order="F")
        if self._pool is None:
            with write_errors(self.path):
                self._fh.write(data)
        else:
            self._finish_pending()
            self._pending = self._pool.submit(self._fh.write, data)
        self._written += 1

    def _finish_pending(self) -> None:
        """Wait for the frame in flight; its error (disk full, ...) is raised here, as one line."""
        pending, self._pending = self._pending, None
        if pending is not None:
            with write_errors(self.path):
                pending.result()

    def _close(self, failing: bool = False) -> None:
        """Wait for the frame in flight, stop the worker, close the streams (each exactly once).
        ``failing``: the caller is already leaving with an exception (Ctrl-C, SIGTERM, a bad frame),
        which a failed write in flight must not replace."""
        try:
            if self._pool is not None:
                try:
                    self._finish_pending()
                except Exception:
                    if not failing:
                        raise
                finally:
                    self._pool.shutdown(wait=True)
                    self._pool = None
        finally:
            try:
                if self._fh is not None and self._fh is not self._raw:
                    self._fh.close()
            finally:
                if self._raw is not None:
                    self._raw.close()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            with write_errors(self.path):
                self._close(failing=exc_type is not None)
            if exc_type is None:
                expected = self.n_frames or 1
                if self._written != expected:
                    raise ValueError(f"{self.path}: {self._written} of {expected} frame(s) written")
                with write_errors(self.path):
                    _publish(self._tmp, self.path)
        finally:
            if self._tmp is not None and self._tmp.exists():
                self._tmp.unlink()
