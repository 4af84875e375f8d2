"""Where each voxel comes from: disagreement and unmeasured-detail maps of a reconstruction.

A super-resolved frame mixes what the scanner measured (the central k-space band of the frame)
with what the prior and the network supplied. Two maps per frame, on the HR grid, make that
visible (``mrisr reconstruct --maps``):

* **disagreement**: where the measured frame disagrees with the prior it was given, within the
  measured band: ``|band(prior) - sinc| / (local signal level + 10 % of the frame's 99th
  percentile)``, with ``band`` the prior seen as the dynamic sees anatomy (its central k-space as
  a magnitude image on the LR matrix, zero-filled back to the HR grid) and ``sinc`` the measured
  frame zero-filled the same way. The prior is already intensity-matched to the
  frame. A structure that entered after the planning scan (a needle, a bolus) or one that left
  lights up; so do registration errors and a prior of another contrast (then the map is high
  everywhere). The local level is the frame smoothed over two LR voxels, so a value of 0.2 reads
  "the prior is off by about 20 % of the local signal here". Without a prior the map is zero.
* **unmeasured**: the magnitude of the output's k-space outside the measured band, i.e. the detail
  the method added rather than measured (for sinc it is zero; for a keyhole it is the planning
  scan's outer k-space).

What the maps do not say: a low disagreement does not prove the added detail is right (the band
is blind to changes smaller than an LR voxel that keep the band's content), and the unmeasured
map shows how much was added, not whether it is correct. Per frame, the sidecar also records the
data-consistency residual: the NRMSE of the output's central k-space (as a magnitude image on the
LR matrix) against the measured frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from mrisr.kspace.band import frame_high, measured_band
from mrisr.kspace.functional import crop_lowres, fftc, ifftc, pad_kspace

if TYPE_CHECKING:
    import torch

#: the floor of the local level, as a fraction of the frame's 99th percentile (keeps air from lighting up)
LEVEL_FLOOR = 0.1
#: the local level's smoothing, in LR voxels
LEVEL_SIGMA_LR = 2.0
MAP_NAMES = ("disagreement", "unmeasured")


@dataclass
class FrameMaps:
    """The maps of one frame and their summary figures."""

    disagreement: np.ndarray  # (X', Y', Z) float32
    unmeasured: np.ndarray  # (X', Y', Z) float32
    consistency_nrmse: float

    def summary(self) -> dict[str, float]:
        """Figures for the sidecar: mean and 99th percentile of each map, the residual."""
        return {
            "consistency_nrmse": round(self.consistency_nrmse, 6),
            "disagreement_mean": round(float(self.disagreement.mean()), 6),
            "disagreement_p99": round(float(np.percentile(self.disagreement, 99)), 6),
            "unmeasured_mean": round(float(self.unmeasured.mean()), 6),
            "unmeasured_p99": round(float(np.percentile(self.unmeasured, 99)), 6),
        }


@lru_cache(maxsize=16)
def _level_operator(n_hr: int, step: int, sigma: float) -> torch.Tensor:
    """The ``(n_hr, n_small)`` matrix of one in-plane axis of :func:`local_level`: a Gaussian of
    ``sigma / step`` samples over the ``step``-th samples (scipy's ``gaussian_filter1d``, mode
    ``reflect``, applied to the identity, so it is that filter exactly), then linear interpolation
    back onto every voxel (``align_corners``; beyond the last sample, its value)."""
    import torch

    n_small = len(range(0, n_hr, step))
    gauss = ndimage.gaussian_filter1d(np.eye(n_small, dtype=np.float64), sigma / step, axis=0, mode="reflect")
    last = (n_small - 1) * step
    position = np.minimum(np.arange(n_hr), last) / step
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, n_small - 1)
    weight = position - lower
    interp = np.zeros((n_hr, n_small))
    np.add.at(interp, (np.arange(n_hr), lower), 1.0 - weight)
    np.add.at(interp, (np.arange(n_hr), upper), weight)
    return torch.from_numpy(np.ascontiguousarray(interp @ gauss, dtype=np.float32))


def local_level(sinc: np.ndarray, lr_inplane: tuple[int, int], high: float | None = None) -> np.ndarray:
    """The frame's local signal level: ``sinc`` smoothed in-plane by a Gaussian of
    :data:`LEVEL_SIGMA_LR` LR voxels, plus :data:`LEVEL_FLOOR` of its 99th percentile.

    The sinc frame is band-limited to the LR matrix, so the Gaussian is computed on every
    ``sigma // 4``-th voxel in-plane and brought back by linear interpolation: a fraction of the time
    of filtering every voxel (benchmarks/RESULTS.md, 'Design decisions and their measurements'), and
    it differs from that by under 0.5 % of the level away from the field of view's edge (at most
    0.25 % in 99 % of the voxels, tested). Both steps are linear along each axis, so they run as
    one small matrix per axis (:func:`_level_operator`) applied with two matrix products in the
    ``(X', Y', Z)`` layout: no transposed copies. On a 256x256x32 frame at 4 % of k-space that
    took 7.9 ms against 24 ms for scipy's filter, torch's interpolation and the copies back
    (2 threads, same values to 5e-7 of the level's maximum).
    """
    import torch

    sinc = np.asarray(sinc, dtype=np.float32)
    sigma = [LEVEL_SIGMA_LR * h / lr for h, lr in zip(sinc.shape[:2], lr_inplane)]
    step = [max(1, int(sg // 4)) for sg in sigma]
    along_x = _level_operator(int(sinc.shape[0]), step[0], float(sigma[0]))
    along_y = _level_operator(int(sinc.shape[1]), step[1], float(sigma[1]))
    small = torch.from_numpy(np.ascontiguousarray(sinc[:: step[0], :: step[1]]))
    nx, ny, nz = small.shape
    level = torch.matmul(along_x, small.reshape(nx, ny * nz)).view(-1, ny, nz)  # (X', ny, Z)
    level = torch.matmul(along_y, level)  # (X', Y', Z): one product per row of X'
    floor = LEVEL_FLOOR * max(frame_high(sinc) if high is None else high, 1e-12)
    return level.add_(np.float32(floor)).numpy()


def disagreement_map(prior: np.ndarray | None, sinc: np.ndarray, lr_inplane: tuple[int, int],
                     band: np.ndarray | None = None, misregistration: float = 0.0,
                     high: float | None = None) -> np.ndarray:
    """``|band(prior) - sinc|`` over the local signal level, ``(X', Y', Z)`` float32.

    Args:
        prior: the prior the frame was given, on the HR grid and intensity-matched (None: zeros).
        sinc: the measured LR frame zero-filled to the HR grid.
        lr_inplane: the LR in-plane matrix (the measured band).
        band: :func:`measured_band` of ``prior`` when the caller has it already.
        misregistration: in HR voxels; the level is raised by this times the in-plane gradient
            magnitude of ``band``, the difference such a shift of the prior makes at an edge, so
            a small registration error at an edge weighs less than a structure in flat tissue
            (the gated keyhole's setting, :data:`mrisr.reconstruct.gate.GATE_MISREGISTRATION`;
            0, the maps' setting: the plain disagreement).
        high: :func:`frame_high` of ``sinc`` when the caller has it.
    """
    if prior is None:
        return np.zeros(sinc.shape, dtype=np.float32)
    sinc = np.ascontiguousarray(sinc, dtype=np.float32)
    band = measured_band(prior, lr_inplane) if band is None else band
    import torch

    # element-wise in torch (both cores; numpy's loops run on one), the same float32 operations
    level = torch.from_numpy(local_level(sinc, lr_inplane, high))
    b = torch.from_numpy(np.ascontiguousarray(band, dtype=np.float32))
    if misregistration > 0:
        gx, gy = torch.gradient(b, dim=(0, 1))
        level = level + np.float32(misregistration) * torch.sqrt(gx * gx + gy * gy)
    return (b - torch.from_numpy(sinc)).abs_().div_(level).numpy()


def unmeasured_map(output: np.ndarray, lr_inplane: tuple[int, int]) -> np.ndarray:
    """Magnitude of ``output``'s in-plane k-space outside the measured central band, ``(X', Y', Z)``."""
    k = fftc(np.asarray(output, dtype=np.complex64), (0, 1))
    inside = pad_kspace(np.ones(tuple(lr_inplane), dtype=bool), output.shape[:2], (0, 1))[:, :, None]
    return np.abs(ifftc(np.where(inside, 0, k), (0, 1))).astype(np.float32)


def consistency_nrmse(output: np.ndarray, lr_frame: np.ndarray) -> float:
    """NRMSE of the output seen through the measured band (LR matrix, magnitude) against the frame."""
    seen = crop_lowres(np.asarray(output, dtype=np.float32), lr_frame.shape[:2])
    measured = np.asarray(lr_frame, dtype=np.float64)
    norm = float(np.sqrt(np.mean(measured**2)))
    error = float(np.sqrt(np.mean((seen.astype(np.float64) - measured) ** 2)))
    return error / norm if norm > 0 else (0.0 if error == 0 else float("inf"))


def frame_maps(output: np.ndarray, prior: np.ndarray | None, sinc: np.ndarray, lr_frame: np.ndarray) -> FrameMaps:
    """Both maps and the residual of one reconstructed frame."""
    lr_inplane = tuple(int(n) for n in lr_frame.shape[:2])
    return FrameMaps(disagreement_map(prior, sinc, lr_inplane), unmeasured_map(output, lr_inplane),
                     consistency_nrmse(output, lr_frame))


__all__ = ["MAP_NAMES", "FrameMaps", "consistency_nrmse", "disagreement_map", "frame_maps", "local_level",
           "unmeasured_map"]
