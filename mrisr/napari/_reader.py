"""napari reader for NIfTI volumes (``.nii``, ``.nii.gz``), 3-D and 4-D, DICOM series (a folder, or
one ``.dcm`` file of a series; read by :func:`mrisr.io.load`, 3-D, dynamic and enhanced multi-frame),
and ISMRMRD Cartesian raw data (``.mrd``, and ``.h5`` files that hold an MRD dataset).

A file whose voxel axes are permuted relative to the world (coronal, sagittal) is shown with its
axes reordered (see :mod:`mrisr.napari._geometry`) and a one-line note.

A 4-D series becomes one image layer ``(T, X, Y, Z)``; geometry, TR and header codes follow
:mod:`mrisr.napari._geometry`. A file that cannot be read gives a one-line error notification
(naming the file, the problem and the fix) instead of a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mrisr.io.errors import MrisrInputError
from mrisr.io.load import image_stem, is_dicom, is_nifti
from mrisr.io.mrd_header import is_raw

LayerData = list[tuple[Any, ...]]


def _layer_name(path: Path) -> str:
    if path.name.lower().endswith(".dcm"):
        return path.name[: -len(".dcm")]
    return image_stem(path)


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def layer_name(stem: str, description: str | None = None) -> str:
    """A layer name from the file or folder name and a DICOM SeriesDescription, each said once:
    ``dyn_cor`` + ``dyn_cor`` -> ``dyn_cor``, ``IM0001`` + ``dynamic`` -> ``IM0001 dynamic``; one that
    holds the other (compared by words, ignoring case and punctuation) gives the longer."""
    description = (description or "").strip()
    if not description or _words(description) in _words(stem):
        return stem
    if _words(stem) in _words(description):
        return description
    return f"{stem} {description}"


def is_mrd_file(path: str | Path) -> bool:
    """A ``.mrd`` name, or an ``.h5`` file with an ISMRMRD dataset (a group holding ``xml`` and
    ``data``); other HDF5 files are left to other readers."""
    if not is_raw(path):
        return False
    if str(path).lower().endswith(".mrd"):
        return True
    try:
        import h5py

        with h5py.File(path, "r") as h5:
            return any(hasattr(group, "keys") and "xml" in group and "data" in group for group in h5.values())
    except Exception:  # not HDF5, unreadable, or h5py missing: not a file this reader claims
        return False


def get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], LayerData] | None:
    """Return :func:`read_nifti` if every path is a NIfTI file, a DICOM series or an MRD raw file, else ``None`` (not ours)."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(is_nifti(p) or is_dicom(p) or is_mrd_file(p) for p in paths):
        return None
    return read_nifti


def read_layer_data(path: str | Path) -> tuple[Any, dict[str, Any], str]:
    """Load one NIfTI or raw file as a napari ``LayerDataTuple`` (raises :class:`MrisrInputError`)."""
    from mrisr.io.load import load
    from mrisr.napari._geometry import reorder_note, volume_to_layer_data, voxel_order

    path = Path(path)
    volume = load(path, validate=False)
    note = reorder_note(path.name, voxel_order(volume.affine))
    if note is not None:
        from napari.utils.notifications import show_info

        show_info(note)
    name = layer_name(_layer_name(path), (volume.extra.get("dicom") or {}).get("description"))
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
            show_error(f"{one}: cannot be read ({type(exc).__name__}: {exc}); check that it is a complete NIfTI or MRD file")
    # napari's "read, nothing to add" sentinel: no second reader, no traceback
    return layers or [(None,)]
