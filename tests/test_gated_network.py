"""The network that corrects the gated keyhole: its residual base, checkpoints, training and reconstruction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrisr.data import load_sample
from mrisr.io import MrisrInputError
from mrisr.models import PriorSRNet, build_network, load, make_tiny_checkpoint
from mrisr.training.config import load_config
from mrisr.training.losses import SRLoss

SMALL = {"channels": [4, 8], "strides": [[2, 2, 1]], "num_res_units": 0, "features": 4, "space_to_depth": 2}


def test_untrained_gated_network_returns_its_gated_input_exactly():
    torch.manual_seed(0)
    net = PriorSRNet(prior_input="gated-keyhole", **SMALL).eval()
    sinc, gated = torch.rand(1, 1, 20, 22, 6), torch.rand(1, 1, 20, 22, 6)
    with torch.no_grad():
        assert torch.equal(net(sinc, gated), gated)
        # a trained head adds a residual to the gated keyhole, where the plain network adds the same
        # residual to the sinc input
        torch.nn.init.normal_(net.head.weight, std=0.1)
        plain = PriorSRNet(**SMALL).eval()
        plain.load_state_dict(net.state_dict())
        residual = net(sinc, gated) - gated
        assert float(residual.abs().max()) > 1e-3
        torch.testing.assert_close(residual, plain(sinc, gated) - sinc)


def test_prior_input_is_stored_only_when_not_the_default():
    plain = PriorSRNet(**SMALL)
    assert "prior_input" not in plain.config()  # checkpoints written before it existed still match
    gated = PriorSRNet(prior_input="gated-keyhole", **SMALL)
    assert gated.config()["prior_input"] == "gated-keyhole"
    rebuilt = build_network("prior-sr-unet", gated.config())
    assert rebuilt.prior_input == "gated-keyhole"


def test_invalid_prior_inputs_are_refused():
    with pytest.raises(ValueError, match="choose one of prior, gated-keyhole"):
        PriorSRNet(prior_input="keyhole", **SMALL)
    with pytest.raises(ValueError, match="needs use_prior"):
        PriorSRNet(use_prior=False, prior_input="gated-keyhole", **SMALL)


def test_checkpoint_round_trip_keeps_the_prior_input(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "gated.safetensors", prior_input="gated-keyhole")
    model = load(path)
    assert model.prior_input == "gated-keyhole"
    assert load(make_tiny_checkpoint(tmp_path / "plain.safetensors")).prior_input == "prior"


def test_recipe_refuses_self_priors_with_the_gated_input():
    with pytest.raises(MrisrInputError, match="gated-keyhole"):
        load_config(None, ["model.prior_input=gated-keyhole", "prior.self_prior_probability=0.5"])
    cfg = load_config(None, ["model.prior_input=gated-keyhole", "prior.self_prior_probability=0"])
    assert cfg.model.prior_input == "gated-keyhole"


def test_bundled_gated_recipe_is_valid():
    from mrisr.resources import recipe_path

    cfg = load_config(recipe_path("default-gated"), [])
    assert cfg.model.prior_input == "gated-keyhole"
    assert cfg.prior.self_prior_probability == 0 and cfg.chains.probability == 0
    assert cfg.structures.target_probability > 0 and cfg.structures.prior_probability > 0
    assert cfg.loss.tissue > 0


def test_init_from_a_model_with_another_prior_input_keeps_the_body_and_zeroes_the_head(tmp_path):
    from mrisr.training.loop import initial_weights

    torch.manual_seed(1)
    source = PriorSRNet(**SMALL)
    torch.nn.init.normal_(source.head.weight, std=0.1)
    from mrisr.models.checkpoint import save_checkpoint

    path = save_checkpoint(source, tmp_path / "stage2.safetensors",
                           {"architecture": "prior-sr-unet", "arguments": source.config(), "uses_prior": True})
    cfg = load_config(None, ["model.prior_input=gated-keyhole", "prior.self_prior_probability=0", f"init={path}",
                             "model.channels=[4, 8]", "model.strides=[[2, 2, 1]]", "model.num_res_units=0",
                             "model.features=4"])
    net = PriorSRNet(**cfg.model.model_dump())
    info = initial_weights(cfg, net, torch.device("cpu"))
    assert info["source"] == str(path)
    body = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    for key, value in body.items():
        assert torch.equal(net.state_dict()[key], value), key
    assert float(net.head.weight.detach().abs().max()) == 0.0 and float(net.head.bias.detach().abs().max()) == 0.0


def test_tissue_weighted_l1_discounts_background_errors():
    target = torch.zeros(1, 1, 16, 16, 8)
    target[..., 4:12, 4:12, :] = 0.8  # tissue
    background_error = target.clone()
    background_error[..., :2, :, :] += 0.2
    tissue_error = target.clone()
    tissue_error[..., 4:6, 4:12, :] += 0.2 * 16 / 8  # as many error units, inside the tissue
    plain, weighted = SRLoss(1.0, 0.0), SRLoss(1.0, 0.0, tissue=2.0)
    assert plain(background_error, target)[1]["l1"] == pytest.approx(plain(tissue_error, target)[1]["l1"])
    assert weighted(tissue_error, target)[1]["l1"] > 2.0 * weighted(background_error, target)[1]["l1"]


def test_network_method_with_an_untrained_gated_model_is_the_gated_keyhole(tmp_path):
    """Reconstruction forms the gated keyhole of each frame and its tracked prior and hands it to the
    network: an untrained gated model (zero head) returns exactly the ``keyhole-gated`` method's frames."""
    from mrisr.phantom import make_dynamic
    from mrisr.reconstruct import ReconstructOptions, iter_reconstruct

    sample = load_sample()
    crop = sample.with_data(np.ascontiguousarray(sample.data[24:88, 24:104, 8:16]))
    phantom = make_dynamic(crop, frames=2, keep=6.25, seed=2, insert="needle")
    model = load(make_tiny_checkpoint(tmp_path / "gated.safetensors", prior_input="gated-keyhole"))
    network = [r.sr for r in iter_reconstruct(phantom.lr, phantom.planning, ReconstructOptions(), model=model)]
    gated = [r.sr for r in iter_reconstruct(phantom.lr, phantom.planning, ReconstructOptions(method="keyhole-gated"))]
    for a, b in zip(network, gated):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(b.max()))


