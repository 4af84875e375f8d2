"""File-level reconstruction: stream frames from disk to disk and write a JSON sidecar."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrisr.io import FrameWriter, check_writable, load
from mrisr.io.errors import MrisrInputError
from mrisr.io.guard import check_target
from mrisr.io.load import check_frame
from mrisr.models.checkpoint import file_sha256, save_checkpoint
from mrisr.reconstruct.stepwise import (
    FrameResult,
    Reconstruction,
    ReconstructOptions,
    choose_model_name,
    default_output,
)

#: HR frames up to this many voxels are written by a background thread (see :func:`reconstruct_file`)
BACKGROUND_WRITE_VOXELS = 4 * 2**20


@dataclass
class ReconstructionReport:
    output: Path
    sidecar: Path
    hr_affine: np.ndarray
    hr_shape: tuple[int, int, int]
    frame_seconds: list[float]
    model: str
    model_sha256: str
    finetuned_model: Path | None
    options: dict
    keep: float
    warnings: list[str] = field(default_factory=list)
    finetune: dict | None = None
    #: per frame, reading and writing included (the sidecar's ``frame_wall_seconds``)
    frame_wall_seconds: list[float] = field(default_factory=list)


def write_json_atomic(path: Path, payload: dict) -> None:
    from mrisr.io.guard import partial_file, write_errors

    tmp = partial_file(path)
    try:
        with write_errors(path), open(tmp, "w") as fh:
            json.dump(payload, fh, indent=2, default=str)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def maps_paths(output: Path) -> dict[str, Path]:
    """``<output stem>_disagreement.nii.gz`` and ``<output stem>_unmeasured.nii.gz`` beside the output."""
    from mrisr.reconstruct.maps import MAP_NAMES

    stem = sidecar_path(output).stem
    return {name: output.with_name(f"{stem}_{name}.nii.gz") for name in MAP_NAMES}


def sidecar_path(output: Path) -> Path:
    name = output.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return output.with_name(name[: -len(suffix)] + ".json")
    return output.with_suffix(".json")


def finetune_for(rec: Reconstruction, minutes: float, steps: int | None = None, lr: float = 2e-5,
                 on_progress=None):
    """Fine-tune ``rec``'s model on its planning scan (prepared on the HR grid)."""
    from mrisr.io.geometry import voxel_sizes
    from mrisr.training.finetune import finetune

    if rec.prior is None:
        raise MrisrInputError(f"{rec.dynamic.name}: fine-tuning needs the planning scan; pass --prior")
    zooms = tuple(float(v) for v in voxel_sizes(rec.grid.hr_affine))
    return finetune(rec.model, rec.prior.data, zooms, rec.grid.keep, minutes=minutes, steps=steps, lr=lr,
                    on_progress=on_progress)


