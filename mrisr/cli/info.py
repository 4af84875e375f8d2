"""`mrisr info`: versions, threads, device, bundled data and models."""

from __future__ import annotations

import typer

from mrisr.cli.app import app


@app.command(short_help="Versions, threads, device, bundled data and models.")
def info() -> None:
    """Show versions, threads, compute device, bundled sample data and models."""
    import platform

    import monai
    import nibabel
    import numpy
    import SimpleITK
    import torch

    import mrisr

    typer.echo(f"mrisr      {mrisr.__version__}")
    typer.echo(f"python     {platform.python_version()} ({platform.machine()})")
    typer.echo(f"torch      {torch.__version__}  threads={torch.get_num_threads()}")
    typer.echo(f"monai      {monai.__version__}")
    typer.echo(f"nibabel    {nibabel.__version__}   SimpleITK {SimpleITK.Version_VersionString()}   numpy {numpy.__version__}")
    cuda = torch.cuda.is_available()
    typer.echo(f"device     {'cuda: ' + torch.cuda.get_device_name(0) if cuda else 'cpu (no CUDA device found)'}")
    try:
        from mrisr.data import sample_path

        typer.echo(f"sample     {sample_path()}")
    except Exception as exc:  # keep info usable even on a broken install
        typer.echo(f"sample     unavailable ({exc})")
    try:
        from mrisr.models.registry import bundled_models

        for name, path in bundled_models().items():
            typer.echo(f"model      {name}: {path}")
    except Exception as exc:
        typer.echo(f"models     unavailable ({exc})")
