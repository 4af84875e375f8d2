"""The measured band and the object: what a dynamic frame sees of an image, and where its object is.

A dynamic frame measures only the central in-plane k-space of each slice. Every step that compares a
frame with a planning scan (intensity matching, registration, the sparse change, the gate, the maps)
compares them *through that band*, and averages only over the object, not the air around it. Both
concepts live here so they are computed one way:

* :func:`lr_band`: an image's central k-space as a magnitude image on the LR matrix (what a frame
  measures of it);
* :func:`measured_band`: an image's central ``lr_inplane`` k-space as a magnitude image on the LR
  matrix, zero-filled back to the image's grid (the same two steps that turn a measured frame into
  its sinc, so an image equal to the truth gives exactly the frame's sinc);
* :func:`frame_high`: a frame's 99th percentile, the level every object, gate and change threshold
  is a fraction of;
* :func:`object_mask`: the frame's object, voxels above :data:`OBJECT_LEVEL` of that level.
"""

from __future__ import annotations

import numpy as np

from mrisr.kspace.functional import crop_lowres, zero_fill

#: the object: voxels above this fraction of the frame's 99th percentile (:func:`frame_high`)
OBJECT_LEVEL = 0.1


def lr_band(image: np.ndarray, lr_inplane: tuple[int, int]) -> np.ndarray:
    """What a dynamic frame measures of ``image`` ``(X', Y', Z)``: its central ``lr_inplane`` k-space
    as a magnitude image on the LR matrix ``(x, y, Z)``, float32 (the registration compares frames
    with the planning scan this way, on the LR matrix)."""
    return crop_lowres(np.asarray(image, dtype=np.float32), tuple(lr_inplane))


def measured_band(image: np.ndarray, lr_inplane: tuple[int, int]) -> np.ndarray:
    """``image`` ``(X', Y', Z)`` as the dynamic sees it: its central ``lr_inplane`` k-space as a
    magnitude image on the LR matrix, zero-filled back to the image's grid; float32.

    The FFTs run in torch in single precision on all threads (faster than numpy's double-precision
    FFTs at a difference of about 1e-7 of the intensity scale; ``benchmarks/RESULTS.md``).

    Example:
        >>> image = np.ones((8, 8, 2), dtype=np.float32)
        >>> bool(np.allclose(measured_band(image, (4, 4)), image, atol=1e-5))
        True
    """
    import torch

    image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    return zero_fill(crop_lowres(image, tuple(lr_inplane)), tuple(image.shape[:2])).numpy()


def frame_high(sinc: np.ndarray) -> float:
    """The frame's 99th percentile, taken on every second voxel in-plane (the sinc is band-limited,
    so the subsample sees the same distribution); computed once per frame and handed to the steps
    that use it."""
    return float(np.percentile(np.asarray(sinc)[::2, ::2], 99))


def object_mask(sinc: np.ndarray, high: float | None = None, level: float = OBJECT_LEVEL) -> np.ndarray:
    """Boolean mask of the frame's object: ``sinc`` above ``level`` times :func:`frame_high`
    (``high`` when the caller has it)."""
    sinc = np.asarray(sinc)
    return sinc > level * (frame_high(sinc) if high is None else high)


__all__ = ["OBJECT_LEVEL", "frame_high", "lr_band", "measured_band", "object_mask"]
