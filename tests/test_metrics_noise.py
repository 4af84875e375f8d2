"""Noise level and SNR of a magnitude volume: Donoho's estimate reads added noise and stays low on clean anatomy."""

from __future__ import annotations

import numpy as np
import pytest

from mrisr.data import heldout_subject
from mrisr.metrics.noise import estimate_noise_sigma, image_snr, object_mean


def _smooth_phantom() -> np.ndarray:
    """A smooth ellipsoid on a 96x96x12 grid (no fine detail of its own)."""
    x, y, z = np.meshgrid(np.linspace(-1, 1, 96), np.linspace(-1, 1, 96), np.linspace(-1, 1, 12), indexing="ij")
    r2 = (x / 0.8) ** 2 + (y / 0.7) ** 2 + (z / 1.5) ** 2
    return (100.0 * np.clip(1.2 - r2, 0, 1)).astype(np.float32)


@pytest.mark.parametrize("snr", [10.0, 30.0])
def test_added_complex_noise_is_read_back_in_the_object(snr):
    clean = _smooth_phantom()
    sigma = object_mean(clean) / snr
    rng = np.random.default_rng(0)
    noisy = np.abs(clean + rng.normal(0, sigma, clean.shape) + 1j * rng.normal(0, sigma, clean.shape))
    # the air around the object holds Rayleigh noise (variance 0.43 sigma^2), which pulls the median down
    assert 0.7 * sigma < estimate_noise_sigma(noisy) < 1.1 * sigma
    assert 0.8 * snr < image_snr(noisy) < 1.5 * snr


def test_clean_anatomy_reads_as_noise_free():
    assert estimate_noise_sigma(_smooth_phantom()) < 1e-3 * object_mean(_smooth_phantom())
    assert image_snr(np.zeros((8, 8, 2), np.float32)) == float("inf")


def test_real_scan_has_noise_of_its_own():
    """The held-out scan is one clinical acquisition: its SNR is finite and in the range of real scans."""
    assert 5.0 < image_snr(heldout_subject().data) < 200.0


def test_object_mean_is_the_mean_above_a_tenth_of_the_99th_percentile():
    data = np.zeros((10, 10, 2), np.float32)
    data[:5] = 2.0
    data[0, 0, 0] = 0.1  # below 10 % of the 99th percentile: left out
    assert object_mean(data) == pytest.approx(2.0)
    assert object_mean(np.zeros((0, 3, 3))) == 0.0
