"""Input conversion and checks shared by the metric functions."""

from __future__ import annotations

from typing import Any

import numpy as np

K1 = 0.01
K2 = 0.03


def _as_array(image: Any, name: str = "image") -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor or a :class:`mrisr.io.Volume`."""
    if hasattr(image, "affine") and hasattr(image, "data"):  # mrisr.io.Volume
        image = image.data
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch.Tensor, without importing torch
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.dtype == bool:
        return array
    if np.iscomplexobj(array):
        raise ValueError(f"{name}: complex data; pass magnitude images (np.abs) to the metrics")
    return array


def _pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    pred_arr = _as_array(pred, "pred")
    target_arr = _as_array(target, "target")
    if pred_arr.shape != target_arr.shape:
        raise ValueError(
            f"pred shape {pred_arr.shape} != target shape {target_arr.shape}; "
            "both images must be on the same grid (see check_same_grid)"
        )
    return pred_arr, target_arr


def _mask_array(mask: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask_arr = _as_array(mask, "mask")
    if mask_arr.shape != shape:
        raise ValueError(f"mask shape {mask_arr.shape} != image shape {shape}")
    mask_arr = mask_arr.astype(bool, copy=False)
    if not mask_arr.any():
        raise ValueError("mask is empty (no voxel inside); pass a mask that covers the object or no mask")
    return mask_arr


def _check_spatial(image: np.ndarray) -> None:
    if image.ndim not in (2, 3):
        raise ValueError(
            f"ssim needs a 2-D or 3-D image, got shape {image.shape}; use evaluate_frames for (X, Y, Z, T) series"
        )


def _data_range(target: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        if not data_range > 0:
            raise ValueError(f"data_range {data_range}: must be > 0")
        return float(data_range)
    value = float(np.max(target)) - float(np.min(target))
    # a constant ground truth has no range; fall back to its magnitude (or 1) so C1, C2 stay > 0
    return value if value > 0 else (abs(float(np.max(target))) or 1.0)
