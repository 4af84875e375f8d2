"""On-the-fly (sinc LR, prior, HR target) training pairs from static volumes (torch, fast).

A pair imitates one frame of a dynamic scan: the target is the static anatomy under a random
smooth deformation and a local intensity change (contrast uptake); the prior is the same
anatomy at another motion state, either close (the previous frame) or far (the planning scan),
optionally degraded (blur, noise, intensity error) so the network learns not to trust it
blindly; the input is the target's central k-space, zero-filled back to the HR grid (sinc).
Everything is simulated on the full field of view and only then cropped to a patch, so no
patch-edge wrap-around enters the training data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from mrisr.kspace.functional import center_keep_shape, crop_kspace, fftc, ifftc, pad_kspace
from mrisr.training.sources import SlabVolume
from mrisr.training.structures import StructureSettings, add_structures, bright_level, random_remap


@dataclass
class PairSettings:
    """Knobs of the pair generator (all validated by the training config schema)."""

    patch: tuple[int, int, int] = (96, 96, 16)
    keep_range: tuple[float, float] = (4.0, 25.0)
    target_motion_mm: float = 6.0
    previous_motion_mm: tuple[float, float] = (0.0, 3.0)
    planning_motion_mm: tuple[float, float] = (2.0, 8.0)
    planning_probability: float = 0.3
    contrast_change: float = 0.35
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_probability: float = 0.3
    noise_snr: tuple[float, float] = (25.0, 200.0)
    perturb_probability: float = 0.5
    control_spacing_mm: float = 40.0
    #: structures in the target or the prior only, priors of another contrast (off by default)
    structures: StructureSettings = field(default_factory=StructureSettings)
    #: what the network's prior channel holds: the prior itself, or the gated keyhole of the
    #: frame and the prior (:func:`mrisr.reconstruct.network_input.form_network_input`)
    prior_input: str = "prior"
    #: share of priors given their own Rician noise and its SNR range (a planning scan's
    #: independent noise: the detail it lends must be told apart from its noise)
    prior_noise_probability: float = 0.0
    prior_noise_snr: tuple[float, float] = (15.0, 100.0)
    #: mark where inserted structures make target and prior differ (``Sample.sites``), for a
    #: site-weighted loss; off, no sample carries them and nothing is computed
    sites: bool = False


def _identity_grid(shape: tuple[int, int, int]) -> torch.Tensor:
    theta = torch.eye(3, 4)[None]
    # grid_sample's (D, H, W) are our (X, Y, Z); the grid's last axis is ordered (W, H, D)
    return F.affine_grid(theta, [1, 1, *shape], align_corners=True)


def random_field(shape, zooms, max_mm: float, rng: np.random.Generator, spacing_mm: float = 40.0) -> torch.Tensor:
    """Smooth random displacement ``(3, X, Y, Z)`` in mm, largest magnitude ``max_mm``."""
    ctrl = [max(2, int(math.ceil(n * z / spacing_mm)) + 1) for n, z in zip(shape, zooms)]
    coarse = torch.from_numpy(rng.normal(size=(1, 3, *ctrl)).astype(np.float32))
    field = F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)[0]
    peak = field.norm(dim=0).max().clamp_min(1e-6)
    return field * (max_mm / peak)


def warp(volume: torch.Tensor, field_mm: torch.Tensor, zooms, region=None) -> torch.Tensor:  # noqa: D417
    """Sample ``volume`` ``(X, Y, Z)`` at ``x + d(x)`` for a displacement field in mm.

    ``region`` (a tuple of slices) evaluates only that part of the output grid (cheaper).
    """
    shape = volume.shape
    grid = _identity_grid(tuple(shape))[0]
    disp = torch.stack(
        [field_mm[a] / zooms[a] * (2.0 / max(shape[a] - 1, 1)) for a in (2, 1, 0)], dim=-1
    )  # (X, Y, Z, 3) ordered (Z, Y, X) = (W, H, D)
    if region is not None:
        grid, disp = grid[region], disp[region]
    out = F.grid_sample(volume[None, None], (grid + disp)[None], mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, 0]


def contrast_blob(shape, zooms, rng: np.random.Generator, strength: float) -> torch.Tensor:
    """Multiplicative intensity change ``1 + c * g(x)`` in a smooth spherical region."""
    centre = [rng.uniform(0.25, 0.75) * n for n in shape]
    radius_mm = rng.uniform(10, 35)
    axes = [(torch.arange(n, dtype=torch.float32) - c) * z for n, c, z in zip(shape, centre, zooms)]
    r2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    change = rng.uniform(-0.4, 1.0) * strength
    return 1.0 + change * torch.exp(-r2 / (2 * radius_mm**2))


def sinc_lowres(target: torch.Tensor, keep: float, noise_snr: float | None, rng: np.random.Generator) -> torch.Tensor:
    """Central k-space of ``target`` (``(X, Y, Z)``), zero-filled back: the network's input."""
    return zero_fill_torch(lowres_frame(target, keep, noise_snr, rng), target.shape[:2])


