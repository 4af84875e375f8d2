"""Helpers shared by CLI commands: one-line errors, progress bars, thread settings."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import typer

from mrisr.io.errors import MrisrInputError


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error to stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn :class:`MrisrInputError` (and Ctrl-C) into a one-line message and a non-zero exit.

    The block is one write scope (:func:`mrisr.io.guard.write_scope`): no file it reads can be written over.
    """
    from mrisr.io.guard import write_scope

    try:
        with write_scope():
            yield
    except MrisrInputError as exc:
        fail(str(exc))
    except OSError as exc:
        # a failed read or write (disk full, permissions): one line naming the file, not a traceback
        fail(f"{exc.filename or 'file'}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        typer.echo("interrupted: no output was written", err=True)
        raise typer.Exit(130) from None


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr is not None
