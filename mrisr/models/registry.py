"""Bundled models and loading by name or path."""

from __future__ import annotations

from pathlib import Path

import torch

from mrisr.io.errors import MrisrInputError
from mrisr.io.hashing import file_sha256
from mrisr.models.checkpoint import load_network, save_checkpoint
from mrisr.models.predictor import SRModel, autocast_dtype, resolve_device

BUNDLED_DIR = Path(__file__).parent / "bundled"
BUNDLED = {"default": "default.safetensors", "default-noprior": "default-noprior.safetensors"}


def bundled_models() -> dict[str, Path]:
    """Names and paths of the models shipped inside the package."""
    return {name: BUNDLED_DIR / fname for name, fname in BUNDLED.items() if (BUNDLED_DIR / fname).exists()}


def resolve_model_path(name_or_path: str | Path) -> Path:
    """Path of a bundled model name (``default``, ``default-noprior``) or of a checkpoint file."""
    key = str(name_or_path)
    if key in BUNDLED:
        path = BUNDLED_DIR / BUNDLED[key]
        if not path.exists():
            raise MrisrInputError(f"bundled model {key!r} is missing from the installation ({path}); reinstall mrisr")
        return path
    return Path(name_or_path)


def load(name_or_path: str | Path = "default", device: str = "cpu", channels_last: bool | None = None,
         precision: str = "auto") -> SRModel:
    """Load a bundled model by name or any mrisr checkpoint by path.

    Example:
        >>> model = load("default")  # doctest: +SKIP
        >>> sr = model.predict(sinc_frame, prior_channel)  # doctest: +SKIP

    ``channels_last``: memory layout of the network (default: channels-last 3-D on the CPU,
    contiguous elsewhere; see :class:`~mrisr.models.predictor.SRModel`). ``precision``: ``auto``
    or ``fp32`` (:func:`~mrisr.models.predictor.autocast_dtype`).
    """
    path = resolve_model_path(name_or_path)
    dev = resolve_device(device)
    autocast_dtype(dev, precision)  # a bad precision fails before the weights are read
    network, meta = load_network(path, dev)
    model = SRModel(network, meta, dev, source=name_or_path, channels_last=channels_last,
                    precision=precision)
    model.meta.setdefault("sha256", file_sha256(path))
    model.path = path
    return model


def make_tiny_checkpoint(path: str | Path, prior: bool = True, seed: int = 0, prior_input: str = "prior") -> Path:
    """A very small, valid checkpoint for fast plumbing tests (never for quality).

    Its head is zero-initialised, so it returns its base unchanged until trained: the sinc input,
    or with ``prior_input="gated-keyhole"`` the gated keyhole it is given.
    """
    from mrisr.models.network import PriorSRNet

    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        arguments = {"use_prior": prior, "channels": [4, 8], "strides": [[2, 2, 1]], "num_res_units": 0,
                     "features": 4, "space_to_depth": 2}
        if prior_input != "prior":
            arguments["prior_input"] = prior_input
        network = PriorSRNet(**arguments)
    finally:
        torch.random.set_rng_state(gen_state)
    meta = {
        "architecture": "prior-sr-unet",
        "arguments": arguments,
        "uses_prior": prior,
        "normalisation": {"method": "percentile", "percentile": 99.5},
        "keep_range": [4.0, 25.0],
        "mask": "center",
        "training": {"note": "untrained test model"},
        "data": {},
        "validation": {},
    }
    return save_checkpoint(network, path, meta)


def model_sha256(model: SRModel) -> str:
    return model.meta.get("sha256") or file_sha256(model.path)
