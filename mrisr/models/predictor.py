"""SRModel: a loaded network with its normalisation, ready to super-resolve frames."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from mrisr.io.errors import MrisrInputError

DEFAULT_PERCENTILE = 99.5
#: ``auto``: reduced-precision arithmetic where the hardware runs it natively (see
#: :func:`autocast_dtype`); ``fp32``: single precision everywhere (no hardware-dependent reduced precision)
PRECISIONS = ("auto", "fp32")
# above this many voxels a frame is tiled (sliding window) to bound memory
WHOLE_FRAME_MAX_VOXELS = 12_000_000


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MrisrInputError(f"--device {device}: no CUDA device is available here; use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise MrisrInputError(f"--device {device}: unknown device; use auto, cpu or cuda")
    return torch.device(device)


@functools.lru_cache(maxsize=1)
def native_bf16_cpu() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX tiles), which oneDNN's 3-D
    convolutions use directly; without them bfloat16 is emulated and slower than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(torch.cpu, name)()) for name in probes if hasattr(torch.cpu, name))
    except Exception:  # pragma: no cover - a torch build without the probes
        return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The reduced precision the network runs in on ``device``, or None for float32.

    ``auto``: float16 on CUDA; bfloat16 on a CPU with native bfloat16 instructions
    (:func:`native_bf16_cpu`), else float32. ``fp32``: always float32. Only the network's
    convolutions run in reduced precision; the gated keyhole it corrects is added back in float32,
    so the difference stays in the (small) correction: the tissue SSIM did not change measurably and
    the network ran faster on a CPU with AVX512-BF16 (benchmarks/RESULTS.md, 'Design decisions and
    their measurements'; 'Speed' has the latest run).
    """
    if precision not in PRECISIONS:
        raise MrisrInputError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and native_bf16_cpu():
        return torch.bfloat16
    return None


def compute_dtype_name(device: torch.device, precision: str = "auto") -> str:
    """What the network's convolutions run in on ``device`` under ``precision``: ``float32``,
    ``bfloat16`` or ``float16`` (:func:`autocast_dtype` as a name, for sidecars and fingerprints)."""
    dtype = autocast_dtype(device, precision)
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


#: :func:`robust_scale` reads every n-th voxel of a larger frame: a percentile of all voxels costs
#: several times more for the same scale (benchmarks/RESULTS.md, 'Design decisions and their
#: measurements'; the training pairs read every n-th of 200 000)
SCALE_SAMPLES = 500_000


