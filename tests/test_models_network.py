"""PriorSRNet: any input shape, exact identity before training (zero-initialised head), config round trip."""

from __future__ import annotations

import json

import pytest
import torch

from mrisr.models import PriorSRNet, build_network

TINY = {"channels": (4, 8), "strides": ((2, 2, 1),), "num_res_units": 0, "features": 4, "space_to_depth": 2}
# the bundled architecture: halves the slab only once, 16x16x2 stride multiple
DEFAULT = {}


def _net(use_prior: bool, arguments: dict, seed: int = 0) -> PriorSRNet:
    with torch.random.fork_rng():  # seeded weights without touching the caller's RNG
        torch.manual_seed(seed)
        return PriorSRNet(use_prior=use_prior, **arguments)


def _inputs(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sinc = torch.rand((1, 1, *shape), generator=gen)
    prior = torch.rand((1, 1, *shape), generator=gen)
    return sinc, prior


def _randomise_head(net: PriorSRNet, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.head.weight.copy_(torch.randn(net.head.weight.shape, generator=gen) * 0.1)
        net.head.bias.copy_(torch.randn(net.head.bias.shape, generator=gen) * 0.01)


@pytest.mark.parametrize("use_prior", [True, False])
@pytest.mark.parametrize("shape", [(37, 51, 13), (20, 20, 3), (18, 30, 1)])
def test_odd_shapes_keep_their_shape(use_prior, shape):
    net = _net(use_prior, TINY).eval()
    _randomise_head(net)
    sinc, prior = _inputs(shape)
    with torch.no_grad():
        out = net(sinc, prior) if use_prior else net(sinc)
    assert out.shape == sinc.shape
    assert torch.isfinite(out).all()
    # the residual is not zero everywhere, so the crop back to the input is really exercised
    assert (out - sinc).abs().max() > 1e-4


@pytest.mark.parametrize("use_prior", [True, False])
def test_bundled_architecture_takes_thin_odd_slabs(use_prior):
    net = _net(use_prior, DEFAULT).eval()
    assert net.multiple == (16, 16, 2)
    sinc, prior = _inputs((37, 51, 13))
    with torch.no_grad():
        out = net(sinc, prior) if use_prior else net(sinc)
    assert out.shape == (1, 1, 37, 51, 13)


@pytest.mark.parametrize("use_prior", [True, False])
@pytest.mark.parametrize("arguments", [TINY, DEFAULT], ids=["tiny", "bundled"])
def test_untrained_network_is_exactly_the_sinc_input(use_prior, arguments):
    net = _net(use_prior, arguments, seed=3).eval()
    sinc, prior = _inputs((21, 19, 5), seed=2)
    with torch.no_grad():
        out = net(sinc, prior) if use_prior else net(sinc)
    assert torch.equal(out, sinc)


def test_prior_network_needs_a_prior():
    net = _net(True, TINY)
    sinc, _ = _inputs((16, 16, 4))
    with pytest.raises(ValueError, match="prior"):
        net(sinc)


def test_no_prior_network_has_one_input_channel_per_subpixel():
    with_prior = _net(True, TINY)
    without = _net(False, TINY)
    first = lambda net: next(p for n, p in net.named_parameters() if p.ndim == 5)  # noqa: E731
    assert first(with_prior).shape[1] == 2 * 4
    assert first(without).shape[1] == 1 * 4


@pytest.mark.parametrize("arguments", [TINY, DEFAULT], ids=["tiny", "bundled"])
@pytest.mark.parametrize("use_prior", [True, False])
def test_config_round_trips_through_build_network(arguments, use_prior):
    net = _net(use_prior, arguments)
    config = net.config()
    # the checkpoint stores it as JSON
    config = json.loads(json.dumps(config))
    rebuilt = build_network("prior-sr-unet", config)
    assert rebuilt.config() == config
    assert rebuilt.use_prior is use_prior
    state = net.state_dict()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in state.items()}
    rebuilt.load_state_dict(state, strict=True)
    _randomise_head(net)
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    net.eval()
    rebuilt.eval()
    sinc, prior = _inputs((20, 20, 4))
    with torch.no_grad():
        args = (sinc, prior) if use_prior else (sinc,)
        assert torch.equal(net(*args), rebuilt(*args))


def test_build_network_rejects_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'.*prior-sr-unet"):
        build_network("resnet", {})
    with pytest.raises(TypeError):
        build_network("prior-sr-unet", {"no_such_argument": 1})
