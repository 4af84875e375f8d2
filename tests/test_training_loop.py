"""A tiny real training run on Colin27: checkpoint with the resolved recipe, CSV log, resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mrisr.io import MrisrInputError
from mrisr.models import load, read_metadata
from mrisr.training.config import load_config
from mrisr.training.loop import _lr_factor, train
from mrisr.training.sources import source_path

TINY = [
    "optim.steps=3", "optim.batch_size=2", "optim.warmup_steps=1",
    "data.patch=[32, 32, 8]", "data.train=[colin27]", "data.inplane_mm=[2.0]", "data.slice_mm=[4.0]",
    "data.orientations=[axial]",
    "model.channels=[4, 8]", "model.strides=[[2, 2, 1]]", "model.num_res_units=0", "model.features=4",
    "validation.samples=1", "validation.every_steps=2", "validation.keeps=[6.25]",
    "data_workers=0", "device=cpu", "seed=3",
]


def _needs(*sources: str) -> None:
    for name in sources:
        try:
            source_path(name)
        except MrisrInputError as exc:
            pytest.skip(str(exc))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    _needs("colin27", "mni152")
    folder = tmp_path_factory.mktemp("train")
    cfg = load_config(None, TINY)
    output = train(cfg, folder / "tiny.safetensors")
    return cfg, output


def _log_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_checkpoint_holds_the_resolved_recipe(trained):
    cfg, output = trained
    meta = read_metadata(output)
    assert meta["training"]["config"] == json.loads(cfg.model_dump_json())
    assert meta["training"]["steps"] == 3
    assert meta["arguments"] == {"use_prior": True, "channels": [4, 8], "strides": [[2, 2, 1]], "num_res_units": 0,
                                 "features": 4, "space_to_depth": 2}
    assert meta["keep_range"] == [4.0, 25.0]
    assert meta["normalisation"]["percentile"] == 99.5
    assert meta["data"]["train"] == ["colin27"] and meta["data"]["validation"] == ["mni152"]
    assert set(meta["validation"]) == {"keep6.25", "mean_gain"}
    assert 0 < meta["validation"]["keep6.25"]["sinc_ssim"] < 1
    assert "partial" not in meta
    # the written model is usable as is
    model = load(output)
    frame = np.random.default_rng(0).random((20, 18, 5)).astype(np.float32)
    assert model.predict(frame, frame).shape == (20, 18, 5)


def test_csv_log_has_losses_and_validation(trained):
    _, output = trained
    log = output.with_suffix(".log.csv")
    rows = _log_rows(log)
    assert [int(r["step"]) for r in rows] == [2]  # validation every 2 steps; plain rows every 10
    row = rows[0]
    for key in ("loss", "l1", "ssim_loss", "lr", "val_sinc_ssim", "val_ssim", "val_gain"):
        assert np.isfinite(float(row[key])), key
    assert output.with_suffix(".state.pt").exists()


def test_resume_continues_the_step_count(trained, tmp_path):
    cfg, output = trained
    # resume into a copy of the run, so the module's checkpoint stays as the other tests read it
    for suffix in (".safetensors", ".state.pt", ".log.csv"):
        (tmp_path / f"tiny{suffix}").write_bytes(output.with_suffix(suffix).read_bytes())
    run = tmp_path / "tiny.safetensors"
    longer = load_config(None, TINY + ["optim.steps=5"])
    train(longer, run, resume=run)
    meta = read_metadata(run)
    assert meta["training"]["steps"] == 5
    rows = _log_rows(run.with_suffix(".log.csv"))
    assert [int(r["step"]) for r in rows] == [2, 4]  # appended, header written once


def test_resume_with_another_architecture_is_a_one_line_error(trained, tmp_path):
    _, output = trained
    wider = load_config(None, TINY + ["model.channels=[4, 16]"])
    with pytest.raises(MrisrInputError, match="differs from the recipe's model") as exc:
        train(wider, tmp_path / "other.safetensors", resume=output)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "other.safetensors").exists()


def test_learning_rate_schedule_warms_up_then_decays():
    assert _lr_factor(0.0, 0, 10) == pytest.approx(0.1)
    assert _lr_factor(0.0, 9, 10) == pytest.approx(1.0)
    assert _lr_factor(0.5, 50, 10) == pytest.approx(0.05 + 0.95 * 0.5)
    assert _lr_factor(1.0, 100, 10) == pytest.approx(0.05)


def test_resume_with_a_malicious_state_file_is_one_line_and_never_unpickled(tmp_path):
    import pickle

    from typer.testing import CliRunner

    from mrisr.cli import app
    from mrisr.models import make_tiny_checkpoint

    marker = tmp_path / "pwned.txt"

    class Trap:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    run = make_tiny_checkpoint(tmp_path / "run.safetensors", prior=True)  # the recipe's TINY model
    run.with_suffix(".state.pt").write_bytes(pickle.dumps({"optimizer": Trap(), "step": 1, "elapsed": 0.0}))
    args = ["train", "configs/default.yaml", "-o", str(run), "--resume", str(run), "--quiet"]
    for override in TINY:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # a failed run
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "run.state.pt" in lines[0] and "not an mrisr optimiser state" in lines[0]
    assert "weights_only" not in result.output and "Traceback" not in result.output
    assert not marker.exists()
