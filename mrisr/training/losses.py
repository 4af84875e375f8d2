"""Training losses: L1 + (1 - SSIM) by default, perceptual only when its weights are local."""

from __future__ import annotations

import torch
from torch import nn

#: the SSIM loss window (voxels along each axis, slices included)
SSIM_WINDOW = 7

#: normalised intensity above which a target voxel counts as tissue for the weighted L1
TISSUE_LEVEL = 0.1


class SRLoss(nn.Module):
    """``l1 * |pred - target| + ssim * (1 - SSIM(pred, target))`` on normalised intensities.

    ``tissue > 0`` weights the L1 term ``1 + tissue`` inside the object (target above
    :data:`TISSUE_LEVEL`) and 1 in the air around it, so cleaning the background cannot pay for
    errors in tissue. ``sites > 0`` adds ``sites`` to the weight where the batch's ``sites`` mask
    is set: where an inserted structure makes the target and the prior differ (a needle that
    entered, one that is gone), the few voxels where trusting the prior is wrong.

    SSIM is MONAI's ``SSIMLoss`` (3-D Gaussian window). MONAI's ``PerceptualLoss`` downloads
    its weights on first use, which is impossible offline, so it is only enabled when
    ``perceptual > 0`` and the weights are already in the local cache (``TORCH_HOME``).
    """

    def __init__(self, l1: float = 1.0, ssim: float = 1.0, perceptual: float = 0.0, data_range: float = 1.0,
                 tissue: float = 0.0, sites: float = 0.0) -> None:
        super().__init__()
        from monai.losses import SSIMLoss

        self.w_l1, self.w_ssim, self.w_perc = float(l1), float(ssim), float(perceptual)
        self.w_tissue, self.w_sites = float(tissue), float(sites)
        self.ssim = SSIMLoss(spatial_dims=3, data_range=data_range, kernel_type="gaussian", win_size=SSIM_WINDOW)
        self.perceptual = None
        if self.w_perc > 0:
            from monai.losses import PerceptualLoss

            try:
                self.perceptual = PerceptualLoss(spatial_dims=3, network_type="medicalnet_resnet10_23datasets", is_fake_3d=False)
            except Exception as exc:  # offline: no weights
                raise RuntimeError(
                    f"perceptual loss weights are not available locally ({type(exc).__name__}); set loss.perceptual: 0"
                ) from None

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                sites: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        use_sites = self.w_sites > 0 and sites is not None
        if self.w_tissue or use_sites:
            # tissue: the target above 10 % of the normalised scale (~1 at the frame's 99.5th percentile)
            weight = torch.ones_like(target)
            if self.w_tissue:
                weight = weight + self.w_tissue * (target > TISSUE_LEVEL).float()
            if use_sites:
                weight = weight + self.w_sites * sites.float()
            l1 = ((pred - target).abs() * weight).sum() / weight.sum()
        else:
            l1 = (pred - target).abs().mean()
        total = self.w_l1 * l1
        parts = {"l1": float(l1.detach())}
        if self.w_ssim:
            s = self.ssim(pred, target)
            total = total + self.w_ssim * s
            parts["ssim_loss"] = float(s.detach())
        if self.perceptual is not None:
            p = self.perceptual(pred, target)
            total = total + self.w_perc * p
            parts["perceptual"] = float(p.detach())
        return total, parts
