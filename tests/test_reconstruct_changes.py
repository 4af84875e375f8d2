"""Sparse change recovery (mrisr.reconstruct.changes): a new structure keeps its edges, a withdrawn
one is cancelled, an unchanged frame is left alone, a prior of another contrast is not trusted."""

from __future__ import annotations

import numpy as np
import pytest
from mrisr_testdata import colin_crop, reconstruct_cli

from mrisr.batch.config import ReconstructSettings
from mrisr.data import load_sample
from mrisr.io import MrisrInputError
from mrisr.kspace.band import measured_band
from mrisr.kspace.functional import crop_lowres, fftc, ifftc, pad_kspace, zero_fill
from mrisr.metrics import contrast_recovery, leakage, object_mask, structure_contrast
from mrisr.models import make_tiny_checkpoint
from mrisr.phantom import make_dynamic
from mrisr.reconstruct import ReconstructOptions, iter_reconstruct
from mrisr.reconstruct.changes import SUPPORT_LEVEL, BandLimit, band_mask, robust_sigma, sparse_change
from mrisr.reconstruct.keyhole import gated_keyhole

LR = (32, 32)  # 6.25 % of a 128 x 128 in-plane matrix


@pytest.fixture(scope="module")
def anatomy() -> np.ndarray:
    """A real T1 slab (Colin27), 128 x 128 x 6, and a needle-like bar through its tissue."""
    return np.ascontiguousarray(load_sample().data[:, 8:136, 12:18], dtype=np.float32)


def _bar(shape) -> np.ndarray:
    """A 2-voxel-wide straight bar in the middle of the slab's tissue, on every slice."""
    bar = np.zeros(shape, dtype=bool)
    bar[63:65, 40:80, :] = True
    return bar


