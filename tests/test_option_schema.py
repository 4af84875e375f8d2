"""One option schema: every face of the reconstruction options agrees with
:class:`mrisr.reconstruct.ReconstructOptions` (names, defaults, bounds, choices, help).

The faces read the schema where they can (CLI flags, the batch recipe's fields, napari widgets);
these tests fail on any disagreement left, including a new option some face does not know of.
The napari widget is checked in ``tests/napari/test_napari_option_schema.py`` (it needs a viewer).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import click
import pytest
import yaml
from pydantic import ValidationError
from typer.main import get_command

from mrisr.batch.config import RECIPE_OPTIONS, BatchConfig, ReconstructSettings, load_batch_config
from mrisr.cli import app
from mrisr.io.errors import OptionError
from mrisr.reconstruct import ReconstructOptions
from mrisr.reconstruct.options import (
    DEVICES,
    METHODS,
    option_bounds,
    option_choices,
    option_default,
    option_help,
    option_range,
)

REPO = Path(__file__).resolve().parents[1]
FIELDS = tuple(ReconstructOptions.model_fields)
#: the options a batch recipe leaves out on purpose (where the work runs, not what it computes)
NOT_IN_RECIPE = ("device", "threads", "tile")


def _command(name: str) -> click.Command:
    return get_command(app).commands[name]  # type: ignore[attr-defined]


def _params(name: str) -> dict[str, click.Parameter]:
    return {param.name: param for param in _command(name).params}


def _accepts_library(name: str, value: object) -> bool:
    try:
        ReconstructOptions(**{name: value})
    except OptionError:
        return False
    return True


def _accepts_recipe(name: str, value: object) -> bool:
    try:
        ReconstructSettings(**{name: value})
    except ValidationError:
        return False
    return True


def _probes(name: str) -> list[object]:
    """Values on and just past each bound of option ``name`` (and every choice, and a wrong one)."""
    if option_choices(name):
        return [*option_choices(name), "bogus"]
    bounds = option_bounds(name)
    if bounds and isinstance(bounds[0], tuple):
        lows = [low for low, _ in bounds]
        highs = [high for _, high in bounds]
        return [tuple(lows), tuple(highs), tuple(low - 1 for low in lows), tuple(high + 1 for high in highs)]
    low, _, high = bounds
    probes: list[object] = []
    for bound in (low, high):
        if bound is not None:
            probes += [bound, math.nextafter(bound, -math.inf), math.nextafter(bound, math.inf)]
    return probes


# --------------------------------------------------------------------------- the schema itself


def test_every_option_has_help_and_a_valid_default():
    for name in FIELDS:
        assert option_help(name), name
        assert getattr(ReconstructOptions(), name) == option_default(name), name
    assert option_choices("method") == METHODS


def test_bounds_in_the_messages_come_from_the_schema():
    with pytest.raises(OptionError, match=re.escape(f"must be in {option_range('factor')}")):
        ReconstructOptions(factor=option_bounds("factor")[2] + 1)
    with pytest.raises(OptionError, match=re.escape(f"must be in {option_range('finetune_minutes')}")):
        ReconstructOptions(finetune_minutes=0)


# --------------------------------------------------------------------------- mrisr reconstruct / finetune


def test_reconstruct_cli_has_every_option_with_the_schema_default_and_help():
    params = _params("reconstruct")
    assert set(FIELDS) <= set(params), set(FIELDS) - set(params)
    # anything else is about files and the terminal, not the reconstruction (series, prior_series and
    # output_format choose which DICOM series is read and what is written: I/O, not reconstruction options)
    assert set(params) - set(FIELDS) == {"dynamic", "prior", "output", "quiet", "series", "prior_series",
                                         "output_format"}
    for name in FIELDS:
        param = params[name]
        assert param.default == option_default(name), name
        assert param.help == option_help(name), name
        assert param.opts[0] == f"--{name.replace('_', '-')}", (name, param.opts)
        for choice in option_choices(name):
            assert choice in param.help, (name, choice)
        assert option_range(name) in param.help, name


def test_finetune_cli_shares_defaults_bounds_and_help():
    params = _params("finetune")
    # mrisr finetune --minutes is reconstruct's --finetune-minutes: one default, one cap
    assert params["minutes"].default == option_default("finetune_minutes") == _params("reconstruct")[
        "finetune_minutes"].default
    assert params["minutes"].help == option_help("finetune_minutes")
    for name in ("model", "device", "threads", "match_contrast"):
        assert params[name].default == option_default(name), name
        assert option_help(name) in params[name].help, name


def test_batch_cli_device_default():
    assert _params("batch")["device"].default == option_default("device")


# --------------------------------------------------------------------------- the batch recipe


def test_recipe_fields_are_the_schema_fields():
    assert set(RECIPE_OPTIONS) | set(NOT_IN_RECIPE) == set(FIELDS)
    assert not set(RECIPE_OPTIONS) & set(NOT_IN_RECIPE)
    recipe = ReconstructSettings.model_fields
    assert tuple(recipe) == RECIPE_OPTIONS
    for name in RECIPE_OPTIONS:
        mine, schema = recipe[name], ReconstructOptions.model_fields[name]
        assert (mine.annotation, mine.default, mine.metadata, mine.description) == (
            schema.annotation, schema.default, schema.metadata, schema.description), name


@pytest.mark.parametrize("name", [name for name in RECIPE_OPTIONS if _probes(name)])
def test_recipe_and_library_accept_the_same_values(name):
    for value in _probes(name):
        assert _accepts_recipe(name, value) == _accepts_library(name, value), (name, value)


def test_factor_one_is_accepted_everywhere():
    assert _accepts_library("factor", 1) and _accepts_recipe("factor", 1)
    assert not _accepts_library("factor", 0.5) and not _accepts_recipe("factor", 0.5)


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ("method: keyhole\n  finetune: true", "reconstruct.method = 'keyhole': a keyhole method has no model to fine-tune"),
        ("method: keyhole-gated\n  data_consistency: true", "reconstruct.method = 'keyhole-gated': a keyhole method"),
        ("factor: 2\n  matrix: [64, 64]", "reconstruct.matrix = (64, 64): give factor or matrix, not both"),
    ],
)
def test_recipe_applies_the_rules_between_options(tmp_path, recipe, message):
    path = tmp_path / "batch.yaml"
    path.write_text(f"reconstruct:\n  {recipe}\n")
    with pytest.raises(Exception, match=re.escape(message)):
        load_batch_config(path)


def _recipe_lines() -> dict[str, tuple[str, str]]:
    """``configs/batch.yaml``'s ``reconstruct:`` block: key -> (value, comment)."""
    block = re.search(r"^reconstruct:\n((?:[ #].*\n)+)", (REPO / "configs" / "batch.yaml").read_text(), flags=re.M)
    assert block is not None
    found = {}
    for line in block.group(1).splitlines():
        match = re.match(r"^  (\w+):\s*(\S+)\s*(?:#\s*(.*))?$", line)
        if match:
            found[match.group(1)] = (match.group(2), match.group(3) or "")
    return found


