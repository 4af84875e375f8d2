"""Checkpoint format: one safetensors file, weights plus JSON metadata; loading never unpickles.

Metadata (in the safetensors header, key ``mrisr``) is a JSON object with at least:
``format`` (``"mrisr-checkpoint"``), ``format_version``, ``architecture``, ``arguments``
(constructor kwargs), ``uses_prior``, ``normalisation`` (how intensities are scaled),
``keep_range`` (k-space percentages trained for), ``mask`` (trained mask mode),
``training`` (resolved config), ``data`` (provenance), ``validation`` (metrics),
``mrisr_version``; fine-tuned models add ``base_model`` and ``planning_sha256``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from mrisr.io.errors import MrisrInputError, one_line, quote
from mrisr.io.hashing import file_sha256 as file_sha256  # re-exported for mrisr.models' callers

FORMAT = "mrisr-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(network: nn.Module, path: str | Path, meta: dict) -> Path:
    """Write weights + metadata atomically. ``meta`` must hold ``architecture`` and ``arguments``."""
    from safetensors.torch import save_file

    import mrisr

    path = Path(path)
    from mrisr.io.guard import make_folder

    make_folder(path.parent)
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "mrisr_version": mrisr.__version__, **meta}
    for key in ("architecture", "arguments"):
        if key not in full:
            raise ValueError(f"checkpoint metadata needs {key!r}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    from mrisr.io.guard import partial_file, write_errors
    from mrisr.io.save import _publish

    tmp = partial_file(path)
    try:
        try:
            save_file(tensors, str(tmp), metadata={"mrisr": json.dumps(full)})
        except Exception as exc:  # safetensors reports a failed write (disk full) as its own error type
            raise MrisrInputError(
                f"{path}: cannot write the checkpoint ({one_line(exc)}); free some space or choose another location"
            ) from None
        with write_errors(path):
            _publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_metadata(path: str | Path) -> dict:
    """Metadata of an mrisr checkpoint, or a one-line :class:`MrisrInputError` saying what the file is."""
    from safetensors import safe_open

    from mrisr.io.guard import register_input

    path = Path(path)
    if not path.exists():
        raise MrisrInputError(f"{path}: model file not found; pass 'default' or the path of an mrisr checkpoint")
    register_input(path)
    if not path.is_file():
        raise MrisrInputError(f"{path}: not a regular file; pass the path of an mrisr checkpoint (.safetensors)")
    try:
        with open(path, "rb") as handle:
            handle.read(8)
    except OSError as exc:
        raise MrisrInputError(f"{path}: cannot read the model file ({exc.strerror}); check its permissions") from None
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get("mrisr")
    except Exception as exc:
        kind = "a PyTorch pickle" if path.suffix in (".pt", ".pth", ".ckpt") else "not a safetensors file"
        reason = "" if kind == "a PyTorch pickle" else f" ({one_line(exc)[:160]})"
        raise MrisrInputError(
            f"{path}: {kind}{reason}, expected an mrisr checkpoint (.safetensors with mrisr metadata); "
            "train one with `mrisr train` or use --model default"
        ) from None
    if raw is None:
        raise MrisrInputError(
            f"{path}: a safetensors file without mrisr metadata, expected an mrisr checkpoint; "
            "train one with `mrisr train` or use --model default"
        )
    from mrisr.io.configfile import parse_json

    try:
        meta = parse_json(raw, f"{path}: mrisr metadata")
    except MrisrInputError as exc:
        raise MrisrInputError(f"{exc}; the checkpoint is damaged") from None
    if not isinstance(meta, dict):
        raise MrisrInputError(
            f"{path}: mrisr metadata is a {type(meta).__name__}, expected a JSON object; the checkpoint is damaged"
        )
    if meta.get("format") != FORMAT:
        raise MrisrInputError(f"{path}: metadata format {quote(meta.get('format'))}, expected {FORMAT!r}")
    validate_metadata(path, meta)
    return meta


#: sane limits of the network a checkpoint may ask for (the bundled models use far less); a
#: checkpoint beyond them is refused before anything is built or allocated
MAX_CHANNELS = 512
MAX_LEVELS = 6
MAX_FEATURES = 256
MAX_RES_UNITS = 4
MAX_SPACE_TO_DEPTH = 4
ARGUMENT_NAMES = {"use_prior", "channels", "strides", "num_res_units", "features", "space_to_depth", "prior_input"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_metadata(path: str | Path, meta: dict) -> None:
    """Check a checkpoint's metadata against the format and sane limits, before any network is built.

    Every key a reader of the metadata looks into (``training.steps``, ``training.config.loss.tissue``,
    ``normalisation.percentile``, ...) is checked here for its type, so that no consumer meets a
    list where it expects an object; anything else wrong in the nesting is one line too.

    Raises:
        MrisrInputError: naming the file, the key, the bad value and the limit.
    """
    try:
        _validate_metadata(path, meta)
    except MrisrInputError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        raise MrisrInputError(
            f"{path}: checkpoint metadata is malformed ({one_line(exc)[:80]}); the checkpoint is damaged or not made "
            "by mrisr"
        ) from None


def _validate_metadata(path: str | Path, meta: dict) -> None:
    def bad(key: str, value, rule: str) -> MrisrInputError:
        return MrisrInputError(
            f"{path}: checkpoint metadata {key} = {json.dumps(value)[:80]} is invalid ({rule}); "
            "the checkpoint is damaged or not made by mrisr"
        )

    from mrisr.models.network import ARCHITECTURES

    for key in ("architecture", "arguments"):
        if key not in meta:
            raise MrisrInputError(f"{path}: checkpoint metadata lacks {key!r}; the checkpoint is damaged or not made by mrisr")
    architecture = meta["architecture"]
    if not isinstance(architecture, str) or architecture not in ARCHITECTURES:
        raise MrisrInputError(
            f"{path}: cannot build architecture {architecture!r} (unknown; known: {', '.join(ARCHITECTURES)})"
        )
    args = meta["arguments"]
    if not isinstance(args, dict):
        raise bad("arguments", args, "a JSON object of constructor arguments expected")
    unknown = set(args) - ARGUMENT_NAMES
    if unknown:
        raise bad("arguments", sorted(unknown), f"unknown argument(s); known: {', '.join(sorted(ARGUMENT_NAMES))}")
    channels = args.get("channels", [24, 48, 96, 192])
    if (not isinstance(channels, list) or not 2 <= len(channels) <= MAX_LEVELS
            or not all(_is_int(c) and 1 <= c <= MAX_CHANNELS for c in channels)):
        raise bad("arguments.channels", channels, f"2 to {MAX_LEVELS} integers in 1..{MAX_CHANNELS}")
    strides = args.get("strides", [[2, 2, 1], [2, 2, 2], [2, 2, 1]])
    if (not isinstance(strides, list) or len(strides) != len(channels) - 1
            or not all(isinstance(s, list) and len(s) == 3 and all(_is_int(v) and v in (1, 2) for v in s)
                       for s in strides)):
        raise bad("arguments.strides", strides, f"{len(channels) - 1} triples of 1 or 2 (one per level below the top)")
    for key, low, high in (("num_res_units", 0, MAX_RES_UNITS), ("features", 1, MAX_FEATURES),
                           ("space_to_depth", 1, MAX_SPACE_TO_DEPTH)):
        if key in args and not (_is_int(args[key]) and low <= args[key] <= high):
            raise bad(f"arguments.{key}", args[key], f"an integer in {low}..{high}")
    use_prior = args.get("use_prior", True)
    if not isinstance(use_prior, bool):
        raise bad("arguments.use_prior", use_prior, "true or false")
    if "uses_prior" in meta and meta["uses_prior"] is not use_prior:
        raise bad("uses_prior", meta["uses_prior"], f"must equal arguments.use_prior ({json.dumps(use_prior)})")
    from mrisr.models.network import PRIOR_INPUTS

    prior_input = args.get("prior_input", "prior")
    if not isinstance(prior_input, str) or prior_input not in PRIOR_INPUTS or (prior_input != "prior" and not use_prior):
        raise bad("arguments.prior_input", prior_input, f"one of {', '.join(PRIOR_INPUTS)} (not prior: with use_prior)")
    normalisation = meta.get("normalisation", {})
    if not isinstance(normalisation, dict):
        raise bad("normalisation", normalisation, "a JSON object such as {\"percentile\": 99.5}")
    percentile = normalisation.get("percentile", 99.5)
    if not (isinstance(percentile, (int, float)) and not isinstance(percentile, bool) and 0 < percentile <= 100):
        raise bad("normalisation.percentile", percentile, "a number in (0, 100]")
    keep_range = meta.get("keep_range")
    if keep_range is not None and not (
        isinstance(keep_range, list) and len(keep_range) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in keep_range)
        and 0 < keep_range[0] <= keep_range[1] <= 100
    ):
        raise bad("keep_range", keep_range, "[low, high] percentages with 0 < low <= high <= 100")
    if "sha256" in meta and not isinstance(meta["sha256"], str):
        raise bad("sha256", meta["sha256"], "a hexadecimal digest")
    training = meta.get("training", {})
    if not isinstance(training, dict):
        raise bad("training", training, "a JSON object")
    if "steps" in training and not (_is_int(training["steps"]) and training["steps"] >= 0):
        raise bad("training.steps", training["steps"], "a whole number >= 0")
    section = training
    for key in ("config", "loss"):  # training.config.loss.tissue is read when fine-tuning
        section = section.get(key, {}) if isinstance(section, dict) else section
        if not isinstance(section, dict):
            raise bad(f"training.{'config.loss' if key == 'loss' else key}", section, "a JSON object")
    tissue = section.get("tissue", 0.0)
    if not (isinstance(tissue, (int, float)) and not isinstance(tissue, bool) and math.isfinite(tissue)):
        raise bad("training.config.loss.tissue", tissue, "a finite number")


def load_network(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Build the network a checkpoint describes and load its weights (no unpickling)."""
    from safetensors.torch import load_file

    from mrisr.models.network import build_network

    meta = read_metadata(path)
    try:
        network = build_network(meta["architecture"], meta["arguments"])
    except (ValueError, TypeError) as exc:
        raise MrisrInputError(f"{path}: cannot build architecture {meta.get('architecture')!r} ({exc})") from None
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:
        raise MrisrInputError(f"{path}: cannot read the weights ({one_line(exc)[:160]}); the checkpoint is damaged") from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise MrisrInputError(
                f"{path}: weight {name} holds NaN/Inf values (training diverged or the file is damaged); "
                "use another checkpoint"
            )
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise MrisrInputError(
            f"{path}: weights do not match architecture {meta['architecture']} {meta['arguments']} ({first})"
        ) from None
    network.to(device)
    network.eval()
    return network, meta
