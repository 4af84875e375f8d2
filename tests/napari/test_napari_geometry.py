"""Plugin logic without a viewer: layer <-> Volume geometry, reader and writer functions,
the reconstruction generator and the comparison helpers, on real NIfTI files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from napari.layers import Image

from mrisr.io import MrisrInputError, Volume, load
from mrisr.napari._compare import on_grid, sinc_on_grid, ssim_per_frame
from mrisr.napari._geometry import array_to_volume, layer_to_volume, volume_to_layer_data
from mrisr.napari._reader import get_reader, read_layer_data, read_nifti
from mrisr.napari._reconstruct import reconstruction_steps
from mrisr.napari._writer import write_image


def make_layer(volume: Volume, name: str = "layer", role: str | None = None) -> Image:
    data, kwargs, _ = volume_to_layer_data(volume, name, role=role)
    return Image(data, **kwargs)


def test_series_layer_has_time_first_and_world_geometry(tiny_series):
    layer = make_layer(tiny_series)
    # napari's order: time, then slice, row (y), column (x); the acquired plane is the shown one
    assert layer.data.shape == (3, 12, 28, 32)
    assert layer.axis_labels == ("t", "z", "y", "x")
    assert np.shares_memory(layer.data, tiny_series.data)
    ijk = np.array([5.0, 7.0, 3.0])
    np.testing.assert_array_equal(layer.data[2, 3, 7, 5], tiny_series.data[5, 7, 3, 2])
    world = layer.data_to_world((2, *ijk[::-1]))
    assert world[0] == pytest.approx(2 * tiny_series.tr)
    np.testing.assert_allclose(world[1:], (tiny_series.affine @ [*ijk, 1.0])[:3][::-1], atol=1e-9)


def test_layer_to_volume_round_trip_is_exact(tiny_series, tiny_volume):
    for volume in (tiny_series, tiny_volume):
        back = layer_to_volume(make_layer(volume))
        np.testing.assert_array_equal(back.data, volume.data)
        np.testing.assert_allclose(back.affine, volume.affine, atol=1e-12)
        assert back.tr == volume.tr
        assert (back.qform_code, back.sform_code) == (volume.qform_code, volume.sform_code)


def test_moving_a_layer_moves_its_geometry(tiny_volume):
    layer = make_layer(tiny_volume)
    layer.translate = (10.0, -5.0, 2.0)
    back = layer_to_volume(layer)
    # the volume lies where napari shows the moved layer, not where the file put it
    for ijk in ([0, 0, 0], [5, 7, 3], [31, 27, 11]):
        np.testing.assert_allclose((back.affine @ [*ijk, 1])[:3][::-1], layer.data_to_world(ijk[::-1]), atol=1e-9)
    assert not np.allclose(back.affine, tiny_volume.affine)
    np.testing.assert_allclose(back.affine[:3, :3], tiny_volume.affine[:3, :3])


def test_series_without_tr_stays_without_tr(tiny_series):
    volume = tiny_series.with_data(tiny_series.data, tr=None)
    volume.tr = None
    assert layer_to_volume(make_layer(volume)).tr is None


def test_non_volume_layers_are_rejected_with_the_layer_name():
    with pytest.raises(MrisrInputError, match="'slice'.*2-D"):
        layer_to_volume(Image(np.zeros((8, 8)), name="slice"))
    rotated = Image(np.zeros((3, 4, 4, 4)), name="mixed", rotate=np.array(
        [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float))
    with pytest.raises(MrisrInputError, match="mixes time with space"):
        layer_to_volume(rotated)


def test_reader_claims_only_nifti(nifti_4d, tmp_path):
    assert get_reader(str(nifti_4d)) is read_nifti
    assert get_reader(str(tmp_path / "picture.png")) is None
    assert get_reader([str(nifti_4d), str(tmp_path / "notes.txt")]) is None


def test_reader_layer_matches_the_file(nifti_4d):
    data, kwargs, kind = read_layer_data(nifti_4d)
    img = nib.load(str(nifti_4d))
    assert kind == "image"
    assert data.shape == (img.shape[3], *img.shape[:3][::-1])
    reverse = np.eye(4)[[2, 1, 0, 3]]
    np.testing.assert_allclose(kwargs["affine"][1:, 1:], reverse @ img.affine @ reverse, atol=1e-5)
    np.testing.assert_allclose(kwargs["metadata"]["mrisr"]["affine"], img.affine, atol=1e-5)
    assert kwargs["affine"][0, 0] == pytest.approx(0.45)
    assert kwargs["metadata"]["mrisr"]["source"] == str(nifti_4d)
    assert kwargs["name"] == "hr4d"


def test_unreadable_file_gives_a_notification_not_an_exception(tmp_path):
    from napari.utils.notifications import notification_manager

    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti at all")
    before = len(notification_manager.records)
    assert read_nifti(str(broken)) == [(None,)]
    messages = [str(n.message) for n in notification_manager.records[before:]]
    assert any("broken.nii.gz" in m and "NIfTI" in m for m in messages), messages


def test_writer_round_trip_keeps_geometry_tr_and_codes(nifti_4d, tmp_path):
    data, kwargs, _ = read_layer_data(nifti_4d)
    layer = Image(data, **kwargs)
    out = tmp_path / "written.nii.gz"
    layer_data, state, _ = layer.as_layer_data_tuple()
    assert write_image(str(out), layer_data, state) == [str(out)]
    original, written = load(nifti_4d), load(out)
    np.testing.assert_array_equal(written.data, original.data)
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-5)
    assert written.tr == pytest.approx(0.45)
    header = nib.load(str(out)).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 2)
    assert header.get_xyzt_units() == ("mm", "sec")
    # and back through the reader: same world position of a voxel
    again_data, again_kwargs, _ = read_layer_data(out)
    again = Image(again_data, **again_kwargs)
    np.testing.assert_allclose(again.data_to_world((1, 4, 5, 6)), layer.data_to_world((1, 4, 5, 6)), atol=1e-4)


def test_writer_refuses_other_formats(tiny_volume, tmp_path):
    data, kwargs, _ = volume_to_layer_data(tiny_volume, "v")
    with pytest.raises(MrisrInputError, match=r"\.nii\.gz"):
        write_image(str(tmp_path / "v.tif"), data, kwargs)


def test_reconstruction_steps_stream_frames_on_the_hr_grid(tiny_phantom, tiny_model):
    from mrisr.reconstruct import ReconstructOptions

    items = list(reconstruction_steps(tiny_phantom.lr, tiny_phantom.planning,
                                      ReconstructOptions(model=str(tiny_model), device="cpu"), cancel=lambda: False))
    assert isinstance(items[0], str)
    frames = [item for item in items if not isinstance(item, str)]
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[0].sr.shape == tiny_phantom.hr.spatial_shape
    np.testing.assert_allclose(frames[0].hr_affine, tiny_phantom.hr.affine, atol=1e-9)


def test_reconstruction_steps_stop_when_cancelled(tiny_phantom, tiny_model):
    from mrisr.reconstruct import ReconstructOptions

    calls = []

    def cancel_after_first_frame() -> bool:
        calls.append(1)
        return len(calls) > 1

    items = list(reconstruction_steps(tiny_phantom.lr, tiny_phantom.planning,
                                      ReconstructOptions(model=str(tiny_model), device="cpu"),
                                      cancel=cancel_after_first_frame))
    assert [item.index for item in items if not isinstance(item, str)] == [0]


def test_sinc_and_metrics_helpers(tiny_phantom):
    sinc = sinc_on_grid(tiny_phantom.lr, tiny_phantom.hr)
    assert sinc.data.shape == tiny_phantom.hr.data.shape
    np.testing.assert_allclose(sinc.affine, tiny_phantom.hr.affine, atol=1e-9)
    truth = on_grid(tiny_phantom.hr, tiny_phantom.hr)
    scores = ssim_per_frame({"sinc": sinc.data, "truth": truth}, truth)
    assert scores["truth"] == [1.0, 1.0, 1.0]
    assert all(0.2 < s < 0.99 for s in scores["sinc"])
    with pytest.raises(MrisrInputError, match="cannot be zero-filled"):
        sinc_on_grid(tiny_phantom.hr, tiny_phantom.lr)


def test_array_to_volume_from_writer_state_of_a_plain_array():
    # a layer made outside mrisr: data axes (X, Y, Z), unit geometry
    volume = array_to_volume(np.ones((4, 5, 6), dtype=bool), {"name": "mask"})
    assert volume.spatial_shape == (6, 5, 4)
    np.testing.assert_allclose(volume.affine, np.eye(4))


@pytest.mark.slow
def test_cancel_also_stops_fine_tuning(tiny_phantom, tiny_model):
    from mrisr.reconstruct import ReconstructOptions

    options = ReconstructOptions(model=str(tiny_model), device="cpu", finetune=True, finetune_minutes=5.0)
    items = list(reconstruction_steps(tiny_phantom.lr, tiny_phantom.planning, options, cancel=lambda: True))
    assert all(isinstance(item, str) for item in items)
    assert items[-1].startswith("fine-tuning")
    with pytest.raises(MrisrInputError, match="planning scan"):
        list(reconstruction_steps(tiny_phantom.lr, None, options, cancel=lambda: False))
