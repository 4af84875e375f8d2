"""The per-frame pipeline: one frame in, one super-resolved frame out.

:func:`prepare_state` builds, once per series, everything that does not change from frame to frame
(the HR grid, the model, the planning scan on that grid, the motion tracker);
:func:`reconstruct_frame` then runs the steps of one frame in order. File streaming
(:func:`mrisr.reconstruct.run.run_file_job`), in-memory series (:func:`iter_reconstruct`), the
napari plugin and the coming inline server all call these two functions, so every face
reconstructs a frame the same way.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from mrisr.io.checks import check_fits_memory
from mrisr.io.errors import MrisrInputError, UsageError
from mrisr.io.load import check_frame
from mrisr.io.stream import iter_frames
from mrisr.io.volume import Volume
from mrisr.reconstruct.change_guard import keep_measured_change
from mrisr.reconstruct.grid import HRGrid, frame_to_grid, plan_grid
from mrisr.reconstruct.keyhole import REGISTERED_METHODS, data_consistency, keyhole
from mrisr.reconstruct.maps import FrameMaps, frame_maps
from mrisr.reconstruct.network_input import form_network_input
from mrisr.reconstruct.options import MAX_INPLANE_FACTOR, ReconstructOptions
from mrisr.reconstruct.prior import PreparedPrior, prepare_prior, select_prior

#: float32 copies of one HR frame a reconstruction holds at once (sinc, prior, SR, network
#: activations of a whole frame): the memory bound checked before the first frame
HR_FRAME_COPIES = 32


@dataclass
class FrameResult:
    """One reconstructed frame.

    Attributes:
        index: the frame's index in the series (0-based).
        total: the number of frames in the series (1 for a 3-D frame).
        sr: ``(X', Y', Z)`` float32 on the HR grid.
        seconds: the frame's reconstruction time (registration, gate, network, maps).
        hr_affine: the HR grid's voxel-to-world affine.
        maps: disagreement / unmeasured maps and residual (only with ``ReconstructOptions.maps``).
    """

    index: int
    total: int
    sr: np.ndarray
    seconds: float
    hr_affine: np.ndarray
    maps: FrameMaps | None = None


@dataclass
class ReconstructionState:
    """What every frame of one series shares, built once by :func:`prepare_state`.

    Attributes:
        name: the dynamic's name (for messages).
        options: the validated options.
        grid: the HR grid.
        model: the network (``None`` for a keyhole method); replace it by a fine-tuned one before
            the first frame if wanted.
        prior: the planning scan on the HR grid, intensity-matched to frame 0 (``None`` without one).
        tracker: the motion tracker that registers the planning scan to each frame (``None`` when
            the method or prior mode does not register).
        sparse_changes: whether the network's input gets the sparse-change step.
        line_changes: whether that step lets elongated pieces of the change become straight tubes.
        total: frames in the series.
        index: the next frame's index.
        previous: step-wise (``prior_mode="previous"``), what the network was given for the last frame.
        prior_denoise: what :func:`mrisr.reconstruct.denoise.shrink_own_noise` measured and did
            (``None``: not asked for, or no planning scan).
        prior_unfiltered: with ``options.finetune``, the prepared planning scan before its noise was
            shrunk (the same array as ``prior.data`` when it was not): fine-tuning splits its noise
            (:mod:`mrisr.training.finetune_check`). ``None`` otherwise, so a series that is not
            tuned does not hold a second copy of the planning scan.
        fft_backend: zero-fill backend of :func:`mrisr.reconstruct.grid.frame_to_grid`
            (``numpy`` only to benchmark against).
    """

    name: str
    options: ReconstructOptions
    grid: HRGrid
    model: object | None
    prior: PreparedPrior | None
    tracker: object | None
    sparse_changes: bool
    total: int
    line_changes: bool = False
    index: int = 0
    previous: np.ndarray | None = None
    prior_denoise: object | None = None
    prior_unfiltered: np.ndarray | None = None
    fft_backend: str = "torch"


def choose_model_name(options: ReconstructOptions, has_prior: bool) -> str:
    """The model ``options.model`` names: ``default`` becomes ``default`` or ``default-noprior``."""
    if str(options.model) == "default":
        return "default" if has_prior else "default-noprior"
    return str(options.model)


def load_model_for(options: ReconstructOptions, has_prior: bool):
    """Load the model the options name, checking it fits the presence of a prior."""
    from mrisr.models import load
    from mrisr.models.predictor import resolve_device

    name = choose_model_name(options, has_prior)
    model = load(name, device=str(resolve_device(options.device)), precision=options.precision)
    if model.uses_prior and not has_prior:
        raise MrisrInputError(
            f"{name}: this model was trained with a prior; pass --prior PLANNING.nii.gz or use --model default-noprior"
        )
    if not model.uses_prior and has_prior:
        warnings.warn(f"{name}: model has no prior channel; the planning scan is only used for the HR grid", stacklevel=2)
    if options.tile is not None:
        model.tile = tuple(options.tile)
    return model


def _plan(dynamic: Volume, prior: Volume | None, options: ReconstructOptions) -> HRGrid:
    try:
        grid = plan_grid(dynamic, prior, options.factor, options.matrix)
    except ValueError as exc:
        raise MrisrInputError(f"{dynamic.name}: {exc}; choose a larger --factor/--matrix") from None
    ratio = max(h / lr for h, lr in zip(grid.hr_shape[:2], grid.lr_shape[:2]))
    if ratio > MAX_INPLANE_FACTOR:
        raise MrisrInputError(
            f"{dynamic.name}: HR grid {'x'.join(str(n) for n in grid.hr_shape)} is {ratio:.0f}x the "
            f"{'x'.join(str(n) for n in grid.lr_shape)} dynamic in-plane, more than {MAX_INPLANE_FACTOR}x; "
            "choose a smaller --matrix or --factor"
        )
    check_fits_memory(
        float(np.prod(grid.hr_shape, dtype=np.float64)) * 4 * HR_FRAME_COPIES,
        f"{dynamic.name}: HR grid {'x'.join(str(n) for n in grid.hr_shape)}",
        "choose a smaller --matrix or --factor",
    )
    return grid


def prepare_state(dynamic: Volume, prior: Volume | None, options: ReconstructOptions | None = None,
                  first_frame: np.ndarray | None = None, model=None) -> ReconstructionState:
    """Everything the frames of ``dynamic`` share: options checked, model, HR grid, prepared prior, tracker.

    Args:
        dynamic: the LR series ``(X, Y, Z[, T])`` (its geometry and frame count; the frames
            themselves are handed to :func:`reconstruct_frame` one by one).
        prior: the static HR planning scan (3-D, any orientation or matrix), or ``None``.
        options: see :class:`ReconstructOptions` (default: all defaults).
        first_frame: frame 0 ``(X, Y, Z)`` when the caller has read it already (the prior is
            matched to it); default: read from ``dynamic``.
        model: an already loaded :class:`~mrisr.models.SRModel` (e.g. a fine-tuned one).

    Returns:
        :class:`ReconstructionState`, at frame 0.

    Raises:
        MrisrInputError: a keyhole method without a planning scan, a model that needs a prior
            without one, a grid that cannot be planned or does not fit in memory, a planning scan
            that does not cover the dynamic.
    """
    options = options or ReconstructOptions()
    options.validate()
    if options.threads:
        import torch

        torch.set_num_threads(int(options.threads))
    is_keyhole = options.method != "network"
    if is_keyhole and prior is None:
        raise UsageError(f"{dynamic.name}: --method {options.method} needs the planning scan; pass --prior")
    if not is_keyhole and model is None:
        model = load_model_for(options, prior is not None)
    model = None if is_keyhole else model
    grid = _plan(dynamic, prior, options)
    keep_range = None if model is None else model.keep_range
    if keep_range and not (keep_range[0] * 0.8 <= grid.keep <= keep_range[1] * 1.2):
        warnings.warn(
            f"{dynamic.name}: the LR matrix is {grid.keep:.2f}% of the HR k-space, outside the "
            f"{keep_range[0]:g}-{keep_range[1]:g}% the model was trained for; results may be poor", stacklevel=2,
        )
    state = ReconstructionState(
        name=dynamic.name, options=options, grid=grid, model=model, prior=None, tracker=None,
        # step-wise, the prior (the previous frame's gated keyhole) is partly blurred where its gate
        # was closed, so its differences from the frame are not sparse (benchmarks/RESULTS.md,
        # 'Design decisions and their measurements')
        sparse_changes=options.sparse_changes and options.prior_mode != "previous",
        total=dynamic.n_frames,
        line_changes=options.line_changes,
    )
    if prior is None:
        return state
    if first_frame is None:
        first_frame = next(iter(iter_frames(dynamic)))
    sinc0 = frame_to_grid(first_frame, grid.hr_inplane, state.fft_backend)
    # the planning scan mapped to the dynamic's contrast: not for the classical keyhole baselines
    match_contrast = options.match_contrast and options.method in ("network", "keyhole-gated")
    state.prior = prepare_prior(prior, grid.hr_shape, grid.hr_affine, sinc0, grid.lr_shape[:2], dynamic.name,
                                match_contrast=match_contrast)
    state.prior_unfiltered = state.prior.data if options.finetune else None
    # the planning scan's own noise shrunk before anything copies or registers it: not for the
    # classical keyhole baselines
    if options.denoise_prior and options.method in ("network", "keyhole-gated"):
        from mrisr.reconstruct.denoise import shrink_own_noise

        state.prior.data, state.prior_denoise = shrink_own_noise(state.prior.data, grid.lr_shape[:2])
    registered = (options.method in REGISTERED_METHODS if is_keyhole
                  else options.prior_mode in ("tracked", "previous") and model.uses_prior)
    if registered:
        from mrisr.models.predictor import resolve_device
        from mrisr.reconstruct.motion import MotionTracker

        device = model.device if model is not None else resolve_device(options.device)
        state.tracker = MotionTracker(state.prior.data, grid.lr_shape, device=device)
    return state


def reconstruct_frame(state: ReconstructionState, frame: np.ndarray) -> FrameResult:
    """Super-resolve the next frame of the series (``state.index``), the steps in order.

    Args:
        state: from :func:`prepare_state`; its ``index`` (and, step-wise, ``previous``) advance.
        frame: the measured LR frame ``(X, Y, Z)``, checked (finite) by the caller.

    Returns:
        :class:`FrameResult`.

    Raises:
        MrisrInputError: a model that needs a prior, without a planning scan.
    """
    start = time.perf_counter()
    options, grid, model = state.options, state.grid, state.model
    network = model is not None
    # 1. the measured frame on the HR grid (in-plane k-space zero-filling)
    sinc = None
    if network or options.method == "keyhole-gated" or options.maps:
        sinc = frame_to_grid(frame, grid.hr_inplane, state.fft_backend)
    # 2. its prior: the planning scan registered to the frame, as it is, or step-wise the last input
    prior = select_prior(state, frame)
    # 3-5. the network's input: the prior matched to the frame, corrected by the sparse change the
    # measured band shows, gated where the frame disagrees (mrisr.reconstruct.network_input)
    formed = None
    if prior is not None and (options.method == "keyhole-gated" or network and model.prior_input == "gated-keyhole"):
        formed = form_network_input(frame, prior, sinc, sparse_changes=state.sparse_changes,
                                    line_changes=state.line_changes)
        if network and not options.maps:
            prior = None  # not needed any more: one HR volume less at the network's memory peak
    # 6. the network, or the keyhole method
    if not network:
        sr = formed.given if formed is not None else keyhole(frame, prior)
    else:
        sr = model.predict(sinc, formed.given if formed is not None else prior, precision=options.precision)
        # 7. the change guard: where the frame measured a change, the network may sharpen it but not undo it
        if formed is not None and formed.change_sign is not None:
            sr = keep_measured_change(sr, formed.given, formed.change_sign, in_place=True)
    # 8. data consistency: the measured centre of k-space put back
    if options.data_consistency:
        sr = data_consistency(sr, frame)
    # step-wise, a gated-keyhole network hands on its input, not its output: the detail the network
    # adds lies outside the measured band, where the next frame's gate cannot check it, so passing
    # it on compounded it (benchmarks/RESULTS.md, 'Step-wise lever'); the gated keyhole carries only
    # detail each frame agreed with
    if network and options.prior_mode == "previous":
        state.previous = formed.given if formed is not None else sr
    # 9. the maps: where the prior disagreed with the frame, what was added to the measured band
    maps = frame_maps(sr, prior, sinc, frame) if options.maps else None
    result = FrameResult(state.index, state.total, sr, time.perf_counter() - start, grid.hr_affine, maps=maps)
    state.index += 1
    return result


def reconstruct_frames(state: ReconstructionState, frames: Iterable[np.ndarray], source: str = "",
                       cancel: Callable[[], bool] | None = None) -> Iterator[FrameResult]:
    """:func:`reconstruct_frame` over ``frames`` in order, each checked first; ``cancel()`` true stops.

    Args:
        state: from :func:`prepare_state`.
        frames: the LR frames ``(X, Y, Z)`` from ``state.index`` on.
        source: the file or name the frames come from (for the one-line error of a bad frame).
        cancel: polled before each frame.
    """
    for frame in frames:
        if cancel is not None and cancel():
            return
        check_frame(frame, source or state.name, state.index)
        yield reconstruct_frame(state, frame)
        # a paused generator keeps its locals: without this the frame just handed out would stay
        # alive through the next frame's network, whatever the caller did with it
        frame = None


def iter_reconstruct(
    dynamic: Volume,
    prior: Volume | None = None,
    options: ReconstructOptions | None = None,
    cancel: Callable[[], bool] | None = None,
    model=None,
) -> Iterator[FrameResult]:
    """Reconstruct a 3-D frame or a 4-D series, yielding one :class:`FrameResult` per frame.

    Args:
        dynamic: the LR series ``(X, Y, Z[, T])`` (lazy volumes are streamed: each frame is read once).
        prior: static HR planning scan (3-D, any orientation or matrix), or None.
        options: see :class:`ReconstructOptions`.
        cancel: polled before each frame; returning True stops cleanly.
        model: an already loaded :class:`~mrisr.models.SRModel` (e.g. a fine-tuned one).

    Yields:
        :class:`FrameResult` per frame: ``sr`` ``(X', Y', Z)`` float32 on the HR grid, its
        ``hr_affine`` and the seconds it took.

    Raises:
        MrisrInputError: a model that needs a prior without one, a grid that cannot be planned,
            a frame with NaN/Inf voxels.
    """
    frames = iter(iter_frames(dynamic))
    first = next(frames)
    check_frame(first, dynamic.source or dynamic.name, 0)
    state = prepare_state(dynamic, prior, options, first, model=model)
    yield from reconstruct_frames(state, _chain_first(first, frames), dynamic.source or dynamic.name, cancel)


def _chain_first(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    del first  # frame 0 is not kept alive through the series
    yield from rest


def reconstruct_volume(dynamic: Volume, prior: Volume | None = None, options: ReconstructOptions | None = None,
                       model=None) -> Volume:
    """Whole series in memory (for small data, notebooks and the napari plugin)."""
    frames, affine = [], None
    for result in iter_reconstruct(dynamic, prior, options, model=model):
        frames.append(result.sr)
        affine = result.hr_affine
    data = np.stack(frames, axis=-1) if dynamic.is_4d else frames[0]
    return dynamic.with_data(data, affine=affine)


__all__ = ["FrameResult", "ReconstructionState", "choose_model_name", "iter_reconstruct", "load_model_for",
           "prepare_state", "reconstruct_frame", "reconstruct_frames", "reconstruct_volume"]