def test_configs_batch_yaml_lists_every_recipe_option_with_its_choices_and_range():
    lines = _recipe_lines()
    assert sorted(lines) == sorted(RECIPE_OPTIONS)
    config = yaml.safe_load((REPO / "configs" / "batch.yaml").read_text())["reconstruct"]
    for name, (_, comment) in lines.items():
        value = config[name]
        assert (tuple(value) if isinstance(value, list) else value) == option_default(name), name
        for choice in option_choices(name):
            assert choice in comment, (name, choice, comment)
        assert option_range(name) in comment, (name, comment)
    assert load_batch_config(REPO / "configs" / "batch.yaml") == BatchConfig()


# --------------------------------------------------------------------------- Snakemake


def test_pipeline_config_overrides_are_recipe_options():
    text = (REPO / "pipelines" / "config.yaml").read_text()
    config = yaml.safe_load(text)
    snakefile = (REPO / "pipelines" / "Snakefile").read_text()
    overrides = set(re.findall(r'overrides\["(\w+)"\]', snakefile))
    assert overrides == {"model", "finetune"}
    assert overrides <= set(RECIPE_OPTIONS)
    for name in overrides:
        assert name in config and config[name] is None, name  # null: the recipe's value
        # the subject job hands each override to `mrisr batch` under the schema's flag name
        assert f"--{name}" in _params("batch")[name].opts, name
    assert config["device"] == option_default("device")
    device_comment = next(line for line in text.splitlines() if "where each subject runs" in line)
    assert " | ".join(DEVICES) in device_comment
    assert isinstance(config["threads"], int) and config["threads"] >= option_bounds("threads")[0]