def _frame(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The measured LR frame of ``truth`` (central k-space, magnitude) and its sinc."""
    lr = crop_lowres(truth, LR)
    return lr, zero_fill(lr, truth.shape[:2])


def test_band_mask_is_the_real_part_of_the_centre_crop():
    """Applied through rfft2 (and pruned, as BandLimit), the mask equals Re(crop then zero-fill) of a real image: odd and even sizes."""
    import torch

    rng = np.random.default_rng(0)
    for hr, lr in (((24, 20), (8, 6)), ((25, 21), (7, 9)), ((16, 16), (5, 4))):
        image = rng.standard_normal((*hr, 2)).astype(np.float32)
        inside = pad_kspace(np.ones(lr, dtype=bool), hr, (0, 1))[:, :, None]
        expected = np.real(ifftc(np.where(inside, fftc(image.astype(np.complex64), (0, 1)), 0), (0, 1)))
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        got = torch.fft.irfft2(torch.fft.rfft2(x) * band_mask(hr, lr), s=hr).numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        pruned = BandLimit(hr, lr)(x).numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(pruned, expected, atol=1e-5)


def test_unchanged_frame_leaves_the_gated_keyhole_as_it_was(anatomy):
    lr, sinc = _frame(anatomy)
    band = measured_band(anatomy, LR)
    # the residual is rounding only: the spread is the floor, and nothing exceeds the threshold
    assert robust_sigma(sinc - band, sinc) == pytest.approx(0.005 * float(np.percentile(sinc[::2, ::2], 99)))
    assert not any(a.any() for a in sparse_change(sinc, band, LR))
    np.testing.assert_array_equal(gated_keyhole(lr, anatomy, sinc, sparse_changes=True),
                                  gated_keyhole(lr, anatomy, sinc))


def test_a_new_structure_keeps_more_contrast_than_the_measured_band_gives_it(anatomy):
    """A needle that entered after the planning scan: the plain gate shows it as blurred as sinc;
    with the sparse change it keeps most of its contrast, far more than sinc."""
    bar = _bar(anatomy.shape)
    truth = np.where(bar, 0.05 * anatomy, anatomy).astype(np.float32)
    lr, sinc = _frame(truth)
    plain = gated_keyhole(lr, anatomy, sinc)
    changed = gated_keyhole(lr, anatomy, sinc, sparse_changes=True)
    r_sinc, r_plain = contrast_recovery(sinc, truth, bar), contrast_recovery(plain, truth, bar)
    r_changed = contrast_recovery(changed, truth, bar)
    assert r_changed > 0.7, (r_sinc, r_plain, r_changed)
    assert r_changed > 1.5 * max(r_sinc, r_plain), (r_sinc, r_plain, r_changed)
    # the change sits on the bar: most of its mass within a voxel of it
    change, _ = sparse_change(sinc, measured_band(anatomy, LR), LR)
    from scipy import ndimage

    near = ndimage.binary_dilation(bar, iterations=1)
    assert np.abs(change[near]).sum() > 0.6 * np.abs(change).sum()


def test_the_change_stays_in_the_object(anatomy):
    """Where neither the frame nor the reference shows the object (air), the change is exactly zero:
    a faint thin line in the air, which the band shows below the support level, is left as measured
    (unconfined, the L1 fit turned it into a sharp change at 550 voxels of air), while a new bar in the tissue is still found."""
    import torch

    high = float(np.percentile(anatomy, 99))
    truth = np.where(_bar(anatomy.shape), 0.05 * anatomy, anatomy).astype(np.float32)
    air_line = np.zeros(anatomy.shape, dtype=bool)
    air_line[2, 20:100, :] = True  # a column of air at the field of view's edge
    assert not anatomy[air_line].any()
    truth[air_line] = 0.15 * high
    lr, sinc = _frame(truth)
    band = measured_band(anatomy, LR)
    change, change_band = sparse_change(sinc, band, LR)
    level = float(np.percentile(sinc[::2, ::2], 99))
    air = np.maximum(sinc, band) <= SUPPORT_LEVEL * level
    assert air[air_line].mean() > 0.5  # most of the line is air by the support's own measure
    assert not change[air].any()
    assert change[_bar(anatomy.shape)].mean() < -0.3 * high  # the bar in the tissue is still a change
    expected = BandLimit(anatomy.shape[:2], LR)(torch.from_numpy(np.ascontiguousarray(change.transpose(2, 0, 1))))
    np.testing.assert_allclose(change_band, expected.numpy().transpose(1, 2, 0), atol=1e-5 * level)


def test_a_withdrawn_structure_is_filled(anatomy):
    """A needle only the planning scan has: the change fills most of its void, on the bar, and what
    still shows stays at the plain gate's level (here 0.17 plain, 0.19 with the change; on the
    phantoms of benchmarks/fidelity.py it fell on the real scan and rose on MNI152)."""
    from scipy import ndimage

    bar = _bar(anatomy.shape)
    planning = np.where(bar, 0.05 * anatomy, anatomy).astype(np.float32)
    lr, sinc = _frame(anatomy)
    change, _ = sparse_change(sinc, measured_band(planning, LR), LR)
    void = float((anatomy - planning)[bar].sum())
    near = ndimage.binary_dilation(bar, iterations=1)
    assert change[near].sum() > 0.7 * void
    assert np.abs(change[near]).sum() > 0.6 * np.abs(change).sum()
    planning_contrast = structure_contrast(planning, bar)
    plain = leakage(gated_keyhole(lr, planning, sinc), bar, planning_contrast)
    changed = leakage(gated_keyhole(lr, planning, sinc, sparse_changes=True), bar, planning_contrast)
    assert changed < 0.25 and changed < plain + 0.05, (plain, changed)


def test_a_prior_of_another_contrast_is_not_rescued(anatomy):
    """Inverted contrast: the residual is large everywhere, so the threshold is too and the change
    stays small; the output stays close to the plain gate's fallback to the measured band."""
    mask = object_mask(anatomy)
    inverted = np.where(mask, anatomy.max() - anatomy, 0).astype(np.float32)
    lr, sinc = _frame(anatomy)
    plain = gated_keyhole(lr, inverted, sinc)
    changed = gated_keyhole(lr, inverted, sinc, sparse_changes=True)
    scale = float(np.percentile(anatomy, 99))
    assert float(np.abs(changed - plain)[mask].mean()) < 0.02 * scale


