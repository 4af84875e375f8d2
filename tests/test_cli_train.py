"""`mrisr train RECIPE.yaml --set ...` through typer's CliRunner on a tiny real run."""

from __future__ import annotations

from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.data import sample_path
from mrisr.models import read_metadata

runner = CliRunner()

RECIPE = """\
name: tiny
seed: 1
data:
  train: [SAMPLE]
  validation: []
  inplane_mm: [2.0]
  slice_mm: [4.0]
  orientations: [axial]
  patch: [32, 32, 8]
model:
  use_prior: false
  channels: [4, 8]
  strides: [[2, 2, 1]]
  num_res_units: 0
  features: 4
optim:
  steps: 50
  batch_size: 2
  warmup_steps: 1
validation:
  samples: 1
data_workers: 0
device: cpu
"""


def _errors(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_train_writes_checkpoint_and_log_with_overrides(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE.replace("SAMPLE", str(sample_path())))  # a NIfTI path is a training source too
    out = tmp_path / "models" / "tiny.safetensors"
    result = runner.invoke(app, ["train", str(recipe), "-o", str(out), "--set", "optim.steps=2",
                                 "--set", "seed=9", "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"{out}: trained" in result.output
    meta = read_metadata(out)
    assert meta["training"]["steps"] == 2
    config = meta["training"]["config"]
    assert config["optim"]["steps"] == 2 and config["seed"] == 9  # the overrides are what was saved
    assert config["name"] == "tiny"
    assert meta["data"]["train"] == [str(sample_path())]
    assert meta["uses_prior"] is False
    assert out.with_suffix(".log.csv").read_text().startswith("step,elapsed_s,lr,loss")


def test_invalid_override_is_a_one_line_error(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "never.safetensors"
    result = runner.invoke(app, ["train", str(recipe), "-o", str(out), "--set", "simulation.keep_range=[30, 10]"])
    assert result.exit_code == 1
    errors = _errors(result)
    assert len(errors) == 1
    assert str(recipe) in errors[0] and "simulation.keep_range = [30, 10]" in errors[0]
    assert not out.exists()


def test_unknown_key_in_recipe_is_a_one_line_error(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(RECIPE.replace("  patch: [32, 32, 8]", "  patch: [32, 32, 8]\n  augment: true"))
    result = runner.invoke(app, ["train", str(recipe), "-o", str(tmp_path / "m.safetensors")])
    assert result.exit_code == 1
    assert _errors(result) == [f"error: {recipe}: data.augment = True is invalid: Extra inputs are not permitted"]


def test_missing_recipe(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "config not found" in _errors(result)[0]
