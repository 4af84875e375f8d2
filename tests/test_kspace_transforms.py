"""MONAI-style transforms over the k-space core: channel-first numpy / torch, seeding, dict bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from mrisr import kspace
from mrisr.kspace.transforms import CenterCrop, SimulateLowRes, SimulateLowResd, ZeroFill


@pytest.fixture
def channel_first(tiny_volume) -> np.ndarray:
    """(C, X, Y, Z) = (2, 32, 28, 12): the tiny volume and a scaled, flipped copy."""
    return np.stack([tiny_volume.data, 0.5 * tiny_volume.data[::-1]]).astype(np.float32)


def test_fixed_keep_matches_functional_per_channel(channel_first):
    out = SimulateLowRes(25.0, zero_fill=False)(channel_first)
    assert isinstance(out, np.ndarray) and out.shape == (2, 16, 14, 12)
    for c in range(2):
        np.testing.assert_allclose(out[c], kspace.center_crop_lowres(channel_first[c], 25.0), atol=1e-4)


def test_torch_in_torch_out(channel_first):
    numpy_out = SimulateLowRes(10.0, zero_fill=True)(channel_first)
    torch_out = SimulateLowRes(10.0, zero_fill=True)(torch.from_numpy(channel_first))
    assert isinstance(torch_out, torch.Tensor) and torch_out.dtype == torch.float32
    assert tuple(torch_out.shape) == channel_first.shape
    np.testing.assert_allclose(torch_out.numpy(), numpy_out, atol=1e-5)


def test_metatensor_stays_a_tensor(channel_first):
    image = MetaTensor(torch.from_numpy(channel_first), affine=torch.eye(4))
    out = SimulateLowRes(25.0, zero_fill=True)(image)
    assert isinstance(out, MetaTensor)  # same grid: metadata kept
    assert tuple(out.shape) == channel_first.shape
    np.testing.assert_array_equal(out.affine.numpy(), np.eye(4))
    np.testing.assert_allclose(out.numpy(), SimulateLowRes(25.0, zero_fill=True)(channel_first), atol=1e-5)
    cropped = SimulateLowRes(25.0, zero_fill=False)(image)
    assert isinstance(cropped, torch.Tensor) and tuple(cropped.shape) == (2, 16, 14, 12)


@pytest.mark.parametrize("mode", ["center", "random", "equispaced", "variable-density"])
def test_set_random_state_reproduces(channel_first, mode):
    def run(seed):
        transform = SimulateLowRes((5.0, 30.0), mode=mode, zero_fill=True, noise_snr=(10.0, 40.0))
        transform.set_random_state(seed)
        return [transform(channel_first) for _ in range(2)], transform

    (a1, a2), _ = run(7)
    (b1, b2), _ = run(7)
    (c1, _), _ = run(8)
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a1, a2)  # a new draw per call
    assert not np.array_equal(a1, c1)


def test_keep_is_drawn_from_range(channel_first):
    transform = SimulateLowRes((5.0, 30.0), zero_fill=False).set_random_state(0)
    seen = set()
    for _ in range(6):
        out = transform(channel_first)
        assert 5.0 <= transform._keep <= 30.0
        size = kspace.center_keep_shape((32, 28), transform._keep)
        assert out.shape == (2, *size, 12)
        seen.add(round(transform._keep, 6))
    assert len(seen) == 6


def test_dict_transform_records_keep_and_keeps_source(channel_first):
    target = channel_first[:1]
    transform = SimulateLowResd(
        keys="image", keep=(4.0, 25.0), zero_fill=True, output_keys="lowres", keep_key="keep"
    )
    transform.set_random_state(5)
    out = transform({"image": target, "subject": "s01"})
    assert set(out) == {"image", "lowres", "keep", "subject"}
    assert out["image"] is target  # the HR target is kept, LR written beside it
    assert 4.0 <= out["keep"] <= 25.0
    expected = SimulateLowRes(out["keep"], zero_fill=True)(target)
    np.testing.assert_allclose(out["lowres"], expected, atol=1e-5)
    again = SimulateLowResd(keys="image", keep=(4.0, 25.0), output_keys="lowres").set_random_state(5)
    repeat = again({"image": target})
    assert repeat["keep"] == out["keep"]
    np.testing.assert_array_equal(repeat["lowres"], out["lowres"])


def test_dict_transform_overwrites_by_default_with_torch(channel_first):
    data = {"image": torch.from_numpy(channel_first)}
    out = SimulateLowResd(keys="image", keep=25.0, zero_fill=False)(data)
    assert isinstance(out["image"], torch.Tensor)
    assert tuple(out["image"].shape) == (2, 16, 14, 12)
    assert out["keep"] == 25.0
    assert tuple(data["image"].shape) == channel_first.shape  # the input dict is not modified


def test_transforms_leave_global_rng_alone(channel_first):
    np.random.seed(99)
    torch.manual_seed(99)
    numpy_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    SimulateLowRes((5.0, 30.0), mode="random", noise_snr=(5.0, 20.0))(channel_first)
    SimulateLowResd(keys="image", keep=(5.0, 30.0), mode="variable-density").set_random_state(1)(
        {"image": torch.from_numpy(channel_first)}
    )
    after = np.random.get_state()
    assert np.array_equal(after[1], numpy_state[1]) and after[2] == numpy_state[2]
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_center_crop_then_zero_fill(channel_first):
    lowres = CenterCrop(6.25)(channel_first)
    size = kspace.center_keep_shape((32, 28), 6.25)
    assert lowres.shape == (2, *size, 12)
    np.testing.assert_allclose(lowres[0], kspace.center_crop_lowres(channel_first[0], 6.25), atol=1e-4)
    filled = ZeroFill((32, 28))(torch.from_numpy(lowres))
    assert isinstance(filled, torch.Tensor) and tuple(filled.shape) == channel_first.shape
    # sinc interpolation of the LR magnitude image, as the functional layer does it
    np.testing.assert_allclose(filled[1].numpy(), kspace.zero_fill(lowres[1], (32, 28)), atol=1e-4)
