"""Validation during training: fixed whole-slab cases from the held-out subject(s), the network's
mean SSIM / PSNR on them per keep level, and the columns those give a row of the training log."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mrisr.training.config import TrainConfig
from mrisr.training.pairs import degrade_prior, gated_input, lowres_frame, random_field, warp, zero_fill_torch
from mrisr.training.sources import build_bank


@dataclass
class ValidationCase:
    keep: float
    sinc: np.ndarray
    prior: np.ndarray
    target: np.ndarray
    scale: float


def build_validation(cfg: TrainConfig) -> list[ValidationCase]:
    """Fixed whole-slab cases from the held-out subject(s): target, perturbed previous-frame
    prior and sinc input at each validation keep level."""
    if not cfg.data.validation:
        return []
    bank = build_bank(cfg.data.validation, [1.5], [3.0], ["axial"])
    cases = []
    rng = np.random.default_rng(cfg.seed + 12345)
    for slab in bank:
        nz = slab.data.shape[2]
        depth = min(cfg.validation.slices, nz)
        for _ in range(cfg.validation.samples):
            z0 = int(nz // 2 - depth // 2 + rng.integers(-depth // 2, depth // 2 + 1))
            z0 = max(0, min(nz - depth, z0))
            base = torch.from_numpy(np.ascontiguousarray(slab.data[:, :, z0 : z0 + depth]))
            zooms = slab.zooms
            f_t = random_field(base.shape, zooms, 4.0, rng)
            target = warp(base, f_t, zooms)
            prior = degrade_prior(warp(base, f_t + random_field(base.shape, zooms, 2.0, rng), zooms), rng)
            for keep in cfg.validation.keeps:
                lowres = lowres_frame(target, keep, None, rng)
                sinc = zero_fill_torch(lowres, target.shape[:2])
                given = gated_input(lowres, prior, sinc) if cfg.model.prior_input == "gated-keyhole" else prior
                scale = float(np.percentile(sinc.numpy(), 99.5))
                cases.append(ValidationCase(keep, sinc.numpy(), given.numpy(), target.numpy(), scale))
    return cases


def validate(net: torch.nn.Module, cases: list[ValidationCase], device: torch.device) -> dict:
    """Mean SSIM / PSNR of sinc and of the network per keep level (the project's metric code)."""
    from mrisr.metrics import psnr, ssim

    net.eval()
    rows: dict[float, list[tuple[float, float, float]]] = {}
    with torch.inference_mode():
        for case in cases:
            x = torch.from_numpy(case.sinc / case.scale)[None, None].to(device)
            p = torch.from_numpy(case.prior / case.scale)[None, None].to(device)
            out = (net(x, p) if net.use_prior else net(x))[0, 0].float().cpu().numpy() * case.scale
            out = np.maximum(out, 0)
            base = case.prior if getattr(net, "prior_input", "prior") == "gated-keyhole" else case.sinc
            rows.setdefault(case.keep, []).append(
                (ssim(case.sinc, case.target), ssim(out, case.target), psnr(out, case.target), ssim(base, case.target))
            )
    net.train()
    result = {}
    for keep, vals in sorted(rows.items()):
        arr = np.array(vals)
        result[f"keep{keep:g}"] = {"sinc_ssim": float(arr[:, 0].mean()), "ssim": float(arr[:, 1].mean()),
                                   "psnr": float(arr[:, 2].mean()), "base_ssim": float(arr[:, 3].mean())}
    if result:
        result["mean_gain"] = float(np.mean([v["ssim"] - v["sinc_ssim"] for v in result.values()]))
    return result


def validation_columns(result: dict) -> dict:
    """The training log's validation columns from a :func:`validate` result: means over its keep levels."""
    levels = [v for k, v in result.items() if k.startswith("keep")]
    return {
        "val_base_ssim": np.mean([v["base_ssim"] for v in levels]),
        "val_sinc_ssim": np.mean([v["sinc_ssim"] for v in levels]),
        "val_ssim": np.mean([v["ssim"] for v in levels]),
        "val_gain": float(np.mean([v["ssim"] - v["sinc_ssim"] for v in levels])),
    }
