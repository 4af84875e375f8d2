"""Training pairs from real anatomy: deterministic per seed, right shapes, own RNG, same operator as inference."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mrisr.data import load_sample
from mrisr.io import MrisrInputError
from mrisr.kspace import center_crop_lowres, zero_fill
from mrisr.training.pairs import PairGenerator, PairSettings, degrade_prior, sinc_lowres
from mrisr.training.sources import SlabVolume, build_bank, resample_slab

PATCH = (32, 32, 8)


@pytest.fixture(scope="module")
def bank() -> list[SlabVolume]:
    """Two slabs of the real sample (1.5 x 1.5 x 3 mm), scaled to ~[0, 1] like the training bank."""
    data = load_sample().data
    slabs = []
    for name, crop in (("upper", np.s_[24:104, 24:120, 4:20]), ("lower", np.s_[20:100, 30:110, 14:30])):
        arr = np.ascontiguousarray(data[crop], dtype=np.float32)
        slabs.append(SlabVolume(arr / np.percentile(arr, 99.5), (1.5, 1.5, 3.0), name, "axial"))
    return slabs


SETTINGS = PairSettings(patch=PATCH, keep_range=(4.0, 25.0), noise_probability=0.5)


def _as_arrays(samples):
    return [(s.sinc.numpy(), s.prior.numpy(), s.target.numpy(), s.keep) for s in samples]


def test_same_seed_same_pairs_other_seed_other_pairs(bank):
    first = _as_arrays(PairGenerator(bank, SETTINGS, seed=5).draw_group(3))
    second = _as_arrays(PairGenerator(bank, SETTINGS, seed=5).draw_group(3))
    for a, b in zip(first, second):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    other = _as_arrays(PairGenerator(bank, SETTINGS, seed=6).draw_group(3))
    assert not np.array_equal(first[0][2], other[0][2])


def test_shapes_keep_levels_and_self_prior_inputs(bank):
    gen = PairGenerator(bank, SETTINGS, seed=1)
    for self_prior in (False, True):
        samples = gen.draw_group(3, self_prior=self_prior)
        assert len(samples) == 3
        for s in samples:
            assert tuple(s.sinc.shape) == tuple(s.prior.shape) == tuple(s.target.shape) == PATCH
            assert s.sinc.dtype == s.target.dtype == torch.float32
            assert 4.0 <= s.keep <= 25.0
            assert torch.isfinite(s.sinc).all() and torch.isfinite(s.prior).all()
            assert float(s.target.max()) > 0.1  # patches are drawn on the anatomy
            if self_prior:
                assert tuple(s.prev_sinc.shape) == tuple(s.prev_prior.shape) == PATCH
            else:
                assert s.prev_sinc is None and s.prev_prior is None
        # one deformed field of view per group, each sample its own keep level
        assert len({s.keep for s in samples}) == 3


def test_patch_larger_than_the_slab_is_padded(bank):
    settings = PairSettings(patch=(96, 112, 20), noise_probability=0.0)
    sample = PairGenerator(bank, settings, seed=0).draw()
    assert tuple(sample.target.shape) == (96, 112, 20)


def test_global_random_state_is_untouched(bank):
    np_state = np.random.get_state()
    torch_state = torch.random.get_rng_state()
    py_state = random.getstate()
    gen = PairGenerator(bank, SETTINGS, seed=3)
    gen.draw_group(2)
    gen.draw_group(2, self_prior=True)
    degrade_prior(torch.ones(8, 8, 4), np.random.default_rng(0))
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert random.getstate() == py_state


@pytest.mark.parametrize("keep", [4.0, 6.25, 25.0])
def test_training_input_is_what_reconstruction_feeds_the_network(bank, keep):
    # at inference the network sees the zero-filled LR *magnitude* image (what a scanner writes)
    target = torch.from_numpy(bank[0].data)
    trained_on = sinc_lowres(target, keep, None, np.random.default_rng(0)).numpy()
    inference = zero_fill(center_crop_lowres(bank[0].data, keep), bank[0].data.shape[:2])
    np.testing.assert_allclose(trained_on, inference, atol=1e-5 * float(inference.max()))


def test_noise_is_seeded(bank):
    target = torch.from_numpy(bank[0].data)
    a = sinc_lowres(target, 10.0, 30.0, np.random.default_rng(1))
    b = sinc_lowres(target, 10.0, 30.0, np.random.default_rng(1))
    clean = sinc_lowres(target, 10.0, None, np.random.default_rng(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, clean)


def test_empty_bank_is_refused():
    with pytest.raises(ValueError, match="empty"):
        PairGenerator([], SETTINGS)


def test_resample_slab_geometry():
    data = np.random.default_rng(0).random((40, 30, 24)).astype(np.float32)
    out = resample_slab(data, np.array([1.0, 1.0, 1.0]), 2.0, 4.0)
    assert out.shape == (20, 15, 6)
    assert out.dtype == np.float32


def test_build_bank_from_a_nifti_path(tmp_path, write_nifti, make_phantom):
    path = write_nifti(tmp_path / "static.nii.gz", make_phantom((40, 60, 20)), np.diag([1.0, 1.0, 1.0, 1.0]))
    slabs = build_bank([str(path)], [2.0], [3.0, 5.0], ["axial", "coronal"])
    assert [(s.orientation, s.zooms) for s in slabs] == [
        ("axial", (2.0, 2.0, 3.0)), ("axial", (2.0, 2.0, 5.0)),
        ("coronal", (2.0, 2.0, 3.0)), ("coronal", (2.0, 2.0, 5.0)),
    ]
    # coronal: the slice axis is the source's Y axis (the long one here), in-plane X and Z
    axial, coronal = slabs[0].data.shape, slabs[2].data.shape
    assert coronal[2] > 2 * axial[2]
    assert coronal[0] == axial[0]
    assert all(0.5 < np.percentile(s.data, 99.9) < 1.5 for s in slabs)


def test_a_thick_slice_source_supplies_only_what_it_measured(tmp_path, write_nifti, make_phantom):
    # a clinical scan: 1 mm in-plane, 6.5 mm slices; coronal and sagittal would need its slice
    # axis in-plane, and thinner slices would be interpolated
    path = write_nifti(tmp_path / "thick.nii.gz", make_phantom((60, 60, 12)), np.diag([1.0, 1.0, 6.5, 1.0]))
    slabs = build_bank([str(path)], [1.5, 2.0], [2.0, 3.0, 8.0], ["axial", "coronal", "sagittal"])
    assert [(s.orientation, s.zooms) for s in slabs] == [
        ("axial", (1.5, 1.5, 6.5)), ("axial", (1.5, 1.5, 8.0)), ("axial", (2.0, 2.0, 6.5)), ("axial", (2.0, 2.0, 8.0)),
    ]
    assert slabs[0].data.shape[2] == 12  # its own slices, not resampled
    with pytest.raises(MrisrInputError, match="thick.nii.gz: training source .* supplies none of the geometries"):
        build_bank([str(path)], [1.5], [3.0], ["coronal"])


def test_real_sources_resolve_in_the_sources_folder(tmp_path, monkeypatch, write_nifti, make_phantom):
    from mrisr.training.sources import REAL_SOURCES, source_path

    monkeypatch.setenv("MRISR_SOURCES", str(tmp_path))
    with pytest.raises(MrisrInputError, match=r"training source 'brain2' not found; make it with .*make_training_sources\.py"):
        source_path("brain2")
    made = write_nifti(tmp_path / REAL_SOURCES["brain2"], make_phantom((40, 40, 8)), np.diag([0.78, 0.78, 6.5, 1.0]))
    assert source_path("brain2") == made


def test_each_source_is_drawn_equally_often():
    # one source with nine geometries, one with a single geometry: the draws still split evenly
    rng = np.random.default_rng(0)
    many = [SlabVolume(rng.random((40, 40, 10), dtype=np.float32), (1.0 + i / 100, 1.0, 2.0), "template", "axial")
            for i in range(9)]
    one = [SlabVolume(rng.random((40, 40, 10), dtype=np.float32), (1.5, 1.5, 6.5), "clinical", "axial")]
    gen = PairGenerator(many + one, PairSettings(patch=(16, 16, 4)), seed=1)
    draws = [gen._base()[1] for _ in range(400)]
    share = sum(z == (1.5, 1.5, 6.5) for z in draws) / len(draws)
    assert 0.42 < share < 0.58


def test_unknown_source_is_a_one_line_error():
    with pytest.raises(MrisrInputError, match="training source not found; use colin27, mni152, inia19"):
        build_bank(["no-such-template"], [2.0], [4.0], ["axial"])
