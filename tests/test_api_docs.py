"""The public API documents itself: Google-style Args / Returns (or Yields) / Raises on the entry
points users call, runnable examples that hold, and ``py.typed`` so type checkers read the hints."""

from __future__ import annotations

import doctest
import inspect
import re
from pathlib import Path

import pytest

import mrisr
import mrisr.kspace.band
import mrisr.layers
import mrisr.reconstruct.changes
import mrisr.reconstruct.contrast
import mrisr.reconstruct.network_input
import mrisr.reconstruct.options
import mrisr.reconstruct.pipeline
import mrisr.resources
from mrisr.batch import run_batch, validate_batch
from mrisr.io import load, save_like
from mrisr.kspace.simulate import simulate_volume
from mrisr.metrics import evaluate_frames
from mrisr.phantom import make_dynamic
from mrisr.reconstruct import iter_reconstruct, prepare_state, reconstruct_frame
from mrisr.workflow import reconstruct_file

PUBLIC = [reconstruct_file, iter_reconstruct, prepare_state, reconstruct_frame, load, save_like, simulate_volume, make_dynamic, evaluate_frames,
          run_batch, validate_batch]


def sections(doc: str) -> dict[str, str]:
    """Section name -> body of a Google-style docstring."""
    parts = re.split(r"^\s*(Args|Returns|Yields|Raises|Example|Examples|Attributes):\s*$", doc, flags=re.M)
    return {name: body for name, body in zip(parts[1::2], parts[2::2])}


@pytest.mark.parametrize("function", PUBLIC, ids=lambda f: f.__name__)
def test_public_functions_document_args_returns_and_raises(function):
    doc = inspect.getdoc(function)
    found = sections(doc)
    assert {"Args", ("Yields" if inspect.isgeneratorfunction(function) else "Returns"), "Raises"} <= set(found), (
        function.__name__, sorted(found))
    documented = set(re.findall(r"^\s{0,4}(\w+):", found["Args"], flags=re.M))
    parameters = set(inspect.signature(function).parameters) - {"self"}
    assert parameters <= documented, (function.__name__, parameters - documented)
    assert re.search(r"^\s*\w+(Error|Interrupt):", found["Raises"], flags=re.M), function.__name__


@pytest.mark.parametrize("module", [mrisr.reconstruct.options, mrisr.resources, mrisr.reconstruct.changes,
                                    mrisr.reconstruct.contrast, mrisr.reconstruct.network_input,
                                    mrisr.kspace.band, mrisr.layers], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_package_is_typed():
    assert (Path(mrisr.__file__).parent / "py.typed").is_file()
    from typing import get_type_hints

    from mrisr.reconstruct import ReconstructOptions

    hints = get_type_hints(ReconstructOptions)
    assert str(hints["prior_mode"]) == "typing.Literal['tracked', 'planning', 'previous']"
