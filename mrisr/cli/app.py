"""The typer application every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="mrisr",
    help="Super-resolution of dynamic MRI: simulate, train, fine-tune, reconstruct step-wise and evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
