"""Contrast matching: a planning scan of another contrast mapped to the dynamic's intensities.

A planning scan is often not of the dynamic's contrast (a T1-weighted planning scan, T2-weighted
or contrast-enhanced frames). Scaling it by one factor (what :func:`mrisr.reconstruct.prior.prepare_prior`
always does) then leaves its tissue intensities wrong, the tracker registers the wrong edges, and
the gate of :func:`mrisr.reconstruct.keyhole.gated_keyhole` closes almost everywhere: the result is
what the frame measures, no better than the no-prior network.

Where the anatomy is the same, the frame's intensity is close to a function of the planning
scan's. :func:`fit_contrast_map` fits that function ``f`` (piecewise linear, 24 knots at quantiles
of the planning scan's object intensities, ``f(0) = 0``) so that the frame's band of
``f(planning scan)`` matches frame 0's sinc in least squares: ``f(planning scan)`` is linear in the
knots' outputs, so this is one small linear problem, once per series. The map replaces the global
scale only when it leaves at most :data:`CONTRAST_GAIN` of that scale's residual energy: on the
tuning phantoms (MNI152 and Colin27; the held-out real scan was not used to choose) that ratio
falls clearly apart for a planning scan of another contrast and one of the same contrast, and
:data:`CONTRAST_GAIN` lies between the two. The ratios, the fit's cost and the gated keyhole's
tissue SSIM with and without the map are in benchmarks/RESULTS.md ('Fidelity lever: contrast
matching').

The first version fitted the map to the band's intensities directly (the conditional mean of the
sinc in quantile bins of the planning scan's band); it maps a band voxel that mixes two tissues
by their mean intensity, where the truth is the mean of their mapped intensities, and lost to
the HR fit everywhere (benchmarks/RESULTS.md, 'Fidelity lever: contrast matching'). Colin27's
remap is more ambiguous than MNI152's (two of its tissues of different T1 share one remapped
intensity), which no intensity map can undo; the gate then falls back to the measured band there.
A same-contrast planning scan is left exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrisr.kspace.band import OBJECT_LEVEL, frame_high

#: knots of the map (at quantiles of the planning scan's object intensities), besides 0
CONTRAST_KNOTS = 24
#: the map is used when its residual energy is at most this fraction of the best global scale's
CONTRAST_GAIN = 0.6
#: voxels the map is fitted on at most (24 unknowns; bounds the fit's memory on large grids)
CONTRAST_SAMPLES = 100_000
#: ridge towards the identity, relative to the mean diagonal of the normal equations
CONTRAST_RIDGE = 1e-3
#: the object the map is fitted on: frame and band above this fraction of the frame's 99th percentile
#: (the object level every step shares, :data:`mrisr.kspace.band.OBJECT_LEVEL`)
CONTRAST_LEVEL = OBJECT_LEVEL


@dataclass(frozen=True)
class ContrastMap:
    """A piecewise-linear intensity map from the planning scan's intensities to the frame's.

    Between its knots it interpolates linearly; above the last knot it scales by the last knot's
    ratio, below the first, ``(0, 0)``, it gives 0. :func:`fit_contrast_map` puts the last knot at
    the planning scan's brightest voxel, so on the scan it was fitted to the map only interpolates.
    """

    knots_in: np.ndarray
    knots_out: np.ndarray
    #: residual energy of the map over the fitted voxels / that of the best global scale
    residual_ratio: float

    def __call__(self, data: np.ndarray) -> np.ndarray:
        data = np.asarray(data, dtype=np.float32)
        xk, yk = self.knots_in, self.knots_out
        out = np.interp(data, xk, yk).astype(np.float32)
        over = data > xk[-1]
        if over.any():
            out[over] = data[over] * np.float32(yk[-1] / xk[-1])
        return out

    @property
    def applies(self) -> bool:
        """Whether the map fits the frame clearly better than a global scale (:data:`CONTRAST_GAIN`)."""
        return self.residual_ratio <= CONTRAST_GAIN

    def describe(self) -> dict:
        """For the sidecar: whether the map is applied, its residual ratio and its knots (with 0)."""
        return {"applied": self.applies, "residual_ratio": round(self.residual_ratio, 4), "knots": len(self.knots_in)}


def _hat(data: np.ndarray, knots: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th piecewise-linear basis function of :class:`ContrastMap` at ``data``: the weight
    knot ``k``'s output has in the map's value (the last one grows proportionally above the last knot)."""
    left = knots[k - 1] if k > 0 else None
    right = knots[k + 1] if k + 1 < len(knots) else None
    x = knots[k]
    out = np.zeros(data.shape, dtype=np.float32)
    if left is not None:
        rising = (data > left) & (data <= x)
        out[rising] = (data[rising] - left) / (x - left)
    if right is not None:
        falling = (data > x) & (data < right)
        out[falling] = (right - data[falling]) / (right - x)
    else:
        above = data > x
        out[above] = data[above] / x
    return out


