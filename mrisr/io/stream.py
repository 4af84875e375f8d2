"""Read a series one frame at a time, in order, with memory bounded by one frame: NIfTI
(:func:`iter_frames`) and uncompressed MetaImage/NRRD series (:class:`RawFrames`)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mrisr.io.errors import MrisrInputError, one_line
from mrisr.io.volume import Volume


class RawFrames:
    """A 4-D series ``(X, Y, Z, T)`` stored uncompressed (X fastest, T slowest) in one file from byte
    ``offset``: an array-like whose frames are read from disk on demand, one at a time.

    ``series[..., t]`` reads frame ``t``; ``numpy.asarray(series)`` reads everything.
    """

    def __init__(self, path: str | Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = Path(path)
        self.offset = int(offset)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.frame_voxels = int(np.prod(self.shape[:3]))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` as stored (``(X, Y, Z)``, the file's voxel type)."""
        n_frames = self.shape[3]
        if not 0 <= t < n_frames:
            raise IndexError(f"{self.path}: frame {t} of a {n_frames}-frame series")
        with open(self.path, "rb") as handle:
            handle.seek(self.offset + t * self.frame_voxels * self.dtype.itemsize)
            raw = np.fromfile(handle, dtype=self.dtype, count=self.frame_voxels)
        if raw.size != self.frame_voxels:
            raise MrisrInputError(f"{self.path}: file ends in frame {t} of {n_frames}; the file is truncated")
        return raw.reshape(self.shape[:3], order="F")

    def __getitem__(self, key):
        if (isinstance(key, tuple) and len(key) == 2 and key[0] is Ellipsis
                and isinstance(key[1], int | np.integer)):
            return self.frame(int(key[1]) % self.shape[3])
        return np.asarray(self)[key]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = np.stack([self.frame(t) for t in range(self.shape[3])], axis=-1)
        return data if dtype is None else data.astype(dtype)


def iter_frames(volume: Volume) -> Iterator[np.ndarray]:
    """Frames of ``volume`` as float32 ``(X, Y, Z)`` arrays, read sequentially.

    For a lazily loaded NIfTI file the bytes are streamed (a ``.nii.gz`` is decompressed once,
    front to back, instead of once per frame); in-memory volumes are simply sliced.
    """
    source = volume.source
    if source is None or isinstance(volume.data, np.ndarray) or not str(source).lower().endswith((".nii", ".nii.gz")):
        for t in range(volume.n_frames):
            yield volume.frame(t)
        return
    import nibabel as nib

    img = nib.load(str(source))
    hdr = img.header
    shape = img.shape
    spatial = tuple(int(s) for s in shape[:3])
    n_frames = int(shape[3]) if len(shape) == 4 else 1
    dtype = hdr.get_data_dtype()
    proxy = img.dataobj  # the image's header copy forgets vox_offset; the proxy keeps it
    slope = float(getattr(proxy, "slope", 1.0))
    inter = float(getattr(proxy, "inter", 0.0))
    slope = 1.0 if not np.isfinite(slope) or slope == 0 else slope
    inter = 0.0 if not np.isfinite(inter) else inter
    nbytes = int(np.prod(spatial)) * dtype.itemsize
    offset = int(proxy.offset)
    opener = gzip.open if str(source).lower().endswith(".gz") else open
    with opener(source, "rb") as fh:
        fh.read(offset)
        for t in range(n_frames):
            try:
                raw = fh.read(nbytes)
            except (EOFError, OSError, gzip.BadGzipFile) as exc:
                raise MrisrInputError(
                    f"{source}: cannot read frame {t} of {n_frames} ({type(exc).__name__}: the file is truncated or "
                    "corrupt); replace it with a complete copy"
                ) from None
            if len(raw) != nbytes:
                raise MrisrInputError(f"{source}: file ends in frame {t} of {n_frames}; the file is truncated")
            frame = np.frombuffer(raw, dtype=dtype).reshape(spatial, order="F").astype(np.float32)
            if slope != 1.0 or inter != 0.0:
                frame = frame * np.float32(slope) + np.float32(inter)
            yield frame
        if opener is gzip.open:
            # the CRC and length are checked at the end of the stream: a damaged payload fails the
            # run (and its output, still a partial file, is removed) instead of passing as numbers
            try:
                while fh.read(1 << 20):
                    pass
            except (EOFError, OSError, gzip.BadGzipFile) as exc:
                raise MrisrInputError(
                    f"{source}: corrupt .gz data ({one_line(exc)}); replace it with a complete copy"
                ) from None
