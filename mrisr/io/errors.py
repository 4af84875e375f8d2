"""Errors raised at the boundary when an input or output cannot be used."""

from __future__ import annotations


class MrisrInputError(ValueError):
    """A user-facing problem with an input or output; the message is one line that names
    the file, what is wrong and how to fix it."""


def one_line(exc: BaseException) -> str:
    """An exception as one line: the message of a :class:`MrisrInputError`, else ``Type: message``."""
    text = " ".join(str(exc).split())
    if isinstance(exc, MrisrInputError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
