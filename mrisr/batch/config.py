"""Batch configuration: which files are the inputs and what is run (schema of ``configs/batch.yaml``).

Every key has a default, so ``mrisr batch`` works without a config file; the defaults are the
ones written in ``configs/batch.yaml`` (a test keeps the two equal). Unknown keys are errors.

BIDS matching works on each file's path relative to its session folder (or subject folder when
the dataset has no sessions), e.g. ``func/sub-01_task-rest_bold.nii.gz``, with shell-style
patterns (``*`` also matches ``/``). Only ``.nii``/``.nii.gz`` files that are not hidden are
candidates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from mrisr.io.configfile import load_yaml_file
from mrisr.io.errors import MrisrInputError, OptionError, quote
from mrisr.reconstruct.options import check_rules, option_fields

__all__ = ["RECIPE_OPTIONS", "BatchConfig", "BidsMatching", "ManifestNaming", "ReconstructSettings", "load_batch_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BidsMatching(_Strict):
    """How the dynamic series, planning scan and optional ground truth are found in a BIDS subject."""

    dynamic: list[str] = Field(
        default_factory=lambda: ["func/*_bold.nii*", "*_acq-dynamic_*.nii*"],
        min_length=1,
        description="every file matching any pattern is one dynamic series to super-resolve",
    )
    planning: list[str] = Field(
        default_factory=lambda: ["*_acq-planning_*.nii*", "anat/*_T1w.nii*"],
        min_length=1,
        description="tried in order; the first pattern with a match in the session (else the subject) wins",
    )
    ground_truth: list[str] = Field(
        default_factory=lambda: ["*_acq-groundtruth_*.nii*"],
        description="optional HR reference; paired with a dynamic series by the entities other than acq/rec",
    )
    exclude: list[str] = Field(
        default_factory=lambda: ["*_acq-groundtruth_*"],
        description="never a dynamic series or planning scan",
    )

    @field_validator("dynamic", "planning", "ground_truth", "exclude")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern or pattern.startswith("/"):
                raise ValueError(f"pattern {pattern!r} must be relative to the session folder, e.g. 'func/*_bold.nii*'")
        return value


class ManifestNaming(_Strict):
    """BIDS names of the outputs of manifest rows whose dynamic file is not BIDS-named."""

    datatype: Literal["func", "anat", "perf", "dwi"] = "func"
    suffix: str = Field("bold", pattern=r"^[A-Za-z0-9]+$")


#: the reconstruction options a recipe sets: those that change the result. ``device`` and
#: ``threads`` are command-line flags (``--device``; torch threads follow ``--jobs``) and ``tile``
#: is left to the library: they decide where and how the work runs, not what it computes, so
#: changing them reruns nothing. (The order is the order of the sidecar's ``options``.)
RECIPE_OPTIONS = ("model", "method", "prior_mode", "factor", "matrix", "data_consistency", "finetune",
                  "finetune_minutes", "maps", "precision", "sparse_changes", "line_changes",
                  "match_contrast", "denoise_prior")


def _recipe_rules(settings: BaseModel) -> BaseModel:
    """The rules between options (factor or matrix; what the keyhole methods exclude), as
    :class:`~mrisr.reconstruct.ReconstructOptions` applies them."""
    check_rules("ReconstructSettings", settings.model_dump())
    return settings


#: The ``reconstruct:`` block of a recipe: the :data:`RECIPE_OPTIONS` fields of
#: :class:`mrisr.reconstruct.ReconstructOptions`, with their types, bounds, defaults and help.
ReconstructSettings = create_model(
    "ReconstructSettings",
    __base__=_Strict,
    __module__=__name__,
    __doc__="The :class:`mrisr.reconstruct.ReconstructOptions` fields that change the result "
    "(:data:`RECIPE_OPTIONS`), with the same types, bounds, defaults, help and cross-field rules.",
    __validators__={"_rules": model_validator(mode="after")(_recipe_rules)},
    **option_fields(RECIPE_OPTIONS),
)


class DicomSettings(_Strict):
    """Which series of a DICOM folder to read, and whether to write a DICOM copy of each result
    (I/O choices: they pick inputs and outputs, not how the reconstruction computes)."""

    series: str | None = Field(
        None, description="the dynamic series of a DICOM folder holding several: SeriesInstanceUID, number or "
        "description (a description, e.g. 'dyn_cor', fits every subject)")
    prior_series: str | None = Field(None, description="the same for a planning-scan DICOM folder")
    output_format: Literal["nifti", "dicom"] = Field(
        "nifti", description="dicom: also write each SR series as a derived DICOM series in "
        "<result>_dicom/ beside the BIDS NIfTI (which metrics and resume use)")


class BatchConfig(_Strict):
    """The whole batch recipe."""

    bids: BidsMatching = Field(default_factory=BidsMatching)
    manifest: ManifestNaming = Field(default_factory=ManifestNaming)
    reconstruct: ReconstructSettings = Field(default_factory=ReconstructSettings)
    dicom: DicomSettings = Field(default_factory=DicomSettings)
    desc: str = Field("sr", pattern=r"^[A-Za-z0-9]+$", description="desc- entity of the SR series")
    planning_required: bool = Field(
        True, description="a series without a planning scan is a validation error (else it runs without a prior)"
    )
    authors: list[str] = Field(
        default_factory=list,
        description="Authors of the derivatives dataset; empty: the source dataset's Authors, else mrisr",
    )


def load_batch_config(path: str | Path | None = None) -> BatchConfig:
    """Read and validate a batch config; ``None`` gives the defaults.

    Raises:
        MrisrInputError: naming the file, the key, the bad value and the rule.
    """
    if path is None:
        return BatchConfig()
    path = Path(path)
    if not path.is_file():
        raise MrisrInputError(f"{path}: batch config not found; see configs/batch.yaml for an example")
    raw = load_yaml_file(path, "batch config") or {}
    if not isinstance(raw, dict):
        raise MrisrInputError(f"{path}: expected a mapping of settings at the top level, see configs/batch.yaml")
    try:
        return BatchConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, OptionError):  # a rule between options: name the option it blames
                problems.append(f"{key[:80]}.{cause.option} = {quote(cause.value)}: {cause.rule}")
            else:
                problems.append(f"{key[:80]} = {quote(err.get('input'))}: {err['msg'][:200]}")
            if len(problems) == 10:  # a file of a thousand bad keys is not a thousand-line message
                problems.append(f"... and {len(exc.errors()) - 10} more")
                break
        raise MrisrInputError(f"{path}: invalid batch config: " + "; ".join(problems)) from None
