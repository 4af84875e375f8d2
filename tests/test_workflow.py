"""The caller layer: fine-tuning that improves is saved and used; fine-tuning that does not says so,
writes nothing presented as a tuned model, and leaves the output exactly as the base model makes it."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest

import mrisr.workflow
from mrisr.data import load_sample
from mrisr.io import Volume, file_sha256
from mrisr.models import make_tiny_checkpoint
from mrisr.phantom import make_dynamic
from mrisr.reconstruct import ReconstructOptions
from mrisr.workflow import NOT_IMPROVED, reconstruct_file


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workflow")
    sample = load_sample()
    affine = sample.affine.copy()
    affine[:3, 3] = sample.affine[:3, :3] @ np.array([40, 40, 10]) + sample.affine[:3, 3]
    crop = Volume(data=np.ascontiguousarray(sample.data[40:88, 40:88, 10:18]), affine=affine, qform_code=1,
                  sform_code=1)
    files = make_dynamic(crop, frames=2, keep=6.25, seed=5, tr=0.5).save(folder / "phantom")
    files["tiny"] = make_tiny_checkpoint(folder / "tiny.safetensors", prior=True)
    return files


def _run(case, out, finetune, lr=None, monkeypatch=None, minutes=0.1):
    messages: list[str] = []
    if lr is not None:
        monkeypatch.setattr(mrisr.workflow, "FINETUNE_LR", lr)
    options = ReconstructOptions(model=str(case["tiny"]), device="cpu", finetune=finetune, finetune_minutes=minutes)
    report = reconstruct_file(case["lr"], out, case["planning"], options, on_status=messages.append)
    return report, messages, json.loads(report.sidecar.read_text())


def test_fine_tuning_that_does_not_improve_uses_the_base_model_and_says_so(case, tmp_path, monkeypatch):
    base, _, _ = _run(case, tmp_path / "base.nii.gz", finetune=False)
    report, messages, sidecar = _run(case, tmp_path / "tuned.nii.gz", finetune=True, lr=0.0, monkeypatch=monkeypatch)
    assert any(m.startswith(NOT_IMPROVED) for m in messages), messages
    assert report.finetuned_model is None and not (tmp_path / "tuned_model.safetensors").exists()
    assert sidecar["finetune"]["improved"] is False and sidecar["finetune"]["best_step"] == 0
    assert sidecar["model"]["finetuned"] is None
    assert sidecar["model"]["sha256"] == file_sha256(case["tiny"])
    assert report.output.read_bytes() == base.output.read_bytes()


def test_fine_tuning_that_improves_is_saved_and_used(case, tmp_path, monkeypatch):
    # a step budget, so the outcome does not hang on the machine's speed: 60 steps at this rate beat
    # the untrained tiny model on the check pairs
    monkeypatch.setattr(mrisr.workflow, "finetune_model", partial(mrisr.workflow.finetune_model, steps=60))
    report, messages, sidecar = _run(case, tmp_path / "tuned.nii.gz", finetune=True, lr=3e-3, monkeypatch=monkeypatch,
                                     minutes=5)
    tuned = tmp_path / "tuned_model.safetensors"
    assert sidecar["finetune"]["improved"] is True and sidecar["finetune"]["best_step"] >= 1, sidecar["finetune"]
    assert report.finetuned_model == tuned and tuned.is_file()
    assert sidecar["model"]["finetuned"] == str(tuned) and sidecar["model"]["sha256"] == file_sha256(tuned)
    assert any(m.startswith("fine-tuned:") for m in messages), messages
