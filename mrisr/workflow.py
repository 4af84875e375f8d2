"""The caller layer: fine-tuning and reconstruction put together once, for every face.

The CLI, the napari plugin, batch processing and the demo call these functions; they sit above
both :mod:`mrisr.reconstruct` and :mod:`mrisr.training`, so neither has to import the other.

* :func:`finetune_model` adapts a prepared reconstruction's model to its planning scan;
* :func:`reconstruct_file` reconstructs a file, fine-tuning first when ``options.finetune`` is on;
* :func:`finetuned_frames` is the in-memory counterpart for the napari plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from mrisr.io.errors import MrisrInputError, UsageError
from mrisr.io.guard import check_target
from mrisr.io.hashing import file_sha256
from mrisr.io.volume import Volume
from mrisr.models.checkpoint import save_checkpoint
from mrisr.reconstruct.options import ReconstructOptions
from mrisr.reconstruct.pipeline import (
    FrameResult,
    ReconstructionState,
    choose_model_name,
    iter_reconstruct,
    prepare_state,
)
from mrisr.reconstruct.run import ReconstructionReport, Tuning, open_file_job, run_file_job
from mrisr.reconstruct.sidecar import sidecar_path

#: the learning rate of fine-tuning (set after any optimiser state is restored)
FINETUNE_LR = 2e-5
#: what every face says when fine-tuning never beat the base model on its held-out pairs
NOT_IMPROVED = "fine-tuning did not improve on the base model; the base model is used"


def finetune_model(state: ReconstructionState, minutes: float, steps: int | None = None, lr: float = FINETUNE_LR,
                   on_progress: Callable | None = None):
    """Fine-tune ``state``'s model on its planning scan (already on the HR grid).

    Args:
        state: from :func:`mrisr.reconstruct.pipeline.prepare_state`, with a planning scan.
        minutes: time budget.
        steps: step budget (whichever ends first), or ``None``.
        lr: learning rate.
        on_progress: called by the training loop with its progress (may raise to stop).

    Returns:
        ``(tuned SRModel, FinetuneReport)`` (:func:`mrisr.training.finetune.finetune`).

    Raises:
        MrisrInputError: no planning scan, or a keyhole method (no model).
    """
    from mrisr.io.geometry import voxel_sizes
    from mrisr.training.finetune import finetune

    if state.prior is None:
        raise UsageError(f"{state.name}: fine-tuning needs the planning scan; pass --prior")
    if state.model is None:
        raise MrisrInputError(f"{state.name}: --method {state.options.method} has no model to fine-tune")
    if state.prior_unfiltered is None:
        raise ValueError("prepare the state with ReconstructOptions(finetune=True): fine-tuning needs the planning "
                         "scan before its noise was shrunk")
    zooms = tuple(float(v) for v in voxel_sizes(state.grid.hr_affine))
    return finetune(state.model, state.prior.data, zooms, state.grid.keep, minutes=minutes, steps=steps, lr=lr,
                    on_progress=on_progress, planning_unfiltered=state.prior_unfiltered)


def reconstruct_file(
    dynamic_path: str | Path,
    output: str | Path | None = None,
    prior_path: str | Path | None = None,
    options: ReconstructOptions | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
    finetuned_model_path: str | Path | None = None,
    on_status: Callable[[str], None] | None = None,
    maps_output: dict[str, Path] | None = None,
    *,
    series: str | None = None,
    prior_series: str | None = None,
    output_format: str = "nifti",
) -> ReconstructionReport:
    """Reconstruct a dynamic series file into ``output`` (default ``<stem>_sr.nii.gz``), streaming;
    with ``options.finetune``, the model is first fine-tuned on the planning scan and saved. When no
    validation beat the base model, :data:`NOT_IMPROVED` is reported, the base model is used, no
    checkpoint is written and the sidecar's ``finetune.improved`` is false.

    The output is written under a temporary name and renamed at the end, so an error or Ctrl-C
    leaves nothing behind; the sidecar (``<output stem>.json``) is written last
    (:func:`mrisr.reconstruct.run.run_file_job`).

    Args:
        dynamic_path: the LR series ``(X, Y, Z[, T])`` (NIfTI, NRRD, MHA, DICOM folder).
        output: ``.nii.gz``/``.nii`` to write; default ``<input>_sr.nii.gz`` next to the input.
        prior_path: the static HR planning scan (3-D), or ``None``.
        options: :class:`~mrisr.reconstruct.ReconstructOptions` (default: all defaults).
        on_frame: called with each :class:`~mrisr.reconstruct.FrameResult` after it is written (progress).
        finetuned_model_path: where ``options.finetune`` keeps the tuned model; default
            ``<output stem>_model.safetensors``.
        on_status: called with one-line messages (warnings, fine-tuning progress).
        maps_output: with ``options.maps``, where to write the maps (``{"disagreement": path,
            "unmeasured": path}``); default beside the output.
        series: which series of a DICOM folder holding several is the dynamic (SeriesInstanceUID,
            number or description); an I/O choice, not a reconstruction option.
        prior_series: the same for the planning scan's folder.
        output_format: ``"nifti"`` (``output`` is a .nii.gz) or ``"dicom"`` (``output`` is a folder
            that receives a derived DICOM series).

    Returns:
        :class:`~mrisr.reconstruct.ReconstructionReport`: output and sidecar paths, HR grid,
        per-frame seconds, model and its SHA-256, warnings.

    Raises:
        MrisrInputError: unreadable inputs, an output that equals an input or cannot be
            written, a non-NIfTI output name, a model that does not fit the inputs.
    """
    options = options or ReconstructOptions()
    job = open_file_job(dynamic_path, output, prior_path, options, on_status, maps_output,
                        series=series, prior_series=prior_series, output_format=output_format)
    tuning = None
    if options.finetune:
        tuned_path = Path(finetuned_model_path) if finetuned_model_path else job.output.with_name(
            sidecar_path(job.output).stem + "_model.safetensors")
        check_target(tuned_path, job.inputs)
        tuning = _finetune_and_save(job.state, job.prior_path, tuned_path, job.status)
    return run_file_job(job, on_frame, tuning)


def _finetune_and_save(state: ReconstructionState, prior_path: Path, tuned_path: Path,
                       status: Callable[[str], None]) -> Tuning:
    options = state.options
    base_sha256 = state.model.meta.get("sha256")
    status(f"fine-tuning on {prior_path.name} for up to {options.finetune_minutes:g} min")
    tuned, report = finetune_model(state, options.finetune_minutes, lr=FINETUNE_LR)
    if not report.improved:
        # no copy of the base weights is written or presented as a tuned model
        status(f"{NOT_IMPROVED} ({report.summary()})")
        return Tuning(state.model, None, report.as_dict())
    meta = dict(tuned.meta)
    meta.pop("sha256", None)
    meta.update({"base_model": choose_model_name(options, True), "base_model_sha256": base_sha256,
                 "planning_sha256": file_sha256(prior_path), "finetune": report.as_dict(timings=False)})
    save_checkpoint(tuned.network, tuned_path, meta)
    status(f"fine-tuned: {report.summary()} -> {tuned_path}")
    return Tuning(tuned, tuned_path, report.as_dict())


class Cancelled(Exception):
    """Raised through the training loop's progress callback when the caller cancels fine-tuning."""


