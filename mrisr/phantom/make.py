"""The recipe of a dynamic phantom: :func:`make_dynamic` calls one named step per part (motion,
inserted structures, contrast, the HR frames, the planning scan, the LR acquisition)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mrisr.io.volume import Volume
from mrisr.phantom.acquisition import acquire_lr
from mrisr.phantom.checks import check_inputs
from mrisr.phantom.contrast import plan_contrast
from mrisr.phantom.frames import render_frames
from mrisr.phantom.motion import plan_motion, plan_planning_motion, spline_coefficients
from mrisr.phantom.planning import render_planning
from mrisr.phantom.result import DynamicPhantom
from mrisr.phantom.structures import plan_structures

__all__ = ["make_dynamic"]


class RandomStreams(NamedTuple):
    """One independent random stream per random part of a phantom, all from one seed."""

    trace: np.random.Generator
    irregular: np.random.Generator
    planning: np.random.Generator
    contrast: np.random.Generator
    noise: np.random.Generator
    insert: np.random.Generator
    planning_insert: np.random.Generator
    planning_noise: np.random.Generator

    @classmethod
    def from_seed(cls, seed: int) -> RandomStreams:
        # children 0-4 are the streams of phantoms made before inserts existed: same seed, same phantom
        return cls(*(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(8)))


def make_dynamic(
    static: Volume,
    frames: int = 20,
    keep: float = 6.25,
    seed: int = 0,
    tr: float = 0.5,
    motion_mm: float = 4.0,
    contrast: bool = True,
    noise_snr: float | None = None,
    insert: str | None = None,
    planning_insert: str | None = None,
    planning_contrast: str = "same",
    through_plane_mm: float = 0.0,
    planning_noise_snr: float | None = None,
) -> DynamicPhantom:
    """Make a dynamic phantom from one static HR volume.

    Frame ``t`` of ``hr`` is ``warp(static * (1 + 0.4 * c[t] * w), b[t] * B + I[t])`` where
    ``B`` is :func:`mrisr.deform.breathing_field` (largest displacement ``motion_mm``),
    ``b`` the breathing trace, ``I[t]`` a smooth random field drifting slowly over time (up
    to 15 % of ``motion_mm``), ``c`` a gamma-variate uptake curve and ``w`` a smooth
    sphere. Warps use cubic B-splines, so frames are not blurred by the motion. The
    planning scan is the static anatomy at breathing phase 1.0-1.2 plus a random field (up
    to 20 % of ``motion_mm``), without contrast.

    Args:
        static: 3-D HR volume ``(X, Y, Z)`` (any geometry; the sample is
            :func:`mrisr.data.load_sample`).
        frames: number of frames ``T`` (>= 1).
        keep: percentage of k-space kept for ``lr`` (centre block), in ``(0, 100]``.
        seed: seed of every random choice (trace, irregular motion, planning state, contrast
            region, noise, inserted structures).
        tr: time between frames in seconds.
        motion_mm: largest breathing displacement in mm.
        contrast: add contrast uptake (up to +40 % in a sphere).
        noise_snr: complex Gaussian noise added to ``lr`` at this SNR (``None``: no noise).
        insert: ``"needle"``: a needle (2.5 mm signal void) advancing into the tissue, deeper in
            every frame, moving with the tissue; absent from the planning scan. Its core per frame
            is ``insert_mask``.
        planning_insert: ``"needle"``: a needle in the planning scan only (a device withdrawn
            before the series); its site per frame is ``planning_insert_mask``.
        planning_contrast: ``"same"``, or ``"swap"`` for a planning scan of another tissue contrast
            (:func:`mrisr.inserts.swap_contrast`).
        through_plane_mm: largest breathing displacement along the slice axis, in mm.
        planning_noise_snr: complex Gaussian noise of its own added to the planning scan at this
            SNR (a magnitude image, so Rician), as a separately acquired scan has. Without it the
            planning scan and every frame carry the source volume's one noise realisation, which
            rewards any method that copies the planning scan's texture (``None``: no noise).

    Returns:
        :class:`DynamicPhantom` with ``hr`` ``(X, Y, Z, T)``, ``lr`` ``(X', Y', Z, T)`` and
        ``planning`` ``(X, Y, Z)``, all float32.

    Raises:
        MrisrInputError: for a 4-D or unusable source or out-of-range settings.
    """
    check_inputs(static, frames, keep, tr, motion_mm, noise_snr, insert, planning_insert, planning_contrast,
                 through_plane_mm, planning_noise_snr)
    frames = int(frames)
    image = np.asarray(static.data, dtype=np.float32)
    zooms = static.zooms
    streams = RandomStreams.from_seed(seed)

    motion = plan_motion(image.shape, zooms, frames, tr, motion_mm, through_plane_mm, streams.trace, streams.irregular)
    uptake = plan_contrast(image, zooms, frames, tr, contrast, streams.contrast)
    structures = plan_structures(image, zooms, insert, planning_insert, streams.insert, streams.planning_insert)
    # B-spline coefficients are linear in the image: prefilter the static once for frames and planning scan
    coefficients = spline_coefficients(image)

    hr_data, insert_mask, planning_insert_mask = render_frames(image, zooms, coefficients, motion, uptake, structures)
    plan_planning_motion(motion, zooms, motion_mm, streams.planning)
    planning_data, planning_insert_contrast = render_planning(
        image, coefficients, motion.planning_field, planning_contrast, structures.planning_occupancy,
        planning_noise_snr, streams.planning_noise,
    )
    hr = static.with_data(hr_data, tr=float(tr))
    lr, keep_actual = acquire_lr(hr, keep, noise_snr, streams.noise)

    settings = {
        "source": str(static.source) if static.source is not None else None,
        "frames": frames,
        "keep": float(keep),
        "seed": int(seed),
        "tr": float(tr),
        "motion_mm": float(motion_mm),
        "contrast": bool(contrast),
        "noise_snr": None if noise_snr is None else float(noise_snr),
        **structures.settings(insert, planning_insert),
        "planning_contrast": planning_contrast,
        "through_plane_mm": float(through_plane_mm),
        "planning_noise_snr": None if planning_noise_snr is None else float(planning_noise_snr),
    }
    return DynamicPhantom(
        planning=static.with_data(planning_data),
        hr=hr,
        lr=lr,
        keep=float(keep),
        keep_actual=keep_actual,
        breathing=motion.breathing,
        contrast_curve=uptake.curve,
        contrast_weight=uptake.weight,
        planning_phase=motion.planning_phase,
        settings=settings,
        insert_mask=insert_mask,
        planning_insert_mask=planning_insert_mask,
        planning_insert_contrast=planning_insert_contrast,
        _motion=motion,
    )
