"""Recurrent training on simulated series: chain frames, the loop's memory of each chain's last
output, and a tiny real training run that starts from an existing checkpoint."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from mrisr_testdata import head_phantom

from mrisr.io import MrisrInputError, file_sha256
from mrisr.models import read_metadata
from mrisr.training.chains import Chain, ChainMemory, ChainSettings, ChainStream
from mrisr.training.config import load_config
from mrisr.training.loop import train
from mrisr.training.pairs import PairGenerator, PairSettings
from mrisr.training.sources import SlabVolume

SETTINGS = PairSettings(patch=(32, 32, 8), keep_range=(6.0, 6.5), target_motion_mm=4.0, noise_probability=0.0)


def _bank(seed: int = 0) -> list[SlabVolume]:
    data = head_phantom((64, 72, 12), seed=seed).astype(np.float32)
    return [SlabVolume(data, (2.0, 2.0, 3.0), "phantom", "axial")]


def test_chain_frames_are_patches_of_one_moving_series():
    gen = PairGenerator(_bank(), SETTINGS, seed=1)
    chain = Chain(gen, ChainSettings(length=(6, 6), period=(8.0, 8.0)), chain_id=7)
    frames = []
    while not chain.done:
        frames.append(chain.next_frame())
    assert len(frames) == 6
    assert [f["id"] for f in frames] == [7] * 6
    assert frames[0]["use_planning"] is True
    assert all(f["use_planning"] == chain.planning_mode for f in frames[1:])
    for f in frames:
        for key in ("sinc", "target", "planning"):
            assert tuple(f[key].shape) == (32, 32, 8) and torch.isfinite(f[key]).all()
        assert f["scale"] > 0
        # normalised by the frame's own 99.5th percentile: the bulk of the patch is below ~1.5
        assert float(f["sinc"].max()) < 3
    # consecutive frames are closer to each other than to a frame half a breathing period later
    absolute = [f["target"] * f["scale"] for f in frames]
    near = float((absolute[1] - absolute[0]).abs().mean())
    far = float((absolute[4] - absolute[0]).abs().mean())
    assert near < far
    # the input is band-limited: the sinc frame differs from its target
    assert float((frames[2]["sinc"] - frames[2]["target"]).abs().mean()) > 1e-3


def test_chain_stream_replaces_finished_chains_with_new_ids():
    stream = ChainStream(_bank(), SETTINGS, ChainSettings(length=(2, 2), pool=2), batch_size=2, seed=0)
    batches = [b for _, b in zip(range(4), iter(stream))]
    ids = [b["id"].tolist() for b in batches]
    assert ids[0] == ids[1]  # the same two chains advance one frame each
    assert set(ids[2]).isdisjoint(ids[0])  # both finished after 2 frames: new chains, new ids
    assert batches[0]["use_planning"].all() and batches[2]["use_planning"].all()
    assert batches[0]["sinc"].shape == (2, 1, 32, 32, 8)


def test_memory_feeds_back_the_previous_output_in_absolute_units():
    memory = ChainMemory()
    plan = torch.full((2, 1, 4, 4, 2), 0.5)
    first = {"id": torch.tensor([1, 2]), "use_planning": torch.tensor([True, True]), "planning": plan,
             "scale": torch.tensor([2.0, 4.0])}
    assert torch.equal(memory.priors(first, torch.device("cpu")), plan)
    out = torch.stack([torch.full((1, 4, 4, 2), 1.0), torch.full((1, 4, 4, 2), -1.0)])
    memory.remember(first, out)
    second = {"id": torch.tensor([1, 2]), "use_planning": torch.tensor([False, True]), "planning": plan,
              "scale": torch.tensor([4.0, 4.0])}
    prior = memory.priors(second, torch.device("cpu"))
    # chain 1: output 1.0 at scale 2 is 2.0 absolute, i.e. 0.5 at the new scale 4
    assert torch.allclose(prior[0], torch.full((1, 4, 4, 2), 0.5))
    # chain 2 is a planning-mode chain: still the planning scan
    assert torch.equal(prior[1], plan[1])


def test_config_rejects_bad_chain_ranges():
    with pytest.raises(MrisrInputError, match="chains"):
        load_config(None, ["chains.length=[9, 3]"])
    with pytest.raises(MrisrInputError, match="chains.probability"):
        load_config(None, ["chains.probability=1.5"])


TINY = [
    "optim.steps=4", "optim.batch_size=2", "optim.warmup_steps=1",
    "data.patch=[32, 32, 8]", "data.train=[colin27]", "data.validation=[]", "data.inplane_mm=[2.0]",
    "data.slice_mm=[4.0]", "data.orientations=[axial]",
    "model.channels=[4, 8]", "model.strides=[[2, 2, 1]]", "model.num_res_units=0", "model.features=4",
    "chains.probability=1.0", "chains.length=[2, 3]", "chains.pool=2",
    "data_workers=0", "device=cpu", "seed=5",
]


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    from mrisr.training.sources import source_path

    try:
        source_path("colin27")
    except MrisrInputError as exc:
        pytest.skip(str(exc))
    folder = tmp_path_factory.mktemp("chains")
    cfg = load_config(None, [s for s in TINY if not s.startswith("chains.probability")])
    return train(cfg, folder / "base.safetensors")


def test_recurrent_training_starts_from_the_init_checkpoint(base_checkpoint, tmp_path):
    cfg = load_config(None, TINY + [f"init={base_checkpoint}"])
    out = train(cfg, tmp_path / "recurrent.safetensors")
    meta = read_metadata(out)
    assert meta["init"]["source"] == str(base_checkpoint)
    assert meta["init"]["sha256"] == file_sha256(base_checkpoint)
    assert meta["training"]["config"]["chains"]["probability"] == 1.0
    with open(out.with_suffix(".log.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [] or all(r["chain"] == "1" for r in rows)
    # the weights moved away from the init
    from safetensors.torch import load_file

    before, after = load_file(base_checkpoint), load_file(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_init_with_another_architecture_is_a_one_line_error(base_checkpoint, tmp_path):
    cfg = load_config(None, TINY + [f"init={base_checkpoint}", "model.features=6"])
    with pytest.raises(MrisrInputError, match="init checkpoint model"):
        train(cfg, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
