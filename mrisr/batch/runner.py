"""Resumable cohort runner: validate everything, skip what is up to date, isolate failures.

One subject is one unit of work (all its dynamic series). For every series the runner computes a
*fingerprint*: SHA-256 of the input files (dynamic, planning, ground truth), of the model file and
of the options that change the result (:class:`~mrisr.batch.config.ReconstructSettings`; the
device and thread count are left out). A subject is skipped when every series' sidecar records
that fingerprint and its outputs exist; anything else reruns it.

Each series is reconstructed by :func:`mrisr.reconstruct.reconstruct_file` (atomic output, then
the library's sidecar); the runner then adds provenance and metrics and rewrites the sidecar
atomically. The old sidecar is removed before a series starts, so a run killed at any moment
leaves either a complete, fingerprinted result or no completion marker at all.

Example:
    >>> cohort, settings = validate_batch("bids/", "bids/derivatives/mrisr")  # doctest: +SKIP
    >>> results = run_batch(cohort, "bids/derivatives/mrisr", settings, jobs=2)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mrisr.batch.config import BatchConfig, load_batch_config
from mrisr.batch.derivatives import (
    BATCH_KEY,
    SeriesOutputs,
    bids_uri,
    file_sha256,
    read_json,
    series_outputs,
    status_path,
    subject_log_path,
    write_dataset_description,
    write_json_atomic,
    write_summary,
)
from mrisr.batch.inputs import BatchValidationError, Cohort, SeriesInputs, SubjectInputs, discover
from mrisr.io.errors import MrisrInputError

__all__ = [
    "Reporter",
    "RunSettings",
    "SubjectPlan",
    "SubjectResult",
    "collect_summary",
    "plan_subject",
    "process_subject",
    "run_batch",
    "validate_batch",
]

#: options that decide where the work runs, not what it computes: never part of the fingerprint
RUNTIME_OPTIONS = ("device", "threads")


@dataclass(frozen=True)
class RunSettings:
    """What a batch run computes (``options``) and where (``device``, ``threads``).

    Attributes:
        options: :class:`~mrisr.batch.config.ReconstructSettings` as a dict (model, prior_mode,
            factor, matrix, data_consistency, finetune, finetune_minutes).
        desc: ``desc-`` entity of the SR series.
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: torch CPU threads per subject (``None``: torch's default; ``--jobs`` splits the cores).
        force: recompute subjects even when they are up to date.
    """

    options: dict[str, Any]
    desc: str = "sr"
    device: str = "auto"
    threads: int | None = None
    force: bool = False

    @property
    def finetune(self) -> bool:
        return bool(self.options.get("finetune"))


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


@dataclass
class SubjectResult:
    """How one subject went: a row of ``summary.tsv``."""

    subject: str
    status: str  # done | skipped | failed
    seconds: float | None = None
    frames: int | None = None
    ssim_mean: float | None = None
    psnr_mean: float | None = None
    error: str = ""
    log: Path | None = None

    def row(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "status": self.status,
            "seconds": None if self.seconds is None else round(self.seconds, 2),
            "frames": self.frames,
            "ssim_mean": self.ssim_mean,
            "psnr_mean": self.psnr_mean,
            "error": self.error,
        }


class Reporter(Protocol):
    """Progress hooks of :func:`run_batch` (the CLI draws a rich bar with them)."""

    def start(self, total: int) -> None: ...

    def subject_started(self, label: str, frames: int | None) -> None: ...

    def frame(self, label: str, index: int, total: int) -> None: ...

    def subject_finished(self, result: SubjectResult) -> None: ...


class _SilentReporter:
    def start(self, total: int) -> None:
        pass

    def subject_started(self, label: str, frames: int | None) -> None:
        pass

    def frame(self, label: str, index: int, total: int) -> None:
        pass

    def subject_finished(self, result: SubjectResult) -> None:
        pass


# --------------------------------------------------------------------------- validation


def _check_output_dir(output_dir: Path, cohort: Cohort, problems: list[str]) -> list[Path]:
    """Problems with the output folder; returns the folders it had to create (to undo on failure)."""
    out = output_dir.expanduser().resolve()
    if out.exists() and not out.is_dir():
        problems.append(
            f"{output_dir}: exists and is not a folder; OUTPUT_DIR is the derivatives folder, e.g. derivatives/mrisr"
        )
        return []
    if cohort.kind == "bids" and cohort.root.is_dir():
        root = cohort.root.resolve()
        inside = out.relative_to(root).parts if out.is_relative_to(root) else None
        if inside is not None and (not inside or inside[0].startswith("sub-")):
            problems.append(
                f"{output_dir}: writing into the source dataset (or one of its subjects) would mix raw and "
                f"derived files; use {root / 'derivatives' / 'mrisr'}"
            )
            return []
    missing = [folder for folder in (out, *out.parents) if not folder.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".mrisr-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        problems.append(
            f"{output_dir}: cannot create or write the output folder ({exc.strerror}); choose a writable location"
        )
    return missing


def _remove_created(folders: list[Path]) -> None:
    """Remove the (still empty) folders validation created, deepest first: a failed validation writes nothing."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


def _check_model(option: str, cohort: Cohort, problems: list[str]) -> None:
    """Every model the cohort needs exists, is an mrisr checkpoint and fits the presence of a prior."""
    from mrisr.models.checkpoint import read_metadata
    from mrisr.models.registry import resolve_model_path
    from mrisr.reconstruct.stepwise import ReconstructOptions, choose_model_name

    needed: dict[str, list[SeriesInputs]] = {}
    for subject in cohort.subjects.values():
        for series in subject.series:
            name = choose_model_name(ReconstructOptions(model=option), series.planning is not None)
            needed.setdefault(name, []).append(series)
    if not needed:
        needed[option] = []
    for name, series_list in needed.items():
        try:
            meta = read_metadata(resolve_model_path(name))
        except MrisrInputError as exc:
            problems.append(f"--model {option}: {exc}" if not str(exc).startswith(option) else str(exc))
            continue
        without_prior = [s for s in series_list if s.planning is None]
        if meta.get("uses_prior", True) and without_prior:
            problems.append(
                f"--model {option}: model {name} needs a planning scan as prior but {len(without_prior)} series have "
                f"none (e.g. {without_prior[0].dynamic}); add planning scans or use --model default-noprior"
            )


def _check_device(device: str, problems: list[str]) -> None:
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        problems.append(f"--device {device}: unknown device; use auto, cpu or cuda")
        return
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            problems.append(f"--device {device}: no CUDA device is available here; use --device cpu or auto")


def validate_batch(
    source: str | Path,
    output_dir: str | Path,
    config: str | Path | BatchConfig | None = None,
    participant_labels: list[str] | None = None,
    model: str | None = None,
    finetune: bool | None = None,
    device: str = "auto",
    jobs: int = 1,
    force: bool = False,
    check_model: bool = True,
) -> tuple[Cohort, RunSettings]:
    """Check everything a batch run needs before any work starts.

    Args:
        source: BIDS folder or ``.csv``/``.tsv`` manifest.
        output_dir: the derivatives folder to write.
        config: path of a batch config (``configs/batch.yaml``), a :class:`BatchConfig`, or ``None`` (defaults).
        participant_labels: subjects to run (``None``: all).
        model: overrides ``reconstruct.model`` of the config (``default`` or a checkpoint path).
        finetune: overrides ``reconstruct.finetune``.
        device: ``auto``, ``cpu`` or ``cuda``.
        jobs: parallel subjects (>= 1).
        force: recompute up-to-date subjects too.
        check_model: also validate the model file (off when only a summary is wanted).

    Returns:
        The cohort and the run settings.

    Raises:
        BatchValidationError: every problem found, in one message.
        MrisrInputError: an unreadable or invalid config file.
    """
    cfg = config if isinstance(config, BatchConfig) else load_batch_config(config)
    overrides: dict[str, Any] = {}
    if model is not None:
        overrides["model"] = str(model)
    if finetune is not None:
        overrides["finetune"] = bool(finetune)
    if overrides:
        cfg = cfg.model_copy(update={"reconstruct": cfg.reconstruct.model_copy(update=overrides)})
    problems: list[str] = []
    if jobs < 1:
        problems.append(f"--jobs {jobs}: must be >= 1, e.g. --jobs 2")
    cohort = discover(source, cfg, participant_labels, problems=problems)
    created = _check_output_dir(Path(output_dir), cohort, problems)
    options = cfg.reconstruct.model_dump(mode="json")
    if options["factor"] is not None and options["matrix"] is not None:
        problems.append("reconstruct.factor and reconstruct.matrix: give one of them, not both")
    if check_model:
        _check_model(options["model"], cohort, problems)
        _check_device(device, problems)
    for subject in cohort.subjects.values():
        for series in subject.series:
            if series.planning is None and options["finetune"]:
                problems.append(
                    f"{series.dynamic}: --finetune needs a planning scan; add one or run without --finetune"
                )
    outputs: dict[Path, Path] = {}
    for subject in cohort.subjects.values():
        for series in subject.series:
            target = series_outputs(output_dir, series, cfg.desc).series
            if target in outputs:
                problems.append(
                    f"{series.dynamic} and {outputs[target]}: both would be written to {target}; "
                    "give them distinct BIDS entities (task, run, acq)"
                )
            outputs[target] = series.dynamic
    if problems:
        _remove_created(created)
        raise BatchValidationError(source, problems)
    settings = RunSettings(options=options, desc=cfg.desc, device=device, force=force)
    return cohort, settings


# --------------------------------------------------------------------------- planning and resume


def _file_record(path: Path, previous: dict | None) -> dict[str, Any]:
    stat = path.stat()
    record = {
        "path": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "inode": stat.st_ino,
    }
    if path.is_dir():
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
    gzipped = path.name.endswith(".gz")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if gzipped else None
    length = 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            if inflater is None:
                length += len(block)
                continue
            try:
                while block and not inflater.eof:
                    length += len(inflater.decompress(block, chunk * 8))
                    block = inflater.unconsumed_tail
            except zlib.error as exc:
                raise MrisrInputError(
                    f"{path}: corrupt gzip data ({exc}); replace it with a complete copy of the image"
                ) from None
    if inflater is not None and not inflater.eof:
        raise MrisrInputError(
            f"{path}: truncated .gz file (the compressed data end early); replace it with a complete copy of the image"
        )
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
    from mrisr.reconstruct.stepwise import ReconstructOptions, choose_model_name

    name = choose_model_name(ReconstructOptions(model=option), has_prior)
    if name not in cache:
        path = resolve_model_path(name)
        if not path.is_file():
            raise MrisrInputError(
                f"--model {option}: model {name} not found at {path}; pass --model PATH of a checkpoint"
            )
        cache[name] = {"name": name, "path": str(path.resolve()), "sha256": file_sha256(path)}
    return cache[name]


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
        outputs = series_outputs(output_dir, series, settings.desc, settings.finetune)
        previous = ((read_json(outputs.sidecar) or {}).get(BATCH_KEY) or {}).get("inputs") or {}
        inputs = {role: _file_record(path, previous.get(role)) for role, path in series.files().items()}
        model = _resolve_model(settings.options["model"], series.planning is not None, cache)
        plans.append(SeriesPlan(series, outputs, inputs, model, fingerprint_of(inputs, model, settings.options)))
    return SubjectPlan(
        label=subject.label,
        series=plans,
        log=subject_log_path(output_dir, subject.label),
        status=status_path(output_dir, subject.label),
    )


def _recorded(block: dict, series: SeriesPlan | None = None) -> dict | None:
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
        if not block or block.get("fingerprint") != series.fingerprint or _recorded(block, series) is None:
            return None
        if series.outputs.finetuned_model is not None and not series.outputs.finetuned_model.is_file():
            return None
        blocks.append(block)
    return blocks or None


def _result_from_blocks(label: str, status: str, blocks: list[dict], seconds: float | None = None) -> SubjectResult:
    from mrisr.metrics import summarise

    frames = sum(int(b.get("frames") or 0) for b in blocks)
    rows = [row for b in blocks for row in ((b.get("metrics") or {}).get("frames") or [])]
    summary = summarise(rows) if rows else {}
    recorded_seconds = sum(float((b.get("timings") or {}).get("total_s") or 0.0) for b in blocks)
    return SubjectResult(
        subject=label,
        status=status,
        seconds=recorded_seconds if seconds is None else seconds,
        frames=frames,
        ssim_mean=summary.get("ssim_mean"),
        psnr_mean=summary.get("psnr_mean"),
    )


# --------------------------------------------------------------------------- running one subject


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, MrisrInputError) else f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _open_log(path: Path, label: str) -> tuple[logging.Logger, logging.Handler]:
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"mrisr.batch.sub-{label}.{os.getpid()}.{time.monotonic_ns()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    return logger, handler


