"""Dynamic phantoms made from a real static volume: breathing motion, contrast uptake, LR simulation.

:func:`make_dynamic` turns one static HR volume ``(X, Y, Z)`` into

* ``hr``: a 4-D ground truth ``(X, Y, Z, T)`` on the static grid, each frame the static
  anatomy warped by a breathing deformation (plus a small irregular component) and, if
  asked, brightened by contrast uptake in a smooth spherical region;
* ``planning``: the same anatomy at a different motion state (deep inspiration), no
  contrast, the prior a planning scan would give;
* ``lr``: the k-space centre of every ``hr`` frame (``keep`` percent), a genuinely smaller
  in-plane matrix with the coarsened affine, as a scanner would write it.

Phantoms where the prior is wrong (see :mod:`mrisr.inserts`): ``insert="needle"`` advances a
needle into the tissue during the series (absent from the planning scan), ``planning_insert="needle"``
puts one in the planning scan only, ``planning_contrast="swap"`` gives the planning scan another
tissue contrast, ``through_plane_mm`` adds motion along the slice axis. Their masks and reference
contrasts come with the phantom, so :mod:`mrisr.metrics.fidelity` can score any method on them.

Everything is float32 and deterministic for a seed; the global NumPy RNG is never used.

Example:
    >>> from mrisr.data import load_sample
    >>> phantom = make_dynamic(load_sample(), frames=4, keep=6.25, seed=0)  # doctest: +SKIP
    >>> phantom.save("phantom/")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrisr.deform import breathing_field, breathing_trace, smooth_random_field
from mrisr.io.checks import check_fits_memory
from mrisr.io.errors import MrisrInputError
from mrisr.io.guard import check_target
from mrisr.io.volume import Volume
from mrisr.limits import check_frames, check_keep

__all__ = ["DynamicPhantom", "PHANTOM_FILES", "gamma_variate", "make_dynamic", "phantom_paths"]

PHANTOM_FILES = {"planning": "planning.nii.gz", "hr": "dynamic_hr.nii.gz", "lr": "dynamic_lr.nii.gz"}
#: written only for phantoms with inserted structures
INSERT_FILES = {"insert_mask": "insert_mask.nii.gz", "planning_insert_mask": "planning_insert_mask.nii.gz"}
METADATA_FILE = "phantom.json"

#: largest relative intensity increase of the contrast region at the peak of uptake
CONTRAST_PEAK = 0.4
#: irregular (non-breathing) motion, relative to ``motion_mm``
IRREGULAR_FRACTION = 0.15
#: extra random deformation of the planning scan, relative to ``motion_mm``
PLANNING_EXTRA_FRACTION = 0.2


@dataclass
class DynamicPhantom:
    """A dynamic phantom and how it was made.

    Attributes:
        planning: 3-D HR planning scan ``(X, Y, Z)`` (different motion state, no contrast).
        hr: 4-D HR ground truth ``(X, Y, Z, T)``, affine of the static input, TR set.
        lr: 4-D LR series ``(X', Y', Z, T)`` (k-space centre), coarsened affine, TR set.
        keep: requested percentage of k-space kept.
        keep_actual: percentage actually kept by the LR matrix.
        breathing: ``(T,)`` breathing phase per frame in ``[0, 1]`` (1 = full inspiration).
        contrast_curve: ``(T,)`` relative contrast uptake per frame in ``[0, 1]`` (zeros without contrast).
        contrast_weight: ``(X, Y, Z)`` smooth region weight in ``[0, 1]`` in the static anatomy's frame;
            a voxel's intensity is multiplied by ``1 + 0.4 * contrast_curve[t] * weight`` before warping.
        planning_phase: breathing phase of the planning scan.
        settings: the arguments used (seed, frames, tr, motion_mm, contrast, noise_snr, ...).
        insert_mask: ``(X, Y, Z, T)`` bool core of the structure inserted into the frames (absent
            from the planning scan), or None.
        planning_insert_mask: ``(X, Y, Z, T)`` bool site, in each frame, of the structure only the
            planning scan has (where the motion carries it), or None.
        planning_insert_contrast: that structure's contrast in the planning scan
            (:func:`mrisr.metrics.structure_contrast`), the denominator of its leakage.
    """

    planning: Volume
    hr: Volume
    lr: Volume
    keep: float
    keep_actual: float
    breathing: np.ndarray
    contrast_curve: np.ndarray
    contrast_weight: np.ndarray
    planning_phase: float
    settings: dict = field(default_factory=dict)
    insert_mask: np.ndarray | None = None
    planning_insert_mask: np.ndarray | None = None
    planning_insert_contrast: float | None = None
    _motion: dict = field(default_factory=dict, repr=False)

    def frame_displacement(self, t: int) -> np.ndarray:
        """``(3, X, Y, Z)`` pull-back displacement (voxels) of frame ``t`` from the static anatomy."""
        return _frame_displacement(self._motion, float(self.breathing[t]), t)

    def tracking_displacement(self, t: int, iterations: int = 8) -> np.ndarray:
        """The displacement ``u`` (voxels) with ``planning(x + u(x)) = hr_t(x)``: what a registration
        of the planning scan to frame ``t`` should find (fixed point of ``u = D_t(x) - P(x + u)``)."""
        from mrisr.deform import warp

        target = self.frame_displacement(t)
        planning_field = self._motion["planning_field"]
        u = target - planning_field
        for _ in range(iterations):
            shifted = np.stack([warp(planning_field[a], u) for a in range(3)])
            u = target - shifted
        return u.astype(np.float32)

    @property
    def tr(self) -> float:
        return float(self.hr.tr)

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``planning.nii.gz``, ``dynamic_hr.nii.gz``, ``dynamic_lr.nii.gz`` and ``phantom.json``.

        Each image keeps its own geometry (``lr`` its coarsened affine) and the 4-D files carry TR.

        Returns:
            ``{"planning": ..., "hr": ..., "lr": ..., "metadata": ...}`` paths.
        """
        from mrisr.io.save import save_like

        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MrisrInputError(
                f"{directory}: cannot create output folder ({exc.strerror}); choose a writable location"
            ) from None
        paths = phantom_paths(directory, self.insert_mask is not None, self.planning_insert_mask is not None)
        for path in paths.values():
            check_target(path)  # all of them before the first is written
        written: list[Path] = []
        try:
            save_like(paths["planning"], self.planning.data, self.planning)
            written.append(paths["planning"])
            save_like(paths["hr"], self.hr.data, self.hr, tr=self.tr)
            written.append(paths["hr"])
            save_like(paths["lr"], self.lr.data, self.lr, affine=self.lr.affine, tr=self.tr)
            written.append(paths["lr"])
            if self.insert_mask is not None:
                save_like(paths["insert_mask"], self.insert_mask.astype(np.uint8), self.hr, tr=self.tr, dtype=np.uint8)
                written.append(paths["insert_mask"])
            if self.planning_insert_mask is not None:
                save_like(paths["planning_insert_mask"], self.planning_insert_mask.astype(np.uint8), self.hr,
                          tr=self.tr, dtype=np.uint8)
                written.append(paths["planning_insert_mask"])
            self._save_metadata(paths)
        except BaseException:
            # a phantom is its files together: none is left when one cannot be written (disk full)
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return paths

    def _save_metadata(self, paths: dict[str, Path]) -> None:
        meta = {
            "files": {key: path.name for key, path in paths.items() if key != "metadata"},
            "keep_requested": self.keep,
            "keep_actual": self.keep_actual,
            "tr_s": self.tr,
            "hr_shape": list(self.hr.data.shape),
            "lr_shape": list(self.lr.data.shape),
            "planning_phase": self.planning_phase,
            "breathing": [round(float(v), 6) for v in self.breathing],
            "contrast_curve": [round(float(v), 6) for v in self.contrast_curve],
            "settings": self.settings,
        }
        if self.planning_insert_contrast is not None:
            meta["planning_insert_contrast"] = round(float(self.planning_insert_contrast), 6)
        from mrisr.io.guard import partial_file
        from mrisr.io.save import _publish

        tmp = partial_file(paths["metadata"])
        try:
            tmp.write_text(json.dumps(meta, indent=2))
            _publish(tmp, paths["metadata"])
        finally:
            tmp.unlink(missing_ok=True)


