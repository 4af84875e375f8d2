"""Make the README's maps picture ``docs/maps.png``: where each voxel of a reconstruction comes from.

A needle phantom from the held-out real scan (``mrisr/data/heldout_brain1.nii.gz``, never used
for training): one needle advances into the tissue during the series (absent from the planning
scan), another is in the planning scan only. Row by row for one frame: the ground truth, sinc,
mrisr's default output, the registered keyhole, then the disagreement map and the
unmeasured-detail map of mrisr's output (``mrisr reconstruct --maps``). Needle cores are outlined
on the truth and the disagreement map (green: entered during the series; magenta: only in the
planning scan).

Run (from the repository root, about a minute on 2 CPU cores)::

    python scripts/make_maps_figure.py            # -> docs/maps.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "docs" / "maps.png"


def make_figure(output: Path = DEFAULT_OUTPUT, frames: int = 6, keep: float = 6.25, seed: int = 11) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mrisr.data import heldout_subject
    from mrisr.kspace import zero_fill
    from mrisr.phantom import make_dynamic
    from mrisr.reconstruct import ReconstructOptions, iter_reconstruct

    phantom = make_dynamic(heldout_subject(), frames=frames, keep=keep, seed=seed, insert="needle",
                           planning_insert="needle")
    t = frames - 1
    results = {name: list(iter_reconstruct(phantom.lr, phantom.planning, ReconstructOptions(method=method, maps=True)))
               for name, method in (("mrisr (default)", "network"), ("registered keyhole", "keyhole-registered"))}
    truth = phantom.hr.frame(t)
    core, site = phantom.insert_mask[..., t], phantom.planning_insert_mask[..., t]
    z = int(np.argmax(core.sum(axis=(0, 1))))
    z_site = int(np.argmax(site.sum(axis=(0, 1))))
    sr = results["mrisr (default)"][t]
    panels = [("ground truth", truth, "gray"), ("sinc (measured)", zero_fill(phantom.lr.frame(t), truth.shape[:2]), "gray"),
              ("mrisr (default)", sr.sr, "gray"), ("registered keyhole", results["registered keyhole"][t].sr, "gray"),
              ("disagreement (mrisr)", sr.maps.disagreement, "inferno"),
              ("unmeasured detail (mrisr)", sr.maps.unmeasured, "magma")]
    vmax = float(np.percentile(truth, 99.5))
    rows = [(z, "slice of the entering needle")]
    if z_site != z:
        rows.append((z_site, "slice of the planning-only needle"))
    else:
        rows = [(z, "slice of both needles")]
    fig, axes = plt.subplots(len(rows), len(panels), figsize=(2.7 * len(panels), 2.9 * len(rows)), dpi=110,
                             squeeze=False)
    outlined = {"ground truth", "disagreement (mrisr)"}
    for row, (zz, label) in enumerate(rows):
        for col, (name, image, cmap) in enumerate(panels):
            ax = axes[row, col]
            limits = {"gray": (0, vmax), "inferno": (0, 0.5), "magma": (0, 0.25 * vmax)}[cmap]
            ax.imshow(image[:, :, zz].T, cmap=cmap, origin="lower", vmin=limits[0], vmax=limits[1])
            for mask, colour in ((core, "lime"), (site, "magenta")):
                if name in outlined and mask[:, :, zz].any():
                    ax.contour(mask[:, :, zz].T.astype(float), levels=[0.5], colors=colour, linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(f"Where each voxel comes from: held-out real scan, {keep:g} % of k-space, frame {t + 1} of {frames}",
                 fontsize=10)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    print(make_figure(args.output))


if __name__ == "__main__":
    main()
