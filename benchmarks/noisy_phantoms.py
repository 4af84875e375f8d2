"""Independent-noise phantoms (issue 27): a denoised truth, noisy frames, a planning scan with its own noise.

The phantoms of :func:`mrisr.phantom.make_dynamic` made from a source volume carry the source's one
noise realisation in the truth, in every frame and in the planning scan, which rewards any method
that copies the planning scan's texture. Here:

- **truth**: the source denoised with scikit-image's non-local means
  (``skimage.restoration.denoise_nl_means``, slice by slice in-plane: the slices are 3-6.5 mm
  thick, so 3-D patches would mix anatomy; patch 5, search distance 6, ``h = 0.8 sigma``,
  ``fast_mode``), with ``sigma`` the source's own noise level (:func:`mrisr.metrics.noise.estimate_noise_sigma`);
  ``python benchmarks/fidelity.py --truth-figure PATH`` saves source, truth and their difference;
- **frames**: complex Gaussian noise of their own on the full HR acquisition, before the k-space crop
  (``make_dynamic(noise_snr=...)``), at the noise level estimated in the held-out real scan;
- **planning scan**: complex Gaussian noise of its own (``make_dynamic(planning_noise_snr=...)``), at
  each SNR of :data:`PLANNING_SNRS`.

SNR everywhere is the object's mean intensity over the noise's standard deviation per complex
component (:func:`mrisr.kspace.functional.add_complex_noise`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrisr.metrics.noise import estimate_noise_sigma, object_mean

#: the planning scan's SNR sweep (None: noise-free)
PLANNING_SNRS: tuple[float | None, ...] = (10.0, 20.0, 40.0, None)


def denoise(data: np.ndarray, sigma: float) -> np.ndarray:
    """Non-local means, slice by slice in-plane (see the module docstring); float32 ``(X, Y, Z)``."""
    from skimage.restoration import denoise_nl_means

    if sigma <= 0:
        return np.asarray(data, dtype=np.float32).copy()
    out = np.empty(data.shape, dtype=np.float32)
    for z in range(data.shape[2]):
        out[..., z] = denoise_nl_means(np.asarray(data[..., z], dtype=np.float64), h=0.8 * sigma, sigma=sigma,
                                       patch_size=5, patch_distance=6, fast_mode=True, channel_axis=None)
    return np.clip(out, 0, None)


def denoised_truth(static):
    """``static`` (a :class:`mrisr.io.Volume`) denoised, and the noise level it had.

    Returns:
        ``(truth volume, sigma, SNR)`` with ``SNR = object mean / sigma`` of the source.
    """
    data = np.asarray(static.data, dtype=np.float32)
    sigma = estimate_noise_sigma(data)
    snr = object_mean(data) / sigma if sigma > 0 else float("inf")
    return static.with_data(denoise(data, sigma)), sigma, snr


def make_noisy_phantom(truth, frames: int, keep: float, frame_snr: float, planning_snr: float | None,
                       seed: int = 11, **kwargs):
    """:func:`mrisr.phantom.make_dynamic` of the denoised ``truth`` with noisy frames (``frame_snr``)
    and a planning scan with noise of its own (``planning_snr``; None: noise-free)."""
    from mrisr.phantom import make_dynamic

    return make_dynamic(truth, frames=frames, keep=keep, seed=seed, noise_snr=frame_snr,
                        planning_noise_snr=planning_snr, **kwargs)


def save_truth_figure(path: str | Path, pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Source, denoised truth and source - truth, middle slice of each subject, as a PNG.

    Args:
        pairs: subject name -> ``(source, truth)``, both ``(X, Y, Z)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(pairs), 3, figsize=(10, 3.4 * len(pairs)), squeeze=False)
    for row, (name, (source, truth)) in zip(axes, pairs.items()):
        z = source.shape[2] // 2
        top = float(np.percentile(source, 99.5))
        diff = source[..., z] - truth[..., z]
        limit = float(np.percentile(np.abs(diff), 99.5)) or 1.0
        for ax, image, title, kw in (
            (row[0], source[..., z], f"{name}: source", {"cmap": "gray", "vmin": 0, "vmax": top}),
            (row[1], truth[..., z], "truth (non-local means)", {"cmap": "gray", "vmin": 0, "vmax": top}),
            (row[2], diff, f"source - truth (±{limit:.3g})", {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}),
        ):
            ax.imshow(np.rot90(image), **kw)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
