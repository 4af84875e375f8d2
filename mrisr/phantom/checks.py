"""The arguments of :func:`~mrisr.phantom.make_dynamic`, checked before any work starts."""

from __future__ import annotations

import numpy as np

from mrisr.inserts import INSERTS, PLANNING_CONTRASTS
from mrisr.io.checks import check_fits_memory
from mrisr.io.errors import MrisrInputError, UsageError
from mrisr.io.volume import Volume
from mrisr.limits import check_frames, check_keep

__all__ = ["check_inputs"]


def check_inputs(
    static: Volume, frames: int, keep: float, tr: float, motion_mm: float, noise_snr: float | None,
    insert: str | None = None, planning_insert: str | None = None, planning_contrast: str = "same",
    through_plane_mm: float = 0.0, planning_noise_snr: float | None = None,
) -> None:
    """Refuse a source or settings :func:`~mrisr.phantom.make_dynamic` cannot use, naming the value and the fix.

    Raises:
        UsageError: a setting outside its fixed rule (an unknown structure, a negative SNR): a bad
            command line, which the CLI reports with the usage exit code.
        MrisrInputError: a 4-D, tiny, all-zero or non-finite source, or one too large for memory.
    """
    if planning_noise_snr is not None and not planning_noise_snr > 0:
        raise UsageError(f"planning_noise_snr={planning_noise_snr}: must be > 0 (or None for no noise)")

    name = static.name
    for option, value in (("insert", insert), ("planning_insert", planning_insert)):
        if value is not None and value not in INSERTS:
            raise UsageError(f"{option}={value!r}: unknown structure; choose one of {', '.join(INSERTS)}")
    if planning_contrast not in PLANNING_CONTRASTS:
        raise UsageError(
            f"planning_contrast={planning_contrast!r}: choose one of {', '.join(PLANNING_CONTRASTS)}"
        )
    if not (0 <= through_plane_mm <= 50):
        raise UsageError(f"through_plane_mm={through_plane_mm}: must be in [0, 50] mm, e.g. 3")
    if static.is_4d:
        raise MrisrInputError(
            f"{name}: source is 4-D {tuple(static.data.shape)}; a phantom needs one static 3-D volume (X, Y, Z); "
            "pass a 3-D image or extract one frame first"
        )
    if min(static.spatial_shape) < 2:
        raise MrisrInputError(
            f"{name}: volume of shape {static.spatial_shape} is too small; every axis needs >= 2 voxels"
        )
    if int(frames) != frames or frames < 1:
        raise UsageError(f"frames={frames}: must be an integer >= 1, e.g. 20")
    check_frames(int(frames), "frames")
    check_keep(keep, "keep", inplane=static.spatial_shape[:2])
    # the HR series is held whole (float32), with a warped frame and its LR copy beside it
    voxels = float(np.prod(static.spatial_shape, dtype=np.float64))
    check_fits_memory(voxels * 4 * (int(frames) * 1.1 + 8), f"{name}: a {frames}-frame phantom of {static.spatial_shape}",
                      "make fewer frames or crop the source")
    if not tr > 0:
        raise UsageError(f"tr={tr}: must be > 0 seconds, e.g. 0.5")
    if not motion_mm >= 0:
        raise UsageError(f"motion_mm={motion_mm}: must be >= 0 mm, e.g. 4")
    if noise_snr is not None and not noise_snr > 0:
        raise UsageError(f"noise_snr={noise_snr}: must be > 0 (or None for no noise)")
    data = np.asarray(static.data)
    if not np.isfinite(data).all():
        raise MrisrInputError(f"{name}: source contains NaN/Inf voxels; replace them (e.g. with 0) first")
    if not np.any(data):
        raise MrisrInputError(f"{name}: source is all zero; check that the right file was given")
