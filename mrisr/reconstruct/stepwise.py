"""The options of a reconstruction (:class:`ReconstructOptions`), validated on construction."""

from __future__ import annotations

import numbers
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from mrisr.io.errors import OptionError
from mrisr.reconstruct.keyhole import METHODS

#: the prior modes, the default first
PRIOR_MODES = ("tracked", "planning", "previous")
#: the largest in-plane refinement (as --factor allows)
MAX_INPLANE_FACTOR = 16
PriorMode = Literal["tracked", "planning", "previous"]
Method = Literal["network", "keyhole", "keyhole-registered", "keyhole-gated"]
Precision = Literal["auto", "fp32"]
#: network precisions (the same names as :data:`mrisr.models.predictor.PRECISIONS`, which imports torch;
#: a test keeps the two equal)
PRECISIONS = ("auto", "fp32")
#: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:<index>``
Device = str


def check_device(owner: str, device: object) -> str:
    """``device`` if it names a device mrisr can use (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    Raises:
        OptionError: for anything else.
    """
    if isinstance(device, str) and (device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", device)):
        return device
    raise OptionError(owner, "device", device, "use auto, cpu, cuda or cuda:N, e.g. cuda:0")


def _number(owner: str, name: str, value: object, low: float, high: float | None, example: str,
            include_low: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(owner, name, value, f"must be a number, e.g. {example}")
    number = float(value)
    if not (number >= low if include_low else number > low) or (high is not None and number > high):
        if high is None:
            bounds = f">= {low:g}" if include_low else f"> {low:g}"
        else:
            bounds = f"in {'[' if include_low else '('}{low:g}, {high:g}]"
        raise OptionError(owner, name, value, f"must be {bounds}, e.g. {example}")
    return number


def _whole(value: object, low: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def _sizes(owner: str, name: str, value: object, lows: tuple[int, ...], high: int, example: str) -> tuple[int, ...]:
    """``value`` as ``len(lows)`` whole numbers, the i-th in ``lows[i]..high``."""
    sizes = tuple(value) if isinstance(value, tuple | list | np.ndarray) else ()
    if len(sizes) != len(lows) or not all(_whole(v, low) and v <= high for v, low in zip(sizes, lows)):
        ranges = (f"each in {lows[0]}..{high}" if len(set(lows)) == 1
                  else ", ".join(f"{low}..{high}" for low in lows))
        raise OptionError(owner, name, value, f"needs {len(lows)} whole numbers ({ranges}), e.g. {example}")
    return tuple(int(v) for v in sizes)


def _flag(owner: str, name: str, value: object) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise OptionError(owner, name, value, "must be True or False")
    return bool(value)


@dataclass
class ReconstructOptions:
    """Options of a reconstruction (CLI, napari and batch all fill this); validated on construction.

    Attributes:
        method: ``network`` (the prior-guided model), ``keyhole`` (the measured central k-space
            completed by the planning scan's outer k-space), ``keyhole-registered`` (the same
            after deforming the planning scan to each frame's motion) or ``keyhole-gated`` (the
            registered planning scan's detail kept only where the measured frame agrees with it);
            the keyhole methods need a planning scan and no model (:mod:`mrisr.reconstruct.keyhole`).
        model: ``default`` (picks ``default`` or ``default-noprior`` by prior presence), a bundled
            name or a checkpoint path.
        prior_mode: the prior of each frame: ``tracked`` (the planning scan deformed to the frame's
            motion state, registered to its LR data; see :mod:`mrisr.reconstruct.motion`),
            ``planning`` (the planning scan as it is) or ``previous`` (step-wise: what the network
            was given for frame t-1, see :meth:`Reconstruction.frames`). Frame 0 always uses the
            planning scan, tracked to frame 0 in ``tracked`` and ``previous`` mode.
        factor: in-plane upsampling factor in [1, 16]; ``None``: the prior's voxel size, else 4.
        matrix: in-plane HR matrix ``(NX, NY)``, each >= 2 (instead of ``factor``).
        data_consistency: put the measured central k-space back into each SR frame.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch CPU threads (>= 1; ``None``: torch's default).
        finetune: fine-tune the model on the planning scan first.
        finetune_minutes: time budget of that fine-tuning in minutes (> 0).
        tile: sliding-window tile ``(X, Y, Z)`` in voxels; ``None``: whole frames unless a frame is huge.
        maps: also compute, per frame, the disagreement and unmeasured-detail maps and the
            data-consistency residual (:mod:`mrisr.reconstruct.maps`); off: nothing extra computed.
        precision: ``auto`` (the network in bfloat16 on a CPU with native bfloat16 instructions,
            float16 on CUDA, else float32: faster at an unchanged tissue SSIM, benchmarks/RESULTS.md,
            'Speed') or ``fp32`` (float32 everywhere: no hardware-dependent reduced
            precision); see :func:`mrisr.models.predictor.autocast_dtype`.
        sparse_changes: before gating, correct the registered prior by the sparse change the frame's
            measured band shows (:mod:`mrisr.reconstruct.changes`), so a structure that entered keeps
            its edges and one that left is filled in (on: 20 band-limits by FFT per frame at 6.25 %,
            up to 30 at narrower bands; its cost: benchmarks/RESULTS.md, 'Fidelity lever: sparse
            change recovery').
            Used by ``keyhole-gated`` and by a network that takes the gated keyhole (the default);
            the other methods and ``prior_mode="previous"`` ignore it. With such a network, where
            the change is found the network's output is kept no closer to the planning scan than
            its gated-keyhole input (:func:`mrisr.reconstruct.keyhole.keep_measured_change`).
        match_contrast: map a planning scan of another contrast to the dynamic's intensities
            before registering it (:mod:`mrisr.reconstruct.contrast`; fitted once, on frame 0, and
            used only when it fits clearly better than one global scale). Used by the network and
            by ``keyhole-gated``; the classical ``keyhole`` and ``keyhole-registered`` ignore it.

    Raises:
        OptionError: (a :class:`~mrisr.io.MrisrInputError`) on construction, naming the field,
            the bad value and a valid example.

    Example:
        >>> ReconstructOptions(prior_mode="planning", matrix=(256, 256)).matrix
        (256, 256)
        >>> ReconstructOptions(prior_mode="bogus")
        Traceback (most recent call last):
        ...
        mrisr.io.errors.OptionError: ReconstructOptions.prior_mode = 'bogus': choose one of tracked, planning, previous
    """

    model: str = "default"
    prior_mode: PriorMode = "tracked"
    method: Method = "network"
    factor: float | None = None
    matrix: tuple[int, int] | None = None
    data_consistency: bool = False
    device: Device = "auto"
    threads: int | None = None
    finetune: bool = False
    finetune_minutes: float = 3.0
    tile: tuple[int, int, int] | None = None
    maps: bool = False
    precision: Precision = "auto"
    sparse_changes: bool = True
    match_contrast: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def as_dict(self) -> dict:
        d = asdict(self)
        d["model"] = str(d["model"])
        return d

    def validate(self) -> None:
        from mrisr.limits import MAX_MATRIX, MAX_MINUTES, MIN_TILE, cpu_count

        """Check (and normalise: numbers to float/int, sizes to tuples) every field.

        Called on construction; call it again after changing a field.

        Raises:
            OptionError: naming the field, the bad value and a valid example.
        """
        owner = type(self).__name__
        if self.method not in METHODS:
            raise OptionError(owner, "method", self.method, f"choose one of {', '.join(METHODS)}")
        if not isinstance(self.model, str | Path) or not str(self.model):
            raise OptionError(owner, "model", self.model, "give default, a bundled model name or a checkpoint path")
        self.model = str(self.model)
        if self.prior_mode not in PRIOR_MODES:
            raise OptionError(owner, "prior_mode", self.prior_mode, f"choose one of {', '.join(PRIOR_MODES)}")
        if self.factor is not None:
            self.factor = _number(owner, "factor", self.factor, 1, MAX_INPLANE_FACTOR, "4")
        if self.matrix is not None:
            self.matrix = _sizes(owner, "matrix", self.matrix, (2, 2), MAX_MATRIX, "(256, 256)")  # type: ignore[assignment]
        if self.factor is not None and self.matrix is not None:
            raise OptionError(owner, "matrix", self.matrix, "give factor or matrix, not both")
        self.data_consistency = _flag(owner, "data_consistency", self.data_consistency)
        self.device = check_device(owner, self.device)
        if self.threads is not None:
            cores = cpu_count()
            if not (_whole(self.threads, 1) and self.threads <= cores):
                raise OptionError(owner, "threads", self.threads,
                                  f"must be a whole number between 1 and the {cores} CPU core(s) of this machine, "
                                  f"e.g. {cores}")
            self.threads = int(self.threads)
        if self.precision not in PRECISIONS:
            raise OptionError(owner, "precision", self.precision, f"choose one of {', '.join(PRECISIONS)}")
        self.finetune = _flag(owner, "finetune", self.finetune)
        self.maps = _flag(owner, "maps", self.maps)
        self.sparse_changes = _flag(owner, "sparse_changes", self.sparse_changes)
        self.match_contrast = _flag(owner, "match_contrast", self.match_contrast)
        if self.method != "network" and self.data_consistency:
            raise OptionError(owner, "method", self.method, "a keyhole method keeps the measured k-space already; "
                              "turn data consistency off")
        if self.method != "network" and self.prior_mode != "tracked":
            raise OptionError(owner, "prior_mode", self.prior_mode, "applies to method network only; use method "
                              "keyhole (the planning scan as it is) or keyhole-registered")
        if self.method != "network" and self.finetune:
            raise OptionError(owner, "method", self.method, "a keyhole method has no model to fine-tune; "
                              "turn fine-tuning off")
        self.finetune_minutes = _number(owner, "finetune_minutes", self.finetune_minutes, 0, MAX_MINUTES, "3",
                                        include_low=False)
        if self.tile is not None:
            self.tile = _sizes(owner, "tile", self.tile, MIN_TILE, MAX_MATRIX, "(128, 128, 32)")  # type: ignore[assignment]
