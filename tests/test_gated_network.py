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
        # a trained head adds a residual to the gated keyhole, not to the sinc input
        torch.nn.init.normal_(net.head.weight, std=0.1)
        out = net(sinc, gated)
        residual = out - gated
        assert float(residual.abs().max()) > 0
        assert torch.allclose(net(sinc + 0.0, gated) - gated, residual)


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

    with tempfile.TemporaryDirectory() as folder:
        base = load(make_tiny_checkpoint(Path(folder) / "gated.safetensors", prior_input="gated-keyhole"))
    tuned, report = finetune(base, planning, (1.5, 1.5, 3.0), keep=6.25, minutes=None, steps=2)
    assert tuned.prior_input == "gated-keyhole" and report.steps == 2
    assert report.best_val_loss <= report.initial_val_loss
