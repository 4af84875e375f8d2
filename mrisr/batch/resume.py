"""Fingerprints and resume: what a subject's results depend on, and whether they are up to date.

For every series the fingerprint is the SHA-256 of the input files (dynamic, planning, ground
truth), of the model file and of the options that change the result (the device and thread count
are left out). A subject is skipped when every series' sidecar records that fingerprint and its
outputs exist; anything else reruns it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.batch.cohort import SeriesInputs, SubjectInputs
from mrisr.batch.derivatives import (
    BATCH_KEY,
    SeriesOutputs,
    read_json,
    series_outputs,
    status_path,
    subject_log_path,
)
from mrisr.batch.validation import RunSettings
from mrisr.io.checks import check_gzip
from mrisr.io.errors import MrisrInputError
from mrisr.io.hashing import file_sha256, image_files

__all__ = ["RUNTIME_OPTIONS", "SeriesPlan", "SubjectPlan", "fingerprint_of", "plan_subject", "recorded", "up_to_date"]

#: options that decide where the work runs, not what it computes: never part of the fingerprint
RUNTIME_OPTIONS = ("device", "threads")


@dataclass
class SeriesPlan:
    series: SeriesInputs
    outputs: SeriesOutputs
    inputs: dict[str, dict[str, Any]]
    model: dict[str, str]
    fingerprint: str


@dataclass
class SubjectPlan:
    label: str
    series: list[SeriesPlan]
    log: Path
    status: Path
    output_dir: Path | None = None



def _file_record(path: Path, previous: dict | None) -> dict[str, Any]:
    stat = path.stat()
    record = {
        "path": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "inode": stat.st_ino,
    }
    if path.is_dir() or len(image_files(path)) > 1:
        # a DICOM folder or one file of a DICOM series, or a header with detached data: the stat of one
        # file does not cover the others
        record["sha256"] = file_sha256(path)
        return record
    # a file whose path, size, modification time and inode are unchanged was hashed and checked
    # by the run that recorded it: not read again
    if (
        previous
        and previous.get("sha256")
        and all(previous.get(k) == record[k] for k in ("path", "size", "mtime_ns", "inode"))
    ):
        record["sha256"] = previous["sha256"]
    else:
        record["sha256"] = _hash_and_check(path)
    return record


def _hash_and_check(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of an input file, read once; a NIfTI file is also checked for completeness in the
    same pass (a ``.gz`` stream must end properly, the data must be as long as the header says),
    so a truncated copy fails its subject here, before a model is loaded or fine-tuned.

    Raises:
        MrisrInputError: naming the file, what is wrong and the fix.
    """
    digest = hashlib.sha256()
    if path.name.endswith(".gz"):
        length = check_gzip(path, on_block=digest.update, chunk=chunk)
    else:
        length = 0
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
                length += len(block)
    if path.name.endswith((".nii", ".nii.gz")):
        expected = _nifti_length(path)
        if expected is not None and length < expected:
            raise MrisrInputError(
                f"{path}: truncated NIfTI ({length} of {expected} bytes of header and data); "
                "replace it with a complete copy of the image"
            )
    return digest.hexdigest()


def _nifti_length(path: Path) -> int | None:
    """Bytes a single-file NIfTI needs (data offset plus voxel data), from its header; ``None`` if unreadable."""
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
        voxels = int(np.prod(header.get_data_shape(), dtype=np.int64))
        return int(header.get_data_offset()) + voxels * header.get_data_dtype().itemsize
    except Exception:  # not our job to explain an unreadable header: the reader does that
        return None


def _resolve_model(option: str, has_prior: bool, cache: dict[str, dict[str, str]]) -> dict[str, str]:
    from mrisr.models.registry import resolve_model_path
    from mrisr.reconstruct import ReconstructOptions
    from mrisr.reconstruct.pipeline import choose_model_name

    name = choose_model_name(ReconstructOptions(model=option), has_prior)
    if name not in cache:
        path = resolve_model_path(name)
        if not path.is_file():
            raise MrisrInputError(
                f"--model {option}: model {name} not found at {path}; pass --model PATH of a checkpoint"
            )
        cache[name] = {"name": name, "path": str(path.resolve()), "sha256": file_sha256(path)}
    return cache[name]


