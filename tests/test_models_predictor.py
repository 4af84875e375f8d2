"""SRModel.predict: normalisation inverted, prior rules, tiled vs whole-frame inference; bundled models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrisr.io import MrisrInputError
from mrisr.kspace import center_crop_lowres, zero_fill
from mrisr.models import SRModel, bundled_models, load, make_tiny_checkpoint, resolve_device, robust_scale

HR_SHAPE = (32, 28, 6)


def formed(lr_frame, prior, sinc):
    """What a gated-keyhole model's prior channel takes (the bundled default is one)."""
    from mrisr.reconstruct.network_input import form_network_input

    return form_network_input(lr_frame, prior, sinc, sparse_changes=False).given


@pytest.fixture(scope="module")
def frame_pair():
    """(sinc input, prior) on a 32x28x6 grid: a real k-space crop of a head-like phantom."""
    from mrisr_testdata import head_phantom

    target = head_phantom(HR_SHAPE, seed=1)
    prior = head_phantom(HR_SHAPE, seed=1, shift=(0.8, -0.5, 0.0))
    sinc = zero_fill(center_crop_lowres(target, 6.25), HR_SHAPE[:2])
    return sinc.astype(np.float32), prior


@pytest.fixture(scope="module")
def lr_frame():
    """The measured LR frame behind ``frame_pair``'s sinc (a gated-keyhole model needs it too)."""
    from mrisr_testdata import head_phantom

    return center_crop_lowres(head_phantom(HR_SHAPE, seed=1), 6.25).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {True: make_tiny_checkpoint(folder / "prior.safetensors", prior=True),
            False: make_tiny_checkpoint(folder / "noprior.safetensors", prior=False)}


def _perturbed(path) -> SRModel:
    """The tiny model with a seeded non-zero head, so its output is not just the input."""
    model = load(path)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        head = model.network.head
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.1)
        head.bias.copy_(torch.randn(head.bias.shape, generator=gen) * 0.01)
    return model


