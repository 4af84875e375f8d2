"""Contrast matching: a planning scan of another contrast mapped to the dynamic's intensities.

A planning scan is often not of the dynamic's contrast (a T1-weighted planning scan, T2-weighted
or contrast-enhanced frames). Scaling it by one factor (what :func:`mrisr.reconstruct.prior.prepare_prior`
always does) then leaves its tissue intensities wrong, the tracker registers the wrong edges, and
the gate of :func:`mrisr.reconstruct.keyhole.gated_keyhole` closes almost everywhere: the result is
what the frame measures and no better (MNI152 at 6.25 %, a non-monotone remap as between T1 and
T2 weighting: tissue SSIM 0.875, the no-prior network's 0.874).

Where the anatomy is the same, the frame's intensity is close to a function of the planning
scan's. :func:`fit_contrast_map` estimates that function at the resolution both share: the
conditional mean of the frame 0 sinc given the planning scan's measured band, in quantile bins of
the band, piecewise linear between the bins' means. Both images are the same band-limit, so a
planning scan of the same contrast gives the identity up to noise and the residual of the map is
close to the residual of one global scale. The map replaces the scale only when it leaves at most
:data:`CONTRAST_GAIN` of that residual energy: measured on MNI152 and Colin27 phantoms (6.25 % and
4 %; frame 0 before registration), the ratio was 0.26-0.73 for a planning scan of another contrast
and 0.91-0.99 for one of the same contrast (plain, with its own noise, with noisy frames), where
applying the map cost up to 0.002 of tissue SSIM. With the map, the other-contrast MNI152 phantom's
tissue SSIM is 0.963 (gated keyhole 0.962); on Colin27, whose remap is more ambiguous (two tissues
of different T1 share one T2 intensity), 0.867 against 0.851.

The bins are fitted where both the frame and the band exceed 10 % of the frame's 99th percentile:
selecting on one of them alone biases the lowest bins (a voxel just inside the frame's object is
more often bright in the frame than in the planning scan's band).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: quantile bins of the planning scan's band in the object
CONTRAST_BINS = 48
#: the map is used when its residual energy is at most this fraction of the best global scale's
CONTRAST_GAIN = 0.8
#: the object the map is fitted on: frame and band above this fraction of the frame's 99th percentile
CONTRAST_LEVEL = 0.1


@dataclass(frozen=True)
class ContrastMap:
    """A piecewise-linear intensity map from the planning scan's intensities to the frame's.

    Between its knots it interpolates linearly; above the last knot it scales by the last knot's
    ratio (an HR voxel can be brighter than any band value), below the first (0, 0) it cannot go.
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
        return {"applied": self.applies, "residual_ratio": round(self.residual_ratio, 4), "knots": len(self.knots_in)}


def fit_contrast_map(band: np.ndarray, sinc: np.ndarray, bins: int = CONTRAST_BINS) -> ContrastMap:
    """The frame's intensity as a function of the planning scan's, fitted at the frame's resolution.

    Args:
        band: the planning scan (on the HR grid, globally scaled) through the frame's measured band
            (:func:`mrisr.reconstruct.prior.lowpass_like`).
        sinc: the frame zero-filled to the HR grid.
        bins: quantile bins of ``band`` over the fitted voxels.

    Returns:
        The map; :attr:`ContrastMap.applies` says whether to use it. A constant band (nothing to
        fit) gives the identity with ratio 1.

    Example:
        >>> x = np.linspace(0, 1, 4000, dtype=np.float32).reshape(20, 20, 10)
        >>> m = fit_contrast_map(x, 1.2 - x)  # inverted contrast
        >>> inside = x[(x > 0.2) & (x < 0.9)]
        >>> m.applies, bool(np.allclose(m(inside), 1.2 - inside, atol=0.01))
        (True, True)
    """
    band = np.asarray(band, dtype=np.float32)
    sinc = np.asarray(sinc, dtype=np.float32)
    level = CONTRAST_LEVEL * float(np.percentile(sinc, 99))
    mask = np.minimum(band, sinc) > level
    identity = ContrastMap(np.array([0.0, 1.0], dtype=np.float32), np.array([0.0, 1.0], dtype=np.float32), 1.0)
    if mask.sum() < 4 * bins:
        return identity
    x = band[mask].astype(np.float64)
    y = sinc[mask].astype(np.float64)
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, bins + 1)))
    if len(edges) < 3:
        return identity
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    count = np.bincount(which, minlength=len(edges) - 1)
    used = count > 0
    xk = np.bincount(which, x, minlength=len(edges) - 1)[used] / count[used]
    yk = np.bincount(which, y, minlength=len(edges) - 1)[used] / count[used]
    increasing = np.concatenate([[True], np.diff(xk) > 0])
    xk, yk = np.concatenate([[0.0], xk[increasing]]), np.concatenate([[0.0], yk[increasing]])
    fitted = ContrastMap(xk.astype(np.float32), np.maximum(yk, 0.0).astype(np.float32), 1.0)
    scale = float((x * y).sum() / max(float((x * x).sum()), 1e-30))
    linear = float(((y - scale * x) ** 2).sum())
    mapped = float(((y - fitted(x.astype(np.float32))) ** 2).sum())
    ratio = mapped / linear if linear > 0 else 1.0
    return ContrastMap(fitted.knots_in, fitted.knots_out, float(ratio))


__all__ = ["CONTRAST_BINS", "CONTRAST_GAIN", "CONTRAST_LEVEL", "ContrastMap", "fit_contrast_map"]
