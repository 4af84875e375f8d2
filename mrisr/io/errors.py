"""Errors raised at the boundary when an input or output cannot be used."""

from __future__ import annotations


class MrisrInputError(ValueError):
    """A user-facing problem with an input or output; the message is one line that names
    the file, what is wrong and how to fix it."""


class UsageError(MrisrInputError):
    """A command-line value outside its rule (``--keep 0``, ``--frames 0``), found before any work:
    the CLI exits with the usage code (2), as for an unknown option, not the failed-run code (1)."""


def quote(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to at most ``limit`` characters (``...`` marks the cut), for error messages:
    a hostile value (a 1 MB string, an expanded YAML alias) must not become a 1 MB message."""
    text = repr(value)
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def one_line(exc: BaseException) -> str:
    """An exception as one line: the message of a :class:`MrisrInputError`, else ``Type: message``."""
    text = " ".join(str(exc).split())
    if isinstance(exc, MrisrInputError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class OptionError(UsageError):
    """A bad value of a library option object (e.g. :class:`mrisr.reconstruct.ReconstructOptions`).

    The message speaks the library's words (``ReconstructOptions.prior_mode = 'bogus': choose one
    of tracked, planning, previous``); :meth:`cli_message` says the same of the command-line flag
    (``--prior-mode bogus: ...``), which the CLI prints instead.

    Attributes:
        owner: the option object's class name.
        option: the field name.
        value: the rejected value.
        rule: what a valid value is, with an example.
    """

    def __init__(self, owner: str, option: str, value: object, rule: str) -> None:
        self.owner, self.option, self.value, self.rule = owner, option, value, rule
        super().__init__(f"{owner}.{option} = {quote(value)}: {rule}")

    def cli_message(self) -> str:
        """The message with the field as its command-line flag (``prior_mode`` -> ``--prior-mode``)."""
        value = " ".join(map(str, self.value)) if isinstance(self.value, tuple | list) else str(self.value)
        value = value if len(value) <= 80 else value[:77] + "..."
        return f"--{self.option.replace('_', '-')} {value}: {self.rule}"
