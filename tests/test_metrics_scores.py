"""`score_frame` / `score_frames`: tissue-first SSIM, PSNR and NRMSE (object mask) beside the whole volume."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from mrisr.metrics import SCORE_COLUMNS, evaluate_frame, evaluate_frames, object_mask, score_frame, score_frames

SHAPE = (40, 40, 24)
SSIM_RADIUS = 5  # the SSIM window reaches 5 voxels (sigma 1.5, truncate 3.5)


def _object(shape=SHAPE, centre_shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A textured ellipsoid (radii 9, 9, 6 voxels) with a soft edge, zero air around it."""
    grid = np.indices(shape).astype(np.float64)
    centre = [(n - 1) / 2 + s for n, s in zip(shape, centre_shift)]
    r = np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, (9.0, 9.0, 6.0))))
    image = 100.0 / (1.0 + np.exp((r - 1.0) * 8.0)) * (1.0 + 0.3 * np.sin(grid[0] / 2) * np.cos(grid[1] / 3))
    image[image < 1e-3] = 0.0
    return image.astype(np.float32)


@pytest.fixture(scope="module")
def gt() -> np.ndarray:
    return _object()


def test_columns_are_tissue_first():
    assert SCORE_COLUMNS == ("ssim_tissue", "psnr_tissue", "nrmse_tissue", "ssim_whole", "psnr_whole", "nrmse_whole")


def test_tissue_and_whole_equal_evaluate_frame_with_and_without_the_object_mask(gt):
    pred = gt + np.random.default_rng(1).normal(0.0, 3.0, gt.shape).astype(np.float32)
    row = score_frame(pred, gt, frame=7)
    assert list(row) == ["frame", *SCORE_COLUMNS] and row["frame"] == 7
    tissue = evaluate_frame(pred, gt, mask=object_mask(gt))
    whole = evaluate_frame(pred, gt)
    for name in ("ssim", "psnr", "nrmse"):
        assert row[f"{name}_tissue"] == pytest.approx(tissue[name], rel=1e-9), name
        assert row[f"{name}_whole"] == pytest.approx(whole[name], rel=1e-9), name
    # the two really differ here (most of the volume is air)
    assert object_mask(gt).mean() < 0.25
    assert row["ssim_tissue"] != pytest.approx(row["ssim_whole"], rel=1e-3)

    # an explicit mask replaces the object mask
    box = np.zeros(gt.shape, dtype=bool)
    box[10:30, 10:30, 8:16] = True
    boxed = score_frame(pred, gt, mask=box)
    assert boxed["ssim_tissue"] == pytest.approx(evaluate_frame(pred, gt, mask=box)["ssim"], rel=1e-9)
    assert boxed["psnr_tissue"] == pytest.approx(evaluate_frame(pred, gt, mask=box)["psnr"], rel=1e-9)
    assert boxed["ssim_whole"] == row["ssim_whole"]


def test_identical_images_score_perfectly(gt):
    row = score_frame(gt.copy(), gt)
    assert row["ssim_tissue"] == 1.0 and row["ssim_whole"] == 1.0
    assert math.isinf(row["psnr_tissue"]) and math.isinf(row["psnr_whole"])
    assert row["nrmse_tissue"] == 0.0 and row["nrmse_whole"] == 0.0


def test_cleaning_the_air_alone_does_not_change_the_tissue_score(gt):
    """Noise far from the object (beyond the SSIM window) moves the whole-volume score only."""
    rng = np.random.default_rng(2)
    mask = object_mask(gt)
    tissue_noise = np.where(mask, rng.normal(0.0, 5.0, gt.shape), 0.0).astype(np.float32)
    far_air = ~ndimage.binary_dilation(mask, np.ones((3, 3, 3), bool), iterations=SSIM_RADIUS + 1)
    assert far_air.sum() > 0.15 * gt.size
    ringing = np.where(far_air, 8.0 * np.sin(np.indices(gt.shape)[0] * 1.3), 0.0).astype(np.float32)
    ringing += np.where(far_air, rng.normal(0.0, 4.0, gt.shape), 0.0).astype(np.float32)

    baseline = gt + tissue_noise + ringing
    cleaned = gt + tissue_noise
    before, after = score_frame(baseline, gt), score_frame(cleaned, gt)
    for name in ("ssim_tissue", "psnr_tissue", "nrmse_tissue"):
        assert after[name] == pytest.approx(before[name], rel=1e-9, abs=1e-12), name
    assert after["ssim_whole"] > before["ssim_whole"] + 0.15
    assert after["psnr_whole"] > before["psnr_whole"] + 3.0
    assert after["nrmse_whole"] < 0.7 * before["nrmse_whole"]


