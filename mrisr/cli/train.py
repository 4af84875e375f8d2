"""`mrisr train`: train a model from a YAML recipe."""

from __future__ import annotations

from pathlib import Path

import typer

from mrisr.cli.app import app
from mrisr.cli.common import user_errors


@app.command(short_help="Train an SR model from a YAML recipe.")
def train(
    config: str = typer.Argument(
        ..., help="YAML recipe file, or a packaged recipe: default, default-noprior, default-recurrent."
    ),
    output: Path = typer.Option(None, "-o", "--output", help="Output checkpoint (default: runs/<name>.safetensors)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a setting: --set optim.steps=200 (repeatable)."),
    resume: Path = typer.Option(None, "--resume", help="Resume from a checkpoint written by an earlier run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Train a prior-guided (or single-frame) SR model on pairs simulated from static HR volumes.

    CONFIG is a YAML file or the name of a packaged recipe (mrisr config list); mrisr config show
    NAME > my.yaml gives a copy to edit.

    The resolved recipe is validated, then saved inside the checkpoint; a CSV log of losses and
    validation SSIM is written next to it (<output>.log.csv).
    """
    from mrisr.resources import recipe_path
    from mrisr.training.config import load_config

    with user_errors():
        cfg = load_config(recipe_path(config), list(overrides))
        out = output or Path("runs") / f"{cfg.name}.safetensors"
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

        from mrisr.cli.common import progress_bar
        from mrisr.training.loop import train as run_training

        progress = progress_bar(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), quiet=quiet)
        with progress:
            task = progress.add_task("train", total=1.0, info="")

            def on_progress(step, total, info):
                text = f"step {step} loss {info['loss']:.4f}"
                if info.get("val_gain") is not None:
                    text += f" val SSIM gain {info['val_gain']:+.3f}"
                progress.update(task, completed=min(info["progress"], 1.0), info=text)

            path = run_training(cfg, out, resume=resume, on_progress=on_progress)
    typer.echo(f"{path}: trained; log {path.with_suffix('.log.csv')}")
