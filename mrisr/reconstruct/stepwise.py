"""Step-wise temporal reconstruction: frame 0 uses the planning scan as prior, frame t the SR
result of frame t-1. Frames stream through one at a time (memory does not grow with T)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrisr.io.checks import check_fits_memory
from mrisr.io.errors import MrisrInputError
from mrisr.io.load import check_frame
from mrisr.io.stream import iter_frames
from mrisr.io.volume import Volume
from mrisr.kspace.functional import zero_fill
from mrisr.reconstruct.grid import HRGrid, plan_grid
from mrisr.reconstruct.keyhole import REGISTERED_METHODS, gated_keyhole, keep_measured_change, keyhole
from mrisr.reconstruct.maps import FrameMaps, frame_maps
from mrisr.reconstruct.options import (  # noqa: F401  (re-exported: the options lived here)
    MAX_INPLANE_FACTOR,
    PRECISIONS,
    PRIOR_MODES,
    Device,
    Method,
    Precision,
    PriorMode,
    ReconstructOptions,
    check_device,
)
from mrisr.reconstruct.prior import PreparedPrior, prepare_prior

#: float32 copies of one HR frame a reconstruction holds at once (sinc, prior, SR, network
#: activations of a whole frame): the memory bound checked before the first frame
HR_FRAME_COPIES = 32


@dataclass
class FrameResult:
    """One reconstructed frame."""

    index: int
    total: int
    sr: np.ndarray  # (X', Y', Z) float32 on the HR grid
    seconds: float
    hr_affine: np.ndarray
    extra: dict = field(default_factory=dict)
    #: disagreement / unmeasured maps and residual (only with ``ReconstructOptions.maps``)
    maps: FrameMaps | None = None


def data_consistency(sr: np.ndarray, lr_frame: np.ndarray) -> np.ndarray:
    """Replace the central in-plane k-space of ``sr`` by the measured LR frame's k-space
    (a keyhole with the SR frame as the reference, :func:`mrisr.reconstruct.keyhole.keyhole`)."""
    return keyhole(lr_frame, sr)


def frame_to_grid(frame: np.ndarray, hr_inplane: tuple[int, int], backend: str = "torch") -> np.ndarray:
    """An LR frame ``(X, Y, Z)`` on the HR grid by in-plane k-space zero-filling (sinc), float32.

    ``backend="torch"`` (torch.fft, complex64) is about 2.5x faster than ``"numpy"`` on a
    256x256x32 grid and agrees with it within ~1e-6 of the intensity scale (``benchmarks/speed.py``).
    """
    if backend == "numpy":
        return zero_fill(frame, hr_inplane).astype(np.float32, copy=False)
    import torch

    data = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))
    return zero_fill(data, hr_inplane).numpy()


def choose_model_name(options: ReconstructOptions, has_prior: bool) -> str:
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


class Reconstruction:
    """Prepared state of one reconstruction: model, grid and prior (nothing repeated per frame)."""

    def __init__(self, dynamic: Volume, prior: Volume | None, options: ReconstructOptions, model=None) -> None:
        options.validate()
        if options.threads:
            import torch

            torch.set_num_threads(int(options.threads))
        self.dynamic, self.options = dynamic, options
        self.keyhole = options.method != "network"
        if self.keyhole and prior is None:
            raise MrisrInputError(f"{dynamic.name}: --method {options.method} needs the planning scan; pass --prior")
        if self.keyhole:
            self.model = None
        else:
            self.model = model if model is not None else load_model_for(options, prior is not None)
        try:
            self.grid: HRGrid = plan_grid(dynamic, prior, options.factor, options.matrix)
        except ValueError as exc:
            raise MrisrInputError(f"{dynamic.name}: {exc}; choose a larger --factor/--matrix") from None
        ratio = max(h / lr for h, lr in zip(self.grid.hr_shape[:2], self.grid.lr_shape[:2]))
        if ratio > MAX_INPLANE_FACTOR:
            raise MrisrInputError(
                f"{dynamic.name}: HR grid {'x'.join(str(n) for n in self.grid.hr_shape)} is {ratio:.0f}x the "
                f"{'x'.join(str(n) for n in self.grid.lr_shape)} dynamic in-plane, more than {MAX_INPLANE_FACTOR}x; "
                "choose a smaller --matrix or --factor"
            )
        check_fits_memory(
            float(np.prod(self.grid.hr_shape, dtype=np.float64)) * 4 * HR_FRAME_COPIES,
            f"{dynamic.name}: HR grid {'x'.join(str(n) for n in self.grid.hr_shape)}",
            "choose a smaller --matrix or --factor",
        )
        kr = None if self.model is None else self.model.keep_range
        if kr and not (kr[0] * 0.8 <= self.grid.keep <= kr[1] * 1.2):
            warnings.warn(
                f"{dynamic.name}: the LR matrix is {self.grid.keep:.2f}% of the HR k-space, outside the "
                f"{kr[0]:g}-{kr[1]:g}% the model was trained for; results may be poor", stacklevel=2,
            )
        self.prior_raw = prior
        self.prior: PreparedPrior | None = None
        #: zero-fill backend of :func:`frame_to_grid` (``numpy`` only to benchmark against)
        self.fft_backend = "torch"
        self.tracker = None  # the motion tracker of the ``tracked`` prior mode
        #: the gate's sparse change correction: not step-wise, whose prior (the previous frame's
        #: gated keyhole) is partly blurred where its gate was closed, so its differences from the
        #: frame are not sparse (MNI152, 6.25 %, 8 frames, tissue SSIM: 0.885 with it, 0.896 with
        #: the plain gate handed on, 0.900 without it)
        self.sparse_changes = options.sparse_changes and options.prior_mode != "previous"
        #: the planning scan mapped to the dynamic's contrast: not for the classical keyhole baselines
        self.match_contrast = options.match_contrast and options.method in ("network", "keyhole-gated")

    def prepare_prior(self, first_frame: np.ndarray) -> None:
        if self.prior_raw is None:
            return
        sinc0 = frame_to_grid(first_frame, self.grid.hr_inplane, self.fft_backend)
        self.prior = prepare_prior(self.prior_raw, self.grid.hr_shape, self.grid.hr_affine, sinc0,
                                   self.grid.lr_shape[:2], self.dynamic.name, match_contrast=self.match_contrast)
        registered = (self.options.method in REGISTERED_METHODS if self.keyhole
                      else self.options.prior_mode in ("tracked", "previous") and self.model.uses_prior)
        if registered:
            from mrisr.models.predictor import resolve_device
            from mrisr.reconstruct.motion import MotionTracker

            device = self.model.device if self.model is not None else resolve_device(self.options.device)
            self.tracker = MotionTracker(self.prior.data, self.grid.lr_shape, device=device)

    def frames(self, cancel: Callable[[], bool] | None = None) -> Iterator[FrameResult]:
        """Reconstruct the frames in order, one :class:`FrameResult` each (``cancel()`` true stops).

        The prior of frame t: ``tracked``, the planning scan registered to frame t; ``planning``,
        the planning scan; ``previous`` (step-wise), frame 0 as in ``tracked``, then what the
        network was given for frame t-1 (for a gated-keyhole network: that frame's gated keyhole,
        not its output, see below).
        """
        total = self.dynamic.n_frames
        previous: np.ndarray | None = None
        for t, frame in enumerate(iter_frames(self.dynamic)):
            if cancel is not None and cancel():
                return
            check_frame(frame, self.dynamic.source or self.dynamic.name, t)
            start = time.perf_counter()
            if t == 0 and self.prior is None and self.prior_raw is not None:
                self.prepare_prior(frame)
            if self.keyhole:
                reference = self.tracker.prior_for(frame) if self.tracker is not None else self.prior.data
                sinc = None
                if self.options.method == "keyhole-gated" or self.options.maps:
                    sinc = frame_to_grid(frame, self.grid.hr_inplane, self.fft_backend)
                if self.options.method == "keyhole-gated":
                    sr = gated_keyhole(frame, reference, sinc, sparse_changes=self.sparse_changes)
                else:
                    sr = keyhole(frame, reference)
                maps = frame_maps(sr, reference, sinc, frame) if self.options.maps else None
                yield FrameResult(t, total, sr, time.perf_counter() - start, self.grid.hr_affine, maps=maps)
                reference = sinc = sr = maps = None  # the caller may have dropped the frame: so do we
                continue
            sinc = frame_to_grid(frame, self.grid.hr_inplane, self.fft_backend)
            prior = None
            if self.model.uses_prior:
                if self.prior is None:
                    raise MrisrInputError(f"{self.dynamic.name}: the model needs a prior; pass --prior")
                if self.tracker is not None and (previous is None or self.options.prior_mode == "tracked"):
                    # step-wise, only frame 0 is registered: the planning scan as it is carries the
                    # motion between the planning scan and frame 0 into every later frame, and
                    # detail misplaced by 1-2 mm barely changes the measured band, so no gate sees
                    # it. Registered once, the step-wise series stayed above the no-prior model at
                    # all 50 frames on MNI152 and Colin27 at 6.25 % and 4 % (unregistered: below it
                    # at 14-28 of 50 frames; benchmarks/RESULTS.md, "Step-wise lever")
                    prior = self.tracker.prior_for(frame)
                elif previous is None or self.options.prior_mode == "planning":
                    prior = self.prior.data
                else:
                    prior = previous
            if prior is not None and self.model.prior_input == "gated-keyhole":
                given, change = gated_keyhole(frame, prior, sinc, sparse_changes=self.sparse_changes, return_change=True)
                if not self.options.maps:
                    prior = None  # not needed any more: one HR volume less at the network's memory peak
                sr = self.model.predict(sinc, given, formed=True, precision=self.options.precision)
                if change is not None:
                    # where the frame measured a change, the network may sharpen it but not undo it
                    sr = keep_measured_change(sr, given, change, in_place=True)
                change = None
            else:
                given = None
                sr = self.model.predict(sinc, prior, lr_frame=frame, precision=self.options.precision)
            if self.options.data_consistency:
                sr = data_consistency(sr, frame)
            # step-wise, a gated-keyhole network hands on its input, not its output: the detail the
            # network adds lies outside the measured band, where the next frame's gate cannot check
            # it, so passing it on compounded it (over 50 frames the step-wise SR fell far below sinc
            # in tissue, benchmarks/quality.py); the gated keyhole only carries detail each frame agreed with
            if self.options.prior_mode == "previous":  # otherwise not kept: one HR volume less
                previous = given if given is not None else sr
            maps = frame_maps(sr, prior, sinc, frame) if self.options.maps else None
            yield FrameResult(t, total, sr, time.perf_counter() - start, self.grid.hr_affine, maps=maps)
            # a paused generator keeps its locals: without this the frame just handed out stayed
            # alive through the next frame's network, whatever the caller did with it
            sinc = prior = given = sr = maps = None


def iter_reconstruct(
    dynamic: Volume,
    prior: Volume | None = None,
    options: ReconstructOptions | None = None,
    cancel: Callable[[], bool] | None = None,
    model=None,
) -> Iterator[FrameResult]:
    """Reconstruct a 3-D frame or a 4-D series step-wise, yielding one :class:`FrameResult` per frame.

    Args:
        dynamic: the LR series ``(X, Y, Z[, T])`` (lazy volumes are streamed).
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
    rec = Reconstruction(dynamic, prior, options or ReconstructOptions(), model=model)
    yield from rec.frames(cancel)


def reconstruct_volume(dynamic: Volume, prior: Volume | None = None, options: ReconstructOptions | None = None,
                       model=None) -> Volume:
    """Whole series in memory (for small data, notebooks and the napari plugin)."""
    frames, affine = [], None
    for result in iter_reconstruct(dynamic, prior, options, model=model):
        frames.append(result.sr)
        affine = result.hr_affine
    data = np.stack(frames, axis=-1) if dynamic.is_4d else frames[0]
    out = dynamic.with_data(data, affine=affine)
    return out


def default_output(dynamic_path: str | Path) -> Path:
    """``scan.nii.gz`` -> ``scan_sr.nii.gz`` next to the input."""
    from mrisr.io.load import image_stem

    path = Path(dynamic_path)
    return path.with_name(image_stem(path) + "_sr.nii.gz")
