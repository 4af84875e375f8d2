"""Checkpoint format: safetensors + JSON metadata round trip; every foreign file is a one-line error."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import mrisr
from mrisr.io import MrisrInputError, file_sha256
from mrisr.models import (
    PriorSRNet,
    load,
    load_network,
    make_tiny_checkpoint,
    read_metadata,
    save_checkpoint,
)

ARGS = {"use_prior": True, "channels": [4, 8], "strides": [[2, 2, 1]], "num_res_units": 0, "features": 4,
        "space_to_depth": 2}


def _trained_looking_net(seed: int = 0) -> PriorSRNet:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = PriorSRNet(**ARGS)
        with torch.no_grad():
            net.head.weight.normal_(0, 0.1)  # non-zero so the round trip is not trivially zeros
    return net


def _meta(**extra) -> dict:
    return {"architecture": "prior-sr-unet", "arguments": ARGS, "uses_prior": True,
            "normalisation": {"method": "percentile", "percentile": 99.5}, "keep_range": [4.0, 25.0],
            "mask": "center", "training": {"config": {"seed": 7}}, "data": {"train": ["colin27"]},
            "validation": {"keep6.25": {"ssim": 0.9}}, **extra}


def _assert_one_line_error(exc: pytest.ExceptionInfo, path: Path, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    net = _trained_looking_net()
    path = save_checkpoint(net, tmp_path / "sub" / "model.safetensors", _meta(custom={"a": [1, 2]}))
    assert path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # no temporary left
    loaded, meta = load_network(path)
    original = net.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    assert set(loaded.state_dict()) == set(original)
    assert not loaded.training
    assert meta["format"] == "mrisr-checkpoint"
    assert meta["format_version"] == 1
    assert meta["mrisr_version"] == mrisr.__version__
    assert meta["custom"] == {"a": [1, 2]}
    assert meta["validation"] == {"keep6.25": {"ssim": 0.9}}
    assert meta["training"] == {"config": {"seed": 7}}
    assert meta["arguments"] == ARGS
    assert read_metadata(path) == meta


def test_load_by_path_gives_a_ready_model(tmp_path):
    path = save_checkpoint(_trained_looking_net(), tmp_path / "model.safetensors", _meta())
    model = load(path)
    assert model.uses_prior
    assert model.keep_range == (4.0, 25.0)
    assert model.meta["sha256"] == file_sha256(path)
    sinc = np.random.default_rng(0).random((16, 16, 4)).astype(np.float32)
    assert model.predict(sinc, sinc).shape == (16, 16, 4)


def test_save_needs_architecture_and_arguments(tmp_path):
    with pytest.raises(ValueError, match="arguments"):
        save_checkpoint(_trained_looking_net(), tmp_path / "m.safetensors", {"architecture": "prior-sr-unet"})
    assert list(tmp_path.iterdir()) == []


def test_pickle_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled.txt"

    class Trap:
        # unpickling this object would create the marker file
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"state_dict": Trap()}))
    for loader in (read_metadata, load_network, load):
        with pytest.raises(MrisrInputError) as exc:
            loader(path)
        _assert_one_line_error(exc, path, "a PyTorch pickle", "expected an mrisr checkpoint")
    assert not marker.exists()


def test_torch_save_file_is_refused(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(_trained_looking_net().state_dict(), path)
    with pytest.raises(MrisrInputError) as exc:
        load(path)
    _assert_one_line_error(exc, path, "a PyTorch pickle", "expected an mrisr checkpoint")


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(MrisrInputError) as exc:
        load(path)
    _assert_one_line_error(exc, path, "not a safetensors file", "expected an mrisr checkpoint")


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}])
def test_safetensors_without_mrisr_metadata_is_refused(tmp_path, metadata):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(path), metadata=metadata)
    with pytest.raises(MrisrInputError) as exc:
        load(path)
    _assert_one_line_error(exc, path, "a safetensors file without mrisr metadata", "expected an mrisr checkpoint")


def test_wrong_format_field_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(_trained_looking_net(), path, _meta(format="somebody-else"))
    with pytest.raises(MrisrInputError) as exc:
        load(path)
    _assert_one_line_error(exc, path, "'somebody-else'", "expected 'mrisr-checkpoint'")


def test_weights_that_do_not_match_the_architecture_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    wider = dict(ARGS, channels=[4, 16])
    save_checkpoint(_trained_looking_net(), path, _meta(arguments=wider))
    with pytest.raises(MrisrInputError) as exc:
        load(path)
    _assert_one_line_error(exc, path, "weights do not match architecture prior-sr-unet", "'channels': [4, 16]")


def test_unknown_architecture_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(_trained_looking_net(), path, _meta(architecture="transformer"))
    with pytest.raises(MrisrInputError) as exc:
        load(path)
    _assert_one_line_error(exc, path, "cannot build architecture 'transformer'")


def test_missing_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(MrisrInputError) as exc:
        load(path)
    _assert_one_line_error(exc, path, "model file not found")


@pytest.mark.parametrize("prior", [True, False])
def test_tiny_checkpoint_is_valid_and_leaves_global_rng_alone(tmp_path, prior):
    state = torch.random.get_rng_state()
    path = make_tiny_checkpoint(tmp_path / "tiny.safetensors", prior=prior)
    assert torch.equal(torch.random.get_rng_state(), state)
    meta = read_metadata(path)
    assert meta["uses_prior"] is prior
    assert meta["arguments"]["use_prior"] is prior
    assert load(path).uses_prior is prior
    # deterministic: same seed, same bytes
    again = make_tiny_checkpoint(tmp_path / "again.safetensors", prior=prior)
    assert file_sha256(again) == file_sha256(path)


def _with_metadata(tmp_path: Path, raw: str) -> Path:
    """A checkpoint with real tiny weights whose mrisr metadata is ``raw`` (as stored)."""
    from safetensors.torch import load_file

    source = make_tiny_checkpoint(tmp_path / "tiny.safetensors")
    path = tmp_path / "crafted.safetensors"
    save_file(load_file(str(source)), str(path), metadata={"mrisr": raw})
    return path


def _crafted(**changes) -> str:
    import json

    meta = {"format": "mrisr-checkpoint", "format_version": 1, **_meta(arguments=dict(ARGS))}
    for key, value in changes.items():
        if key.startswith("arg_"):
            meta["arguments"][key[4:]] = value
        elif value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    return json.dumps(meta)


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        ("{not json", ["not valid JSON"]),
        ("[1, 2, 3]", ["is a list", "expected a JSON object"]),
        (_crafted(arguments=None), ["lacks 'arguments'"]),
        (_crafted(architecture=None), ["lacks 'architecture'"]),
        (_crafted(arguments=[4, 8]), ["arguments = [4, 8]"]),
        (_crafted(arg_channels=[-4, 8]), ["arguments.channels = [-4, 8]", "1..512"]),
        (_crafted(arg_channels=[100000, 200000]), ["arguments.channels", "1..512"]),
        (_crafted(arg_channels=[4, 8, 16, 32, 64, 128, 256]), ["2 to 6 integers"]),
        (_crafted(arg_strides=[[3, 3, 3]]), ["arguments.strides"]),
        (_crafted(arg_features=10**6), ["arguments.features", "1..256"]),
        (_crafted(arg_space_to_depth=0), ["arguments.space_to_depth"]),
        (_crafted(arg_kernel=7), ["unknown argument(s)"]),
        (_crafted(uses_prior=False), ["uses_prior = false", "arguments.use_prior"]),
        (_crafted(uses_prior="yes"), ["uses_prior = \"yes\""]),
        (_crafted(normalisation={"percentile": 250}), ["normalisation.percentile = 250", "(0, 100]"]),
        (_crafted(normalisation={"percentile": "high"}), ["normalisation.percentile"]),
        (_crafted(keep_range=[30, 10]), ["keep_range = [30, 10]"]),
        (_crafted(keep_range=[-1, 200]), ["keep_range"]),
    ],
)
def test_malformed_metadata_is_a_one_line_error_before_any_network_is_built(tmp_path, raw, fragments):
    path = _with_metadata(tmp_path, raw)
    for loader in (read_metadata, load_network, load):
        with pytest.raises(MrisrInputError) as exc:
            loader(path)
        _assert_one_line_error(exc, path, *fragments)


def test_nan_weights_are_refused(tmp_path):
    net = _trained_looking_net()
    with torch.no_grad():
        net.head.weight[0, 0] = float("nan")
    path = save_checkpoint(net, tmp_path / "nan.safetensors", _meta())
    with pytest.raises(MrisrInputError) as exc:
        load(path)
    _assert_one_line_error(exc, path, "head.weight", "NaN/Inf")


def test_unreadable_file_is_not_called_a_foreign_format(tmp_path):
    import os

    path = make_tiny_checkpoint(tmp_path / "locked.safetensors")
    folder = tmp_path / "a-folder.safetensors"
    folder.mkdir()
    with pytest.raises(MrisrInputError) as exc:
        read_metadata(folder)
    _assert_one_line_error(exc, folder, "not a regular file")
    if os.geteuid() != 0:  # root reads anything
        path.chmod(0)
        with pytest.raises(MrisrInputError) as exc:
            read_metadata(path)
        _assert_one_line_error(exc, path, "cannot read the model file")
