"""`mrisr evaluate`: SSIM / PSNR / NRMSE of a prediction (and baselines) against the ground truth."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import typer

from mrisr.cli.app import app
from mrisr.cli.common import fail, user_errors

CSV_FIELDS = ("role", "file", "frame", "ssim", "psnr", "nrmse")


def _check_csv_output(path: Path, inputs: tuple[Path, ...]) -> Path:
    from mrisr.io import MrisrInputError

    if path.is_dir():
        raise MrisrInputError(f"{path}: output path is a folder; give a file name such as {path / 'metrics.csv'}")
    if path.suffix.lower() != ".csv":
        raise MrisrInputError(f"{path}: metrics are written as CSV; give a file name ending in .csv")
    for inp in inputs:
        if path.resolve() == Path(inp).resolve():
            raise MrisrInputError(f"{path}: output path is the same as an input; choose another name with -o")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MrisrInputError(
            f"{path}: cannot create output folder ({exc.strerror}); choose a writable location"
        ) from None
    if not os.access(parent, os.W_OK):
        raise MrisrInputError(f"{path}: output folder {parent} is not writable; choose a writable location with -o")
    return path


def write_metrics_csv(path: Path, results: list[tuple[str, Path, list[dict], dict]]) -> None:
    """Write one row per (input, frame), then a ``mean`` and a ``std`` row per input, atomically."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_FIELDS)
            for role, file, rows, summary in results:
                for row in rows:
                    writer.writerow(
                        [role, str(file), row["frame"], repr(row["ssim"]), repr(row["psnr"]), repr(row["nrmse"])]
                    )
                for stat in ("mean", "std"):
                    writer.writerow(
                        [role, str(file), stat]
                        + [repr(float(summary[f"{name}_{stat}"])) for name in ("ssim", "psnr", "nrmse")]
                    )
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _fmt(value: float, digits: int) -> str:
    return "inf" if value == float("inf") else f"{value:.{digits}f}"


def _print_table(results: list[tuple[str, Path, list[dict], dict]], mask_note: str) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mrisr evaluate ({mask_note})", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("input")
    table.add_column("frame", justify="right")
    table.add_column("SSIM", justify="right")
    table.add_column("PSNR (dB)", justify="right")
    table.add_column("NRMSE", justify="right")
    for role, file, rows, summary in results:
        labels = [file.name]
        if role != "prediction":
            labels = [file.name, "(baseline)"] if len(rows) > 1 else [f"{file.name} (baseline)"]
        for i, row in enumerate(rows):
            table.add_row(
                labels[i] if i < len(labels) else "",
                str(row["frame"]),
                _fmt(row["ssim"], 4),
                _fmt(row["psnr"], 2),
                _fmt(row["nrmse"], 4),
                end_section=len(rows) == 1 and i == 0,
            )
        if len(rows) > 1:
            table.add_row(
                "",
                "mean ± std",
                f"{_fmt(summary['ssim_mean'], 4)} ± {summary['ssim_std']:.4f}",
                f"{_fmt(summary['psnr_mean'], 2)} ± {summary['psnr_std']:.2f}",
                f"{_fmt(summary['nrmse_mean'], 4)} ± {summary['nrmse_std']:.4f}",
                style="bold",
                end_section=True,
            )
    Console().print(table)


@app.command()
def evaluate(
    prediction: Path = typer.Argument(..., help="Predicted (SR) volume or series, on the ground truth's grid."),
    ground_truth: Path = typer.Argument(..., help="Ground-truth HR volume or series."),
    mask: Path = typer.Option(
        None, "--mask", help="Binary mask (3-D, or 4-D with one mask per frame); metrics inside it."
    ),
    auto_mask: bool = typer.Option(
        False, "--auto-mask", help="Average inside a foreground mask made from each ground-truth frame."
    ),
    baseline: list[Path] = typer.Option(
        None,
        "--baseline",
        help="Another prediction (e.g. the sinc baseline) to score on the same ground truth; repeatable.",
    ),
    output: Path = typer.Option(None, "-o", "--output", help="Write per-frame metrics and mean/std to this CSV file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score a prediction against the ground truth: SSIM, PSNR and NRMSE per frame, then mean ± std.

    SSIM uses a 3-D Gaussian window (sigma 1.5 voxels); SSIM and PSNR use the ground truth's
    own intensity range, with nothing rescaled or shifted. Both images must be on the same
    grid (shape, frames, affine).
    """
    from rich.progress import Progress

    from mrisr.cli.common import progress_enabled
    from mrisr.io import load
    from mrisr.metrics import check_same_grid, evaluate_frame, foreground_mask, summarise

    if mask is not None and auto_mask:
        fail("--mask and --auto-mask: give one of them, not both")
    baselines = list(baseline or [])
    with user_errors():
        if output is not None:
            _check_csv_output(output, (prediction, ground_truth, *baselines, *([mask] if mask else [])))
        # eager: a lazy .nii.gz would be decompressed from its start again for every frame
        target = load(ground_truth)
        inputs = [("prediction", prediction)] + [("baseline", path) for path in baselines]
        volumes = []
        for role, path in inputs:
            volume = load(path)
            check_same_grid(volume, target)
            volumes.append((role, path, volume))
        mask_volume = None
        if mask is not None:
            mask_volume = load(mask, validate=False)
            check_same_grid(
                mask_volume,
                target,
                check_frames=mask_volume.is_4d,
                hint="pass a mask drawn on the ground truth's grid",
            )
        frames = target.n_frames
        per_input: list[list[dict]] = [[] for _ in volumes]
        with Progress(transient=True, disable=not progress_enabled(quiet) or frames == 1) as progress:
            task = progress.add_task("evaluating", total=frames)
            for t in range(frames):
                gt_frame = target.frame(t)
                frame_mask = None
                if mask_volume is not None:
                    frame_mask = mask_volume.frame(t if mask_volume.is_4d else 0) > 0
                    if not frame_mask.any():
                        fail(
                            f"{mask}: mask is empty{f' in frame {t}' if mask_volume.is_4d else ''}; pass a mask covering the object, or --auto-mask"
                        )
                elif auto_mask:
                    frame_mask = foreground_mask(gt_frame)
                for i, (_role, _path, volume) in enumerate(volumes):
                    per_input[i].append(evaluate_frame(volume.frame(t), gt_frame, frame_mask, frame=t))
                progress.advance(task)
        results = [(role, path, rows, summarise(rows)) for (role, path, _), rows in zip(volumes, per_input)]
        mask_note = (
            f"mask {mask.name}" if mask is not None else ("auto foreground mask" if auto_mask else "whole volume")
        )
        _print_table(results, mask_note)
        if output is not None:
            write_metrics_csv(output, results)
            typer.echo(f"{output}: metrics of {len(results)} input(s) x {frames} frame(s) written")
