"""Motion-tracked planning prior: the planning scan deformed to each frame's motion state.

The planning scan carries the subject's true fine detail, but it was acquired at another motion
state (and without contrast); a previous SR frame is at nearly the right motion state, but it
carries the network's own errors, which come back and grow from frame to frame. The ``tracked``
prior mode takes the best of both: for every frame, the planning scan, brought to the dynamic's
k-space band (central k-space crop, magnitude, on the LR matrix), is registered to the measured LR
frame with symmetric-forces demons (:mod:`mrisr.reconstruct.demons`, smooth displacement field),
starting from the previous frame's displacement; the full-resolution planning scan is then warped
with that field, upsampled to the HR grid. Each frame's prior depends only on
the planning scan and that frame's own data, so nothing accumulates over the series.

Everything happens in the dynamic's voxel frame: HR index ``N // 2`` and LR index ``M // 2``
coincide (the k-space zero-fill convention of :mod:`mrisr.io`), so the LR and HR images overlay
exactly without their world affines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mrisr.kspace.band import lr_band
from mrisr.reconstruct.demons import demons, match_histogram, rows_image, rows_volume, warp_rows


@dataclass
class TrackingSettings:
    """Registration knobs, chosen on phantoms of anatomy the network never saw (the measurements:
    benchmarks/RESULTS.md, 'Fidelity levers: registration smoothing', 'Tracker interpolation' and
    'Design decisions and their measurements').

    Attributes:
        iterations: demons iterations per frame after the first (which starts from the previous
            frame's motion, so few are needed).
        first_iterations: demons iterations for the first frame (from no motion).
        smoothing_voxels: Gaussian smoothing of the displacement, in LR voxels. 3 was chosen on
            MNI152 and Colin27 phantoms: less smoothing follows noise and LR ringing (on the
            held-out real scan 1 voxel was worse than no registration at all; benchmarks/RESULTS.md,
            'Fidelity levers: registration smoothing').
        histogram_match: match the planning scan's intensities to each frame first (contrast
            uptake and coil shading differ between the scans).
        histogram_foreground: the histograms are matched above this fraction of each image's
            99.5th percentile. At a low fraction the Rician noise floor in the air of a planning scan with
            noise of its own counts as object while a frame's air does not, and the mismatched
            intensities pull the registration off. 0.25 was chosen on MNI152 and confirmed on the
            held-out real scan (benchmarks/RESULTS.md, 'Design decisions and their measurements').
        histogram_background: where the planning scan's air lies higher than the frame's (the
            Rician floor of a planning scan with noise of its own), map its air level to the frame's
            (:func:`mrisr.reconstruct.demons.match_histogram`). Chosen on MNI152 phantoms with
            independent noise; it changes nothing where the planning scan's air is as dark as the
            frame's (benchmarks/RESULTS.md, 'Registration on noisy planning scans').
        max_inplane: largest in-plane registration matrix; a larger LR matrix is registered on a
            coarser one (a further central k-space crop of both images, same convention). That is
            cheaper but less accurate: at 25 % of a 128x144 grid, registering on 32x36 instead of
            the full 64x72 LR matrix gave priors worse than no registration, hence the high default.
        interpolation: how the HR planning scan is warped: ``"linear"`` (trilinear) or ``"cubic"``
            (bicubic in-plane, linear between slices). Trilinear blurs the finest texture at
            half-voxel shifts, and that is its merit on real data: the blur also removes part of the
            planning scan's own noise, which no frame shares. Cubic wins only where the planning
            scan's noise is the frames' noise, which no real acquisition gives, hence trilinear
            (benchmarks/RESULTS.md, 'Tracker interpolation: bicubic in-plane measured, not kept').
    """

    iterations: int = 10
    first_iterations: int = 40
    smoothing_voxels: float = 3.0
    histogram_match: bool = True
    histogram_foreground: float = 0.25
    histogram_background: bool = True
    max_inplane: int = 128
    interpolation: str = "linear"


def _interp_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """``(n_out, n_in)`` linear interpolation weights: output index ``i`` lies at input index
    ``(i - n_out // 2) * n_in / n_out + n_in // 2`` (clamped to the grid)."""
    pos = ((torch.arange(n_out, dtype=torch.float64) - n_out // 2) * (n_in / n_out) + n_in // 2).clamp(0, n_in - 1)
    low = pos.floor().long().clamp(max=n_in - 1)
    high = (low + 1).clamp(max=n_in - 1)
    w = (pos - low).float()
    mat = torch.zeros(n_out, n_in)
    mat[torch.arange(n_out), low] += 1 - w
    mat[torch.arange(n_out), high] += w
    return mat


class MotionTracker:
    """Warps one planning scan to the motion state of each LR frame in turn.

    Args:
        planning: the planning scan on the HR grid ``(X', Y', Z)``.
        lr_shape: the dynamic's matrix ``(X, Y, Z)`` (same Z as the HR grid).
        settings: registration settings.
        device: torch device for the registration and the warp.
    """

    def __init__(self, planning: np.ndarray, lr_shape, settings: TrackingSettings | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.settings = settings or TrackingSettings()
        self.device = torch.device(device)
        planning = np.asarray(planning, dtype=np.float32)
        self.hr_shape = tuple(planning.shape)
        if int(lr_shape[2]) != self.hr_shape[2]:
            raise ValueError(f"LR {tuple(lr_shape)} and HR {self.hr_shape} grids must have the same number of slices")
        self.lr_shape = (int(lr_shape[0]), int(lr_shape[1]), int(lr_shape[2]))
        # slice-stacked once for the warp (:func:`mrisr.reconstruct.demons.rows_image`); the
        # (X', Y', Z) volume is a view of it
        self._planning_rows = rows_image(torch.from_numpy(planning).to(self.device))
        self._planning_hr = rows_volume(self._planning_rows, self.hr_shape)
        factor = max(1, -(-max(self.lr_shape[:2]) // int(self.settings.max_inplane)))
        self.reg_shape = (max(2, self.lr_shape[0] // factor), max(2, self.lr_shape[1] // factor), self.lr_shape[2])
        # the planning scan as the registration sees the frames: LR band (magnitude), then the
        # registration grid's band, the same two steps the frames go through
        self._planning_reg = lr_band(planning, self.lr_shape[:2])
        if self.reg_shape[:2] != self.lr_shape[:2]:
            self._planning_reg = lr_band(self._planning_reg, self.reg_shape[:2])
        self._up = [_interp_matrix(self.hr_shape[a], self.reg_shape[a]).to(self.device) for a in range(2)]
        self._field: torch.Tensor | None = None  # the previous frame's displacement (registration grid and voxels)

    def displacement(self, lr_frame: np.ndarray) -> torch.Tensor:
        """Register the band-limited planning scan to ``lr_frame`` ``(X, Y, Z)`` (magnitude, LR
        matrix); the displacement ``(3, *reg_shape)`` on the registration grid, in its voxels."""
        fixed_np = np.abs(np.asarray(lr_frame, dtype=np.float32))
        if self.reg_shape[:2] != self.lr_shape[:2]:
            fixed_np = lr_band(fixed_np, self.reg_shape[:2])
        planning = self._planning_reg
        moving_np = (match_histogram(planning, fixed_np, foreground=self.settings.histogram_foreground,
                                     background=self.settings.histogram_background)
                     if self.settings.histogram_match else planning)
        fixed = torch.from_numpy(np.ascontiguousarray(fixed_np)).to(self.device)
        moving = torch.from_numpy(np.ascontiguousarray(moving_np)).to(self.device)
        s = self.settings
        iterations = s.first_iterations if self._field is None else s.iterations
        with torch.inference_mode():
            self._field = demons(fixed, moving, iterations, s.smoothing_voxels, init=self._field)
        return self._field

    def prior_for(self, lr_frame: np.ndarray) -> np.ndarray:
        """The planning scan warped to ``lr_frame``'s motion state, on the HR grid ``(X', Y', Z)``.

        The warp runs in blocks of rows (about 1 M voxels each), so its temporaries stay small
        whatever the frame size.
        """
        field = self.displacement(lr_frame)
        nx, ny, nz = self.hr_shape
        units = torch.tensor([h / r for h, r in zip(self.hr_shape, self.reg_shape)], device=self.device).view(3, 1, 1, 1)
        out = torch.empty(self.hr_shape, dtype=torch.float32, device=self.device)
        rows_per_block = max(1, (1 << 20) // (ny * nz))
        rx, ry = self.reg_shape[:2]
        with torch.inference_mode():
            # the field on the HR grid (separable linear interpolation, k-space centre convention):
            # along Y once, along X per block of rows, in HR voxels (matrix products on views)
            along_y = torch.matmul(self._up[1], field.reshape(3 * rx, ry, nz)).view(3, rx, ny * nz)
            for x0 in range(0, nx, rows_per_block):
                rows = slice(x0, min(nx, x0 + rows_per_block))
                disp = torch.matmul(self._up[0][rows], along_y).view(3, -1, ny, nz) * units
                out[rows] = warp_rows(self._planning_hr, disp, rows.start, self._planning_rows,
                                      mode=self.settings.interpolation)
        return out.clamp_min_(0).cpu().numpy()

    def hr_displacement(self) -> np.ndarray:
        """The last frame's displacement on the HR grid, ``(3, X', Y', Z)`` in HR voxels (pull-back:
        ``planning(x + u(x))`` matches the frame), e.g. to compare with a phantom's known motion."""
        if self._field is None:
            raise RuntimeError("no frame registered yet; call prior_for(frame) first")
        units = torch.tensor([h / r for h, r in zip(self.hr_shape, self.reg_shape)], device=self.device).view(3, 1, 1, 1)
        with torch.inference_mode():
            disp = torch.einsum("cxyz,Xx,Yy->cXYz", self._field, self._up[0], self._up[1]) * units
        return disp.cpu().numpy()

    def describe(self) -> dict:
        """Settings and grids of the registration (for the reconstruction's sidecar)."""
        from dataclasses import asdict

        return {"method": "symmetric-forces demons on the LR band", **asdict(self.settings),
                "registration_shape": list(self.reg_shape), "lr_shape": list(self.lr_shape),
                "hr_shape": list(self.hr_shape)}
