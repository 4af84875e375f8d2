"""The network's input, formed in one place for inference, fine-tuning and training.

A network whose prior channel takes the gated keyhole (``prior_input: gated-keyhole`` in its
checkpoint, the bundled default) is handed, for each frame, the registered planning scan
(the *reference*):

1. matched to the frame's intensity through the measured band (:func:`mrisr.reconstruct.gate.match_intensity`);
2. corrected by the sparse change the band shows (:func:`mrisr.reconstruct.changes.apply_sparse_change`),
   when ``sparse_changes`` is on;
3. gated: its detail kept only where the frame agrees with it (:func:`mrisr.reconstruct.gate.gate`).

:func:`form_network_input` runs these three steps. The per-frame pipeline
(:func:`mrisr.reconstruct.pipeline.reconstruct_frame`), fine-tuning and the training pairs
(:mod:`mrisr.training.pairs`) all call it, so a network is trained on exactly what inference feeds it.
The classical ``keyhole-gated`` method is the same composite without the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrisr.kspace.band import frame_high, measured_band
from mrisr.kspace.functional import zero_fill
from mrisr.reconstruct.changes import apply_sparse_change
from mrisr.reconstruct.gate import GATE_THRESHOLD, gate, match_intensity


@dataclass
class NetworkInput:
    """The gated keyhole of one frame and what the change guard needs.

    Attributes:
        given: the gated composite ``(X', Y', Z)`` float32 (the network's prior channel; the
            ``keyhole-gated`` output).
        change_sign: the sparse change's sign (``int8``; ``None`` without the sparse change step).
    """

    given: np.ndarray
    change_sign: np.ndarray | None = None


def form_network_input(lr_frame: np.ndarray, prior: np.ndarray, sinc: np.ndarray | None = None, *,
                       sparse_changes: bool = True, threshold: float = GATE_THRESHOLD,
                       match: bool = True, line_changes: bool = False) -> NetworkInput:
    """Match, correct by the sparse change, gate: the network's prior channel for one frame.

    Args:
        lr_frame: the measured LR frame ``(X, Y, Z)`` (its in-plane matrix is the measured band).
        prior: the (registered) reference on the HR grid ``(X', Y', Z)``.
        sinc: ``lr_frame`` zero-filled to the HR grid (computed when not given).
        sparse_changes: run the sparse-change step (on in tracked and planning reconstruction and in
            training; off step-wise, whose prior is a gated composite whose differences from the
            frame are not sparse).
        threshold: the gate's disagreement threshold.
        match: match the prior's intensity to the frame first (off only for a prior already matched).
        line_changes: with the sparse change, let its elongated pieces become straight tubes
            (:mod:`mrisr.reconstruct.lines`).

    Returns:
        :class:`NetworkInput`.

    Example:
        >>> from mrisr.kspace.functional import crop_lowres
        >>> truth = np.random.default_rng(0).random((16, 16, 2)).astype(np.float32) + 1
        >>> formed = form_network_input(crop_lowres(truth, (8, 8)), truth)
        >>> bool(np.allclose(formed.given, truth, atol=1e-3))
        True
    """
    lr_inplane = tuple(int(n) for n in lr_frame.shape[:2])
    reference = np.asarray(prior, dtype=np.float32)
    if sinc is None:
        sinc = zero_fill(np.asarray(lr_frame, dtype=np.float32), reference.shape[:2])
    sinc = np.ascontiguousarray(sinc, dtype=np.float32)
    high = frame_high(sinc)
    if match:
        reference, band = match_intensity(reference, sinc, lr_inplane, high)
    else:
        band = measured_band(reference, lr_inplane)
    change_sign = None
    if sparse_changes:
        reference, band, change_sign = apply_sparse_change(reference, band, sinc, lr_inplane, high, line_changes)
    return NetworkInput(gate(reference, band, sinc, lr_inplane, high, threshold), change_sign)


__all__ = ["NetworkInput", "form_network_input"]
