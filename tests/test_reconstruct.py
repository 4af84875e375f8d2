"""Step-wise reconstruction of a real-anatomy phantom: grid, TR, step-wise priors, files, sidecar, k-space."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import mrisr
from mrisr.data import load_sample
from mrisr.io import MrisrInputError, OptionError, Volume, load, save_like
from mrisr.kspace import center_crop_lowres, crop_kspace, fftc, zero_fill
from mrisr.limits import cpu_count
from mrisr.models import file_sha256, make_tiny_checkpoint
from mrisr.models import load as load_model
from mrisr.phantom import make_dynamic
from mrisr.reconstruct import (
    ReconstructOptions,
    data_consistency,
    default_output,
    iter_reconstruct,
    plan_grid,
    reconstruct_volume,
)
from mrisr.workflow import reconstruct_file

FRAMES = 3
TR = 0.5


def sample_crop() -> Volume:
    """48 x 48 x 8 crop of the real sample with its affine moved to the crop's first voxel."""
    sample = load_sample()
    affine = sample.affine.copy()
    affine[:3, 3] = sample.affine[:3, :3] @ np.array([40, 40, 10]) + sample.affine[:3, 3]
    return Volume(data=np.ascontiguousarray(sample.data[40:88, 40:88, 10:18]), affine=affine, qform_code=1,
                  sform_code=1)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reconstruct")
    phantom = make_dynamic(sample_crop(), frames=FRAMES, keep=6.25, seed=2, tr=TR)
    files = phantom.save(folder / "phantom")
    files["tiny"] = make_tiny_checkpoint(folder / "tiny.safetensors", prior=True)
    files["tiny_noprior"] = make_tiny_checkpoint(folder / "tiny_noprior.safetensors", prior=False)
    return phantom, files


def _perturbed(path):
    """The tiny model with a seeded non-zero head: its output depends on the prior."""
    model = load_model(path)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.network.head.weight.copy_(torch.randn(model.network.head.weight.shape, generator=gen) * 0.2)
    return model


def test_output_grid_equals_the_ground_truth_grid(case, tmp_path):
    phantom, files = case
    out = tmp_path / "sr.nii.gz"
    report = reconstruct_file(files["lr"], out, files["planning"], ReconstructOptions(model=str(files["tiny"])))
    sr, truth = load(out), load(files["hr"])
    assert sr.data.shape == truth.data.shape == (48, 48, 8, FRAMES)
    np.testing.assert_allclose(sr.affine, truth.affine, atol=1e-5)
    np.testing.assert_allclose(report.hr_affine, truth.affine, atol=1e-5)
    assert report.hr_shape == (48, 48, 8)
    assert report.keep == pytest.approx(6.25)
    assert sr.tr == pytest.approx(TR)
    assert sr.zooms[:3] == pytest.approx(truth.zooms[:3])
    assert len(report.frame_seconds) == FRAMES
    # the untrained tiny model returns its input: the SR series is the sinc baseline
    lr = load(files["lr"])
    for t in range(FRAMES):
        np.testing.assert_allclose(sr.data[..., t], zero_fill(lr.data[..., t], (48, 48)), rtol=1e-4,
                                   atol=1e-4 * float(lr.data.max()))


def test_default_factor_4_without_prior(case, tmp_path):
    phantom, files = case
    out = tmp_path / "sr_noprior.nii.gz"
    report = reconstruct_file(files["lr"], out, None, ReconstructOptions(model=str(files["tiny_noprior"])))
    assert report.hr_shape == (48, 48, 8)  # 12 x 12 LR, factor 4
    np.testing.assert_allclose(load(out).affine, load(files["hr"]).affine, atol=1e-5)
    sidecar = json.loads(report.sidecar.read_text())
    assert sidecar["grid"]["how"] == "default"
    assert sidecar["grid"]["keep_percent"] == pytest.approx(6.25)


def test_grid_rules(case, oblique_affine):
    phantom, _ = case
    small = Volume(data=np.ones((8, 8, 3), np.float32), affine=oblique_affine)
    grid = plan_grid(small)
    assert (grid.hr_shape, grid.how, grid.keep) == ((32, 32, 3), "default", pytest.approx(6.25))
    assert plan_grid(small, factor=2).hr_shape == (16, 16, 3)
    assert plan_grid(small, matrix=(40, 36)).hr_shape == (40, 36, 3)
    # with a prior: the prior's in-plane voxel size over the dynamic's field of view
    lr_frame0 = Volume(data=phantom.lr.data[..., 0], affine=phantom.lr.affine)
    grid = plan_grid(lr_frame0, phantom.planning)
    assert (grid.hr_shape, grid.how) == ((48, 48, 8), "prior")
    np.testing.assert_allclose(grid.hr_affine, phantom.hr.affine, atol=1e-5)
    with pytest.raises(ValueError, match="smaller than the dynamic's matrix"):
        plan_grid(small, matrix=(4, 40))


