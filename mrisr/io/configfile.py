"""The one safe reader of the YAML and JSON files (and ``--set`` values) the command line takes.

A configuration file is small text written by a person, so everything else is refused before it
costs time or memory: a file larger than :data:`MAX_CONFIG_BYTES`, something that is not a regular
file (a FIFO, a device), more than :data:`MAX_ALIASES` YAML aliases (a "billion laughs" document
of a kilobyte expands to gigabytes once anything walks it), nesting deeper than the parser's
recursion allows. Messages quote at most 80 characters of any value (:func:`mrisr.io.errors.quote`).

Example:
    >>> parse_yaml("steps: 200", "--set optim.steps")
    {'steps': 200}
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from mrisr.io.errors import MrisrInputError

__all__ = ["MAX_ALIASES", "MAX_CONFIG_BYTES", "load_json_file", "load_yaml_file", "parse_json", "parse_yaml",
           "read_config_text"]

#: the largest configuration or metadata file read (the packaged recipes are a few kB)
MAX_CONFIG_BYTES = 1 << 20
#: YAML aliases (``*name``) allowed in one document; recipes need none, a bomb needs many
MAX_ALIASES = 64
#: characters of a parser's own message kept in ours (it may quote the offending line)
MESSAGE_CHARS = 80


def _short(text: str, limit: int = MESSAGE_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_config_text(path: str | Path, what: str = "config", limit: int = MAX_CONFIG_BYTES) -> str:
    """The text of a small configuration file, checked to be a regular file of at most ``limit`` bytes.

    Raises:
        MrisrInputError: missing, not a regular file, too large, unreadable or not UTF-8.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise MrisrInputError(f"{path}: {what} not found; check the path") from None
    except OSError as exc:
        raise MrisrInputError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise MrisrInputError(f"{path}: the {what} is not a regular file (a folder, FIFO or device); give a file")
    if info.st_size > limit:
        raise MrisrInputError(
            f"{path}: the {what} is {info.st_size} bytes, more than the {limit} allowed; a {what} is a short text file"
        )
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise MrisrInputError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if len(raw) > limit:  # grew while being read
        raise MrisrInputError(f"{path}: the {what} is more than {limit} bytes; a {what} is a short text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MrisrInputError(f"{path}: the {what} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _bounded_loader():
    import yaml

    class BoundedSafeLoader(yaml.SafeLoader):
        """PyYAML's safe loader that counts alias references while composing and stops past the budget."""

        def __init__(self, stream) -> None:
            super().__init__(stream)
            self.aliases_left = MAX_ALIASES

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                self.aliases_left -= 1
                if self.aliases_left < 0:
                    raise _TooManyAliases
            return super().compose_node(parent, index)

    return BoundedSafeLoader


class _TooManyAliases(Exception):
    pass


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` safely (see the module docstring); ``source`` names it in messages.

    Raises:
        MrisrInputError: too long, too many aliases, too deep or not valid YAML.
    """
    import yaml

    if len(text) > MAX_CONFIG_BYTES:
        raise MrisrInputError(f"{source}: {len(text)} characters, more than the {MAX_CONFIG_BYTES} allowed")
    try:
        return yaml.load(text, Loader=_bounded_loader())  # noqa: S506 (a SafeLoader subclass)
    except _TooManyAliases:
        raise MrisrInputError(
            f"{source}: more than {MAX_ALIASES} YAML aliases (*name); write the values out instead of referring to them"
        ) from None
    except RecursionError:
        raise MrisrInputError(f"{source}: YAML nested too deeply; a config has a few levels of sections") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise MrisrInputError(f"{source}: not valid YAML ({_short(first)}{where})") from None


def load_yaml_file(path: str | Path, what: str = "config") -> Any:
    """Read and parse a YAML file safely: :func:`read_config_text` then :func:`parse_yaml`."""
    return parse_yaml(read_config_text(path, what), str(path))


def parse_json(text: str | bytes, source: str, limit: int = MAX_CONFIG_BYTES) -> Any:
    """Parse JSON of at most ``limit`` characters.

    Raises:
        MrisrInputError: too long, too deep or not valid JSON.
    """
    if len(text) > limit:
        raise MrisrInputError(f"{source}: {len(text)} bytes of JSON, more than the {limit} allowed")
    try:
        return json.loads(text)
    except RecursionError:
        raise MrisrInputError(f"{source}: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MrisrInputError(f"{source}: not valid JSON ({_short(str(exc))})") from None


def load_json_file(path: str | Path, what: str = "JSON file", limit: int = MAX_CONFIG_BYTES) -> Any:
    """Read and parse a JSON file safely: a regular file of at most ``limit`` bytes."""
    return parse_json(read_config_text(path, what, limit), str(path), limit)
