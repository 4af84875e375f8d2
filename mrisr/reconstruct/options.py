"""The reconstruction options: one typed schema that every face reads.

:class:`ReconstructOptions` is the single source of the options' names, types, defaults, bounds,
choices and help text (its pydantic fields). The faces are built from it:

- ``mrisr reconstruct`` and ``mrisr finetune`` declare each flag with :func:`option_default` and
  :func:`option_help` (:func:`mrisr.cli.common.schema_option`);
- the batch recipe's ``reconstruct:`` block (:class:`mrisr.batch.config.ReconstructSettings`) is
  made of these fields (:func:`option_fields`) and checked by the same cross-field rules
  (:func:`check_rules`);
- the napari widget takes its choices, defaults, bounds and tooltips from here.

``tests/test_option_schema.py`` fails on any disagreement left (``configs/batch.yaml``,
``pipelines/config.yaml`` and the napari widget included).

A bad value raises :class:`~mrisr.io.errors.OptionError` in the library's words, worded from the
same field metadata that pydantic enforces in the batch recipe (bounds, choices, examples):
``ReconstructOptions.factor = 40: must be in [1, 16], e.g. 4``.

Importing this module loads pydantic but neither torch nor the reconstruction itself, so the
command line can build its flags from it at start-up.
"""

from __future__ import annotations

import numbers
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import numpy as np
from annotated_types import Ge, Gt, Le
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from mrisr.io.errors import OptionError
from mrisr.limits import MAX_MATRIX, MAX_MINUTES, MIN_TILE, cpu_count

__all__ = [
    "DEVICES",
    "MAX_INPLANE_FACTOR",
    "METHODS",
    "PRECISIONS",
    "PRIOR_MODES",
    "Device",
    "Method",
    "Precision",
    "PriorMode",
    "ReconstructOptions",
    "check_device",
    "check_options",
    "check_rules",
    "option_bounds",
    "option_choices",
    "option_default",
    "option_fields",
    "option_help",
    "option_range",
]

PriorMode = Literal["tracked", "planning", "previous"]
Method = Literal["network", "keyhole", "keyhole-registered", "keyhole-gated"]
Precision = Literal["auto", "fp32"]
#: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:<index>``
Device = str

#: the prior modes, the default first
PRIOR_MODES: tuple[str, ...] = get_args(PriorMode)
#: the reconstruction methods, the default first
METHODS: tuple[str, ...] = get_args(Method)
#: network precisions (the same names as :data:`mrisr.models.predictor.PRECISIONS`, which imports torch;
#: a test keeps the two equal)
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: the devices offered as choices; ``cuda:N`` picks one of several GPUs
DEVICES = ("auto", "cpu", "cuda")
#: the largest in-plane refinement (as ``factor`` allows)
MAX_INPLANE_FACTOR = 16

_MatrixSize = Annotated[int, Ge(2), Le(MAX_MATRIX)]
_TileX = Annotated[int, Ge(MIN_TILE[0]), Le(MAX_MATRIX)]
_TileY = Annotated[int, Ge(MIN_TILE[1]), Le(MAX_MATRIX)]
_TileZ = Annotated[int, Ge(MIN_TILE[2]), Le(MAX_MATRIX)]


