"""Helpers shared by CLI commands: one-line errors, progress bars, thread settings, flags made
from the reconstruction option schema."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import typer

from mrisr.io.errors import MrisrInputError, OptionError


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error to stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound like Ctrl-C so every partial output is removed on the way out."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())
    typer.echo(f"warning: {text}", err=True)


class _NibabelLines(logging.Handler):
    """nibabel's header messages (it logs them) as our one-line warnings."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(f"warning: nibabel: {' '.join(record.getMessage().split())}", err=True)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    nib_logger = logging.getLogger("nibabel")
    handler = _NibabelLines(level=logging.WARNING)
    saved = nib_logger.handlers, nib_logger.propagate
    nib_logger.handlers, nib_logger.propagate = [handler], False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _warning_line
            yield
    finally:
        nib_logger.handlers, nib_logger.propagate = saved


@contextlib.contextmanager
def user_errors(interrupted: str = "no output was written", flags: dict[str, str] | None = None) -> Iterator[None]:
    """Turn :class:`MrisrInputError` (and Ctrl-C, SIGTERM) into a one-line message and a non-zero exit;
    a bad option value (:class:`OptionError`) is worded with its command-line flag.

    The block is one write scope (:func:`mrisr.io.guard.write_scope`): no file it reads can be written
    over. Python and nibabel warnings become one ``warning:`` line each on stderr (never stdout).

    Args:
        interrupted: what the interruption message says was kept or removed.
        flags: option fields this command spells differently (``{"finetune_minutes": "minutes"}``
            words a bad ``finetune_minutes`` as ``--minutes``).
    """
    from mrisr.io.guard import write_scope

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with write_scope(), _one_line_warnings():
            yield
    except OptionError as exc:
        if flags and exc.option in flags:
            exc = OptionError(exc.owner, flags[exc.option], exc.value, exc.rule)
        fail(exc.cli_message())
    except MrisrInputError as exc:
        fail(str(exc))
    except OSError as exc:
        # a failed read or write (disk full, permissions): one line naming the file, not a traceback
        fail(f"{exc.filename or 'file'}: {exc.strerror or exc}")
    except KeyboardInterrupt as exc:
        from mrisr.io.guard import remove_own_partials

        remove_own_partials()  # one created just before the signal, outside its writer's try
        terminated = isinstance(exc, Terminated)
        typer.echo(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}: {interrupted}", err=True)
        raise typer.Exit(143 if terminated else 130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr is not None


def progress_bar(*columns, quiet: bool = False, transient: bool = False):
    """A rich progress bar on stderr (stdout carries only the result, so ``> out.txt`` gets no bar
    lines); off with ``--quiet``. Messages printed through ``bar.console`` go to stderr as well."""
    from rich.console import Console
    from rich.progress import Progress

    return Progress(*columns, console=Console(stderr=True), disable=not progress_enabled(quiet), transient=transient)


def schema_option(name: str, *flags: str, help: str | None = None, **settings: Any) -> Any:
    """A typer option for the reconstruction option ``name``: its default, help text (with the valid
    range) and shell completion of its choices come from :class:`mrisr.reconstruct.ReconstructOptions`.

    Args:
        name: the option's field name, e.g. ``finetune_minutes``.
        flags: the flag spellings (default ``--finetune-minutes``).
        help: this command's help instead of the schema's (it should contain the schema's).
        settings: any other :func:`typer.Option` setting, e.g. ``metavar``.
    """
    from mrisr.reconstruct.options import option_choices, option_default, option_help

    choices = option_choices(name)
    if choices:

        def complete(incomplete: str) -> list[str]:
            return [choice for choice in choices if choice.startswith(incomplete)]

        settings.setdefault("autocompletion", complete)
    return typer.Option(option_default(name), *(flags or (f"--{name.replace('_', '-')}",)),
                        help=help if help is not None else option_help(name), **settings)