def test_options_default_on_and_validated():
    assert ReconstructOptions().sparse_changes is True
    assert ReconstructSettings().sparse_changes is True
    with pytest.raises(MrisrInputError, match="sparse_changes"):
        ReconstructOptions(sparse_changes="often")


@pytest.mark.parametrize("method", ["keyhole-gated", "network"])
def test_the_pipeline_passes_the_option_on(tmp_path, method):
    """keyhole-gated and a gated-keyhole network: the option changes the output, and off is the plain gate."""
    crop = colin_crop()
    phantom = make_dynamic(crop, frames=2, keep=6.25, seed=4, insert="needle")
    model = None
    if method == "network":
        model = load_model_tiny(tmp_path)
    outs = {}
    for flag in (False, True):
        options = ReconstructOptions(method=method, sparse_changes=flag)
        outs[flag] = [r.sr for r in iter_reconstruct(phantom.lr, phantom.planning, options, model=model)]
    assert all(not np.allclose(a, b) for a, b in zip(outs[False], outs[True]))
    rec_recovery = [contrast_recovery(f, phantom.hr.data[..., t], phantom.insert_mask[..., t])
                    for t, f in enumerate(outs[True]) if phantom.insert_mask[..., t].any()]
    plain_recovery = [contrast_recovery(f, phantom.hr.data[..., t], phantom.insert_mask[..., t])
                      for t, f in enumerate(outs[False]) if phantom.insert_mask[..., t].any()]
    assert np.mean(rec_recovery) > np.mean(plain_recovery)


def load_model_tiny(tmp_path):
    from mrisr.models import load as load_model

    return load_model(make_tiny_checkpoint(tmp_path / "gated.safetensors", prior_input="gated-keyhole"))


def test_cli_flag_reaches_the_sidecar(tmp_path):
    crop = colin_crop()
    files = make_dynamic(crop, frames=2, keep=6.25, seed=4).save(tmp_path / "phantom")
    outputs = {}
    for flags, expected in (([], True), (["--no-sparse-changes"], False)):
        side, outputs[expected] = reconstruct_cli(files, tmp_path / f"sr_{expected}.nii.gz", *flags)
        assert side["options"]["sparse_changes"] is expected
    assert not np.allclose(outputs[True], outputs[False])


def test_continuation_lowers_the_leakage(monkeypatch):
    """A needle only the planning scan has, on a moving phantom: with the threshold falling over the
    iterations the gated keyhole shows less of it than with the final threshold throughout."""
    import mrisr.reconstruct.changes as changes
    from mrisr.metrics import leakage as leak

    assert changes.SPARSE_CONTINUATION  # on by default
    crop = colin_crop()
    for keep in (6.25, 4.0):
        phantom = make_dynamic(crop, frames=2, keep=keep, seed=4, planning_insert="needle")
        shown = {}
        for flag in (False, True):
            monkeypatch.setattr(changes, "SPARSE_CONTINUATION", flag)
            frames = [r.sr for r in iter_reconstruct(phantom.lr, phantom.planning, ReconstructOptions(method="keyhole-gated"))]
            shown[flag] = np.mean([leak(f, phantom.planning_insert_mask[..., t], phantom.planning_insert_contrast)
                                   for t, f in enumerate(frames) if phantom.planning_insert_mask[..., t].any()])
        assert shown[True] < shown[False] - 0.005, (keep, shown)


def test_iterations_grow_as_the_band_narrows():
    from mrisr.reconstruct.changes import SPARSE_ITERATIONS, SPARSE_MAX_ITERATIONS, sparse_iterations

    assert sparse_iterations((256, 256), (128, 128)) == sparse_iterations((256, 256), (64, 64)) == SPARSE_ITERATIONS
    assert sparse_iterations((256, 256), (51, 51)) == 25
    assert sparse_iterations((256, 256), (16, 16)) == SPARSE_MAX_ITERATIONS


