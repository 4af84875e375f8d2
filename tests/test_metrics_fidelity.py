"""Fidelity metrics: the reference ring, structure contrast, contrast recovery, leakage, registration error."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from mrisr.metrics import (
    contrast_recovery,
    core_continuity,
    leakage,
    registration_error_mm,
    ring_mask,
    structure_contrast,
)
from mrisr.metrics.fidelity import RING

SHAPE = (24, 24, 12)


def _needle_core(shape=SHAPE) -> np.ndarray:
    """A straight in-plane rod along x, 2x2 voxels across, through the middle slices."""
    core = np.zeros(shape, dtype=bool)
    core[6:18, 11:13, 5:7] = True
    return core


def _tissue(shape=SHAPE, seed=0) -> np.ndarray:
    """Textured tissue around 100 (smooth, so the ring and the core see the same mean level)."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape), 2.0)
    return (100.0 + 10.0 * texture / texture.std()).astype(np.float32)


def test_default_ring_is_two_to_four_steps():
    assert RING == (2, 4)


def test_ring_of_a_voxel_is_the_city_block_shell_from_three_to_four():
    core = np.zeros((15, 15, 15), dtype=bool)
    core[7, 7, 7] = True
    ring = ring_mask(core)
    assert ring.dtype == bool and ring.shape == core.shape
    expected = np.zeros_like(core)
    for offset in itertools.product(range(-4, 5), repeat=3):
        if 3 <= sum(abs(o) for o in offset) <= 4:
            expected[7 + offset[0], 7 + offset[1], 7 + offset[2]] = True
    np.testing.assert_array_equal(ring, expected)
    # 4 n^2 + 2 voxels at city-block distance n: 38 + 66
    assert ring.sum() == 104
    # other widths; inner 0 keeps everything but the core
    inner0 = ring_mask(core, inner=0, outer=1)
    assert inner0.sum() == 6 and not inner0[7, 7, 7]
    assert ring_mask(core, inner=1, outer=2).sum() == 18


def test_ring_of_a_rod_leaves_a_gap_around_it():
    core = _needle_core()
    ring = ring_mask(core)
    assert not (ring & core).any()
    near = ndimage.binary_dilation(core, ndimage.generate_binary_structure(3, 1), iterations=2)
    far = ndimage.binary_dilation(core, ndimage.generate_binary_structure(3, 1), iterations=4)
    np.testing.assert_array_equal(ring, far & ~near)
    # the voxel two steps beside the rod is in the gap, three steps is in the ring, five steps out is not
    assert not ring[10, 14, 5] and ring[10, 15, 5] and not ring[10, 17, 5]


@pytest.mark.parametrize("inner, outer", [(2, 2), (3, 2), (-1, 2)])
def test_ring_rejects_bad_widths(inner, outer):
    with pytest.raises(ValueError, match="outer > inner >= 0"):
        ring_mask(_needle_core(), inner=inner, outer=outer)


def test_structure_contrast_of_voids_and_bright_structures():
    core = _needle_core()
    uniform = np.full(SHAPE, 100.0, dtype=np.float32)
    void = np.where(core, 0.0, uniform)
    assert structure_contrast(void, core) == pytest.approx(1.0, abs=1e-12)
    assert structure_contrast(np.where(core, 50.0, uniform), core) == pytest.approx(0.5, abs=1e-12)
    assert structure_contrast(np.where(core, 200.0, uniform), core) == pytest.approx(-1.0, abs=1e-12)
    assert structure_contrast(uniform, core) == pytest.approx(0.0, abs=1e-12)
    # only the ring is the reference: what lies in the gap (partial volume, blur) does not count
    blurred_edge = void.copy()
    gap = ring_mask(core, inner=0, outer=2)
    blurred_edge[gap] = 20.0
    assert structure_contrast(blurred_edge, core) == pytest.approx(1.0, abs=1e-12)
    # and beyond the ring nothing counts either
    far = ~ndimage.binary_dilation(core, ndimage.generate_binary_structure(3, 1), iterations=4)
    assert structure_contrast(np.where(far, 1e4, void), core) == pytest.approx(1.0, abs=1e-12)
    # a zero ring has no relative contrast
    assert math.isnan(structure_contrast(np.zeros(SHAPE, np.float32), core))


def test_structure_contrast_errors():
    core = _needle_core()
    image = np.ones(SHAPE, dtype=np.float32)
    with pytest.raises(ValueError, match="core mask is empty"):
        structure_contrast(image, np.zeros(SHAPE, bool))
    with pytest.raises(ValueError, match="core mask shape"):
        structure_contrast(image, core[:-1])
    with pytest.raises(ValueError, match="ring around the core is empty"):
        structure_contrast(image, np.ones(SHAPE, bool))


