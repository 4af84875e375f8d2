"""Training configuration: a pydantic schema for the YAML recipes in ``configs/``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mrisr.io.errors import MrisrInputError, quote


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    train: list[str] = Field(default_factory=lambda: ["colin27", "inia19"], min_length=1)
    validation: list[str] = Field(default_factory=lambda: ["mni152"])
    inplane_mm: list[float] = Field(default_factory=lambda: [1.0, 1.25, 1.5, 2.0])
    slice_mm: list[float] = Field(default_factory=lambda: [2.0, 3.0, 4.0])
    orientations: list[Literal["axial", "coronal", "sagittal"]] = Field(default_factory=lambda: ["axial", "coronal", "sagittal"])
    patch: tuple[int, int, int] = (96, 96, 16)

    @field_validator("inplane_mm", "slice_mm")
    @classmethod
    def _positive(cls, v):
        if not v or any(x <= 0 or x > 10 for x in v):
            raise ValueError("voxel sizes must be in (0, 10] mm")
        return v

    @field_validator("patch")
    @classmethod
    def _patch(cls, v):
        if v[0] % 16 or v[1] % 16 or v[2] % 2 or min(v) < 8:
            raise ValueError("patch in-plane sizes must be multiples of 16 and the slice size a multiple of 2 (>= 8)")
        return v


class SimulationConfig(_Strict):
    keep_range: tuple[float, float] = (4.0, 25.0)
    mask: Literal["center"] = "center"
    noise_probability: float = Field(0.3, ge=0, le=1)
    noise_snr: tuple[float, float] = (25.0, 200.0)

    @field_validator("keep_range")
    @classmethod
    def _keep(cls, v):
        if not (0 < v[0] <= v[1] <= 100):
            raise ValueError("keep_range must satisfy 0 < low <= high <= 100 (percent)")
        return v


class MotionConfig(_Strict):
    target_mm: float = Field(6.0, ge=0, le=30)
    previous_mm: tuple[float, float] = (0.0, 3.0)
    planning_mm: tuple[float, float] = (2.0, 8.0)
    planning_probability: float = Field(0.3, ge=0, le=1)
    contrast_change: float = Field(0.35, ge=0, le=2)
    gamma_range: tuple[float, float] = (0.7, 1.5)


class PriorConfig(_Strict):
    perturb_probability: float = Field(0.5, ge=0, le=1)
    self_prior_probability: float = Field(0.5, ge=0, le=1)
    self_prior_start: float = Field(0.4, ge=0, le=1, description="fraction of training after which self-priors start")
    noise_probability: float = Field(
        0.0, ge=0, le=1, description="share of priors given their own Rician noise (a planning scan's independent noise)")
    noise_snr: tuple[float, float] = (15.0, 100.0)

    @field_validator("noise_snr")
    @classmethod
    def _snr(cls, v):
        if not (0 < v[0] <= v[1]):
            raise ValueError("prior.noise_snr must satisfy 0 < low <= high")
        return v


class ChainConfig(_Strict):
    """Recurrent training on simulated series (see :mod:`mrisr.training.chains`)."""

    probability: float = Field(0.0, ge=0, le=1, description="fraction of steps that train on chain frames (0: off)")
    start: float = Field(0.0, ge=0, le=1, description="fraction of training after which chain steps start")
    length: tuple[int, int] = (8, 48)
    period: tuple[float, float] = (6.0, 24.0)
    irregular_mm: tuple[float, float] = (0.0, 1.0)
    planning_fraction: float = Field(0.25, ge=0, le=1)
    pool: int = Field(16, ge=1, le=256)

    @model_validator(mode="after")
    def _ranges(self):
        if not (1 <= self.length[0] <= self.length[1]):
            raise ValueError("chains.length must satisfy 1 <= shortest <= longest")
        if not (1 <= self.period[0] <= self.period[1]):
            raise ValueError("chains.period must satisfy 1 <= shortest <= longest (frames)")
        return self


class ModelConfig(_Strict):
    use_prior: bool = True
    channels: list[int] = Field(default_factory=lambda: [24, 48, 96, 192], min_length=2)
    strides: list[tuple[int, int, int]] = Field(default_factory=lambda: [(2, 2, 1), (2, 2, 2), (2, 2, 1)])
    num_res_units: int = Field(1, ge=0, le=4)
    features: int = Field(16, ge=1)
    space_to_depth: int = Field(2, ge=1, le=4)
    prior_input: Literal["prior", "gated-keyhole"] = Field(
        "prior", description="second channel: the prior, or the gated keyhole of frame and prior (residual on it)")

    @model_validator(mode="after")
    def _lengths(self):
        if self.prior_input != "prior" and not self.use_prior:
            raise ValueError(f"model.prior_input {self.prior_input} needs model.use_prior: true")
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(f"model.strides needs len(channels) - 1 = {len(self.channels) - 1} entries, got {len(self.strides)}")
        return self


class OptimConfig(_Strict):
    lr: float = Field(3e-4, gt=0, le=1)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(100, ge=0)
    batch_size: int = Field(4, ge=1, le=64)
    steps: int = Field(4000, ge=1)
    minutes: float | None = Field(None, gt=0, description="wall-clock budget; the schedule follows whichever ends first")


class LossConfig(_Strict):
    l1: float = Field(1.0, ge=0)
    ssim: float = Field(1.0, ge=0)
    perceptual: float = Field(0.0, ge=0)
    tissue: float = Field(0.0, ge=0, description="extra L1 weight inside the object (0: uniform)")
    sites: float = Field(0.0, ge=0, description="extra L1 weight where an inserted structure makes target and prior differ")


class StructureConfig(_Strict):
    """Structures in the target only or the prior only, priors of another contrast
    (:mod:`mrisr.training.structures`); all off by default."""

    target_probability: float = Field(0.0, ge=0, le=1)
    prior_probability: float = Field(0.0, ge=0, le=1)
    remap_probability: float = Field(0.0, ge=0, le=1)
    max_count: int = Field(3, ge=1, le=10)


class ValidationConfig(_Strict):
    every_steps: int = Field(250, ge=1)
    samples: int = Field(4, ge=1)
    keeps: list[float] = Field(default_factory=lambda: [4.0, 6.25, 10.0, 25.0])
    slices: int = Field(24, ge=4)


class TrainConfig(_Strict):
    """The whole recipe. Every field is validated; unknown keys are errors."""

    seed: int = 0
    name: str = "mrisr-model"
    data: DataConfig = Field(default_factory=DataConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    motion: MotionConfig = Field(default_factory=MotionConfig)
    prior: PriorConfig = Field(default_factory=PriorConfig)
    chains: ChainConfig = Field(default_factory=ChainConfig)
    structures: StructureConfig = Field(default_factory=StructureConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    init: str | None = Field(None, description="start from these weights (bundled name or checkpoint path)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)
    checkpoint_every_steps: int = Field(500, ge=1)
    data_workers: int = Field(1, ge=0, le=16, description="background processes generating pairs (0: inline)")

    @model_validator(mode="after")
    def _gated_needs_given_priors(self):
        if self.model.prior_input == "gated-keyhole" and (self.prior.self_prior_probability > 0 or self.chains.probability > 0):
            raise ValueError("model.prior_input gated-keyhole trains on simulated priors only: set "
                             "prior.self_prior_probability: 0 and chains.probability: 0")
        return self


def _parse_value(item: str, text: str):
    from mrisr.io.configfile import parse_yaml

    return parse_yaml(text, f"--set {quote(item)}")


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise MrisrInputError(f"--set {quote(item)}: expected key=value, e.g. --set optim.steps=200")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise MrisrInputError(f"--set {quote(item)}: {part[:80]} is not a section")
        node[parts[-1]] = _parse_value(item, value)
    return raw


def format_validation_error(source: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    value = err.get("input")
    return f"{source}: {key[:80]} = {quote(value)} is invalid: {err['msg'][:200]}"


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read, override and validate a recipe; errors name the key, the value and the rule."""
    raw: dict = {}
    source = str(path) if path else "<defaults>"
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise MrisrInputError(f"{p}: config not found; see configs/default.yaml for an example")
        from mrisr.io.configfile import load_yaml_file

        raw = load_yaml_file(p, "training config") or {}
        if not isinstance(raw, dict):
            raise MrisrInputError(f"{p}: expected a mapping of settings at the top level")
    raw = apply_overrides(raw, overrides or [])
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise MrisrInputError(format_validation_error(source, exc)) from None