class ReconstructOptions(BaseModel):
    """Options of a reconstruction (CLI, napari and batch all fill this); validated on construction.

    Each field's description is the help text every face shows; the longer story is here.

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
        finetune_minutes: time budget of that fine-tuning in minutes (> 0); also the default
            budget of ``mrisr finetune``.
        tile: sliding-window tile ``(X, Y, Z)`` in voxels; ``None``: whole frames unless a frame is huge.
        maps: also compute, per frame, the disagreement and unmeasured-detail maps and the
            data-consistency residual (:mod:`mrisr.reconstruct.maps`); off: nothing extra computed.
        precision: ``auto`` (the network in bfloat16 on a CPU with native bfloat16 instructions,
            float16 on CUDA, else float32; the network 1.4x faster on a 2-core AMD EPYC, tissue
            SSIM unchanged to 1e-4) or ``fp32`` (float32 everywhere: no hardware-dependent reduced
            precision); see :func:`mrisr.models.predictor.autocast_dtype`.
        sparse_changes: before gating, correct the registered prior by the sparse change the frame's
            measured band shows (:mod:`mrisr.reconstruct.changes`), so a structure that entered keeps
            its edges and one that left is filled in (on: 0.09-0.2 s more per 256x256x32 frame on
            2 cores: 20 band-limits by FFT at 6.25 %, up to 30 at narrower bands).
            Used by ``keyhole-gated`` and by a network that takes the gated keyhole (the default);
            the other methods and ``prior_mode="previous"`` ignore it. With such a network, where
            the change is found the network's output is kept no closer to the planning scan than
            its gated-keyhole input (:func:`mrisr.reconstruct.keyhole.keep_measured_change`).
        line_changes: with ``sparse_changes``, offer each elongated piece of the change (one sign,
            one slice), and fragments of it that lie on one line, a straight tube of several widths,
            flat or shaded by the planning scan, and take it where its band leaves at most half the
            squared residual the pieces' band left around them (:mod:`mrisr.reconstruct.lines`): an entering needle looks continuous rather than
            dotted. Off by default (0.25 s more per 256x256x32 frame on 2 cores); ignored
            wherever the sparse change is not run.
        match_contrast: map a planning scan of another contrast to the dynamic's intensities
            before registering it (:mod:`mrisr.reconstruct.contrast`; fitted once, on frame 0, and
            used only when it fits clearly better than one global scale). Used by the network and
            by ``keyhole-gated``; the classical ``keyhole`` and ``keyhole-registered`` ignore it.
        denoise_prior: shrink the planning scan's own noise (a separate acquisition: the frames
            never share it, yet a keyhole copies it into each of them as detail) once, by an
            in-plane Wiener filter whose noise power is read in the planning scan's outermost
            k-space (:mod:`mrisr.reconstruct.denoise`); a planning scan with little noise is left
            as it is. Used by the network and by ``keyhole-gated`` (the tracker then registers the
            filtered scan); the classical ``keyhole`` and ``keyhole-registered`` ignore it.

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

    # a field changed later is checked by validate(), as the dataclass this replaces did
    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    # the field order is the order of the JSON sidecar's "options"
    model: str = Field(
        "default", min_length=1,
        description="default (default or default-noprior, by whether a planning scan is given), a bundled "
        "model name or the path of an mrisr checkpoint.",
    )
    prior_mode: PriorMode = Field(
        "tracked",
        description="tracked (default): the planning scan deformed to each frame's motion (registered to its LR "
        "data); planning: the planning scan as it is; previous: step-wise, frame 0 from the planning scan "
        "registered to it, frame t from frame t-1.",
    )
    method: Method = Field(
        "network",
        description="network (default): the prior-guided model; keyhole: the measured k-space centre + the "
        "planning scan's outer k-space; keyhole-registered: the same with the planning scan registered to each "
        "frame; keyhole-gated: the registered planning scan's detail kept only where the frame agrees with it "
        "(no model).",
    )
    factor: float | None = Field(
        None, ge=1, le=MAX_INPLANE_FACTOR, examples=[4],
        description="In-plane upsampling factor (default: the planning scan's voxel size, else 4).",
    )
    matrix: tuple[_MatrixSize, _MatrixSize] | None = Field(
        None, examples=[(256, 256)], description="In-plane HR matrix NX NY (instead of the factor).",
    )
    data_consistency: bool = Field(False, description="Put the measured central k-space back into each SR frame.")
    device: Device = Field(
        "auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$", examples=["cuda:0"],
        description="auto (CUDA when present) | cpu | cuda | cuda:N.",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's own).")
    finetune: bool = Field(False, description="Fine-tune the model on the planning scan first.")
    finetune_minutes: float = Field(
        3.0, gt=0, le=MAX_MINUTES, examples=[3], description="Time budget of the fine-tuning in minutes.",
    )
    tile: tuple[_TileX, _TileY, _TileZ] | None = Field(
        None, examples=[(128, 128, 32)],
        description="Sliding-window tile X Y Z in voxels (default: whole frames unless a frame is huge).",
    )
    maps: bool = Field(
        False,
        description="Also compute, per frame, where it disagrees with its prior (disagreement) and the detail added "
        "outside the measured k-space (unmeasured); to files as <output stem>_disagreement.nii.gz and "
        "<output stem>_unmeasured.nii.gz.",
    )
    precision: Precision = Field(
        "auto",
        description="auto (default): the network in bfloat16 on a CPU with bfloat16 instructions (1.4x faster on "
        "a 2-core AMD EPYC; tissue SSIM unchanged to 1e-4), float16 on CUDA, else float32; fp32: float32 "
        "everywhere (no hardware-dependent reduced precision).",
    )
    sparse_changes: bool = Field(
        True,
        description="Before gating, correct the registered planning scan by the sparse change each frame's "
        "measured k-space shows, so a needle that entered keeps its edges and one that left is cancelled "
        "(default on; keyhole-gated and the default network).",
    )
    line_changes: bool = Field(
        False,
        description="With sparse changes, show a needle, wire or catheter as a continuous line: each elongated "
        "piece of the change (or row of fragments on one line) is offered a straight tube, taken where it leaves at most half the piece's squared "
        "residual in the measured k-space (off by default: about 0.25 s more per 256x256x32 frame on 2 cores).",
    )
    match_contrast: bool = Field(
        True,
        description="Map a planning scan of another contrast to the dynamic's intensities (fitted on frame 0, used "
        "only when it fits clearly better than one global scale; default on; keyhole-gated and the network).",
    )
    denoise_prior: bool = Field(
        True,
        description="Shrink the planning scan's own noise (which the frames do not share) by a Wiener filter "
        "measured in its outermost k-space; a planning scan with little noise is left as it is (default on; "
        "keyhole-gated and the network).",
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _option_error(type(self).__name__, exc) from None

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return check_options(cls.__name__, data)
        return data

    def validate(self) -> None:  # type: ignore[override]  # pydantic's deprecated classmethod of that name
        """Check (and normalise: numbers to float/int, sizes to tuples) every field.

        Called on construction; call it again after changing a field.

        Raises:
            OptionError: naming the field, the bad value and a valid example.
        """
        checked = check_options(type(self).__name__, self.as_dict())
        for name, value in checked.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        """The options as plain values in field order (the ``options`` of the JSON sidecar)."""
        return {name: getattr(self, name) for name in type(self).model_fields}


# --------------------------------------------------------------------------- reading the schema


def option_fields(names: tuple[str, ...] | None = None) -> dict[str, tuple[Any, FieldInfo]]:
    """``{name: (type, field)}`` of the named options (all by default), as :func:`pydantic.create_model`
    takes them: another model built from these has the same types, bounds, defaults and help."""
    fields = ReconstructOptions.model_fields
    return {name: (fields[name].annotation, fields[name]) for name in (names or tuple(fields))}


def _field(name: str) -> FieldInfo:
    try:
        return ReconstructOptions.model_fields[name]
    except KeyError:
        raise KeyError(f"{name}: not a reconstruction option; the options are "
                       f"{', '.join(ReconstructOptions.model_fields)}") from None


def option_default(name: str) -> Any:
    """The default value of option ``name``."""
    return _field(name).default


def option_help(name: str) -> str:
    """The help text of option ``name``: its description, then its valid range where it has one."""
    field = _field(name)
    valid = option_range(name)
    return f"{field.description} Range: {valid}." if valid else str(field.description)


def option_choices(name: str) -> tuple[str, ...]:
    """The valid values of a choice option (``()`` for any other)."""
    annotation, _ = _optional(_field(name).annotation)
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def _optional(annotation: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, else ``(annotation, False)``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _bounds_of(metadata: list[Any]) -> tuple[float | None, bool, float | None]:
    """``(low, low_included, high)`` from annotated-types metadata (``None``: unbounded)."""
    low, included, high = None, True, None
    for item in metadata:
        if isinstance(item, Ge):
            low, included = item.ge, True
        elif isinstance(item, Gt):
            low, included = item.gt, False
        elif isinstance(item, Le):
            high = item.le
    return low, included, high


def option_bounds(name: str) -> tuple[float | None, bool, float | None] | tuple[tuple[int, int], ...]:
    """The bounds of option ``name``: ``(low, low_included, high)`` of a number (``None``: unbounded),
    or one ``(low, high)`` per element of a size tuple (``matrix``, ``tile``)."""
    field = _field(name)
    annotation, _ = _optional(field.annotation)
    if get_origin(annotation) is tuple:
        sizes = []
        for item in get_args(annotation):
            low, _, high = _bounds_of(list(get_args(item)[1:]))
            sizes.append((int(low), int(high)))  # type: ignore[arg-type]
        return tuple(sizes)
    return _bounds_of(field.metadata)


def _interval(low: float | None, included: bool, high: float | None) -> str:
    if high is None:
        return "" if low is None else (f">= {low:g}" if included else f"> {low:g}")
    return f"{'[' if included else '('}{low:g}, {high:g}]"


def option_range(name: str) -> str:
    """The valid range of option ``name`` in words (``[1, 16]``, ``each in 2..4096``), ``""`` for none."""
    if name == "threads":
        return "1 to the machine's CPU cores"
    bounds = option_bounds(name)
    if bounds and isinstance(bounds[0], tuple):
        ranges = [f"{low}..{high}" for low, high in bounds]  # type: ignore[misc]
        return f"each in {ranges[0]}" if len(set(ranges)) == 1 else ", ".join(ranges)
    return _interval(*bounds)  # type: ignore[arg-type]


def _example(name: str) -> str:
    examples = _field(name).examples
    return str(examples[0]) if examples else ""


# --------------------------------------------------------------------------- checking values


def check_device(owner: str, device: object) -> str:
    """``device`` if it names a device mrisr can use (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    Raises:
        OptionError: for anything else.
    """
    pattern = next(m.pattern for m in _field("device").metadata if hasattr(m, "pattern"))
    if isinstance(device, str) and re.fullmatch(pattern, device):
        return device
    raise OptionError(owner, "device", device, f"use {', '.join(DEVICES)} or cuda:N, e.g. {_example('device')}")


def _number(owner: str, name: str, value: object) -> float:
    low, included, high = option_bounds(name)  # type: ignore[misc]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(owner, name, value, f"must be a number, e.g. {_example(name)}")
    number = float(value)
    above = low is None or (number >= low if included else number > low)
    if not (above and (high is None or number <= high)):
        valid = option_range(name)
        raise OptionError(owner, name, value,
                          f"must be {'in ' if valid.startswith(('[', '(')) else ''}{valid}, e.g. {_example(name)}")
    return number


def _whole(value: object, low: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def _sizes(owner: str, name: str, value: object) -> tuple[int, ...]:
    """``value`` as whole numbers, the i-th within the i-th element bounds of the field."""
    bounds: tuple[tuple[int, int], ...] = option_bounds(name)  # type: ignore[assignment]
    sizes = tuple(value) if isinstance(value, tuple | list | np.ndarray) else ()
    if len(sizes) != len(bounds) or not all(_whole(v, low) and v <= high for v, (low, high) in zip(sizes, bounds)):
        raise OptionError(owner, name, value,
                          f"needs {len(bounds)} whole numbers ({option_range(name)}), e.g. {_example(name)}")
    return tuple(int(v) for v in sizes)


def _flag(owner: str, name: str, value: object) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise OptionError(owner, name, value, "must be True or False")
    return bool(value)


def _model(owner: str, value: object) -> str:
    if not isinstance(value, str | Path) or not str(value):
        raise OptionError(owner, "model", value, "give default, a bundled model name or a checkpoint path")
    return str(value)


def _threads(owner: str, value: object) -> int:
    cores = cpu_count()
    low, _, _ = option_bounds("threads")  # type: ignore[misc]
    if not (_whole(value, int(low)) and value <= cores):  # type: ignore[operator]
        raise OptionError(owner, "threads", value,
                          f"must be a whole number between {low:g} and the {cores} CPU core(s) of this machine, "
                          f"e.g. {cores}")
    return int(value)  # type: ignore[call-overload]


def _check_value(owner: str, name: str, value: Any) -> Any:
    """One field's value, normalised, or :class:`OptionError` worded from the field's metadata."""
    annotation, optional = _optional(_field(name).annotation)
    if optional and value is None:
        return None
    if name == "model":
        return _model(owner, value)
    if name == "device":
        return check_device(owner, value)
    if name == "threads":
        return _threads(owner, value)
    choices = option_choices(name)
    if choices:
        if not (isinstance(value, str) and value in choices):
            raise OptionError(owner, name, value, f"choose one of {', '.join(choices)}")
        return value
    if annotation is bool:
        return _flag(owner, name, value)
    if annotation is float:
        return _number(owner, name, value)
    if get_origin(annotation) is tuple:
        return _sizes(owner, name, value)
    raise TypeError(f"ReconstructOptions.{name}: no check for a field of type {annotation}")


def check_rules(owner: str, values: dict[str, Any]) -> None:
    """The rules between options (each value already valid on its own).

    Raises:
        OptionError: factor and matrix both given; a keyhole method with data consistency, a prior
            mode other than ``tracked`` or fine-tuning.
    """
    if values["factor"] is not None and values["matrix"] is not None:
        raise OptionError(owner, "matrix", values["matrix"], "give factor or matrix, not both")
    method = values["method"]
    if method != "network" and values["data_consistency"]:
        raise OptionError(owner, "method", method, "a keyhole method keeps the measured k-space already; "
                          "turn data consistency off")
    if method != "network" and values["prior_mode"] != "tracked":
        raise OptionError(owner, "prior_mode", values["prior_mode"], "applies to method network only; use method "
                          "keyhole (the planning scan as it is) or keyhole-registered")
    if method != "network" and values["finetune"]:
        raise OptionError(owner, "method", method, "a keyhole method has no model to fine-tune; "
                          "turn fine-tuning off")


def check_options(owner: str, values: dict[str, Any]) -> dict[str, Any]:
    """Every option, checked and normalised (numbers to float/int, sizes to tuples), the missing
    ones at their defaults, in field order.

    Raises:
        OptionError: an unknown option, a bad value or values that do not go together, naming
            the option, the value and a valid example.
    """
    fields = ReconstructOptions.model_fields
    for name in values:
        if name not in fields:
            raise OptionError(owner, name, values[name], f"not an option; the options are {', '.join(fields)}")
    checked = {name: _check_value(owner, name, values[name]) if name in values else field.get_default(
        call_default_factory=True) for name, field in fields.items()}
    check_rules(owner, checked)
    return checked


def _option_error(owner: str, exc: ValidationError) -> OptionError:
    """The :class:`OptionError` a validator raised inside pydantic (which wraps it), or one made of
    pydantic's own first complaint."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, OptionError):
        return cause
    name = ".".join(str(part) for part in error["loc"]) or "options"
    return OptionError(owner, name, error.get("input"), error["msg"])
