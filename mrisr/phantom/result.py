"""A dynamic phantom and how it was made, as :func:`~mrisr.phantom.make_dynamic` returns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrisr.io.volume import Volume
from mrisr.phantom.files import write_phantom
from mrisr.phantom.motion import Motion

__all__ = ["DynamicPhantom"]


@dataclass
class DynamicPhantom:
    """A dynamic phantom and how it was made.

    Attributes:
        planning: 3-D HR planning scan ``(X, Y, Z)`` (different motion state, no contrast).
        hr: 4-D HR ground truth ``(X, Y, Z, T)``, affine of the static input, TR set.
        lr: 4-D LR series ``(X', Y', Z, T)`` (k-space centre), coarsened affine, TR set.
        keep: requested percentage of k-space kept.
        keep_actual: percentage actually kept by the LR matrix.
        breathing: ``(T,)`` breathing phase per frame in ``[0, 1]`` (1 = full inspiration).
        contrast_curve: ``(T,)`` relative contrast uptake per frame in ``[0, 1]`` (zeros without contrast).
        contrast_weight: ``(X, Y, Z)`` smooth region weight in ``[0, 1]`` in the static anatomy's frame;
            a voxel's intensity is multiplied by ``1 + 0.4 * contrast_curve[t] * weight`` before warping.
        planning_phase: breathing phase of the planning scan.
        settings: the arguments used (seed, frames, tr, motion_mm, contrast, noise_snr, ...).
        insert_mask: ``(X, Y, Z, T)`` bool core of the structure inserted into the frames (absent
            from the planning scan), or None.
        planning_insert_mask: ``(X, Y, Z, T)`` bool site, in each frame, of the structure only the
            planning scan has (where the motion carries it), or None.
        planning_insert_contrast: that structure's contrast in the planning scan
            (:func:`mrisr.metrics.structure_contrast`), the denominator of its leakage.
    """

    planning: Volume
    hr: Volume
    lr: Volume
    keep: float
    keep_actual: float
    breathing: np.ndarray
    contrast_curve: np.ndarray
    contrast_weight: np.ndarray
    planning_phase: float
    settings: dict = field(default_factory=dict)
    insert_mask: np.ndarray | None = None
    planning_insert_mask: np.ndarray | None = None
    planning_insert_contrast: float | None = None
    _motion: Motion | None = field(default=None, repr=False)

    def frame_displacement(self, t: int) -> np.ndarray:
        """``(3, X, Y, Z)`` pull-back displacement (voxels) of frame ``t`` from the static anatomy."""
        return self._motion.frame_displacement(float(self.breathing[t]), t)

    def tracking_displacement(self, t: int, iterations: int = 8) -> np.ndarray:
        """The displacement ``u`` (voxels) with ``planning(x + u(x)) = hr_t(x)``: what a registration
        of the planning scan to frame ``t`` should find (fixed point of ``u = D_t(x) - P(x + u)``)."""
        return self._motion.tracking_displacement(t, iterations)

    @property
    def tr(self) -> float:
        return float(self.hr.tr)

    def metadata(self) -> dict:
        """What ``phantom.json`` records besides the file names: k-space kept, TR, shapes, the
        breathing trace, the contrast curve and the settings."""
        meta = {
            "keep_requested": self.keep,
            "keep_actual": self.keep_actual,
            "tr_s": self.tr,
            "hr_shape": list(self.hr.data.shape),
            "lr_shape": list(self.lr.data.shape),
            "planning_phase": self.planning_phase,
            "breathing": [round(float(v), 6) for v in self.breathing],
            "contrast_curve": [round(float(v), 6) for v in self.contrast_curve],
            "settings": self.settings,
        }
        if self.planning_insert_contrast is not None:
            meta["planning_insert_contrast"] = round(float(self.planning_insert_contrast), 6)
        return meta

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``planning.nii.gz``, ``dynamic_hr.nii.gz``, ``dynamic_lr.nii.gz`` and ``phantom.json``.

        Each image keeps its own geometry (``lr`` its coarsened affine) and the 4-D files carry TR.

        Returns:
            ``{"planning": ..., "hr": ..., "lr": ..., "metadata": ...}`` paths.
        """
        return write_phantom(directory, self.planning, self.hr, self.lr, self.tr, self.insert_mask,
                             self.planning_insert_mask, self.metadata())
