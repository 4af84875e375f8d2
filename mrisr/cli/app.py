"""The typer application every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="mrisr",
    help="Super-resolution of dynamic MRI: simulate, train, fine-tune, reconstruct step-wise and evaluate.",
    no_args_is_help=True,
    add_completion=True,
    # click's plain help: wrapped to the terminal, option names never cut short (rich tables
    # truncate them at 80 columns)
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        import mrisr

        typer.echo(f"mrisr {mrisr.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Show the mrisr version and exit."
    ),
) -> None:
    """Super-resolution of dynamic MRI: simulate, train, fine-tune, reconstruct step-wise and evaluate.

    Shell completion: mrisr --install-completion (bash, zsh, fish, PowerShell).
    """
