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

from mrisr.io.errors import MrisrInputError, OptionError, UsageError

#: exit codes, the same for every command (docs/cli.md, "Exit codes"): a bad command line (unknown
#: option, a value outside its rule; typer/click use 2 too), a run that failed (an input or output
#: problem, a failed subject), Ctrl-C and SIGTERM (128 + the signal number, as shells report them)
EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print a one-line error to stderr and exit: by default a usage error (a bad command line);
    ``code=EXIT_FAILED`` for a run that failed."""
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
    """Turn :class:`MrisrInputError` (and Ctrl-C, SIGTERM) into a one-line message and the exit code
    of its kind, in this one place: a bad option value (:class:`UsageError`, :class:`OptionError`,
    worded with its command-line flag) exits :data:`EXIT_USAGE`, a failed run (any other
    :class:`MrisrInputError`, a failed read or write) :data:`EXIT_FAILED`, Ctrl-C
    :data:`EXIT_INTERRUPTED`, SIGTERM :data:`EXIT_TERMINATED`.

    The block is one write scope (:func:`mrisr.io.guard.write_scope`): no file it reads can be written
    over, and the folders it created for its outputs are removed again (when empty) if it does not
    end normally. Python and nibabel warnings become one ``warning:`` line each on stderr (never stdout).

    Args:
        interrupted: what the interruption message says was kept or removed.
        flags: option fields this command spells differently (``{"finetune_minutes": "minutes"}``
            words a bad ``finetune_minutes`` as ``--minutes``).
    """
    from mrisr.io.guard import remove_created_folders, write_scope

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with write_scope() as scope, _one_line_warnings():
            try:
                yield
            except BaseException:
                remove_created_folders(scope)  # a failed run leaves no empty folders it made for -o
                raise
    except OptionError as exc:
        if flags and exc.option in flags:
            exc = OptionError(exc.owner, flags[exc.option], exc.value, exc.rule)
        fail(exc.cli_message(), EXIT_USAGE)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    except MrisrInputError as exc:
        fail(str(exc), EXIT_FAILED)
    except OSError as exc:
        # a failed read or write (disk full, permissions): one line naming the file, not a traceback
        fail(f"{exc.filename or 'file'}: {exc.strerror or exc}", EXIT_FAILED)
    except KeyboardInterrupt as exc:
        from mrisr.io.guard import remove_own_partials

        remove_own_partials()  # one created just before the signal, outside its writer's try
        terminated = isinstance(exc, Terminated)
        typer.echo(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}: {interrupted}", err=True)
        raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None
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
