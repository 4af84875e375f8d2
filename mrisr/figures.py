"""Figures: LR | sinc | SR | ground truth | error panels and SSIM-per-frame plots (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _slice(volume: np.ndarray, z: int) -> np.ndarray:
    return np.asarray(volume)[:, :, z].T  # rows = Y, so anatomy is upright with origin="lower"


def comparison_figure(
    path: str | Path,
    columns: dict[str, np.ndarray],
    frames: Sequence[int],
    ground_truth_key: str = "ground truth",
    sr_key: str = "SR",
    ssim_curves: dict[str, Sequence[float]] | None = None,
    title: str | None = None,
    z: int | None = None,
    ssim_label: str = "SSIM in tissue (object mask)",
) -> Path:
    """Write a PNG: one row per frame, one column per series (each ``(X, Y, Z, T)``) plus the
    SR error, and optionally a panel of SSIM per frame.

    Series on a coarser grid (the LR data) are shown with nearest-neighbour blocks so the
    viewer sees the real resolution.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    gt = columns[ground_truth_key]
    zc = gt.shape[2] // 2 if z is None else z
    names = list(columns) + ([f"|{sr_key} - truth|"] if sr_key in columns else [])
    n_rows = len(frames) + (1 if ssim_curves else 0)
    fig = plt.figure(figsize=(2.6 * len(names), 2.7 * n_rows), dpi=110)
    vmax = float(np.percentile(gt, 99.5))
    for r, t in enumerate(frames):
        for c, name in enumerate(names):
            ax = fig.add_subplot(n_rows, len(names), r * len(names) + c + 1)
            if name.startswith("|"):
                err = np.abs(columns[sr_key][..., t] - gt[..., t])
                ax.imshow(_slice(err, zc), cmap="magma", origin="lower", vmin=0, vmax=0.25 * vmax)
            else:
                vol = columns[name][..., t]
                if vol.shape[:2] != gt.shape[:2]:
                    fx, fy = gt.shape[0] / vol.shape[0], gt.shape[1] / vol.shape[1]
                    ix = np.minimum((np.arange(gt.shape[0]) / fx).astype(int), vol.shape[0] - 1)
                    iy = np.minimum((np.arange(gt.shape[1]) / fy).astype(int), vol.shape[1] - 1)
                    vol = vol[ix][:, iy]
                ax.imshow(_slice(vol, zc), cmap="gray", origin="lower", vmin=0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=10)
            if c == 0:
                ax.set_ylabel(f"frame {t}", fontsize=9)
    if ssim_curves:
        ax = fig.add_subplot(n_rows, 1, n_rows)
        for label, values in ssim_curves.items():
            ax.plot(range(len(values)), values, marker="o", ms=3, label=label)
        ax.set_xlabel("frame")
        ax.set_ylabel(ssim_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    from mrisr.io.guard import check_target

    check_target(path)
    from mrisr.io.guard import make_folder

    make_folder(path.parent)
    fig.savefig(path)
    plt.close(fig)
    return path
