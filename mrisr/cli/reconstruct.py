"""`mrisr reconstruct`: step-wise super-resolution of a dynamic series."""

from __future__ import annotations

from pathlib import Path

import typer

from mrisr.cli.app import app
from mrisr.cli.common import fail, schema_option, user_errors


@app.command(short_help="Super-resolve a dynamic series frame by frame.")
def reconstruct(
    dynamic: Path = typer.Argument(..., help="Dynamic LR series (4-D) or one frame (3-D): NIfTI, NRRD, MHA, "
                                   "a DICOM series (folder or one of its files), or ISMRMRD Cartesian raw data "
                                   "(.h5/.mrd, docs/raw.md)."),
    prior: Path = typer.Option(None, "--prior", help="Static HR planning scan of the same subject (3-D; a DICOM "
                               "folder too)."),
    output: Path = typer.Option(None, "-o", "--output", help="Output .nii.gz (default: <input>_sr.nii.gz next to it); "
                                "with --output-format dicom, a new folder (default <input>_sr/)."),
    # I/O choices (which DICOM series to read, what to write): not reconstruction options
    series: str = typer.Option(None, "--series", help="Which series of a DICOM folder holding several is the "
                               "dynamic: its SeriesInstanceUID, number or description (the error lists them)."),
    prior_series: str = typer.Option(None, "--prior-series", help="The same for the --prior folder."),
    output_format: str = typer.Option("nifti", "--output-format", help="nifti (a .nii.gz file) or dicom (a "
                                      "derived DICOM series in the -o folder, for a PACS)."),
    # the reconstruction options: defaults, help and choices from mrisr.reconstruct.options
    method: str = schema_option("method"),
    model: str = schema_option("model"),
    finetune: bool = schema_option("finetune", "--finetune"),
    finetune_minutes: float = schema_option("finetune_minutes"),
    factor: float = schema_option("factor"),
    matrix: tuple[int, int] | None = schema_option("matrix", metavar="NX NY"),
    prior_mode: str = schema_option("prior_mode"),
    data_consistency: bool = schema_option("data_consistency", "--data-consistency/--no-data-consistency"),
    device: str = schema_option("device"),
    threads: int = schema_option("threads"),
    tile: tuple[int, int, int] | None = schema_option("tile", metavar="X Y Z"),
    precision: str = schema_option("precision"),
    sparse_changes: bool = schema_option("sparse_changes", "--sparse-changes/--no-sparse-changes"),
    line_changes: bool = schema_option("line_changes", "--line-changes/--no-line-changes"),
    match_contrast: bool = schema_option("match_contrast", "--match-contrast/--no-match-contrast"),
    denoise_prior: bool = schema_option("denoise_prior", "--denoise-prior/--no-denoise-prior"),
    maps: bool = schema_option("maps", "--maps"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Super-resolve a dynamic series frame by frame.

    By default the prior of each frame is the planning scan deformed to that frame's motion state
    (registered to its LR data, starting from the previous frame's motion); --prior-mode planning
    uses the planning scan as it is, --prior-mode previous is step-wise (frame 0 from the planning
    scan registered to it, frame t from frame t-1).
    --method keyhole and keyhole-registered run the classical keyhole baselines on the same grid,
    with the same streaming and sidecar. Frames are streamed: memory does not grow with the number of frames. Writes OUTPUT and a
    JSON sidecar.
    """
    import statistics
    import warnings

    from mrisr.reconstruct import ReconstructOptions, default_output
    from mrisr.workflow import reconstruct_file

    if finetune and prior is None:
        fail(f"{dynamic}: --finetune needs the planning scan; pass --prior PLANNING.nii.gz")
    if output_format not in ("nifti", "dicom"):
        fail(f"--output-format {output_format}: choose nifti or dicom")
    out = output or default_output(dynamic, output_format)
    with user_errors():
        opts = ReconstructOptions(
            method=method,
            model=model,
            prior_mode=prior_mode,
            factor=factor,
            matrix=None if not matrix else (int(matrix[0]), int(matrix[1])),
            data_consistency=data_consistency,
            device=device,
            threads=threads,
            finetune=finetune,
            finetune_minutes=finetune_minutes,
            tile=None if not tile else tuple(int(v) for v in tile),
            maps=maps,
            precision=precision,
            sparse_changes=sparse_changes,
            line_changes=line_changes,
            match_contrast=match_contrast,
            denoise_prior=denoise_prior,
        )
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        from mrisr.cli.common import progress_bar

        progress = progress_bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), quiet=quiet)
        task = None
        seconds: list[float] = []

        def on_frame(result):
            nonlocal task
            if task is None:
                task = progress.add_task("frames", total=result.total, info="")
            # the mean so far, as the closing summary reports it
            seconds.append(result.seconds)
            progress.update(task, advance=1, info=f"{sum(seconds) / len(seconds):.2f} s/frame")

        def on_status(message: str):
            if message.startswith("warning"):
                typer.echo(" ".join(message.split()), err=True)  # warnings: one line on stderr, even with --quiet
            elif not quiet:
                progress.console.print(message, soft_wrap=True, markup=False, highlight=False)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with progress:
                report = reconstruct_file(dynamic, out, prior, opts, on_frame=on_frame, on_status=on_status,
                                          series=series, prior_series=prior_series, output_format=output_format)
    grid = report.hr_shape
    mean_s = sum(seconds) / max(len(seconds), 1)  # the bar's last figure
    median_wall = statistics.median(report.frame_wall_seconds)
    typer.echo(
        f"{report.output}: {len(report.frame_seconds)} frame(s) on a {grid[0]}x{grid[1]}x{grid[2]} grid "
        f"(LR = {report.keep:.2f}% of k-space), {mean_s:.2f} s/frame (median {median_wall:.2f} s with reading and "
        f"writing), {'model ' if method == 'network' else 'method '}{report.model}; sidecar {report.sidecar}"
    )
    if output_format == "dicom":
        from mrisr.io.dicom_write import NOT_CLINICAL

        typer.echo(f"{report.output}: a derived DICOM series ({NOT_CLINICAL}); send it to a PACS with any DICOM "
                   "sender (e.g. storescu), see docs/dicom.md")
