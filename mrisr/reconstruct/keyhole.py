"""Keyhole imaging: the classical baselines every mrisr result is compared with.

Keyhole (van Vaals et al., JMRI 1993; Jones et al., MRM 1993) completes each dynamic frame's
measured central k-space with the outer k-space of a reference scan: here the planning scan on the
HR grid. The *registered* keyhole first deforms the planning scan to the frame's motion state
(:class:`mrisr.reconstruct.motion.MotionTracker`), so the borrowed outer k-space belongs to
anatomy in the right place. Both take well under a second per frame and need no model; they are
run with ``mrisr reconstruct --method keyhole|keyhole-registered`` and sit beside the network in
every benchmark table.

The measured centre comes from the LR magnitude frame (what users have), so on magnitude data
this is not exact data consistency: the k-space of a magnitude image differs from the complex
k-space the scanner measured, most near sharp edges.
"""

from __future__ import annotations

import numpy as np

from mrisr.kspace.functional import fftc, ifftc, pad_kspace

#: reconstruction methods, the default first
METHODS = ("network", "keyhole", "keyhole-registered")


def keyhole(lr_frame: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Measured central k-space inside, the reference's k-space outside; magnitude image.

    Args:
        lr_frame: the measured LR frame ``(X, Y, Z)`` (its in-plane matrix is the k-space centre).
        reference: the reference on the HR grid ``(X', Y', Z)``, intensity-matched to the frame
            (e.g. :class:`mrisr.reconstruct.prior.PreparedPrior` data, or its registered version).

    Returns:
        ``(X', Y', Z)`` float32 magnitude image on the HR grid.

    Example:
        >>> hr = np.random.default_rng(0).random((8, 8, 2)).astype(np.float32)
        >>> from mrisr.kspace.functional import crop_lowres
        >>> bool(np.allclose(keyhole(crop_lowres(hr, (8, 8)), hr), hr, atol=1e-5))
        True
    """
    lr_frame = np.asarray(lr_frame)
    reference = np.asarray(reference)
    if lr_frame.ndim != 3 or reference.ndim != 3 or lr_frame.shape[2] != reference.shape[2]:
        raise ValueError(f"keyhole needs (X, Y, Z) frames with the same slices, got {lr_frame.shape} and {reference.shape}")
    k_ref = fftc(reference.astype(np.complex64), (0, 1))
    k_lr = fftc(lr_frame.astype(np.complex64), (0, 1))
    measured = pad_kspace(k_lr, reference.shape[:2], (0, 1))
    inside = pad_kspace(np.ones(lr_frame.shape[:2], dtype=bool), reference.shape[:2], (0, 1))[:, :, None]
    return np.abs(ifftc(np.where(inside, measured, k_ref), (0, 1))).astype(np.float32)


__all__ = ["METHODS", "keyhole"]
