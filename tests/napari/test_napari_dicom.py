"""The plugin with scanner data in a real viewer (Xvfb): DICOM series and NIfTI files in every orientation
open without crashing napari, keep their file geometry through the layer, and the Reconstruct widget
guesses roles, shows colour bars with units and keeps its status in step with its progress."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dicom_testdata import ORIENTATIONS, write_classic  # noqa: E402
from test_napari_viewer import RUN_TIMEOUT_MS, add_volume, dock, wait_for_run  # noqa: E402

pytestmark = pytest.mark.napari

DICOM_SCREENSHOT = Path("/tmp/napari_dicom_shot.png")


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_every_orientation_opens_and_round_trips(make_napari_viewer, qtbot, tmp_path, orientation):
    from mrisr.napari._geometry import layer_to_volume

    viewer = make_napari_viewer(show=True)
    rng = np.random.default_rng(0)
    data = (rng.random((12, 10, 5, 3)) + 0.1).astype(np.float32)
    affine = ORIENTATIONS[orientation]
    nifti = tmp_path / f"{orientation}.nii.gz"
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    nib.save(image, nifti)
    folder = write_classic(tmp_path / f"{orientation}_dicom", data, affine, order="TriggerTime", tr=0.5)
    layers = [viewer.open(str(nifti), plugin="mrisr")[0], viewer.open(str(folder), plugin="mrisr")[0]]
    qtbot.wait(50)
    shot = viewer.screenshot(canvas_only=True, flash=False)  # napari draws the permuted grids too
    # (an oblique slab may miss napari's default plane, which is drawn empty: not drawing it is not crashing)
    assert shot.ndim == 3 and (orientation == "oblique" or shot[..., :3].std() > 1)
    from mrisr.io import load

    for layer, path in zip(layers, (nifti, folder)):
        volume, stored = layer_to_volume(layer), load(path)
        # the file's voxel axes (as mrisr reads them), not the ones shown
        np.testing.assert_allclose(volume.affine, stored.affine, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(volume.data), np.asarray(stored.data))
    np.testing.assert_allclose(load(nifti).affine, affine, atol=1e-6)
    # both layers overlay: their world extents are the same
    for layer in layers:
        np.testing.assert_allclose(np.sort(layer.extent.world[:, 1:], axis=0),
                                   np.sort(layers[0].extent.world[:, 1:], axis=0), atol=1e-3)


def test_widget_guesses_roles_and_shows_colour_bars(make_napari_viewer, qtbot, tmp_path, tiny_phantom, tiny_model):
    """File -> Open of a coronal DICOM dynamic, then a planning scan named T1w; maps on; a screenshot."""
    from mrisr.io import load

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 900)
    lr, planning = tiny_phantom.lr, tiny_phantom.planning
    # the phantom turned coronal: voxel axis 1 along world z, axis 2 along world y
    coronal = np.eye(4)[[0, 2, 1, 3]]
    dyn = write_classic(tmp_path / "dyn_cor", np.clip(np.asarray(lr.data), 0, None), coronal @ lr.affine,
                        order="TemporalPositionIdentifier", description="dyn_cor")
    plan = tmp_path / "sub-01_T1w.nii.gz"
    image = nib.Nifti1Image(np.asarray(planning.data, np.float32), coronal @ planning.affine)
    image.header.set_qform(image.affine, code=1)
    image.header.set_sform(image.affine, code=1)
    nib.save(image, plan)
    dynamic_layer = viewer.open(str(dyn), plugin="mrisr")[0]
    planning_layer = viewer.open(str(plan), plugin="mrisr")[0]
    assert dynamic_layer.name == "dyn_cor"  # the folder and its SeriesDescription, named once
    widget = dock(viewer, "Reconstruct")
    assert widget.dynamic.value is dynamic_layer
    assert widget.prior.value is planning_layer
    assert all(choice is not dynamic_layer for choice in widget.prior.choices)  # never its own prior
    widget.model.value = "checkpoint file..."
    widget.model_file.value = tiny_model
    widget.device.value = "cpu"
    widget.maps.value = True
    seen: list[tuple[str, int, bool | None]] = []

    def record(item):
        if isinstance(item, str):
            return  # the order of two slots on one signal is Qt's: judge the state after each frame
        layer = widget.result_layer
        seen.append((widget.status.value, widget.progress.value, None if layer is None else layer.visible))

    widget.worker_created.connect(lambda worker: worker.yielded.connect(record))
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as blocker:
        widget.run_button.native.click()
    assert blocker.args[0] == "done"
    # the status never says less than the bar: after a frame, every status line starts with the count
    for status, progress, visible in seen:
        assert status.startswith(f"frame {progress}/"), (status, progress)
        assert visible  # shown once its frame is filled
    result = widget.result_layer
    assert result.visible and result.data.shape[0] == 3
    # "show each new frame": the slider followed the frames in order and stays on the last
    assert round(float(result.world_to_data(viewer.dims.point)[0])) == 2
    disagreement, unmeasured = widget.map_layers["disagreement"], widget.map_layers["unmeasured"]
    assert "[fraction of local signal]" in disagreement.name and disagreement.colorbar.visible
    assert "[SR intensity, a.u.]" in unmeasured.name and not unmeasured.visible
    unmeasured.visible = True  # the user turns the second map on: its colour bar comes with it
    assert unmeasured.colorbar.visible
    from mrisr.napari._geometry import layer_to_volume

    # the SR layer is on the file's grid of the coronal input, in the file's axis order
    sr = layer_to_volume(result)
    dynamic = load(dyn)
    np.testing.assert_allclose(sr.affine[:3, 2], dynamic.affine[:3, 2], atol=1e-6)
    qtbot.wait(200)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert shot[..., :3].std() > 10
    from imageio.v3 import imwrite

    imwrite(DICOM_SCREENSHOT, shot)


@pytest.mark.parametrize(("stem", "description", "name"), [
    ("dyn_cor", "dyn_cor", "dyn_cor"), ("dyn_cor", "DYN COR", "dyn_cor"), ("IM0001", "dynamic", "IM0001 dynamic"),
    ("planning", "", "planning"), ("cor", "dyn cor", "dyn cor"), ("dyn", None, "dyn")])
def test_dicom_layer_names_say_each_part_once(stem, description, name):
    from mrisr.napari._reader import layer_name

    assert layer_name(stem, description) == name


def test_frames_not_computed_yet_stay_hidden(make_napari_viewer, qtbot, long_tiny_phantom):
    """Moving the slider ahead of a run hides the result and map layers (a blank frame would cover the
    inputs) until that frame is filled; a map the user never turned on stays off."""
    viewer = make_napari_viewer(show=True)
    add_volume(viewer, long_tiny_phantom.planning, "planning", role="planning")
    lr_layer = add_volume(viewer, long_tiny_phantom.lr, "dynamic LR", role="lr")
    widget = dock(viewer, "Reconstruct")
    widget.method.value = "keyhole"
    widget.device.value = "cpu"
    widget.maps.value = True
    widget.follow.value = False
    ahead = 4
    seen: list[tuple[int, bool, bool, bool]] = []

    def record(item):
        if isinstance(item, str):
            return
        result, maps = widget.result_layer, widget.map_layers
        if item.index == 0:
            assert result.visible  # the slider is on frame 0: filled, shown
            viewer.dims.set_point(0, lr_layer.data_to_world((ahead, 0, 0, 0))[0])  # the user jumps ahead
        seen.append((item.index, result.visible, maps["disagreement"].visible, maps["unmeasured"].visible))

    widget.worker_created.connect(lambda worker: worker.yielded.connect(record))
    assert wait_for_run(qtbot, widget) == "done"
    assert [index for index, *_ in seen] == list(range(6))
    for index, result_visible, disagreement_visible, unmeasured_visible in seen:
        assert result_visible == disagreement_visible == (index >= ahead), index
        assert not unmeasured_visible
    # the user hides the result: moving the slider does not bring it back
    widget.result_layer.visible = False
    viewer.dims.set_point(0, lr_layer.data_to_world((1, 0, 0, 0))[0])
    assert not widget.result_layer.visible and widget.map_layers["disagreement"].visible
