"""Cartesian k-space masks: kept fractions, fastMRI centre convention, seeding, factory errors."""

from __future__ import annotations

import numpy as np
import pytest

from mrisr import kspace
from mrisr.kspace import MASKS, CenterMask, EquispacedLineMask, RandomLineMask, VariableDensityMask, make_mask


def test_factory_knows_every_mode():
    assert set(MASKS) == {"center", "random", "equispaced", "variable-density"}
    assert isinstance(make_mask("center", 10), CenterMask)
    assert isinstance(make_mask("random", 10), RandomLineMask)
    assert isinstance(make_mask("equispaced", 10), EquispacedLineMask)
    assert isinstance(make_mask("variable-density", 10), VariableDensityMask)


def test_factory_rejects_unknown_name_listing_valid_ones():
    with pytest.raises(ValueError) as err:
        make_mask("bogus", 10)
    message = str(err.value)
    assert "'bogus'" in message
    for name in MASKS:
        assert name in message


@pytest.mark.parametrize("keep", [0, -5, 101])
@pytest.mark.parametrize("name", sorted(MASKS))
def test_masks_reject_bad_keep(name, keep):
    with pytest.raises(ValueError, match="keep must be in"):
        make_mask(name, keep)


@pytest.mark.parametrize(("shape", "keep"), [((256, 256), 6.25), ((64, 60), 25.0), ((63, 57), 10.0)])
def test_center_mask_is_the_kept_block(shape, keep):
    mask = make_mask("center", keep)(shape)
    size = kspace.center_keep_shape(shape, keep)
    assert mask.dtype == bool and mask.shape == shape
    assert mask.sum() == size[0] * size[1]
    rows, cols = np.nonzero(mask)
    # a rectangle around DC (N // 2)
    assert rows.min() == shape[0] // 2 - size[0] // 2 and rows.max() == rows.min() + size[0] - 1
    assert cols.min() == shape[1] // 2 - size[1] // 2 and cols.max() == cols.min() + size[1] - 1
    assert mask[shape[0] // 2, shape[1] // 2]


def _line_profile(mask: np.ndarray) -> np.ndarray:
    """Lines along X are selected along Y: every column is either all true or all false."""
    assert np.all(mask.all(axis=0) | ~mask.any(axis=0))
    return mask[0]


@pytest.mark.parametrize("name", ["random", "equispaced"])
@pytest.mark.parametrize("keep", [25.0, 12.5, 6.25])
def test_line_masks_fraction_and_fully_sampled_centre(name, keep):
    n = 256
    mask_maker = make_mask(name, keep)
    fractions = []
    for seed in range(20):
        lines = _line_profile(mask_maker((96, n), np.random.default_rng(seed)))
        fractions.append(lines.mean())
        # fastMRI: num_low = round(N * center_fraction) fully sampled lines around N // 2
        num_low = round(n * mask_maker.center_fraction)
        start = n // 2 - num_low // 2
        assert lines[start : start + num_low].all()
        assert lines[n // 2]
    assert np.mean(fractions) == pytest.approx(keep / 100, rel=0.1)
    assert all(abs(f - keep / 100) < 0.35 * keep / 100 + 0.01 for f in fractions)


def test_explicit_center_fraction_follows_fastmri_rounding():
    mask_maker = make_mask("random", 25.0, center_fraction=0.08)
    for n in (100, 101, 320):
        lines = _line_profile(mask_maker((8, n), 0))
        num_low = round(n * 0.08)
        start = n // 2 - num_low // 2
        assert lines[start : start + num_low].all()
    with pytest.raises(ValueError, match="center_fraction"):
        make_mask("equispaced", 25.0, center_fraction=1.5)


def test_equispaced_lines_are_evenly_spaced_outside_centre():
    mask_maker = make_mask("equispaced", 12.5, center_fraction=0.04)
    lines = _line_profile(mask_maker((16, 256), 7))
    num_low = round(256 * 0.04)
    start = 256 // 2 - num_low // 2
    outside = np.nonzero(np.concatenate([lines[:start], np.zeros(num_low, bool), lines[start + num_low :]]))[0]
    spacing = int(np.diff(outside).min())
    assert spacing > 1
    # every line outside the centre sits on one lattice offset + k * spacing
    assert len(set((outside % spacing).tolist())) == 1
    assert len(outside) >= (256 - num_low) // spacing - 1


@pytest.mark.parametrize("name", ["random", "equispaced", "variable-density"])
def test_same_seed_same_mask_different_seed_different(name):
    mask_maker = make_mask(name, 12.5)
    a = mask_maker((64, 96), np.random.default_rng(3))
    b = mask_maker((64, 96), np.random.default_rng(3))
    c = mask_maker((64, 96), 4)
    d = mask_maker((64, 96), 3)  # an int seed is the same as default_rng(seed)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, d)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("keep", [25.0, 10.0, 6.25])
def test_variable_density_fraction_and_centre(keep):
    mask_maker = make_mask("variable-density", keep)
    shape = (128, 112)
    fractions = [mask_maker(shape, seed).mean() for seed in range(5)]
    # the fully sampled disc adds a little on top of the scaled density
    assert np.mean(fractions) == pytest.approx(keep / 100, rel=0.15)
    mask = mask_maker(shape, 0)
    assert mask[64, 56]
    # denser near the centre than at the edge
    centre = mask[48:80, 42:70].mean()
    edge = np.concatenate([mask[:16].ravel(), mask[-16:].ravel()]).mean()
    assert centre > 3 * edge


@pytest.mark.parametrize("name", sorted(MASKS))
def test_mask_shapes_and_sampled_dc(name):
    mask = make_mask(name, 10.0)((40, 37), 0)
    assert mask.shape == (40, 37) and mask.dtype == bool
    assert mask[20, 18]  # DC is always sampled


@pytest.mark.parametrize("name", ["random", "equispaced", "variable-density"])
def test_simulation_with_masks_reports_kept_fraction(tiny_volume, name):
    out, info = kspace.simulate_volume(tiny_volume, 25.0, mode=name, seed=2)
    assert out.data.shape == tiny_volume.data.shape  # masks give zero-filled output on the HR grid
    np.testing.assert_array_equal(out.affine, tiny_volume.affine)
    assert info.mask.shape == (32, 28)
    assert info.keep_actual == pytest.approx(100 * info.mask.mean())
    same, _ = kspace.simulate_volume(tiny_volume, 25.0, mode=name, seed=2)
    np.testing.assert_array_equal(out.data, same.data)
