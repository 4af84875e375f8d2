"""Prior denoising: the planning scan's noise measured in its spectrum's corners and shrunk by a
Wiener filter (:mod:`mrisr.reconstruct.denoise`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mrisr_testdata import head_phantom

from mrisr.data import load_sample
from mrisr.phantom import make_dynamic
from mrisr.reconstruct import Reconstruction, ReconstructOptions
from mrisr.reconstruct.denoise import denoise_planning, planning_noise_power

HR = (64, 56, 6)
LR = (16, 14)


def _anatomy() -> np.ndarray:
    return head_phantom(HR, seed=2) * 100.0


def _white(sigma: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(HR) * sigma).astype(np.float32)


def test_the_noise_power_is_read_in_the_spectrum_corners():
    """White noise of std s on an X x Y plane has a power of s^2 / (X Y) per k-space sample
    (``norm="forward"``); the anatomy alone has next to none in the corners."""
    anatomy = _anatomy()
    sigma = 0.05 * float(anatomy.max())
    expected = sigma**2 / (HR[0] * HR[1])
    assert 0.7 * expected < planning_noise_power(anatomy + _white(sigma, 1)) < 1.3 * expected
    assert planning_noise_power(anatomy) < 0.05 * expected
    # Rician magnitude of complex noise at the same SNR: 0.6-1.0 of the complex noise's power
    rician = np.abs(anatomy + _white(sigma, 2) + 1j * _white(sigma, 3))
    assert 0.5 * expected < planning_noise_power(rician) < 1.3 * expected


def test_the_wiener_filter_brings_a_noisy_planning_scan_closer_to_its_anatomy():
    anatomy = _anatomy()
    sigma = 0.05 * float(anatomy.max())
    noisy = anatomy + _white(sigma, 4)
    power = planning_noise_power(noisy)
    filtered, record = denoise_planning(noisy, power, LR)
    assert record.applied and filtered.shape == noisy.shape and filtered.dtype == np.float32
    assert filtered.min() >= 0
    assert 0 <= record.nyquist_gain <= record.band_edge_gain <= 1
    error = {name: float(np.sqrt(np.mean((image - anatomy) ** 2))) for name, image in
             (("noisy", noisy), ("filtered", filtered))}
    assert error["filtered"] < 0.8 * error["noisy"], error
    assert record.describe()["applied"] is True


def test_no_noise_or_a_negligible_filter_leaves_the_planning_scan_as_it_is():
    planning = _anatomy()
    for power in (-1e-3, 0.0, 1e-12 * planning_noise_power(planning)):
        same, record = denoise_planning(planning, power, LR)
        assert same is planning and not record.applied
    assert record.describe()["nyquist_gain"] > 0.999


@pytest.fixture(scope="module")
def phantoms():
    static = load_sample()
    return {name: make_dynamic(static, frames=2, keep=6.25, seed=3, contrast=False, **kwargs)
            for name, kwargs in (("plain", {}), ("own noise", {"planning_noise_snr": 10.0}))}


@pytest.mark.parametrize("method", ["keyhole-gated", "network"])
def test_reconstruction_denoises_a_noisy_planning_scan_and_barely_touches_a_clean_one(phantoms, method):
    from mrisr.metrics import score_frame

    for name, phantom in phantoms.items():
        runs = {}
        for denoise in (False, True):
            rec = Reconstruction(phantom.lr, phantom.planning, ReconstructOptions(method=method, denoise_prior=denoise))
            frames = [r.sr for r in rec.frames()]
            runs[denoise] = np.mean([score_frame(f, phantom.hr.data[..., t])["ssim_tissue"] for t, f in enumerate(frames)])
            assert (rec.prior_denoise is not None) is denoise
        if name == "own noise":
            assert rec.prior_denoise.applied and runs[True] > runs[False] + 0.005, runs
        else:
            assert abs(runs[True] - runs[False]) < 0.003, runs


@pytest.mark.parametrize("method", ["keyhole", "keyhole-registered"])
def test_the_classical_baselines_are_not_denoised(phantoms, method):
    phantom = phantoms["own noise"]
    rec = Reconstruction(phantom.lr, phantom.planning, ReconstructOptions(method=method))
    list(rec.frames())
    assert rec.prior_denoise is None


def test_the_sidecar_records_what_denoising_found(phantoms, tmp_path):
    from mrisr.io import save_like
    from mrisr.reconstruct import reconstruct_file

    phantom = phantoms["own noise"]
    lr = save_like(tmp_path / "lr.nii.gz", phantom.lr.data, phantom.lr, tr=phantom.lr.tr)
    planning = save_like(tmp_path / "planning.nii.gz", phantom.planning.data, phantom.planning)
    report = reconstruct_file(lr, tmp_path / "sr.nii.gz", planning, ReconstructOptions(method="keyhole-gated"))
    record = json.loads(report.sidecar.read_text())["prior"]["denoise"]
    assert record["applied"] is True and record["noise_power"] > 0 and 0 <= record["nyquist_gain"] <= 1
    assert record["nyquist_gain"] <= record["band_edge_gain"] <= 1
