"""Keyhole imaging: the classical baselines every mrisr result is compared with.

Keyhole (van Vaals et al., JMRI 1993; Jones et al., MRM 1993) completes each dynamic frame's
measured central k-space with the outer k-space of a reference scan: here the planning scan on the
HR grid. The *registered* keyhole first deforms the planning scan to the frame's motion state
(:class:`mrisr.reconstruct.motion.MotionTracker`), so the borrowed outer k-space belongs to
anatomy in the right place. Both take well under a second per frame and need no model; they are
run with ``mrisr reconstruct --method keyhole|keyhole-registered`` and sit beside the network in
every benchmark table. ``keyhole-gated`` (:func:`gated_keyhole`) keeps the registered planning
scan's detail only where the measured frame agrees with it, so a structure that entered or left
after the planning scan is shown as measured rather than as the planning scan has it. In the
pipeline (``ReconstructOptions.sparse_changes``, on by default) the registered planning scan is
first corrected by the sparse change the frame's band shows (:mod:`mrisr.reconstruct.changes`), so
such a structure also gets the detail the band cannot measure.

The measured centre comes from the LR magnitude frame (what users have), so on magnitude data
this is not exact data consistency: the k-space of a magnitude image differs from the complex
k-space the scanner measured, most near sharp edges.
"""

from __future__ import annotations

import numpy as np

from mrisr.kspace.functional import fftc, ifftc, pad_kspace
from mrisr.reconstruct.gate import GATE_THRESHOLD
from mrisr.reconstruct.network_input import form_network_input
from mrisr.reconstruct.options import METHODS

#: methods that register the planning scan to each frame first
REGISTERED_METHODS = ("keyhole-registered", "keyhole-gated")


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


def gated_keyhole(lr_frame: np.ndarray, reference: np.ndarray, sinc: np.ndarray | None = None,
                  threshold: float | None = None, match_intensity: bool = True,
                  sparse_changes: bool = False, line_changes: bool = False) -> np.ndarray:
    """A keyhole that borrows the reference's detail only where the measured frame agrees with it
    (the ``keyhole-gated`` method; :mod:`mrisr.reconstruct.gate` says how).

    The same composite the network is handed
    (:func:`mrisr.reconstruct.network_input.form_network_input`), without the change's sign.

    Args:
        lr_frame: the measured LR frame ``(X, Y, Z)``.
        reference: the (registered) reference on the HR grid ``(X', Y', Z)``.
        sinc: ``lr_frame`` zero-filled to the HR grid (computed when not given).
        threshold: disagreement up to which all of the reference's detail is kept
            (default :data:`mrisr.reconstruct.gate.GATE_THRESHOLD`).
        match_intensity: first scale the reference so that its measured band matches this
            frame's sinc in the object (:func:`mrisr.reconstruct.gate.match_intensity`).
        sparse_changes: first correct the reference by the sparse change the measured band shows
            (:func:`mrisr.reconstruct.changes.apply_sparse_change`).
        line_changes: with ``sparse_changes``, let elongated pieces of the change become straight
            tubes (:mod:`mrisr.reconstruct.lines`).

    Returns:
        ``(X', Y', Z)`` float32, non-negative.
    """
    return form_network_input(lr_frame, reference, sinc, sparse_changes=sparse_changes, match=match_intensity,
                              line_changes=line_changes,
                              threshold=GATE_THRESHOLD if threshold is None else threshold).given


def data_consistency(sr: np.ndarray, lr_frame: np.ndarray) -> np.ndarray:
    """Replace the central in-plane k-space of ``sr`` by the measured LR frame's k-space
    (a keyhole with the SR frame as the reference, :func:`mrisr.reconstruct.keyhole.keyhole`)."""
    return keyhole(lr_frame, sr)


__all__ = ["METHODS", "REGISTERED_METHODS", "data_consistency", "gated_keyhole", "keyhole"]