def zero_fill_torch(lowres: torch.Tensor, hr_inplane) -> torch.Tensor:
    """An LR magnitude frame zero-filled in k-space to the ``hr_inplane`` matrix (magnitude)."""
    return ifftc(pad_kspace(fftc(lowres.to(torch.complex64), (0, 1)), tuple(hr_inplane), (0, 1)), (0, 1)).abs().float()


def noise_sigma(volume: torch.Tensor, snr: float) -> float:
    """The noise standard deviation per channel for ``snr``: the object's mean (voxels above 10 %
    of the maximum) over ``snr``."""
    return float(volume[volume > 0.1 * volume.max()].mean()) / snr


def lowres_frame(target: torch.Tensor, keep: float, noise_snr: float | None, rng: np.random.Generator) -> torch.Tensor:
    """The LR magnitude frame a scan keeping ``keep`` % of ``target``'s k-space would give (on the LR matrix)."""
    image = target.to(torch.complex64)
    if noise_snr:
        sigma = noise_sigma(target, noise_snr)
        noise = torch.from_numpy(
            (rng.normal(0, sigma, target.shape) + 1j * rng.normal(0, sigma, target.shape)).astype(np.complex64)
        )
        image = image + noise
    size = center_keep_shape(target.shape[:2], keep)
    # a user has the LR *magnitude* image, and reconstruction zero-fills that: take the magnitude first
    return ifftc(crop_kspace(fftc(image, (0, 1)), size, (0, 1)), (0, 1)).abs().float()


def rician(volume: torch.Tensor, snr: float, rng: np.random.Generator) -> torch.Tensor:
    """``|volume + n|`` with complex Gaussian ``n`` of standard deviation ``mean(object) / snr``
    per channel: the magnitude noise of an independent acquisition of the same anatomy."""
    sigma = noise_sigma(volume, snr) if bool((volume > 0).any()) else 1.0 / snr
    real = torch.from_numpy(rng.normal(0, sigma, volume.shape).astype(np.float32))
    imag = torch.from_numpy(rng.normal(0, sigma, volume.shape).astype(np.float32))
    return torch.sqrt((volume + real) ** 2 + imag**2)


def structure_sites(before: torch.Tensor, after: torch.Tensor, dilate: tuple[int, int, int] = (2, 2, 1)) -> torch.Tensor:
    """Where inserting structures changed ``before`` by more than 10 % of its 99th percentile,
    dilated by ``dilate`` voxels per axis (a prior-only structure sits a few mm from where the
    target would have it). Boolean ``(X, Y, Z)``."""
    changed = ((after - before).abs() > 0.1 * bright_level(before)).float()[None, None]
    kernel = tuple(2 * d + 1 for d in dilate)
    return F.max_pool3d(changed, kernel, stride=1, padding=dilate)[0, 0] > 0.5


