"""Image-quality and fidelity metrics — the only metric code in mrisr.

Training validation, benchmarks, ``mrisr evaluate``, batch runs and the napari widget all
call these functions, so every number mrisr reports is computed the same way.

Conventions (all functions):

* Images are ``(X, Y, Z)`` volumes (``evaluate_frames`` also takes ``(X, Y, Z, T)`` series);
  numpy arrays, torch tensors and :class:`mrisr.io.Volume` objects are accepted.
* Metrics are computed on the images' **true intensities**. Nothing is rescaled, shifted or
  clipped. ``data_range`` defaults to the ground truth's own range ``target.max() - target.min()``
  (over the whole volume, also when a mask is given). In particular we never map images
  through ``(x + 1) / 2`` before SSIM: that shift raises every local mean, which pushes SSIM's
  luminance term towards 1 and inflates the score (by a wide margin on a 4 % phantom:
  benchmarks/RESULTS.md, 'Design decisions and their measurements');
  PSNR with a fixed range of 1 gains ~6 dB the same way. Scores computed like that cannot be
  compared with honest baselines.
* A mask restricts where the score is averaged, not what the filters see: SSIM's local
  statistics near the mask edge still use the neighbouring voxels outside the mask.
* **Tissue first.** :func:`score_frame` / :func:`score_frames` report SSIM, PSNR and NRMSE inside
  the object (:func:`object_mask`) and over the whole volume; the whole-volume numbers are mostly
  background on head and body scans and come second everywhere.
* Fidelity (:mod:`mrisr.metrics.fidelity`): contrast recovery of a structure the prior lacks,
  leakage of one only the prior has, and registration error in mm.

Modules: ``quality`` (SSIM, PSNR, NRMSE), ``masks`` (object and foreground masks), ``frames``
(per-frame scores, summaries, the same-grid check), ``fidelity``.
"""

from mrisr.metrics.fidelity import (
    contrast_recovery,
    core_continuity,
    leakage,
    registration_error_mm,
    ring_mask,
    structure_contrast,
)
from mrisr.metrics.frames import (
    METRICS,
    SCORE_COLUMNS,
    check_same_grid,
    evaluate_frame,
    evaluate_frames,
    score_frame,
    score_frames,
    summarise,
)
from mrisr.metrics.masks import foreground_mask, object_mask
from mrisr.metrics.quality import nrmse, psnr, ssim, ssim_map

__all__ = [
    "METRICS",
    "SCORE_COLUMNS",
    "check_same_grid",
    "contrast_recovery",
    "core_continuity",
    "evaluate_frame",
    "evaluate_frames",
    "foreground_mask",
    "leakage",
    "nrmse",
    "object_mask",
    "psnr",
    "registration_error_mm",
    "ring_mask",
    "score_frame",
    "score_frames",
    "ssim",
    "ssim_map",
    "structure_contrast",
    "summarise",
]
