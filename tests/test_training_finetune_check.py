"""Fine-tuning's check: the target's noise is independent of the inputs, so the check ranks a network
that renders the anatomy above one that copies the planning scan's noise (a check against the
planning scan itself ranks them the other way); the acceptance needs a margin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from mrisr.data import load_sample
from mrisr.training.finetune_check import (
    CheckPair,
    check_errors,
    recorrupted_pairs,
    significantly_better,
    split_noise,
)

ZOOMS = (1.5, 1.5, 3.0)


@pytest.fixture(scope="module")
def scans() -> tuple[np.ndarray, np.ndarray]:
    """A real 64x64x8 crop of the sample (the anatomy) and the same with white noise at SNR 8."""
    clean = np.ascontiguousarray(load_sample().data[32:96, 32:96, 10:18], dtype=np.float32)
    clean = clean / np.percentile(clean, 99.5)
    level = clean[clean > 0.1].mean() / 8.0
    noisy = clean + np.random.default_rng(3).normal(0, level, clean.shape).astype(np.float32)
    return clean, noisy


class _Render(torch.nn.Module):
    """A stand-in network: its prior channel, smoothed in-plane by a Gaussian of ``sigma`` voxels (0: as given)."""

    use_prior = True

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, sinc: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        if not self.sigma:
            return prior
        out = ndimage.gaussian_filter(prior.numpy(), (0, 0, self.sigma, self.sigma, 0))
        return torch.from_numpy(out)


def test_pairs_have_the_requested_shape_and_tissue(scans):
    _, noisy = scans
    pairs = recorrupted_pairs(split_noise(noisy, 0), ZOOMS, 6.25, "prior", seed=0, groups=2, per_group=2, patch=(32, 32, 8))
    assert len(pairs) == 4
    for pair in pairs:
        assert tuple(pair.target.shape) == tuple(pair.sinc.shape) == tuple(pair.prior.shape) == (32, 32, 8)
        assert pair.tissue.dtype == torch.bool and 0.2 < float(pair.tissue.float().mean()) <= 1.0
        assert abs(float(torch.quantile(pair.sinc.flatten(), 0.995)) - 1.0) < 0.2  # normalised like training


def test_pairs_are_reproducible_and_leave_global_rng_alone(scans):
    _, noisy = scans
    state = np.random.get_state()
    halves = split_noise(noisy, 0)
    first = recorrupted_pairs(halves, ZOOMS, 6.25, "prior", seed=4, groups=1, per_group=2, patch=(32, 32, 8))
    again = recorrupted_pairs(split_noise(noisy, 0), ZOOMS, 6.25, "prior", seed=4, groups=1, per_group=2, patch=(32, 32, 8))
    other = recorrupted_pairs(halves, ZOOMS, 6.25, "prior", seed=5, groups=1, per_group=2, patch=(32, 32, 8))
    assert all(torch.equal(a.target, b.target) and torch.equal(a.prior, b.prior) for a, b in zip(first, again))
    assert not torch.equal(first[0].target, other[0].target)
    assert np.array_equal(np.random.get_state()[1], state[1])


def test_check_ranks_the_anatomy_above_a_copy_of_the_noise(scans):
    """Against the noise-free anatomy, smoothing the noisy prior beats copying it. The check, which
    never sees the anatomy, ranks them the same way; scoring against the planning scan's own noisy
    version (the inputs' noise in the target) ranks them the other way."""
    clean, noisy = scans
    copy, smooth = _Render(0.0), _Render(1.0)
    pairs = recorrupted_pairs(split_noise(noisy, 0), ZOOMS, 6.25, "prior", seed=1, groups=2, per_group=2, patch=(48, 48, 8))
    assert check_errors(smooth, pairs, torch.device("cpu")).mean() < check_errors(copy, pairs, torch.device("cpu")).mean()

    def against(reference: np.ndarray, net) -> float:
        scale = np.percentile(noisy, 99.5)
        prior = torch.from_numpy(noisy / scale)
        tissue = prior > 0.1
        pair = CheckPair(prior, prior, torch.from_numpy(reference / scale), tissue)
        return float(check_errors(net, [pair], torch.device("cpu"))[0])

    assert against(clean, smooth) < against(clean, copy)  # the truth's ranking
    assert against(noisy, copy) < against(noisy, smooth)  # the naive check's, inverted


def test_acceptance_needs_a_margin():
    rng = np.random.default_rng(0)
    base = 1.0 + 0.1 * rng.normal(size=8)
    assert significantly_better(base, base - 0.05)
    assert not significantly_better(base, base)
    assert not significantly_better(base, base + 0.05)
    noisy_gain = base + np.array([-0.055, 0.045] * 4)  # 0.005 lower on average, within a spread of 0.05
    assert not significantly_better(base, noisy_gain)
    assert significantly_better(base, noisy_gain, standard_errors=-10.0) == (noisy_gain.mean() < base.mean())
    assert not significantly_better(np.array([]), np.array([]))


def test_the_split_halves_have_independent_noise_at_the_scans_level(scans):
    """On a scan whose noise is known: the noise level is read in the object (not pulled low by the
    air), the halves' noises are uncorrelated, and the dark voxels' magnitude lift is taken off."""
    clean, noisy = scans
    level = clean[clean > 0.1].mean() / 8.0
    halves = split_noise(noisy, 0)
    scale = np.percentile(noisy, 99.5)
    assert 0.9 * level / scale < halves.sigma < 1.3 * level / scale
    inside = clean > 0.3 * clean.max()
    given_noise = (halves.given - clean / scale)[inside]
    held_noise = (halves.held - clean / scale)[inside]
    correlation = np.corrcoef(given_noise, held_noise)[0, 1]
    naive = np.corrcoef((noisy / scale - clean / scale)[inside], given_noise)[0, 1]
    assert abs(correlation) < 0.15 and naive > 0.8, (correlation, naive)
    # the 99.5th percentile of the scan is 1 in both halves' units, the mean of air stays small
    assert halves.given.shape == noisy.shape and halves.given.dtype == np.float32


def test_ssim_with_the_targets_noise_power_takes_that_noise_off():
    """A perfect prediction against a noisy target: plain SSIM is pulled down by the target's noise,
    the map told that noise's variance is close to 1."""
    from mrisr.metrics import ssim_map

    rng = np.random.default_rng(0)
    x = (ndimage.gaussian_filter(rng.random((32, 32, 12)), 2.0) * 4).astype(np.float32)
    noise_power = 0.02 ** 2
    target = (x + rng.normal(0, 0.02, x.shape)).astype(np.float32)
    plain = float(ssim_map(x, target, data_range=1.0).mean())
    debiased = float(ssim_map(x, target, data_range=1.0, target_noise_power=noise_power).mean())
    assert plain < debiased and abs(1 - debiased) < 0.5 * abs(1 - plain), (plain, debiased)
