"""Grid geometry of k-space cropping / zero-filling: affines and world-space position of anatomy."""

from __future__ import annotations

import numpy as np
import pytest

from mrisr import kspace
from mrisr.io import Volume, coarsen_affine, hr_inplane_matrix, refine_affine, regrid_affine, voxel_sizes


def _world(affine: np.ndarray, ijk) -> np.ndarray:
    return (affine @ np.array([*ijk, 1.0]))[:3]


@pytest.mark.parametrize(
    ("hr_shape", "lr_shape"),
    [((256, 256, 12), (80, 80, 12)), ((256, 240, 12), (81, 75, 12)), ((63, 57, 5), (29, 27, 5))],
)
def test_coarsen_and_refine_are_inverse(oblique_affine, hr_shape, lr_shape):
    lr_affine = coarsen_affine(oblique_affine, hr_shape, lr_shape)
    np.testing.assert_allclose(refine_affine(lr_affine, lr_shape, hr_shape), oblique_affine, atol=1e-12)
    np.testing.assert_allclose(regrid_affine(lr_affine, lr_shape, hr_shape), oblique_affine, atol=1e-12)
    # voxel size scales by N / M on the changed axes, not at all on the slice axis
    expected = voxel_sizes(oblique_affine) * np.array(hr_shape) / np.array(lr_shape)
    np.testing.assert_allclose(voxel_sizes(lr_affine), expected, rtol=1e-12)
    # the rotation (direction cosines) is unchanged
    np.testing.assert_allclose(
        lr_affine[:3, :3] / voxel_sizes(lr_affine), oblique_affine[:3, :3] / voxel_sizes(oblique_affine), atol=1e-12
    )