def test_three_d_input_is_one_frame(case, tmp_path):
    phantom, files = case
    lr = load(files["lr"])
    single = save_like(tmp_path / "frame0.nii.gz", lr.data[..., 0], lr)
    report = reconstruct_file(single, None, files["planning"], ReconstructOptions(model=str(files["tiny"])))
    out = load(report.output)
    assert out.data.shape == (48, 48, 8)
    assert len(report.frame_seconds) == 1
    np.testing.assert_allclose(out.affine, phantom.hr.affine, atol=1e-5)
    # the same as frame 0 of the series (both use the planning scan as prior)
    series = reconstruct_volume(lr, phantom.planning, ReconstructOptions(model=str(files["tiny"])))
    np.testing.assert_allclose(out.data, series.data[..., 0], rtol=1e-5, atol=1e-3)


def test_stepwise_uses_the_previous_result_as_prior(case):
    phantom, files = case
    lr = load(files["lr"])
    model = _perturbed(files["tiny"])
    # float32: the same path twice must agree to float rounding (bf16 would flip low bits)
    previous = list(iter_reconstruct(lr, phantom.planning, ReconstructOptions(prior_mode="previous", precision="fp32"),
                                     model=model))
    tracked = list(iter_reconstruct(lr, phantom.planning, ReconstructOptions(prior_mode="tracked", precision="fp32"),
                                    model=model))
    planning = list(iter_reconstruct(lr, phantom.planning, ReconstructOptions(prior_mode="planning", precision="fp32"),
                                     model=model))
    assert [r.index for r in previous] == [0, 1, 2] and {r.total for r in previous} == {FRAMES}
    # frame 0: the planning scan registered to frame 0, as in tracked mode (not the planning scan as
    # it is); later frames differ from both
    np.testing.assert_array_equal(previous[0].sr, tracked[0].sr)
    assert not np.allclose(previous[0].sr, planning[0].sr)
    assert not np.allclose(previous[1].sr, tracked[1].sr)
    # frame t really got the SR of frame t-1 (the planning prior is resampled and intensity-matched)
    sinc1 = zero_fill(lr.data[..., 1], (48, 48))
    np.testing.assert_allclose(previous[1].sr, model.predict(sinc1, previous[0].sr, precision="fp32"), rtol=1e-5,
                               atol=1e-4)
    for result in previous:
        np.testing.assert_allclose(result.hr_affine, phantom.hr.affine, atol=1e-5)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prior_mode": "bogus"}, "ReconstructOptions.prior_mode = 'bogus': choose one of tracked, planning, previous"),
        ({"finetune_minutes": "abc"}, "ReconstructOptions.finetune_minutes = 'abc': must be a number, e.g. 3"),
        ({"finetune_minutes": 0}, "ReconstructOptions.finetune_minutes = 0: must be in (0, 1440], e.g. 3"),
        ({"factor": 40}, "ReconstructOptions.factor = 40: must be in [1, 16], e.g. 4"),
        ({"matrix": (1, 64)},
         "ReconstructOptions.matrix = (1, 64): needs 2 whole numbers (each in 2..4096), e.g. (256, 256)"),
        ({"factor": 2, "matrix": (64, 64)}, "ReconstructOptions.matrix = (64, 64): give factor or matrix, not both"),
        ({"device": "gpu"}, "ReconstructOptions.device = 'gpu': use auto, cpu, cuda or cuda:N, e.g. cuda:0"),
        ({"threads": 0}, f"ReconstructOptions.threads = 0: must be a whole number between 1 and the {cpu_count()} "
         f"CPU core(s) of this machine, e.g. {cpu_count()}"),
        ({"tile": (64, 64)}, "ReconstructOptions.tile = (64, 64): needs 3 whole numbers (16..4096, 16..4096, "
         "2..4096), e.g. (128, 128, 32)"),
        ({"finetune": "yes"}, "ReconstructOptions.finetune = 'yes': must be True or False"),
        ({"method": "sinc"}, "ReconstructOptions.method = 'sinc': choose one of network, keyhole, keyhole-registered, keyhole-gated"),
        ({"method": "keyhole", "finetune": True},
         "ReconstructOptions.method = 'keyhole': a keyhole method has no model to fine-tune; turn fine-tuning off"),
    ],
)
def test_options_are_validated_on_construction_in_library_words(fields, message):
    with pytest.raises(OptionError) as info:
        ReconstructOptions(**fields)
    assert str(info.value) == message
    assert isinstance(info.value, MrisrInputError) and "--" not in str(info.value)