def test_contrast_recovery_of_the_truth_a_filled_void_and_half_the_contrast():
    core = _needle_core()
    tissue = _tissue()
    truth = np.where(core, 0.05 * tissue, tissue).astype(np.float32)
    assert contrast_recovery(truth, truth, core) == pytest.approx(1.0, abs=1e-12)
    # the output shows the tissue where the needle is: nothing recovered
    assert abs(contrast_recovery(tissue, truth, core)) < 0.1
    # half the depth of the void
    half = np.where(core, 0.5 * (truth + tissue), tissue).astype(np.float32)
    assert contrast_recovery(half, truth, core) == pytest.approx(0.5, abs=0.05)
    # a brighter-than-truth void (over-shoot) is more than 1; a void turned bright is negative
    assert contrast_recovery(np.where(core, 0.0, tissue), truth, core) > 1.0
    assert contrast_recovery(np.where(core, 2.0 * tissue, tissue), truth, core) < 0.0
    # the scale of the output does not matter (relative contrast)
    assert contrast_recovery(3.0 * truth, truth, core) == pytest.approx(1.0, abs=1e-9)


def test_blurring_loses_contrast_and_recovery_drops():
    core = _needle_core()
    tissue = _tissue()
    truth = np.where(core, 0.0, tissue).astype(np.float32)
    mild = contrast_recovery(ndimage.gaussian_filter(truth, 0.7), truth, core)
    strong = contrast_recovery(ndimage.gaussian_filter(truth, 2.5), truth, core)
    assert 1.0 > mild > strong > 0.0
    assert strong < 0.6


def test_contrast_recovery_errors():
    core = _needle_core()
    tissue = _tissue()
    with pytest.raises(ValueError, match="core mask is empty"):
        contrast_recovery(tissue, np.where(core, 0.0, tissue), np.zeros(SHAPE, bool))
    with pytest.raises(ValueError, match="no contrast in the ground truth"):
        contrast_recovery(tissue, np.full(SHAPE, 100.0, np.float32), core)
    with pytest.raises(ValueError, match="no contrast in the ground truth"):
        contrast_recovery(tissue, np.zeros(SHAPE, np.float32), core)  # ring mean 0: nan contrast


def test_leakage_is_zero_without_the_structure_and_one_like_the_planning_scan():
    site = _needle_core()
    tissue = _tissue()
    planning = np.where(site, 0.1 * tissue, tissue).astype(np.float32)
    planning_contrast = structure_contrast(planning, site)
    assert planning_contrast > 0.8
    # the output shows the withdrawn needle as the planning scan did: full leakage (must fail)
    assert leakage(planning, site, planning_contrast) == pytest.approx(1.0, abs=1e-12)
    # a faint copy of it: partial leakage
    faint = np.where(site, 0.7 * tissue, tissue).astype(np.float32)
    assert 0.2 < leakage(faint, site, planning_contrast) < 0.5
    # the true frame has no needle: no leakage
    assert abs(leakage(tissue, site, planning_contrast)) < 0.05
    assert leakage(np.full(SHAPE, 80.0, np.float32), site, planning_contrast) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("reference", [0.0, 1e-9, float("nan"), float("inf")])
def test_leakage_needs_a_planning_contrast(reference):
    with pytest.raises(ValueError, match="no contrast in the planning scan"):
        leakage(_tissue(), _needle_core(), reference)


def test_leakage_errors_on_an_empty_site():
    with pytest.raises(ValueError, match="core mask is empty"):
        leakage(_tissue(), np.zeros(SHAPE, bool), 0.9)


ZOOMS = (0.9, 1.1, 3.0)


def test_registration_error_zero_for_identical_fields():
    rng = np.random.default_rng(0)
    field = rng.normal(0.0, 1.0, (3, *SHAPE)).astype(np.float32)
    result = registration_error_mm(field, field, ZOOMS)
    assert set(result) == {"mean_mm", "p95_mm", "max_mm", "true_mean_mm"}
    assert result["mean_mm"] == 0.0 and result["p95_mm"] == 0.0 and result["max_mm"] == 0.0
    expected_motion = np.sqrt(((field.astype(np.float64) * np.reshape(ZOOMS, (3, 1, 1, 1))) ** 2).sum(axis=0))
    assert result["true_mean_mm"] == pytest.approx(expected_motion.mean(), rel=1e-9)


