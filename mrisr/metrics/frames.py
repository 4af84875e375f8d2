"""Per-frame evaluation of series, summaries over frames and the same-grid check."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mrisr.metrics._inputs import _as_array, _check_spatial, _pair
from mrisr.metrics.masks import object_mask
from mrisr.metrics.quality import nrmse, psnr, ssim, ssim_map

METRICS = ("ssim", "psnr", "nrmse")
#: the columns of a tissue-first score, tissue first (``mrisr evaluate``'s CSV order)
SCORE_COLUMNS = ("ssim_tissue", "psnr_tissue", "nrmse_tissue", "ssim_whole", "psnr_whole", "nrmse_whole")


def _frame(array: np.ndarray, t: int) -> np.ndarray:
    return array if array.ndim == 3 else array[..., t]


def _series(pred: Any, target: Any, mask: Any | None, caller: str):
    """Checked arrays of a series evaluation: ``(pred, target, mask or None, number of frames)``."""
    pred_arr, target_arr = _pair(pred, target)
    if pred_arr.ndim not in (3, 4):
        raise ValueError(f"{caller} needs (X, Y, Z) or (X, Y, Z, T), got shape {pred_arr.shape}")
    mask_arr = None if mask is None else _as_array(mask, "mask").astype(bool, copy=False)
    if mask_arr is not None and mask_arr.shape not in (target_arr.shape[:3], target_arr.shape):
        raise ValueError(f"mask shape {mask_arr.shape} fits neither {target_arr.shape[:3]} nor {target_arr.shape}")
    return pred_arr, target_arr, mask_arr, 1 if target_arr.ndim == 3 else target_arr.shape[3]


def evaluate_frames(
    pred: Any,
    target: Any,
    mask: Any | None = None,
    data_range: float | None = None,
) -> list[dict[str, float | int]]:
    """SSIM, PSNR and NRMSE of every frame.

    Args:
        pred: prediction ``(X, Y, Z)`` or ``(X, Y, Z, T)`` (numpy, torch or Volume).
        target: ground truth of the same shape.
        mask: optional boolean ``(X, Y, Z)`` (used for every frame) or ``(X, Y, Z, T)`` (one per
            frame), e.g. from :func:`foreground_mask`.
        data_range: fixed range for all frames; default: each ground-truth frame's own
            ``max - min``.

    Returns:
        One dict per frame: ``{"frame": t, "ssim": ..., "psnr": ..., "nrmse": ...}``.

    Raises:
        ValueError: shapes that differ or are not 3-D/4-D, or a mask that fits neither.
    """
    pred_arr, target_arr, mask_arr, frames = _series(pred, target, mask, "evaluate_frames")
    rows: list[dict[str, float | int]] = []
    for t in range(frames):
        p, g = _frame(pred_arr, t), _frame(target_arr, t)
        m = None if mask_arr is None else _frame(mask_arr, t)
        rows.append(evaluate_frame(p, g, m, data_range=data_range, frame=t))
    return rows


def evaluate_frame(
    pred: Any,
    target: Any,
    mask: Any | None = None,
    data_range: float | None = None,
    frame: int = 0,
) -> dict[str, float | int]:
    """The row :func:`evaluate_frames` makes for one ``(X, Y, Z)`` frame (for streaming callers)."""
    pred_arr, target_arr = _pair(pred, target)
    return {
        "frame": int(frame),
        "ssim": ssim(pred_arr, target_arr, mask=mask, data_range=data_range),
        "psnr": psnr(pred_arr, target_arr, mask=mask, data_range=data_range),
        "nrmse": nrmse(pred_arr, target_arr, mask=mask),
    }


def score_frame(pred: Any, target: Any, mask: Any | None = None, frame: int = 0) -> dict[str, float | int]:
    """Tissue-first score of one ``(X, Y, Z)`` frame: SSIM, PSNR and NRMSE inside the object and
    over the whole volume.

    Whole-volume SSIM is mostly background on a head or body scan (a method that cleans the
    ringing out of the air gains a lot without improving one voxel of tissue), so the tissue
    numbers come first everywhere mrisr reports quality.

    Args:
        pred: prediction ``(X, Y, Z)``.
        target: ground truth, same shape.
        mask: boolean ``(X, Y, Z)`` object mask; default :func:`mrisr.metrics.object_mask` of
            ``target``.
        frame: the frame index written into the row.

    Returns:
        ``{"frame": t, "ssim_tissue": ..., "psnr_tissue": ..., "nrmse_tissue": ..., "ssim_whole": ...,
        "psnr_whole": ..., "nrmse_whole": ...}``. SSIM and PSNR use the ground truth's whole-volume
        range in both (the tissue score is the same SSIM map averaged over the mask).

    Raises:
        ValueError: shapes differ, or the mask is empty.
    """
    pred_arr, target_arr = _pair(pred, target)
    _check_spatial(pred_arr)
    mask_arr = object_mask(target_arr) if mask is None else _as_array(mask, "mask").astype(bool, copy=False)
    if mask_arr.shape != target_arr.shape:
        raise ValueError(f"mask shape {mask_arr.shape} != image shape {target_arr.shape}")
    if not mask_arr.any():
        raise ValueError("mask is empty (no voxel inside); pass a mask that covers the object or no mask")
    if np.array_equal(pred_arr, target_arr):
        ssim_tissue = ssim_whole = 1.0
    else:
        smap = ssim_map(pred_arr, target_arr)
        ssim_tissue = float(np.mean(smap[mask_arr], dtype=np.float64))
        ssim_whole = float(np.mean(smap, dtype=np.float64))
    return {
        "frame": int(frame),
        "ssim_tissue": ssim_tissue,
        "psnr_tissue": psnr(pred_arr, target_arr, mask=mask_arr),
        "nrmse_tissue": nrmse(pred_arr, target_arr, mask=mask_arr),
        "ssim_whole": ssim_whole,
        "psnr_whole": psnr(pred_arr, target_arr),
        "nrmse_whole": nrmse(pred_arr, target_arr),
    }


def score_frames(pred: Any, target: Any, mask: Any | None = None) -> list[dict[str, float | int]]:
    """:func:`score_frame` for every frame of ``(X, Y, Z[, T])`` series.

    Args:
        pred: prediction ``(X, Y, Z)`` or ``(X, Y, Z, T)``.
        target: ground truth of the same shape.
        mask: ``(X, Y, Z)`` (every frame) or ``(X, Y, Z, T)`` object mask; default: the object
            mask of each ground-truth frame.

    Returns:
        One row per frame (columns :data:`SCORE_COLUMNS` plus ``frame``).
    """
    pred_arr, target_arr, mask_arr, frames = _series(pred, target, mask, "score_frames")
    return [
        score_frame(_frame(pred_arr, t), _frame(target_arr, t), None if mask_arr is None else _frame(mask_arr, t), t)
        for t in range(frames)
    ]


def summarise(rows: Iterable[dict[str, Any]], metrics: Sequence[str] = METRICS) -> dict[str, float | int]:
    """Mean and standard deviation of each metric over frames.

    The standard deviation is the population one (``ddof=0``, numpy's default). A metric that
    is ``inf`` in every frame (PSNR of identical images) has mean ``inf`` and std 0.

    Returns:
        ``{"n": frames, "ssim_mean": ..., "ssim_std": ..., "psnr_mean": ..., ...}``.
    """
    rows = list(rows)
    metrics = tuple(metrics)
    summary: dict[str, float | int] = {"n": len(rows)}
    for name in metrics:
        values = np.array([float(row[name]) for row in rows], dtype=np.float64)
        if values.size == 0:
            summary[f"{name}_mean"] = float("nan")
            summary[f"{name}_std"] = float("nan")
        elif np.all(values == values[0]):
            summary[f"{name}_mean"] = float(values[0])
            summary[f"{name}_std"] = 0.0
        elif not np.all(np.isfinite(values)):
            summary[f"{name}_mean"] = float(np.mean(values))
            summary[f"{name}_std"] = float("nan")
        else:
            summary[f"{name}_mean"] = float(np.mean(values))
            summary[f"{name}_std"] = float(np.std(values))
    return summary


# --------------------------------------------------------------------------- grids


def check_same_grid(
    pred_volume: Any,
    target_volume: Any,
    atol_mm: float = 1e-3,
    check_frames: bool = True,
    hint: str | None = None,
) -> None:
    """Raise :class:`mrisr.io.MrisrInputError` unless two volumes share shape, frames and affine.

    Args:
        pred_volume: :class:`mrisr.io.Volume` of the prediction (or a mask).
        target_volume: :class:`mrisr.io.Volume` of the ground truth.
        atol_mm: tolerance on every affine entry (mm).
        check_frames: also require the same number of frames (off for a 3-D mask of a series).
        hint: the fix to suggest; default: put the ground truth on the SR grid.

    Raises:
        MrisrInputError: one line naming both files, what differs and how to fix it.
    """
    from mrisr.io import MrisrInputError

    pred_name, target_name = _volume_name(pred_volume, "prediction"), _volume_name(target_volume, "ground truth")
    pred_shape = tuple(int(s) for s in pred_volume.data.shape[:3])
    target_shape = tuple(int(s) for s in target_volume.data.shape[:3])
    frames_hint = hint or "pass the ground truth of the same series (same number of frames)"
    hint = hint or (
        "pass the ground truth on the SR grid (reconstruct onto the ground truth's matrix, "
        "or resample one image onto the other's grid) before evaluating"
    )
    if pred_shape != target_shape:
        raise MrisrInputError(
            f"{pred_name}: grid {_fmt_shape(pred_shape)} differs from {target_name} grid {_fmt_shape(target_shape)}; {hint}"
        )
    pred_frames = pred_volume.data.shape[3] if pred_volume.data.ndim == 4 else 1
    target_frames = target_volume.data.shape[3] if target_volume.data.ndim == 4 else 1
    if check_frames and pred_frames != target_frames:
        raise MrisrInputError(
            f"{pred_name}: {pred_frames} frame(s) but {target_name} has {target_frames}; {frames_hint}"
        )
    pred_affine = np.asarray(pred_volume.affine, dtype=np.float64)
    target_affine = np.asarray(target_volume.affine, dtype=np.float64)
    if not np.allclose(pred_affine, target_affine, rtol=0.0, atol=atol_mm):
        worst = float(np.max(np.abs(pred_affine - target_affine)))
        pred_zooms = np.sqrt((pred_affine[:3, :3] ** 2).sum(axis=0))
        target_zooms = np.sqrt((target_affine[:3, :3] ** 2).sum(axis=0))
        raise MrisrInputError(
            f"{pred_name}: affine differs from {target_name} by up to {worst:.4g} mm "
            f"(voxel {_fmt_zooms(pred_zooms)} vs {_fmt_zooms(target_zooms)} mm, origin "
            f"{_fmt_zooms(pred_affine[:3, 3])} vs {_fmt_zooms(target_affine[:3, 3])}); {hint}"
        )


def _volume_name(volume: Any, default: str) -> str:
    source = getattr(volume, "source", None)
    return str(source) if source is not None else default


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _fmt_zooms(values: Sequence[float]) -> str:
    return "x".join(f"{float(v):.4g}" for v in values)
