"""The demo: a dynamic phantom from the shipped sample, reconstructed and evaluated end to end."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrisr.io import load, save_like
from mrisr.kspace.functional import zero_fill


@dataclass
class DemoResult:
    output_dir: Path
    #: one row per method: method, ssim_tissue_mean, ssim_tissue_std, ssim_whole_mean, psnr_tissue_mean,
    #: recovery (of the entering needle, share of its true contrast kept), seconds
    table: list[dict]
    figure: Path
    files: dict[str, Path] = field(default_factory=dict)
    per_frame: dict[str, list[float]] = field(default_factory=dict)


def trilinear_to_grid(frame: np.ndarray, hr_shape: tuple[int, int, int]) -> np.ndarray:
    """The LR frame interpolated (trilinear, centred-FFT grid convention) onto the HR matrix."""
    from scipy import ndimage

    coords = []
    for n_lr, n_hr in zip(frame.shape[:2], hr_shape[:2]):
        j = np.arange(n_hr)
        coords.append(n_lr // 2 + (j - n_hr // 2) * (n_lr / n_hr))
    gx, gy, gz = np.meshgrid(coords[0], coords[1], np.arange(frame.shape[2]), indexing="ij")
    return ndimage.map_coordinates(frame, [gx, gy, gz], order=1, mode="nearest").astype(np.float32)


def run_demo(
    output_dir: str | Path = "demo_output",
    frames: int = 8,
    keep: float = 6.25,
    finetune_minutes: float = 1.0,
    seed: int = 0,
    model: str = "default",
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Phantom with a needle entering -> baselines and reconstruction (with and without
    fine-tuning) -> tissue-first evaluation -> table + PNG. Fine-tuning gets a row of its own only
    when it improved on the base model (otherwise its output would repeat the base model's).

    The phantom's needle is absent from the planning scan, so the table's ``recovery`` column shows
    whether each method keeps what changed (sinc's value is the bar: what the frames measured). A
    demo that fails or is interrupted removes what it wrote; files that were in the folder before stay.
    """
    from mrisr.data import load_sample
    from mrisr.io.checks import check_fits_memory
    from mrisr.limits import DEMO_SERIES_HELD, MAX_DEMO_FRAMES, check_frames

    check_frames(frames)
    if frames > MAX_DEMO_FRAMES:
        from mrisr.io.errors import UsageError

        raise UsageError(f"--frames {frames}: the demo takes 1..{MAX_DEMO_FRAMES} frames, e.g. --frames 8")
    sample = load_sample()
    check_fits_memory(DEMO_SERIES_HELD * frames * float(np.prod(sample.spatial_shape)) * 4 * 2,
                      f"the demo with {frames} frames", "pass fewer --frames")
    out = Path(output_dir)
    from mrisr.io.guard import make_folder

    make_folder(out)
    before = _files_under(out)
    try:
        return _run_steps(out, sample, frames, keep, finetune_minutes, seed, model, log)
    except BaseException:
        # a failed or interrupted demo leaves no partial results: what this run wrote is removed
        _remove_new(out, before)
        raise


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.is_dir() else set()


def _remove_new(folder: Path, before: set[Path]) -> None:
    """Remove what appeared under ``folder`` since ``before`` was taken: files, then empty folders."""
    new = sorted(_files_under(folder) - before, key=lambda p: len(p.parts), reverse=True)
    for path in new:
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()


