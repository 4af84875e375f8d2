"""`mrisr evaluate` on real NIfTI files written with mrisr.io.save_like."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.io import Volume, load, save_like
from mrisr.metrics import contrast_recovery, evaluate_frames, leakage, object_mask, structure_contrast

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
    assert result.exit_code == 1
    assert (
        "wrong_mask.nii.gz: grid 30x28x12 differs" in result.stderr
        and "mask drawn on the ground truth" in result.stderr
    )


def test_evaluate_rejects_mismatched_grids(tmp_path, files, tiny_series):
    out = tmp_path / "never.csv"
    small = save_like(tmp_path / "small.nii.gz", tiny_series.data[:, :26], tiny_series)
    result = runner.invoke(app, ["evaluate", str(small), str(files["gt"]), "-o", str(out)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "small.nii.gz: grid 32x26x12 differs from" in lines[0] and "gt.nii.gz grid 32x28x12" in lines[0]
    assert not out.exists()

    moved = tiny_series.affine.copy()
    moved[:3, 3] += 0.5
    shifted = save_like(tmp_path / "shifted.nii.gz", tiny_series.data, tiny_series, affine=moved)
    result = runner.invoke(app, ["evaluate", str(files["pred"]), str(files["gt"]), "--baseline", str(shifted)])
    assert result.exit_code == 1
    assert "shifted.nii.gz: affine differs from" in result.stderr and "SR grid" in result.stderr

    one_frame = save_like(tmp_path / "frame0.nii.gz", tiny_series.data[..., 0], tiny_series)
    result = runner.invoke(app, ["evaluate", str(one_frame), str(files["gt"])])
    assert result.exit_code == 1 and "1 frame(s) but" in result.stderr


def test_evaluate_missing_file_and_bad_output(tmp_path, files):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nope.nii.gz"), str(files["gt"])])
    assert result.exit_code == 1
    assert "nope.nii.gz: file not found" in result.stderr

    result = runner.invoke(app, ["evaluate", str(files["pred"]), str(files["gt"]), "-o", str(tmp_path / "m.txt")])
    assert result.exit_code == 1 and "ending in .csv" in result.stderr
    assert not (tmp_path / "m.txt").exists()


# --------------------------------------------------------------------------- recovery and leakage


def _rod(shape, x: slice, y: slice, z: slice) -> np.ndarray:
    core = np.zeros(shape, dtype=bool)
    core[x, y, z] = True
    return core


@pytest.fixture
def fidelity_files(tmp_path: Path, tiny_series: Volume) -> dict:
    """A needle (a void rod) in frames 1 and 2 of the ground truth only; a second rod only a planning scan had.

    ``shows.nii.gz`` keeps the needle, ``hides.nii.gz`` shows the tissue there instead, ``leaky.nii.gz`` shows
    the planning scan's rod as well. The masks sit in ``masks/`` with a phantom.json giving the planning contrast.
    """
    rng = np.random.default_rng(1)
    spatial = tiny_series.spatial_shape
    # tissue filling most of the field of view (smooth texture, +-5 %), air at the border
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, tiny_series.data.shape), (2, 2, 1, 0))
    tissue = np.zeros(tiny_series.data.shape, dtype=np.float32)
    tissue[2:-2, 2:-2, 1:-1] = (100.0 * (1.0 + 0.05 * texture / texture.std()))[2:-2, 2:-2, 1:-1]
    core = np.zeros(tissue.shape, dtype=bool)
    core[..., 1] = _rod(spatial, slice(6, 11), slice(13, 15), slice(5, 7))
    core[..., 2] = _rod(spatial, slice(6, 15), slice(13, 15), slice(5, 7))  # deeper
    site3d = _rod(spatial, slice(20, 22), slice(8, 20), slice(5, 6))  # 5 steps from the deepest needle
    site = np.repeat(site3d[..., None], 3, axis=-1)
    gt = np.where(core, 0.05 * tissue, tissue).astype(np.float32)
    noise = rng.normal(0.0, 1.0, gt.shape).astype(np.float32)
    planning = np.where(site3d, 0.1 * tissue[..., 0], tissue[..., 0])
    planning_contrast = structure_contrast(planning, site3d)
    (tmp_path / "masks").mkdir()
    files = {
        "gt": save_like(tmp_path / "gt.nii.gz", gt, tiny_series),
        "shows": save_like(tmp_path / "shows.nii.gz", gt + noise, tiny_series),
        "hides": save_like(tmp_path / "hides.nii.gz", tissue + noise, tiny_series),
        "leaky": save_like(tmp_path / "leaky.nii.gz", np.where(site, 0.1 * tissue, gt) + noise, tiny_series),
        "core": save_like(tmp_path / "masks" / "insert_mask.nii.gz", core.astype(np.uint8), tiny_series,
                          dtype=np.uint8),
        "site": save_like(tmp_path / "masks" / "planning_insert_mask.nii.gz", site.astype(np.uint8), tiny_series,
                          dtype=np.uint8),
    }
    (tmp_path / "masks" / "phantom.json").write_text(json.dumps({"planning_insert_contrast": planning_contrast}))
    return {**files, "planning_contrast": planning_contrast, "core_array": core, "site_array": site}


def test_evaluate_adds_recovery_and_leakage_per_input(tmp_path, fidelity_files):
    f = fidelity_files
    out = tmp_path / "fidelity.csv"
    result = runner.invoke(app, ["evaluate", str(f["shows"]), str(f["gt"]), "--baseline", str(f["hides"]),
                                 "--baseline", str(f["leaky"]), "--insert-mask", str(f["core"]),
                                 "--leak-mask", str(f["site"]), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    columns = COLUMNS + ["recovery", "leakage"]
    assert list(rows[0]) == ["frame"] + columns + [f"hides_{c}" for c in columns] + [f"leaky_{c}" for c in columns]
    assert [r["frame"] for r in rows] == ["0", "1", "2", "mean", "std"]

    gt = load(f["gt"]).data
    for prefix, key in (("", "shows"), ("hides_", "hides"), ("leaky_", "leaky")):
        pred = load(f[key]).data
        # no needle in frame 0: no recovery there, and the mean is over frames 1 and 2 only
        assert math.isnan(float(rows[0][f"{prefix}recovery"]))
        recovery = [contrast_recovery(pred[..., t], gt[..., t], f["core_array"][..., t]) for t in (1, 2)]
        leaks = [leakage(pred[..., t], f["site_array"][..., t], f["planning_contrast"]) for t in range(3)]
        for t in (1, 2):
            assert float(rows[t][f"{prefix}recovery"]) == pytest.approx(recovery[t - 1], rel=1e-9)
        for t in range(3):
            assert float(rows[t][f"{prefix}leakage"]) == pytest.approx(leaks[t], rel=1e-9, abs=1e-12)
        assert float(rows[3][f"{prefix}recovery"]) == pytest.approx(np.mean(recovery), rel=1e-9)
        assert float(rows[4][f"{prefix}recovery"]) == pytest.approx(np.std(recovery), rel=1e-6, abs=1e-12)
        assert float(rows[3][f"{prefix}leakage"]) == pytest.approx(np.mean(leaks), rel=1e-9, abs=1e-12)
        # the tissue scores are still there and unchanged by the extra columns
        tissue = evaluate_frames(pred, gt, mask=object_mask(gt))
        assert float(rows[1][f"{prefix}ssim_tissue"]) == pytest.approx(tissue[1]["ssim"], rel=1e-9)

    mean = rows[3]
    # the prediction that keeps the needle recovers it; the one that hides it must not
    assert float(mean["recovery"]) > 0.9 and float(mean["leaky_recovery"]) > 0.9
    assert float(mean["hides_recovery"]) < 0.2
    # the one that shows the planning scan's rod leaks; the others must not
    assert float(mean["leaky_leakage"]) > 0.8
    assert abs(float(mean["leakage"])) < 0.1 and abs(float(mean["hides_leakage"])) < 0.1
    # the table shows recovery and leakage
    assert "recov-" in result.stdout and "leak-" in result.stdout
    assert f"{float(mean['hides_recovery']):.3f}" in result.stdout


def _table_rows(stdout: str, name: str) -> list[list[str]]:
    """The table's rows as cells, without the input's name (shown on its first row only)."""
    rows = []
    for line in stdout.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            cells = cells[1:]
        if cells and (cells[0].isdigit() or cells[0] in ("mean", "±")):
            rows.append(cells)
    return rows


def test_evaluate_per_frame_table_shows_every_frame(fidelity_files):
    f = fidelity_files
    args = ["evaluate", str(f["hides"]), str(f["gt"]), "--insert-mask", str(f["core"]), "-q"]
    result = runner.invoke(app, [*args, "--per-frame"])
    assert result.exit_code == 0, result.output
    rows = _table_rows(result.stdout, "hides.nii.gz")
    assert [row[0] for row in rows] == ["0", "1", "2", "mean", "±"], result.stdout
    # frame 0 has no needle: its recovery is shown as missing, not as a number
    assert rows[0][-1] == "-" and rows[1][-1] != "-"
    without = runner.invoke(app, args)
    assert without.exit_code == 0
    assert [row[0] for row in _table_rows(without.stdout, "hides.nii.gz")] == ["mean", "±"], without.stdout


def test_evaluate_leak_reference_from_the_option_or_phantom_json(tmp_path, fidelity_files):
    f = fidelity_files
    leaky = load(f["leaky"]).data
    site = f["site_array"]

    # --leak-reference wins over phantom.json
    out = tmp_path / "given.csv"
    result = runner.invoke(app, ["evaluate", str(f["leaky"]), str(f["gt"]), "--leak-mask", str(f["site"]),
                                 "--leak-reference", "0.5", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert list(rows[0]) == ["frame"] + COLUMNS + ["leakage"]
    assert float(rows[0]["leakage"]) == pytest.approx(leakage(leaky[..., 0], site[..., 0], 0.5), rel=1e-9)
    assert float(rows[0]["leakage"]) > 1.5  # the rod's contrast here is ~0.9, against 0.5

    # a mask with no phantom.json beside it and no --leak-reference: one-line error, no CSV
    alone = tmp_path / "alone"
    alone.mkdir()
    moved = alone / "site.nii.gz"
    moved.write_bytes(f["site"].read_bytes())
    out = tmp_path / "never.csv"
    result = runner.invoke(app, ["evaluate", str(f["leaky"]), str(f["gt"]), "--leak-mask", str(moved),
                                 "-o", str(out)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "site.nii.gz" in lines[0] and "planning_insert_contrast" in lines[0] and "--leak-reference" in lines[0]
    assert not out.exists()

    # a phantom.json without the contrast (a phantom made without --planning-insert): the same error
    (alone / "phantom.json").write_text(json.dumps({"keep_actual": 6.25}))
    result = runner.invoke(app, ["evaluate", str(f["leaky"]), str(f["gt"]), "--leak-mask", str(moved)])
    assert result.exit_code == 1 and "--leak-reference" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_evaluate_structure_absent_from_every_frame_gives_nan(tmp_path, fidelity_files, tiny_series):
    f = fidelity_files
    empty = save_like(tmp_path / "masks" / "empty.nii.gz", np.zeros(tiny_series.data.shape, np.uint8), tiny_series,
                      dtype=np.uint8)
    out = tmp_path / "empty.csv"
    result = runner.invoke(app, ["evaluate", str(f["shows"]), str(f["gt"]), "--insert-mask", str(empty),
                                 "--leak-mask", str(empty), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    for row in rows:
        assert math.isnan(float(row["recovery"])) and math.isnan(float(row["leakage"])), row
    assert float(rows[3]["ssim_tissue"]) > 0.9  # the other scores are unaffected


def test_evaluate_fidelity_masks_must_be_on_the_ground_truths_grid(tmp_path, fidelity_files, tiny_series):
    f = fidelity_files
    small = save_like(tmp_path / "masks" / "small.nii.gz", f["core_array"][:30].astype(np.uint8), tiny_series,
                      dtype=np.uint8)
    result = runner.invoke(app, ["evaluate", str(f["shows"]), str(f["gt"]), "--insert-mask", str(small)])
    assert result.exit_code == 1
    assert "small.nii.gz: grid 30x28x12 differs" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_evaluate_zero_leak_reference_fails_in_one_line(fidelity_files):
    f = fidelity_files
    result = runner.invoke(app, ["evaluate", str(f["shows"]), str(f["gt"]), "--leak-mask", str(f["site"]),
                                 "--leak-reference", "0"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert "--leak-reference" in result.stderr


def test_evaluate_insert_mask_where_the_truth_shows_nothing_fails_in_one_line(tmp_path, fidelity_files, tiny_series):
    """An --insert-mask whose site is flat in the ground truth (wrong mask or wrong series) is a user error."""
    f = fidelity_files
    flat_gt = save_like(tmp_path / "flat.nii.gz", np.full(tiny_series.data.shape, 100.0, np.float32), tiny_series)
    result = runner.invoke(app, ["evaluate", str(flat_gt), str(flat_gt), "--insert-mask", str(f["core"])])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert "insert_mask.nii.gz" in result.stderr


def test_evaluate_a_phantom_made_with_needles(tmp_path, tiny_volume):
    """End to end on `make_dynamic`: the truth recovers its needle and leaks nothing; the planning scan
    registered to every frame (what a prior-copying method shows) hides the needle and leaks the old one."""
    from mrisr.deform import warp
    from mrisr.phantom import make_dynamic

    phantom = make_dynamic(tiny_volume, frames=3, seed=0, insert="needle", planning_insert="needle")
    paths = phantom.save(tmp_path / "phantom")
    copied = np.stack([warp(phantom.planning.data, phantom.tracking_displacement(t), order=3) for t in range(3)],
                      axis=-1)
    copy_path = save_like(tmp_path / "prior_copy.nii.gz", copied, phantom.hr, tr=phantom.tr)
    out = tmp_path / "phantom.csv"
    result = runner.invoke(app, ["evaluate", str(paths["hr"]), str(paths["hr"]), "--baseline", str(copy_path),
                                 "--insert-mask", str(paths["insert_mask"]), "--leak-mask",
                                 str(paths["planning_insert_mask"]), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert [float(r["recovery"]) for r in rows[:3]] == [1.0, 1.0, 1.0]
    assert abs(float(rows[3]["leakage"])) < 0.2
    assert float(rows[3]["prior_copy_recovery"]) < 0.3
    assert float(rows[3]["prior_copy_leakage"]) > 0.6