def fit_contrast_map(prior: np.ndarray, sinc: np.ndarray, lr_inplane: tuple[int, int],
                     knots: int = CONTRAST_KNOTS) -> ContrastMap:
    """The map ``f`` for which the frame's band of ``f(prior)`` best matches the frame (least squares).

    ``f`` is piecewise linear with knots at quantiles of the prior's object intensities and
    ``f(0) = 0``, so ``f(prior)`` is a linear combination of the knots' basis images and its band
    the same combination of their bands: one least-squares problem (a small ridge towards the
    identity keeps rarely populated knots in place). Fitting the HR intensities through the band,
    rather than the band's intensities directly, models partial volumes right: a band voxel that
    mixes two tissues is the band of their mapped intensities, not the map of their mean.

    Args:
        prior: the planning scan on the HR grid ``(X', Y', Z)``, globally scaled to the frame.
        sinc: the frame zero-filled to the HR grid.
        lr_inplane: the frame's in-plane LR matrix.
        knots: knots of the map besides ``0``.

    Returns:
        The map; :attr:`ContrastMap.applies` says whether to use it. Without an object to fit
        (fewer voxels than 8 per knot) the identity with ratio 1.

    Example:
        >>> prior = np.ones((32, 32, 2), np.float32); prior[8:24, 8:24] = 2; prior[12:16, 12:20] = 3
        >>> frame = np.interp(prior, [0, 1, 2, 3], [0, 3, 1, 2]).astype(np.float32)  # another contrast
        >>> from mrisr.kspace.band import measured_band
        >>> m = fit_contrast_map(prior, measured_band(frame, (16, 16)), (16, 16), knots=8)
        >>> m.applies, bool(np.allclose(m(prior), frame, atol=0.1))
        (True, True)
    """
    import torch

    from mrisr.reconstruct.changes import BandLimit

    prior = np.asarray(prior, dtype=np.float32)
    sinc = np.asarray(sinc, dtype=np.float32)
    identity = ContrastMap(np.array([0.0, 1.0], dtype=np.float32), np.array([0.0, 1.0], dtype=np.float32), 1.0)
    band_limit = BandLimit(prior.shape[:2], lr_inplane)

    def band(image: np.ndarray) -> np.ndarray:
        slices = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return band_limit(slices).numpy().transpose(1, 2, 0)

    level = CONTRAST_LEVEL * frame_high(sinc)
    prior_band = band(prior)
    fitted = np.minimum(prior_band, sinc) > level
    fitted[1::2] = False  # every second voxel in-plane: the fit is over-determined many times
    fitted[:, 1::2] = False
    inside = prior[prior > 0.5 * level]
    if fitted.sum() < 8 * knots or inside.size < knots:
        return identity
    xk = np.unique(np.concatenate([[0.0], np.quantile(inside, np.linspace(0.0, 1.0, knots))])).astype(np.float32)
    if len(xk) < 3 or xk[1] <= 0:
        return identity
    where = np.flatnonzero(fitted)
    where = where[:: -(-where.size // CONTRAST_SAMPLES)]  # at most CONTRAST_SAMPLES, spread evenly
    columns = np.stack([band(_hat(prior, xk, k)).ravel()[where] for k in range(1, len(xk))], axis=1).astype(np.float64)
    y = sinc.ravel()[where].astype(np.float64)
    gram, rhs = columns.T @ columns, columns.T @ y
    ridge = CONTRAST_RIDGE * float(np.trace(gram)) / len(gram)
    yk = np.linalg.solve(gram + ridge * np.eye(len(gram)), rhs + ridge * xk[1:].astype(np.float64))
    yk = np.maximum(yk, 0.0)  # intensities are not negative; the ratio is the applied map's
    mapped = float(((y - columns @ yk) ** 2).sum())
    b = prior_band.ravel()[where].astype(np.float64)
    scale = float(b @ y) / max(float(b @ b), 1e-30)
    linear = float(((y - scale * b) ** 2).sum())
    ratio = mapped / linear if linear > 0 else 1.0
    return ContrastMap(xk, np.concatenate([[0.0], yk]).astype(np.float32), float(ratio))


__all__ = ["CONTRAST_GAIN", "CONTRAST_KNOTS", "CONTRAST_LEVEL", "CONTRAST_RIDGE", "CONTRAST_SAMPLES", "ContrastMap", "fit_contrast_map"]
