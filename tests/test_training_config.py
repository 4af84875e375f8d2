"""Training recipes: schema errors name the key, the value and the rule; --set overrides parse as YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrisr.io import MrisrInputError
from mrisr.training.config import TrainConfig, apply_overrides, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def _error(path, overrides=None) -> str:
    with pytest.raises(MrisrInputError) as exc:
        load_config(path, overrides)
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", ["default.yaml", "default-noprior.yaml"])
def test_shipped_recipes_validate(name):
    path = CONFIGS / name
    if not path.exists():
        pytest.skip(f"{path} not in this checkout")
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)
    assert cfg.model.use_prior is (name == "default.yaml")


def test_defaults_validate():
    cfg = load_config(None)
    assert cfg.simulation.keep_range == (4.0, 25.0)
    assert cfg.data.patch == (96, 96, 16)


def test_unknown_key_is_named(tmp_path):
    path = _write(tmp_path, "data:\n  patchsize: [32, 32, 8]\n")
    message = _error(path)
    assert message.startswith(f"{path}: data.patchsize = [32, 32, 8] is invalid")
    assert "Extra inputs are not permitted" in message


def test_unknown_top_level_key_is_named(tmp_path):
    message = _error(_write(tmp_path, "optimiser:\n  lr: 0.1\n"))
    assert "optimiser = {'lr': 0.1} is invalid" in message


def test_reversed_keep_range_names_key_value_and_rule(tmp_path):
    message = _error(_write(tmp_path, "simulation:\n  keep_range: [30, 10]\n"))
    assert "simulation.keep_range = [30, 10]" in message
    assert "0 < low <= high <= 100" in message


def test_patch_not_multiple_of_16_names_key_value_and_rule(tmp_path):
    message = _error(_write(tmp_path, "data:\n  patch: [40, 48, 8]\n"))
    assert "data.patch = [40, 48, 8]" in message
    assert "multiples of 16" in message


def test_out_of_range_number_names_the_bound():
    message = _error(None, ["optim.batch_size=100"])
    assert message.startswith("<defaults>: optim.batch_size = 100 is invalid")
    assert "64" in message


def test_wrong_type_names_the_value():
    assert "optim.steps = 'many'" in _error(None, ["optim.steps=many"])


def test_model_strides_must_match_channels():
    message = _error(None, ["model.channels=[4, 8, 16]", "model.strides=[[2, 2, 1]]"])
    assert "model" in message and "len(channels) - 1 = 2" in message


def test_set_overrides_parse_as_yaml(tmp_path):
    path = _write(tmp_path, "optim:\n  steps: 10\n  lr: 0.001\ndata:\n  train: [colin27]\n")
    cfg = load_config(path, ["optim.steps=200", "optim.lr=1e-3", "data.train=[colin27, mni152]",
                             "model.use_prior=false", "loss.l1=0.5", "name=my run", "threads=2",
                             "data.patch=[32, 32, 8]"])
    assert cfg.optim.steps == 200
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.data.train == ["colin27", "mni152"]
    assert cfg.model.use_prior is False
    assert cfg.loss.l1 == 0.5
    assert cfg.name == "my run"
    assert cfg.threads == 2
    assert cfg.data.patch == (32, 32, 8)


def test_apply_overrides_creates_sections_and_rejects_bad_items():
    raw = apply_overrides({"optim": {"steps": 5}}, ["validation.samples=1", "optim.steps=7"])
    assert raw == {"optim": {"steps": 7}, "validation": {"samples": 1}}
    with pytest.raises(MrisrInputError, match="expected key=value"):
        apply_overrides({}, ["optim.steps"])
    with pytest.raises(MrisrInputError, match="steps is not a section"):
        apply_overrides({"optim": {"steps": 5}}, ["optim.steps.value=1"])


def test_missing_and_malformed_files(tmp_path):
    assert "config not found" in _error(tmp_path / "nope.yaml")
    assert "not valid YAML" in _error(_write(tmp_path, "data: [unclosed\n"))
    assert "expected a mapping" in _error(_write(tmp_path, "- a\n- b\n"))


def test_empty_file_is_the_defaults(tmp_path):
    assert load_config(_write(tmp_path, "")) == load_config(None)


def test_stage4_options_reach_the_pair_generator():
    """``loss.sites`` switches the site masks on and ``prior.noise_*`` reach the generator; the
    other recipes leave both off."""
    from mrisr.training.streams import pair_settings

    sites = pair_settings(load_config(CONFIGS / "default-sites.yaml", []))
    assert sites.sites and sites.prior_noise_probability == 0.3 and sites.prior_noise_snr == (15.0, 100.0)
    noise = pair_settings(load_config(CONFIGS / "default-noise.yaml", []))
    assert not noise.sites and noise.prior_noise_probability == 0.5 and noise.prior_noise_snr == (10.0, 60.0)
    assert noise.noise_probability == 0.8 and noise.prior_input == "gated-keyhole"
    for name in ("default.yaml", "default-recurrent.yaml", "default-gated.yaml", "default-noprior.yaml"):
        other = pair_settings(load_config(CONFIGS / name, []))
        assert not other.sites and other.prior_noise_probability == 0.0, name


def test_the_real_anatomy_recipe_is_stage_5_with_brain2():
    """``default-real.yaml`` changes stage 5's recipe only in its sources, seed and time."""
    real = load_config(CONFIGS / "default-real.yaml", []).model_dump()
    noise = load_config(CONFIGS / "default-noise.yaml", []).model_dump()
    assert real["data"].pop("train") == ["colin27", "inia19", "brain2"]
    assert noise["data"].pop("train") == ["colin27", "inia19"]
    for cfg in (real, noise):
        cfg.pop("seed")
        cfg["optim"].pop("minutes")
    assert real == noise