def phantom_paths(directory: str | Path, insert_mask: bool = False, planning_insert_mask: bool = False) -> dict[str, Path]:
    """The files :meth:`DynamicPhantom.save` writes into ``directory``: planning, hr, lr, the insert
    masks (when there are inserts) and the metadata."""
    directory = Path(directory)
    paths = {key: directory / name for key, name in PHANTOM_FILES.items()}
    if insert_mask:
        paths["insert_mask"] = directory / INSERT_FILES["insert_mask"]
    if planning_insert_mask:
        paths["planning_insert_mask"] = directory / INSERT_FILES["planning_insert_mask"]
    paths["metadata"] = directory / METADATA_FILE
    return paths


def gamma_variate(times: np.ndarray, onset: float, time_to_peak: float, alpha: float = 3.0) -> np.ndarray:
    """Gamma-variate uptake normalised to peak 1 at ``onset + time_to_peak`` (0 before ``onset``).

    ``c(t) = (s ** alpha) * exp(alpha * (1 - s))`` with ``s = (t - onset) / time_to_peak``.
    """
    s = np.clip((np.asarray(times, dtype=np.float64) - onset) / time_to_peak, 0.0, None)
    return (s**alpha * np.exp(alpha * (1.0 - s))).astype(np.float32)


def _smooth_noise(n: int, knot_every: float, rng: np.random.Generator) -> np.ndarray:
    """``(n,)`` smooth random values in ``[-1, 1]``: random knots every ``knot_every`` samples, linear in between."""
    n_knots = int(np.ceil(max(n - 1, 1) / knot_every)) + 1
    knots = rng.uniform(-1.0, 1.0, n_knots)
    return np.interp(np.arange(n), np.arange(n_knots) * knot_every, knots)


