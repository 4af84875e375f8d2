"""napari writer: an image layer to NIfTI with its world geometry, TR and header codes.

The affine written is the layer's data-to-world transform (so a layer moved in napari is saved
where it is shown), TR is the time scale of a ``(T, X, Y, Z)`` layer; everything goes through
:func:`mrisr.io.save_like` (atomic, qform and sform both set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mrisr.io.errors import MrisrInputError


def _nifti_dtype(data: np.ndarray) -> np.dtype:
    if data.dtype == bool:
        return np.dtype(np.uint8)
    if data.dtype in (np.float16,):
        return np.dtype(np.float32)
    return data.dtype


def write_image(path: str | Path, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer (``(X, Y, Z)`` or ``(T, X, Y, Z)``) to ``.nii``/``.nii.gz``.

    Args:
        path: output file name ending in ``.nii`` or ``.nii.gz``.
        data: layer data.
        meta: the layer's state (napari passes it to writers): geometry and metadata.

    Returns:
        ``[path]`` written.
    """
    from mrisr.io.load import is_nifti
    from mrisr.io.save import save_like
    from mrisr.napari._geometry import array_to_volume

    path = Path(path)
    if not is_nifti(path):
        raise MrisrInputError(f"{path}: the mrisr writer writes NIfTI only; end the file name in .nii.gz or .nii")
    volume = array_to_volume(data, meta, name=str(meta.get("name", path.name)))
    array = np.asarray(volume.data)
    save_like(path, array, volume, affine=volume.affine, tr=volume.tr, dtype=_nifti_dtype(array))
    return [str(path)]
