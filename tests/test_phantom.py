"""Dynamic phantoms from a real static volume: geometry, determinism, motion, contrast, files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mrisr.data import load_sample
from mrisr.io import MrisrInputError, Volume, coarsen_affine, load
from mrisr.kspace import center_keep_shape
from mrisr.phantom import PHANTOM_FILES, make_dynamic

CROP = (slice(40, 88), slice(52, 92), slice(12, 20))  # 48 x 40 x 8 through the ventricles
FRAMES = 6


@pytest.fixture(scope="module")
def sample_crop() -> Volume:
    """A small crop of the real sample, placed on an oblique grid (1.5 x 1.5 x 3 mm)."""
    from mrisr_testdata import oblique

    data = np.ascontiguousarray(load_sample().data[CROP])
    return Volume(data=data, affine=oblique(zooms=(1.5, 1.5, 3.0)), qform_code=1, sform_code=2)


@pytest.fixture(scope="module")
def phantom(sample_crop):
    return make_dynamic(sample_crop, frames=FRAMES, keep=6.25, seed=3, tr=0.4)


def test_shapes_geometry_and_tr(sample_crop, phantom):
    shape = sample_crop.spatial_shape
    assert phantom.hr.data.shape == (*shape, FRAMES)
    assert phantom.planning.data.shape == shape
    lr_inplane = center_keep_shape(shape[:2], 6.25)
    assert phantom.lr.data.shape == (*lr_inplane, shape[2], FRAMES)
    for volume in (phantom.hr, phantom.lr, phantom.planning):
        assert volume.data.dtype == np.float32
        assert np.isfinite(volume.data).all()
    np.testing.assert_array_equal(phantom.hr.affine, sample_crop.affine)
    np.testing.assert_array_equal(phantom.planning.affine, sample_crop.affine)
    np.testing.assert_allclose(phantom.lr.affine, coarsen_affine(sample_crop.affine, shape, phantom.lr.spatial_shape))
    assert phantom.hr.tr == pytest.approx(0.4) and phantom.lr.tr == pytest.approx(0.4)
    assert (phantom.hr.qform_code, phantom.hr.sform_code) == (1, 2)
    assert phantom.keep == 6.25
    assert phantom.keep_actual == pytest.approx(100.0 * np.prod(lr_inplane) / np.prod(shape[:2]))
    assert phantom.breathing.shape == (FRAMES,) and phantom.contrast_curve.shape == (FRAMES,)
    assert 0.0 <= phantom.breathing.min() and phantom.breathing.max() <= 1.0


def test_deterministic_for_a_seed_and_global_rng_untouched(sample_crop, phantom):
    state = np.random.get_state()[1].copy()
    again = make_dynamic(sample_crop, frames=FRAMES, keep=6.25, seed=3, tr=0.4)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    np.testing.assert_array_equal(again.hr.data, phantom.hr.data)
    np.testing.assert_array_equal(again.lr.data, phantom.lr.data)
    np.testing.assert_array_equal(again.planning.data, phantom.planning.data)
    other = make_dynamic(sample_crop, frames=FRAMES, keep=6.25, seed=4, tr=0.4)
    assert np.abs(other.hr.data - phantom.hr.data).max() > 0.05 * phantom.hr.data.max()


def test_planning_is_another_motion_state_without_contrast(sample_crop, phantom):
    scale = float(sample_crop.data.max())
    assert 1.0 <= phantom.planning_phase <= 1.2
    for t in range(FRAMES):
        assert np.abs(phantom.planning.data - phantom.hr.data[..., t]).mean() > 0.005 * scale
    # not brighter than the anatomy it comes from (no contrast agent in the planning scan)
    assert phantom.planning.data.max() <= 1.05 * scale


def test_motion_moves_every_frame(phantom):
    scale = float(phantom.hr.data.max())
    for t in range(1, FRAMES):
        assert np.abs(phantom.hr.data[..., t] - phantom.hr.data[..., t - 1]).mean() > 1e-4 * scale


def test_breathing_shifts_the_object_by_millimetres(tiny_volume):
    """On an isolated object the centroid follows the breathing phase along the dominant axis (Y)."""
    motion = 4.0
    result = make_dynamic(tiny_volume, frames=12, keep=25.0, seed=1, tr=0.5, motion_mm=motion, contrast=False)
    zooms = np.asarray(tiny_volume.zooms)
    grids = np.indices(tiny_volume.spatial_shape, dtype=np.float64)

    def centroid_mm(frame: np.ndarray) -> np.ndarray:
        return np.array([(g * frame).sum() / frame.sum() for g in grids]) * zooms

    low, high = int(np.argmin(result.breathing)), int(np.argmax(result.breathing))
    depth = float(result.breathing[high] - result.breathing[low])
    assert depth > 0.5
    shift = centroid_mm(result.hr.data[..., high]) - centroid_mm(result.hr.data[..., low])
    # the pull-back warp moves content by -d: inspiration moves the object towards -Y
    assert shift[1] < -0.3 * motion * depth
    assert abs(shift[1]) < motion * depth + 1.0
    assert abs(shift[1]) > 2 * max(abs(shift[0]), abs(shift[2]))


def test_without_motion_or_contrast_frames_equal_the_static(tiny_volume):
    result = make_dynamic(tiny_volume, frames=3, keep=25.0, seed=0, motion_mm=0.0, contrast=False)
    for t in range(3):
        np.testing.assert_allclose(result.hr.data[..., t], tiny_volume.data, atol=1e-3 * tiny_volume.data.max())


def test_contrast_region_brightens_over_time(sample_crop):
    kwargs = dict(frames=10, keep=6.25, seed=5, tr=0.5)
    with_contrast = make_dynamic(sample_crop, contrast=True, **kwargs)
    without = make_dynamic(sample_crop, contrast=False, **kwargs)
    assert not np.any(without.contrast_curve)
    curve = with_contrast.contrast_curve
    assert curve[0] == 0.0 and curve.max() == pytest.approx(1.0, abs=0.05)
    peak = int(np.argmax(curve))
    assert peak > 0
    # same seed: same motion, so the ratio isolates the uptake (region barely moves: 4 mm vs ~20 mm radius)
    region = with_contrast.contrast_weight > 0.9
    assert region.sum() > 20
    anatomy = without.hr.data[..., peak] > 0.05 * without.hr.data.max()
    inside = region & anatomy

    def ratio(t: int) -> float:
        return float(with_contrast.hr.data[..., t][inside].sum() / without.hr.data[..., t][inside].sum())

    assert ratio(0) == pytest.approx(1.0, abs=1e-4)
    assert ratio(peak) > 1.25
    # far from the region nothing changes
    outside = (with_contrast.contrast_weight < 1e-3) & anatomy
    np.testing.assert_allclose(
        with_contrast.hr.data[..., peak][outside], without.hr.data[..., peak][outside], rtol=1e-2, atol=1.0
    )
    # the planning scan never carries contrast
    np.testing.assert_array_equal(with_contrast.planning.data, without.planning.data)


def test_noise_goes_into_lr_only(sample_crop, phantom):
    noisy = make_dynamic(sample_crop, frames=FRAMES, keep=6.25, seed=3, tr=0.4, noise_snr=20.0)
    np.testing.assert_array_equal(noisy.hr.data, phantom.hr.data)
    assert np.abs(noisy.lr.data - phantom.lr.data).mean() > 0


def test_bad_inputs(tiny_volume, tiny_series):
    with pytest.raises(MrisrInputError, match="4-D"):
        make_dynamic(tiny_series)
    with pytest.raises(MrisrInputError, match="frames"):
        make_dynamic(tiny_volume, frames=0)
    for keep in (0.0, 150.0):
        with pytest.raises(MrisrInputError, match="keep"):
            make_dynamic(tiny_volume, frames=2, keep=keep)
    with pytest.raises(MrisrInputError, match="tr"):
        make_dynamic(tiny_volume, frames=2, tr=0.0)
    with pytest.raises(MrisrInputError, match="all zero"):
        make_dynamic(tiny_volume.with_data(np.zeros_like(tiny_volume.data)), frames=2)


def test_save_writes_three_images_with_geometry_and_tr(tmp_path, sample_crop, phantom):
    paths = phantom.save(tmp_path / "out")
    assert {k: p.name for k, p in paths.items() if k != "metadata"} == {
        "planning": PHANTOM_FILES["planning"],
        "hr": PHANTOM_FILES["hr"],
        "lr": PHANTOM_FILES["lr"],
    }
    planning, hr, lr = load(paths["planning"]), load(paths["hr"]), load(paths["lr"])
    assert planning.data.shape == sample_crop.spatial_shape
    assert hr.data.shape == phantom.hr.data.shape and lr.data.shape == phantom.lr.data.shape
    np.testing.assert_allclose(hr.affine, sample_crop.affine, atol=1e-4)
    np.testing.assert_allclose(planning.affine, sample_crop.affine, atol=1e-4)
    np.testing.assert_allclose(lr.affine, phantom.lr.affine, atol=1e-4)
    assert hr.tr == pytest.approx(0.4) and lr.tr == pytest.approx(0.4)
    assert (hr.qform_code, hr.sform_code) == (1, 2)
    np.testing.assert_allclose(lr.zooms, phantom.lr.zooms, rtol=1e-5)
    np.testing.assert_allclose(hr.data, phantom.hr.data)
    assert nib.load(str(paths["lr"])).header.get_xyzt_units() == ("mm", "sec")
    meta = json.loads(paths["metadata"].read_text())
    assert meta["settings"]["seed"] == 3 and len(meta["breathing"]) == FRAMES
    assert meta["keep_actual"] == pytest.approx(phantom.keep_actual)
    assert not [p for p in (tmp_path / "out").iterdir() if "partial" in p.name]


def test_planning_noise_is_independent_and_leaves_the_frames_alone():
    from mrisr.data import load_sample

    sample = load_sample()
    crop = sample.with_data(np.ascontiguousarray(sample.data[32:80, 40:88, 10:16]))
    clean = make_dynamic(crop, frames=2, keep=6.25, seed=3)
    noisy = make_dynamic(crop, frames=2, keep=6.25, seed=3, planning_noise_snr=20.0)
    # the frames, the LR series and the motion are those of the phantom without it
    np.testing.assert_array_equal(noisy.hr.data, clean.hr.data)
    np.testing.assert_array_equal(noisy.lr.data, clean.lr.data)
    difference = noisy.planning.data - clean.planning.data
    obj = clean.planning.data > 0.1 * np.percentile(clean.planning.data, 99)
    level = float(clean.planning.data[obj].mean())
    # about sigma = level / 20 in the object (Rician: a magnitude), and new noise, not a rescaling
    assert 0.6 / 20 < float(difference[obj].std()) / level < 1.4 / 20
    assert abs(np.corrcoef(difference[obj], clean.planning.data[obj])[0, 1]) < 0.2
    assert noisy.settings["planning_noise_snr"] == 20.0 and clean.settings["planning_noise_snr"] is None
    with pytest.raises(MrisrInputError, match="planning_noise_snr=0"):
        make_dynamic(crop, frames=2, planning_noise_snr=0)