def _remove_stale_partials(folder: Path) -> None:
    """Temporary files of a run that was killed (``.name.*.partial*``): never results, safe to remove."""
    if not folder.is_dir():
        return
    for stale in folder.rglob(".*.partial*"):
        if stale.is_file():
            stale.unlink(missing_ok=True)


def _run_series(
    plan: SeriesPlan,
    settings: RunSettings,
    log: logging.Logger,
    on_frame: Callable[[int, int], None] | None,
    cohort_root: Path | None,
) -> dict:
    from mrisr.reconstruct import ReconstructOptions, reconstruct_file

    series, outputs = plan.series, plan.outputs
    options = dict(settings.options)
    options["matrix"] = tuple(options["matrix"]) if options.get("matrix") else None
    recon_options = ReconstructOptions(
        model=plan.model["path"],
        prior_mode=options["prior_mode"],
        factor=options["factor"],
        matrix=options["matrix"],
        data_consistency=options["data_consistency"],
        device=settings.device,
        threads=settings.threads,
        finetune=options["finetune"],
        finetune_minutes=options["finetune_minutes"],
    )
    outputs.series.parent.mkdir(parents=True, exist_ok=True)
    # the sidecar is the completion marker: drop the old one before the output is replaced
    outputs.sidecar.unlink(missing_ok=True)
    log.info("series %s -> %s", series.dynamic, outputs.series)
    log.info("planning %s, ground truth %s", series.planning, series.ground_truth)
    log.info("model %s (sha256 %s)", plan.model["name"], plan.model["sha256"])
    started = time.perf_counter()

    def frame_done(result) -> None:
        log.info("frame %d/%d in %.2f s", result.index + 1, result.total, result.seconds)
        if on_frame is not None:
            on_frame(result.index, result.total)

    try:
        report = reconstruct_file(
            series.dynamic,
            output=outputs.series,
            prior_path=series.planning,
            options=recon_options,
            on_frame=frame_done,
            finetuned_model_path=outputs.finetuned_model,
            on_status=lambda message: log.info("%s", message),
        )
    except (MrisrInputError, KeyboardInterrupt):
        raise
    except Exception as exc:
        # a truncated or corrupt image surfaces as a low-level read error: name the series
        hint = (
            "; check that the dynamic and planning files are complete, readable images"
            if isinstance(exc, (EOFError, OSError, zlib.error))
            else ""
        )
        raise MrisrInputError(f"{series.dynamic}: reconstruction failed ({_one_line(exc)}){hint}") from exc
    reconstruct_seconds = time.perf_counter() - started
    for message in report.warnings:
        log.warning("%s", message)

    metrics = None
    metrics_seconds = 0.0
    if series.ground_truth is not None:
        from mrisr.io import load
        from mrisr.metrics import check_same_grid, evaluate_frames, summarise

        t0 = time.perf_counter()
        predicted = load(outputs.series)
        truth = load(series.ground_truth)
        check_same_grid(
            predicted,
            truth,
            hint=(
                "give a ground truth on the SR grid (the planning scan's grid by default), or set "
                "reconstruct.matrix in the batch config to the ground truth's in-plane matrix"
            ),
        )
        rows = evaluate_frames(predicted.data, truth.data)
        metrics = {"frames": rows, "summary": summarise(rows), "mask": None}
        metrics_seconds = time.perf_counter() - t0
        summary = metrics["summary"]
        log.info(
            "metrics vs %s: SSIM %.4f +- %.4f, PSNR %.2f dB",
            series.ground_truth.name,
            summary["ssim_mean"],
            summary["ssim_std"],
            summary["psnr_mean"],
        )

    import mrisr

    library = read_json(report.sidecar) or {}
    stat = outputs.series.stat()
    tuned = None
    if report.finetuned_model is not None and Path(report.finetuned_model).is_file():
        tuned = {"path": str(Path(report.finetuned_model).resolve()), "sha256": file_sha256(report.finetuned_model)}
    block = {
        "fingerprint": plan.fingerprint,
        "mrisr_version": mrisr.__version__,
        "subject": series.subject,
        "session": series.session,
        "inputs": plan.inputs,
        "model": dict(plan.model),
        "finetuned_model": tuned,
        "options": settings.options,
        "runtime": {"device": settings.device, "threads": settings.threads},
        "output": {"path": str(outputs.series.resolve()), "size": stat.st_size, "sha256": file_sha256(outputs.series)},
        "frames": len(report.frame_seconds),
        "timings": {
            "total_s": round(time.perf_counter() - started, 3),
            "reconstruct_s": round(reconstruct_seconds, 3),
            "metrics_s": round(metrics_seconds, 3),
            "frame_s": report.frame_seconds,
            "finetune_s": (report.finetune or {}).get("seconds"),
        },
        "metrics": metrics,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    sources = [bids_uri(path, cohort_root) for path in series.files().values()]
    sidecar = {
        "Description": "Super-resolved dynamic series (mrisr, step-wise prior-guided reconstruction)",
        "Sources": sources,
        "RepetitionTime": library.get("RepetitionTime"),
        **{k: v for k, v in library.items() if k not in ("Description", "Sources", "RepetitionTime")},
        BATCH_KEY: block,
    }
    write_json_atomic(outputs.sidecar, sidecar)
    if report.sidecar.resolve() != outputs.sidecar.resolve():
        Path(report.sidecar).unlink(missing_ok=True)
    log.info("series finished in %.2f s, sidecar %s", block["timings"]["total_s"], outputs.sidecar)
    return block


def process_subject(
    plan: SubjectPlan,
    settings: RunSettings,
    on_frame: Callable[[int, int], None] | None = None,
    cohort_root: Path | None = None,
) -> SubjectResult:
    """Run every series of a subject; any error is logged and returned as a failed result.

    Runs in a worker process with ``--jobs``; only ``KeyboardInterrupt`` escapes (the outputs in
    progress are then removed by their atomic writers).
    """
    started = time.perf_counter()
    log, handler = _open_log(plan.log, plan.label)
    try:
        import mrisr

        log.info(
            "=== mrisr %s: sub-%s, %d series, device %s, pid %d",
            mrisr.__version__,
            plan.label,
            len(plan.series),
            settings.device,
            os.getpid(),
        )
        log.info("options %s", json.dumps(settings.options, sort_keys=True))
        _remove_stale_partials(plan.log.parent.parent)
        blocks = [_run_series(series, settings, log, on_frame, cohort_root) for series in plan.series]
        plan.status.unlink(missing_ok=True)
        result = _result_from_blocks(plan.label, "done", blocks, seconds=time.perf_counter() - started)
        log.info("sub-%s done in %.2f s", plan.label, result.seconds)
    except Exception as exc:
        message = _one_line(exc)
        log.error("sub-%s failed: %s", plan.label, message)
        if not isinstance(exc, MrisrInputError) or exc.__cause__ is not None:
            log.error("%s", traceback.format_exc())
        seconds = time.perf_counter() - started
        try:
            write_json_atomic(
                plan.status,
                {
                    "subject": plan.label,
                    "status": "failed",
                    "error": message,
                    "seconds": round(seconds, 3),
                    "log": str(plan.log),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )
        except OSError:
            pass
        result = SubjectResult(plan.label, "failed", seconds=seconds, error=message)
    finally:
        log.removeHandler(handler)
        handler.close()
    result.log = plan.log
    return result


def _worker_context():
    """Workers must start clean (no inherited torch thread pools or CUDA state), yet importing torch
    in every worker costs seconds: a fork server imports the heavy modules once and forks workers
    from that single-threaded process. Where there is no fork (Windows), spawn."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["mrisr.batch.runner", "mrisr.reconstruct", "mrisr.metrics"])
        return context
    return multiprocessing.get_context("spawn")


def _failed_before_start(label: str, output_dir: Path, exc: Exception) -> SubjectResult:
    """A subject whose inputs could not even be hashed and checked: logged and recorded like any failure."""
    message = _one_line(exc)
    log_path = subject_log_path(output_dir, label)
    log, handler = _open_log(log_path, label)
    try:
        log.error("sub-%s failed while checking its inputs: %s", label, message)
    finally:
        log.removeHandler(handler)
        handler.close()
    write_json_atomic(
        status_path(output_dir, label),
        {"subject": label, "status": "failed", "error": message, "seconds": 0.0, "log": str(log_path)},
    )
    return SubjectResult(label, "failed", seconds=0.0, error=message, log=log_path)


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- the cohort


def run_batch(
    cohort: Cohort,
    output_dir: str | Path,
    settings: RunSettings,
    jobs: int = 1,
    reporter: Reporter | None = None,
    summary: bool = True,
) -> list[SubjectResult]:
    """Process a validated cohort into a BIDS derivatives dataset; resumable and failure-isolated.

    Args:
        cohort: from :func:`validate_batch` (or :func:`mrisr.batch.discover`).
        output_dir: derivatives folder (created).
        settings: from :func:`validate_batch`.
        jobs: subjects processed in parallel worker processes (torch threads are split).
        reporter: progress hooks (e.g. the CLI's rich bar).
        summary: write ``summary.tsv`` (after every subject, so it is current even after a kill).

    Returns:
        One :class:`SubjectResult` per subject, in label order.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    reporter = reporter or _SilentReporter()
    write_dataset_description(output_dir, cohort)
    reporter.start(len(cohort.subjects))
    results: dict[str, SubjectResult] = {}

    def finished(result: SubjectResult) -> None:
        results[result.subject] = result
        reporter.subject_finished(result)
        if summary:
            write_summary(output_dir, [result.row()])

    model_cache: dict[str, dict[str, str]] = {}
    todo: list[SubjectPlan] = []
    for subject in cohort.subjects.values():
        try:
            plan = plan_subject(subject, output_dir, settings, model_cache)
        except Exception as exc:  # an unreadable or truncated input: this subject fails, the others go on
            finished(_failed_before_start(subject.label, output_dir, exc))
            continue
        blocks = None if settings.force else up_to_date(plan)
        if blocks is not None:
            finished(_result_from_blocks(subject.label, "skipped", blocks))
        else:
            todo.append(plan)

    workers = min(jobs, len(todo))
    if workers <= 1:
        for plan in todo:
            reporter.subject_started(plan.label, None)
            finished(
                process_subject(
                    plan,
                    settings,
                    on_frame=lambda i, n, label=plan.label: reporter.frame(label, i, n),
                    cohort_root=cohort.root,
                )
            )
    else:
        _run_pool(todo, settings, workers, cohort.root, reporter, finished)
    if summary:
        write_summary(output_dir, [results[label].row() for label in results])
    return [results[label] for label in cohort.labels if label in results]


def _run_pool(
    todo: list[SubjectPlan],
    settings: RunSettings,
    workers: int,
    cohort_root: Path | None,
    reporter: Reporter,
    finished: Callable[[SubjectResult], None],
) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = settings.threads or max(1, (os.cpu_count() or 1) // workers)
    worker_settings = replace(settings, threads=threads)
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=_worker_context(), initializer=_init_worker, initargs=(threads,)
    )
    futures = {}
    try:
        for plan in todo:
            futures[pool.submit(process_subject, plan, worker_settings, None, cohort_root)] = plan
        for future in as_completed(futures):
            plan = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # the worker process died (out of memory, killed)
                result = SubjectResult(
                    plan.label,
                    "failed",
                    error=f"worker process died ({_one_line(exc)}); see {plan.log}; rerun to retry",
                    log=plan.log,
                )
            finished(result)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


# --------------------------------------------------------------------------- summary from disk


def collect_summary(cohort: Cohort, output_dir: str | Path, desc: str = "sr") -> list[SubjectResult]:
    """The state of every subject from what is on disk (for pipelines that run subjects as separate jobs).

    A subject is ``done`` when every series' sidecar holds a batch block and its output exists,
    ``failed`` otherwise (with the error of its last failed run, or "no result").
    """
    output_dir = Path(output_dir)
    results = []
    for subject in cohort.subjects.values():
        blocks = []
        for series in subject.series:
            outputs = series_outputs(output_dir, series, desc)
            block = (read_json(outputs.sidecar) or {}).get(BATCH_KEY)
            if block and _recorded(block, SeriesPlan(series, outputs, {}, {}, "")) is not None:
                blocks.append(block)
        if subject.series and len(blocks) == len(subject.series):
            results.append(_result_from_blocks(subject.label, "done", blocks))
            continue
        status = read_json(status_path(output_dir, subject.label)) or {}
        error = status.get("error") or (
            f"no result: not run yet or interrupted; see {subject_log_path(output_dir, subject.label)}"
        )
        results.append(SubjectResult(subject.label, "failed", seconds=status.get("seconds"), error=error))
    return results


def write_collected_summary(cohort: Cohort, output_dir: str | Path, desc: str = "sr") -> Path:
    """Write ``summary.tsv`` from :func:`collect_summary`."""
    return write_summary(output_dir, [r.row() for r in collect_summary(cohort, output_dir, desc)])
