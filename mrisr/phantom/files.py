"""A phantom on disk: the file names, and writing them together (none is left when one fails)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrisr.io.errors import MrisrInputError
from mrisr.io.guard import check_target, folder_lock, make_folder
from mrisr.io.jsonio import write_json_atomic
from mrisr.io.save import save_like
from mrisr.io.volume import Volume

__all__ = ["INSERT_FILES", "METADATA_FILE", "PHANTOM_FILES", "phantom_paths", "write_phantom"]

PHANTOM_FILES = {"planning": "planning.nii.gz", "hr": "dynamic_hr.nii.gz", "lr": "dynamic_lr.nii.gz"}
#: written only for phantoms with inserted structures
INSERT_FILES = {"insert_mask": "insert_mask.nii.gz", "planning_insert_mask": "planning_insert_mask.nii.gz"}
METADATA_FILE = "phantom.json"


def phantom_paths(directory: str | Path, insert_mask: bool = False, planning_insert_mask: bool = False) -> dict[str, Path]:
    """The files :meth:`DynamicPhantom.save` writes into ``directory``: planning, hr, lr, the insert
    masks (when there are inserts) and the metadata."""
    directory = Path(directory)
    paths = {key: directory / name for key, name in PHANTOM_FILES.items()}
    if insert_mask:
        paths["insert_mask"] = directory / INSERT_FILES["insert_mask"]
    if planning_insert_mask:
        paths["planning_insert_mask"] = directory / INSERT_FILES["planning_insert_mask"]
    paths["metadata"] = directory / METADATA_FILE
    return paths


def write_phantom(
    directory: str | Path,
    planning: Volume,
    hr: Volume,
    lr: Volume,
    tr: float,
    insert_mask: np.ndarray | None,
    planning_insert_mask: np.ndarray | None,
    metadata: dict,
) -> dict[str, Path]:
    """Write a phantom's images and ``phantom.json`` (``{"files": ..., **metadata}``) into ``directory``.

    Each image keeps its own geometry (``lr`` its coarsened affine) and the 4-D files carry ``tr``;
    the masks ``(X, Y, Z, T)`` are written as uint8 on ``hr``'s grid.

    Returns:
        ``{"planning": ..., "hr": ..., "lr": ..., ["insert_mask", "planning_insert_mask",] "metadata": ...}`` paths.

    Raises:
        MrisrInputError: the folder cannot be created, or a target is refused (:func:`mrisr.io.guard.check_target`).
    """
    directory = Path(directory)
    try:
        make_folder(directory)
    except OSError as exc:
        raise MrisrInputError(
            f"{directory}: cannot create output folder ({exc.strerror}); choose a writable location"
        ) from None
    with folder_lock(directory, "a phantom"):  # two runs on one folder must not mix their files
        return _write_locked(directory, planning, hr, lr, tr, insert_mask, planning_insert_mask, metadata)


def _write_locked(directory: Path, planning: Volume, hr: Volume, lr: Volume, tr: float,
                  insert_mask: np.ndarray | None, planning_insert_mask: np.ndarray | None,
                  metadata: dict) -> dict[str, Path]:
    paths = phantom_paths(directory, insert_mask is not None, planning_insert_mask is not None)
    for path in paths.values():
        check_target(path)  # all of them before the first is written
    # a mask an earlier phantom in this folder wrote and this one has not would pair with the wrong series
    stale = [path for key, path in phantom_paths(directory, True, True).items() if key not in paths]
    for path in stale:
        check_target(path)
    written: list[Path] = []
    try:
        save_like(paths["planning"], planning.data, planning)
        written.append(paths["planning"])
        save_like(paths["hr"], hr.data, hr, tr=tr)
        written.append(paths["hr"])
        save_like(paths["lr"], lr.data, lr, affine=lr.affine, tr=tr)
        written.append(paths["lr"])
        if insert_mask is not None:
            save_like(paths["insert_mask"], insert_mask.astype(np.uint8), hr, tr=tr, dtype=np.uint8)
            written.append(paths["insert_mask"])
        if planning_insert_mask is not None:
            save_like(paths["planning_insert_mask"], planning_insert_mask.astype(np.uint8), hr,
                      tr=tr, dtype=np.uint8)
            written.append(paths["planning_insert_mask"])
        files = {key: path.name for key, path in paths.items() if key != "metadata"}
        write_json_atomic(paths["metadata"], {"files": files, **metadata})
        for path in stale:
            path.unlink(missing_ok=True)
    except BaseException:
        # a phantom is its files together: none is left when one cannot be written (disk full)
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return paths