def test_options_are_normalised():
    options = ReconstructOptions(model=Path("m.safetensors"), factor=2, matrix=None, threads=np.int64(1),
                                 tile=[64, 64, np.int32(8)], data_consistency=np.bool_(True))
    assert (options.model, options.factor, options.threads, options.tile, options.data_consistency) == (
        "m.safetensors", 2.0, 1, (64, 64, 8), True)
    assert type(options.threads) is int and type(options.data_consistency) is bool
    # a field changed later is checked again by validate()
    options.prior_mode = "sideways"
    with pytest.raises(OptionError, match="prior_mode"):
        options.validate()


def test_cancel_stops_cleanly(case):
    phantom, files = case
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 1

    results = list(iter_reconstruct(phantom.lr, phantom.planning, ReconstructOptions(model=str(files["tiny"])),
                                    cancel=cancel))
    assert [r.index for r in results] == [0]


def test_default_output_is_next_to_the_input_and_never_the_input(case, tmp_path):
    phantom, files = case
    scan = tmp_path / "scan.nii.gz"
    shutil.copy(files["lr"], scan)
    digest = file_sha256(scan)
    report = reconstruct_file(scan, None, None, ReconstructOptions(model=str(files["tiny_noprior"])))
    assert report.output == tmp_path / "scan_sr.nii.gz"
    assert report.sidecar == tmp_path / "scan_sr.json"
    assert report.output.exists() and report.sidecar.exists()
    assert file_sha256(scan) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz", "scan_sr.json", "scan_sr.nii.gz"]
    assert default_output(tmp_path / "scan.nii") == tmp_path / "scan_sr.nii.gz"
    assert default_output(tmp_path / "scan_sr.nii.gz") == tmp_path / "scan_sr_sr.nii.gz"
    assert default_output(tmp_path / "scan.NII.GZ") == tmp_path / "scan_sr.nii.gz"
    with pytest.raises(MrisrInputError, match="same as the input"):
        reconstruct_file(scan, scan, None, ReconstructOptions(model=str(files["tiny_noprior"])))
    assert file_sha256(scan) == digest


def test_sidecar_records_inputs_model_options_and_timing(case, tmp_path):
    phantom, files = case
    options = ReconstructOptions(model=str(files["tiny"]), prior_mode="planning", data_consistency=True)
    report = reconstruct_file(files["lr"], tmp_path / "out.nii.gz", files["planning"], options)
    side = json.loads((tmp_path / "out.json").read_text())
    assert report.sidecar == tmp_path / "out.json"
    assert side["GeneratedBy"] == {"Name": "mrisr", "Version": mrisr.__version__}
    assert side["inputs"]["dynamic_sha256"] == file_sha256(files["lr"])
    assert side["inputs"]["prior_sha256"] == file_sha256(files["planning"])
    assert side["model"]["sha256"] == file_sha256(files["tiny"]) == report.model_sha256
    assert side["model"]["name"] == str(files["tiny"]) and side["model"]["uses_prior"] is True
    assert side["options"]["prior_mode"] == "planning" and side["options"]["data_consistency"] is True
    assert side["options"] == report.options
    assert side["grid"]["keep_percent"] == pytest.approx(6.25)
    assert side["grid"]["hr_shape"] == [48, 48, 8] and side["grid"]["how"] == "prior"
    assert len(side["frame_seconds"]) == FRAMES and all(s >= 0 for s in side["frame_seconds"])
    assert side["RepetitionTime"] == pytest.approx(TR)
    assert side["frames"] == FRAMES
    assert 0 < side["prior"]["coverage"] <= 1