def degrade_prior(prior: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Blur, noise and intensity error: an imperfect prior like a previous SR result."""
    out = prior
    sigma = rng.uniform(0.3, 1.2)
    radius = 2
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kern = torch.exp(-(x**2) / (2 * sigma**2))
    kern = kern / kern.sum()
    v = out[None, None]
    v = F.conv3d(F.pad(v, (0, 0, 0, 0, radius, radius), mode="replicate"), kern.view(1, 1, -1, 1, 1))
    v = F.conv3d(F.pad(v, (0, 0, radius, radius, 0, 0), mode="replicate"), kern.view(1, 1, 1, -1, 1))
    out = v[0, 0]
    out = out * rng.uniform(0.9, 1.1) + torch.from_numpy(rng.normal(0, rng.uniform(0, 0.02), out.shape).astype(np.float32))
    return out.clamp_min(0)


def denoised_prior(prior: torch.Tensor) -> torch.Tensor:
    """``prior`` (the whole field of view) through the Wiener filter reconstruction applies to a
    planning scan with noise of its own (:func:`mrisr.reconstruct.denoise.shrink_own_noise`), so
    the network trains on the input it gets."""
    from mrisr.reconstruct.denoise import shrink_own_noise

    data = prior.numpy()
    filtered, _ = shrink_own_noise(data, tuple(prior.shape[:2]))
    return prior if filtered is data else torch.from_numpy(filtered)


def crop_patch(volume: torch.Tensor, start, size) -> torch.Tensor:
    """``volume[start : start + size]`` per axis, zero-padded (centred) along axes shorter than ``size``."""
    pads = []
    for n, s in zip(reversed(volume.shape), reversed(size)):
        extra = max(0, s - n)
        pads += [extra // 2, extra - extra // 2]
    if any(pads):
        volume = F.pad(volume[None, None], pads)[0, 0]
    sl = tuple(slice(st, st + s) for st, s in zip(start, size))
    return volume[sl]


def gated_input(lowres: torch.Tensor, prior: torch.Tensor, sinc: torch.Tensor) -> torch.Tensor:
    """The network's prior channel for an LR frame and a prior on the whole field of view, formed by
    the same function as in reconstruction and fine-tuning
    (:func:`mrisr.reconstruct.network_input.form_network_input`: intensity match, sparse change, gate)."""
    from mrisr.reconstruct.network_input import form_network_input

    return torch.from_numpy(form_network_input(lowres.numpy(), prior.numpy(), sinc.numpy()).given)


@dataclass
class Sample:
    sinc: torch.Tensor  # (X, Y, Z) normalised
    prior: torch.Tensor
    target: torch.Tensor
    keep: float
    # for self-generated priors: the previous frame's inputs
    prev_sinc: torch.Tensor | None = None
    prev_prior: torch.Tensor | None = None
    #: where inserted structures make target and prior differ (boolean), for a site-weighted loss
    sites: torch.Tensor | None = None


class PairGenerator:
    """Draws training samples from a bank of slab volumes with its own seeded RNG."""

    def __init__(self, bank: list[SlabVolume], settings: PairSettings, seed: int = 0) -> None:
        if not bank:
            raise ValueError("training bank is empty")
        self.bank = bank
        # each source weighs the same, however many geometries it supplies (a thick-slice clinical
        # scan supplies a few axial slabs, a 1 mm template 27)
        groups: dict[str, list[SlabVolume]] = {}
        for slab in bank:
            groups.setdefault(slab.source, []).append(slab)
        self.by_source = list(groups.values())
        self.s = settings
        self.rng = np.random.default_rng(seed)
        # the prior's own noise draws from its own stream, so switching it on leaves every other
        # draw (motion, structures, keep level, patch) as it was
        self.prior_noise_rng = np.random.default_rng([seed, 1])

    def _keep(self) -> float:
        lo, hi = self.s.keep_range
        return float(math.exp(self.rng.uniform(math.log(lo), math.log(hi))))

    def _base(self) -> tuple[torch.Tensor, tuple[float, float, float]]:
        group = self.by_source[int(self.rng.integers(len(self.by_source)))] if len(self.by_source) > 1 else self.bank
        slab = group[int(self.rng.integers(len(group)))]
        depth = self.s.patch[2]
        nz = slab.data.shape[2]
        z0 = int(self.rng.integers(0, max(1, nz - depth + 1)))
        arr = slab.data[:, :, z0 : z0 + depth]
        zooms = slab.zooms
        if self.rng.uniform() < 0.5:
            arr = arr[::-1]
        if self.rng.uniform() < 0.5:
            arr = arr[:, ::-1]
        if self.rng.uniform() < 0.5:
            arr = np.transpose(arr, (1, 0, 2))
        base = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        gamma = self.rng.uniform(*self.s.gamma_range)
        base = base.clamp_min(0) ** gamma
        return base, zooms

    def _patch_start(self, target: torch.Tensor) -> tuple[int, int, int]:
        size = self.s.patch
        shape = target.shape
        if not hasattr(self, "_fg_cache") or self._fg_cache[0] is not target:
            self._fg_cache = (target, torch.nonzero(target > 0.2 * target.max()))
        fg = self._fg_cache[1]
        if len(fg):
            centre = fg[int(self.rng.integers(len(fg)))].tolist()
        else:
            centre = [n // 2 for n in shape]
        start = []
        for c, n, s in zip(centre, shape, size):
            n_eff = max(n, s)
            start.append(int(min(max(c - s // 2, 0), n_eff - s)))
        return tuple(start)

    def draw(self, self_prior: bool = False) -> Sample:
        """One sample (see :meth:`draw_group`)."""
        return self.draw_group(1, self_prior)[0]

    def draw_group(self, n: int, self_prior: bool = False) -> list[Sample]:
        """``n`` samples sharing one deformed target and prior, each with its own keep level,
        patch position and prior degradation (simulating the field of view once is the
        expensive part). With ``self_prior`` each sample also carries the previous frame's
        inputs, so the caller can replace the prior by the network's own output."""
        s = self.s
        gated = s.prior_input == "gated-keyhole"
        if gated and self_prior:
            raise ValueError("self-generated priors are not supported with the gated-keyhole prior input")
        base, zooms = self._base()
        shape = tuple(base.shape)
        f_target = random_field(shape, zooms, self.rng.uniform(0, s.target_motion_mm), self.rng, s.control_spacing_mm)
        contrast = contrast_blob(shape, zooms, self.rng, s.contrast_change) if self.rng.uniform() < 0.6 else None
        target = warp(base, f_target, zooms)
        if contrast is not None:
            target = target * contrast
        planning = self.rng.uniform() < s.planning_probability and not self_prior
        motion = s.planning_motion_mm if planning else s.previous_motion_mm
        f_prior = f_target + random_field(shape, zooms, self.rng.uniform(*motion), self.rng, s.control_spacing_mm)
        prior_gt = warp(base, f_prior, zooms)
        if contrast is not None and not planning:
            # the previous frame shares most of the uptake
            prior_gt = prior_gt * (1 + (contrast - 1) * self.rng.uniform(0.7, 1.0))
        st = s.structures
        sites = None
        if st.target_probability > 0 and self.rng.uniform() < st.target_probability:
            before = target
            target = add_structures(target, zooms, self.rng, st)
            if s.sites:
                sites = structure_sites(before, target)
        if not self_prior and st.prior_probability > 0 and self.rng.uniform() < st.prior_probability:
            before = prior_gt
            prior_gt = add_structures(prior_gt, zooms, self.rng, st)
            if s.sites:
                gone = structure_sites(before, prior_gt)
                sites = gone if sites is None else sites | gone
        if not self_prior and st.remap_probability > 0 and self.rng.uniform() < st.remap_probability:
            prior_gt = random_remap(prior_gt, self.rng)
        noise_rng = self.prior_noise_rng
        if not self_prior and s.prior_noise_probability > 0 and noise_rng.uniform() < s.prior_noise_probability:
            prior_gt = rician(prior_gt, noise_rng.uniform(*s.prior_noise_snr), noise_rng)
            if gated:
                # as reconstruction does to a planning scan with noise of its own (option denoise_prior)
                prior_gt = denoised_prior(prior_gt)
        prev_prior_full = None
        if self_prior:
            f_before = f_prior + random_field(shape, zooms, self.rng.uniform(*s.previous_motion_mm), self.rng,
                                              s.control_spacing_mm)
            prev_prior_full = warp(base, f_before, zooms)
        samples = []
        for _ in range(n):
            keep = self._keep()
            snr = self.rng.uniform(*s.noise_snr) if self.rng.uniform() < s.noise_probability else None
            lowres = lowres_frame(target, keep, snr, self.rng)
            sinc = zero_fill_torch(lowres, target.shape[:2])
            scale = float(torch.quantile(sinc.flatten()[:: max(1, sinc.numel() // 200_000)], 0.995).clamp_min(1e-6))
            start = self._patch_start(base)
            crop = lambda v, start=start, scale=scale: crop_patch(v, start, s.patch) / scale  # noqa: E731
            site_patch = None if sites is None else crop_patch(sites.float(), start, s.patch) > 0.5
            if self_prior:
                prev_sinc = sinc_lowres(prior_gt, keep, snr, self.rng)
                prev_prior = degrade_prior(crop(prev_prior_full), self.rng)
                samples.append(Sample(crop(sinc), crop(prior_gt), crop(target), keep, crop(prev_sinc), prev_prior))
                continue
            if gated:
                full = degrade_prior(prior_gt, self.rng) if self.rng.uniform() < s.perturb_probability else prior_gt
                prior = crop(gated_input(lowres, full, sinc))
                samples.append(Sample(crop(sinc), prior, crop(target), keep, sites=site_patch))
                continue
            prior = crop(prior_gt)
            if self.rng.uniform() < s.perturb_probability:
                prior = degrade_prior(prior, self.rng)
            samples.append(Sample(crop(sinc), prior, crop(target), keep, sites=site_patch))
        return samples