def test_finetuning_a_gated_model_trains_on_gated_pairs():
    from mrisr.training.finetune import finetune

    planning = np.ascontiguousarray(load_sample().data[40:88, 40:88, 10:18])
    import tempfile
    from pathlib import Path

    import mrisr.training.pairs as pairs

    calls = []
    original = pairs.gated_input

    def counting(lowres, prior, sinc):
        calls.append(tuple(sinc.shape))
        return original(lowres, prior, sinc)

    with tempfile.TemporaryDirectory() as folder:
        base = load(make_tiny_checkpoint(Path(folder) / "gated.safetensors", prior_input="gated-keyhole"))
    pairs.gated_input = counting
    try:
        tuned, report = finetune(base, planning, (1.5, 1.5, 3.0), keep=6.25, minutes=None, steps=2)
    finally:
        pairs.gated_input = original
    assert tuned.prior_input == "gated-keyhole" and report.steps == 2
    # every training and held-out pair was built with the gated keyhole as its prior
    assert len(calls) >= 2 * 2 + 8 and set(calls) == {planning.shape}


def test_checkpoint_with_a_bad_prior_input_is_refused(tmp_path):
    from mrisr.models.checkpoint import save_checkpoint

    net = PriorSRNet(**SMALL)
    for bad, use_prior in (("keyhole", True), ("gated-keyhole", False)):
        arguments = {**net.config(), "prior_input": bad, "use_prior": use_prior}
        path = save_checkpoint(net, tmp_path / f"{bad}-{use_prior}.safetensors",
                               {"architecture": "prior-sr-unet", "arguments": arguments, "uses_prior": use_prior})
        with pytest.raises(MrisrInputError, match="prior_input"):
            load(path)


def test_recipe_refuses_a_gated_input_without_a_prior():
    with pytest.raises(MrisrInputError, match="use_prior"):
        load_config(None, ["model.prior_input=gated-keyhole", "model.use_prior=false", "prior.self_prior_probability=0"])


