"""Whether fine-tuning helped: held-out pairs whose target's noise is independent of the inputs.

Fine-tuning has only the planning scan ``y``, a noisy magnitude image of the anatomy ``x``, as its
truth. Scored against ``y`` itself, a tuned network that reproduces the scan's noise looks better
than one that shows ``x``. On the independent-noise phantoms, the earlier held-out loss (L1 and
SSIM against the filtered planning scan) called tuning on MNI152 an improvement while tissue SSIM
against the denoised truth fell by 0.004-0.005 (benchmarks/RESULTS.md, 'Fine-tuning on the
independent-noise phantoms'). Each step below closed one way the check was fooled, each found on
MNI152 at planning SNR 20 and 6.25 % by comparing the check with the noise-free truth.

1. **Split the noise** as recorrupted-to-recorrupted training does (Pang et al., CVPR 2021): with a
   draw ``z`` of white noise at the scan's level ``sigma``, ``y + alpha z`` and ``y - z / alpha``
   carry noises whose covariance is ``sigma_n^2 - sigma^2``, zero when ``sigma`` is the scan's own
   level. Inputs (frame and prior, the prior filtered as reconstruction filters a planning scan)
   come from the first, the target from the second, both deformed by the same motion.
2. **Read the level in the object** (:func:`mrisr.metrics.noise.estimate_noise_sigma` with a mask):
   over the whole field of view, mostly air whose Rayleigh-distributed magnitude has a smaller
   spread, it read 0.80x the noise, the halves stayed correlated, and copying noise paid. In the
   object it reads 1.0-1.3x (MNI152) and 1.3-2x (the real scan, whose finest texture counts as
   noise): reading high anti-correlates the halves, which errs towards the base model.
3. **Train on the first half only**, so that nothing tuning learns of the scan's noise realisation
   is shared by the target (independent by construction; alone it did not change the verdict).
4. **Take off the magnitude's noise floor.** ``E|x + n|^2 = x^2 + 2 sigma^2`` lifts dark voxels;
   a tuned model learnt the lift and the check, whose target has it too, rewarded it (its error
   against the noise-free scan rose 0.00060 -> 0.00064 on the check's own pairs, and fell
   0.00063 -> 0.00060 against that scan lifted as noise lifts it). The scan is
   corrected as ``sqrt(|M^2 - sigma^2|)`` (Gudbjartsson and Patz 1995) and its air (smoothed, below
   twice the noise level) set to 0.
5. **Score SSIM, with a rim.** The error is ``1 -`` the mean SSIM map, with the target's known
   noise variance taken off its local variance (:func:`mrisr.metrics.ssim_map`), over the object and a
   2-voxel rim of air, as the benchmarks score tissue. The squared error accepted a model that
   lowered it by 8 % against the truth while its tissue SSIM fell by 0.003 (it smoothed texture),
   and without the rim the check missed the haze a tuned model put in the air at the edge (rim SSIM
   0.960 -> 0.950, inner tissue 0.959 -> 0.960).

``alpha`` is 0.5: the inputs carry 1.25x the scan's noise power (close to what reconstruction
sees), the target 5x (it only costs estimate variance).

Two disjoint sets of pairs are drawn from the one split: early stopping picks the best state on
one; the other accepts that state only when it beats the base model by more than twice the
standard error of the paired per-patch difference (:func:`significantly_better`), which keeps the
choice's luck out of the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: the split of the planning scan's noise: inputs ``y + alpha z``, target ``y - z / alpha``
RECORRUPT_ALPHA = 0.5
#: voxels of a check patch that count: the frame's sinc above this fraction of its 99.5th percentile
CHECK_OBJECT_LEVEL = 0.1
#: the tuned model is accepted when it beats the base model by more than this many standard errors
ACCEPT_STANDARD_ERRORS = 2.0
#: the largest motion (mm) of a check pair's frame against the planning scan, and the prior's extra motion
CHECK_MOTION_MM = (4.0, 2.5)


@dataclass
class CheckPair:
    """One held-out patch, normalised as training normalises (the frame's 99.5th percentile is 1).

    Attributes:
        sinc: the LR frame zero-filled to the HR grid ``(X, Y, Z)``.
        prior: the network's prior channel (the gated composite for a gated-keyhole model).
        target: the planning scan's second noisy version, deformed like the frame.
        tissue: boolean ``(X, Y, Z)``: where the error counts: the object (from the inputs only) and a
            2-voxel rim of the air around it, as the benchmarks score tissue.
        target_noise_power: the variance of the target's noise (the split's draw, deformed and
            normalised like the target, times ``1 + alpha^-2``): what :func:`check_errors`
            takes off the target's local variance.
    """

    sinc: torch.Tensor
    prior: torch.Tensor
    target: torch.Tensor
    tissue: torch.Tensor
    target_noise_power: float = 0.0


@dataclass
class NoiseSplit:
    """The planning scan's noise split in two independent halves (see the module docstring).

    Attributes:
        given: ``y + alpha z``, normalised to the planning scan's 99.5th percentile: what fine-tuning
            trains on and the check pairs' inputs are made of.
        held: ``y - z / alpha``: the check pairs' target, never trained on.
        split: ``z``, white Gaussian noise of standard deviation ``sigma``.
        sigma: the planning scan's noise level read in its object (normalised units).
    """

    given: np.ndarray
    held: np.ndarray
    split: np.ndarray
    sigma: float


#: air: the planning scan smoothed in-plane (Gaussian, this many voxels) below AIR_LEVEL noise levels
AIR_SMOOTHING = 1.5
AIR_LEVEL = 2.0


def _air(magnitude: np.ndarray, sigma: float) -> np.ndarray:
    """Where ``magnitude`` ``(X, Y, Z)`` holds only noise of level ``sigma``: smoothed in-plane by
    :data:`AIR_SMOOTHING` voxels, below :data:`AIR_LEVEL` x ``sigma`` (air's Rayleigh mean is 1.25 sigma)."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(magnitude, (AIR_SMOOTHING, AIR_SMOOTHING, 0))
    return smooth < AIR_LEVEL * sigma


def split_noise(planning: np.ndarray, seed: int) -> NoiseSplit:
    """Split the noise of the *unfiltered* planning scan ``(X, Y, Z)`` (see :class:`NoiseSplit`).

    Example:
        >>> scan = np.random.default_rng(0).normal(1.0, 0.1, (16, 16, 2)).astype(np.float32)
        >>> halves = split_noise(scan, seed=0)
        >>> 0.05 < halves.sigma < 0.2, np.allclose(halves.given - halves.held, 2.5 * halves.split, atol=1e-6)
        (True, True)
    """
    from mrisr.metrics.noise import estimate_noise_sigma

    data = np.asarray(planning, dtype=np.float32)
    scale = max(float(np.percentile(data, 99.5)), 1e-6)
    data = data / scale
    # in the object: the air's Rayleigh-distributed magnitude would pull the estimate low
    sigma = estimate_noise_sigma(data, data > CHECK_OBJECT_LEVEL * float(np.percentile(data, 99)))
    # a magnitude image's noise lifts its dark voxels (E|x + n|^2 = x^2 + 2 sigma^2): taken off as
    # sqrt(|M^2 - sigma^2|) does (Gudbjartsson and Patz 1995), or tuning learns that lift
    data = np.sqrt(np.maximum(data * data - np.float32(sigma * sigma), 0.0)).astype(np.float32)
    if sigma > 0:
        # the air holds only that noise: where the scan smoothed in-plane stays below twice its
        # level, it is set to 0 (the truth of air), or tuning learns to lift the air at the
        # object's edge to the planning scan's noise floor (MNI152, SNR 20: the tuned model's
        # tissue SSIM fell 0.010 in a 3-voxel rim of the object, and rose 0.001 inside it)
        data[_air(np.asarray(planning, dtype=np.float32) / scale, sigma)] = 0.0
    rng = np.random.default_rng([seed, 2718])
    split = rng.normal(0.0, sigma, data.shape).astype(np.float32) if sigma > 0 else np.zeros_like(data)
    return NoiseSplit(np.ascontiguousarray(data + RECORRUPT_ALPHA * split),
                      np.ascontiguousarray(data - split / RECORRUPT_ALPHA), split, float(sigma))


def recorrupted_pairs(halves: NoiseSplit, zooms: tuple[float, float, float], keep: float, prior_input: str,
                      seed: int, groups: int = 4, per_group: int = 2,
                      patch: tuple[int, int, int] = (64, 64, 16),
                      frame_snr: tuple[float, float] = (15.0, 100.0)) -> list[CheckPair]:
    """``groups x per_group`` held-out pairs from the split planning scan (see the module docstring).

    Each group deforms the planning scan once (up to :data:`CHECK_MOTION_MM`); each pair in it
    has its own keep level (``keep`` +-10 %), frame noise (SNR drawn from ``frame_snr``) and patch.
    No structures are inserted and no contrast is changed: the check asks how well the network
    renders this subject's anatomy.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> scan = np.pad(1 + 0.05 * rng.normal(size=(24, 24, 4)), ((4, 4), (4, 4), (0, 0))).astype(np.float32)
        >>> pairs = recorrupted_pairs(split_noise(scan, 0), (1.5, 1.5, 3.0), 25.0, "prior", seed=1, groups=1,
        ...                           per_group=2, patch=(16, 16, 4))
        >>> len(pairs), tuple(pairs[0].target.shape), bool(pairs[0].tissue.any())
        (2, (16, 16, 4), True)
    """
    from mrisr.training.pairs import (
        crop_patch,
        denoised_prior,
        gated_input,
        lowres_frame,
        random_field,
        warp,
        zero_fill_torch,
    )

    rng = np.random.default_rng([seed, 2718])
    data, split = halves.given, halves.split
    given, held = torch.from_numpy(halves.given), torch.from_numpy(halves.held)
    filtered = denoised_prior(given) if prior_input == "gated-keyhole" else given
    shape = tuple(data.shape)
    size = tuple(int(min(p, n)) for p, n in zip(patch, shape))
    foreground = torch.nonzero(torch.from_numpy(data) > 0.2)
    pairs = []
    for _ in range(groups):
        f_frame = random_field(shape, zooms, rng.uniform(0, CHECK_MOTION_MM[0]), rng)
        f_prior = f_frame + random_field(shape, zooms, rng.uniform(0, CHECK_MOTION_MM[1]), rng)
        frame_source, target_full = warp(given, f_frame, zooms), warp(held, f_frame, zooms)
        split_full = warp(torch.from_numpy(split), f_frame, zooms)
        prior_full = warp(filtered, f_prior, zooms)
        for _ in range(per_group):
            pair_keep = float(np.clip(keep * rng.uniform(0.9, 1.1), 0.1, 100.0))
            lowres = lowres_frame(frame_source, pair_keep, float(rng.uniform(*frame_snr)), rng)
            sinc = zero_fill_torch(lowres, shape[:2])
            channel = gated_input(lowres, prior_full, sinc) if prior_input == "gated-keyhole" else prior_full
            scale = float(torch.quantile(sinc.flatten()[:: max(1, sinc.numel() // 200_000)], 0.995).clamp_min(1e-6))
            centre = (foreground[int(rng.integers(len(foreground)))].tolist() if len(foreground)
                      else [n // 2 for n in shape])
            start = [int(min(max(c - s // 2, 0), n - s)) for c, s, n in zip(centre, size, shape)]
            crop = lambda v, start=start, scale=scale: crop_patch(v, start, size) / scale  # noqa: E731
            sinc_patch = crop(sinc)
            noise_power = float(crop(split_full).double().square().mean()) * (1 + RECORRUPT_ALPHA ** -2)
            pairs.append(CheckPair(sinc_patch, crop(channel), crop(target_full), _rimmed(sinc_patch > CHECK_OBJECT_LEVEL),
                                   noise_power))
    return pairs


def _rimmed(inside: torch.Tensor, voxels: int = 2) -> torch.Tensor:
    """``inside`` dilated by ``voxels`` (6-connected steps): the object with a rim of the air around
    it, as :func:`mrisr.metrics.object_mask` scores tissue (a haze at the edge counts)."""
    from scipy import ndimage

    return torch.from_numpy(ndimage.binary_dilation(inside.numpy(), iterations=voxels))


def check_errors(net: torch.nn.Module, pairs: list[CheckPair], device: torch.device) -> np.ndarray:
    """``1 -`` the mean SSIM in tissue of ``net`` on each pair, with the target's noise variance taken off
    (:func:`mrisr.metrics.ssim_map` with ``target_noise_power``, ``data_range`` 1 in the pairs' units),
    float64 ``(len(pairs),)`` (the network is put back in the mode it was in).

    SSIM, not the squared error: on MNI152 at planning SNR 20 and 6.25 %, a tuned network lowered the
    squared error against the noise-free truth by 8 % while tissue SSIM fell by 0.003 (it smoothed
    the anatomy's texture along with the noise), and the squared error accepted it."""
    from mrisr.metrics import ssim_map

    was_training = net.training
    net.eval()
    errors = []
    with torch.inference_mode():
        for pair in pairs:
            sinc, prior = pair.sinc[None, None].to(device), pair.prior[None, None].to(device)
            pred = (net(sinc, prior) if net.use_prior else net(sinc))[0, 0].float().cpu()
            similarity = ssim_map(pred.numpy(), pair.target.numpy(), data_range=1.0,
                                  target_noise_power=pair.target_noise_power)[pair.tissue.numpy()]
            errors.append(1.0 - float(similarity.mean(dtype=np.float64)) if similarity.size else 0.0)
    net.train(was_training)
    return np.asarray(errors, dtype=np.float64)


def significantly_better(base: np.ndarray, tuned: np.ndarray, standard_errors: float = ACCEPT_STANDARD_ERRORS) -> bool:
    """Whether ``tuned``'s per-pair errors beat ``base``'s by more than ``standard_errors`` standard
    errors of their paired difference (and by anything at all when every pair agrees exactly).

    Example:
        >>> significantly_better(np.array([1.0, 1.1, 0.9, 1.0]), np.array([0.9, 1.0, 0.8, 0.9]))
        True
        >>> significantly_better(np.array([1.0, 1.1, 0.9, 1.0]), np.array([0.9, 1.2, 0.8, 1.05]))
        False
    """
    diff = np.asarray(tuned, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    if diff.size == 0:
        return False
    mean = float(diff.mean())
    spread = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
    return mean < 0 and -mean > standard_errors * spread


__all__ = ["ACCEPT_STANDARD_ERRORS", "CheckPair", "NoiseSplit", "RECORRUPT_ALPHA", "split_noise", "check_errors",
           "recorrupted_pairs", "significantly_better"]
