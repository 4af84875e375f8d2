"""Networks, the checkpoint format and the bundled default models."""

from mrisr.io.hashing import file_sha256
from mrisr.models.checkpoint import load_network, read_metadata, save_checkpoint
from mrisr.models.network import PriorSRNet, build_network
from mrisr.models.predictor import SRModel, resolve_device, robust_scale
from mrisr.models.registry import bundled_models, load, make_tiny_checkpoint, resolve_model_path

__all__ = [
    "PriorSRNet",
    "SRModel",
    "build_network",
    "bundled_models",
    "file_sha256",
    "load",
    "load_network",
    "make_tiny_checkpoint",
    "read_metadata",
    "resolve_device",
    "resolve_model_path",
    "robust_scale",
    "save_checkpoint",
]
