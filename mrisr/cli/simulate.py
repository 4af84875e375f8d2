"""`mrisr simulate`: undersample HR data in k-space."""

from __future__ import annotations

from pathlib import Path

import typer

from mrisr.cli.app import app
from mrisr.cli.common import fail, user_errors


@app.command(short_help="Simulate a low-resolution acquisition in k-space.")
def simulate(
    hr: Path = typer.Argument(..., help="HR volume or series (NIfTI, NRRD, MHA, DICOM folder, or fully sampled ISMRMRD raw data .h5/.mrd)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (.nii.gz)."),
    keep: float = typer.Option(6.25, "--keep", help="Percentage of k-space kept, in (0, 100]."),
    mode: str = typer.Option("center", "--mode", help="center | random | equispaced | variable-density."),
    zero_fill: bool = typer.Option(False, "--zero-fill", help="Zero-fill back to the HR matrix (sinc interpolation)."),
    noise_snr: float = typer.Option(None, "--noise-snr", help="Add complex Gaussian noise at this SNR."),
    seed: int = typer.Option(0, "--seed", help="Seed for masks and noise."),
    three_d: bool = typer.Option(False, "--3d", help="Crop the slice axis too (3-D acquisitions)."),
) -> None:
    """Simulate a low-resolution acquisition by keeping part of k-space.

    `center` keeps the central in-plane block and, without --zero-fill, writes the genuinely
    smaller LR matrix with its correct affine (as a scanner would); the other modes keep
    phase-encode lines or a variable-density pattern and write a zero-filled image.
    """
    from mrisr.io import MrisrInputError, check_writable, load, save_like
    from mrisr.kspace import MASKS, simulate_volume
    from mrisr.limits import check_keep

    if not (0 < keep <= 100):
        fail(f"{hr}: --keep {keep:g} is not a percentage in (0, 100]; pass e.g. --keep 6.25")
    if mode not in MASKS:
        fail(f"{hr}: --mode {mode} is unknown; choose one of {', '.join(MASKS)}")
    if noise_snr is not None and not noise_snr > 0:
        fail(f"{hr}: --noise-snr {noise_snr:g} must be > 0, e.g. --noise-snr 30")
    with user_errors():
        check_writable(output, inputs=(hr,))
        volume = load(hr)
        if mode == "center":
            check_keep(keep, inplane=volume.spatial_shape[:2])
        if three_d and mode != "center":
            raise MrisrInputError(f"{hr}: --3d works with --mode center only")
        lowres, info = simulate_volume(volume, keep, mode, zero_fill, noise_snr, seed, three_d=three_d)
        save_like(output, lowres.data, volume, affine=lowres.affine, tr=volume.tr)
    typer.echo(
        f"{output}: {mode} mask kept {info.keep_actual:.2f}% of k-space (asked {keep}%), "
        f"matrix {'x'.join(str(s) for s in lowres.data.shape)}"
    )
