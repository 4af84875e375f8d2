"""mrisr.metrics: SSIM / PSNR / NRMSE cross-checked against scikit-image, masks, frames, grids.

Border convention under test: our SSIM map equals skimage's full map voxel for voxel (both
filter with reflected borders); skimage's scalar averages only the interior (it crops
``(win_size - 1) // 2 = 5`` voxels per side), ours averages the whole map. So we compare maps
everywhere and means on skimage's interior.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from mrisr.io import MrisrInputError, Volume
from mrisr.metrics import (
    check_same_grid,
    evaluate_frames,
    foreground_mask,
    nrmse,
    psnr,
    ssim,
    ssim_map,
    summarise,
)

SHAPE = (32, 28, 16)
PAD = 5  # skimage: win_size 11 for sigma 1.5, truncate 3.5 -> crop 5 voxels per side


def smooth_volume(rng: np.random.Generator, shape=SHAPE, scale=1.0, offset=0.0, sigma=2.0) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    field = (field - field.min()) / (field.max() - field.min())
    return field * scale + offset


def degraded(rng: np.random.Generator, target: np.ndarray, noise: float, blur: float = 1.0) -> np.ndarray:
    span = target.max() - target.min()
    blurred = ndimage.gaussian_filter(target, blur)
    return blurred + noise * span * ndimage.gaussian_filter(rng.standard_normal(target.shape), 0.7)


def skimage_ssim(pred: np.ndarray, target: np.ndarray, data_range: float):
    return structural_similarity(
        target,
        pred,
        data_range=data_range,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )


@pytest.mark.parametrize(
    ("scale", "offset", "noise"),
    [
        (1.0, 0.0, 0.05),  # [0, 1] images, mild error
        (1.0, 0.0, 0.4),  # poor prediction: SSIM far from 1
        (3000.0, 0.0, 0.1),  # raw scanner intensities
        (100.0, 1000.0, 0.1),  # large mean, small range: float32 cancellation case
    ],
)
def test_ssim_matches_skimage(scale, offset, noise):
    rng = np.random.default_rng(1)
    target = smooth_volume(rng, scale=scale, offset=offset)
    pred = degraded(rng, target, noise)
    data_range = float(target.max() - target.min())
    reference, reference_map = skimage_ssim(pred, target, data_range)
    assert 0.05 < reference < 0.99  # a genuine comparison, not two numbers stuck at 1

    ours_map = ssim_map(pred, target)  # data_range defaults to the target's true range
    assert ours_map.shape == target.shape
    assert np.max(np.abs(ours_map - reference_map)) < 1e-4
    interior = ours_map[PAD:-PAD, PAD:-PAD, PAD:-PAD].mean(dtype=np.float64)
    assert abs(interior - reference) < 1e-4

    # the scalar averages the whole map (border included), documented convention
    whole = ssim(pred, target)
    assert whole == pytest.approx(float(ours_map.mean(dtype=np.float64)), abs=1e-9)
    assert abs(whole - float(reference_map.mean())) < 1e-4


def test_ssim_float32_inputs_agree_with_float64():
    rng = np.random.default_rng(2)
    target = smooth_volume(rng, scale=800.0, offset=200.0)
    pred = degraded(rng, target, 0.1)
    assert ssim(pred.astype(np.float32), target.astype(np.float32)) == pytest.approx(ssim(pred, target), abs=1e-5)


def test_identical_images():
    rng = np.random.default_rng(3)
    target = smooth_volume(rng, scale=50.0)
    assert ssim(target, target.copy()) == 1.0
    assert float(ssim_map(target, target).min()) == pytest.approx(1.0, abs=1e-5)
    assert psnr(target, target.copy()) == float("inf")
    assert nrmse(target, target.copy()) == 0.0


def test_psnr_and_nrmse_match_skimage():
    rng = np.random.default_rng(4)
    target = smooth_volume(rng, scale=1500.0, offset=20.0)
    pred = degraded(rng, target, 0.08)
    data_range = float(target.max() - target.min())
    assert psnr(pred, target) == pytest.approx(peak_signal_noise_ratio(target, pred, data_range=data_range), rel=1e-10)
    assert psnr(pred, target, data_range=4000.0) == pytest.approx(
        peak_signal_noise_ratio(target, pred, data_range=4000.0), rel=1e-10
    )
    assert nrmse(pred, target) == pytest.approx(normalized_root_mse(target, pred), rel=1e-10)
    assert nrmse(pred, target) == pytest.approx(np.linalg.norm(pred - target) / np.linalg.norm(target), rel=1e-10)


def test_scaling_both_images_leaves_metrics_unchanged():
    """data_range follows the target, so a common scale factor changes nothing."""
    rng = np.random.default_rng(5)
    target = smooth_volume(rng)
    pred = degraded(rng, target, 0.1)
    base = (ssim(pred, target), psnr(pred, target), nrmse(pred, target))
    scaled = (ssim(10 * pred, 10 * target), psnr(10 * pred, 10 * target), nrmse(10 * pred, 10 * target))
    assert scaled[0] == pytest.approx(base[0], abs=1e-6)
    assert scaled[1] == pytest.approx(base[1], rel=1e-9)
    assert scaled[2] == pytest.approx(base[2], rel=1e-9)
    # with a fixed data_range SSIM is not scale invariant: the default is what makes it so
    assert abs(ssim(10 * pred, 10 * target, data_range=1.0) - ssim(pred, target, data_range=1.0)) > 1e-3


def test_shift_to_half_one_inflates_ssim_and_psnr(tiny_volume):
    """Mapping [0, 1] images through (x + 1) / 2 (as the anchors did) inflates the scores.

    The shift lifts the dark background's local means away from 0, so SSIM's luminance term
    moves towards 1 wherever the prediction's noise or blur sits on a dark region; with the
    anchors' fixed data_range of 1 (twice the shifted images' true range) the stabilising
    constants grow too, and PSNR gains 6 dB. We never shift: these numbers only document why.
    """
    rng = np.random.default_rng(6)
    target = tiny_volume.data / tiny_volume.data.max()  # head phantom on a zero background, [0, 1]
    pred = np.abs(ndimage.gaussian_filter(target, 1.0) + 0.05 * rng.standard_normal(target.shape))
    pred /= pred.max()
    honest = ssim(pred, target)
    shifted_pred, shifted_target = (pred + 1) / 2, (target + 1) / 2
    shifted = ssim(shifted_pred, shifted_target)  # data_range follows the shifted target
    anchors = ssim(shifted_pred, shifted_target, data_range=1.0)
    assert shifted > honest + 0.05
    assert anchors > shifted + 0.02
    gain = psnr(shifted_pred, shifted_target, data_range=1.0) - psnr(pred, target, data_range=1.0)
    assert gain == pytest.approx(20 * math.log10(2), abs=1e-6)


def test_mask_restricts_the_average():
    rng = np.random.default_rng(7)
    target = smooth_volume(rng, scale=100.0)
    pred = target.copy()
    pred[:10] += 30.0 * rng.standard_normal((10, *SHAPE[1:]))  # corrupt only x < 10
    far = np.zeros(SHAPE, dtype=bool)
    far[16:, :, :] = True  # more than the window radius (5) from any corrupted voxel

    assert ssim(pred, target, mask=far) == pytest.approx(1.0, abs=1e-5)
    assert psnr(pred, target, mask=far) == float("inf")
    assert nrmse(pred, target, mask=far) == 0.0
    assert ssim(pred, target) < 0.9

    near = ~far
    smap = ssim_map(pred, target)
    assert ssim(pred, target, mask=near) == pytest.approx(float(smap[near].mean(dtype=np.float64)), abs=1e-9)
    diff = (pred - target)[near]
    expected_psnr = 10 * np.log10((target.max() - target.min()) ** 2 / np.mean(diff**2))
    assert psnr(pred, target, mask=near) == pytest.approx(expected_psnr, rel=1e-10)
    assert nrmse(pred, target, mask=near) == pytest.approx(
        np.sqrt(np.mean(diff**2)) / np.sqrt(np.mean(target[near] ** 2)), rel=1e-10
    )


def test_bad_masks_and_shapes_are_rejected():
    target = np.ones(SHAPE)
    with pytest.raises(ValueError, match="mask is empty"):
        ssim(target, target, mask=np.zeros(SHAPE, dtype=bool))
    with pytest.raises(ValueError, match="mask shape"):
        psnr(target, target, mask=np.ones((4, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="same grid"):
        nrmse(target, np.ones((32, 28, 15)))
    with pytest.raises(ValueError, match="evaluate_frames"):
        ssim(np.ones((12, 12, 12, 2)), np.ones((12, 12, 12, 2)))


def test_torch_tensors_and_volumes_are_accepted(oblique_affine):
    rng = np.random.default_rng(8)
    target = smooth_volume(rng).astype(np.float32)
    pred = degraded(rng, target, 0.1).astype(np.float32)
    expected = ssim(pred, target)
    assert ssim(torch.from_numpy(pred), torch.from_numpy(target)) == pytest.approx(expected, abs=1e-12)
    assert ssim(Volume(pred, oblique_affine), Volume(target, oblique_affine)) == pytest.approx(expected, abs=1e-12)
    assert psnr(torch.from_numpy(pred), target) == pytest.approx(psnr(pred, target), rel=1e-12)


def test_evaluate_frames_per_frame_range():
    rng = np.random.default_rng(9)
    frames = [smooth_volume(rng, scale=s) for s in (1.0, 5.0, 20.0)]
    target = np.stack(frames, axis=-1)
    pred = np.stack([degraded(rng, f, 0.05 * (t + 1)) for t, f in enumerate(frames)], axis=-1)
    rows = evaluate_frames(pred, target)
    assert [row["frame"] for row in rows] == [0, 1, 2]
    for t, row in enumerate(rows):
        # each frame is scored with its own ground-truth range
        assert row["ssim"] == pytest.approx(ssim(pred[..., t], target[..., t]), abs=1e-12)
        assert row["psnr"] == pytest.approx(psnr(pred[..., t], target[..., t]), rel=1e-12)
        assert row["nrmse"] == pytest.approx(nrmse(pred[..., t], target[..., t]), rel=1e-12)
    assert rows[0]["ssim"] > rows[1]["ssim"] > rows[2]["ssim"]

    single = evaluate_frames(pred[..., 1], target[..., 1])
    assert len(single) == 1 and single[0]["frame"] == 0
    assert single[0]["ssim"] == pytest.approx(rows[1]["ssim"], abs=1e-12)


def test_evaluate_frames_masks_3d_and_4d():
    rng = np.random.default_rng(10)
    target = np.stack([smooth_volume(rng) for _ in range(2)], axis=-1)
    pred = np.stack([degraded(rng, target[..., t], 0.1) for t in range(2)], axis=-1)
    mask3 = np.zeros(SHAPE, dtype=bool)
    mask3[8:24, 6:20, 4:12] = True
    rows3 = evaluate_frames(pred, target, mask=mask3)
    rows4 = evaluate_frames(pred, target, mask=np.stack([mask3, ~mask3], axis=-1))
    assert rows3[0] == rows4[0]
    assert rows4[1]["ssim"] == pytest.approx(ssim(pred[..., 1], target[..., 1], mask=~mask3), abs=1e-12)
    assert rows3[1]["ssim"] != rows4[1]["ssim"]
    with pytest.raises(ValueError, match="mask shape"):
        evaluate_frames(pred, target, mask=np.ones((4, 4, 4), dtype=bool))


def test_summarise():
    rows = [
        {"frame": 0, "ssim": 0.9, "psnr": 30.0, "nrmse": 0.1},
        {"frame": 1, "ssim": 0.8, "psnr": 28.0, "nrmse": 0.2},
        {"frame": 2, "ssim": 0.7, "psnr": 26.0, "nrmse": 0.3},
    ]
    summary = summarise(rows)
    assert summary["n"] == 3
    assert summary["ssim_mean"] == pytest.approx(0.8)
    assert summary["ssim_std"] == pytest.approx(np.std([0.9, 0.8, 0.7]))
    assert summary["psnr_mean"] == pytest.approx(28.0)
    assert summary["nrmse_std"] == pytest.approx(np.std([0.1, 0.2, 0.3]))
    perfect = summarise([{"frame": t, "ssim": 1.0, "psnr": float("inf"), "nrmse": 0.0} for t in range(2)])
    assert perfect["psnr_mean"] == float("inf") and perfect["psnr_std"] == 0.0
    assert perfect["ssim_mean"] == 1.0 and perfect["ssim_std"] == 0.0


def test_foreground_mask_covers_the_object(tiny_volume, tiny_series):
    data = tiny_volume.data
    shape = data.shape
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    # elliptic radius of the phantom: its soft edge falls to half intensity at 1, to 10 % at ~1.18
    radius = np.sqrt(sum(((g - (n - 1) / 2) / (0.38 * n)) ** 2 for g, n in zip(grids, shape)))
    noisy = data + np.random.default_rng(11).normal(0, 2.0, shape).astype(np.float32)  # background noise
    mask = foreground_mask(noisy)
    assert mask.dtype == bool and mask.shape == shape
    assert mask[radius <= 1.0].all()  # the whole core
    assert not mask[radius >= 1.4].any()  # no background
    truth = radius <= 1.1
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.93

    hollow = data.copy()
    hollow[13:19, 11:17, 4:8] = 0.0  # a dark cavity inside the object is filled
    assert foreground_mask(hollow)[13:19, 11:17, 4:8].all()

    series_mask = foreground_mask(tiny_series.data)
    assert series_mask.shape == tiny_series.data.shape
    assert np.array_equal(series_mask[..., 2], foreground_mask(tiny_series.data[..., 2]))
    assert foreground_mask(np.full((12, 12, 12), 7.0)).all()  # constant: no threshold, whole volume


def test_check_same_grid(tmp_path, oblique_affine):
    data = np.ones((12, 12, 12, 3), dtype=np.float32)
    target = Volume(data, oblique_affine, source=tmp_path / "gt.nii.gz")
    check_same_grid(Volume(data, oblique_affine + 1e-4, source=tmp_path / "ok.nii.gz"), target)

    with pytest.raises(
        MrisrInputError, match=r"small\.nii\.gz: grid 11x12x12 differs from .*gt\.nii\.gz grid 12x12x12"
    ):
        check_same_grid(Volume(data[:11], oblique_affine, source=tmp_path / "small.nii.gz"), target)
    with pytest.raises(MrisrInputError, match=r"two\.nii\.gz: 2 frame\(s\) but .*gt\.nii\.gz has 3"):
        check_same_grid(Volume(data[..., :2], oblique_affine, source=tmp_path / "two.nii.gz"), target)
    shifted = oblique_affine.copy()
    shifted[0, 3] += 0.01
    with pytest.raises(
        MrisrInputError, match=r"moved\.nii\.gz: affine differs from .*gt\.nii\.gz by up to 0\.01 mm.*SR grid"
    ):
        check_same_grid(Volume(data, shifted, source=tmp_path / "moved.nii.gz"), target)
    check_same_grid(Volume(data[..., 0], oblique_affine), target, check_frames=False)