def _with_compute_dtype(options: dict[str, Any], device: str) -> dict[str, Any]:
    """``options`` plus the precision ``auto`` resolves to on ``device`` here (bf16 on a CPU with bf16
    instructions, fp16 on CUDA, else fp32): outputs made in another precision are not up to date."""
    if options.get("precision", "auto") != "auto" or options.get("method", "network") != "network":
        return options
    from mrisr.models.predictor import compute_dtype_name, resolve_device

    return {**options, "compute_dtype": compute_dtype_name(resolve_device(device or "auto"), "auto")}


def fingerprint_of(inputs: dict[str, dict[str, Any]], model: dict[str, str], options: dict[str, Any]) -> str:
    """SHA-256 over the input hashes, the model hash and the result-changing options."""
    relevant = {k: v for k, v in sorted(options.items()) if k not in RUNTIME_OPTIONS and k != "model"}
    if not relevant.get("finetune"):
        relevant.pop("finetune_minutes", None)  # a budget that is not used changes nothing
    payload = {
        "inputs": {role: record["sha256"] for role, record in sorted(inputs.items())},
        "model": model["sha256"],
        "options": relevant,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def plan_subject(
    subject: SubjectInputs,
    output_dir: str | Path,
    settings: RunSettings,
    model_cache: dict[str, dict[str, str]] | None = None,
) -> SubjectPlan:
    """Hash a subject's inputs and model and work out its outputs and fingerprints."""
    cache = {} if model_cache is None else model_cache
    plans = []
    for series in subject.series:
        outputs = series_outputs(output_dir, series, settings.desc, settings.finetune, settings.maps)
        previous = ((read_json(outputs.sidecar) or {}).get(BATCH_KEY) or {}).get("inputs") or {}
        inputs = {role: _file_record(path, previous.get(role)) for role, path in series.files().items()}
        model = _resolve_model(settings.options["model"], series.planning is not None, cache)
        options = dict(_with_compute_dtype(settings.options, settings.device))
        # a series chosen in a DICOM folder, or a DICOM copy asked for, changes what is read or written (the
        # folder's hash does not say which series): part of the fingerprint, only when used
        options.update({f"dicom_{key}": value for key, value in sorted(settings.dicom.items())
                        if value not in (None, "nifti")})
        plans.append(SeriesPlan(series, outputs, inputs, model, fingerprint_of(inputs, model, options)))
    return SubjectPlan(
        label=subject.label,
        series=plans,
        log=subject_log_path(output_dir, subject.label),
        status=status_path(output_dir, subject.label),
        output_dir=Path(output_dir),
    )


def recorded(block: dict, series: SeriesPlan | None = None) -> dict | None:
    """The batch block of a finished series, if its outputs are all still there."""
    output = block.get("output") or {}
    path = Path(output.get("path", ""))
    if series is not None:
        path = series.outputs.series
    if not path.is_file() or path.stat().st_size != output.get("size"):
        return None
    tuned = block.get("finetuned_model")
    if tuned:
        # next to the series (the derivatives folder may have moved since it was recorded)
        tuned_path = path.parent / Path(tuned["path"]).name if series is not None else Path(tuned["path"])
        if not tuned_path.is_file():
            return None
    return block


def up_to_date(plan: SubjectPlan) -> list[dict] | None:
    """The sidecar batch blocks of every series if the subject is finished with these inputs, model
    and options (and its outputs exist); else ``None``."""
    blocks = []
    for series in plan.series:
        block = (read_json(series.outputs.sidecar) or {}).get(BATCH_KEY)
        if not block or block.get("fingerprint") != series.fingerprint or recorded(block, series) is None:
            return None
        if not all(path.is_file() for path in series.outputs.map_paths().values()):
            return None
        blocks.append(block)
    return blocks or None


