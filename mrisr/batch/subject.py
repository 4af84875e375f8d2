"""One subject of a batch run: every dynamic series reconstructed, scored and recorded, in this
process or in a worker of :mod:`mrisr.batch.workers`.

Each series is reconstructed by :func:`mrisr.workflow.reconstruct_file` (atomic output, then
the library's sidecar); the runner then adds provenance and metrics and rewrites the sidecar
atomically. The old sidecar is removed before a series starts, so a run killed at any moment
leaves either a complete, fingerprinted result or no completion marker at all. Any error of a
subject is logged and returned as a failed result; only ``KeyboardInterrupt`` escapes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path

from mrisr.batch.derivatives import (
    derivative_sidecar,
    map_sidecar,
    read_json,
    status_path,
    subject_log_path,
)
from mrisr.batch.resume import SeriesPlan, SubjectPlan
from mrisr.batch.summary import SubjectResult, result_from_blocks
from mrisr.batch.validation import RunSettings
from mrisr.io.errors import MrisrInputError, one_line
from mrisr.io.guard import check_target, is_stale_partial, write_scope
from mrisr.io.hashing import file_sha256
from mrisr.io.jsonio import write_json_atomic

__all__ = ["failed_before_start", "process_subject", "remove_stale_partials"]


def _open_log(path: Path, label: str) -> tuple[logging.Logger, logging.Handler]:
    check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"mrisr.batch.sub-{label}.{os.getpid()}.{time.monotonic_ns()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    return logger, handler


def remove_stale_partials(folder: Path) -> list[Path]:
    """Temporary files in a subject's folder whose writer is gone (a killed run): never results.

    Symbolic links are not followed (nothing outside the output folder is touched), and the
    partials of a process still running are kept.
    """
    removed: list[Path] = []
    if folder.is_symlink() or not folder.is_dir():
        return removed
    for parent, _folders, files in os.walk(folder, followlinks=False):
        for name in files:
            path = Path(parent) / name
            if is_stale_partial(name) and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _run_series(
    plan: SeriesPlan,
    settings: RunSettings,
    log: logging.Logger,
    on_frame: Callable[[int, int], None] | None,
    cohort_root: Path | None,
) -> dict:
    from mrisr.reconstruct import ReconstructOptions
    from mrisr.workflow import reconstruct_file

    series, outputs = plan.series, plan.outputs
    # the recipe's options as they are (the schema's defaults for any it leaves out), the model
    # resolved for this series, and where the work runs
    recon_options = ReconstructOptions(**{**settings.options, "model": plan.model["path"], "device": settings.device,
                                          "threads": settings.threads})
    map_paths = outputs.map_paths()
    for target in (outputs.series, outputs.sidecar, *map_paths.values(), *map(outputs.map_sidecar, map_paths)):
        check_target(target)  # before the folder is made: a link out of the output folder is refused
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
            maps_output=map_paths or None,
            series=settings.dicom.get("series"),
            prior_series=settings.dicom.get("prior_series"),
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
        raise MrisrInputError(f"{series.dynamic}: reconstruction failed ({one_line(exc)}){hint}") from exc
    reconstruct_seconds = time.perf_counter() - started
    for message in report.warnings:
        log.warning("%s", message)

    metrics = None
    metrics_seconds = 0.0
    if series.ground_truth is not None:
        from mrisr.io import load
        from mrisr.metrics import SCORE_COLUMNS, check_same_grid, score_frames, summarise

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
        rows = score_frames(predicted.data, truth.data)
        metrics = {"frames": rows, "summary": summarise(rows, SCORE_COLUMNS), "mask": "object_mask of each frame"}
        metrics_seconds = time.perf_counter() - t0
        summary = metrics["summary"]
        log.info(
            "metrics vs %s: SSIM in tissue %.4f +- %.4f (whole volume %.4f), PSNR in tissue %.2f dB",
            series.ground_truth.name,
            summary["ssim_tissue_mean"],
            summary["ssim_tissue_std"],
            summary["ssim_whole_mean"],
            summary["psnr_tissue_mean"],
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
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "metrics": metrics,
        "maps": None if not map_paths else {
            "files": {name: {"path": str(path.resolve()), "sha256": file_sha256(path)} for name, path in map_paths.items()},
            "max_consistency_nrmse": (library.get("maps") or {}).get("max_consistency_nrmse"),
        },
    }
    for name in map_paths:
        write_json_atomic(outputs.map_sidecar(name), map_sidecar(name, outputs.series, library.get("RepetitionTime")))
    if settings.dicom.get("output_format") == "dicom":
        from mrisr.io.dicom_write import export_dicom

        dicom_folder = outputs.series.with_name(outputs.series.name[: -len(".nii.gz")] + "_dicom")
        if dicom_folder.is_dir():
            shutil.rmtree(dicom_folder)  # the previous run's copy of a result being replaced
        export_dicom(outputs.series, dicom_folder, series.dynamic, settings.dicom.get("series"),
                     uid_seed=block["fingerprint"])
        block["dicom"] = str(dicom_folder.resolve())
        log.info("DICOM series %s", dicom_folder)
    write_json_atomic(outputs.sidecar, derivative_sidecar(library, series, cohort_root, block))
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
    progress are then removed by their atomic writers). Writes stay inside the output folder and
    never replace an input or the model (:mod:`mrisr.io.guard`).
    """
    inputs = [path for series in plan.series for path in series.series.files().values()]
    inputs += [series.model.get("path") for series in plan.series]
    with write_scope(inputs=inputs, confine_to=plan.output_dir):
        return _process_subject(plan, settings, on_frame, cohort_root)


def _process_subject(
    plan: SubjectPlan,
    settings: RunSettings,
    on_frame: Callable[[int, int], None] | None,
    cohort_root: Path | None,
) -> SubjectResult:
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
        remove_stale_partials(plan.log.parent.parent)
        blocks = [_run_series(series, settings, log, on_frame, cohort_root) for series in plan.series]
        plan.status.unlink(missing_ok=True)
        result = result_from_blocks(plan.label, "done", blocks, seconds=time.perf_counter() - started)
        log.info("sub-%s done in %.2f s", plan.label, result.seconds)
    except KeyboardInterrupt:
        log.error("sub-%s interrupted: its outputs in progress were removed; rerun to resume", plan.label)
        raise
    except Exception as exc:
        message = one_line(exc)
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


def failed_before_start(label: str, output_dir: Path, exc: Exception) -> SubjectResult:
    """A subject whose inputs could not even be hashed and checked: logged and recorded like any failure."""
    message = one_line(exc)
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

