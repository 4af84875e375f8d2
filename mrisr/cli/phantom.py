"""`mrisr phantom`: make a dynamic phantom (planning, HR ground truth, LR series) from a static volume."""

from __future__ import annotations

from pathlib import Path

import typer

from mrisr.cli.app import app
from mrisr.cli.common import fail, user_errors


def _describe(volume) -> str:
    shape = "x".join(str(s) for s in volume.data.shape)
    zooms = "x".join(f"{z:g}" for z in volume.zooms)
    return f"{shape} at {zooms} mm"


@app.command(short_help="Make a dynamic phantom from a real static volume.")
def phantom(
    output: Path = typer.Option(
        ..., "-o", "--output", help="Output folder for planning.nii.gz, dynamic_hr.nii.gz, dynamic_lr.nii.gz."
    ),
    source: Path = typer.Option(None, "--source", help="Static 3-D HR volume; default: the bundled Colin27 slab."),
    frames: int = typer.Option(20, "--frames", help="Number of frames (>= 1)."),
    keep: float = typer.Option(6.25, "--keep", help="Percentage of k-space kept for the LR series, in (0, 100]."),
    seed: int = typer.Option(0, "--seed", help="Seed of breathing, irregular motion, contrast region and noise."),
    tr: float = typer.Option(0.5, "--tr", help="Time between frames in seconds."),
    motion_mm: float = typer.Option(4.0, "--motion-mm", help="Largest breathing displacement in mm."),
    contrast: bool = typer.Option(
        True, "--contrast/--no-contrast", help="Add contrast uptake (up to +40 % in a sphere)."
    ),
    noise_snr: float = typer.Option(
        None, "--noise-snr", help="Add complex Gaussian noise to the LR series at this SNR."
    ),
    insert: str = typer.Option(
        None, "--insert", help="needle: a needle advancing into the tissue, absent from the planning scan "
        "(writes insert_mask.nii.gz)."
    ),
    planning_insert: str = typer.Option(
        None, "--planning-insert", help="needle: a needle in the planning scan only (writes planning_insert_mask.nii.gz)."
    ),
    planning_contrast: str = typer.Option(
        "same", "--planning-contrast", help="same, or swap: the planning scan with another tissue contrast."
    ),
    through_plane_mm: float = typer.Option(
        0.0, "--through-plane-mm", help="Largest breathing motion along the slice axis, in mm."
    ),
    planning_noise_snr: float = typer.Option(
        None, "--planning-noise-snr", help="Add noise of its own to the planning scan at this SNR (a separately "
        "acquired scan; without it the planning scan shares the source volume's noise with every frame)."
    ),
) -> None:
    """Make a dynamic phantom from a real static volume.

    Each HR frame is the source anatomy moved by a breathing deformation (plus a small irregular component), with optional contrast uptake; the planning scan is the same anatomy at deep inspiration without contrast; the LR series keeps the centre of k-space (a genuinely smaller matrix with its correct affine). All three share world space.
    """
    from mrisr.limits import MAX_FRAMES

    if not 1 <= frames <= MAX_FRAMES:
        fail(f"--frames {frames}: must be an integer in 1..{MAX_FRAMES}, e.g. 20")
    if not (0 < keep <= 100):
        fail(f"--keep {keep}: must be a percentage in (0, 100], e.g. 6.25")
    if not tr > 0:
        fail(f"--tr {tr}: must be > 0 seconds, e.g. 0.5")
    if not motion_mm >= 0:
        fail(f"--motion-mm {motion_mm}: must be >= 0, e.g. 4")
    if noise_snr is not None and not noise_snr > 0:
        fail(f"--noise-snr {noise_snr}: must be > 0")
    if output.exists() and not output.is_dir():
        fail(f"{output}: exists and is not a folder; -o takes a folder, e.g. -o phantom/")

    from mrisr.io import load
    from mrisr.io.guard import check_target
    from mrisr.phantom import make_dynamic, phantom_paths

    with user_errors():
        if source is None:
            from mrisr.data import load_sample

            static = load_sample()
        else:
            static = load(source)
        for target in phantom_paths(output).values():
            check_target(target)  # the source is never overwritten: refused before any work
        result = make_dynamic(
            static,
            frames=frames,
            keep=keep,
            seed=seed,
            tr=tr,
            motion_mm=motion_mm,
            contrast=contrast,
            noise_snr=noise_snr,
            insert=insert,
            planning_insert=planning_insert,
            planning_contrast=planning_contrast,
            through_plane_mm=through_plane_mm,
            planning_noise_snr=planning_noise_snr,
        )
        paths = result.save(output)
    typer.echo(f"source {static.name}: {_describe(static)}")
    typer.echo(
        f"{paths['planning']}: planning {_describe(result.planning)} (breathing phase {result.planning_phase:.2f})"
    )
    typer.echo(f"{paths['hr']}: HR ground truth {_describe(result.hr)}, TR {result.tr:g} s")
    typer.echo(
        f"{paths['lr']}: LR series {_describe(result.lr)}, TR {result.tr:g} s, "
        f"kept {result.keep_actual:.2f}% of k-space (asked {keep:g}%)"
    )
    for key, what in (("insert_mask", "core of the inserted needle per frame"),
                      ("planning_insert_mask", "site of the planning-only needle per frame")):
        if key in paths:
            typer.echo(f"{paths[key]}: {what}")
    typer.echo(f"{paths['metadata']}: breathing trace, contrast curve and settings")
