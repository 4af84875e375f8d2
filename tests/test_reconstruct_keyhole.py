"""Keyhole and registered keyhole: the k-space arithmetic, and `mrisr reconstruct --method` on an oblique 4-D file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.data import load_sample
from mrisr.io import MrisrInputError, Volume, load
from mrisr.kspace.functional import crop_kspace, crop_lowres, fftc, zero_fill
from mrisr.metrics import score_frames
from mrisr.models import make_tiny_checkpoint
from mrisr.phantom import make_dynamic
from mrisr.reconstruct import ReconstructOptions, data_consistency
from mrisr.reconstruct.keyhole import METHODS, keyhole

runner = CliRunner()
FRAMES = 3


# --------------------------------------------------------------------------- the k-space arithmetic


def _positive(shape, seed) -> np.ndarray:
    """A real image far from zero (so its magnitude is itself, also after a change of k-space)."""
    return (100.0 + 20.0 * np.random.default_rng(seed).random(shape)).astype(np.float32)


def _outside(shape_hr, shape_lr) -> np.ndarray:
    """In-plane k-space positions outside the measured centre block (same placement as crop_kspace)."""
    outside = np.ones(shape_hr, dtype=bool)
    start = [n // 2 - m // 2 for n, m in zip(shape_hr, shape_lr)]
    outside[start[0] : start[0] + shape_lr[0], start[1] : start[1] + shape_lr[1]] = False
    return outside


@pytest.mark.parametrize("lr_inplane", [(9, 7), (11, 11)])
def test_keyhole_keeps_the_measured_centre_and_the_references_periphery_exactly(lr_inplane):
    """A real, positive LR frame (odd matrix: Hermitian centre) makes the keyhole image real and positive, so
    its magnitude loses nothing: the output's central k-space is the LR frame's, the rest the reference's."""
    hr_shape = (32, 28, 3)
    truth = _positive(hr_shape, 0)
    lr = crop_lowres(truth, lr_inplane, magnitude=False)
    assert np.abs(lr.imag).max() < 1e-3 and lr.real.min() > 50  # real and positive
    lr = lr.real.astype(np.float32)
    reference = _positive(hr_shape, 1)

    out = keyhole(lr, reference)
    assert out.shape == hr_shape and out.dtype == np.float32
    k_out = fftc(out.astype(np.complex128), (0, 1))
    np.testing.assert_allclose(crop_kspace(k_out, lr_inplane), fftc(lr.astype(np.complex128), (0, 1)), atol=2e-5)
    outside = _outside(hr_shape[:2], lr_inplane)
    k_ref = fftc(reference.astype(np.complex128), (0, 1))
    np.testing.assert_allclose(k_out[outside], k_ref[outside], atol=2e-5)
    # in image terms: the output seen through the LR matrix is the LR frame
    np.testing.assert_allclose(crop_lowres(out, lr_inplane), lr, rtol=1e-5, atol=1e-3)
    # and the centre really came from the frame, not the reference
    assert np.abs(crop_lowres(reference, lr_inplane) - lr).max() > 1.0


def test_keyhole_with_the_true_frame_as_reference_returns_the_frame():
    frame = np.ascontiguousarray(load_sample().data[40:88, 40:88, 12:16])  # brain tissue, no air
    scale = float(frame.max())
    # the complex LR data (what a scanner measures): exact
    for lr_inplane in ((12, 12), (13, 13)):
        exact = keyhole(crop_lowres(frame, lr_inplane, magnitude=False), frame)
        np.testing.assert_allclose(exact, frame, rtol=0, atol=1e-5 * scale)
    # the magnitude LR frame (what users have): exact where the LR image is real and positive (odd matrix) ...
    odd = keyhole(crop_lowres(frame, (13, 13)), frame)
    np.testing.assert_allclose(odd, frame, rtol=0, atol=1e-5 * scale)
    # ... and up to magnitude effects on an even matrix (its unpaired Nyquist line)
    even = keyhole(crop_lowres(frame, (12, 12)), frame)
    assert 1e-4 * float(frame.mean()) < np.abs(even - frame).mean() < 0.03 * float(frame.mean())


