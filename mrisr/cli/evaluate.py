"""`mrisr evaluate`: tissue-first SSIM / PSNR / NRMSE (and fidelity) of a prediction and baselines."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import typer

from mrisr.cli.app import app
from mrisr.cli.common import fail, user_errors

#: per-input columns, tissue first; ``recovery`` / ``leakage`` are added with --insert-mask / --leak-mask
SCORE_COLUMNS = ("ssim_tissue", "psnr_tissue", "nrmse_tissue", "ssim_whole", "psnr_whole", "nrmse_whole")


def _check_csv_output(path: Path, inputs: tuple[Path, ...]) -> Path:
    from mrisr.io import MrisrInputError

    if path.is_dir():
        raise MrisrInputError(f"{path}: output path is a folder; give a file name such as {path / 'metrics.csv'}")
    if path.suffix.lower() != ".csv":
        raise MrisrInputError(f"{path}: metrics are written as CSV; give a file name ending in .csv")
    from mrisr.io.guard import check_target, make_folder

    check_target(path, inputs)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        make_folder(parent)
    except OSError as exc:
        raise MrisrInputError(
            f"{path}: cannot create output folder ({exc.strerror}); choose a writable location"
        ) from None
    if not os.access(parent, os.W_OK):
        raise MrisrInputError(f"{path}: output folder {parent} is not writable; choose a writable location with -o")
    return path


def column_prefixes(baselines: list[Path]) -> list[str]:
    """``""`` for the prediction, ``<stem>_`` for each baseline (numbered when stems repeat)."""
    from mrisr.io.load import image_stem

    prefixes, seen = [""], {}
    for path in baselines:
        stem = image_stem(path)
        seen[stem] = seen.get(stem, 0) + 1
        prefixes.append(f"{stem}_" if seen[stem] == 1 else f"{stem}{seen[stem]}_")
    return prefixes


def write_metrics_csv(path: Path, columns: list[str], prefixes: list[str], per_input: list[list[dict]],
                      summaries: list[dict]) -> None:
    """One row per frame, then ``mean`` and ``std``; columns ``frame`` + each input's columns; atomic."""
    header = ["frame"] + [prefix + name for prefix in prefixes for name in columns]
    from mrisr.io.guard import partial_file

    tmp_name = partial_file(path)
    try:
        with open(tmp_name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for t in range(len(per_input[0])):
                writer.writerow([per_input[0][t]["frame"]] + [repr(float(rows[t][name])) for rows in per_input
                                                              for name in columns])
            for stat in ("mean", "std"):
                writer.writerow([stat] + [repr(float(summary[f"{name}_{stat}"])) for summary in summaries
                                          for name in columns])
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _fmt(value: float, digits: int) -> str:
    return "inf" if value == float("inf") else ("-" if value != value else f"{value:.{digits}f}")


DIGITS = {"psnr_tissue": 2, "psnr_whole": 2, "recovery": 3, "leakage": 3}
HEADINGS = {"ssim_tissue": "SSIM\ntissue", "psnr_tissue": "PSNR\ntissue", "nrmse_tissue": "NRMSE\ntissue",
            "ssim_whole": "SSIM\nwhole", "psnr_whole": "PSNR\nwhole", "nrmse_whole": "NRMSE\nwhole",
            "recovery": "recov-\nery", "leakage": "leak-\nage"}
#: columns of the terminal table (the CSV has them all)
TABLE_COLUMNS = ("ssim_tissue", "psnr_tissue", "nrmse_tissue", "ssim_whole", "recovery", "leakage")


def _print_table(files: list[Path], columns: list[str], per_input: list[list[dict]], summaries: list[dict],
                 mask_note: str, per_frame: bool) -> None:
    """Mean and ± std per input (every frame with ``per_frame``); fits 80 columns."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    shown = [name for name in TABLE_COLUMNS if name in columns]
    table = Table(title=f"tissue = {mask_note}; PSNR in dB; all columns in -o CSV", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("input", overflow="fold", max_width=22)
    table.add_column("frame", justify="right")
    for name in shown:
        table.add_column(HEADINGS[name], justify="right")
    for i, (file, rows, summary) in enumerate(zip(files, per_input, summaries)):
        label = file.name if i == 0 else f"{file.name} (baseline)"
        if per_frame or len(rows) == 1:
            for t, row in enumerate(rows):
                table.add_row(label if t == 0 else "", str(row["frame"]),
                              *[_fmt(float(row[name]), DIGITS.get(name, 4)) for name in shown])
                label = ""
        if len(rows) > 1:
            table.add_row(label, "mean", *[_fmt(summary[f"{name}_mean"], DIGITS.get(name, 4)) for name in shown],
                          style="bold")
            table.add_row("", "± std", *["±" + _fmt(summary[f"{name}_std"], DIGITS.get(name, 4)) for name in shown],
                          end_section=True)
        else:
            table.rows[-1].end_section = True
    Console().print(table)


def _leak_reference(leak_mask: Path, given: float | None) -> float:
    """The leaked structure's contrast in the planning scan: given, else from phantom.json beside the mask."""
    from mrisr.io import MrisrInputError

    if given is not None:
        return float(given)
    meta = leak_mask.parent / "phantom.json"
    from mrisr.io.configfile import load_json_file

    try:
        value = load_json_file(meta, "phantom metadata").get("planning_insert_contrast")
    except (MrisrInputError, AttributeError):
        value = None
    if value is None:
        raise MrisrInputError(
            f"{leak_mask}: no planning_insert_contrast in {meta}; pass --leak-reference C (the structure's contrast "
            "in the planning scan)"
        )
    return float(value)


@app.command(short_help="SSIM, PSNR and NRMSE against the ground truth.")
def evaluate(
    prediction: Path = typer.Argument(..., help="Predicted (SR) volume or series, on the ground truth's grid."),
    ground_truth: Path = typer.Argument(..., help="Ground-truth HR volume or series."),
    mask: Path = typer.Option(
        None, "--mask", help="Object mask (3-D, or 4-D per frame) for the tissue metrics; default: made from the ground truth."
    ),
    baseline: list[Path] = typer.Option(
        None, "--baseline", help="Another prediction (sinc, keyhole, ...) scored the same way; repeatable."
    ),
    insert_mask: Path = typer.Option(
        None, "--insert-mask", help="Core (4-D) of a structure absent from the prior: adds its contrast recovery."
    ),
    leak_mask: Path = typer.Option(
        None, "--leak-mask", help="Site (4-D) of a structure only the prior has: adds its leakage."
    ),
    leak_reference: float = typer.Option(
        None, "--leak-reference", help="That structure's contrast in the planning scan (default: phantom.json)."
    ),
    output: Path = typer.Option(None, "-o", "--output", help="Write per-frame metrics and mean/std to this CSV file."),
    per_frame: bool = typer.Option(False, "--per-frame", help="Show every frame in the table (the CSV always has them)."),
    auto_mask: bool = typer.Option(False, "--auto-mask", hidden=True, help="Kept for old scripts: the default now."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score a prediction against the ground truth, inside the object first, then over the whole volume.

    Tissue metrics are averaged over the object mask: ground-truth voxels above 10 % of its
    99th percentile, holes filled, dilated by 2 voxels (or --mask). Whole-volume numbers are
    mostly background on head and body scans and come second. SSIM uses a 3-D Gaussian window
    (sigma 1.5 voxels); SSIM and PSNR use the ground truth's own range, nothing rescaled.
    --insert-mask adds the contrast recovery of a structure the prior lacks (1 = kept),
    --leak-mask the leakage of one only the prior has (0 = none). Both images must be on the
    same grid.
    """
    from rich.progress import Progress

    from mrisr.cli.common import progress_bar
    from mrisr.io import MrisrInputError, load
    from mrisr.metrics import check_same_grid, contrast_recovery, leakage, object_mask, score_frame, summarise

    del auto_mask  # the object mask is the default
    baselines = list(baseline or [])
    with user_errors():
        side_inputs = [p for p in (mask, insert_mask, leak_mask) if p is not None]
        if output is not None:
            _check_csv_output(output, (prediction, ground_truth, *baselines, *side_inputs))
        # eager: a lazy .nii.gz would be decompressed from its start again for every frame
        target = load(ground_truth)
        files = [prediction, *baselines]
        volumes = []
        for path in files:
            volume = load(path)
            check_same_grid(volume, target)
            volumes.append(volume)
        side = {}
        for key, path in (("mask", mask), ("insert", insert_mask), ("leak", leak_mask)):
            if path is not None:
                side[key] = load(path, validate=False)
                check_same_grid(side[key], target, check_frames=side[key].is_4d,
                                hint="pass a mask drawn on the ground truth's grid")
        reference = _leak_reference(leak_mask, leak_reference) if leak_mask is not None else None
        if reference is not None and not (reference == reference and abs(reference) >= 1e-6 and abs(reference) < 1e6):
            fail(f"--leak-reference {reference}: the structure's contrast in the planning scan must be a finite, "
                 "non-zero number (e.g. 0.7)")
        columns = list(SCORE_COLUMNS) + (["recovery"] if insert_mask else []) + (["leakage"] if leak_mask else [])
        frames = target.n_frames
        per_input: list[list[dict]] = [[] for _ in volumes]
        with progress_bar(*Progress.get_default_columns(), quiet=quiet or frames == 1, transient=True) as progress:
            task = progress.add_task("evaluating", total=frames)
            for t in range(frames):
                gt_frame = target.frame(t)

                def side_frame(key: str, t: int = t):
                    volume = side[key]
                    return volume.frame(t if volume.is_4d else 0) > 0

                if "mask" in side:
                    frame_mask = side_frame("mask")
                    if not frame_mask.any():
                        raise MrisrInputError(
                            f"{mask}: mask is empty{f' in frame {t}' if side['mask'].is_4d else ''}; pass a mask "
                            "covering the object, or no --mask")
                else:
                    frame_mask = object_mask(gt_frame)
                core = side_frame("insert") if "insert" in side else None
                site = side_frame("leak") if "leak" in side else None
                for i, volume in enumerate(volumes):
                    pred_frame = volume.frame(t)
                    row = score_frame(pred_frame, gt_frame, frame_mask, frame=t)
                    if core is not None:
                        try:
                            row["recovery"] = (contrast_recovery(pred_frame, gt_frame, core) if core.any()
                                               else float("nan"))
                        except ValueError as exc:
                            raise MrisrInputError(
                                f"{insert_mask}: frame {t}: {exc}; check that the mask marks a structure of the "
                                "ground truth") from None
                    if site is not None:
                        row["leakage"] = leakage(pred_frame, site, reference) if site.any() else float("nan")
                    per_input[i].append(row)
                progress.advance(task)
        summaries = [_summary(rows, columns, summarise) for rows in per_input]
        mask_note = f"mask {mask.name}" if mask is not None else "object mask of the ground truth"
        _print_table(files, columns, per_input, summaries, mask_note, per_frame)
        if output is not None:
            write_metrics_csv(output, columns, column_prefixes(baselines), per_input, summaries)
            typer.echo(f"{output}: metrics of {len(files)} input(s) x {frames} frame(s) written")


def _summary(rows: list[dict], columns: list[str], summarise) -> dict:
    """Mean and std per column; recovery and leakage over the frames where the structure is present."""
    summary = summarise(rows, [c for c in columns if c not in ("recovery", "leakage")])
    for name in ("recovery", "leakage"):
        if name in columns:
            present = [row for row in rows if row[name] == row[name]]
            part = summarise(present, [name]) if present else {f"{name}_mean": float("nan"), f"{name}_std": float("nan")}
            summary[f"{name}_mean"], summary[f"{name}_std"] = part[f"{name}_mean"], part[f"{name}_std"]
    return summary
