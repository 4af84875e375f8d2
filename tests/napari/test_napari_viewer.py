"""The plugin in a real napari viewer (Xvfb): reader, writer, sample data and the widgets,
all reached through the npe2 manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mrisr.io import load

pytestmark = pytest.mark.napari

SCREENSHOT = Path("/tmp/napari_shot.png")
RUN_TIMEOUT_MS = 60_000


def dock(viewer, name: str):
    _, widget = viewer.window.add_plugin_dock_widget("mrisr", name)
    return widget


def add_volume(viewer, volume, name: str, role: str | None = None):
    from mrisr.napari._geometry import volume_to_layer_data

    data, kwargs, _ = volume_to_layer_data(volume, name, role=role)
    return viewer.add_image(data, **kwargs)


def wait_for_run(qtbot, widget) -> str:
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as blocker:
        widget.run_button.native.click()
    return blocker.args[0]


def test_reader_opens_a_4d_file_in_world_space(make_napari_viewer, nifti_4d, nifti_3d):
    viewer = make_napari_viewer(show=True)
    [series] = viewer.open(str(nifti_4d), plugin="mrisr")
    [static] = viewer.open(str(nifti_3d), plugin="mrisr")
    reference = load(nifti_4d)
    assert series.ndim == 4 and series.data.shape == (3, 12, 28, 32)
    np.testing.assert_allclose(series.extent.step, [0.45, *reference.zooms[::-1]], rtol=1e-5)
    ijk = np.array([10, 20, 5])
    world = series.data_to_world((2, *ijk[::-1]))
    assert world[0] == pytest.approx(2 * 0.45, rel=1e-5)
    np.testing.assert_allclose(world[1:], (reference.affine @ [*ijk, 1])[:3][::-1], atol=1e-4)
    # the 3-D scan of the same grid lands on the same world point
    np.testing.assert_allclose(static.data_to_world(ijk[::-1]), world[1:], atol=1e-4)
    assert viewer.dims.ndim == 4
    # opened on the acquired plane: y down the screen, x across, slices and frames on sliders
    assert viewer.dims.displayed == (2, 3) and viewer.dims.axis_labels[2:] == ("y", "x")
    assert np.asarray(viewer.layers[0]._slice.image.view).shape == (28, 32)


def test_unreadable_file_shows_an_error_and_adds_nothing(make_napari_viewer, tmp_path):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer(show=True)
    broken = tmp_path / "truncated.nii.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    before = len(notification_manager.records)
    viewer.open(str(broken), plugin="mrisr")
    assert len(viewer.layers) == 0
    assert any("truncated.nii.gz" in str(n.message) for n in notification_manager.records[before:])


def test_writer_saves_a_layer_through_napari(make_napari_viewer, nifti_4d, tmp_path):
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(str(nifti_4d), plugin="mrisr")
    out = tmp_path / "saved.nii.gz"
    written = viewer.layers.save(str(out), selected=False, plugin="mrisr")
    assert written == [str(out)]
    saved, original = load(out), load(nifti_4d)
    np.testing.assert_allclose(saved.affine, original.affine, atol=1e-5)
    assert saved.tr == pytest.approx(0.45, rel=1e-5)
    np.testing.assert_allclose(saved.data, original.data, rtol=1e-6)


def test_simulate_widget_adds_lr_on_its_coarser_grid_and_the_mask(make_napari_viewer, tiny_phantom):
    viewer = make_napari_viewer(show=True)
    truth = add_volume(viewer, tiny_phantom.hr, "ground truth", role="ground_truth")
    widget = dock(viewer, "Simulate undersampling")
    assert widget.image.value is truth
    widget.keep.value = 25.0
    lr_layer, mask_layer = widget.run()
    assert lr_layer.data.shape == (3, 8, 16, 16)
    assert mask_layer.data.shape == (32, 32) and mask_layer.data.sum() == 16 * 16
    # LR voxel N//2 and HR voxel M//2 are the same world point (centred k-space crop)
    np.testing.assert_allclose(lr_layer.data_to_world((0, 4, 8, 8)), truth.data_to_world((0, 4, 16, 16)), atol=1e-6)
    assert "25" in widget.status.value


def test_reconstruct_widget_end_to_end(make_napari_viewer, qtbot, tiny_phantom, tiny_model):
    viewer = make_napari_viewer(show=True)
    add_volume(viewer, tiny_phantom.planning, "planning", role="planning")
    lr = add_volume(viewer, tiny_phantom.lr, "dynamic LR", role="lr")
    truth = add_volume(viewer, tiny_phantom.hr, "ground truth", role="ground_truth")
    widget = dock(viewer, "Reconstruct")
    assert widget.dynamic.value is lr and widget.prior.value.name == "planning"
    widget.model.value = "checkpoint file..."
    widget.model_file.value = tiny_model
    widget.device.value = "cpu"
    assert widget.precision.value == "auto" and widget.precision.enabled
    widget.precision.value = "fp32"
    assert widget.options().precision == "fp32"
    assert widget.sparse_changes.value and widget.sparse_changes.enabled
    widget.sparse_changes.value = False
    assert widget.options().sparse_changes is False
    assert not widget.line_changes.value and widget.line_changes.enabled
    widget.line_changes.value = True
    assert widget.options().line_changes is True
    widget.line_changes.value = False
    assert widget.match_contrast.value and widget.match_contrast.enabled
    widget.match_contrast.value = False
    assert widget.options().match_contrast is False
    frames_seen = []
    widget.worker_created.connect(lambda worker: worker.yielded.connect(
        lambda item: frames_seen.append(None if isinstance(item, str) else item.index)))
    assert wait_for_run(qtbot, widget) == "done"
    result = widget.result_layer
    assert result.name == "dynamic LR SR"
    assert result.data.shape == truth.data.shape == (3, 8, 32, 32)
    np.testing.assert_allclose(result.affine.affine_matrix, truth.affine.affine_matrix, atol=1e-9)
    np.testing.assert_allclose(result.data_to_world((2, 3, 4, 5)), truth.data_to_world((2, 3, 4, 5)), atol=1e-9)
    assert [i for i in frames_seen if i is not None] == [0, 1, 2]
    assert all(result.data[t].std() > 0 for t in range(3))
    from mrisr.reconstruct import ReconstructOptions, reconstruct_volume

    # the widget's precision reaches the library: the same numbers as an fp32 library call
    expected = reconstruct_volume(tiny_phantom.lr, tiny_phantom.planning,
                                  ReconstructOptions(model=str(tiny_model), device="cpu", precision="fp32",
                                                     sparse_changes=False, match_contrast=False))
    np.testing.assert_allclose(result.data, expected.data.transpose(3, 2, 1, 0), rtol=1e-5, atol=1e-5)
    assert widget.progress.value == 3 and widget.run_button.enabled and not widget.cancel_button.enabled
    qtbot.wait(100)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot[..., :3].std() > 5


def test_cancel_stops_after_the_current_frame_and_the_widget_stays_usable(
        make_napari_viewer, qtbot, long_tiny_phantom, tiny_model):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    add_volume(viewer, long_tiny_phantom.planning, "planning", role="planning")
    add_volume(viewer, long_tiny_phantom.lr, "dynamic LR", role="lr")
    widget = dock(viewer, "Reconstruct")
    widget.model.value = "checkpoint file..."
    widget.model_file.value = tiny_model
    widget.device.value = "cpu"

    def cancel_on_first_frame(worker):
        # runs in the worker thread right after frame 0 is yielded, before frame 1 starts
        def on_item(item):
            if not isinstance(item, str):
                widget.request_cancel()
        worker.yielded.connect(on_item, Qt.ConnectionType.DirectConnection)

    widget.worker_created.connect(cancel_on_first_frame)
    assert wait_for_run(qtbot, widget) == "cancelled"
    assert widget.result_layer.name == "dynamic LR SR (partial 1/6)"
    assert widget.result_layer.data[0].std() > 0 and not widget.result_layer.data[1:].any()
    assert "cancelled after 1/6" in widget.status.value
    assert widget.run_button.enabled and not widget.running
    widget.worker_created.disconnect(cancel_on_first_frame)
    assert wait_for_run(qtbot, widget) == "done"
    assert widget.result_layer.data.shape[0] == 6 and widget.result_layer.data[5].any()


def test_reconstruct_widget_keyhole_with_maps(make_napari_viewer, qtbot, tiny_phantom):
    from mrisr.reconstruct import ReconstructOptions, reconstruct_volume

    viewer = make_napari_viewer(show=True)
    add_volume(viewer, tiny_phantom.planning, "planning", role="planning")
    add_volume(viewer, tiny_phantom.lr, "dynamic LR", role="lr")
    widget = dock(viewer, "Reconstruct")
    widget.method.value = "keyhole-registered"
    assert not widget.model.enabled and not widget.finetune.enabled  # no model to choose or tune
    assert not widget.precision.enabled  # no network to run in another precision
    assert not widget.sparse_changes.enabled  # no gate to correct the prior for
    assert not widget.line_changes.enabled
    assert not widget.match_contrast.enabled  # the classical baseline stays classical
    widget.maps.value = True
    widget.device.value = "cpu"
    assert wait_for_run(qtbot, widget) == "done"
    result = widget.result_layer
    assert set(widget.map_layers) == {"disagreement", "unmeasured"}
    expected = reconstruct_volume(tiny_phantom.lr, tiny_phantom.planning, ReconstructOptions(method="keyhole-registered"))
    np.testing.assert_allclose(result.data, expected.data.transpose(3, 2, 1, 0), rtol=1e-5, atol=1e-3)
    for name, layer in widget.map_layers.items():
        # on the result's grid, filled frame by frame, drawn over the anatomy
        assert layer.data.shape == result.data.shape, name
        np.testing.assert_allclose(layer.affine.affine_matrix, result.affine.affine_matrix, atol=1e-9)
        assert all(layer.data[t].max() > 0 for t in range(3)), name
        assert layer.blending == "additive"
    assert viewer.layers.index(widget.map_layers["disagreement"]) > viewer.layers.index(result)


def test_reconstruct_errors_are_notifications(make_napari_viewer, qtbot, tiny_phantom, tmp_path):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer(show=True)
    add_volume(viewer, tiny_phantom.lr, "dynamic LR", role="lr")
    widget = dock(viewer, "Reconstruct")
    fake = tmp_path / "fake.safetensors"
    fake.write_text("not a checkpoint")
    widget.model.value = "checkpoint file..."
    widget.model_file.value = fake
    before = len(notification_manager.records)
    assert wait_for_run(qtbot, widget) == "error"
    assert any("fake.safetensors" in str(n.message) or "failed" in str(n.message)
               for n in notification_manager.records[before:])
    assert widget.run_button.enabled and widget.result_layer is None
    # a missing file is caught before any thread starts
    widget.model_file.value = tmp_path / "missing.safetensors"
    widget.run_button.native.click()
    assert not widget.running
    assert "missing.safetensors" in str(notification_manager.records[-1].message)


def test_sample_reconstruct_compare_screenshot(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1700, 1000)
    layers = viewer.open_sample("mrisr", "dynamic_phantom")
    assert [layer.ndim for layer in layers] == [3, 4, 4]
    planning, lr, truth = layers
    assert lr.data.shape == (8, 32, 36, 32) and truth.data.shape == (8, 32, 144, 128)
    np.testing.assert_allclose(lr.data_to_world((0, 0, 18, 16)), truth.data_to_world((0, 0, 72, 64)), atol=1e-6)
    widget = dock(viewer, "Reconstruct")
    widget.model.value = "checkpoint file..."
    widget.model_file.value = tiny_model
    widget.device.value = "cpu"
    assert wait_for_run(qtbot, widget) == "done"
    assert widget.result_layer.data.shape == truth.data.shape
    compare = dock(viewer, "Compare")
    assert (compare.sr.value, compare.truth.value, compare.lr.value) == (widget.result_layer, truth, lr), (compare.truth.value, compare.lr.value)
    with qtbot.waitSignal(compare.metrics_ready, timeout=RUN_TIMEOUT_MS):
        shown = compare.run()
    assert [layer.name for layer in shown][2:4] == [widget.result_layer.name, "ground truth"]
    assert viewer.canvas.grid.enabled and set(compare.metrics) == {"SR", "sinc"}
    # tiles read LR, sinc, SR, ground truth, error (row by row)
    positions = [viewer.canvas.grid.position(viewer.layers.index(layer), viewer.layers) for layer in shown]
    assert positions == sorted(positions)
    assert all(len(v) == 8 for v in compare.metrics.values())
    error = shown[-1]
    np.testing.assert_allclose(error.data, np.abs(widget.result_layer.data - truth.data), atol=1e-5)
    viewer.dims.set_point(viewer.dims.ndim - 3, truth.data_to_world((0, 16, 0, 0))[1])
    qtbot.wait(200)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert shot[..., :3].std() > 10
    from imageio.v3 import imwrite

    imwrite(SCREENSHOT, shot)


def test_viewer_runs_on_qt6(make_napari_viewer):
    import qtpy

    viewer = make_napari_viewer(show=True)
    assert qtpy.QT6 and qtpy.API_NAME in ("PyQt6", "PySide6")
    assert viewer.window._qt_window.isVisible()