@pytest.mark.parametrize(("n_old", "n_new"), [(256, 80), (81, 256), (64, 32), (63, 29), (80, 256), (12, 12)])
def test_regrid_keeps_centre_voxel_in_place(oblique_affine, n_old, n_new):
    """Index N//2 of the old grid and M//2 of the new grid are the same world point."""
    old_shape, new_shape = (n_old, n_old + 1, 12), (n_new, n_new + 1, 12)
    new_affine = regrid_affine(oblique_affine, old_shape, new_shape)
    old_centre = [s // 2 for s in old_shape]
    new_centre = [s // 2 for s in new_shape]
    np.testing.assert_allclose(_world(new_affine, new_centre), _world(oblique_affine, old_centre), atol=1e-9)
    # one new voxel step is N/M old voxel steps
    step_new = _world(new_affine, [new_centre[0] + 1, *new_centre[1:]]) - _world(new_affine, new_centre)
    step_old = _world(oblique_affine, [old_centre[0] + 1, *old_centre[1:]]) - _world(oblique_affine, old_centre)
    np.testing.assert_allclose(step_new, step_old * n_old / n_new, atol=1e-12)


def test_regrid_docstring_example_and_field_of_view():
    a = regrid_affine(np.eye(4), (64, 64, 10), (256, 256, 10))
    assert a[0, 0] == pytest.approx(0.25)
    # field of view (N * voxel size) is kept
    assert 256 * a[1, 1] == pytest.approx(64.0)
    assert a[2, 2] == pytest.approx(1.0) and a[2, 3] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="shape lengths differ"):
        regrid_affine(np.eye(4), (64, 64), (256, 256, 10))


def test_hr_inplane_matrix_options(oblique_affine):
    assert hr_inplane_matrix((64, 60, 12), oblique_affine, factor=4) == (256, 240)
    assert hr_inplane_matrix((64, 60, 12), oblique_affine, factor=(2, 3)) == (128, 180)
    assert hr_inplane_matrix((64, 60, 12), oblique_affine, matrix=(200, 190)) == (200, 190)
    # voxel size: keep the field of view (64 * 0.9 mm, 60 * 1.1 mm), pick the nearest matrix
    assert hr_inplane_matrix((64, 60, 12), oblique_affine, voxel_size=(0.45, 0.55)) == (128, 120)
    with pytest.raises(ValueError, match="exactly one"):
        hr_inplane_matrix((64, 60, 12), oblique_affine, factor=2, matrix=(1, 2))


def _blob_volume(shape, affine, centre_offset_vox=(5.3, -7.1, 0.4), sigma_vox=(4.0, 3.5, 1.2)) -> Volume:
    """A bright smooth off-centre Gaussian on a zero background (band-limited at the LR sizes used)."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    centre = [n / 2 + o for n, o in zip(shape, centre_offset_vox)]
    blob = np.exp(-sum((g - c) ** 2 / (2 * s**2) for g, c, s in zip(grids, centre, sigma_vox)))
    return Volume(data=(1000.0 * blob).astype(np.float32), affine=affine, qform_code=1, sform_code=2)


@pytest.mark.parametrize("hr_inplane", [(64, 60), (63, 57)])
@pytest.mark.parametrize("keep", [25.0, 10.0])
def test_world_centroid_survives_crop_and_zero_fill(oblique_affine, hr_inplane, keep):
    hr = _blob_volume((*hr_inplane, 6), oblique_affine)
    hr_centroid = hr.world_centroid()

    lr, info = kspace.simulate_volume(hr, keep, mode="center", zero_fill=False)
    assert lr.spatial_shape[:2] == info.lr_inplane
    assert lr.spatial_shape[:2] != hr_inplane and lr.spatial_shape[2] == 6
    np.testing.assert_allclose(lr.affine, coarsen_affine(hr.affine, hr.spatial_shape, lr.spatial_shape))
    lr_voxel = min(lr.zooms)
    tolerance = min(0.05, 0.02 * lr_voxel)
    assert np.linalg.norm(lr.world_centroid() - hr_centroid) < tolerance

    # back to the HR matrix with sinc interpolation and the refined affine
    filled = kspace.zero_fill(lr.data, hr_inplane)
    assert filled.shape == hr.data.shape
    back = Volume(data=filled, affine=refine_affine(lr.affine, lr.spatial_shape, filled.shape))
    np.testing.assert_allclose(back.affine, hr.affine, atol=1e-12)
    assert np.linalg.norm(back.world_centroid() - hr_centroid) < tolerance


def test_fov_centre_convention_would_be_caught(oblique_affine):
    """The centroid test is sensitive: aligning the field-of-view centres ((N-1)/2 <-> (M-1)/2, the
    convention of nibabel's rescale_affine) moves the LR blob by half an HR voxel, far beyond the tolerance."""
    hr = _blob_volume((64, 60, 6), oblique_affine)
    lr, _ = kspace.simulate_volume(hr, 25.0)
    scale = np.array(hr.spatial_shape, float) / np.array(lr.spatial_shape)
    index_map = np.diag([*scale, 1.0])
    index_map[:3, 3] = (np.array(hr.spatial_shape) - 1) / 2 - scale * (np.array(lr.spatial_shape) - 1) / 2
    shifted = Volume(data=lr.data, affine=oblique_affine @ index_map)
    assert np.linalg.norm(shifted.world_centroid() - hr.world_centroid()) > 0.3
    assert np.linalg.norm(lr.world_centroid() - hr.world_centroid()) < 0.02


def test_world_centroid_of_4d_frame(oblique_affine):
    first = _blob_volume((32, 28, 6), oblique_affine, centre_offset_vox=(0.0, 0.0, 0.0), sigma_vox=(2.0, 2.0, 1.0))
    second = _blob_volume((32, 28, 6), oblique_affine, centre_offset_vox=(2.0, 0.0, 0.0), sigma_vox=(2.0, 2.0, 1.0))
    series = first.with_data(np.stack([first.data, second.data], axis=-1), tr=0.5)
    step = series.world_centroid(1) - series.world_centroid(0)
    np.testing.assert_allclose(step, 2 * oblique_affine[:3, 0], atol=1e-3)
