"""napari reader for NIfTI volumes (``.nii``, ``.nii.gz``), 3-D and 4-D, and DICOM series (a folder, or
one ``.dcm`` file of a series; read by :func:`mrisr.io.load`, 3-D, dynamic and enhanced multi-frame).

A file whose voxel axes are permuted relative to the world (coronal, sagittal) is shown with its
axes reordered (see :mod:`mrisr.napari._geometry`) and a one-line note.

A 4-D series becomes one image layer ``(T, X, Y, Z)``; geometry, TR and header codes follow
:mod:`mrisr.napari._geometry`. A file that cannot be read gives a one-line error notification
(naming the file, the problem and the fix) instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mrisr.io.errors import MrisrInputError
from mrisr.io.load import is_dicom, is_nifti

LayerData = list[tuple[Any, ...]]


def _layer_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], LayerData] | None:
    """Return :func:`read_nifti` if every path is a NIfTI file name, else ``None`` (not ours)."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(is_nifti(p) or is_dicom(p) for p in paths):
        return None
    return read_nifti


def read_layer_data(path: str | Path) -> tuple[Any, dict[str, Any], str]:
    """Load one NIfTI file as a napari ``LayerDataTuple`` (raises :class:`MrisrInputError`)."""
    from mrisr.io.load import load
    from mrisr.napari._geometry import reorder_note, volume_to_layer_data, voxel_order

    path = Path(path)
    volume = load(path, validate=False)
    note = reorder_note(path.name, voxel_order(volume.affine))
    if note is not None:
        from napari.utils.notifications import show_info

        show_info(note)
    description = (volume.extra.get("dicom") or {}).get("description")
    name = _layer_name(path) + (f" {description}" if description else "")
    return volume_to_layer_data(volume, name=name, colormap="gray")


def read_nifti(path: str | Sequence[str]) -> LayerData:
    """npe2 reader: one image layer per file; unreadable files become error notifications."""
    from napari.utils.notifications import show_error

    paths = [path] if isinstance(path, str | Path) else list(path)
    layers: LayerData = []
    for one in paths:
        try:
            layers.append(read_layer_data(one))
        except MrisrInputError as exc:
            show_error(str(exc))
        except (OSError, ValueError, MemoryError) as exc:
            show_error(f"{one}: cannot be read ({type(exc).__name__}: {exc}); check that it is a complete NIfTI file")
    # napari's "read, nothing to add" sentinel: no second reader, no traceback
    return layers or [(None,)]