def test_data_consistency_restores_the_measured_kspace_centre(case):
    phantom, _ = case
    lr_frame = phantom.lr.data[..., 1]
    # an "SR" frame that is too bright and has the truth's detail: wrong centre, right periphery
    sr = 1.2 * phantom.hr.data[..., 1]
    measured = fftc(lr_frame.astype(np.complex64))
    tolerance = 1e-2 * np.abs(measured).max()
    assert np.abs(crop_kspace(fftc(sr), (12, 12)) - measured).max() > 10 * tolerance
    restored = data_consistency(sr, lr_frame)
    assert restored.shape == sr.shape and restored.dtype == np.float32
    # the measurement is back, up to the magnitude taken at the end. The even-sized LR block's first
    # row and column (its Nyquist samples) have no conjugate partner inside the block, so the hybrid
    # image is not exactly real there; every other measured sample is restored
    centre = crop_kspace(fftc(restored), (12, 12))
    np.testing.assert_allclose(centre[1:, 1:], measured[1:, 1:], atol=tolerance)
    assert np.abs(centre - measured).mean() < 0.1 * tolerance
    # and the periphery of k-space (the SR detail) is kept, except the conjugate partners of those
    # Nyquist samples (index 30 on the 48 grid, just outside the 18..29 block)
    outside = np.ones((48, 48), bool)
    outside[18:31, 18:31] = False
    np.testing.assert_allclose(fftc(restored)[outside], fftc(sr)[outside], atol=tolerance)


def test_data_consistency_option_applies_it_per_frame(case):
    phantom, files = case
    model = _perturbed(files["tiny_noprior"])
    plain = reconstruct_volume(phantom.lr, None, ReconstructOptions(), model=model)
    checked = reconstruct_volume(phantom.lr, None, ReconstructOptions(data_consistency=True), model=model)
    assert checked.data.shape == (48, 48, 8, FRAMES) and checked.tr == pytest.approx(TR)
    for t in range(FRAMES):
        np.testing.assert_allclose(checked.data[..., t], data_consistency(plain.data[..., t], phantom.lr.data[..., t]),
                                   rtol=1e-5, atol=1e-4)


def test_lr_is_the_kspace_centre_of_the_truth(case):
    # the phantom's LR frames are what the reconstruction assumes: the central 6.25 % of the truth
    phantom, _ = case
    np.testing.assert_allclose(phantom.lr.data[..., 0], center_crop_lowres(phantom.hr.data[..., 0], 6.25),
                               atol=1e-3 * float(phantom.hr.data.max()))


def test_frame_to_grid_torch_and_numpy_backends_agree():
    from mrisr.reconstruct.grid import frame_to_grid

    rng = np.random.default_rng(0)
    frame = (rng.random((33, 30, 5)) * 100).astype(np.float32)
    fast, ref = frame_to_grid(frame, (130, 120)), frame_to_grid(frame, (130, 120), backend="numpy")
    assert fast.dtype == ref.dtype == np.float32 and fast.shape == ref.shape == (130, 120, 5)
    np.testing.assert_allclose(fast, ref, atol=1e-5 * float(ref.max()))
    # a float64 input comes back as float32
    assert frame_to_grid(frame.astype(np.float64), (66, 60)).dtype == np.float32


@pytest.mark.parametrize("options", [ReconstructOptions(prior_mode="tracked"), ReconstructOptions(prior_mode="previous"),
                                     ReconstructOptions(method="keyhole-gated")])
def test_a_dropped_frame_is_freed_before_the_next_is_computed(case, options, tmp_path):
    """Once resumed, the frame generator holds no reference to the frame it handed out before, so
    a streaming caller that drops it frees its memory before the next frame's network runs."""
    import gc
    import weakref

    phantom, files = case
    lr = load(files["lr"])
    # a gated-keyhole network (the bundled kind): step-wise it hands on its input, not its output
    model = None if options.method != "network" else load_model(
        make_tiny_checkpoint(tmp_path / "gated.safetensors", prior_input="gated-keyhole"))
    frames = iter_reconstruct(lr, phantom.planning, options, model=model)
    result = next(frames)
    handed_out = weakref.ref(result.sr)
    del result
    seen = []

    def spy(*args, **kwargs):  # the next frame's network / gate, after the generator resumed
        gc.collect()
        seen.append(handed_out() is None)
        return original(*args, **kwargs)

    import mrisr.reconstruct.pipeline as pipeline

    original = pipeline.form_network_input
    pipeline.form_network_input = spy
    try:
        assert len(list(frames)) == FRAMES - 1
    finally:
        pipeline.form_network_input = original
    assert seen and seen[0]