@pytest.mark.parametrize("axis, mm", [(0, 0.9), (1, 1.1), (2, 3.0)])
def test_registration_error_scales_voxels_by_each_axis_zoom(axis, mm):
    true = np.zeros((3, *SHAPE), dtype=np.float32)
    estimated = true.copy()
    estimated[axis] = 1.0  # one voxel off along one axis everywhere
    result = registration_error_mm(estimated, true, ZOOMS)
    assert result["mean_mm"] == pytest.approx(mm) and result["max_mm"] == pytest.approx(mm)
    assert result["p95_mm"] == pytest.approx(mm) and result["true_mean_mm"] == 0.0


def test_registration_error_of_no_registration_is_the_true_motion():
    true = np.zeros((3, *SHAPE), dtype=np.float32)
    true[0], true[2] = 2.0, 1.0  # 1.8 mm in x, 3 mm in z
    result = registration_error_mm(np.zeros_like(true), true, ZOOMS)
    assert result["mean_mm"] == pytest.approx(math.hypot(1.8, 3.0))
    assert result["true_mean_mm"] == pytest.approx(math.hypot(1.8, 3.0))
    # a half-way estimate halves the error, not the true motion
    half = registration_error_mm(0.5 * true, true, ZOOMS)
    assert half["mean_mm"] == pytest.approx(0.5 * math.hypot(1.8, 3.0))
    assert half["true_mean_mm"] == pytest.approx(math.hypot(1.8, 3.0))


def test_registration_error_statistics_and_mask():
    true = np.zeros((3, *SHAPE), dtype=np.float32)
    estimated = true.copy()
    # the error is 1 voxel along y (1.1 mm) in 10 % of the voxels, 0 elsewhere
    wrong = np.zeros(SHAPE, dtype=bool)
    wrong[: SHAPE[0] // 10 + 1] = True
    wrong_fraction = wrong.mean()
    assert 0.05 < wrong_fraction < 0.2
    estimated[1][wrong] = 1.0
    result = registration_error_mm(estimated, true, ZOOMS)
    assert result["mean_mm"] == pytest.approx(1.1 * wrong_fraction)
    assert result["max_mm"] == pytest.approx(1.1)
    assert result["p95_mm"] == pytest.approx(float(np.percentile(np.where(wrong, 1.1, 0.0), 95)))
    inside = registration_error_mm(estimated, true, ZOOMS, mask=wrong)
    assert inside["mean_mm"] == pytest.approx(1.1) and inside["p95_mm"] == pytest.approx(1.1)
    outside = registration_error_mm(estimated, true, ZOOMS, mask=~wrong)
    assert outside["max_mm"] == 0.0


def test_registration_error_rejects_bad_shapes():
    field = np.zeros((3, *SHAPE), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\(3, X, Y, Z\)"):
        registration_error_mm(field[:2], field[:2], ZOOMS)
    with pytest.raises(ValueError, match=r"\(3, X, Y, Z\)"):
        registration_error_mm(field, field[:, :-1], ZOOMS)


def test_core_continuity_tells_a_dotted_needle_from_a_faint_continuous_one():
    core = _needle_core()
    tissue = np.full(SHAPE, 100.0, dtype=np.float32)
    truth = np.where(core, 0.0, tissue)  # a complete signal void
    assert core_continuity(truth, truth, core) == 1.0
    # every voxel keeps 60 % of its depth: continuous, though its mean contrast is only 0.6
    faint = np.where(core, 40.0, tissue)
    assert core_continuity(faint, truth, core) == 1.0
    assert contrast_recovery(faint, truth, core) == pytest.approx(0.6)
    # every second voxel along the rod keeps all of its depth, the others none: dotted
    dotted = truth.copy()
    dotted[6:18:2, 11:13, 5:7] = 100.0
    assert core_continuity(dotted, truth, core) == pytest.approx(0.5)
    assert contrast_recovery(dotted, truth, core) == pytest.approx(0.5)
    assert core_continuity(tissue, truth, core) == 0.0
    # a bright structure: depth of the other sign
    bright = np.where(core, 200.0, tissue)
    assert core_continuity(bright, bright, core) == 1.0 and core_continuity(tissue, bright, core) == 0.0
    # the share asked for
    assert core_continuity(faint, truth, core, share=0.7) == 0.0


def test_core_continuity_refuses_what_it_cannot_measure():
    core = _needle_core()
    tissue = np.full(SHAPE, 100.0, dtype=np.float32)
    with pytest.raises(ValueError, match="no core voxel has a depth"):
        core_continuity(tissue, tissue, core)
    with pytest.raises(ValueError, match="share"):
        core_continuity(tissue, np.where(core, 0.0, tissue), core, share=0.0)
    with pytest.raises(ValueError, match="empty"):
        core_continuity(tissue, tissue, np.zeros(SHAPE, dtype=bool))
