"""Errors raised at the boundary when an input or output cannot be used."""

from __future__ import annotations


class MrisrInputError(ValueError):
    """A user-facing problem with an input or output; the message is one line that names
    the file, what is wrong and how to fix it."""
