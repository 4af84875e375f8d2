"""Between :class:`mrisr.io.Volume` and napari image layers: data axes, world geometry, metadata.

Convention used by every part of the plugin (napari's own plane-row-column order):

* layer data are the stored voxel axes reversed, ``(Z, Y, X)`` (a view, no copy); a 4-D series
  puts time FIRST, ``(T, Z, Y, X)``, so napari's frame slider is the leftmost;
* the layer ``affine`` is the file's voxel-to-world matrix (RAS+, mm) with its axes in the same
  reversed order, extended to 5x5 for a series with the time axis scaled by TR (seconds).
  napari's world axes are therefore ``(t, z, y, x)`` in seconds and RAS millimetres, and
  ``layer.data_to_world`` gives scanner coordinates in that order, so scans of different
  matrices (planning scan, LR series, SR result) overlay;
* napari shows the last two world axes as the plane: ``(y, x)``, the acquired in-plane plane of
  an axial slab, slices on the slider. :func:`show_inplane` also turns +y (anterior) up.
* a slab whose affine is oblique to the scanner axes is shown without its out-of-plane rotation
  (napari's "non-orthogonal slicing" warning); positions and every computation stay exact.
* a file whose voxel axes are permuted relative to the world (coronal, sagittal: voxel axis 1 runs
  along world z) would give napari a singular plane and abort the viewer, so its layer holds the
  voxel axes reordered to follow x, y, z (a transposed view, no resampling; the world geometry is
  the same) and ``metadata["mrisr"]["voxel_order"]`` records the order: :func:`array_to_volume`
  puts the file's order back, so the acquired in-plane axes stay those of the file in every
  computation. :func:`reorder_note` is the one-line note the reader shows.

The geometry of a layer is always read back from its transforms (``scale``, ``translate``,
``rotate``, ``shear`` and ``affine``), so moving a layer in napari moves what is written or
reconstructed. ``layer.metadata["mrisr"]`` keeps what napari cannot hold: TR, NIfTI codes,
the source path and the layer's role (``planning``, ``lr``, ``ground_truth``, ``sr``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mrisr.io.errors import MrisrInputError
from mrisr.io.volume import Volume

METADATA_KEY = "mrisr"
SPATIAL_LABELS = ("z", "y", "x")
TIME_LABEL = "t"
#: (x, y, z, 1) <-> (z, y, x, 1): between the file's axis order and napari's (its own inverse)
_REVERSE = np.eye(4)[[2, 1, 0, 3]]


def to_layer_axes(array: np.ndarray) -> np.ndarray:
    """``(X, Y, Z[, T])`` -> napari's ``(Z, Y, X)`` / ``(T, Z, Y, X)`` (a view)."""
    return array.transpose(3, 2, 1, 0) if array.ndim == 4 else array.transpose(2, 1, 0)


def from_layer_axes(array: np.ndarray) -> np.ndarray:
    """napari's ``(Z, Y, X)`` / ``(T, Z, Y, X)`` -> ``(X, Y, Z[, T])`` (a view)."""
    return array.transpose(3, 2, 1, 0) if array.ndim == 4 else array.transpose(2, 1, 0)


def voxel_order(affine: np.ndarray) -> tuple[int, int, int]:
    """The file axes to show as napari's x, y, z: for each world axis, the voxel axis that runs most along it.

    ``(0, 1, 2)`` for an axial (or mildly oblique) grid; ``(0, 2, 1)`` for a coronal one. A grid whose
    axes cannot be matched one to one (e.g. at exactly 45 degrees) keeps its order.
    """
    linear = np.abs(np.asarray(affine, dtype=np.float64)[:3, :3])
    linear = linear / np.maximum(linear.sum(axis=0, keepdims=True), 1e-12)
    world_of_axis = np.argmax(linear, axis=0)  # the world axis each voxel axis follows
    if sorted(world_of_axis.tolist()) != [0, 1, 2]:
        return (0, 1, 2)
    return tuple(int(a) for a in np.argsort(world_of_axis))  # type: ignore[return-value]


