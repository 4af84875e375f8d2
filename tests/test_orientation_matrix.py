"""Every orientation in every face: axial, coronal, sagittal, oblique (about 20 degrees) and left-handed
dynamics, each with a planning scan in another orientation, through ``mrisr simulate``, ``mrisr reconstruct``
(keyhole and the network, with maps) and ``mrisr batch``. World extents line up (the output's world box is
the input's within half an HR voxel) and a marker placed at one world point in the dynamic and in the
planning scan comes out at that world point. The napari faces are in tests/napari/test_napari_orientation.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dicom_testdata import ORIENTATIONS
from orientation_testdata import FRAMES, HR_SHAPE, Scene, argmax_world, make_scene, planning_detail
from orientation_testdata import assert_same_box as same_box
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.io import coarsen_affine, load

runner = CliRunner()


def invoke(*args) -> None:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from mrisr.models import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", prior=True, seed=0)


@pytest.fixture(scope="module", params=sorted(ORIENTATIONS))
def simulated(request, tmp_path_factory) -> tuple[Scene, dict[str, Path]]:
    """The scene of one orientation on disk, and its LR series from ``mrisr simulate`` (25 % k-space)."""
    scene = make_scene(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    paths = scene.save(folder)
    paths["lr"] = folder / "lr.nii.gz"
    invoke("simulate", paths["hr"], "-o", paths["lr"], "--keep", 25)
    return scene, paths


def assert_same_box(output, reference, scene: Scene) -> None:
    """World boxes equal within half an HR voxel."""
    same_box(output.affine, output.spatial_shape, reference.affine, reference.spatial_shape, scene.hr_affine)


def assert_marker_at(data: np.ndarray, affine: np.ndarray, scene: Scene, tolerance_mm: float) -> None:
    """The brightest voxel of every frame is at the marker's world point."""
    frames = data if data.ndim == 4 else data[..., None]
    for t in range(frames.shape[3]):
        found = argmax_world(frames[..., t], affine)
        assert np.linalg.norm(found - scene.marker) <= tolerance_mm, (t, found, scene.marker)


def assert_planning_marker_at(sr, lr, scene: Scene) -> None:
    """The SR frames' brightest voxel, and the brightest detail the planning scan added (resampled from its
    own orientation), are at the marker's world point (an HR voxel centre: exactly)."""
    assert_marker_at(np.asarray(sr.data), sr.affine, scene, tolerance_mm=0.5 * scene.hr_voxel_mm)
    detail = np.stack([planning_detail(sr.frame(t), lr.frame(t)) for t in range(sr.n_frames)], axis=-1)
    assert_marker_at(detail, sr.affine, scene, tolerance_mm=0.5 * scene.hr_voxel_mm)


def test_simulate(simulated):
    scene, paths = simulated
    lr, hr = load(paths["lr"]), load(paths["hr"])
    assert lr.data.shape == (HR_SHAPE[0] // 2, HR_SHAPE[1] // 2, HR_SHAPE[2], FRAMES)
    np.testing.assert_allclose(lr.affine, coarsen_affine(hr.affine, HR_SHAPE, lr.spatial_shape), atol=1e-5)
    # the voxel axes keep their world directions (a coronal file stays coronal, a left-handed one left-handed)
    np.testing.assert_allclose(lr.affine[:3, :3] / np.linalg.norm(lr.affine[:3, :3], axis=0),
                               hr.affine[:3, :3] / np.linalg.norm(hr.affine[:3, :3], axis=0), atol=1e-6)
    assert np.sign(np.linalg.det(lr.affine[:3, :3])) == np.sign(np.linalg.det(scene.hr_affine[:3, :3]))
    assert_same_box(lr, hr, scene)
    lr_voxel = 2 * scene.hr_voxel_mm
    assert_marker_at(np.asarray(lr.data), lr.affine, scene, tolerance_mm=lr_voxel)


@pytest.mark.parametrize("method", ["keyhole", "network"])
def test_reconstruct(simulated, tiny_model, tmp_path, method):
    """The planning scan (another orientation) lands on the SR grid at the right world positions."""
    scene, paths = simulated
    out = tmp_path / "sr.nii.gz"
    model = ("--model", tiny_model, "--device", "cpu") if method == "network" else ()
    invoke("reconstruct", paths["lr"], "--prior", paths["planning"], "--method", method, *model, "--maps",
           "-o", out, "-q")
    sr, lr = load(out), load(paths["lr"])
    # the HR grid is the one the LR series was simulated from, in the dynamic's orientation
    assert sr.data.shape == (*HR_SHAPE, FRAMES)
    np.testing.assert_allclose(sr.affine, scene.hr_affine, atol=1e-4)
    assert_same_box(sr, lr, scene)
    assert out.with_name("sr.json").is_file()
    maps = sorted(tmp_path.glob("sr_*.nii.gz"))
    assert len(maps) == 2, [p.name for p in tmp_path.iterdir()]
    for path in maps:
        np.testing.assert_allclose(load(path).affine, sr.affine, atol=1e-6)
        assert load(path).data.shape == sr.data.shape
    if method == "keyhole":  # the untrained network's output has no marker to find
        assert_planning_marker_at(sr, lr, scene)


def test_batch(simulated, tmp_path):
    """A one-subject manifest, keyhole with maps: the SR series on the ground truth's grid, marker in place."""
    scene, paths = simulated
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(f"subject,dynamic,planning,ground_truth\n01,{paths['lr']},{paths['planning']},{paths['hr']}\n")
    config = tmp_path / "batch.yaml"
    config.write_text("reconstruct:\n  method: keyhole\n  maps: true\n")
    out = tmp_path / "derivatives"
    invoke("batch", manifest, out, "--config", config, "--device", "cpu", "-q")
    func = out / "sub-01" / "func"
    sr = load(func / "sub-01_desc-sr_bold.nii.gz")
    truth = load(paths["hr"])
    np.testing.assert_allclose(sr.affine, truth.affine, atol=1e-4)
    assert sr.data.shape == truth.data.shape
    assert_same_box(sr, load(paths["lr"]), scene)
    for name in ("disagreement", "unmeasured"):
        assert load(func / f"sub-01_desc-{name}_bold.nii.gz").data.shape == sr.data.shape
    assert_planning_marker_at(sr, load(paths["lr"]), scene)
