"""`mrisr.metrics.object_mask`: 10 % of the 99th percentile, holes filled in 3-D, dilated by a 2-voxel ball."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mrisr.io import Volume
from mrisr.metrics import object_mask


def _ball_offsets(radius: int) -> list[tuple[int, int, int]]:
    """Integer offsets within Euclidean distance ``radius`` (written out here, not taken from mrisr)."""
    span = range(-radius, radius + 1)
    return [(a, b, c) for a, b, c in itertools.product(span, span, span) if a * a + b * b + c * c <= radius * radius]


def _dilate_by_hand(mask: np.ndarray, radius: int) -> np.ndarray:
    out = np.zeros_like(mask)
    for x, y, z in np.argwhere(mask):
        for a, b, c in _ball_offsets(radius):
            i, j, k = x + a, y + b, z + c
            if 0 <= i < mask.shape[0] and 0 <= j < mask.shape[1] and 0 <= k < mask.shape[2]:
                out[i, j, k] = True
    return out


def _cube_volume(shape=(16, 16, 12), low=(5, 5, 4), size=4, value=1.0) -> np.ndarray:
    image = np.zeros(shape, dtype=np.float32)
    image[low[0] : low[0] + size, low[1] : low[1] + size, low[2] : low[2] + size] = value
    return image


def test_ball_of_radius_two_has_33_voxels():
    # the reference the dilation tests compare against
    assert len(_ball_offsets(2)) == 33


def test_threshold_is_ten_percent_of_the_99th_percentile():
    image = _cube_volume(value=100.0)  # 64 of 3072 voxels (2 %): the 99th percentile is 100
    assert np.percentile(image, 99) == 100.0
    # dim regions touching the border (so they are not holes): just above and just below 10 %
    image[0, :, :] = 10.5
    image[-1, :, :] = 9.5
    mask = object_mask(image, dilation=0)
    assert mask.dtype == bool and mask.shape == image.shape
    np.testing.assert_array_equal(mask, image > 10.0)
    assert mask[0].all() and not mask[-1].any()

    # a few very bright voxels (< 1 %) do not move the threshold
    spiky = image.copy()
    spiky[0, 0, :3] = 1e6
    np.testing.assert_array_equal(object_mask(spiky, dilation=0), mask)

    # the threshold and percentile are parameters
    np.testing.assert_array_equal(object_mask(image, threshold=0.2, dilation=0), image > 20.0)
    np.testing.assert_array_equal(object_mask(image, threshold=0.09, dilation=0), image > 9.0)


def test_negative_intensities_count_by_magnitude():
    image = -_cube_volume(value=50.0)
    np.testing.assert_array_equal(object_mask(image, dilation=0), image < -5.0)


def test_hollow_sphere_cavity_is_filled():
    shape = (24, 24, 24)
    grid = np.indices(shape) - 11.5
    radius = np.sqrt((grid**2).sum(axis=0))
    shell = ((radius > 6) & (radius <= 9)).astype(np.float32) * 80.0
    assert not shell[12, 12, 12]  # the centre is a cavity in the image
    mask = object_mask(shell, dilation=0)
    np.testing.assert_array_equal(mask, radius <= 9)
    # a cavity open to the border is not a hole
    open_shell = shell.copy()
    open_shell[:, 11:13, 11:13] = 0.0
    open_mask = object_mask(open_shell, dilation=0)
    assert not open_mask[12, 12, 12]
    np.testing.assert_array_equal(open_mask, open_shell > 8.0)


def test_holes_are_filled_in_3d_only():
    # a tube along z open at both ends: each slice has a hole, but in 3-D the lumen reaches the border
    image = np.zeros((16, 16, 10), dtype=np.float32)
    image[3:13, 3:13, :] = 1.0
    image[6:10, 6:10, :] = 0.0
    mask = object_mask(image, dilation=0)
    np.testing.assert_array_equal(mask, image > 0)
    # closed at both ends, the lumen is a 3-D hole and is filled
    closed = image.copy()
    closed[6:10, 6:10, 0] = 1.0
    closed[6:10, 6:10, -1] = 1.0
    assert object_mask(closed, dilation=0)[3:13, 3:13, :].all()


def test_dilation_grows_the_mask_by_exactly_the_ball():
    image = _cube_volume(value=7.0)
    core = object_mask(image, dilation=0)
    np.testing.assert_array_equal(core, image > 0)
    for radius in (1, 2, 3):
        np.testing.assert_array_equal(object_mask(image, dilation=radius), _dilate_by_hand(core, radius), str(radius))
    # the default is 2 voxels
    np.testing.assert_array_equal(object_mask(image), _dilate_by_hand(core, 2))
    # a corner of the 4-cube grows by the ball: the voxel 2 steps out along x is in, the diagonal (2, 1, 1) is not
    assert object_mask(image)[5 - 2, 5, 4] and not object_mask(image)[5 - 2, 5 - 1, 4 - 1]


def test_dilation_is_clipped_at_the_border():
    image = _cube_volume(low=(0, 0, 0), value=3.0)
    mask = object_mask(image)
    np.testing.assert_array_equal(mask, _dilate_by_hand(image > 0, 2))
    assert mask[0, 0, 0] and mask[5, 0, 0] and not mask[6, 0, 0]


def test_all_zero_gives_all_true():
    zeros = np.zeros((8, 9, 5), dtype=np.float32)
    mask = object_mask(zeros)
    assert mask.dtype == bool and mask.shape == zeros.shape and mask.all()
    mask4 = object_mask(np.zeros((8, 9, 5, 2), dtype=np.float32))
    assert mask4.shape == (8, 9, 5, 2) and mask4.all()


def test_four_d_gives_one_mask_per_frame():
    frame0 = _cube_volume(low=(2, 2, 2), value=1.0)
    # frame 1: a much brighter object elsewhere and a dim one where frame 0's is; per frame the dim one is out
    frame1 = _cube_volume(low=(9, 9, 6), value=500.0) + _cube_volume(low=(2, 2, 2), value=1.0)
    series = np.stack([frame0, frame1], axis=-1)
    masks = object_mask(series)
    assert masks.shape == series.shape and masks.dtype == bool
    np.testing.assert_array_equal(masks[..., 0], object_mask(frame0))
    np.testing.assert_array_equal(masks[..., 1], object_mask(frame1))
    assert masks[3, 3, 3, 0] and not masks[3, 3, 3, 1]
    assert masks[10, 10, 7, 1] and not masks[10, 10, 7, 0]


def test_accepts_volumes_and_tensors_and_rejects_other_ranks(tiny_volume):
    import torch

    expected = object_mask(tiny_volume.data)
    np.testing.assert_array_equal(object_mask(tiny_volume), expected)
    np.testing.assert_array_equal(object_mask(torch.from_numpy(tiny_volume.data)), expected)
    assert isinstance(tiny_volume, Volume)
    # the head-like fixture: the object is inside, the corners are air
    assert expected[16, 14, 6] and not expected[0, 0, 0]
    with pytest.raises(ValueError, match="object_mask needs"):
        object_mask(np.ones((8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="object_mask needs"):
        object_mask(np.ones((2, 2, 2, 2, 2), dtype=np.float32))
