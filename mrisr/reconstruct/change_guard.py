"""The change guard: the network may sharpen a change the frame measured, but not undo it.

The last step before data consistency in :func:`mrisr.reconstruct.pipeline.reconstruct_frame`, for a
network fed the gated keyhole with the sparse change (:mod:`mrisr.reconstruct.changes`).
"""

from __future__ import annotations

import numpy as np


def keep_measured_change(output: np.ndarray, given: np.ndarray, change_sign: np.ndarray,
                         in_place: bool = False) -> np.ndarray:
    """``output`` no closer to the registered planning scan than ``given`` where the frame measured a
    change: where the sparse change (:attr:`mrisr.reconstruct.network_input.NetworkInput.change_sign`) is negative (the
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



__all__ = ["keep_measured_change"]
