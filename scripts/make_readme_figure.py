"""Make the README's picture ``docs/figure.png``: LR | sinc | SR | ground truth (| error) and SSIM per frame.

The data are a dynamic phantom made from the bundled sample (the Colin27 slab, see
``mrisr/data/README.md``): breathing motion and contrast uptake on the HR grid, the LR series
keeping the central ``--keep`` % of k-space. The SR series is the bundled model run with its default
options (the ``tracked`` prior: the planning scan deformed to each frame's motion state). Every number in
the figure is computed by :mod:`mrisr.metrics` against the phantom's ground truth.

Note: Colin27 is one of the bundled model's training subjects, so this picture shows what the
tool does, not how well it generalises; unseen-anatomy numbers are in ``benchmarks/RESULTS.md``.

Run (from the repository root, a minute or two on 2 CPU cores)::

    python scripts/make_readme_figure.py                 # -> docs/figure.png
    python scripts/make_readme_figure.py --frames 12 --keep 4 -o /tmp/figure.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "docs" / "figure.png"


def make_figure(
    output: Path = DEFAULT_OUTPUT,
    frames: int = 8,
    keep: float = 6.25,
    seed: int = 0,
    model: str = "default",
) -> dict[str, float]:
    """Phantom -> sinc baseline and SR (default options: tracked planning prior) -> figure. Returns the mean SSIM of each series."""
    from mrisr.data import load_sample
    from mrisr.figures import comparison_figure
    from mrisr.kspace import zero_fill
    from mrisr.metrics import score_frames
    from mrisr.phantom import make_dynamic
    from mrisr.reconstruct import ReconstructOptions, reconstruct_volume

    phantom = make_dynamic(load_sample(), frames=frames, keep=keep, seed=seed)
    truth = np.asarray(phantom.hr.data)
    lr = np.asarray(phantom.lr.data)
    hr_inplane = truth.shape[:2]
    sinc = np.stack([zero_fill(lr[..., t], hr_inplane) for t in range(frames)], axis=-1)
    start = time.perf_counter()
    sr_volume = reconstruct_volume(phantom.lr, phantom.planning, ReconstructOptions(model=model, device="cpu"))
    seconds = time.perf_counter() - start
    sr = np.asarray(sr_volume.data)
    if sr.shape != truth.shape or not np.allclose(sr_volume.affine, phantom.hr.affine, atol=1e-4):
        raise RuntimeError(f"SR grid {sr.shape} does not match the ground truth's {truth.shape}")
    keyholes = {method: np.asarray(reconstruct_volume(phantom.lr, phantom.planning,
                                                      ReconstructOptions(method=method)).data)
                for method in ("keyhole", "keyhole-registered", "keyhole-gated")}
    # SSIM inside the head (object mask): the whole volume is mostly background
    curves = {name: [row["ssim_tissue"] for row in score_frames(data, truth)] for name, data in
              (("sinc (k-space zero-fill)", sinc), ("keyhole", keyholes["keyhole"]),
               ("registered keyhole", keyholes["keyhole-registered"]),
               ("gated keyhole", keyholes["keyhole-gated"]), ("mrisr (tracked prior)", sr))}
    means = {name: float(np.mean(values)) for name, values in curves.items()}
    shown = [0, frames - 1] if frames > 1 else [0]
    title = (
        f"Dynamic phantom from the bundled Colin27 slab: {phantom.keep_actual:.2f}% of k-space per frame, "
        f"{frames} frames; mean SSIM in tissue: sinc {means['sinc (k-space zero-fill)']:.3f}, "
        f"keyhole {means['keyhole']:.3f}, "
        f"registered keyhole {means['registered keyhole']:.3f}, gated keyhole {means['gated keyhole']:.3f}, "
        f"mrisr {means['mrisr (tracked prior)']:.3f}"
    )
    columns = {"LR (acquired)": lr, "sinc": sinc, "gated keyhole": keyholes["keyhole-gated"], "SR (mrisr)": sr,
               "ground truth": truth}
    comparison_figure(output, columns, shown, sr_key="SR (mrisr)", ssim_curves=curves, title=title)
    print(f"{output}: {frames} frames, {phantom.keep_actual:.2f}% of k-space, SR {seconds / frames:.2f} s/frame")
    for name, value in means.items():
        print(f"  mean SSIM in tissue {name:<26} {value:.4f}")
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="PNG to write (default: docs/figure.png)")
    parser.add_argument("--frames", type=int, default=8, help="frames of the dynamic phantom (default 8)")
    parser.add_argument("--keep", type=float, default=6.25, help="percentage of k-space per frame (default 6.25)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    parser.add_argument("--model", default="default", help="bundled model name or checkpoint path (default: default)")
    args = parser.parse_args()
    if args.frames < 1:
        parser.error(f"--frames {args.frames}: must be >= 1")
    if not 0 < args.keep <= 100:
        parser.error(f"--keep {args.keep}: must be a percentage in (0, 100]")
    make_figure(args.output, args.frames, args.keep, args.seed, args.model)


if __name__ == "__main__":
    main()