def robust_scale(frame: np.ndarray | torch.Tensor, percentile: float = DEFAULT_PERCENTILE) -> float:
    """Intensity that maps to ~1: a high percentile of the frame (robust to bright outliers), on
    every n-th voxel of a frame of more than :data:`SCALE_SAMPLES` voxels."""
    if isinstance(frame, torch.Tensor):
        flat = frame.detach().flatten().float()
        if flat.numel() > SCALE_SAMPLES:
            flat = flat[:: flat.numel() // SCALE_SAMPLES + 1]
        value = float(torch.quantile(flat, percentile / 100.0))
    else:
        flat = np.asarray(frame, dtype=np.float32).ravel()
        if flat.size > SCALE_SAMPLES:
            flat = flat[:: flat.size // SCALE_SAMPLES + 1]
        value = float(np.percentile(flat, percentile))
    if not np.isfinite(value) or value <= 0:
        value = float(np.abs(np.asarray(frame)).max()) if not isinstance(frame, torch.Tensor) else float(frame.abs().max())
    return value if value > 0 else 1.0


class SRModel:
    """A super-resolution network plus the metadata that says how to feed it.

    Args:
        network: a :class:`~mrisr.models.network.PriorSRNet` (or compatible) module.
        meta: checkpoint metadata.
        device: torch device.
        source: path (or bundled name) the model came from.
        channels_last: run the network in the channels-last 3-D memory layout (default: on the
            CPU, where it was measured to be faster; the output differs by ~1e-7 of the scale).
        precision: ``auto`` or ``fp32`` (:func:`autocast_dtype`); settable later as
            :attr:`precision`.
    """

    def __init__(self, network: torch.nn.Module, meta: dict, device: torch.device, source: str | Path = "",
                 channels_last: bool | None = None, precision: str = "auto") -> None:
        if channels_last is None:
            channels_last = device.type == "cpu"
        if channels_last and hasattr(network, "set_memory_format"):
            network.set_memory_format(torch.channels_last_3d)
        self.network = network
        self.meta = meta
        self.device = device
        self.source = str(source)
        self.percentile = float(meta.get("normalisation", {}).get("percentile", DEFAULT_PERCENTILE))
        self.tile: tuple[int, int, int] | None = None
        self.tile_overlap = 0.25
        autocast_dtype(device, precision)  # validates
        self.precision = precision

    def compute_dtype(self, precision: str | None = None) -> str:
        """The precision the network's convolutions run in here (``float32``, ``bfloat16`` or
        ``float16``) under ``precision`` (default :attr:`precision`)."""
        return compute_dtype_name(self.device, self.precision if precision is None else precision)

    @property
    def uses_prior(self) -> bool:
        return bool(self.meta.get("uses_prior", getattr(self.network, "use_prior", True)))

    @property
    def prior_input(self) -> str:
        """What the network's prior channel holds: ``prior`` or ``gated-keyhole`` (the caller forms
        it with :func:`mrisr.reconstruct.network_input.form_network_input`)."""
        return str(getattr(self.network, "prior_input", "prior"))

    @property
    def keep_range(self) -> tuple[float, float] | None:
        kr = self.meta.get("keep_range")
        return (float(kr[0]), float(kr[1])) if kr else None

    def _run(self, sinc: torch.Tensor, prior: torch.Tensor | None, precision: str | None = None) -> torch.Tensor:
        net = self.network
        voxels = sinc[0, 0].numel()
        tile = self.tile
        if tile is None and voxels > WHOLE_FRAME_MAX_VOXELS:
            tile = (128, 128, min(int(sinc.shape[-1]), 32))
        dtype = autocast_dtype(self.device, self.precision if precision is None else precision)
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if tile is None:
                out = net(sinc, prior) if prior is not None else net(sinc)
            else:
                from monai.inferers import SlidingWindowInferer

                roi = tuple(min(t, s) for t, s in zip(tile, sinc.shape[2:]))
                inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=2, overlap=self.tile_overlap, mode="gaussian")
                if prior is not None:
                    out = inferer(sinc, lambda x, condition: net(x, condition), condition=prior)
                else:
                    out = inferer(sinc, net)
        return out.float()

    def predict(self, sinc: np.ndarray, prior: np.ndarray | None = None, scale: float | None = None,
                precision: str | None = None) -> np.ndarray:
        """Super-resolve one frame.

        Args:
            sinc: the LR frame on the HR grid (k-space zero-filled), ``(X, Y, Z)``.
            prior: what the network's prior channel takes, on the same grid (ignored by a no-prior
                model): the prior itself, or for a model whose :attr:`prior_input` is
                ``gated-keyhole`` the gated keyhole the caller formed
                (:func:`mrisr.reconstruct.network_input.form_network_input`).
            scale: intensity normalisation; default: the model's percentile of ``sinc``.
            precision: ``auto`` or ``fp32`` for this call (:func:`autocast_dtype`); default
                :attr:`precision`.

        Returns:
            SR frame ``(X, Y, Z)`` float32, in the input's intensity units.

        Raises:
            MrisrInputError: a prior-guided model without a prior.
        """
        if self.uses_prior and prior is None:
            raise MrisrInputError(
                f"model {self.source} was trained with a prior; pass --prior PLANNING or use --model default-noprior"
            )
        scale = robust_scale(sinc, self.percentile) if scale is None else scale
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(sinc, dtype=np.float32) / scale)[None, None].to(self.device)
            p = None
            if self.uses_prior:
                p = torch.from_numpy(np.ascontiguousarray(prior, dtype=np.float32) / scale)[None, None].to(self.device)
            out = self._run(x, p, precision)
        result = out[0, 0].cpu().numpy() * scale
        return np.maximum(result, 0.0, out=result).astype(np.float32, copy=False)
