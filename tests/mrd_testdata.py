"""Write ISMRMRD raw files from images, as a scanner would acquire them (test helper).

Independent of :mod:`mrisr.io.mrd` on purpose: the geometry (RAS affine -> LPS position and
direction cosines) and the k-space (centred FFT, scaled by ``1/N`` like :func:`mrisr.kspace.fftc`)
are written here from the ISMRMRD definitions, so a round trip through the reader checks both.

``position`` is the world point of voxel ``(X // 2, Y // 2, Z // 2)`` of a 3-D slab, and of voxel
``(X // 2, Y // 2)`` of each 2-D slice (the centred-FFT convention of docs/raw.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

LPS = np.diag([-1.0, -1.0, 1.0])


def fftc(image: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    axes = tuple(axes)
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(image, axes=axes), axes=axes, norm="forward"), axes=axes)


def ifftc(kspace: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    axes = tuple(axes)
    return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(kspace, axes=axes), axes=axes, norm="forward"), axes=axes)


def coil_maps(shape: Sequence[int], coils: int) -> np.ndarray:
    """Smooth complex sensitivities ``(coils, X, Y, Z)`` with ``sum |s|^2 == 1`` everywhere, so that
    the sum of squares of the coil images is the magnitude image itself."""
    if coils == 1:
        return np.ones((1, *shape), dtype=np.complex128)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    maps = []
    for c in range(coils):
        angle = 2 * np.pi * c / coils
        centre = (np.cos(angle), np.sin(angle))
        weight = np.exp(-((grids[0] - centre[0]) ** 2 + (grids[1] - centre[1]) ** 2))
        phase = np.exp(1j * (angle + 0.7 * grids[0] - 0.4 * grids[1] + 0.2 * grids[2]))
        maps.append(weight * phase)
    maps = np.array(maps)
    return maps / np.sqrt((np.abs(maps) ** 2).sum(axis=0, keepdims=True))


def _block(n: int, m: int) -> tuple[int, int]:
    """Start and stop of the centred ``m``-block of ``n`` samples (centre ``n // 2`` at ``m // 2``)."""
    start = n // 2 - m // 2
    return start, start + m


def raw_kspace(frame: np.ndarray, coils: int, oversampling: int, three_d: bool) -> np.ndarray:
    """Coil k-space ``(coils, X * oversampling, Y, Z)`` of a magnitude frame ``(X, Y, Z)``."""
    nx = frame.shape[0]
    images = coil_maps(frame.shape, coils) * frame[None]
    if oversampling > 1:
        padded = np.zeros((coils, nx * oversampling, *frame.shape[1:]), dtype=np.complex128)
        start = (nx * oversampling) // 2 - nx // 2
        padded[:, start:start + nx] = images
        images = padded
    return fftc(images, (1, 2, 3) if three_d else (1, 2))


def write_raw(
    path: str | Path,
    frames: np.ndarray,
    affine: np.ndarray,
    *,
    coils: int = 1,
    oversampling: int = 1,
    three_d: bool = False,
    lines: int | None = None,
    readout: int | None = None,
    partitions: int | None = None,
    tr: float = 0.5,
    trajectory: str = "cartesian",
    drop: Sequence[tuple[int, int]] = (),
    bulk: bool = False,
    mutate=None,
) -> Path:
    """Write ``frames`` ``(X, Y, Z[, T])`` (magnitude, RAS ``affine``) as an ISMRMRD raw file.

    Args:
        coils: receiver channels (smooth sensitivities, :func:`coil_maps`).
        oversampling: readout oversampling factor (encoded FOV and matrix in x times this).
        three_d: partitions (``kspace_encode_step_2``) instead of 2-D slices.
        lines, readout, partitions: acquire only the central block of that many phase-encode lines,
            readout samples (of the oversampled readout) or partitions; default all.
        tr: time between frames (s), written as 2.5 ms time stamp ticks.
        trajectory: the header's trajectory (``cartesian``, ``radial``, ...).
        drop: ``(frame, line)`` acquisitions left out (to test refusal).
        bulk: write all acquisitions with one HDF5 write (large series) instead of
            ``ismrmrd.Dataset.append_acquisition`` one by one; same file layout.
        mutate: optional ``f(heads)`` applied to the structured acquisition headers before writing.
    """
    import h5py
    import ismrmrd
    from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype

    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim == 3:
        frames = frames[..., None]
    nx, ny, nz, nt = frames.shape
    nxo = nx * oversampling
    lines = ny if lines is None else lines
    readout = nxo if readout is None else readout
    partitions = nz if partitions is None else partitions
    lps = LPS @ np.asarray(affine, dtype=float)[:3, :3]
    zooms = [float(z) for z in np.linalg.norm(lps, axis=0)]
    dirs = lps / np.array(zooms)
    origin = LPS @ np.asarray(affine, dtype=float)[:3, 3]

    header = ismrmrd.xsd.ismrmrdHeader(
        experimentalConditions=ismrmrd.xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000))
    enc_z = (nz, nz * zooms[2]) if three_d else (1, zooms[2])
    encoding = ismrmrd.xsd.encodingType(
        encodedSpace=ismrmrd.xsd.encodingSpaceType(
            matrixSize=ismrmrd.xsd.matrixSizeType(x=nxo, y=ny, z=enc_z[0]),
            fieldOfView_mm=ismrmrd.xsd.fieldOfViewMm(x=nxo * zooms[0], y=ny * zooms[1], z=enc_z[1])),
        reconSpace=ismrmrd.xsd.encodingSpaceType(
            matrixSize=ismrmrd.xsd.matrixSizeType(x=nx, y=ny, z=enc_z[0]),
            fieldOfView_mm=ismrmrd.xsd.fieldOfViewMm(x=nx * zooms[0], y=ny * zooms[1], z=enc_z[1])),
        encodingLimits=ismrmrd.xsd.encodingLimitsType(
            kspace_encoding_step_1=ismrmrd.xsd.limitType(minimum=0, maximum=ny - 1, center=ny // 2),
            kspace_encoding_step_2=ismrmrd.xsd.limitType(minimum=0, maximum=max(enc_z[0] - 1, 0),
                                                         center=enc_z[0] // 2),
            slice=ismrmrd.xsd.limitType(minimum=0, maximum=0 if three_d else nz - 1, center=0),
            repetition=ismrmrd.xsd.limitType(minimum=0, maximum=nt - 1, center=0)),
        trajectory=ismrmrd.xsd.trajectoryType(trajectory),
    )
    header.encoding.append(encoding)

    x0, x1 = _block(nxo, readout)
    y0, y1 = _block(ny, lines)
    z0, z1 = _block(nz, partitions) if three_d else (0, nz)
    heads, data = [], []
    for t in range(nt):
        k = raw_kspace(frames[..., t], coils, oversampling, three_d)
        for z in range(z0, z1):
            centre_voxel = [nx // 2, ny // 2, nz // 2 if three_d else z]
            position = dirs @ (np.array(zooms) * np.array(centre_voxel, dtype=float)) + origin
            for y in range(y0, y1):
                if (t, y) in drop:
                    continue
                head = np.zeros((), dtype=acquisition_header_dtype)
                head["version"] = 1
                head["number_of_samples"] = readout
                head["available_channels"] = head["active_channels"] = coils
                head["center_sample"] = nxo // 2 - x0
                head["sample_time_us"] = 5.0
                head["acquisition_time_stamp"] = int(round(t * tr / 2.5e-3)) + y
                head["position"] = position
                head["read_dir"], head["phase_dir"], head["slice_dir"] = dirs[:, 0], dirs[:, 1], dirs[:, 2]
                head["idx"]["kspace_encode_step_1"] = y
                head["idx"]["kspace_encode_step_2"] = z if three_d else 0
                head["idx"]["slice"] = 0 if three_d else z
                head["idx"]["repetition"] = t
                heads.append(head)
                data.append(np.ascontiguousarray(k[:, x0:x1, y, z]).astype(np.complex64))
    heads = np.array(heads, dtype=acquisition_header_dtype)
    if mutate is not None:
        mutate(heads)
        # samples follow the (possibly changed) header: zero-padded or cut to its readout length
        for i, head in enumerate(heads):
            fitted = np.zeros((coils, int(head["number_of_samples"])), dtype=np.complex64)
            n = min(fitted.shape[1], data[i].shape[1])
            fitted[:, :n] = data[i][:, :n]
            data[i] = fitted
    path = Path(path)
    path.unlink(missing_ok=True)  # the package appends to an existing file
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as dataset:
        dataset.write_xml_header(ismrmrd.xsd.ToXML(header).encode())
        if not bulk:
            for head, samples in zip(heads, data):
                acq = ismrmrd.Acquisition(head=ismrmrd.AcquisitionHeader.from_buffer_copy(head.tobytes()))
                acq.data[:] = samples
                dataset.append_acquisition(acq)
    if bulk:
        records = np.empty(len(heads), dtype=acquisition_dtype)
        records["head"] = heads
        for i, samples in enumerate(data):
            records[i]["data"] = samples.view(np.float32).ravel()
            records[i]["traj"] = np.zeros(0, dtype=np.float32)
        with h5py.File(path, "a") as h5:
            h5["dataset"].create_dataset("data", data=records, maxshape=(None,), chunks=True)
    return path


def reference_sos(path: str | Path) -> np.ndarray:
    """A reference reconstruction written out plainly: every acquisition of a single-frame,
    fully sampled 2-D multi-slice or 3-D file into one k-space array, inverse FFT, central
    half of the readout (2x oversampling), square root of the sum of squares over coils."""
    import ismrmrd

    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as dataset:
        header = ismrmrd.xsd.CreateFromDocument(dataset.read_xml_header())
        enc, rec = header.encoding[0].encodedSpace, header.encoding[0].reconSpace
        acqs = [dataset.read_acquisition(i) for i in range(dataset.number_of_acquisitions())]
    coils = acqs[0].active_channels
    three_d = enc.matrixSize.z > 1
    nz = enc.matrixSize.z if three_d else 1 + max(a.idx.slice for a in acqs)
    k = np.zeros((coils, enc.matrixSize.x, enc.matrixSize.y, nz), dtype=np.complex128)
    for a in acqs:
        k[:, :, a.idx.kspace_encode_step_1, a.idx.kspace_encode_step_2 if three_d else a.idx.slice] = a.data
    images = ifftc(k, (1, 2, 3) if three_d else (1, 2))
    start = enc.matrixSize.x // 2 - rec.matrixSize.x // 2
    images = images[:, start:start + rec.matrixSize.x]
    return np.sqrt((np.abs(images) ** 2).sum(axis=0))
