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

#: reconstruction methods, the default first
METHODS = ("network", "keyhole", "keyhole-registered", "keyhole-gated")
#: methods that register the planning scan to each frame first
REGISTERED_METHODS = ("keyhole-registered", "keyhole-gated")
#: disagreement below which the gated keyhole keeps all of the prior's detail (none at twice it),
#: measured with :data:`GATE_MISREGISTRATION`. Both were chosen on MNI152 phantoms, never on the
#: held-out real scan: of the settings that brought a planning-only needle's leakage to sinc's level,
#: the one with the best tissue SSIM (benchmarks/RESULTS.md, 'Design decisions and their measurements')
GATE_THRESHOLD = 0.10
#: HR voxels of misregistration the gate forgives at an edge (:func:`mrisr.reconstruct.maps.disagreement_map`)
GATE_MISREGISTRATION = 3.0


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


def band_factor(band: np.ndarray, sinc: np.ndarray, high: float | None = None) -> float:
    """Least-squares factor matching a reference's measured band to the frame's sinc in the object
    (sinc above 10 % of its 99th percentile, ``high`` when the caller has it); 1 when the fit is not positive."""
    from mrisr.reconstruct.maps import frame_high

    sinc = np.asarray(sinc, dtype=np.float32)
    fg = sinc > 0.1 * (frame_high(sinc) if high is None else high)
    b = band[fg].astype(np.float64)
    denom = float((b * b).sum())
    factor = float((sinc[fg] * b).sum() / denom) if denom > 0 else 1.0
    return factor if np.isfinite(factor) and factor > 0 else 1.0


def gated_keyhole(lr_frame: np.ndarray, reference: np.ndarray, sinc: np.ndarray | None = None,
                  threshold: float = GATE_THRESHOLD, match_intensity: bool = True,
                  sparse_changes: bool = False, return_change: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """A keyhole that borrows the reference's detail only where the measured frame agrees with it.

    ``sinc + w * (reference - band(reference))``: the measured frame (zero-filled) plus the
    reference's detail outside the measured band, weighted by ``w = clip(2 - d / threshold, 0, 1)``
    with ``d`` the disagreement map (:func:`mrisr.reconstruct.maps.disagreement_map`) that forgives
    the difference a misregistration of :data:`GATE_MISREGISTRATION` HR voxels makes at an edge,
    spread by a minimum filter over one LR voxel so the whole footprint of a disagreeing structure
    is covered. Forgiving edges lets the threshold be lower, so a structure in flat tissue that
    only the frame or only the reference has closes the gate more fully.
    Where the frame and the reference agree it is a keyhole in image space; where they disagree (a
    structure that entered, one that left, a registration error, another contrast) it falls back to
    what was measured, so the reference can neither hide nor invent it.

    Args:
        lr_frame: the measured LR frame ``(X, Y, Z)``.
        reference: the (registered, intensity-matched) reference on the HR grid ``(X', Y', Z)``.
        sinc: ``lr_frame`` zero-filled to the HR grid (computed when not given).
        threshold: disagreement up to which all of the reference's detail is kept.
        match_intensity: first scale the reference so that its measured band matches this
            frame's sinc in the object (:func:`band_factor`): a global intensity change between
            frames (contrast arriving everywhere, a receiver-gain change) is then not mistaken for
            disagreement. The band is linear in the scale, so this costs one dot product.
        sparse_changes: first correct the reference by the sparse change the measured band shows
            (:func:`mrisr.reconstruct.changes.sparse_change`): a structure that entered is then shown
            with its unmeasured detail, one that left is cancelled rather than only gated, and the
            gate is computed on the corrected reference. Off here (the training pairs' form); on in
            :class:`mrisr.reconstruct.ReconstructOptions`.
        return_change: also return the sign of that change (``int8``, -1 where the frame lost
            signal, +1 where it gained, 0 elsewhere; ``None`` without ``sparse_changes``), for
            :func:`keep_measured_change`.

    Returns:
        ``(X', Y', Z)`` float32, non-negative (with ``return_change``: it and the change's sign).
    """
    from mrisr.kspace.functional import zero_fill
    from mrisr.reconstruct.maps import disagreement_map, frame_high, measured_band

    lr_inplane = tuple(int(n) for n in lr_frame.shape[:2])
    reference = np.asarray(reference, dtype=np.float32)
    if sinc is None:
        sinc = zero_fill(np.asarray(lr_frame, dtype=np.float32), reference.shape[:2])
    band = measured_band(reference, lr_inplane)
    sinc = np.ascontiguousarray(sinc, dtype=np.float32)
    high = frame_high(sinc)
    if match_intensity:
        factor = np.float32(band_factor(band, sinc, high))
        reference, band = reference * factor, band * factor
    change_sign = None
    if sparse_changes:
        from mrisr.reconstruct.changes import sparse_change

        change, change_band = sparse_change(sinc, band, lr_inplane, high=high)
        if return_change:
            change_sign = np.sign(change).astype(np.int8)
        # the band of the corrected reference, linear in the change (a full measured_band of it
        # differs only where the LR magnitude rectifies a negative lobe, at the object's edge)
        reference, band = reference + change, band + change_band
    disagreement = disagreement_map(reference, sinc, lr_inplane, band=band, misregistration=GATE_MISREGISTRATION,
                                    high=high)
    import torch

    # element-wise in torch (both cores), the same float32 operations as numpy's
    weight = torch.from_numpy(disagreement).div_(np.float32(threshold)).neg_().add_(2.0).clamp_(0.0, 1.0).numpy()
    weight = torch.from_numpy(spread_minimum(weight, 2 * int(round(reference.shape[0] / lr_inplane[0])) + 1))
    detail = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32)) - torch.from_numpy(
        np.ascontiguousarray(band, dtype=np.float32))
    composite = detail.mul_(weight).add_(torch.from_numpy(sinc)).clamp_min_(0.0).numpy()
    return (composite, change_sign) if return_change else composite


