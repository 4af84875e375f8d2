"""Atomic text and JSON files: written under a temporary name in the same folder, then renamed, so a
reader (or a run killed midway) never sees half a file. Sidecars, statuses and tables use them."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from mrisr.io.guard import make_folder, partial_file, write_errors

__all__ = ["jsonable", "write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically, mode 0644; the folder is created.

    Returns:
        ``path``.

    Raises:
        MrisrInputError: the target is refused (:func:`mrisr.io.guard.check_target`) or cannot be
            written (disk full, permissions); nothing is left behind.
    """
    path = Path(path)
    make_folder(path.parent)
    tmp = partial_file(path)
    try:
        with write_errors(path), open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON can hold it: NaN -> ``None``, +-inf -> ``"inf"``/``"-inf"``, paths ->
    strings, NumPy arrays and scalars -> lists and numbers, tuples -> lists, keys -> strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    if hasattr(value, "item"):
        return value.item()
    return value


def write_json_atomic(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON (plus a final newline) to ``path`` atomically.

    Non-finite floats become ``null`` / ``"inf"`` so the file stays strict JSON (see :func:`jsonable`).

    Returns:
        ``path``.

    Raises:
        MrisrInputError: as :func:`write_text_atomic`.
    """
    return write_text_atomic(path, json.dumps(jsonable(data), indent=2, sort_keys=False) + "\n")
