"""Phantoms where the prior is wrong: a needle in the frames, a needle in the planning scan only, a swapped
planning contrast, through-plane motion; the known tracking displacement; the files and the CLI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.data import load_sample
from mrisr.deform import warp
from mrisr.inserts import INSERTS, PLANNING_CONTRASTS, NeedlePath, needle_occupancy, swap_contrast
from mrisr.io import MrisrInputError, Volume, load
from mrisr.metrics import object_mask, structure_contrast
from mrisr.phantom import make_dynamic

runner = CliRunner()

CROP = (slice(40, 88), slice(52, 92), slice(12, 20))  # 48 x 40 x 8 of the real sample
ZOOMS = (1.5, 1.5, 3.0)
FRAMES = 4
SEED = 3


@pytest.fixture(scope="module")
def sample_crop() -> Volume:
    """A small crop of the bundled sample on an oblique grid."""
    from mrisr_testdata import oblique

    data = np.ascontiguousarray(load_sample().data[CROP])
    return Volume(data=data, affine=oblique(zooms=ZOOMS), qform_code=1, sform_code=2)


@pytest.fixture(scope="module")
def plain(sample_crop):
    return make_dynamic(sample_crop, frames=FRAMES, seed=SEED)


@pytest.fixture(scope="module")
def needle(sample_crop):
    return make_dynamic(sample_crop, frames=FRAMES, seed=SEED, insert="needle")


@pytest.fixture(scope="module")
def planning_needle(sample_crop):
    return make_dynamic(sample_crop, frames=FRAMES, seed=SEED, planning_insert="needle")


def _near(mask: np.ndarray, steps: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, ndimage.generate_binary_structure(3, 1), iterations=steps)


# --------------------------------------------------------------------------- the needle in the frames


def test_needle_masks_shape_and_dtype(sample_crop, needle, plain):
    shape = (*sample_crop.spatial_shape, FRAMES)
    assert needle.insert_mask.shape == shape and needle.insert_mask.dtype == bool
    assert needle.planning_insert_mask is None and needle.planning_insert_contrast is None
    assert plain.insert_mask is None and plain.planning_insert_mask is None
    settings = needle.settings["insert"]
    assert settings["kind"] == "needle" and settings["diameter_mm"] == 2.5
    assert settings["direction"][2] == 0.0  # in-plane
    assert needle.settings["planning_insert"] is None and needle.settings["planning_contrast"] == "same"


def test_needle_advances_every_frame(needle):
    sizes = [int(needle.insert_mask[..., t].sum()) for t in range(FRAMES)]
    assert sizes[0] > 0
    assert all(later > earlier for earlier, later in zip(sizes, sizes[1:])), sizes
    # the tip goes deeper along the insertion direction
    direction = np.asarray(needle.settings["insert"]["direction"])
    depth = [float(((np.argwhere(needle.insert_mask[..., t]) * ZOOMS) @ direction).max()) for t in range(FRAMES)]
    assert all(later > earlier for earlier, later in zip(depth, depth[1:])), depth


def test_needle_is_a_void_in_the_frames_and_absent_from_the_planning_scan(needle, plain):
    for t in range(FRAMES):
        core = needle.insert_mask[..., t]
        frame = needle.hr.data[..., t]
        # intensity inside the core far below the ring around it
        assert structure_contrast(frame, core) > 0.5, t
        assert frame[core].mean() < 0.5 * frame[~_near(core, 2) & _near(core, 4)].mean()
        # the same site in the phantom without the needle shows no such void
        assert structure_contrast(plain.hr.data[..., t], core) < 0.3, t
        # and neither does the planning scan (must fail: copying the planning scan hides the needle)
        assert structure_contrast(needle.planning.data, core) < 0.3, t
    # the planning scan is not touched at all
    np.testing.assert_array_equal(needle.planning.data, plain.planning.data)


def test_needle_changes_the_frames_only_near_it(needle, plain):
    near = np.zeros(needle.hr.data.shape, dtype=bool)
    for t in range(FRAMES):
        near[..., t] = _near(needle.insert_mask[..., t], 4)
    scale = float(plain.hr.data.max())
    assert np.abs(needle.hr.data - plain.hr.data)[~near].max() < 1e-2 * scale
    assert np.abs(needle.hr.data - plain.hr.data)[near].max() > 0.2 * scale
    # the LR series sees it too
    assert not np.array_equal(needle.lr.data, plain.lr.data)


def test_needle_occupancy_is_a_partial_volume_fraction():
    shape, zooms = (24, 24, 6), (1.0, 1.0, 3.0)
    path = NeedlePath(entry_mm=(4.0, 12.0, 9.0), direction=(1.0, 0.0, 0.0), max_depth_mm=12.0)
    occupancy = needle_occupancy(shape, zooms, path, depth_mm=8.0)
    assert occupancy.shape == shape and occupancy.dtype == np.float32
    assert occupancy.min() >= 0.0 and occupancy.max() <= 1.0
    # a 2.5 mm needle in a 3 mm slice fills at most 5/6 of a voxel through-plane
    assert occupancy[8, 12, 3] == pytest.approx(2.5 / 3.0, abs=0.1)
    assert not occupancy[..., [0, 1, 5]].any()  # slices far from the needle
    # it reaches from outside the entry (x < 4) to 8 mm beyond it, no further
    assert occupancy[1, 12, 3] > 0.5 and occupancy[11, 12, 3] > 0.5 and occupancy[14, 12, 3] == 0.0
    deeper = needle_occupancy(shape, zooms, path, depth_mm=11.0)
    assert deeper.sum() > occupancy.sum() and (deeper >= occupancy - 1e-6).all()
    assert not needle_occupancy(shape, zooms, path, depth_mm=0.0).any()


# --------------------------------------------------------------------------- the needle in the planning scan only


def test_planning_only_needle_is_in_the_planning_scan_and_not_in_the_frames(sample_crop, planning_needle, plain):
    mask = planning_needle.planning_insert_mask
    assert mask.shape == (*sample_crop.spatial_shape, FRAMES) and mask.dtype == bool
    assert planning_needle.insert_mask is None
    assert planning_needle.settings["planning_insert"]["kind"] == "needle"
    assert planning_needle.planning_insert_contrast > 0.5
    # the frames and the LR series are those of the phantom without it
    np.testing.assert_array_equal(planning_needle.hr.data, plain.hr.data)
    np.testing.assert_array_equal(planning_needle.lr.data, plain.lr.data)
    for t in range(FRAMES):
        site = mask[..., t]
        assert site.any(), t
        assert abs(structure_contrast(planning_needle.hr.data[..., t], site)) < 0.15, t
    # the planning scan differs from the plain one only by a darker needle
    diff = planning_needle.planning.data - plain.planning.data
    scale = float(plain.planning.data.max())
    assert diff.min() < -0.3 * scale
    assert diff.max() < 0.15 * scale  # (cubic-spline overshoot only)


def test_planning_needle_warped_to_a_frame_leaks_like_the_planning_scan(planning_needle):
    """An output that copies the planning scan (registered to the frame) must show full leakage."""
    from mrisr.metrics import leakage

    reference = planning_needle.planning_insert_contrast
    for t in range(FRAMES):
        site = planning_needle.planning_insert_mask[..., t]
        copied = warp(planning_needle.planning.data, planning_needle.tracking_displacement(t), order=3)
        assert leakage(copied, site, reference) > 0.7, t
        assert abs(leakage(planning_needle.hr.data[..., t], site, reference)) < 0.2, t


# --------------------------------------------------------------------------- swapped contrast


def test_swap_contrast_maps_the_knots_and_is_not_monotone():
    values = np.array([0, 5, 10, 20, 35, 50, 65, 150, 300] + [100] * 491, dtype=np.float32)
    assert np.percentile(values, 99) == 100.0
    swapped = swap_contrast(values)
    assert swapped.dtype == np.float32 and swapped.shape == values.shape
    expected = [0, 5, 10, 46, 100, 85, 70, 30, 30, 35]
    np.testing.assert_allclose(swapped[:10], expected, atol=1e-4)
    # air and noise stay dark; the darkest tissue becomes the brightest; the brightest becomes dark
    assert swapped[0] == 0.0 and swapped[1] == pytest.approx(5.0)
    assert swapped.max() == pytest.approx(100.0) and values[np.argmax(swapped)] == 35
    order = np.argsort(values, kind="stable")
    assert np.any(np.diff(swapped[order]) < 0)  # not monotone
    # works on volumes, leaves all-zero data as it is
    volume = np.zeros((4, 4, 2), dtype=np.float32)
    np.testing.assert_array_equal(swap_contrast(volume), volume)
    assert swap_contrast(volume) is not volume


def test_swapped_planning_scan_inverts_the_tissue_contrast(sample_crop, plain):
    swapped = make_dynamic(sample_crop, frames=FRAMES, seed=SEED, planning_contrast="swap")
    assert swapped.settings["planning_contrast"] == "swap"
    # only the planning scan changes
    np.testing.assert_array_equal(swapped.hr.data, plain.hr.data)
    np.testing.assert_array_equal(swapped.lr.data, plain.lr.data)
    before, after = plain.planning.data, swapped.planning.data
    level = float(np.percentile(before, 99))
    bright = before > 0.9 * level  # white matter on this T1 scan
    dark = before < 0.4 * level  # CSF
    assert bright.sum() > 20 and dark.sum() > 20
    assert after[bright].mean() < 0.6 * before[bright].mean()
    assert after[dark].mean() > 1.5 * before[dark].mean()
    assert after[dark].mean() > after[bright].mean()
    # intensities no longer order the same way
    assert np.corrcoef(before.ravel(), after.ravel())[0, 1] < 0.0


def test_swapped_planning_scan_keeps_the_air_dark(tiny_volume):
    plain = make_dynamic(tiny_volume, frames=2, seed=1)
    swapped = make_dynamic(tiny_volume, frames=2, seed=1, planning_contrast="swap")
    before, after = plain.planning.data, swapped.planning.data
    level = float(np.percentile(before, 99))
    air = before < 0.01 * level
    assert air.sum() > 0.2 * air.size
    assert np.abs(after[air]).max() < 0.02 * level
    assert object_mask(after, dilation=0).sum() == pytest.approx(object_mask(before, dilation=0).sum(), rel=0.05)


# --------------------------------------------------------------------------- through-plane motion and tracking


def test_through_plane_motion_moves_the_frames_along_z(sample_crop, plain):
    moving = make_dynamic(sample_crop, frames=FRAMES, seed=SEED, through_plane_mm=2.0)
    assert moving.settings["through_plane_mm"] == 2.0
    for t in range(FRAMES):
        still, along_z = plain.frame_displacement(t), moving.frame_displacement(t)
        np.testing.assert_array_equal(along_z[:2], still[:2])  # in-plane motion unchanged
        # without through-plane motion there is none along z (the irregular fields aside)
        extra_mm = (along_z[2] - still[2]) * ZOOMS[2]
        if plain.breathing[t] > 0.2:
            assert np.abs(extra_mm).max() > 0.5 * plain.breathing[t], t
        assert np.abs(extra_mm).max() <= 2.0 * plain.breathing[t] + 1e-4, t
    assert not np.allclose(moving.hr.data, plain.hr.data)
    # the planning scan is at inspiration: it moves along z too
    assert not np.allclose(moving.planning.data, plain.planning.data)


def test_options_left_at_their_defaults_give_the_same_phantom(sample_crop, plain):
    explicit = make_dynamic(sample_crop, frames=FRAMES, seed=SEED, insert=None, planning_insert=None,
                            planning_contrast="same", through_plane_mm=0.0)
    for name in ("hr", "lr", "planning"):
        np.testing.assert_array_equal(getattr(explicit, name).data, getattr(plain, name).data, name)
    np.testing.assert_array_equal(explicit.breathing, plain.breathing)
    assert explicit.settings["insert"] is None and explicit.settings["through_plane_mm"] == 0.0


def test_inserts_are_deterministic_and_leave_the_global_rng_alone(sample_crop):
    options = dict(frames=2, seed=5, insert="needle", planning_insert="needle", planning_contrast="swap",
                   through_plane_mm=2.0)
    state = np.random.get_state()[1].copy()
    first = make_dynamic(sample_crop, **options)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    again = make_dynamic(sample_crop, **options)
    for name in ("hr", "lr", "planning"):
        np.testing.assert_array_equal(getattr(again, name).data, getattr(first, name).data, name)
    np.testing.assert_array_equal(again.insert_mask, first.insert_mask)
    np.testing.assert_array_equal(again.planning_insert_mask, first.planning_insert_mask)
    assert again.settings == first.settings
    # another seed puts the needles elsewhere
    other = make_dynamic(sample_crop, **{**options, "seed": 6})
    assert other.settings["insert"] != first.settings["insert"]
    assert other.settings["planning_insert"] != first.settings["planning_insert"]


@pytest.mark.parametrize("through_plane_mm", [0.0, 2.0])
def test_tracking_displacement_maps_the_planning_scan_onto_each_frame(sample_crop, through_plane_mm):
    phantom = make_dynamic(sample_crop, frames=3, seed=SEED, contrast=False, through_plane_mm=through_plane_mm)
    for t in range(3):
        frame = phantom.hr.data[..., t]
        u = phantom.tracking_displacement(t)
        assert u.shape == (3, *frame.shape) and u.dtype == np.float32
        inside = object_mask(frame)
        registered = np.abs(warp(phantom.planning.data, u, order=3) - frame)[inside].mean()
        unregistered = np.abs(phantom.planning.data - frame)[inside].mean()
        assert registered < 0.25 * unregistered, (t, registered, unregistered)
        # more iterations of the fixed point do not move it much: it has converged
        again = phantom.tracking_displacement(t, iterations=16)
        assert np.abs(again - u).max() < 0.05


# --------------------------------------------------------------------------- bad names


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"insert": "wire"}, ["insert='wire'", "needle"]),
        ({"planning_insert": "catheter"}, ["planning_insert='catheter'", "needle"]),
        ({"planning_contrast": "t2"}, ["planning_contrast='t2'", "same, swap"]),
        ({"through_plane_mm": -1.0}, ["through_plane_mm=-1.0"]),
    ],
)
def test_invalid_names_list_the_valid_ones(tiny_volume, kwargs, fragments):
    assert INSERTS == ("needle",) and PLANNING_CONTRASTS == ("same", "swap")
    with pytest.raises(MrisrInputError) as info:
        make_dynamic(tiny_volume, frames=2, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)


# --------------------------------------------------------------------------- files


def test_save_writes_the_masks_and_the_planning_contrast(tmp_path, sample_crop):
    phantom = make_dynamic(sample_crop, frames=FRAMES, seed=0, insert="needle", planning_insert="needle",
                           planning_contrast="swap", through_plane_mm=2.0)
    paths = phantom.save(tmp_path / "out")
    assert paths["insert_mask"].name == "insert_mask.nii.gz"
    assert paths["planning_insert_mask"].name == "planning_insert_mask.nii.gz"
    hr = nib.load(str(paths["hr"]))
    for key, expected in (("insert_mask", phantom.insert_mask), ("planning_insert_mask", phantom.planning_insert_mask)):
        image = nib.load(str(paths[key]))
        assert image.get_data_dtype() == np.uint8, key
        assert image.shape == (*sample_crop.spatial_shape, FRAMES), key
        np.testing.assert_allclose(image.affine, hr.affine, atol=1e-6)
        np.testing.assert_allclose(image.affine, sample_crop.affine, atol=1e-4)
        assert image.header.get_zooms()[3] == pytest.approx(hr.header.get_zooms()[3])
        np.testing.assert_array_equal(np.asarray(image.dataobj), expected.astype(np.uint8))
    meta = json.loads(paths["metadata"].read_text())
    assert meta["planning_insert_contrast"] == pytest.approx(phantom.planning_insert_contrast, abs=1e-6)
    assert meta["files"]["insert_mask"] == "insert_mask.nii.gz"
    assert meta["files"]["planning_insert_mask"] == "planning_insert_mask.nii.gz"
    settings = meta["settings"]
    assert settings["insert"]["kind"] == "needle" and settings["planning_insert"]["kind"] == "needle"
    assert settings["planning_contrast"] == "swap" and settings["through_plane_mm"] == 2.0


def test_save_without_inserts_writes_no_masks(tmp_path, plain):
    paths = plain.save(tmp_path / "out")
    assert "insert_mask" not in paths and "planning_insert_mask" not in paths
    assert not (tmp_path / "out" / "insert_mask.nii.gz").exists()
    meta = json.loads(paths["metadata"].read_text())
    assert "planning_insert_contrast" not in meta and "insert_mask" not in meta["files"]


def _phantom_cli(*args):
    return runner.invoke(app, ["phantom", *map(str, args)])


def test_cli_writes_the_insert_files(tmp_path, nifti_3d, tiny_volume):
    out = tmp_path / "phantom"
    result = _phantom_cli("--source", nifti_3d, "-o", out, "--frames", 3, "--seed", 0, "--insert", "needle",
                          "--planning-insert", "needle", "--planning-contrast", "swap", "--through-plane-mm", 2)
    assert result.exit_code == 0, result.output
    for name in ("insert_mask.nii.gz", "planning_insert_mask.nii.gz"):
        assert name in result.output
        mask = load(out / name, validate=False)
        assert mask.data.shape == (*tiny_volume.spatial_shape, 3)
        np.testing.assert_allclose(mask.affine, load(out / "dynamic_hr.nii.gz").affine, atol=1e-6)
        assert mask.data.max() == 1
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["planning_insert_contrast"] > 0.5
    assert meta["settings"]["planning_contrast"] == "swap" and meta["settings"]["through_plane_mm"] == 2.0
    # the same call reproduces the library's phantom
    expected = make_dynamic(load(nifti_3d), frames=3, seed=0, insert="needle", planning_insert="needle",
                            planning_contrast="swap", through_plane_mm=2.0)
    np.testing.assert_array_equal(np.asarray(nib.load(str(out / "insert_mask.nii.gz")).dataobj),
                                  expected.insert_mask.astype(np.uint8))


def test_cli_every_insert_option_on_the_bundled_sample(tmp_path):
    """The documented call on the default source (3 mm slices, seed 0)."""
    out = tmp_path / "sample"
    result = _phantom_cli("-o", out, "--frames", 2, "--insert", "needle", "--planning-insert", "needle",
                          "--planning-contrast", "swap", "--through-plane-mm", 2)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 0, result.output
    assert (out / "insert_mask.nii.gz").exists() and (out / "planning_insert_mask.nii.gz").exists()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (("--insert", "wire"), "needle"),
        (("--planning-insert", "wire"), "needle"),
        (("--planning-contrast", "t2"), "swap"),
        (("--through-plane-mm", -3), "through_plane_mm"),
    ],
)
def test_cli_bad_insert_options_fail_in_one_line(tmp_path, nifti_3d, extra, fragment):
    out = tmp_path / "never"
    result = _phantom_cli("--source", nifti_3d, "-o", out, "--frames", 2, *extra)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert fragment in lines[0] and str(extra[1]) in lines[0]
    assert not out.exists()
