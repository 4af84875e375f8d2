"""Bring a planning scan onto the dynamic's HR grid (physical space) and check it fits."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from mrisr.io.errors import MrisrInputError
from mrisr.io.volume import Volume
from mrisr.kspace.band import measured_band, object_mask
from mrisr.reconstruct.contrast import ContrastMap, fit_contrast_map


@dataclass
class PreparedPrior:
    data: np.ndarray  # (X', Y', Z) on the HR grid
    coverage: float  # fraction of the HR field of view the prior covers
    intensity_factor: float  # multiplier that matched the prior to the dynamic's intensities
    correlation: float  # of the prior (at LR resolution) with frame 0
    #: the intensity map to the dynamic's contrast that was fitted (``None``: not asked for);
    #: ``data`` is mapped when ``contrast.applies``
    contrast: ContrastMap | None = None


def resample_to_grid(volume: Volume, shape: tuple[int, int, int], affine: np.ndarray, default: float = 0.0,
                     linear: bool = True) -> np.ndarray:
    """Resample a 3-D volume onto a grid in physical space (SimpleITK, linear)."""
    import SimpleITK as sitk

    from mrisr.io.load import volume_to_sitk

    moving = volume_to_sitk(volume)
    reference = volume_to_sitk(Volume(data=np.zeros(shape, dtype=np.float32), affine=affine))
    out = sitk.Resample(moving, reference, sitk.Transform(), sitk.sitkLinear if linear else sitk.sitkNearestNeighbor,
                        default, sitk.sitkFloat32)
    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(out), (2, 1, 0)))


def prepare_prior(
    prior: Volume,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    sinc_frame0: np.ndarray,
    lr_inplane: tuple[int, int],
    dynamic_name: str = "dynamic",
    match_contrast: bool = False,
) -> PreparedPrior:
    """Resample the planning scan onto the HR grid, check coverage and contrast, match intensity.

    The intensity is matched by one least-squares factor; with ``match_contrast``, a planning scan
    whose intensities are clearly another function of the frame's (another contrast) is mapped
    to the frame's contrast instead (:mod:`mrisr.reconstruct.contrast`).

    Raises:
        MrisrInputError: a 4-D prior, or one that covers less than half of the dynamic's field of view.
    """
    if prior.is_4d:
        raise MrisrInputError(
            f"{prior.name}: the prior is a 4-D series ({prior.n_frames} frames); pass a static 3-D planning scan "
            "(e.g. extract one volume with `fslroi` or nibabel)"
        )
    ones = Volume(data=np.ones(prior.spatial_shape, dtype=np.float32), affine=prior.affine)
    coverage = float(resample_to_grid(ones, shape, affine, linear=False).mean())
    if coverage < 0.5:
        raise MrisrInputError(
            f"{prior.name}: field of view covers only {coverage:.0%} of {dynamic_name}'s; pass a planning scan of the "
            "same region (check the orientation / headers) or run without --prior"
        )
    if coverage < 0.95:
        warnings.warn(
            f"{prior.name}: covers {coverage:.0%} of {dynamic_name}'s field of view; the uncovered part gets no prior "
            "detail", stacklevel=2,
        )
    data = resample_to_grid(prior, shape, affine)
    # the planning scan as frame 0 sees it, compared in frame 0's object: the same band and object
    # as every other step (mrisr.kspace.band)
    low = measured_band(data, lr_inplane)
    fg = object_mask(sinc_frame0)
    denom = float((low[fg] ** 2).sum())
    factor = float((sinc_frame0[fg] * low[fg]).sum() / denom) if denom > 0 else 1.0
    corr = float(np.corrcoef(low[fg].ravel(), sinc_frame0[fg].ravel())[0, 1]) if fg.sum() > 10 else 0.0
    if not np.isfinite(factor) or factor <= 0:
        raise MrisrInputError(
            f"{prior.name}: intensities do not match {dynamic_name} at all (negative fit); check that the planning "
            "scan is the same subject and contrast"
        )
    if factor > 20 or factor < 0.05:
        warnings.warn(f"{prior.name}: intensity scale differs from {dynamic_name} by {factor:.3g}x; rescaled to match",
                      stacklevel=2)
    data = data * np.float32(factor)
    contrast = fit_contrast_map(data, sinc_frame0, lr_inplane) if match_contrast else None
    if contrast is not None and contrast.applies:
        data = contrast(data)
        warnings.warn(
            f"{prior.name}: its contrast differs from {dynamic_name}'s (an intensity map fits frame 0 with "
            f"{contrast.residual_ratio:.0%} of a global scale's residual); its intensities were mapped to the "
            "dynamic's (option match_contrast; --no-match-contrast on the command line)", stacklevel=2,
        )
    elif corr < 0.5:
        warnings.warn(
            f"{prior.name}: looks different from {dynamic_name} (correlation {corr:.2f} at the dynamic's resolution); "
            "check contrast and registration, or use --prior-mode previous / no prior", stacklevel=2,
        )
    return PreparedPrior(np.ascontiguousarray(data, dtype=np.float32), coverage, factor, corr, contrast)


def select_prior(state, frame: np.ndarray) -> np.ndarray | None:
    """The prior of one frame (a step of :func:`mrisr.reconstruct.pipeline.reconstruct_frame`).

    ``tracked``: the planning scan registered to the frame; ``planning``: the planning scan as it
    is; ``previous`` (step-wise): frame 0 as in ``tracked``, then what the network was given for
    the frame before. The keyhole methods take the registered or the plain planning scan.

    Step-wise, only frame 0 is registered: the planning scan as it is carries the motion between it
    and frame 0 into every later frame, and detail misplaced by 1-2 mm barely changes the measured
    band, so no gate sees it (benchmarks/RESULTS.md, 'Step-wise lever').

    Args:
        state: the :class:`mrisr.reconstruct.pipeline.ReconstructionState` of the series.
        frame: the measured LR frame ``(X, Y, Z)``.

    Returns:
        ``(X', Y', Z)`` float32 on the HR grid, or ``None`` (a model without a prior channel).

    Raises:
        MrisrInputError: a model that needs a prior, without a planning scan.
    """
    model, options = state.model, state.options
    if model is None:  # a keyhole method
        return state.tracker.prior_for(frame) if state.tracker is not None else state.prior.data
    if not model.uses_prior:
        return None
    if state.prior is None:
        raise MrisrInputError(f"{state.name}: the model needs a prior; pass --prior")
    first = state.previous is None
    if state.tracker is not None and (first or options.prior_mode == "tracked"):
        return state.tracker.prior_for(frame)
    if first or options.prior_mode == "planning":
        return state.prior.data
    return state.previous

