"""The LR series of a phantom: the k-space centre of every HR frame, with optional noise, as a
scanner would write it (a genuinely smaller in-plane matrix with the coarsened affine)."""

from __future__ import annotations

import numpy as np

from mrisr.io.volume import Volume
from mrisr.kspace.simulate import simulate_volume

__all__ = ["acquire_lr"]


def acquire_lr(hr: Volume, keep: float, noise_snr: float | None, noise_rng: np.random.Generator) -> tuple[Volume, float]:
    """Keep ``keep`` percent of k-space (centre block) of every frame of ``hr`` ``(X, Y, Z, T)``,
    adding complex Gaussian noise at ``noise_snr`` (None: none) from ``noise_rng``.

    Returns:
        The LR series ``(X', Y', Z, T)`` with ``hr``'s TR, and the percentage of k-space actually kept.
    """
    noise_seed = int(noise_rng.integers(2**31))
    lr, info = simulate_volume(hr, keep, mode="center", zero_fill=False, noise_snr=noise_snr, seed=noise_seed)
    lr.tr = float(hr.tr)
    return lr, float(info.keep_actual)