def test_cleaning_noise_right_up_to_the_edge_moves_whole_far_more_than_tissue(gt):
    """The usual case: background noise everywhere in the air, the method zeroes it."""
    mask = object_mask(gt)
    noise = np.random.default_rng(3).normal(0.0, 5.0, gt.shape).astype(np.float32)
    baseline = gt + noise  # noise in the tissue and in the air
    cleaned = gt + np.where(mask, noise, 0.0).astype(np.float32)  # same tissue, air cleaned
    before, after = score_frame(baseline, gt), score_frame(cleaned, gt)
    whole_gain = after["ssim_whole"] - before["ssim_whole"]
    tissue_gain = after["ssim_tissue"] - before["ssim_tissue"]
    assert whole_gain > 0.3
    assert abs(tissue_gain) < 0.05 and abs(tissue_gain) < whole_gain / 10
    assert after["psnr_tissue"] == before["psnr_tissue"] and after["nrmse_tissue"] == before["nrmse_tissue"]


def test_whole_volume_ranking_can_be_wrong_and_tissue_catches_it(gt):
    """A method that blurs the tissue but cleans the air wins on the whole volume and must lose on tissue."""
    mask = object_mask(gt)
    rng = np.random.default_rng(4)
    sharp_noisy_air = gt + np.where(mask, 0.0, rng.normal(0.0, 6.0, gt.shape)).astype(np.float32)
    blurred_clean_air = np.where(mask, ndimage.gaussian_filter(gt, 1.5), 0.0).astype(np.float32)
    sharp, blurred = score_frame(sharp_noisy_air, gt), score_frame(blurred_clean_air, gt)
    assert blurred["ssim_whole"] > sharp["ssim_whole"]
    assert blurred["ssim_tissue"] < sharp["ssim_tissue"]


def test_score_frames_of_a_series_uses_each_frames_object_mask():
    frames = [_object(centre_shift=(3.0 * t, -2.0 * t, 0.0)) for t in range(3)]
    gt = np.stack(frames, axis=-1)
    rng = np.random.default_rng(5)
    pred = gt + rng.normal(0.0, 2.0, gt.shape).astype(np.float32)
    rows = score_frames(pred, gt)
    assert [row["frame"] for row in rows] == [0, 1, 2]
    for t in range(3):
        expected = score_frame(pred[..., t], gt[..., t], frame=t)
        assert rows[t] == pytest.approx(expected, rel=1e-12)
        tissue = evaluate_frames(pred, gt, mask=object_mask(gt))[t]
        assert rows[t]["ssim_tissue"] == pytest.approx(tissue["ssim"], rel=1e-9)
    # the moving object: a mask from frame 0 used for frame 2 gives another tissue score
    fixed = score_frames(pred, gt, mask=object_mask(gt[..., 0]))
    assert fixed[0]["ssim_tissue"] == pytest.approx(rows[0]["ssim_tissue"], rel=1e-12)
    assert fixed[2]["ssim_tissue"] != pytest.approx(rows[2]["ssim_tissue"], rel=1e-4)
    assert fixed[2]["ssim_whole"] == pytest.approx(rows[2]["ssim_whole"], rel=1e-12)
    # a 4-D mask is used frame by frame
    per_frame = score_frames(pred, gt, mask=object_mask(gt))
    assert [r["ssim_tissue"] for r in per_frame] == pytest.approx([r["ssim_tissue"] for r in rows], rel=1e-12)
    # a 3-D series gives one row
    assert len(score_frames(pred[..., 1], gt[..., 1])) == 1


def test_score_errors(gt):
    with pytest.raises(ValueError, match="shape"):
        score_frame(gt[:-1], gt)
    with pytest.raises(ValueError, match="mask is empty"):
        score_frame(gt, gt, mask=np.zeros(gt.shape, dtype=bool))
    with pytest.raises(ValueError, match="mask shape"):
        score_frame(gt, gt, mask=np.ones((4, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="fits neither"):
        score_frames(gt, gt, mask=np.ones((4, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="score_frames needs"):
        score_frames(gt[..., 0], gt[..., 0])
    with pytest.raises(ValueError, match="complex"):
        score_frame(gt.astype(np.complex64), gt)
