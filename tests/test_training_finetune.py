"""Fine-tuning a copy of a model on one planning scan: the base stays untouched, the lr is the one asked for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrisr.data import load_sample
from mrisr.models import load, make_tiny_checkpoint
from mrisr.training.finetune import finetune

ZOOMS = (1.5, 1.5, 3.0)


@pytest.fixture(scope="module")
def planning() -> np.ndarray:
    """A real 48x48x8 crop of the sample (the planning scan on the dynamic's HR grid)."""
    return np.ascontiguousarray(load_sample().data[40:88, 40:88, 10:18])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune")
    return {True: make_tiny_checkpoint(folder / "prior.safetensors", prior=True),
            False: make_tiny_checkpoint(folder / "noprior.safetensors", prior=False)}


def _state(model):
    return {k: v.detach().clone() for k, v in model.network.state_dict().items()}


@pytest.mark.parametrize("prior", [True, False])
def test_base_model_is_untouched_and_lr_is_the_requested_one(tiny, planning, prior):
    base = load(tiny[prior])
    before = _state(base)
    tuned, report = finetune(base, planning, ZOOMS, keep=6.25, minutes=None, steps=3, lr=3e-5)
    assert report.steps == 3
    assert report.lr == 3e-5  # read back from the optimiser
    assert not report.stopped_early
    assert report.best_val_loss <= report.initial_val_loss
    for key, value in base.network.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert tuned.network is not base.network
    assert tuned.meta == base.meta and tuned.meta is not base.meta
    assert tuned.uses_prior is prior
    assert not tuned.network.training
    # the returned weights are the best state when the acceptance pairs confirm it, else the base model's
    changed = any(not torch.equal(v, before[k]) for k, v in tuned.network.state_dict().items())
    assert changed == report.improved
    assert report.improved <= (report.best_step > 0)
    frame = planning / planning.max()
    assert tuned.predict(frame, frame).shape == planning.shape


def test_tiled_setting_is_inherited(tiny, planning):
    base = load(tiny[True])
    base.tile = (32, 32, 8)
    tuned, _ = finetune(base, planning, ZOOMS, keep=10.0, minutes=None, steps=1)
    assert tuned.tile == (32, 32, 8)


def test_needs_a_budget(tiny, planning):
    with pytest.raises(ValueError, match="minutes or steps"):
        finetune(load(tiny[True]), planning, ZOOMS, keep=6.25, minutes=None, steps=None)


def test_time_budget_stops(tiny, planning):
    _, report = finetune(load(tiny[False]), planning, ZOOMS, keep=6.25, minutes=0.5 / 60, steps=10_000)
    assert report.steps < 10_000
    assert report.seconds < 20
