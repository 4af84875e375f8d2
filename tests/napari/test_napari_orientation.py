"""The orientation matrix in the napari faces (a real viewer, Xvfb): reader, Reconstruct widget and maps.

Each orientation of ``dicom_testdata.ORIENTATIONS`` (axial, coronal, sagittal, oblique about 20 degrees,
left-handed) gives an LR dynamic file and a planning scan in another orientation (tests/orientation_testdata.py)
with a marker at one world point. Opened with the mrisr reader and reconstructed by the widget (keyhole,
maps on), the result and map layers cover the dynamic's world box within half an HR voxel, napari places
the marker (its own ``data_to_world``) at its world point in every layer, and the detail the planning scan
added lands there too. The CLI and batch faces are in tests/test_orientation_matrix.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dicom_testdata import ORIENTATIONS  # noqa: E402
from orientation_testdata import (  # noqa: E402
    FRAMES,
    HR_SHAPE,
    TR,
    assert_same_box,
    make_scene,
    planning_detail,
    write_nifti,
)
from test_napari_viewer import dock, wait_for_run  # noqa: E402

pytestmark = pytest.mark.napari


def napari_world_of_max(layer, t: int | None = None) -> np.ndarray:
    """Where napari draws the brightest voxel of a layer (frame ``t`` of a series): RAS mm (x, y, z)."""
    data = np.asarray(layer.data if t is None else layer.data[t])
    index = np.unravel_index(int(np.argmax(data)), data.shape)
    full = index if t is None else (t, *index)
    world = np.asarray(layer.data_to_world(full), dtype=np.float64)
    return world[-3:][::-1]  # napari's (.., z, y, x) -> (x, y, z)


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_reader_widget_and_maps_line_up(make_napari_viewer, qtbot, tmp_path, orientation):
    from mrisr import kspace
    from mrisr.io import coarsen_affine, load
    from mrisr.napari._geometry import layer_to_volume

    scene = make_scene(orientation)
    lr_data = np.stack([kspace.center_crop_lowres(scene.hr[..., t], 25.0) for t in range(FRAMES)], axis=-1)
    lr_affine = coarsen_affine(scene.hr_affine, HR_SHAPE, lr_data.shape[:3])
    lr_path = write_nifti(tmp_path / f"dyn_{orientation}.nii.gz", lr_data, lr_affine, tr=TR)
    planning_path = write_nifti(tmp_path / "planning.nii.gz", scene.planning, scene.planning_affine)

    viewer = make_napari_viewer(show=True)
    lr_layer = viewer.open(str(lr_path), plugin="mrisr")[0]
    planning_layer = viewer.open(str(planning_path), plugin="mrisr")[0]
    # reader: the file's geometry through the layer, and napari draws the marker at its world point
    np.testing.assert_allclose(layer_to_volume(lr_layer).affine, load(lr_path).affine, atol=1e-5)
    np.testing.assert_allclose(layer_to_volume(planning_layer).affine, scene.planning_affine, atol=1e-5)
    lr_voxel, planning_voxel = 2 * scene.hr_voxel_mm, 1.5
    for t in range(FRAMES):
        assert np.linalg.norm(napari_world_of_max(lr_layer, t) - scene.marker) <= lr_voxel
    assert np.linalg.norm(napari_world_of_max(planning_layer) - scene.marker) <= planning_voxel * np.sqrt(3) / 2

    widget = dock(viewer, "Reconstruct")
    assert widget.dynamic.value is lr_layer and widget.prior.value is planning_layer
    widget.method.value = "keyhole"
    widget.device.value = "cpu"
    widget.maps.value = True
    assert wait_for_run(qtbot, widget) == "done"

    result = widget.result_layer
    sr, lr = layer_to_volume(result), layer_to_volume(lr_layer)
    assert sr.data.shape == (*HR_SHAPE, FRAMES)
    np.testing.assert_allclose(sr.affine, scene.hr_affine, atol=1e-4)  # the grid LR was simulated from
    assert_same_box(sr.affine, sr.spatial_shape, lr.affine, lr.spatial_shape, scene.hr_affine)
    half = 0.5 * scene.hr_voxel_mm
    for t in range(FRAMES):
        # napari draws the SR marker where it is in the world; the planning scan's detail lands there too
        assert np.linalg.norm(napari_world_of_max(result, t) - scene.marker) <= half, t
        detail = planning_detail(sr.frame(t), lr.frame(t))
        index = np.unravel_index(int(np.argmax(detail)), detail.shape)
        assert np.linalg.norm((sr.affine @ [*index, 1.0])[:3] - scene.marker) <= half, t
    assert set(widget.map_layers) == {"disagreement", "unmeasured"}
    for layer in widget.map_layers.values():
        volume = layer_to_volume(layer)
        np.testing.assert_allclose(volume.affine, sr.affine, atol=1e-6)
        assert volume.data.shape == sr.data.shape
        corner = (FRAMES - 1, *(n - 1 for n in result.data.shape[1:]))
        np.testing.assert_allclose(layer.data_to_world(corner), result.data_to_world(corner), atol=1e-6)
