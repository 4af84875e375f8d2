"""Contrast matching (mrisr.reconstruct.contrast): a planning scan of another contrast is mapped to the
dynamic's intensities and then helps; one of the same contrast is left exactly as it was."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from mrisr_testdata import colin_crop, reconstruct_cli

from mrisr.batch.config import ReconstructSettings
from mrisr.data import load_sample
from mrisr.io import MrisrInputError
from mrisr.kspace.functional import crop_lowres, zero_fill
from mrisr.metrics import score_frame
from mrisr.phantom import make_dynamic
from mrisr.reconstruct import ReconstructOptions, iter_reconstruct, prepare_state
from mrisr.reconstruct.contrast import CONTRAST_GAIN, ContrastMap, fit_contrast_map


@pytest.fixture(scope="module")
def crop():
    """A real T1 slab (Colin27), 64 x 80 x 6."""
    return colin_crop()


LR = (32, 32)  # 6.25 % of a 128 x 128 in-plane matrix


def _tissue(phantom, frames) -> float:
    return float(np.mean([score_frame(f, phantom.hr.data[..., t], frame=t)["ssim_tissue"] for t, f in enumerate(frames)]))


def _gated(phantom, **options) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opts = ReconstructOptions(method="keyhole-gated", **options)
        return [r.sr for r in iter_reconstruct(phantom.lr, phantom.planning, opts)]


def test_map_recovers_another_contrast_and_refuses_a_same_contrast_fit():
    """Through the band: an inverted contrast is recovered at HR; the same contrast with noise is not mapped."""
    rng = np.random.default_rng(0)
    anatomy = np.ascontiguousarray(load_sample().data[:, 8:136, 12:18], dtype=np.float32)
    level = float(np.percentile(anatomy, 99))
    noisy = anatomy + rng.normal(0, 0.02 * level, anatomy.shape).astype(np.float32)
    same = fit_contrast_map(anatomy, zero_fill(crop_lowres(noisy, LR), anatomy.shape[:2]), LR)
    assert not same.applies and same.residual_ratio > CONTRAST_GAIN
    obj = anatomy > 0.1 * level
    other = np.where(obj, 1.3 * level - anatomy, 0).astype(np.float32)  # inverted in the object
    fitted = fit_contrast_map(anatomy, zero_fill(crop_lowres(other, LR), anatomy.shape[:2]), LR)
    assert fitted.applies and fitted.residual_ratio < 0.2
    inside = obj & (anatomy > 0.2 * level) & (anatomy < 0.9 * level)
    assert float(np.abs(fitted(anatomy) - other)[inside].mean()) < 0.03 * level


def test_map_edges():
    m = ContrastMap(np.array([0.0, 1.0, 2.0], np.float32), np.array([0.0, 3.0, 2.0], np.float32), 0.1)
    np.testing.assert_allclose(m(np.array([0.5, 1.5, 4.0], np.float32)), [1.5, 2.5, 4.0])  # above: last ratio
    assert m.applies and m.describe() == {"applied": True, "residual_ratio": 0.1, "knots": 3}
    flat = fit_contrast_map(np.zeros((16, 16, 2), np.float32), np.ones((16, 16, 2), np.float32), (8, 8))
    assert not flat.applies  # no object to fit


def test_other_contrast_planning_scan_is_mapped_and_helps(crop):
    """The planning scan in another contrast (a T1 -> T2-like non-monotone remap): the gated keyhole
    with the map beats the one without it in tissue, and comes close to a same-contrast planning scan."""
    swapped = make_dynamic(crop, frames=2, keep=6.25, seed=4, planning_contrast="swap")
    same = make_dynamic(crop, frames=2, keep=6.25, seed=4)
    mapped, unmapped, reference = _tissue(swapped, _gated(swapped)), _tissue(swapped, _gated(swapped, match_contrast=False)), _tissue(same, _gated(same))
    assert mapped > unmapped + 0.02, (mapped, unmapped)
    assert mapped > reference - 0.1, (mapped, reference)
    with pytest.warns(UserWarning, match="contrast differs.*mapped"):
        rec = prepare_state(swapped.lr, swapped.planning, ReconstructOptions(method="keyhole-gated"),
                            swapped.lr.frame(0))
    assert rec.prior.contrast is not None and rec.prior.contrast.applies


def test_same_contrast_is_left_exactly_alone(crop):
    phantom = make_dynamic(crop, frames=2, keep=6.25, seed=4, insert="needle")
    on, off = _gated(phantom), _gated(phantom, match_contrast=False)
    for a, b in zip(on, off):
        np.testing.assert_array_equal(a, b)
    rec = prepare_state(phantom.lr, phantom.planning, ReconstructOptions(method="keyhole-gated"), first_frame=phantom.lr.frame(0))
    assert rec.prior.contrast is not None and not rec.prior.contrast.applies


def test_classical_keyholes_ignore_it_and_options_validate(crop):
    phantom = make_dynamic(crop, frames=1, keep=6.25, seed=4, planning_contrast="swap")
    for method in ("keyhole", "keyhole-registered"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outs = [[r.sr for r in iter_reconstruct(phantom.lr, phantom.planning,
                                                    ReconstructOptions(method=method, match_contrast=flag))]
                    for flag in (True, False)]
        np.testing.assert_array_equal(outs[0][0], outs[1][0])
    assert ReconstructOptions().match_contrast is True and ReconstructSettings().match_contrast is True
    with pytest.raises(MrisrInputError, match="match_contrast"):
        ReconstructOptions(match_contrast="sometimes")


def test_cli_flag_and_sidecar(tmp_path, crop):
    files = make_dynamic(crop, frames=2, keep=6.25, seed=4, planning_contrast="swap").save(tmp_path / "phantom")
    outputs = {}
    for flags, expected in (([], True), (["--no-match-contrast"], False)):
        side, outputs[expected] = reconstruct_cli(files, tmp_path / f"sr_{expected}.nii.gz", *flags)
        assert side["options"]["match_contrast"] is expected
        contrast = side["prior"]["contrast"]
        if expected:
            assert contrast["applied"] is True and contrast["residual_ratio"] <= CONTRAST_GAIN
        else:
            assert contrast is None
    assert not np.allclose(outputs[True], outputs[False])


def test_fitted_basis_is_the_map():
    """The least squares fits the knots' outputs through the same basis the map applies: any
    combination of the basis images equals the map with those outputs (between knots, on them,
    below 0 and above the last knot)."""
    from mrisr.reconstruct.contrast import _hat

    rng = np.random.default_rng(1)
    knots = np.array([0.0, 0.5, 1.2, 2.0, 3.5], np.float32)
    outputs = np.concatenate([[0.0], rng.uniform(0.1, 4.0, 4)]).astype(np.float32)
    data = np.concatenate([rng.uniform(-1.0, 5.0, 500), knots, [7.0]]).astype(np.float32)
    combined = sum(outputs[k] * _hat(data, knots, k) for k in range(1, len(knots)))
    np.testing.assert_allclose(combined, ContrastMap(knots, outputs, 0.1)(data), rtol=1e-5, atol=1e-5)