def test_keyhole_on_an_even_lr_matrix_keeps_the_centre_up_to_magnitude_effects():
    """LR matrices of even size (as on scanners) have an unpaired Nyquist line: the centre is kept
    approximately only, which the module docstring says."""
    hr_shape = (32, 32, 2)
    truth = _positive(hr_shape, 2)
    lr = crop_lowres(truth, (8, 8))
    out = keyhole(lr, _positive(hr_shape, 3))
    np.testing.assert_allclose(crop_lowres(out, (8, 8)), lr, rtol=0.02)


def test_data_consistency_is_a_keyhole_with_the_sr_frame_as_reference():
    sr = _positive((16, 16, 2), 4)
    lr = _positive((4, 4, 2), 5)
    np.testing.assert_array_equal(data_consistency(sr, lr), keyhole(lr, sr))


def test_keyhole_rejects_mismatched_frames():
    with pytest.raises(ValueError, match="same slices"):
        keyhole(np.ones((4, 4, 2), np.float32), np.ones((16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="same slices"):
        keyhole(np.ones((4, 4), np.float32), np.ones((16, 16), np.float32))


# --------------------------------------------------------------------------- options


def test_options_validate_the_method():
    assert METHODS == ("network", "keyhole", "keyhole-registered", "keyhole-gated")
    assert ReconstructOptions().method == "network"
    for method in METHODS:
        ReconstructOptions(method=method).validate()
    assert ReconstructOptions(method="keyhole").as_dict()["method"] == "keyhole"
    with pytest.raises(MrisrInputError, match="method = 'sinc': choose one of network, keyhole, keyhole-registered"):
        ReconstructOptions(method="sinc")
    for method in ("keyhole", "keyhole-registered"):
        with pytest.raises(MrisrInputError, match=f"method = '{method}': a keyhole method has no model to fine-tune"):
            ReconstructOptions(method=method, finetune=True)


# --------------------------------------------------------------------------- `mrisr reconstruct --method`


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A 3-frame phantom with 6 mm breathing on an oblique grid (48 x 48 x 8 real anatomy, 12 x 12 LR)."""
    from mrisr_testdata import oblique

    folder = tmp_path_factory.mktemp("keyhole")
    data = np.ascontiguousarray(load_sample().data[40:88, 40:88, 10:18])
    crop = Volume(data=data, affine=oblique(zooms=(1.5, 1.5, 3.0)), qform_code=1, sform_code=2)
    phantom = make_dynamic(crop, frames=FRAMES, keep=6.25, seed=1, tr=0.5, motion_mm=6.0)
    files = phantom.save(folder / "phantom")
    files["tiny"] = make_tiny_checkpoint(folder / "tiny.safetensors", prior=True)
    outputs = {}
    for method in ("keyhole", "keyhole-registered"):
        result = _invoke(files["lr"], "--prior", files["planning"], "--method", method,
                         "-o", folder / f"{method}.nii.gz")
        assert result.exit_code == 0, result.output
        outputs[method] = folder / f"{method}.nii.gz"
        outputs[f"{method}-stdout"] = result.output
    return {"files": files, "outputs": outputs, "phantom": phantom, "folder": folder}


def _invoke(*args):
    result = runner.invoke(app, ["reconstruct", *[str(a) for a in args], "--quiet"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def test_keyhole_output_is_on_the_networks_grid(case, tmp_path):
    files = case["files"]
    network = tmp_path / "network.nii.gz"
    result = _invoke(files["lr"], "--prior", files["planning"], "--model", files["tiny"], "-o", network)
    assert result.exit_code == 0, result.output
    reference = load(network)
    truth = load(files["hr"])
    lr = load(files["lr"])
    assert not np.allclose(lr.affine[:3, :3] / np.linalg.norm(lr.affine[:3, :3], axis=0), np.eye(3), atol=0.05)
    for method in ("keyhole", "keyhole-registered"):
        out = load(case["outputs"][method])
        assert out.data.shape == reference.data.shape == truth.data.shape, method
        np.testing.assert_allclose(out.affine, reference.affine, atol=1e-6)
        np.testing.assert_allclose(out.affine, truth.affine, atol=1e-4)
        assert out.tr == pytest.approx(0.5)
        assert out.data.dtype == np.float32 and np.isfinite(out.data).all()


def test_sidecar_and_message_name_the_method(case):
    for method in ("keyhole", "keyhole-registered"):
        side = json.loads(case["outputs"][method].with_name(f"{method}.json").read_text())
        assert side["method"] == method
        assert side["options"]["method"] == method
        assert side["model"] is None  # no network involved
        assert len(side["frame_seconds"]) == FRAMES
        assert f"method {method}" in case["outputs"][f"{method}-stdout"]
        assert "model default" not in case["outputs"][f"{method}-stdout"]
    # the registered keyhole records its registration, the plain one has none
    registered = json.loads(case["outputs"]["keyhole-registered"].with_name("keyhole-registered.json").read_text())
    plain = json.loads(case["outputs"]["keyhole"].with_name("keyhole.json").read_text())
    assert registered["prior"]["tracking"] is not None and plain["prior"]["tracking"] is None


def test_keyhole_output_is_the_lr_centre_in_the_prepared_planning_scan(case):
    """Each frame is exactly keyhole(LR frame, planning scan brought onto the grid and matched in intensity)."""
    from mrisr.reconstruct import prepare_state

    files = case["files"]
    lr = load(files["lr"])
    out = load(case["outputs"]["keyhole"]).data
    rec = prepare_state(lr, load(files["planning"]), ReconstructOptions(method="keyhole"), first_frame=lr.frame(0))
    assert rec.model is None
    for t in range(FRAMES):
        np.testing.assert_allclose(out[..., t], keyhole(lr.frame(t), rec.prior.data), rtol=1e-5,
                                   atol=1e-5 * float(out.max()))
        # the output seen through the LR matrix is the measured frame (up to magnitude effects)
        seen = crop_lowres(out[..., t], lr.spatial_shape[:2])
        assert np.abs(seen - lr.frame(t)).mean() < 0.01 * float(lr.frame(t).mean())


def test_registered_keyhole_beats_plain_keyhole_in_tissue(case):
    truth = case["phantom"].hr.data
    plain = score_frames(load(case["outputs"]["keyhole"]).data, truth)
    registered = score_frames(load(case["outputs"]["keyhole-registered"]).data, truth)
    plain_mean = np.mean([row["ssim_tissue"] for row in plain])
    registered_mean = np.mean([row["ssim_tissue"] for row in registered])
    assert registered_mean > plain_mean + 0.03, (registered_mean, plain_mean)
    # in the frames far from the planning scan's motion state most of all
    assert min(row["ssim_tissue"] for row in registered) > min(row["ssim_tissue"] for row in plain)


def _assert_one_line_error(result, folder, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not [p for p in folder.iterdir() if p.name.startswith("out")]


def test_keyhole_without_prior_is_refused(case, tmp_path):
    result = _invoke(case["files"]["lr"], "--method", "keyhole", "-o", tmp_path / "out.nii.gz")
    _assert_one_line_error(result, tmp_path, "dynamic_lr.nii.gz", "--method keyhole needs the planning scan",
                           "--prior")
    result = _invoke(case["files"]["lr"], "--method", "keyhole-registered", "-o", tmp_path / "out.nii.gz")
    _assert_one_line_error(result, tmp_path, "keyhole-registered", "--prior")


def test_keyhole_with_finetune_is_refused(case, tmp_path):
    files = case["files"]
    result = _invoke(files["lr"], "--prior", files["planning"], "--method", "keyhole", "--finetune",
                     "-o", tmp_path / "out.nii.gz")
    _assert_one_line_error(result, tmp_path, "--method keyhole: a keyhole method has no model to fine-tune",
                           "turn fine-tuning off")


def test_unknown_method_lists_the_choices(case, tmp_path):
    files = case["files"]
    result = _invoke(files["lr"], "--prior", files["planning"], "--method", "zero-fill",
                     "-o", tmp_path / "out.nii.gz")
    _assert_one_line_error(result, tmp_path, "--method zero-fill", "network, keyhole, keyhole-registered")


def test_gated_keyhole_shows_what_was_measured_where_the_prior_is_wrong():
    """On a needle phantom the gated keyhole keeps the registered keyhole's tissue detail but lets
    far less of a needle that only the planning scan has show through."""
    from mrisr.data import load_sample
    from mrisr.metrics import leakage, score_frame
    from mrisr.phantom import make_dynamic
    from mrisr.reconstruct import ReconstructOptions, iter_reconstruct
    from mrisr.reconstruct.keyhole import gated_keyhole

    sample = load_sample()
    crop = sample.with_data(np.ascontiguousarray(sample.data[16:112, 16:128, 8:24]))
    phantom = make_dynamic(crop, frames=3, keep=6.25, seed=3, planning_insert="needle")
    results = {method: list(iter_reconstruct(phantom.lr, phantom.planning, ReconstructOptions(method=method)))
               for method in ("keyhole-registered", "keyhole-gated")}
    leak, tissue = {}, {}
    for method, frames in results.items():
        leak[method] = np.mean([leakage(r.sr, phantom.planning_insert_mask[..., r.index],
                                        phantom.planning_insert_contrast) for r in frames])
        tissue[method] = np.mean([score_frame(r.sr, phantom.hr.frame(r.index))["ssim_tissue"] for r in frames])
    assert leak["keyhole-gated"] < 0.6 * leak["keyhole-registered"], leak
    assert tissue["keyhole-gated"] > tissue["keyhole-registered"] - 0.01, tissue
    # where the reference is the truth itself the gate is open everywhere: the truth's detail is kept
    from mrisr.kspace.functional import crop_lowres

    truth = phantom.hr.frame(1)
    lr = crop_lowres(truth, phantom.lr.frame(1).shape[:2])
    np.testing.assert_allclose(gated_keyhole(lr, truth), truth, atol=1e-3 * float(truth.max()))


@pytest.mark.parametrize("divisors", [(4, 4), (5, 5), (4, 3)])
def test_local_level_is_the_full_gaussian_within_half_a_percent(divisors):
    """The coarse-grid level equals the Gaussian of every voxel (plus the floor) where it matters."""
    from scipy import ndimage

    from mrisr.reconstruct.maps import LEVEL_FLOOR, LEVEL_SIGMA_LR, local_level

    data = np.ascontiguousarray(load_sample().data[:, :, 10:14], dtype=np.float32)
    hr = data[: data.shape[0] - data.shape[0] % 2, : data.shape[1] - data.shape[1] % 2]
    lr_inplane = tuple(2 * (n // (2 * d)) for n, d in zip(hr.shape[:2], divisors))
    sinc = zero_fill(crop_lowres(hr, lr_inplane), hr.shape[:2])
    sigma = [LEVEL_SIGMA_LR * h / lr for h, lr in zip(sinc.shape[:2], lr_inplane)] + [0.0]
    exact = ndimage.gaussian_filter(sinc, sigma) + np.float32(LEVEL_FLOOR * np.percentile(sinc, 99))
    fast = local_level(sinc, lr_inplane)
    inner = tuple(slice(int(2 * s), n - int(2 * s)) for s, n in zip(sigma[:2], sinc.shape[:2]))
    rel = np.abs(fast - exact)[inner] / exact[inner]
    assert float(np.percentile(rel, 99)) < 0.0025 and float(rel.max()) < 0.005


@pytest.mark.parametrize("shape,size", [((40, 36, 5), 9), ((6, 5, 2), 9), ((17, 23, 1), 3)])
def test_spread_minimum_is_scipys_in_plane_minimum_filter(shape, size):
    from scipy import ndimage

    from mrisr.reconstruct.gate import spread_minimum

    weight = np.clip(np.random.default_rng(size).random(shape) * 3 - 1, 0, 1).astype(np.float32)
    expected = ndimage.minimum_filter(weight, size=(size, size, 1))
    out = spread_minimum(weight, size)
    assert out.shape == weight.shape and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, expected)


def test_spread_minimum_rejects_an_even_window():
    from mrisr.reconstruct.gate import spread_minimum

    with pytest.raises(ValueError, match="odd window"):
        spread_minimum(np.zeros((8, 8, 2), np.float32), 8)