def test_an_untrained_gated_model_returns_the_input_formed_for_it(tmp_path):
    model = load(make_tiny_checkpoint(tmp_path / "gated.safetensors", prior_input="gated-keyhole"))
    frame = np.ascontiguousarray(load_sample().data[40:88, 40:88, 10:18], dtype=np.float32)
    from mrisr.kspace.functional import crop_lowres, zero_fill
    from mrisr.reconstruct.keyhole import gated_keyhole
    from mrisr.reconstruct.network_input import form_network_input

    lr = crop_lowres(frame, (12, 12))
    sinc = zero_fill(lr, frame.shape[:2])
    with pytest.raises(MrisrInputError, match="trained with a prior"):
        model.predict(sinc, None)
    formed = form_network_input(lr, frame * 0.5, sinc, sparse_changes=False)
    out = model.predict(sinc, formed.given)
    np.testing.assert_allclose(out, gated_keyhole(lr, frame * 0.5, sinc), atol=1e-5 * float(frame.max()))
    # the prior's scale does not matter: it is matched to the frame first
    np.testing.assert_allclose(out, frame, atol=0.02 * float(frame.max()))


def test_resuming_with_another_prior_input_is_refused(tmp_path):
    """Only a new stage (``init``) may start from a model with another prior input; ``--resume`` may not."""
    from mrisr.training.loop import _load_weights

    path = make_tiny_checkpoint(tmp_path / "plain.safetensors")
    net = PriorSRNet(prior_input="gated-keyhole", **SMALL)
    with pytest.raises(MrisrInputError, match="differs from the recipe's model"):
        _load_weights(net, path, torch.device("cpu"), "checkpoint", "resume with the model settings it was trained with")
    _load_weights(net, path, torch.device("cpu"), "init checkpoint", "fix", new_prior_input_ok=True)


def test_stepwise_hands_on_the_gated_keyhole_not_the_networks_output(tmp_path):
    """In ``previous`` mode a gated-keyhole network's next prior is this frame's gated keyhole: the
    detail the network adds lies outside the measured band, where the next gate cannot check it."""
    from mrisr.phantom import make_dynamic
    from mrisr.reconstruct import ReconstructOptions, iter_reconstruct, prepare_state
    from mrisr.reconstruct.grid import frame_to_grid
    from mrisr.reconstruct.keyhole import gated_keyhole

    sample = load_sample()
    crop = sample.with_data(np.ascontiguousarray(sample.data[24:88, 24:104, 8:16]))
    phantom = make_dynamic(crop, frames=3, keep=6.25, seed=4)
    model = load(make_tiny_checkpoint(tmp_path / "gated.safetensors", prior_input="gated-keyhole"))
    with torch.no_grad():
        model.network.head.weight.copy_(torch.randn(model.network.head.weight.shape,
                                                    generator=torch.Generator().manual_seed(0)) * 0.2)
    options = ReconstructOptions(prior_mode="previous")
    results = [r.sr for r in iter_reconstruct(phantom.lr, phantom.planning, options, model=model)]
    rec = prepare_state(phantom.lr, phantom.planning, options, model=model, first_frame=phantom.lr.frame(0))
    carried = rec.tracker.prior_for(phantom.lr.frame(0))  # frame 0: the planning scan registered to it
    for t, sr in enumerate(results):
        frame = phantom.lr.frame(t)
        sinc = frame_to_grid(frame, rec.grid.hr_inplane)
        given = gated_keyhole(frame, carried, sinc)  # step-wise gates without the sparse change
        expected = model.predict(sinc, given)
        np.testing.assert_allclose(sr, expected, rtol=1e-5, atol=1e-5 * float(expected.max()))
        assert not np.allclose(sr, given, atol=1e-3 * float(given.max()))  # the network did add something
        carried = given
    # the sparse change correction is off step-wise: turning it off changes nothing
    plain = ReconstructOptions(prior_mode="previous", sparse_changes=False)
    for a, b in zip(results, iter_reconstruct(phantom.lr, phantom.planning, plain, model=model)):
        np.testing.assert_array_equal(a, b.sr)