def reorder_note(name: str, order: tuple[int, ...]) -> str | None:
    """One line saying a layer shows its voxel axes reordered, or ``None`` when it does not."""
    if tuple(order) == (0, 1, 2):
        return None
    return (f"{name}: voxel axes ({'ijk'[order[0]]}, {'ijk'[order[1]]}, {'ijk'[order[2]]}) shown as (x, y, z) "
            "because they are permuted relative to the world (e.g. coronal); geometry unchanged, results keep "
            "the file's axes")


def volume_to_layer_data(
    volume: Volume,
    name: str,
    role: str | None = None,
    **layer_kwargs: Any,
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari ``LayerDataTuple`` of an image volume, placed in world space.

    Args:
        volume: ``(X, Y, Z)`` or ``(X, Y, Z, T)`` volume with its RAS affine (mm) and TR (s).
        name: layer name.
        role: what the layer is (``planning``, ``lr``, ``ground_truth``, ``sr``, ...); the
            widgets use it to preselect their inputs.
        **layer_kwargs: further layer keyword arguments (colormap, contrast_limits, ...).

    Returns:
        ``(data, kwargs, "image")`` with data ``(Z, Y, X)`` or ``(T, Z, Y, X)``.
    """
    ras = np.asarray(volume.affine, dtype=np.float64)
    order = voxel_order(ras)
    stored = np.asarray(volume.data)
    shown = ras
    if order != (0, 1, 2):
        stored = stored.transpose(*order, *range(3, stored.ndim))
        shown = ras[:, [*order, 3]]
    data = to_layer_axes(stored)
    affine = _REVERSE @ shown @ _REVERSE
    if volume.is_4d:
        full = np.eye(5)
        full[0, 0] = float(volume.tr) if volume.tr else 1.0
        full[1:, 1:] = affine
        affine = full
        labels: tuple[str, ...] = (TIME_LABEL, *SPATIAL_LABELS)
    else:
        labels = SPATIAL_LABELS
    meta = {
        "affine": ras.copy(),
        "tr": float(volume.tr) if volume.tr else None,
        "qform_code": int(volume.qform_code),
        "sform_code": int(volume.sform_code),
        "source": str(volume.source) if volume.source is not None else None,
        "role": role,
        "voxel_order": list(order),
    }
    kwargs: dict[str, Any] = {
        "name": name,
        "affine": affine,
        "axis_labels": labels,
        "metadata": {METADATA_KEY: meta},
        **layer_kwargs,
    }
    return data, kwargs, "image"


def data_to_world_matrix(ndim: int, state: dict[str, Any]) -> np.ndarray:
    """The ``(ndim+1, ndim+1)`` data-to-world matrix of a layer from its state.

    napari maps data to world as ``affine @ (translate, rotate, shear, scale)``; ``state`` is a
    layer's state dictionary (what a writer receives) or :func:`layer_state` of a layer.
    """
    from napari.utils.transforms import Affine

    given = {key: state[key] for key in ("scale", "translate", "rotate", "shear") if state.get(key) is not None}
    physical = Affine(ndim=ndim, **given).affine_matrix
    affine = state.get("affine")
    if affine is None:
        return physical
    if hasattr(affine, "affine_matrix"):
        affine = affine.affine_matrix
    return np.asarray(affine, dtype=np.float64) @ physical


def layer_state(layer: Any) -> dict[str, Any]:
    """The geometry part of a layer's state (without napari's private ``_get_state``)."""
    return {
        "scale": layer.scale,
        "translate": layer.translate,
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine.affine_matrix,
        "metadata": layer.metadata,
        "name": layer.name,
    }


def array_to_volume(data: Any, state: dict[str, Any], name: str = "layer") -> Volume:
    """A :class:`Volume` (``(X, Y, Z[, T])``) from napari image data ``(Z, Y, X)``/``(T, Z, Y, X)``
    and its layer state.

    Raises:
        MrisrInputError: for data that is not a 3-D volume or 4-D series, or a series whose
            time axis is mixed with space.
    """
    if isinstance(data, list | tuple):  # multiscale: the full-resolution level
        data = data[0]
    data = np.asarray(data)
    if data.ndim not in (3, 4):
        raise MrisrInputError(
            f"layer {name!r}: image is {data.ndim}-D with shape {tuple(data.shape)}; mrisr needs a 3-D volume "
            "(Z, Y, X) or a 4-D series (T, Z, Y, X); open NIfTI files with the mrisr reader"
        )
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise MrisrInputError(f"layer {name!r}: data type {data.dtype} is not numeric; use a greyscale image layer")
    matrix = data_to_world_matrix(data.ndim, state)
    meta = (state.get("metadata") or {}).get(METADATA_KEY, {})
    tr = None
    if data.ndim == 4:
        if np.abs(matrix[0, 1:4]).max() > 1e-9 or np.abs(matrix[1:4, 0]).max() > 1e-9:
            raise MrisrInputError(
                f"layer {name!r}: its transform mixes time with space; reset the layer's rotate/shear "
                "so the first axis is time only"
            )
        time_scale = float(matrix[0, 0])
        # a series read without TR got a unit time axis: keep "no TR" rather than invent 1 s
        tr = None if (time_scale == 1.0 and "tr" in meta and meta["tr"] is None) else time_scale
    data = from_layer_axes(data)
    affine = _REVERSE @ np.asarray(matrix[-4:, -4:], dtype=np.float64) @ _REVERSE
    order = tuple(meta.get("voxel_order") or (0, 1, 2))
    if order != (0, 1, 2):  # back to the file's voxel axes (see voxel_order)
        back = [int(a) for a in np.argsort(order)]
        data = data.transpose(*back, *range(3, data.ndim))
        affine = affine[:, [*back, 3]]
    source = meta.get("source")
    return Volume(
        data=data,
        affine=affine,
        tr=float(tr) if tr else None,
        qform_code=int(meta.get("qform_code", 1)),
        sform_code=int(meta.get("sform_code", 1)),
        source=Path(source) if source else None,
    )


def layer_to_volume(layer: Any) -> Volume:
    """A :class:`Volume` (``(X, Y, Z[, T])``, RAS affine, TR) of a napari image layer.

    The data is a view (no copy) when the layer holds a NumPy array.
    """
    if getattr(layer, "rgb", False):
        raise MrisrInputError(f"layer {layer.name!r}: RGB images are not MR volumes; choose a greyscale layer")
    return array_to_volume(layer.data, layer_state(layer), name=layer.name)


def frame_to_layer(values: np.ndarray, layer: Any) -> np.ndarray:
    """An ``(X, Y, Z)`` frame in the axis order of ``layer``'s data (its :func:`voxel_order`, reversed)."""
    order = tuple((getattr(layer, "metadata", None) or {}).get(METADATA_KEY, {}).get("voxel_order") or (0, 1, 2))
    return to_layer_axes(np.asarray(values).transpose(order))


def layer_role(layer: Any) -> str | None:
    """The role recorded by the plugin (``planning``, ``lr``, ``ground_truth``, ``sr``, ...), if any."""
    return (getattr(layer, "metadata", None) or {}).get(METADATA_KEY, {}).get("role")


def show_inplane(viewer: Any) -> None:
    """Show the acquired ``(x, y)`` plane (napari's default for these layers) with x across and
    y up: the neurological axial view of a RAS grid."""
    ndim = viewer.dims.ndim
    if ndim < 3:
        return
    y_axis, x_axis = ndim - 2, ndim - 1
    rest = [a for a in range(ndim) if a not in (x_axis, y_axis)]
    viewer.dims.order = (*rest, y_axis, x_axis)
    viewer.scene.camera.orientation2d = ("up", "right")
