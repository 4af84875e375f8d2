"""File-level reconstruction: stream frames from disk to disk and write a JSON sidecar.

Two halves, so that the caller layer (:func:`mrisr.workflow.reconstruct_file`) can fine-tune the
model in between without this layer importing training: :func:`open_file_job` checks the targets,
reads the inputs (frame 0 once) and prepares the per-frame state
(:func:`mrisr.reconstruct.pipeline.prepare_state`); :func:`run_file_job` streams every frame through
:func:`mrisr.reconstruct.pipeline.reconstruct_frame` into the output and writes the sidecar.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrisr.io import FrameWriter, check_writable, load
from mrisr.io.errors import MrisrInputError
from mrisr.io.guard import check_target
from mrisr.io.hashing import file_sha256
from mrisr.io.jsonio import write_json_atomic
from mrisr.io.load import check_frame
from mrisr.io.stream import iter_frames
from mrisr.io.volume import Volume
from mrisr.reconstruct.options import ReconstructOptions
from mrisr.reconstruct.pipeline import FrameResult, ReconstructionState, prepare_state, reconstruct_frames
from mrisr.reconstruct.sidecar import build_sidecar, maps_paths, sidecar_path

#: HR frames up to this many voxels are written by a background thread (see :func:`run_file_job`)
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


@dataclass
class Tuning:
    """A model fine-tuned by the caller layer before the frames are streamed.

    Attributes:
        model: the tuned :class:`~mrisr.models.SRModel`, used for every frame.
        path: the checkpoint it was saved to (``None``: not saved, the base model kept).
        report: the sidecar's ``finetune`` entry.
    """

    model: object
    path: Path | None
    report: dict


@dataclass
class FileJob:
    """A file reconstruction opened by :func:`open_file_job`: inputs read, targets checked, state prepared."""

    dynamic_path: Path
    prior_path: Path | None
    output: Path
    map_paths: dict[str, Path]
    dynamic: Volume
    prior: Volume | None
    state: ReconstructionState
    #: the frames from frame 1 on (frame 0 was read once, to prepare the prior, and is kept here)
    first_frame: np.ndarray | None
    rest: Iterator[np.ndarray]
    warnings: list[str]
    status: Callable[[str], None]
    #: ``"nifti"`` (a .nii.gz file) or ``"dicom"`` (a folder holding a derived DICOM series)
    output_format: str = "nifti"

    @property
    def inputs(self) -> tuple[Path | None, ...]:
        """Every file the outputs must not replace (the model's checkpoint too)."""
        return (self.dynamic_path, self.prior_path, getattr(self.state.model, "path", None))

    def frames(self) -> Iterator[np.ndarray]:
        first, self.first_frame = self.first_frame, None
        if first is not None:
            yield first
            del first
        yield from self.rest


#: what ``output_format`` may be: a NIfTI file, or a folder holding a derived DICOM series
OUTPUT_FORMATS = ("nifti", "dicom")


def default_output(dynamic_path: str | Path, output_format: str = "nifti") -> Path:
    """``scan.nii.gz`` -> ``scan_sr.nii.gz`` next to the input (``scan_sr/``, a folder, for DICOM)."""
    from mrisr.io.load import image_stem

    path = Path(dynamic_path)
    return path.with_name(image_stem(path) + ("_sr" if output_format == "dicom" else "_sr.nii.gz"))


def open_file_job(dynamic_path: str | Path, output: str | Path | None = None, prior_path: str | Path | None = None,
                  options: ReconstructOptions | None = None, on_status: Callable[[str], None] | None = None,
                  maps_output: dict[str, Path] | None = None, *, series: str | None = None,
                  prior_series: str | None = None, output_format: str = "nifti") -> FileJob:
    """Check the targets, read the inputs and prepare the per-frame state of a file reconstruction.

    ``series`` and ``prior_series`` pick a series of a DICOM folder that holds several
    (SeriesInstanceUID, number or description); ``output_format="dicom"`` makes ``output`` a folder
    that receives a derived DICOM series (:class:`mrisr.io.dicom_write.DicomSeriesWriter`).

    Header warnings (no orientation, qform/sform disagreement) and the state's warnings are
    collected for the sidecar and reported through ``on_status`` as ``warning: ...``.

    Raises:
        MrisrInputError: unreadable inputs, an output that equals an input or cannot be written,
            a non-NIfTI output name, a model that does not fit the inputs, a bad frame 0.
    """
    options = options or ReconstructOptions()
    dynamic_path = Path(dynamic_path)
    prior_path = Path(prior_path) if prior_path else None
    if output_format not in OUTPUT_FORMATS:
        raise MrisrInputError(f"--output-format {output_format}: choose one of {', '.join(OUTPUT_FORMATS)}")
    output = Path(output) if output is not None else default_output(dynamic_path, output_format)
    map_paths = {name: Path(path) for name, path in (maps_output or maps_paths(output)).items()} if options.maps else {}
    given = (dynamic_path,) + ((prior_path,) if prior_path else ())
    for target in map_paths.values():
        check_writable(target, inputs=given)
    if output_format == "dicom":
        from mrisr.io.dicom_write import check_dicom_target

        check_dicom_target(output, inputs=given)
    else:
        check_writable(output, inputs=given)
    if output_format == "nifti" and not output.name.lower().endswith((".nii.gz", ".nii")):
        # frames are streamed into a NIfTI file; any other extension would name NIfTI bytes wrongly
        raise MrisrInputError(f"{output}: reconstruction writes NIfTI; name the output .nii.gz or .nii")
    status = on_status or (lambda message: None)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        dynamic = load(dynamic_path, lazy=True, series=series)
        prior = load(prior_path, series=prior_series) if prior_path else None
        rest = iter(iter_frames(dynamic))
        first = next(rest)
        check_frame(first, dynamic_path, 0)
        state = prepare_state(dynamic, prior, options, first)
    caught = [str(r.message) for r in records]
    for message in caught:
        status(f"warning: {message}")
    job = FileJob(dynamic_path, prior_path, output, map_paths, dynamic, prior, state, first, rest, caught, status,
                  output_format)
    # every target, checked against every input (the model too) before any work is done
    for target in (output, sidecar_path(output), *map_paths.values()):
        check_target(target, job.inputs)
    return job


def run_file_job(job: FileJob, on_frame: Callable[[FrameResult], None] | None = None,
                 tuning: Tuning | None = None) -> ReconstructionReport:
    """Stream every frame of ``job`` into its output (and maps), then write the sidecar.

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
        job: from :func:`open_file_job`.
        on_frame: called with each :class:`FrameResult` after it is written (progress).
        tuning: the model the caller fine-tuned (replaces the state's model).
    """
    state, dynamic = job.state, job.dynamic
    if tuning is not None:
        state.model = tuning.model
    seconds: list[float] = []
    wall: list[float] = []  # per frame, reading and writing included (see the sidecar's frame_wall_seconds)
    map_summaries: list[dict] = []
    t_start = time.time()
    t_last = time.perf_counter()
    n_frames = dynamic.n_frames if dynamic.is_4d else None
    grid = state.grid
    with contextlib.ExitStack() as stack:
        # the output is compressed and written while the next frame is reconstructed, for frames up
        # to BACKGROUND_WRITE_VOXELS: above that the writer thread's buffers raised the peak memory
        # more than the overlap saves (benchmarks/RESULTS.md, 'Memory')
        background = int(np.prod(grid.hr_shape)) <= BACKGROUND_WRITE_VOXELS
        if job.output_format == "dicom":
            from mrisr.io.dicom_write import DicomSeriesWriter

            # the same inputs and options give the same UIDs (a rerun replaces, never duplicates, in a PACS)
            seed = f"{job.dynamic_path.resolve()}|{job.prior_path}|{state.options.as_dict()}|{job.output.name}"
            writer = stack.enter_context(DicomSeriesWriter(job.output, dynamic, grid.hr_shape, n_frames,
                                                           affine=grid.hr_affine, tr=dynamic.tr, uid_seed=seed))
        else:
            writer = stack.enter_context(FrameWriter(job.output, dynamic, grid.hr_shape, n_frames,
                                                     affine=grid.hr_affine, tr=dynamic.tr, background=background))
        map_writers = {name: stack.enter_context(FrameWriter(path, dynamic, grid.hr_shape, n_frames,
                                                             affine=grid.hr_affine, tr=dynamic.tr))
                       for name, path in job.map_paths.items()}
        for result in reconstruct_frames(state, job.frames(), str(job.dynamic_path)):
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
    model_hash = _model_hash(state, tuning)
    payload = build_sidecar(job, model_hash=model_hash, tuning=tuning, map_summaries=map_summaries,
                            frame_seconds=seconds, frame_wall_seconds=wall, total_seconds=time.time() - t_start)
    side = sidecar_path(job.output)
    write_json_atomic(side, payload)
    options = state.options
    method_name = options.method if state.model is None else payload["model"]["name"]
    return ReconstructionReport(job.output, side, grid.hr_affine, grid.hr_shape, seconds,
                                method_name, model_hash, None if tuning is None else tuning.path, options.as_dict(),
                                grid.keep, job.warnings, None if tuning is None else tuning.report,
                                payload["frame_wall_seconds"])


def _model_hash(state: ReconstructionState, tuning: Tuning | None) -> str:
    if tuning is not None and tuning.path is not None:
        return file_sha256(tuning.path)
    model = state.model
    if model is None:
        return ""
    path = getattr(model, "path", None)
    return model.meta.get("sha256") or (file_sha256(path) if path else "")
