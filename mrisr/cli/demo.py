"""`mrisr demo`: the whole story on the shipped sample in a few minutes."""

from __future__ import annotations

from pathlib import Path

import typer

from mrisr.cli.app import app
from mrisr.cli.common import user_errors
from mrisr.limits import MAX_DEMO_FRAMES


@app.command(short_help="Phantom, reconstruction, metrics and a figure from the sample.")
def demo(
    output: Path = typer.Option(Path("demo_output"), "-o", "--output", help="Folder for the NIfTI files and demo.png."),
    frames: int = typer.Option(8, "--frames", min=1, max=MAX_DEMO_FRAMES,
                               help=f"Frames of the dynamic phantom (1..{MAX_DEMO_FRAMES})."),
    keep: float = typer.Option(6.25, "--keep", help="Percentage of k-space acquired per frame."),
    finetune_minutes: float = typer.Option(1.0, "--finetune-minutes", help="Fine-tuning budget (0 skips it)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the phantom (motion, contrast region)."),
) -> None:
    """Make a dynamic phantom from the bundled sample with a needle entering, reconstruct it (with and
    without fine-tuning), score it in tissue against ground truth, sinc and both keyholes, and write a figure."""
    import warnings

    from rich.console import Console
    from rich.table import Table

    from mrisr.demo import run_demo

    console = Console()
    with user_errors(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_demo(output, frames=frames, keep=keep, finetune_minutes=finetune_minutes, seed=seed,
                          log=console.print)
    table = Table(title=f"Against the ground truth, {frames} frames at {keep}% of k-space (tissue = inside the head)")
    for col in ("method", "SSIM tissue", "PSNR tissue", "SSIM whole", "needle kept", "time (s)"):
        table.add_column(col, justify="right" if col != "method" else "left")
    for row in result.table:
        table.add_row(row["method"], f"{row['ssim_tissue_mean']:.4f} ± {row['ssim_tissue_std']:.4f}",
                      f"{row['psnr_tissue_mean']:.2f}", f"{row['ssim_whole_mean']:.4f}", f"{row['recovery']:.2f}",
                      f"{row['seconds']:.1f}" if row["seconds"] else "-")
    console.print(table)
    console.print("needle kept: share of the entering needle's true contrast in the output (the needle is not in the "
                  "planning scan; sinc shows what the frames measured).")
    console.print("The sample is Colin27, which the bundled model saw in training; unseen-anatomy results are in "
                  "benchmarks/RESULTS.md.")
    console.print(f"files in {result.output_dir}/, figure {result.figure}")
