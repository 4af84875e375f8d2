"""k-space core: centred FFTs, kept block sizes, crop / zero-fill, volume simulation, noise and RNG hygiene."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrisr import kspace
from mrisr.io import Volume, coarsen_affine


def test_fftc_is_centred_forward_normalised():
    rng = np.random.default_rng(0)
    image = rng.random((16, 15, 3))
    k = kspace.fftc(image)
    # DC at N // 2 holds the in-plane mean of each slice
    np.testing.assert_allclose(k[8, 7], image.mean(axis=(0, 1)), rtol=1e-12)
    np.testing.assert_allclose(kspace.ifftc(k).real, image, atol=1e-12)
    # torch gives the same numbers
    kt = kspace.fftc(torch.from_numpy(image))
    np.testing.assert_allclose(kt.numpy(), k, atol=1e-12)
    np.testing.assert_allclose(kspace.ifftc(kt).real.numpy(), image, atol=1e-12)


@pytest.mark.parametrize(("keep", "side"), [(25, 128), (10, 80), (6.25, 64), (4, 50), (100, 256)])
def test_center_keep_shape_square(keep, side):
    size = kspace.center_keep_shape((256, 256), keep)
    assert size == (side, side)
    assert kspace.keep_percent_of((256, 256), size) <= keep + 1e-9


@pytest.mark.parametrize("shape", [(256, 192), (192, 256), (63, 57), (100, 80), (64, 60, 12)])
@pytest.mark.parametrize("keep", [25, 10, 6.25, 4])
def test_center_keep_shape_keeps_aspect_parity_and_budget(shape, keep):
    size = kspace.center_keep_shape(shape, keep)
    assert len(size) == len(shape)
    assert all(1 <= m <= n and m % 2 == n % 2 for m, n in zip(size, shape))
    assert kspace.keep_percent_of(shape, size) <= keep + 1e-9
    # aspect within one parity step of the matrix's aspect
    for m, n in zip(size[1:], shape[1:]):
        assert abs(m - size[0] * n / shape[0]) <= 1.0 + 1e-9
    # the largest such block: the next size up along axis 0 would exceed the budget
    bigger = size[0] + 2
    if bigger <= shape[0]:
        # other sides: nearest size of the right parity to the aspect-scaled ideal
        others = [n % 2 + 2 * round((bigger * n / shape[0] - n % 2) / 2) for n in shape[1:]]
        assert math.prod([bigger, *others]) / math.prod(shape) * 100 > keep


@pytest.mark.parametrize("keep", [0, -1, 150, float("nan")])
def test_center_keep_shape_rejects_bad_keep(keep):
    with pytest.raises(ValueError, match="keep must be in"):
        kspace.center_keep_shape((64, 64), keep)


def test_crop_and_pad_are_inverse_placements():
    rng = np.random.default_rng(1)
    k = rng.random((20, 17, 2)) + 1j * rng.random((20, 17, 2))
    small = kspace.crop_kspace(k, (8, 7))
    assert small.shape == (8, 7, 2)
    assert small[4, 3, 0] == k[10, 8, 0]  # DC stays at M // 2
    padded = kspace.pad_kspace(small, (20, 17))
    np.testing.assert_array_equal(kspace.crop_kspace(padded, (8, 7)), small)
    assert np.count_nonzero(padded[..., 0]) == 8 * 7
    with pytest.raises(ValueError, match="cannot crop"):
        kspace.crop_kspace(k, (21, 7))
    with pytest.raises(ValueError, match="cannot zero-fill"):
        kspace.pad_kspace(k, (10, 17))


def test_zero_fill_works_on_torch_and_numpy():
    rng = np.random.default_rng(2)
    image = rng.random((12, 10, 3)).astype(np.float32)
    out_np = kspace.zero_fill(image, (24, 20))
    out_t = kspace.zero_fill(torch.from_numpy(image), (24, 20))
    assert out_np.shape == (24, 20, 3) and out_np.dtype == np.float32
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), out_np, atol=1e-5)
    # the original samples are kept at even positions (sinc interpolation by an integer factor)
    np.testing.assert_allclose(out_np[::2, ::2], image, atol=1e-4)


def test_keep_100_is_identity(tiny_volume):
    out, info = kspace.simulate_volume(tiny_volume, 100.0)
    assert out.data.shape == tiny_volume.data.shape
    assert info.keep_actual == pytest.approx(100.0)
    scale = np.abs(tiny_volume.data).max()
    np.testing.assert_allclose(out.data, tiny_volume.data, atol=1e-5 * scale)
    np.testing.assert_array_equal(out.affine, tiny_volume.affine)


@pytest.mark.parametrize(("shape", "keep"), [((32, 28, 12), 25.0), ((32, 28, 12), 10.0), ((64, 56, 6), 6.25)])
def test_zero_filled_output_keeps_mean_and_grid(oblique_affine, make_phantom, shape, keep):
    volume = Volume(data=make_phantom(shape), affine=oblique_affine)
    out, info = kspace.simulate_volume(volume, keep, zero_fill=True)
    assert out.data.shape == volume.data.shape
    np.testing.assert_array_equal(out.affine, volume.affine)
    assert out.data.mean() == pytest.approx(volume.data.mean(), rel=0.01)
    assert info.keep_actual <= keep
    # lost detail: not the identity
    assert np.abs(out.data - volume.data).max() > 1.0


def test_complex_zero_fill_keeps_mean_exactly(tiny_volume):
    """The DC coefficient is the mean; only taking the magnitude of ringing can move it."""
    lr = kspace.center_crop_lowres(tiny_volume.data, 4.0, magnitude=False)
    filled = kspace.zero_fill(lr, (32, 28), magnitude=False)
    np.testing.assert_allclose(filled.real.mean(axis=(0, 1)), tiny_volume.data.mean(axis=(0, 1)), rtol=1e-5, atol=1e-6)


def test_cropped_output_shape_affine_and_mean(tiny_volume):
    out, info = kspace.simulate_volume(tiny_volume, 25.0)
    assert out.data.shape == (16, 14, 12)
    assert info.lr_inplane == (16, 14)
    assert info.keep_actual == pytest.approx(25.0)
    np.testing.assert_allclose(out.affine, coarsen_affine(tiny_volume.affine, (32, 28, 12), (16, 14, 12)))
    np.testing.assert_allclose(out.zooms, (1.8, 2.2, 3.0), rtol=1e-12)
    assert out.data.mean() == pytest.approx(tiny_volume.data.mean(), rel=0.01)
    assert (out.qform_code, out.sform_code) == (tiny_volume.qform_code, tiny_volume.sform_code)
    # the same numbers as the functional layer
    np.testing.assert_allclose(out.data, kspace.center_crop_lowres(tiny_volume.data, 25.0), atol=1e-4)


@pytest.mark.parametrize(("mode", "zero_fill"), [("center", False), ("center", True), ("equispaced", True)])
def test_4d_is_processed_frame_by_frame(tiny_series, mode, zero_fill):
    out, _ = kspace.simulate_volume(tiny_series, 10.0, mode=mode, zero_fill=zero_fill, seed=4)
    assert out.is_4d and out.n_frames == 3
    assert out.tr == pytest.approx(0.45)
    for t in range(3):
        frame = tiny_series.with_data(tiny_series.frame(t), tr=None)
        single, _ = kspace.simulate_volume(frame, 10.0, mode=mode, zero_fill=zero_fill, seed=4)
        np.testing.assert_allclose(out.data[..., t], single.data, atol=1e-4)
        np.testing.assert_allclose(out.affine, single.affine)


def test_three_d_mode_crops_slice_axis(tiny_volume):
    out, info = kspace.simulate_volume(tiny_volume, 12.5, three_d=True)
    expected = kspace.center_keep_shape((32, 28, 12), 12.5)
    assert out.data.shape == expected
    assert out.data.shape[2] < 12
    np.testing.assert_allclose(out.affine, coarsen_affine(tiny_volume.affine, (32, 28, 12), expected))
    assert info.keep_actual == pytest.approx(kspace.keep_percent_of((32, 28, 12), expected))
    # in-plane mode leaves the slice axis alone
    flat, _ = kspace.simulate_volume(tiny_volume, 12.5)
    assert flat.data.shape[2] == 12
    with pytest.raises(ValueError, match="in-plane only"):
        kspace.simulate_volume(tiny_volume, 12.5, mode="random", three_d=True)


@pytest.mark.parametrize("keep", [0, -1, 150])
def test_simulate_volume_rejects_bad_keep(tiny_volume, keep):
    with pytest.raises(ValueError, match="keep must be in"):
        kspace.simulate_volume(tiny_volume, keep)


def _noise_phantom(seed: int = 0) -> Volume:
    """Bright block in the middle, a wide zero background around it."""
    data = np.zeros((64, 64, 8), np.float32)
    data[24:40, 24:40, :] = 200.0
    return Volume(data=data, affine=np.eye(4))


@pytest.mark.parametrize("keep", [100.0, 25.0])
def test_noise_matches_requested_snr(keep):
    volume = _noise_phantom()
    snr = 20.0
    reference = 200.0  # mean of the object, what add_complex_noise measures on this phantom
    out, _ = kspace.simulate_volume(volume, keep, noise_snr=snr, seed=11)
    # far background of the LR grid: |complex Gaussian| is Rayleigh, E[m^2] = 2 sigma^2
    n = out.data.shape[0]
    background = np.concatenate([out.data[: n // 6].ravel(), out.data[-n // 6 :].ravel()])
    sigma = np.sqrt(np.mean(background.astype(np.float64) ** 2) / 2)
    # white noise: keeping a fraction f of k-space keeps a fraction f of its variance
    expected = reference / snr * np.sqrt(keep / 100.0)
    assert sigma == pytest.approx(expected, rel=0.15)


def test_noise_is_seeded():
    volume = _noise_phantom()
    a, _ = kspace.simulate_volume(volume, 25.0, noise_snr=10.0, seed=5)
    b, _ = kspace.simulate_volume(volume, 25.0, noise_snr=10.0, seed=5)
    c, _ = kspace.simulate_volume(volume, 25.0, noise_snr=10.0, seed=6)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.allclose(a.data, c.data)
    with pytest.raises(ValueError, match="SNR must be > 0"):
        kspace.add_complex_noise(volume.data, -1.0, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("mode", "zero_fill", "snr"),
    [("center", False, 15.0), ("random", True, None), ("equispaced", True, 30.0), ("variable-density", True, 8.0)],
)
def test_global_rng_untouched(tiny_series, mode, zero_fill, snr):
    np.random.seed(1234)
    torch.manual_seed(1234)
    numpy_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    kspace.simulate_volume(tiny_series, 10.0, mode=mode, zero_fill=zero_fill, noise_snr=snr, seed=None)
    kspace.simulate_volume(tiny_series, 10.0, mode=mode, zero_fill=zero_fill, noise_snr=snr, seed=3)
    kspace.make_mask(mode, 10.0)((32, 28))
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    assert torch.equal(torch.get_rng_state(), torch_state)