@pytest.mark.parametrize("prior", [True, False])
def test_untrained_tiny_model_returns_its_input(tiny_paths, frame_pair, prior):
    sinc, prior_frame = frame_pair
    model = load(tiny_paths[prior])
    out = model.predict(sinc, prior_frame)
    assert out.dtype == np.float32
    assert out.shape == HR_SHAPE
    np.testing.assert_allclose(out, sinc, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("prior", [True, False])
def test_normalisation_is_inverted(tiny_paths, frame_pair, prior):
    sinc, prior_frame = frame_pair
    model = _perturbed(tiny_paths[prior])
    out = model.predict(sinc, prior_frame)
    assert np.abs(out - sinc).max() > 0.01 * sinc.max()  # the network really changes the frame
    for factor in (10.0, 0.01):
        scaled = model.predict(sinc * factor, prior_frame * factor)
        np.testing.assert_allclose(scaled, out * factor, rtol=1e-4, atol=1e-4 * factor * float(out.max()))
    # an explicit scale is used as given: the same scale gives the same result
    scale = robust_scale(sinc, model.percentile)
    np.testing.assert_allclose(model.predict(sinc, prior_frame, scale=scale), out, rtol=1e-6)


def test_normalisation_comes_from_the_checkpoint(tiny_paths):
    model = load(tiny_paths[True])
    assert model.meta["normalisation"] == {"method": "percentile", "percentile": 99.5}
    assert model.percentile == 99.5


def test_robust_scale_ignores_outliers_and_agrees_between_numpy_and_torch(frame_pair):
    sinc, _ = frame_pair
    spiked = sinc.copy()
    spiked[3, 4, 2] = 1000 * sinc.max()
    base = robust_scale(sinc)
    assert robust_scale(spiked) == pytest.approx(base, rel=0.02)
    assert robust_scale(torch.from_numpy(sinc)) == pytest.approx(base, rel=1e-3)
    assert robust_scale(np.zeros((4, 4, 2))) == 1.0


def test_prior_model_without_prior_raises(tiny_paths, frame_pair):
    sinc, _ = frame_pair
    model = load(tiny_paths[True])
    with pytest.raises(MrisrInputError, match="trained with a prior") as exc:
        model.predict(sinc)
    assert "\n" not in str(exc.value)


def test_no_prior_model_ignores_a_prior(tiny_paths, frame_pair):
    sinc, prior_frame = frame_pair
    model = _perturbed(tiny_paths[False])
    assert not model.uses_prior
    np.testing.assert_array_equal(model.predict(sinc, prior_frame), model.predict(sinc))


@pytest.mark.parametrize("prior", [True, False])
def test_tiled_inference_agrees_with_whole_frame(tiny_paths, frame_pair, prior):
    sinc, prior_frame = frame_pair
    # untrained: exact identity whatever the tiling (the Gaussian blend weights sum to one)
    model = load(tiny_paths[prior])
    whole = model.predict(sinc, prior_frame)
    model.tile = (16, 16, 4)
    np.testing.assert_allclose(model.predict(sinc, prior_frame), whole, rtol=1e-5, atol=1e-4)
    # with a non-zero residual, tiles see less context at their borders. Tolerance: the largest
    # difference stays below 5 % of the frame's maximum (measured: about 2.5 %), the mean below
    # 2 % of the mean intensity.
    model = _perturbed(tiny_paths[prior])
    whole = model.predict(sinc, prior_frame)
    model.tile = (16, 16, 4)
    tiled = model.predict(sinc, prior_frame)
    difference = np.abs(tiled - whole)
    assert difference.max() < 0.05 * whole.max()
    assert difference.mean() < 0.02 * whole.mean()


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(MrisrInputError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(MrisrInputError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.parametrize("name", ["default", "default-noprior"])
def test_bundled_model_loads_when_shipped(name, frame_pair, lr_frame):
    # the bundled weights are trained separately; here only that they load and run
    if name not in bundled_models():
        pytest.skip(f"bundled model {name!r} is not in this checkout yet")
    model = load(name)
    assert model.meta["format"] == "mrisr-checkpoint"
    assert model.uses_prior is (name == "default")
    sinc, prior_frame = frame_pair
    out = model.predict(sinc, formed(lr_frame, prior_frame, sinc))
    assert out.shape == HR_SHAPE
    assert np.isfinite(out).all()


def test_cpu_models_run_channels_last_and_match_the_contiguous_layout(frame_pair, lr_frame):
    """The CPU default (channels-last 3-D, measured faster) gives the contiguous layout's output."""
    sinc, prior = frame_pair
    fast = load("default")
    plain = load("default", channels_last=False)
    assert fast.network.memory_format == torch.channels_last_3d
    conv = next(m for m in fast.network.modules() if isinstance(m, torch.nn.Conv3d) and m.weight.shape[2:] == (3, 3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert plain.network.memory_format == torch.contiguous_format
    a, b = fast.predict(sinc, formed(lr_frame, prior, sinc)), plain.predict(sinc, formed(lr_frame, prior, sinc))
    assert a.flags.c_contiguous or a.ndim == 3
    np.testing.assert_allclose(a, b, atol=1e-5 * float(np.abs(b).max()))


def test_channels_last_model_saves_a_normal_checkpoint(tmp_path, frame_pair, lr_frame):
    from mrisr.models import read_metadata
    from mrisr.models.checkpoint import save_checkpoint

    sinc, prior = frame_pair
    model = load("default")
    path = save_checkpoint(model.network, tmp_path / "copy.safetensors", dict(read_metadata(model.path)))
    again = load(path, channels_last=False)
    np.testing.assert_allclose(again.predict(sinc, formed(lr_frame, prior, sinc)), model.predict(sinc, formed(lr_frame, prior, sinc)),
                               atol=1e-5 * float(sinc.max()))


def test_precision_choices_and_what_they_run_in():
    from mrisr.models.predictor import autocast_dtype, native_bf16_cpu

    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "auto") == (torch.bfloat16 if native_bf16_cpu() else None)
    assert autocast_dtype(torch.device("cuda"), "auto") == torch.float16
    assert autocast_dtype(torch.device("cuda"), "fp32") is None
    from mrisr.models.predictor import PRECISIONS
    from mrisr.reconstruct.options import PRECISIONS as OPTION_PRECISIONS

    assert PRECISIONS == OPTION_PRECISIONS
    with pytest.raises(MrisrInputError, match="precision='fp16': choose one of auto, fp32"):
        autocast_dtype(cpu, "fp16")
    with pytest.raises(MrisrInputError, match="precision='double'"):
        load("default", precision="double") if "default" in bundled_models() else autocast_dtype(cpu, "double")


def test_auto_precision_stays_within_bf16_rounding_of_fp32(frame_pair, lr_frame):
    """``auto`` runs the bundled network in bf16 on a CPU with bf16 instructions: only the network's
    correction is rounded (the gated keyhole is added in float32), so the output stays within a
    few 1e-3 of the scale; elsewhere ``auto`` is float32 and the outputs are identical."""
    if "default" not in bundled_models():
        pytest.skip("no bundled default model in this checkout")
    from mrisr.models.predictor import native_bf16_cpu

    model = load("default")
    sinc, prior = frame_pair
    auto = model.predict(sinc, formed(lr_frame, prior, sinc))
    full = model.predict(sinc, formed(lr_frame, prior, sinc), precision="fp32")
    assert model.compute_dtype("fp32") == "float32"
    if native_bf16_cpu():
        assert model.compute_dtype() == "bfloat16"
        scale = float(np.percentile(full, 99.5))
        assert 0 < float(np.abs(auto - full).max()) <= 5e-3 * scale
    else:
        assert model.compute_dtype() == "float32"
        np.testing.assert_array_equal(auto, full)
    # the same call twice gives the same bytes (reproducible on one machine)
    np.testing.assert_array_equal(auto, model.predict(sinc, formed(lr_frame, prior, sinc)))
