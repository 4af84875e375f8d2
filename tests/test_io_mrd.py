"""ISMRMRD raw input: NIfTI -> MRD raw (written by tests/mrd_testdata.py) -> mrisr -> NIfTI.

Geometry within 1e-3 mm, images against a plain sum-of-squares FFT reconstruction and against
the pipeline's own k-space simulation, streaming, and one-line refusals of what is not supported.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("ismrmrd")

from mrd_testdata import reference_sos, write_raw  # noqa: E402
from mrisr_testdata import head_phantom, oblique  # noqa: E402

from mrisr.io import MrisrInputError, Volume, coarsen_affine, load, save_like  # noqa: E402
from mrisr.io.mrd import RawFrames  # noqa: E402
from mrisr.io.stream import iter_frames  # noqa: E402
from mrisr.kspace import fftc, ifftc  # noqa: E402
from mrisr.kspace.functional import crop_lowres  # noqa: E402
from mrisr.kspace.simulate import simulate_volume  # noqa: E402

SHAPE = (32, 24, 8)
AFFINE = oblique((0.9, 1.1, 3.0), origin=(-40.5, 12.25, 30.0), angles_deg=(12.0, -7.0, 25.0))
FRAMES = 4


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def hr_frames() -> np.ndarray:
    return np.stack([head_phantom(SHAPE, seed=1, shift=(0.8 * t, -0.5 * t, 0.0)) for t in range(FRAMES)], axis=-1)


@pytest.mark.parametrize("coils", [1, 4])
@pytest.mark.parametrize("three_d", [False, True], ids=["2d-multislice", "3d"])
def test_fully_sampled_round_trip_through_nifti(tmp_path, write_nifti, coils, three_d):
    """NIfTI -> raw (2x readout oversampling) -> mrisr -> NIfTI: the same affine and image, and the
    same image as a plain sum-of-squares FFT reconstruction of the raw file."""
    source = write_nifti(tmp_path / "source.nii.gz", head_phantom(SHAPE, seed=2), AFFINE, 1, 1)
    nifti = load(source)
    raw = write_raw(tmp_path / "scan.h5", nifti.data, nifti.affine, coils=coils, oversampling=2, three_d=three_d)
    volume = load(raw)
    assert volume.spatial_shape == SHAPE and not volume.is_4d
    assert np.abs(volume.affine - nifti.affine).max() < 1e-3
    assert _rel(volume.data, reference_sos(raw)) <= 1e-4
    # the coil sensitivities' squares sum to one: sum of squares is the magnitude image itself
    assert _rel(volume.data, nifti.data) <= 1e-4
    assert volume.extra["raw"]["readout_oversampling_removed"] and volume.extra["raw"]["coils"] == coils
    out = save_like(tmp_path / "back.nii.gz", volume.data, volume)
    back = load(out)
    assert np.abs(back.affine - nifti.affine).max() < 1e-3
    assert _rel(back.data, nifti.data) <= 1e-4


def test_centre_convention_puts_position_at_voxel_n_over_2(tmp_path):
    """A point at the slab centre (``position``) has flat k-space and lands on voxel (X//2, Y//2, Z//2)."""
    image = np.zeros(SHAPE)
    image[SHAPE[0] // 2, SHAPE[1] // 2, SHAPE[2] // 2] = 1.0
    raw = write_raw(tmp_path / "point.h5", image, AFFINE, three_d=True)
    with __import__("h5py").File(raw, "r") as h5:
        first = np.asarray(h5["dataset"]["data"][0]["data"]).view(np.complex64)
        position = h5["dataset"]["data"][0]["head"]["position"]
    assert np.allclose(np.abs(first), np.abs(first[0]), rtol=1e-5)  # no linear phase: the centre is the origin
    volume = load(raw)
    peak = np.unravel_index(np.argmax(volume.data), volume.data.shape)
    assert peak == (SHAPE[0] // 2, SHAPE[1] // 2, SHAPE[2] // 2)
    ras = volume.affine @ np.array([*peak, 1.0])
    assert np.allclose(ras[:3], [-position[0], -position[1], position[2]], atol=1e-3)


def test_dynamic_of_central_lines_equals_the_simulated_lr_series(tmp_path, hr_frames):
    """Central block only (readout and phase): the measured centre of k-space, frame by frame, is
    exactly what ``simulate_volume`` computes from the HR frames, on the same coarse affine."""
    hr = Volume(hr_frames, AFFINE, tr=0.5)
    lr, info = simulate_volume(hr, 25)
    raw = write_raw(tmp_path / "dyn.h5", hr_frames, AFFINE, lines=info.lr_inplane[1], readout=info.lr_inplane[0])
    volume = load(raw, lazy=True)
    assert isinstance(volume.data, RawFrames)
    assert volume.data.shape == lr.data.shape and volume.n_frames == FRAMES
    assert np.abs(volume.affine - lr.affine).max() < 1e-3
    assert volume.tr == pytest.approx(0.5)
    frames = list(iter_frames(volume))
    assert _rel(np.stack(frames, axis=-1), lr.data) <= 1e-4
    assert _rel(volume.frame(-1), lr.data[..., -1]) <= 1e-4


@pytest.mark.parametrize("lines", [7, 12])
def test_asymmetric_coverage_full_readout_central_lines(tmp_path, hr_frames, lines):
    """A keyhole dynamic as scanners acquire it: the whole (2x oversampled) readout, a few central
    phase-encode lines. The LR matrix is full width, coarse along phase."""
    raw = write_raw(tmp_path / "keyhole.h5", hr_frames, AFFINE, lines=lines, oversampling=2)
    volume = load(raw)
    lr_shape = (SHAPE[0], lines, SHAPE[2])
    assert volume.spatial_shape == lr_shape
    assert np.abs(volume.affine - coarsen_affine(AFFINE, SHAPE, lr_shape)).max() < 1e-3
    assert _rel(volume.data, crop_lowres(hr_frames, lr_shape[:2], axes=(0, 1))) <= 1e-4


def test_3d_central_partitions(tmp_path, hr_frames):
    raw = write_raw(tmp_path / "slab.h5", hr_frames, AFFINE, three_d=True, lines=7, readout=13, partitions=5)
    volume = load(raw)
    assert volume.spatial_shape == (13, 7, 5)
    assert np.abs(volume.affine - coarsen_affine(AFFINE, SHAPE, (13, 7, 5))).max() < 1e-3
    assert _rel(volume.data, crop_lowres(hr_frames, (13, 7, 5), axes=(0, 1, 2))) <= 1e-4


def test_partial_fourier_edge_is_zero_filled(tmp_path, hr_frames):
    """The top line of a 12-line block is not acquired in any frame: the block keeps its size and the
    centre its place, the missing edge line is zero."""
    last = SHAPE[1] // 2 - 6 + 11
    raw = write_raw(tmp_path / "pf.h5", hr_frames[..., :2], AFFINE, lines=12,
                    drop=[(t, last) for t in range(2)])
    volume = load(raw)
    k = fftc(hr_frames[..., :2], axes=(0, 1))[:, SHAPE[1] // 2 - 6:SHAPE[1] // 2 + 6]
    k[:, -1] = 0
    assert volume.spatial_shape == (SHAPE[0], 12, SHAPE[2])
    assert _rel(volume.data, np.abs(ifftc(k, axes=(0, 1)))) <= 1e-4


def test_slices_are_ordered_by_position_not_counter(tmp_path, hr_frames):
    """Interleaved or reversed slice counters: z follows the slice positions."""
    plain = load(write_raw(tmp_path / "plain.h5", hr_frames[..., 0], AFFINE))

    def reverse(heads):
        heads["idx"]["slice"] = SHAPE[2] - 1 - heads["idx"]["slice"]

    reversed_ = load(write_raw(tmp_path / "reversed.h5", hr_frames[..., 0], AFFINE, mutate=reverse))
    assert np.array_equal(reversed_.data, plain.data)
    assert np.allclose(reversed_.affine, plain.affine)


def test_bulk_written_file_reads_the_same_and_the_lazy_volume_pickles(tmp_path, hr_frames):
    one = load(write_raw(tmp_path / "one.h5", hr_frames, AFFINE, lines=8, coils=2), lazy=True)
    bulk = load(write_raw(tmp_path / "bulk.h5", hr_frames, AFFINE, lines=8, coils=2, bulk=True), lazy=True)
    assert np.array_equal(np.asarray(one.data), np.asarray(bulk.data))
    clone = pickle.loads(pickle.dumps(bulk))
    assert np.array_equal(clone.frame(2), bulk.frame(2))
    assert np.array_equal(load(tmp_path / "bulk.h5").data, np.asarray(bulk.data))  # eager = lazy


# ---- refusals: one line naming the file, the problem and the fix ----------------------------------


def _refused(path, *fragments):
    with pytest.raises(MrisrInputError) as caught:
        load(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_refuses_non_cartesian(tmp_path, hr_frames):
    _refused(write_raw(tmp_path / "radial.h5", hr_frames[..., 0], AFFINE, trajectory="radial"),
             "non-Cartesian trajectory (radial)", "reconstruct it to images first")

    def with_trajectory(heads):
        heads["trajectory_dimensions"] = 2

    _refused(write_raw(tmp_path / "traj.h5", hr_frames[..., 0], AFFINE, mutate=with_trajectory), "non-Cartesian")


def test_refuses_missing_lines_inside_the_centre(tmp_path, hr_frames):
    centre = SHAPE[1] // 2
    message = _refused(write_raw(tmp_path / "gap.h5", hr_frames, AFFINE, lines=12, drop=[(2, centre + 1)]),
                       "missing lines inside the encoded centre", f"frame 2 slice 0 lacks phase-encode line(s) {centre + 1}")
    assert "parallel-imaging" in message


def test_refuses_mixed_matrices(tmp_path, hr_frames):
    def longer_readout(heads):
        heads["number_of_samples"][5] += 2

    _refused(write_raw(tmp_path / "mixed.h5", hr_frames[..., :2], AFFINE, mutate=longer_readout),
             "mixed matrices", "readout lengths")
    first = SHAPE[1] // 2 - 4
    _refused(write_raw(tmp_path / "span.h5", hr_frames[..., :3], AFFINE, lines=8,
                       drop=[(1, first)] + [(1, first + 1)]),
             "mixed matrices", "frame 1")


def test_refuses_files_without_acquisitions(tmp_path, hr_frames):
    import h5py

    def all_noise(heads):
        heads["flags"] = np.uint64(1 << 18)

    _refused(write_raw(tmp_path / "noise.h5", hr_frames[..., 0], AFFINE, mutate=all_noise),
             "holds no image acquisitions (only noise)")
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as h5:
        h5.create_group("dataset")
    _refused(empty, "holds no acquisitions")
    images = tmp_path / "images.h5"
    with h5py.File(images, "w") as h5:
        h5.create_group("dataset").create_group("image_0")
    _refused(images, "holds MRD images, not raw acquisitions")


def test_refuses_corrupt_files(tmp_path, hr_frames):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an HDF5 file at all" * 40)
    _refused(garbage, "not a readable HDF5 file", "copy the complete file again")
    good = write_raw(tmp_path / "cut.h5", hr_frames, AFFINE, lines=8, bulk=True)
    cut = tmp_path / "truncated.h5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _refused(cut, "not a readable HDF5 file")


def test_refuses_reversed_readouts_and_moving_slices(tmp_path, hr_frames):
    def epi(heads):
        heads["flags"][1::2] |= np.uint64(1 << 21)

    _refused(write_raw(tmp_path / "epi.h5", hr_frames[..., 0], AFFINE, mutate=epi), "reverse (EPI-style)")

    def tracking(heads):
        heads["position"][heads["idx"]["repetition"] == 1] += np.float32(2.0)

    _refused(write_raw(tmp_path / "moving.h5", hr_frames[..., :2], AFFINE, mutate=tracking),
             "changes during the series")


def test_batch_discovery_finds_raw_dynamics(tmp_path, hr_frames, write_nifti):
    """A BIDS folder whose dynamic is raw (``func/*_bold.h5``, named by the batch config)."""
    from mrisr.batch import BatchConfig, discover

    subject = tmp_path / "bids" / "sub-01"
    (subject / "func").mkdir(parents=True)
    (subject / "anat").mkdir()
    dynamic = write_raw(subject / "func" / "sub-01_task-dynamic_bold.h5", hr_frames, AFFINE, lines=8)
    planning = write_nifti(subject / "anat" / "sub-01_T1w.nii.gz", hr_frames[..., 0], AFFINE, 1, 1)
    config = BatchConfig.model_validate({"bids": {"dynamic": ["func/*_bold.h5"]}})
    (series,) = discover(tmp_path / "bids", config).subjects["01"].series
    assert series.dynamic == dynamic.resolve() and series.planning == planning.resolve()
    assert series.suffix == "bold" and series.entities == (("sub", "01"), ("task", "dynamic"))


def test_missing_ismrmrd_names_the_extra(tmp_path, hr_frames, monkeypatch):
    raw = write_raw(tmp_path / "scan.h5", hr_frames[..., 0], AFFINE)
    monkeypatch.setitem(__import__("sys").modules, "ismrmrd", None)  # as if the package were not installed
    _refused(raw, "needs the ismrmrd package", "pip install 'mrisr[raw]'")
