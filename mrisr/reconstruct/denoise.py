"""Shrink the planning scan's noise before its detail is handed to the frames.

A planning scan is a separate acquisition: besides the subject's fine detail, its outer k-space
carries its own noise, which a keyhole copies into every frame as if it were detail (and which
the dynamic's frames, acquired later, never share). White noise has the same power at every
spatial frequency, while an anatomy's power falls steeply with frequency; so the power in the
corners of the planning scan's in-plane spectrum (beyond 3/4 of the Nyquist frequency along both
axes) measures the noise (:func:`planning_noise_power`), and the planning scan is filtered once,
in-plane, with the Wiener gain ``max(0, 1 - n / |P(r)|^2)`` per shell of spatial frequency ``r``
(:func:`denoise_planning`). A planning scan with little noise is left as it is.

The corner estimate reads 0.66-0.75 of the true noise power on MNI152 and Colin27 phantoms with
noise at SNR 10-40 and 0.9-1.0 at SNR 80 (where the anatomy's own corner power starts to count).
With the true noise power, the filter took the default's tissue SSIM on a Colin27 phantom with a
planning scan at SNR 10 from 0.929 to 0.955, and kept most of that gain at 0.5x and 2x that power.

Measured on the independent-noise phantoms of ``benchmarks/fidelity.py`` (truth denoised, frames
and planning scan each with noise of their own; default network, tissue SSIM, 8 frames, at
planning SNR 10 / 20 / noise-free, without -> with; RESULTS.md, 'Prior denoising re-measured'):
held-out real scan, 6.25 %: 0.920 / 0.958 / 0.973 -> 0.931 / 0.957 / 0.970; MNI152, 6.25 %:
0.869 / 0.946 / 0.987 -> 0.936 / 0.960 / 0.986. It was rejected once on phantoms whose truth
shared the planning scan's noise realisation, which rewards copying that noise.

A first version estimated the planning scan's *own* noise by comparing it, registered, with frame
0's measured band (power minus cross-power); registration errors, which grow with the planning
scan's noise, and the warp's blur swamped it: it missed noise at SNR 10 on Colin27 and
over-estimated it 3x at 4 % on MNI152, losing 0.006 there. Not kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: the spectrum's corners beyond this fraction of the Nyquist frequency (both in-plane axes) measure the noise
CORNER = 0.75
#: a filter whose smallest gain is above this leaves the planning scan as it is (not copied)
NEGLIGIBLE = 0.999
#: shells of the full-resolution spectrum the Wiener gain is computed on (then interpolated)
FILTER_SHELLS = 64


@dataclass
class PriorDenoise:
    """What :func:`planning_noise_power` found and what :func:`denoise_planning` did (the sidecar's
    ``prior.denoise``).

    Attributes:
        noise_power: the planning scan's noise power per k-space sample (``norm="forward"``
            units of :mod:`mrisr.kspace`).
        band_edge_gain: the Wiener gain at the band's edge (1: untouched).
        nyquist_gain: the Wiener gain at the in-plane Nyquist frequency along the first axis.
        applied: whether the planning scan was filtered (not when every gain is above
            :data:`NEGLIGIBLE`).
    """

    noise_power: float
    band_edge_gain: float = 1.0
    nyquist_gain: float = 1.0
    applied: bool = False

    def describe(self) -> dict:
        return {"applied": self.applied, "noise_power": self.noise_power,
                "band_edge_gain": round(self.band_edge_gain, 4), "nyquist_gain": round(self.nyquist_gain, 4)}


def _radius(shape_xy: tuple[int, int], hr_xy: tuple[int, int]) -> torch.Tensor:
    """In-plane spatial frequency of every sample of an unshifted ``shape_xy`` spectrum, as a
    fraction of the HR grid's Nyquist frequency (1 at the HR edge along each axis)."""
    fx = torch.fft.fftfreq(shape_xy[0], dtype=torch.float64) * (2.0 * shape_xy[0] / hr_xy[0])
    fy = torch.fft.fftfreq(shape_xy[1], dtype=torch.float64) * (2.0 * shape_xy[1] / hr_xy[1])
    return torch.sqrt(fx[:, None] ** 2 + fy[None, :] ** 2)


