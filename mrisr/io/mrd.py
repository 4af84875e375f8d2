"""Read ISMRMRD (MRD) Cartesian raw data as a :class:`~mrisr.io.Volume`, one frame at a time.

A raw frame becomes the image the pipeline expects of an LR frame: per coil, the centred inverse
FFT of the measured block of k-space (the matrix its acquired lines span, nothing re-simulated),
readout oversampling removed, coils combined by sum of squares, on the affine of
:mod:`mrisr.io.mrd_geometry`. A dynamic whose frames hold only their central lines gives the LR
series (full readout with central phase-encode lines gives a full-width, coarse-in-y matrix); a
fully sampled acquisition gives the HR volume ``mrisr simulate`` undersamples.

The FFT is written here with numpy rather than taken from :mod:`mrisr.kspace`: :mod:`mrisr.io`
is the lowest layer and imports nothing above it. It is the same centred transform
(``fftshift(ifft(ifftshift(k)))``, centre at ``M // 2``) and the same scaling: with
``norm="forward"`` the inverse is the plain sum, so a block cut from ``fftc`` of an image (the
pipeline's forward transform, scaled by ``1/N``) comes back at the image's intensity scale.

Acquisitions already in memory (one frame received on an MRD stream by :mod:`mrisr.serve`) take
the same path: :func:`frame_from_acquisitions` indexes them like a file and reconstructs the frame.

Large dynamics stream: :func:`load_mrd` with ``lazy=True`` indexes the acquisition headers once
(:func:`mrisr.io.mrd_header.index_raw`) and :class:`RawFrames` reads one frame's acquisitions
when that frame is asked for, so memory holds one frame's k-space at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrisr.io.errors import MrisrInputError
from mrisr.io.mrd_geometry import raw_affine
from mrisr.io.mrd_header import index_acquisitions, index_raw, is_raw
from mrisr.io.mrd_layout import RawLayout
from mrisr.io.volume import Volume

__all__ = ["RawFrames", "acquisition_samples", "frame_from_acquisitions", "is_raw", "load_mrd", "reconstruct_frame"]


def _ifftc(kspace: np.ndarray, axis: int) -> np.ndarray:
    """Centred inverse FFT along one axis, unscaled (the inverse of a ``1/N``-scaled forward FFT)."""
    return np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(kspace, axes=axis), axis=axis, norm="forward"), axes=axis)


def _read_samples(layout: RawLayout, h5, t: int) -> np.ndarray:
    """The samples of frame ``t``'s acquisitions, ``(A, coils, used readout samples)`` complex64."""
    indices = layout.frames[t].acquisitions
    dataset = h5[layout.group]["data"].fields("data")
    first, last = int(indices[0]), int(indices[-1])
    try:
        if last - first + 1 == len(indices):  # the usual case: a frame is a run of acquisitions
            raw = dataset[first:last + 1]
        else:
            raw = dataset[indices]
    except (OSError, ValueError, KeyError) as exc:
        raise MrisrInputError(
            f"{layout.path}: cannot read the samples of frame {t} ({type(exc).__name__}: the file is truncated or "
            "corrupt); copy the complete file again"
        ) from None
    used = layout.readout.last + 1
    expected = 2 * layout.coils * layout.samples
    out = np.empty((len(raw), layout.coils, used), dtype=np.complex64)
    for a, values in enumerate(raw):
        if values.size != expected:
            raise MrisrInputError(
                f"{layout.path}: acquisition {int(indices[a])} holds {values.size // 2} samples, its header says "
                f"{layout.coils} coils x {layout.samples}; copy the complete file again"
            )
        block = np.asarray(values, dtype=np.float32).view(np.complex64).reshape(layout.coils, layout.samples)
        out[a] = block[:, layout.discard_pre:layout.discard_pre + used]
    return out


def reconstruct_frame(layout: RawLayout, samples: np.ndarray, t: int) -> np.ndarray:
    """Frame ``t`` as a float32 ``(X, Y, Z)`` magnitude image from its samples (see :func:`_read_samples`).

    Per coil: place the lines in the centred block, inverse FFT along the readout, crop the
    readout to the reconstructed field of view (oversampling removed), inverse FFT along phase
    (and partitions), crop; then the square root of the sum of squares over coils. Lines acquired
    more than once (averages) are averaged.
    """
    frame = layout.frames[t]
    rx, ry, rz = layout.readout, layout.phase, layout.partition
    nz = layout.n_slices if layout.n_slices > 1 else rz.block
    cell = frame.z * ry.block + frame.y
    unique, inverse, counts = np.unique(cell, return_inverse=True, return_counts=True)
    x0 = rx.offset
    sos = np.zeros((rz.keep if layout.three_d else nz, ry.keep, rx.keep), dtype=np.float64)
    for coil in range(layout.coils):
        lines = np.zeros((len(unique), rx.block), dtype=np.complex64)
        np.add.at(lines, (inverse, slice(x0, x0 + rx.last + 1)), samples[:, coil, :])
        if np.any(counts > 1):
            lines /= counts[:, None].astype(np.float32)
        lines = _ifftc(lines, axis=1)[:, rx.crop_start:rx.crop_start + rx.keep]
        k = np.zeros((nz * ry.block, rx.keep), dtype=np.complex64)
        k[unique] = lines
        image = _ifftc(k.reshape(nz, ry.block, rx.keep), axis=1)[:, ry.crop_start:ry.crop_start + ry.keep]
        if layout.three_d:
            image = _ifftc(image, axis=0)[rz.crop_start:rz.crop_start + rz.keep]
        sos += image.real.astype(np.float64) ** 2 + image.imag.astype(np.float64) ** 2
    return np.ascontiguousarray(np.sqrt(sos).astype(np.float32).transpose(2, 1, 0))