def reconstruct_file(
    dynamic_path: str | Path,
    output: str | Path | None = None,
    prior_path: str | Path | None = None,
    options: ReconstructOptions | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
    finetuned_model_path: str | Path | None = None,
    on_status: Callable[[str], None] | None = None,
    maps_output: dict[str, Path] | None = None,
) -> ReconstructionReport:
    """Reconstruct a dynamic series file into ``output`` (default ``<stem>_sr.nii.gz``), streaming.

    The output is written under a temporary name and renamed at the end, so an error or Ctrl-C
    leaves nothing behind; the sidecar (``<output stem>.json``) is written last. The same inputs
    and options give a byte-identical output; in the sidecar only ``frame_seconds``,
    ``frame_wall_seconds`` and ``total_seconds`` (wall-clock) change.

    Per frame, the sidecar records two times: ``frame_seconds``, the reconstruction of the frame
    (registration, gated keyhole, network), and ``frame_wall_seconds``, the whole pipeline as
    this function runs it: reading the frame, reconstructing it, compressing and writing it (the
    last frame also carries closing the files). In a steady stream the median of the second is
    the time between two finished frames.

    Args:
        dynamic_path: the LR series ``(X, Y, Z[, T])`` (NIfTI, NRRD, MHA, DICOM folder).
        output: ``.nii.gz``/``.nii`` to write; default ``<input>_sr.nii.gz`` next to the input.
        prior_path: the static HR planning scan (3-D), or ``None``.
        options: :class:`ReconstructOptions` (default: all defaults).
        on_frame: called with each :class:`FrameResult` after it is written (progress).
        finetuned_model_path: where ``options.finetune`` keeps the tuned model; default
            ``<output stem>_model.safetensors``.
        on_status: called with one-line messages (warnings, fine-tuning progress).
        maps_output: with ``options.maps``, where to write the maps (``{"disagreement": path,
            "unmeasured": path}``); default ``<output stem>_disagreement.nii.gz`` and
            ``<output stem>_unmeasured.nii.gz`` next to the output.

    Returns:
        :class:`ReconstructionReport`: output and sidecar paths, HR grid, per-frame seconds,
        model and its SHA-256, warnings.

    Raises:
        MrisrInputError: unreadable inputs, an output that equals an input or cannot be
            written, a non-NIfTI output name, a model that does not fit the inputs.
    """
    options = options or ReconstructOptions()
    options.validate()
    dynamic_path = Path(dynamic_path)
    output = Path(output) if output is not None else default_output(dynamic_path)
    map_paths = {name: Path(path) for name, path in (maps_output or maps_paths(output)).items()} if options.maps else {}
    for target in (output, *map_paths.values()):
        check_writable(target, inputs=(dynamic_path,) + ((prior_path,) if prior_path else ()))
    if not output.name.lower().endswith((".nii.gz", ".nii")):
        # frames are streamed into a NIfTI file; any other extension would name NIfTI bytes wrongly
        raise MrisrInputError(f"{output}: reconstruction writes NIfTI; name the output .nii.gz or .nii")
    status = on_status or (lambda message: None)
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        # header warnings (no orientation, qform/sform disagreement) are reported like the others
        dynamic = load(dynamic_path, lazy=True)
        prior = load(prior_path) if prior_path else None
        rec = Reconstruction(dynamic, prior, options)
        first = next(iter(_first_frame(dynamic)))
        check_frame(first, dynamic_path, 0)
        rec.prepare_prior(first)
    caught += [str(r.message) for r in records]
    for message in caught:
        status(f"warning: {message}")
    # every target, checked against every input (the model too) before any work is done
    inputs = (dynamic_path, prior_path, getattr(rec.model, "path", None))
    for target in (output, sidecar_path(output), *map_paths.values()):
        check_target(target, inputs)
    finetune_info = None
    tuned_path = None
    if options.finetune:
        tuned_path = Path(finetuned_model_path) if finetuned_model_path else output.with_name(
            sidecar_path(output).stem + "_model.safetensors")
        check_target(tuned_path, inputs)
        status(f"fine-tuning on {prior.name if prior else '?'} for up to {options.finetune_minutes:g} min")
        tuned, report = finetune_for(rec, options.finetune_minutes)
        rec.model = tuned
        finetune_info = report.as_dict()
        meta = dict(tuned.meta)
        meta.pop("sha256", None)
        meta.update({"base_model": choose_model_name(options, prior is not None),
                     "base_model_sha256": rec.model.meta.get("sha256"),
                     "planning_sha256": file_sha256(prior_path), "finetune": report.as_dict(timings=False)})
        save_checkpoint(tuned.network, tuned_path, meta)
        status(f"fine-tuned: {report.steps} steps in {report.seconds:.0f} s -> {tuned_path}")
    model_path = getattr(rec.model, "path", None)
    model_hash = "" if rec.model is None else rec.model.meta.get("sha256") or (
        file_sha256(model_path) if model_path else "")
    if tuned_path is not None:
        model_hash = file_sha256(tuned_path)
    seconds: list[float] = []
    wall: list[float] = []  # per frame, reading and writing included (see the sidecar's frame_wall_seconds)
    map_summaries: list[dict] = []
    t_start = time.time()
    t_last = time.perf_counter()
    n_frames = dynamic.n_frames if dynamic.is_4d else None
    with contextlib.ExitStack() as stack:
        # the output is compressed and written while the next frame is reconstructed, for frames up
        # to BACKGROUND_WRITE_VOXELS: above it the worker thread's buffers (its own malloc arena)
        # raise the peak RSS more than the overlap saves, writing being a small share of such a
        # frame's time (benchmarks/RESULTS.md, 'Design decisions and their measurements')
        background = int(np.prod(rec.grid.hr_shape)) <= BACKGROUND_WRITE_VOXELS
        writer = stack.enter_context(FrameWriter(output, dynamic, rec.grid.hr_shape, n_frames,
                                                 affine=rec.grid.hr_affine, tr=dynamic.tr, background=background))
        map_writers = {name: stack.enter_context(FrameWriter(path, dynamic, rec.grid.hr_shape, n_frames,
                                                             affine=rec.grid.hr_affine, tr=dynamic.tr))
                       for name, path in map_paths.items()}
        for result in rec.frames():
            writer.write(result.sr)
            if result.maps is not None:
                for name, map_writer in map_writers.items():
                    map_writer.write(getattr(result.maps, name))
                map_summaries.append({"frame": result.index, **result.maps.summary()})
            seconds.append(round(result.seconds, 4))
            now = time.perf_counter()
            wall.append(now - t_last)
            t_last = now
            if on_frame:
                on_frame(result)
            t_last += time.perf_counter() - now  # the caller's progress display is not the pipeline's time
            # drop this frame before the next is computed (the loop variable would keep it alive),
            # which makes room for the bytes the background writer holds
            del result
    if wall:
        wall[-1] += time.perf_counter() - t_last  # closing the files
    import mrisr

    payload = {
        "GeneratedBy": {"Name": "mrisr", "Version": mrisr.__version__},
        "inputs": {"dynamic": str(dynamic_path.resolve()), "dynamic_sha256": file_sha256(dynamic_path),
                   "prior": str(Path(prior_path).resolve()) if prior_path else None,
                   "prior_sha256": file_sha256(prior_path) if prior_path else None},
        "method": options.method,
        "model": None if rec.model is None else {
            "name": choose_model_name(options, prior is not None), "sha256": model_hash,
            "finetuned": str(tuned_path) if tuned_path else None, "uses_prior": rec.model.uses_prior,
            "compute_dtype": rec.model.compute_dtype(options.precision)},
        "options": options.as_dict(),
        "grid": rec.grid.as_dict(),
        "prior": None if rec.prior is None else {"coverage": round(rec.prior.coverage, 4),
                                                 "intensity_factor": rec.prior.intensity_factor,
                                                 "correlation": round(rec.prior.correlation, 4),
                                                 "contrast": None if rec.prior.contrast is None
                                                 else rec.prior.contrast.describe(),
                                                 "tracking": None if rec.tracker is None else rec.tracker.describe()},
        "finetune": finetune_info,
        "maps": None if not map_paths else {
            "files": {name: path.name for name, path in map_paths.items()},
            "per_frame": map_summaries,
            "max_consistency_nrmse": max((m["consistency_nrmse"] for m in map_summaries), default=None),
        },
        "RepetitionTime": dynamic.tr,
        "frames": dynamic.n_frames,
        "frame_seconds": seconds,
        "frame_wall_seconds": [round(w, 4) for w in wall],
        "total_seconds": round(time.time() - t_start, 3),
        "warnings": caught,
        "torch_threads": _threads(),
        "machine": platform.machine(),
    }
    side = sidecar_path(output)
    write_json_atomic(side, payload)
    method_name = options.method if rec.model is None else payload["model"]["name"]
    return ReconstructionReport(output, side, rec.grid.hr_affine, rec.grid.hr_shape, seconds,
                                method_name, model_hash, tuned_path, options.as_dict(), rec.grid.keep,
                                caught, finetune_info, payload["frame_wall_seconds"])


def _first_frame(dynamic):
    from mrisr.io.stream import iter_frames

    for frame in iter_frames(dynamic):
        yield frame
        return


def _threads() -> int:
    import torch

    return torch.get_num_threads()