def _run_steps(out: Path, sample, frames: int, keep: float, finetune_minutes: float, seed: int, model: str,
               log: Callable[[str], None]) -> DemoResult:
    """The demo's five steps, writing into ``out``."""
    from mrisr.metrics import contrast_recovery, score_frames, summarise
    from mrisr.metrics.frames import SCORE_COLUMNS
    from mrisr.phantom import make_dynamic
    from mrisr.reconstruct import ReconstructOptions
    from mrisr.workflow import NOT_IMPROVED, reconstruct_file

    log(f"1/5 dynamic phantom: {frames} frames at {keep}% of k-space from the bundled Colin27 slab, "
        "a needle entering the tissue (not in the planning scan)")
    phantom = make_dynamic(sample, frames=frames, keep=keep, seed=seed, insert="needle")
    paths = phantom.save(out / "phantom")
    lr = load(paths["lr"])
    gt = load(paths["hr"])
    hr_shape = gt.spatial_shape
    log("2/5 baselines: trilinear, sinc (k-space zero-fill), keyhole and registered keyhole")
    sinc = np.stack([zero_fill(f, hr_shape[:2]) for f in lr.frames()], axis=-1)
    tri = np.stack([trilinear_to_grid(f, hr_shape) for f in lr.frames()], axis=-1)
    save_like(out / "sinc.nii.gz", sinc, gt)
    results: dict[str, tuple[np.ndarray, float]] = {"trilinear": (tri, 0.0), "sinc": (sinc, 0.0)}
    files = {**paths, "sinc": out / "sinc.nii.gz"}
    for method in ("keyhole", "keyhole-registered"):
        t0 = time.time()
        rep = reconstruct_file(paths["lr"], out / f"{method}.nii.gz", paths["planning"],
                               ReconstructOptions(method=method))
        results[method.replace("-", " ")] = (np.asarray(load(rep.output).data), time.time() - t0)
        files[method] = rep.output
    log("3/5 reconstruction with the bundled model (default: tracked planning prior)")
    t0 = time.time()
    rep = reconstruct_file(paths["lr"], out / "sr.nii.gz", paths["planning"], ReconstructOptions(model=model))
    results["mrisr"] = (np.asarray(load(rep.output).data), time.time() - t0)
    files["sr"] = rep.output
    if finetune_minutes > 0:
        log(f"4/5 fine-tuning on the planning scan ({finetune_minutes:g} min) and reconstructing again")
        t0 = time.time()
        rep_ft = reconstruct_file(paths["lr"], out / "sr_finetuned.nii.gz", paths["planning"],
                                  ReconstructOptions(model=model, finetune=True, finetune_minutes=finetune_minutes))
        if (rep_ft.finetune or {}).get("improved"):
            results["mrisr + fine-tuning"] = (np.asarray(load(rep_ft.output).data), time.time() - t0)
            files["sr_finetuned"] = rep_ft.output
        else:
            # the base model's output again: no second row or curve that only repeats the first
            for path in (rep_ft.output, rep_ft.sidecar):
                path.unlink(missing_ok=True)
            log(f"    {NOT_IMPROVED}: no separate fine-tuning row")
    log("5/5 evaluation against the ground truth: inside the head first, then the whole volume")
    truth = np.asarray(gt.data)
    needle = phantom.insert_mask
    table, per_frame = [], {}
    for name, (data, seconds) in results.items():
        rows = score_frames(data, truth)
        summary = summarise(rows, SCORE_COLUMNS)
        recovery = [contrast_recovery(data[..., t], truth[..., t], needle[..., t])
                    for t in range(frames) if needle[..., t].any()]
        per_frame[name] = [r["ssim_tissue"] for r in rows]
        table.append({"method": name, "ssim_tissue_mean": summary["ssim_tissue_mean"],
                      "ssim_tissue_std": summary["ssim_tissue_std"], "ssim_whole_mean": summary["ssim_whole_mean"],
                      "psnr_tissue_mean": summary["psnr_tissue_mean"],
                      "recovery": float(np.mean(recovery)) if recovery else float("nan"),
                      "seconds": round(seconds, 1)})
    shown = [0, frames // 2, frames - 1] if frames >= 3 else list(range(frames))
    columns = {"LR (acquired)": np.asarray(lr.data), "sinc": sinc, "registered keyhole": results["keyhole registered"][0],
               "SR": results["mrisr"][0], "ground truth": truth}
    z = int(round(phantom.settings["insert"]["entry_mm"][2] / gt.zooms[2]))
    from mrisr.figures import comparison_figure

    figure = comparison_figure(out / "demo.png", columns, shown, ssim_curves=per_frame, z=z,
                               title=f"mrisr demo: {keep}% of k-space, {frames} frames, a needle entering "
                                     "(absent from the planning scan); curves: SSIM in tissue")
    return DemoResult(out, table, figure, files, per_frame)