def _contrast_region(static: np.ndarray, zooms: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Smooth spherical weight ``(X, Y, Z)`` in ``[0, 1]``, centred on a random bright voxel near the middle."""
    shape = static.shape
    fov = np.asarray(shape) * np.asarray(zooms)
    radius = float(np.clip(0.12 * min(fov[0], fov[1]), 4.0 * max(zooms), 25.0))
    central = np.zeros(shape, dtype=bool)
    central[tuple(slice(n // 4, n - n // 4) if n >= 4 else slice(None) for n in shape)] = True
    bright = static > np.percentile(static[central], 60)
    candidates = np.argwhere(bright & central)
    if len(candidates) == 0:
        candidates = np.argwhere(central)
    centre = candidates[rng.integers(len(candidates))]
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    dist2 = sum(((g - c) * z) ** 2 for g, c, z in zip(grids, centre, zooms))
    edge = 0.25 * radius
    # logistic edge: 1 inside, 0 outside, smooth over ~a quarter radius
    return (1.0 / (1.0 + np.exp((np.sqrt(dist2) - radius) / edge))).astype(np.float32)


def _check_inputs(
    static: Volume, frames: int, keep: float, tr: float, motion_mm: float, noise_snr: float | None,
    insert: str | None = None, planning_insert: str | None = None, planning_contrast: str = "same",
    through_plane_mm: float = 0.0, planning_noise_snr: float | None = None,
) -> None:
    from mrisr.inserts import INSERTS, PLANNING_CONTRASTS

    if planning_noise_snr is not None and not planning_noise_snr > 0:
        raise MrisrInputError(f"planning_noise_snr={planning_noise_snr}: must be > 0 (or None for no noise)")

    name = static.name
    for option, value in (("insert", insert), ("planning_insert", planning_insert)):
        if value is not None and value not in INSERTS:
            raise MrisrInputError(f"{option}={value!r}: unknown structure; choose one of {', '.join(INSERTS)}")
    if planning_contrast not in PLANNING_CONTRASTS:
        raise MrisrInputError(
            f"planning_contrast={planning_contrast!r}: choose one of {', '.join(PLANNING_CONTRASTS)}"
        )
    if not (0 <= through_plane_mm <= 50):
        raise MrisrInputError(f"through_plane_mm={through_plane_mm}: must be in [0, 50] mm, e.g. 3")
    if static.is_4d:
        raise MrisrInputError(
            f"{name}: source is 4-D {tuple(static.data.shape)}; a phantom needs one static 3-D volume (X, Y, Z); "
            "pass a 3-D image or extract one frame first"
        )
    if min(static.spatial_shape) < 2:
        raise MrisrInputError(
            f"{name}: volume of shape {static.spatial_shape} is too small; every axis needs >= 2 voxels"
        )
    if int(frames) != frames or frames < 1:
        raise MrisrInputError(f"frames={frames}: must be an integer >= 1, e.g. 20")
    check_frames(int(frames), "frames")
    check_keep(keep, "keep", inplane=static.spatial_shape[:2])
    # the HR series is held whole (float32), with a warped frame and its LR copy beside it
    voxels = float(np.prod(static.spatial_shape, dtype=np.float64))
    check_fits_memory(voxels * 4 * (int(frames) * 1.1 + 8), f"{name}: a {frames}-frame phantom of {static.spatial_shape}",
                      "make fewer frames or crop the source")
    if not tr > 0:
        raise MrisrInputError(f"tr={tr}: must be > 0 seconds, e.g. 0.5")
    if not motion_mm >= 0:
        raise MrisrInputError(f"motion_mm={motion_mm}: must be >= 0 mm, e.g. 4")
    if noise_snr is not None and not noise_snr > 0:
        raise MrisrInputError(f"noise_snr={noise_snr}: must be > 0 (or None for no noise)")
    data = np.asarray(static.data)
    if not np.isfinite(data).all():
        raise MrisrInputError(f"{name}: source contains NaN/Inf voxels; replace them (e.g. with 0) first")
    if not np.any(data):
        raise MrisrInputError(f"{name}: source is all zero; check that the right file was given")


def _frame_displacement(motion: dict, phase: float, t: int) -> np.ndarray:
    """Breathing at ``phase`` plus frame ``t``'s irregular motion, ``(3, X, Y, Z)`` float32 voxels."""
    displacement = np.float32(phase) * motion["unit_breath"]
    for weight, irregular in zip(motion["irregular_weights"][t], motion["irregular_fields"]):
        displacement += np.float32(weight) * irregular
    return displacement


def _warp_prefiltered(coefficients: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """Cubic pull-back warp of B-spline coefficients (already spline-filtered, mode ``nearest``)."""
    grids = np.ogrid[tuple(slice(0, n) for n in coefficients.shape)]
    coords = np.empty(displacement.shape, dtype=np.float64)
    for axis in range(3):
        np.add(displacement[axis], grids[axis], out=coords[axis])
    return ndimage.map_coordinates(coefficients, coords, order=3, mode="nearest", prefilter=False, output=np.float32)


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
    from mrisr.inserts import needle_occupancy, plan_needle, swap_contrast, warp_mask
    from mrisr.kspace.simulate import simulate_volume

    _check_inputs(static, frames, keep, tr, motion_mm, noise_snr, insert, planning_insert, planning_contrast,
                  through_plane_mm, planning_noise_snr)
    frames = int(frames)
    image = np.asarray(static.data, dtype=np.float32)
    shape = image.shape
    zooms = static.zooms
    # children 0-4 are the streams of phantoms made before inserts existed: same seed, same phantom
    (trace_rng, irregular_rng, planning_rng, contrast_rng, noise_rng, insert_rng, planning_insert_rng,
     planning_noise_rng) = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(8))

    breathing = breathing_trace(frames, tr, trace_rng)
    unit_breath = breathing_field(shape, zooms, amplitude_mm=motion_mm)
    if through_plane_mm > 0:
        taper_mm = breathing_field(shape, zooms, amplitude_mm=1.0, expansion=0.0)[1] * np.float32(zooms[1])
        unit_breath[2] += taper_mm * np.float32(through_plane_mm / zooms[2])

    # irregular motion: two smooth random fields mixed with weights that drift over ~2 s
    irregular_max = IRREGULAR_FRACTION * motion_mm / np.sqrt(2.0)
    irregular_fields = [smooth_random_field(shape, zooms, irregular_max, irregular_rng) for _ in range(2)]
    knot_every = max(1.0, 2.0 / tr)
    irregular_weights = np.stack([_smooth_noise(frames, knot_every, irregular_rng) for _ in range(2)], axis=1)

    times = np.arange(frames, dtype=np.float64) * tr
    duration = max(frames * tr, tr)
    if contrast:
        contrast_curve = gamma_variate(times, onset=0.1 * duration, time_to_peak=0.4 * duration)
        contrast_weight = _contrast_region(image, zooms, contrast_rng)
    else:
        contrast_curve = np.zeros(frames, dtype=np.float32)
        contrast_weight = np.zeros(shape, dtype=np.float32)

    needle = plan_needle(image, zooms, insert_rng) if insert else None
    # B-spline coefficients are linear in the image: prefilter the static and its enhancement once
    base_coef = ndimage.spline_filter(image, order=3, mode="nearest", output=np.float32)
    enhance_coef = (
        ndimage.spline_filter(image * (CONTRAST_PEAK * contrast_weight), order=3, mode="nearest", output=np.float32)
        if contrast
        else None
    )
    motion = {"unit_breath": unit_breath, "irregular_fields": irregular_fields,
              "irregular_weights": irregular_weights}

    # the planning-only needle, in the static anatomy (its own random stream: planned here or later alike)
    planning_needle = plan_needle(image, zooms, planning_insert_rng) if planning_insert else None
    planning_occupancy = (needle_occupancy(shape, zooms, planning_needle, planning_needle.max_depth_mm)
                          if planning_needle is not None else None)

    hr_data = np.empty((*shape, frames), dtype=np.float32)
    insert_mask = np.zeros((*shape, frames), dtype=bool) if needle else None
    planning_insert_mask = np.zeros((*shape, frames), dtype=bool) if planning_needle else None
    for t in range(frames):
        displacement = _frame_displacement(motion, float(breathing[t]), t)
        if planning_occupancy is not None:
            # where the motion carries the site of the needle only the planning scan has
            planning_insert_mask[..., t] = warp_mask(planning_occupancy, displacement)
        if needle is not None:
            occupancy = needle_occupancy(shape, zooms, needle, needle.max_depth_mm * (t + 1) / frames)
            enhanced = image * (1.0 + np.float32(contrast_curve[t]) * CONTRAST_PEAK * contrast_weight)
            coef = ndimage.spline_filter(enhanced * (1.0 - occupancy), order=3, mode="nearest", output=np.float32)
            insert_mask[..., t] = warp_mask(occupancy, displacement)
        else:
            coef = base_coef if enhance_coef is None else base_coef + np.float32(contrast_curve[t]) * enhance_coef
        hr_data[..., t] = np.clip(_warp_prefiltered(coef, displacement), 0.0, None)

    planning_phase = float(planning_rng.uniform(1.0, 1.2))
    planning_field = planning_phase * unit_breath + smooth_random_field(
        shape, zooms, PLANNING_EXTRA_FRACTION * motion_mm, planning_rng
    )
    motion["planning_field"] = planning_field
    planning_source = swap_contrast(image) if planning_contrast == "swap" else image
    if planning_occupancy is not None:
        planning_source = planning_source * (1.0 - planning_occupancy)
    planning_coef = (base_coef if planning_source is image
                     else ndimage.spline_filter(planning_source, order=3, mode="nearest", output=np.float32))
    planning_data = np.clip(_warp_prefiltered(planning_coef, planning_field), 0.0, None)
    planning_insert_contrast = None
    if planning_occupancy is not None:
        from mrisr.metrics.fidelity import structure_contrast

        planning_insert_contrast = structure_contrast(planning_data, warp_mask(planning_occupancy, planning_field))

    if planning_noise_snr is not None:
        from mrisr.kspace.functional import add_complex_noise

        planning_data = np.abs(add_complex_noise(planning_data, float(planning_noise_snr),
                                                 planning_noise_rng)).astype(np.float32)
    planning = static.with_data(planning_data)
    hr = static.with_data(hr_data, tr=float(tr))
    noise_seed = int(noise_rng.integers(2**31))
    lr, info = simulate_volume(hr, keep, mode="center", zero_fill=False, noise_snr=noise_snr, seed=noise_seed)
    lr.tr = float(tr)
    settings = {
        "source": str(static.source) if static.source is not None else None,
        "frames": frames,
        "keep": float(keep),
        "seed": int(seed),
        "tr": float(tr),
        "motion_mm": float(motion_mm),
        "contrast": bool(contrast),
        "noise_snr": None if noise_snr is None else float(noise_snr),
        "insert": None if needle is None else {"kind": insert, **needle.as_dict()},
        "planning_insert": None if planning_needle is None else {"kind": planning_insert, **planning_needle.as_dict()},
        "planning_contrast": planning_contrast,
        "through_plane_mm": float(through_plane_mm),
        "planning_noise_snr": None if planning_noise_snr is None else float(planning_noise_snr),
    }
    return DynamicPhantom(
        planning=planning,
        hr=hr,
        lr=lr,
        keep=float(keep),
        keep_actual=float(info.keep_actual),
        breathing=breathing,
        contrast_curve=contrast_curve,
        contrast_weight=contrast_weight,
        planning_phase=planning_phase,
        settings=settings,
        insert_mask=insert_mask,
        planning_insert_mask=planning_insert_mask,
        planning_insert_contrast=planning_insert_contrast,
        _motion=motion,
    )
