"""`mrisr evaluate` on real NIfTI files written with mrisr.io.save_like."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.io import Volume, load, save_like
from mrisr.metrics import evaluate_frames, object_mask

runner = CliRunner()


@pytest.fixture
def files(tmp_path: Path, tiny_series: Volume) -> dict[str, Path]:
    """Ground truth, a prediction and a blurrier baseline, (32, 28, 12, 3) on an oblique grid."""
    rng = np.random.default_rng(0)
    gt = tiny_series.data
    pred = gt + rng.normal(0.0, 2.0, gt.shape).astype(np.float32)
    baseline = ndimage.gaussian_filter(gt, (1.5, 1.5, 0, 0))
    paths = {
        "gt": save_like(tmp_path / "gt.nii.gz", gt, tiny_series),
        "pred": save_like(tmp_path / "pred.nii.gz", pred, tiny_series),
        "base": save_like(tmp_path / "sinc.nii.gz", baseline, tiny_series),
    }
    return paths


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


COLUMNS = ["ssim_tissue", "psnr_tissue", "nrmse_tissue", "ssim_whole", "psnr_whole", "nrmse_whole"]


def test_evaluate_series_with_baseline_writes_csv(tmp_path, files):
    out = tmp_path / "results" / "metrics.csv"
    result = runner.invoke(
        app, ["evaluate", str(files["pred"]), str(files["gt"]), "--baseline", str(files["base"]), "-o", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "pred.nii.gz" in result.stdout and "sinc.nii.gz" in result.stdout
    assert result.stdout.count("± std") == 2

    rows = read_csv(out)
    # tissue first, whole volume beside it; the baseline's columns carry its file stem
    assert list(rows[0]) == ["frame"] + COLUMNS + [f"sinc_{c}" for c in COLUMNS]
    assert [r["frame"] for r in rows] == ["0", "1", "2", "mean", "std"]
    assert not [p for p in out.parent.iterdir() if p.name != "metrics.csv"]  # no temporary file left

    gt = load(files["gt"]).data
    for prefix, key in (("", "pred"), ("sinc_", "base")):
        pred = load(files[key]).data
        tissue = evaluate_frames(pred, gt, mask=object_mask(gt))
        whole = evaluate_frames(pred, gt)
        for t in range(3):
            got = rows[t]
            for name in ("ssim", "psnr", "nrmse"):
                assert float(got[f"{prefix}{name}_tissue"]) == pytest.approx(tissue[t][name], rel=1e-9), (key, t, name)
                assert float(got[f"{prefix}{name}_whole"]) == pytest.approx(whole[t][name], rel=1e-9), (key, t, name)
        ssims = [row["ssim"] for row in tissue]
        assert float(rows[3][f"{prefix}ssim_tissue"]) == pytest.approx(np.mean(ssims), rel=1e-9)
        assert float(rows[4][f"{prefix}ssim_tissue"]) == pytest.approx(np.std(ssims), rel=1e-6)
    # the table shows the same means the CSV holds
    assert f"{float(rows[3]['ssim_tissue']):.4f}" in result.stdout
    assert f"{float(rows[3]['sinc_psnr_tissue']):.2f}" in result.stdout


def test_evaluate_3d_identical_gives_perfect_scores(tmp_path, tiny_volume):
    gt = save_like(tmp_path / "gt3d.nii.gz", tiny_volume.data, tiny_volume)
    same = save_like(tmp_path / "same.nii.gz", tiny_volume.data, tiny_volume)
    out = tmp_path / "m.csv"
    result = runner.invoke(app, ["evaluate", str(same), str(gt), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert [r["frame"] for r in rows] == ["0", "mean", "std"]
    assert float(rows[0]["ssim_tissue"]) == 1.0 and float(rows[0]["ssim_whole"]) == 1.0
    assert math.isinf(float(rows[0]["psnr_tissue"]))
    assert float(rows[0]["nrmse_whole"]) == 0.0
    assert "1.0000" in result.stdout and "inf" in result.stdout


def test_evaluate_masks(tmp_path, files, tiny_series):
    gt = load(files["gt"]).data
    pred = load(files["pred"]).data
    mask = np.zeros(tiny_series.spatial_shape, dtype=np.float32)
    mask[8:24, 6:22, 3:9] = 1.0
    mask_path = save_like(tmp_path / "mask.nii.gz", mask, tiny_series, dtype=np.uint8)

    out = tmp_path / "masked.csv"
    result = runner.invoke(
        app, ["evaluate", str(files["pred"]), str(files["gt"]), "--mask", str(mask_path), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    expected = evaluate_frames(pred, gt, mask=mask > 0)
    rows = read_csv(out)[:3]
    assert [float(r["ssim_tissue"]) for r in rows] == pytest.approx([r["ssim"] for r in expected], rel=1e-9)
    assert expected[0]["ssim"] != evaluate_frames(pred, gt)[0]["ssim"]
    # the whole-volume columns ignore the mask
    assert [float(r["ssim_whole"]) for r in rows] == pytest.approx([r["ssim"] for r in evaluate_frames(pred, gt)])

    # the old --auto-mask flag is accepted and gives the default (object mask)
    out_auto = tmp_path / "auto.csv"
    result = runner.invoke(app, ["evaluate", str(files["pred"]), str(files["gt"]), "--auto-mask", "-o", str(out_auto)])
    assert result.exit_code == 0, result.output
    expected = evaluate_frames(pred, gt, mask=object_mask(gt))
    assert [float(r["psnr_tissue"]) for r in read_csv(out_auto)[:3]] == pytest.approx(
        [r["psnr"] for r in expected], rel=1e-9)

    wrong = save_like(tmp_path / "wrong_mask.nii.gz", mask[:30], tiny_series, dtype=np.uint8)
    result = runner.invoke(app, ["evaluate", str(files["pred"]), str(files["gt"]), "--mask", str(wrong)])
    assert result.exit_code == 2
    assert (
        "wrong_mask.nii.gz: grid 30x28x12 differs" in result.stderr
        and "mask drawn on the ground truth" in result.stderr
    )


def test_evaluate_rejects_mismatched_grids(tmp_path, files, tiny_series):
    out = tmp_path / "never.csv"
    small = save_like(tmp_path / "small.nii.gz", tiny_series.data[:, :26], tiny_series)
    result = runner.invoke(app, ["evaluate", str(small), str(files["gt"]), "-o", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "small.nii.gz: grid 32x26x12 differs from" in lines[0] and "gt.nii.gz grid 32x28x12" in lines[0]
    assert not out.exists()

    moved = tiny_series.affine.copy()
    moved[:3, 3] += 0.5
    shifted = save_like(tmp_path / "shifted.nii.gz", tiny_series.data, tiny_series, affine=moved)
    result = runner.invoke(app, ["evaluate", str(files["pred"]), str(files["gt"]), "--baseline", str(shifted)])
    assert result.exit_code == 2
    assert "shifted.nii.gz: affine differs from" in result.stderr and "SR grid" in result.stderr

    one_frame = save_like(tmp_path / "frame0.nii.gz", tiny_series.data[..., 0], tiny_series)
    result = runner.invoke(app, ["evaluate", str(one_frame), str(files["gt"])])
    assert result.exit_code == 2 and "1 frame(s) but" in result.stderr


def test_evaluate_missing_file_and_bad_output(tmp_path, files):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nope.nii.gz"), str(files["gt"])])
    assert result.exit_code == 2
    assert "nope.nii.gz: file not found" in result.stderr

    result = runner.invoke(app, ["evaluate", str(files["pred"]), str(files["gt"]), "-o", str(tmp_path / "m.txt")])
    assert result.exit_code == 2 and "ending in .csv" in result.stderr
    assert not (tmp_path / "m.txt").exists()
