"""What an ISMRMRD raw file spans, once indexed: per axis, how k-space becomes voxels; per frame,
which acquisitions to read and where their lines go. Built by :func:`mrisr.io.mrd_header.index_raw`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class AxisPlan:
    """How one encoded k-space axis becomes image voxels.

    The acquired samples (indices ``first..last`` in encoding coordinates, k-space centre at
    ``centre``) are placed in a block of ``block`` samples whose index ``block // 2`` holds the
    centre (missing edge samples of partial Fourier stay zero). The centred inverse FFT of the
    block gives ``block`` voxels of ``spacing`` mm over the encoded field of view; the ``keep``
    central ones (index ``block // 2`` kept at ``keep // 2``) cover the reconstructed field of view.
    """

    first: int
    last: int
    centre: int
    block: int
    keep: int
    spacing: float

    @property
    def offset(self) -> int:
        """Block index of encoding index ``e`` is ``e + offset``."""
        return self.block // 2 - self.centre

    @property
    def crop_start(self) -> int:
        return self.block // 2 - self.keep // 2


def centred_block(first: int, last: int, centre: int) -> int:
    """Smallest block holding samples ``first..last`` with ``centre`` at its index ``block // 2``."""
    below, above = centre - first, last - centre
    even = 2 * max(below, above + 1)
    odd = 2 * max(below, above) + 1
    return min(even, odd)


def axis_plan(first: int, last: int, centre: int, encoded_fov: float, recon_fov: float) -> AxisPlan:
    block = centred_block(first, last, centre)
    keep = block if recon_fov >= encoded_fov else max(1, int(round(block * recon_fov / encoded_fov)))
    return AxisPlan(first, last, centre, block, keep, encoded_fov / block)


@dataclass(frozen=True)
class FrameIndex:
    """The acquisitions of one frame: file indices (ascending) and where each line goes.

    Attributes:
        acquisitions: indices into the file's acquisition list.
        y: block index of each acquisition's phase-encode line.
        z: block index of its partition (3-D) or its slice rank (2-D, 0 = lowest slice).
    """

    acquisitions: np.ndarray
    y: np.ndarray
    z: np.ndarray


@dataclass
class RawLayout:
    """Everything needed to reconstruct any frame of a raw file, without reading its samples.

    Attributes:
        path: the file.
        group: HDF5 group of the dataset (``dataset`` unless the file names another).
        readout, phase, partition: :class:`AxisPlan` of the three encoded axes (``partition`` is
            one voxel of the slice thickness for 2-D data).
        n_slices: number of 2-D slices (1 for 3-D data).
        coils: receiver channels.
        frame_counter: ``repetition``, ``phase`` or ``None`` (a single frame).
        frames: one :class:`FrameIndex` per frame.
        samples, discard_pre: the readout as acquired (the same for every acquisition).
        read_dir, phase_dir, slice_dir: direction cosines (LPS).
        slice_positions: ``(n_slices, 3)`` centre of each slice by rank, or of the slab (LPS, mm).
        frame_seconds: time between frames from the acquisition time stamps (2.5 ms ticks), or ``None``.
        skipped: counts of acquisitions skipped, by kind (noise, navigator, ...).
        header: the parsed ISMRMRD header (``ismrmrd.xsd.ismrmrdHeader``).
    """

    path: Path
    group: str
    readout: AxisPlan
    phase: AxisPlan
    partition: AxisPlan
    n_slices: int
    coils: int
    frame_counter: str | None
    frames: list[FrameIndex]
    samples: int
    discard_pre: int
    read_dir: np.ndarray
    phase_dir: np.ndarray
    slice_dir: np.ndarray
    slice_positions: np.ndarray
    frame_seconds: float | None
    skipped: dict
    header: object

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def three_d(self) -> bool:
        return self.n_slices == 1 and self.partition.block > 1

    @property
    def shape(self) -> tuple[int, int, int]:
        """Image matrix ``(X, Y, Z)`` of one frame: readout, phase, partitions or slices."""
        z = self.n_slices if self.n_slices > 1 else self.partition.keep
        return self.readout.keep, self.phase.keep, z

    def describe(self) -> dict:
        """A JSON-ready summary of what was read (napari layer metadata, volume extra)."""
        return {
            "format": "ISMRMRD raw", "group": self.group, "coils": self.coils, "frames": self.n_frames,
            "frame_counter": self.frame_counter, "slices": self.n_slices, "three_d": self.three_d,
            "readout_samples": self.samples, "readout_oversampling_removed": self.readout.keep < self.readout.block,
            "lines": [self.phase.first, self.phase.last], "line_centre": self.phase.centre,
            "partitions": [self.partition.first, self.partition.last],
            "matrix": list(self.shape), "coil_combination": "sum of squares",
            "skipped_acquisitions": dict(self.skipped),
        }