def test_the_network_input_carries_the_sign_of_the_change_it_found():
    from mrisr.kspace.band import measured_band
    from mrisr.reconstruct.keyhole import gated_keyhole
    from mrisr.reconstruct.network_input import form_network_input

    ref = np.zeros((32, 32, 2), np.float32)
    ref[6:26, 6:26] = 1.0
    truth = ref.copy()
    truth[15:17, 9:23] = 0.0  # a void that entered
    truth[9:12, 9:12] = 2.0  # and a bright spot
    lr = np.abs(crop_lowres(truth, (16, 16)))
    sinc = measured_band(truth, (16, 16))
    plain = gated_keyhole(lr, ref, sinc, sparse_changes=True)
    formed = form_network_input(lr, ref, sinc, sparse_changes=True)
    composite, sign = formed.given, formed.change_sign
    np.testing.assert_array_equal(composite, plain)
    assert sign.dtype == np.int8 and set(np.unique(sign)) <= {-1, 0, 1}
    assert (sign[15:17, 11:21] == -1).mean() > 0.8 and (sign[10, 10] == 1).all()
    assert (sign[:, :3] == 0).all()  # the air: nothing changed there
    assert form_network_input(lr, ref, sinc, sparse_changes=False).change_sign is None


def test_the_network_may_sharpen_a_measured_change_but_not_undo_it():
    from mrisr.reconstruct.change_guard import keep_measured_change

    given = np.full((4, 3, 2), 5.0, np.float32)
    sign = np.zeros((4, 3, 2), np.int8)
    sign[0], sign[1] = -1, 1
    output = np.array([4.0, 6.0, 5.5], np.float32)[None, :, None].repeat(4, 0).repeat(2, 2)
    kept = keep_measured_change(output, given, sign)
    assert kept.dtype == np.float32
    np.testing.assert_array_equal(kept[0], np.minimum(output[0], 5.0))  # lost signal: at most the input
    np.testing.assert_array_equal(kept[1], np.maximum(output[1], 5.0))  # gained signal: at least the input
    np.testing.assert_array_equal(kept[2:], output[2:])  # no change measured: the network's as it is


def test_a_network_that_undoes_an_entering_needle_is_overruled(tmp_path):
    """A network that hands back the registered planning scan (no needle) where the frame measured
    the needle: the output keeps the gated keyhole's needle there, and is the network's elsewhere."""
    from mrisr.reconstruct import prepare_state, reconstruct_frames

    phantom = make_dynamic(colin_crop(), frames=2, keep=6.25, seed=4, insert="needle")
    model = load_model_tiny(tmp_path)
    rec = prepare_state(phantom.lr, phantom.planning, ReconstructOptions(), phantom.lr.frame(0), model=model)
    handed = {}
    undo = np.float32(1.5)  # brighter than its input everywhere: fills any void back in

    def predict(sinc, given, **kwargs):
        handed["given"] = given
        return given * undo

    rec.model.predict = predict
    for result in reconstruct_frames(rec, phantom.lr.frames()):
        core = phantom.insert_mask[..., result.index]
        given = handed["given"]
        lost = result.sr < given * undo  # where the guard overruled the network
        assert lost.any() and (result.sr[lost] == given[lost]).all()
        assert (result.sr[~lost] == given[~lost] * undo).all()
        if core.any():  # the needle's core is among the overruled voxels
            assert lost[core].mean() > 0.5


def test_the_guard_copies_unless_asked_to_work_in_place():
    from mrisr.reconstruct.change_guard import keep_measured_change

    output = np.ones((3, 3, 2), np.float32)
    given = np.zeros((3, 3, 2), np.float32)
    sign = np.zeros((3, 3, 2), np.int8)
    sign[1, 1, 0] = -1
    copied = keep_measured_change(output, given, sign)
    assert copied is not output and output[1, 1, 0] == 1.0 and copied[1, 1, 0] == 0.0
    same = keep_measured_change(output, given, sign, in_place=True)
    assert same is output and output[1, 1, 0] == 0.0
    assert keep_measured_change(output.astype(np.float64), given, sign, in_place=True).dtype == np.float32
