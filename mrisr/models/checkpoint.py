"""Checkpoint format: one safetensors file, weights plus JSON metadata; loading never unpickles.

Metadata (in the safetensors header, key ``mrisr``) is a JSON object with at least:
``format`` (``"mrisr-checkpoint"``), ``format_version``, ``architecture``, ``arguments``
(constructor kwargs), ``uses_prior``, ``normalisation`` (how intensities are scaled),
``keep_range`` (k-space percentages trained for), ``mask`` (trained mask mode),
``training`` (resolved config), ``data`` (provenance), ``validation`` (metrics),
``mrisr_version``; fine-tuned models add ``base_model`` and ``planning_sha256``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from mrisr.io.errors import MrisrInputError, one_line

FORMAT = "mrisr-checkpoint"
FORMAT_VERSION = 1


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(network: nn.Module, path: str | Path, meta: dict) -> Path:
    """Write weights + metadata atomically. ``meta`` must hold ``architecture`` and ``arguments``."""
    from safetensors.torch import save_file

    import mrisr

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get("mrisr")
    except Exception:
        kind = "a PyTorch pickle" if path.suffix in (".pt", ".pth", ".ckpt") else "not a safetensors file"
        raise MrisrInputError(
            f"{path}: {kind}, expected an mrisr checkpoint (.safetensors with mrisr metadata); "
            "train one with `mrisr train` or use --model default"
        ) from None
    if raw is None:
        raise MrisrInputError(
            f"{path}: a safetensors file without mrisr metadata, expected an mrisr checkpoint; "
            "train one with `mrisr train` or use --model default"
        )
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise MrisrInputError(f"{path}: metadata format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_network(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Build the network a checkpoint describes and load its weights (no unpickling)."""
    from safetensors.torch import load_file

    from mrisr.models.network import build_network

    meta = read_metadata(path)
    try:
        network = build_network(meta["architecture"], meta["arguments"])
    except (ValueError, TypeError) as exc:
        raise MrisrInputError(f"{path}: cannot build architecture {meta.get('architecture')!r} ({exc})") from None
    state = load_file(str(path), device="cpu")
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
