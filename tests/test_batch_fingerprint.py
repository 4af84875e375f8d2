"""The batch resume fingerprint: which options make a finished output out of date."""

from __future__ import annotations

import pytest

import mrisr.models.predictor as predictor
from mrisr.batch.resume import _with_compute_dtype, fingerprint_of

INPUTS = {"series": {"sha256": "a" * 64}, "planning": {"sha256": "b" * 64}}
MODEL = {"sha256": "c" * 64, "name": "default"}


def _fingerprint(options: dict, device: str = "cpu") -> str:
    return fingerprint_of(INPUTS, MODEL, _with_compute_dtype(options, device))


@pytest.fixture
def cpu_dtype(monkeypatch):
    """Set what ``auto`` resolves to on this CPU (bf16 where it has bf16 instructions, else fp32)."""

    def setting(name: str) -> None:
        monkeypatch.setattr(predictor, "compute_dtype_name", lambda device, precision: name if precision == "auto"
                            else "float32")

    return setting


def test_auto_precision_counts_what_it_resolves_to(cpu_dtype):
    """An output made with ``auto`` on a CPU with bf16 is out of date on a CPU that runs fp32."""
    options = {"method": "network", "precision": "auto", "prior_mode": "tracked"}
    cpu_dtype("bfloat16")
    on_bf16 = _fingerprint(options)
    assert _with_compute_dtype(options, "cpu")["compute_dtype"] == "bfloat16"
    cpu_dtype("float32")
    on_fp32 = _fingerprint(options)
    assert on_bf16 != on_fp32
    assert _fingerprint(options) == on_fp32  # and it is stable


def test_fp32_and_methods_without_a_network_do_not_depend_on_the_cpu(cpu_dtype):
    fp32 = {"method": "network", "precision": "fp32", "prior_mode": "tracked"}
    keyhole = {"method": "keyhole-gated", "precision": "auto", "prior_mode": "tracked"}
    for options in (fp32, keyhole):
        cpu_dtype("bfloat16")
        first = _fingerprint(options)
        cpu_dtype("float32")
        assert _fingerprint(options) == first
        assert "compute_dtype" not in _with_compute_dtype(options, "cpu")
    # the options themselves still count
    assert _fingerprint(fp32) != _fingerprint({**fp32, "prior_mode": "planning"})


def test_the_real_resolution_matches_the_predictor():
    """Without patching, the fingerprint records what the predictor runs in on this machine."""
    resolved = _with_compute_dtype({"method": "network", "precision": "auto"}, "cpu")["compute_dtype"]
    assert resolved == predictor.compute_dtype_name(predictor.resolve_device("cpu"), "auto")
    assert resolved in {"bfloat16", "float32"}


@pytest.mark.parametrize("field", ["sparse_changes", "match_contrast", "denoise_prior"])
def test_gate_options_are_recipe_options_that_count(field):
    """``reconstruct.sparse_changes``, ``reconstruct.match_contrast`` and ``reconstruct.denoise_prior``
    are in the recipe's options (on by default) and in the fingerprint."""
    from mrisr.batch.config import ReconstructSettings

    on, off = ReconstructSettings().model_dump(), ReconstructSettings(**{field: False}).model_dump()
    assert on[field] is True and off[field] is False
    assert _fingerprint(on) != _fingerprint(off)


def test_line_changes_is_a_recipe_option_that_counts():
    """``reconstruct.line_changes`` is off by default and changes the fingerprint when on."""
    from mrisr.batch.config import ReconstructSettings

    off, on = ReconstructSettings().model_dump(), ReconstructSettings(line_changes=True).model_dump()
    assert off["line_changes"] is False and on["line_changes"] is True
    assert _fingerprint(on) != _fingerprint(off)