def _shell_means(values: torch.Tensor, radius: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (in-plane, ``(X, Y)``) per shell ``edges[i] <= r < edges[i + 1]``; NaN if empty."""
    index = torch.bucketize(radius.reshape(-1), edges, right=True) - 1
    shells = len(edges) - 1
    inside = (index >= 0) & (index < shells)
    sums = torch.bincount(index[inside], weights=values.reshape(-1)[inside].double(), minlength=shells)
    counts = torch.bincount(index[inside], minlength=shells).double()
    return sums / counts  # 0 / 0 = NaN for an empty shell


def _spectrum(planning: np.ndarray) -> torch.Tensor:
    """The in-plane spectrum of ``planning`` ``(X, Y, Z)`` (``norm="forward"``, unshifted)."""
    return torch.fft.fft2(torch.from_numpy(np.asarray(planning, dtype=np.float32)), dim=(0, 1), norm="forward")


def planning_noise_power(planning: np.ndarray, spectrum: torch.Tensor | None = None) -> float:
    """The planning scan's noise power per k-space sample (``norm="forward"`` units of
    :mod:`mrisr.kspace`): the median power, averaged over slices, of the in-plane spectrum's
    corners beyond :data:`CORNER` of the Nyquist frequency along both axes, where an anatomy has
    next to no power of its own and white noise has the same power as everywhere else.

    Args:
        spectrum: the planning scan's in-plane spectrum when the caller has it already.
    """
    spectrum = _spectrum(planning) if spectrum is None else spectrum
    power = spectrum.abs().square().mean(dim=2)
    fx = torch.fft.fftfreq(planning.shape[0]).abs() * 2
    fy = torch.fft.fftfreq(planning.shape[1]).abs() * 2
    corner = (fx[:, None] > CORNER) & (fy[None, :] > CORNER)
    return float(power[corner].median()) if bool(corner.any()) else 0.0


def shrink_own_noise(planning: np.ndarray, lr_inplane: tuple[int, int]) -> tuple[np.ndarray, PriorDenoise]:
    """:func:`denoise_planning` at the noise power :func:`planning_noise_power` reads in the
    planning scan itself, one FFT for both: what reconstruction (option ``denoise_prior``) and
    the training pairs do to a planning scan."""
    spectrum = _spectrum(planning)
    return denoise_planning(planning, planning_noise_power(planning, spectrum), lr_inplane, spectrum)


def denoise_planning(planning: np.ndarray, noise_power: float, lr_inplane: tuple[int, int],
                     spectrum: torch.Tensor | None = None) -> tuple[np.ndarray, PriorDenoise]:
    """The planning scan ``(X, Y, Z)`` filtered in-plane by the Wiener gain for ``noise_power``
    (returned unchanged, not copied, when ``noise_power <= 0`` or the filter is negligible) and the
    record of what was done.

    Args:
        lr_inplane: the dynamic's LR matrix (only to report the gain at the band's edge).
        spectrum: the planning scan's in-plane spectrum when the caller has it already.
    """
    record = PriorDenoise(noise_power=float(noise_power))
    if not noise_power > 0:
        return planning, record
    hr = tuple(planning.shape[:2])
    spectrum = _spectrum(planning) if spectrum is None else spectrum
    radius = _radius(hr, hr)
    edges = torch.linspace(0.0, float(radius.max()) * (1 + 1e-9), FILTER_SHELLS + 1, dtype=torch.float64)
    power = _shell_means(spectrum.abs().square().mean(dim=2).double(), radius, edges)
    centres = (edges[:-1] + edges[1:]) / 2
    known = ~torch.isnan(power)
    shell_power = torch.from_numpy(np.interp(radius.numpy(), centres[known].numpy(), power[known].numpy()))
    gain = (1.0 - noise_power / shell_power.clamp_min(1e-30)).clamp_(0.0, 1.0)
    filtered = torch.fft.ifft2(spectrum * gain.to(torch.float32)[..., None], dim=(0, 1), norm="forward").real
    edge = min(lr_inplane[0] / hr[0], lr_inplane[1] / hr[1])
    record.band_edge_gain = float(np.interp(edge, centres[known].numpy(), (1.0 - noise_power / power[known]).clamp(0, 1).numpy()))
    record.nyquist_gain = float(gain[hr[0] // 2, 0])
    if float(gain.min()) > NEGLIGIBLE:
        return planning, record
    record.applied = True
    return np.ascontiguousarray(filtered.clamp_min_(0).numpy(), dtype=np.float32), record
