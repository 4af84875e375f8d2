"""In-memory image form shared by every reader: array + affine + TR + header info."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Volume:
    """A 3-D or 4-D image with its geometry.

    Attributes:
        data: array of shape ``(X, Y, Z)`` or ``(X, Y, Z, T)`` in voxel order of ``affine``.
        affine: 4x4 voxel-to-world (RAS+, mm) matrix.
        tr: repetition time of the series in seconds (time between frames), or ``None``.
        qform_code: NIfTI qform code to write back (1 = scanner, 2 = aligned, ...).
        sform_code: NIfTI sform code to write back.
        source: file it was read from, if any.
        xyzt_units: NIfTI units string pair, e.g. ``("mm", "sec")``.
    """

    data: np.ndarray
    affine: np.ndarray
    tr: float | None = None
    qform_code: int = 1
    sform_code: int = 1
    source: Path | None = None
    xyzt_units: tuple[str, str] = ("mm", "sec")
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.data.ndim not in (3, 4):
            raise ValueError(f"data must be 3-D or 4-D, got shape {self.data.shape}")

    @property
    def is_4d(self) -> bool:
        return self.data.ndim == 4

    @property
    def n_frames(self) -> int:
        return self.data.shape[3] if self.is_4d else 1

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape[:3])  # type: ignore[return-value]

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel size in mm along X, Y, Z."""
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]

    @property
    def name(self) -> str:
        return self.source.name if self.source is not None else "<array>"

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` as a float32 ``(X, Y, Z)`` array (a 3-D volume is its own frame 0)."""
        if not self.is_4d:
            if t != 0:
                raise IndexError(f"{self.name}: 3-D volume has only frame 0, asked for {t}")
            return np.asarray(self.data, dtype=np.float32)
        return np.asarray(self.data[..., t], dtype=np.float32)

    def frames(self):
        """Iterate over frames as float32 ``(X, Y, Z)`` arrays."""
        for t in range(self.n_frames):
            yield self.frame(t)

    def with_data(self, data: np.ndarray, affine: np.ndarray | None = None, tr: float | None = None) -> Volume:
        """A copy carrying new data (and optionally a new affine / TR), same header codes."""
        return Volume(
            data=data,
            affine=self.affine if affine is None else affine,
            tr=self.tr if tr is None else tr,
            qform_code=self.qform_code,
            sform_code=self.sform_code,
            source=None,
            xyzt_units=self.xyzt_units,
        )

    def world_centroid(self, frame: int = 0) -> np.ndarray:
        """Intensity-weighted centroid of a frame in world coordinates (mm)."""
        arr = np.abs(self.frame(frame)).astype(np.float64)
        grids = np.indices(arr.shape, dtype=np.float64)
        total = arr.sum()
        ijk = np.array([(g * arr).sum() / total for g in grids] + [1.0])
        return (self.affine @ ijk)[:3]