def finetuned_frames(dynamic: Volume, prior: Volume | None, options: ReconstructOptions,
                     cancel: Callable[[], bool]) -> Iterator[str | FrameResult]:
    """In memory (the napari plugin): status lines, then one :class:`~mrisr.reconstruct.FrameResult`
    per frame; with ``options.finetune`` the model is first tuned on the planning scan.

    ``cancel`` is polled between frames and fine-tuning steps; a cancelled run just ends.

    Raises:
        MrisrInputError: fine-tuning without a planning scan, and what
            :func:`mrisr.reconstruct.pipeline.iter_reconstruct` raises.
    """
    model = None
    yield "loading the model"
    if options.finetune:
        if prior is None:
            raise MrisrInputError("fine-tuning needs the planning scan; choose a prior layer or untick fine-tune")
        state = prepare_state(dynamic, prior, options, dynamic.frame(0))
        yield f"fine-tuning on the planning scan for up to {options.finetune_minutes:g} min"

        def stop_if_cancelled(*_progress) -> None:
            if cancel():
                raise Cancelled

        try:
            model, report = finetune_model(state, options.finetune_minutes, lr=FINETUNE_LR,
                                           on_progress=stop_if_cancelled)
        except Cancelled:
            return
        if report.improved:
            yield f"fine-tuned: {report.summary()}"
        else:
            model = None
            yield f"{NOT_IMPROVED} ({report.summary()})"
    yield from iter_reconstruct(dynamic, prior, options, cancel=cancel, model=model)


__all__ = ["FINETUNE_LR", "NOT_IMPROVED", "Cancelled", "finetune_model", "finetuned_frames", "reconstruct_file"]