def keep_measured_change(output: np.ndarray, given: np.ndarray, change_sign: np.ndarray,
                         in_place: bool = False) -> np.ndarray:
    """``output`` no closer to the registered planning scan than ``given`` where the frame measured a
    change: where the sparse change (:func:`gated_keyhole` with ``return_change``) is negative (the
    frame lost signal: a needle, a void) at most ``given``, where it is positive at least ``given``,
    elsewhere ``output`` as it is.

    ``given`` is the gated keyhole the network was handed, which already carries the change; a
    network that pulls such a voxel back towards the planning scan lets the prior override the
    measurement. On the tuning phantoms the network mostly sharpens such changes already, so this
    moved recovery, leakage and tissue SSIM very little (benchmarks/RESULTS.md, 'Design decisions and
    their measurements'). It is a guarantee more than a gain: whatever a network (bundled, fine-tuned or user-trained) learned,
    it cannot take back a change the frame measured.

    Only the voxels with a change are visited: the change is sparse, so this beats a full pass over
    the frame (benchmarks/RESULTS.md, 'Design decisions and their measurements'). ``in_place``:
    write into ``output`` (when it is float32 and contiguous) instead of a copy.
    """
    result = np.ascontiguousarray(output, dtype=np.float32)
    if result is output and not in_place:
        result = result.copy()
    sign = np.ascontiguousarray(change_sign, dtype=np.int8).reshape(-1)
    where = np.flatnonzero(sign)
    if where.size:
        flat = result.reshape(-1)
        measured = np.ascontiguousarray(given, dtype=np.float32).reshape(-1)[where]
        current = flat[where]
        flat[where] = np.where(sign[where] < 0, np.minimum(current, measured), np.maximum(current, measured))
    return result


def spread_minimum(weight: np.ndarray, size: int) -> np.ndarray:
    """In-plane minimum filter of ``(X, Y, Z)`` over ``size x size`` voxels, as
    ``scipy.ndimage.minimum_filter(weight, (size, size, 1))`` computes it (mode ``reflect``: near
    a border the window's reflected voxels are all inside the clipped window, so it is the minimum
    over the clipped window).

    Two 1-D max-pools of the negated weight in torch, on a slice-major view (torch's pooling is
    vectorised over the innermost, slice axis): the same values (tested), several times faster than
    scipy's filter (benchmarks/RESULTS.md, 'Design decisions and their measurements').
    """
    import torch
    import torch.nn.functional as F

    if size < 1 or size % 2 == 0:
        raise ValueError(f"spread_minimum needs an odd window size, got {size}")
    half = size // 2
    t = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)).permute(2, 0, 1)[None]
    out = F.max_pool2d(-t, (size, 1), stride=1, padding=(half, 0))
    out = F.max_pool2d(out, (1, size), stride=1, padding=(0, half)).neg_()
    return np.ascontiguousarray(out[0].permute(1, 2, 0).numpy())


__all__ = ["GATE_MISREGISTRATION", "GATE_THRESHOLD", "METHODS", "REGISTERED_METHODS", "band_factor", "gated_keyhole", "keyhole", "spread_minimum"]
