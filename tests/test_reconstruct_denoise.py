"""Prior denoising: the planning scan's noise read in its spectrum's corners and shrunk by a
Wiener filter (:mod:`mrisr.reconstruct.denoise`), through the option schema to the sidecar."""

from __future__ import annotations

import numpy as np
import pytest
from mrisr_testdata import head_phantom, reconstruct_cli

from mrisr.batch.config import ReconstructSettings
from mrisr.data import load_sample
from mrisr.io import MrisrInputError
from mrisr.metrics import score_frame
from mrisr.phantom import make_dynamic
from mrisr.reconstruct import ReconstructOptions, prepare_state, reconstruct_frames
from mrisr.reconstruct.denoise import denoise_planning, planning_noise_power, shrink_own_noise

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
    # Rician magnitude of complex noise at the same SNR: 0.5-1.3 of the complex noise's power
    rician = np.abs(anatomy + _white(sigma, 2) + 1j * _white(sigma, 3))
    assert 0.5 * expected < planning_noise_power(rician) < 1.3 * expected


def test_the_wiener_filter_brings_a_noisy_planning_scan_closer_to_its_anatomy():
    anatomy = _anatomy()
    sigma = 0.05 * float(anatomy.max())
    noisy = anatomy + _white(sigma, 4)
    filtered, record = denoise_planning(noisy, planning_noise_power(noisy), LR)
    assert record.applied and filtered.shape == noisy.shape and filtered.dtype == np.float32
    assert filtered.min() >= 0
    assert 0 <= record.nyquist_gain <= record.band_edge_gain <= 1
    error = {name: float(np.sqrt(np.mean((image - anatomy) ** 2))) for name, image in
             (("noisy", noisy), ("filtered", filtered))}
    assert error["filtered"] < 0.8 * error["noisy"], error
    assert record.describe()["applied"] is True
    # the one-FFT shortcut the pipeline and the training pairs use gives the same image and record
    shrunk, shrunk_record = shrink_own_noise(noisy, LR)
    np.testing.assert_array_equal(shrunk, filtered)
    assert shrunk_record == record


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


def _run(phantom, **options):
    state = prepare_state(phantom.lr, phantom.planning, ReconstructOptions(**options), phantom.lr.frame(0))
    frames = [r.sr for r in reconstruct_frames(state, (phantom.lr.frame(t) for t in range(phantom.lr.n_frames)))]
    tissue = float(np.mean([score_frame(f, phantom.hr.data[..., t], frame=t)["ssim_tissue"]
                            for t, f in enumerate(frames)]))
    return state, tissue


@pytest.mark.parametrize("method", ["keyhole-gated", "network"])
def test_a_noisy_planning_scan_is_denoised_and_a_clean_one_barely_touched(phantoms, method):
    for name, phantom in phantoms.items():
        tissue = {}
        for denoise in (False, True):
            state, tissue[denoise] = _run(phantom, method=method, denoise_prior=denoise)
            assert (state.prior_denoise is not None) is denoise
        if name == "own noise":
            assert state.prior_denoise.applied and tissue[True] > tissue[False] + 0.005, tissue
        else:
            assert abs(tissue[True] - tissue[False]) < 0.003, tissue


@pytest.mark.parametrize("method", ["keyhole", "keyhole-registered"])
def test_the_classical_baselines_are_not_denoised(phantoms, method):
    state, _ = _run(phantoms["own noise"], method=method)
    assert state.prior_denoise is None


def test_option_default_and_bad_value():
    assert ReconstructOptions().denoise_prior is True and ReconstructSettings().denoise_prior is True
    with pytest.raises(MrisrInputError, match="denoise_prior"):
        ReconstructOptions(denoise_prior="sometimes")


def test_cli_flag_and_sidecar(phantoms, tmp_path):
    files = phantoms["own noise"].save(tmp_path / "phantom")
    outputs = {}
    for flags, expected in (([], True), (["--no-denoise-prior"], False)):
        side, outputs[expected] = reconstruct_cli(files, tmp_path / f"sr_{expected}.nii.gz", *flags)
        assert side["options"]["denoise_prior"] is expected
        record = side["prior"]["denoise"]
        if expected:
            assert record["applied"] is True and record["noise_power"] > 0
            assert 0 <= record["nyquist_gain"] <= record["band_edge_gain"] <= 1
        else:
            assert record is None
    assert not np.allclose(outputs[True], outputs[False])