def acquisition_samples(layout: RawLayout, acquisitions: list, t: int = 0) -> np.ndarray:
    """Frame ``t``'s samples from ``ismrmrd.Acquisition`` objects in memory, as :func:`_read_samples` reads them from a file."""
    indices = layout.frames[t].acquisitions
    used = layout.readout.last + 1
    out = np.empty((len(indices), layout.coils, used), dtype=np.complex64)
    for a, index in enumerate(indices):
        data = acquisitions[int(index)].data
        if data.shape != (layout.coils, layout.samples):
            raise MrisrInputError(
                f"{layout.path}: acquisition {int(index)} holds {data.shape[0]} coils x {data.shape[1]} samples, the "
                f"frame's others {layout.coils} x {layout.samples}; send acquisitions of one matrix"
            )
        out[a] = data[:, layout.discard_pre:layout.discard_pre + used]
    return out


def frame_from_acquisitions(acquisitions: list, header, name: str = "stream") -> tuple[np.ndarray, np.ndarray, RawLayout]:
    """One frame from the ``ismrmrd.Acquisition`` objects that make it up (e.g. received on an MRD stream).

    Args:
        acquisitions: the frame's acquisitions (noise, navigator and other non-image ones are skipped).
        header: the parsed ISMRMRD header (``ismrmrd.xsd.ismrmrdHeader``).
        name: how the data is named in errors.

    Returns:
        ``(image, affine, layout)``: float32 ``(X, Y, Z)`` magnitude, its RAS+ affine (mm), the layout.

    Raises:
        MrisrInputError: as :func:`load_mrd`, and for acquisitions that span more than one frame.
    """
    layout = index_acquisitions(acquisitions, header, name)
    if layout.n_frames != 1:
        raise MrisrInputError(f"{name}: the acquisitions span {layout.n_frames} frames ({layout.frame_counter}s); "
                              "send them one frame at a time")
    return reconstruct_frame(layout, acquisition_samples(layout, acquisitions), 0), raw_affine(layout), layout


class RawFrames:
    """A lazy ``(X, Y, Z, T)`` array over a raw file: ``frames[..., t]`` reads and reconstructs frame ``t``.

    It plays the part nibabel's array proxy plays for a lazily loaded NIfTI file: the
    :class:`~mrisr.io.Volume` holds it as ``data``, ``Volume.frame(t)`` and
    :func:`mrisr.io.stream.iter_frames` read one frame at a time, and ``numpy.asarray`` reads all.
    """

    def __init__(self, layout: RawLayout) -> None:
        self.layout = layout
        self.shape = (*layout.shape, layout.n_frames)
        self.ndim = 4
        self.dtype = np.dtype(np.float32)
        self._h5 = None

    def _file(self):
        if self._h5 is None or not self._h5.id.valid:
            import h5py

            try:
                self._h5 = h5py.File(self.layout.path, "r")
            except OSError as exc:
                raise MrisrInputError(f"{self.layout.path}: cannot be reopened ({exc}); check the file is still there") from None
        return self._h5

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` (negative counts from the end) as float32 ``(X, Y, Z)``."""
        n = self.layout.n_frames
        if not -n <= t < n:
            raise IndexError(f"{self.layout.path.name}: frame {t} of {n}")
        t %= n
        return reconstruct_frame(self.layout, _read_samples(self.layout, self._file(), t), t)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if key and key[0] is Ellipsis and len(key) == 2 and isinstance(key[1], int | np.integer):
            return self.frame(int(key[1]))
        if len(key) == 4 and all(k == slice(None) for k in key[:3]) and isinstance(key[3], int | np.integer):
            return self.frame(int(key[3]))
        return np.asarray(self)[key]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        from mrisr.io.checks import check_fits_memory

        check_fits_memory(4.0 * float(np.prod(self.shape)), f"{self.layout.path} ({'x'.join(map(str, self.shape))})",
                          "load it lazily (frame by frame) or crop the series")
        out = np.empty(self.shape, dtype=np.float32)
        for t in range(self.shape[3]):
            out[..., t] = self.frame(t)
        return out if dtype is None else out.astype(dtype)

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_h5"] = None  # an open HDF5 handle does not cross processes; it is reopened on demand
        return state


def load_mrd(path: str | Path, lazy: bool = False) -> Volume:
    """Read an ISMRMRD Cartesian raw file as a :class:`~mrisr.io.Volume`.

    Args:
        path: ``.h5`` / ``.mrd`` file with a ``/dataset`` (or one other group) of acquisitions.
        lazy: keep a multi-frame series as a :class:`RawFrames` proxy, reconstructed frame by
            frame when read (streaming); a single frame is always reconstructed at once.

    Returns:
        ``(X, Y, Z[, T])`` float32 magnitude, affine RAS+ (mm), TR (s) from the acquisition time
        stamps when frames advance them, ``extra["raw"]`` describing what was read.

    Raises:
        MrisrInputError: one line naming the file, the problem and the fix (not HDF5, no
            acquisitions, non-Cartesian, missing lines in the sampled centre, mixed matrices, ...).
    """
    path = Path(path)
    layout = index_raw(path)
    affine = raw_affine(layout)
    proxy = RawFrames(layout)
    if layout.n_frames == 1:
        data = proxy.frame(0)
        proxy.close()
    elif lazy:
        data = proxy
    else:
        data = np.asarray(proxy)
        proxy.close()
    return Volume(data=data, affine=affine, tr=layout.frame_seconds, qform_code=1, sform_code=1, source=path,
                  extra={"raw": layout.describe(), "descrip": "mrisr raw"})
