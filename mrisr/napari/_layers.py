"""Layer pickers shared by the widgets: choices filtered by dimension, preferred roles first."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from magicgui.widgets import ComboBox

from mrisr.napari._geometry import layer_role

NONE_LABEL = "(none)"


def image_layers(viewer: Any, ndims: Sequence[int] = (3, 4), prefer: Sequence[str] = ()) -> list[Any]:
    """Image layers of ``viewer`` with ``ndim`` in ``ndims``, those whose role is in ``prefer`` first
    (in the order of ``prefer``), then the rest, top layer first."""
    from napari.layers import Image

    layers = [layer for layer in reversed(viewer.layers) if isinstance(layer, Image) and layer.ndim in ndims
              and not getattr(layer, "rgb", False)]

    def rank(layer: Any) -> int:
        role = layer_role(layer)
        return list(prefer).index(role) if role in prefer else len(prefer)

    return sorted(layers, key=rank)


def layer_combo(
    viewer: Any,
    label: str,
    ndims: Sequence[int] = (3, 4),
    prefer: Sequence[str] = (),
    optional: bool = False,
) -> ComboBox:
    """A combo box of image layers that refreshes when layers are added, removed or renamed.

    With ``optional`` the last choice is ``(none)`` (value ``None``); a preferred layer that
    appears while ``(none)`` is selected is picked automatically.
    """

    def choices(_widget: Any = None) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = [(layer.name, layer) for layer in image_layers(viewer, ndims, prefer)]
        if optional:
            items.append((NONE_LABEL, None))
        return items

    combo = ComboBox(label=label, choices=choices)

    def refresh(event: Any = None) -> None:
        combo.reset_choices()
        if combo.value is None:
            preferred = [layer for layer in image_layers(viewer, ndims, prefer) if layer_role(layer) in prefer]
            if preferred:
                combo.value = preferred[0]

    def watch_name(event: Any) -> None:
        event.value.events.name.connect(refresh)
        refresh()

    for layer in viewer.layers:
        layer.events.name.connect(refresh)
    viewer.layers.events.inserted.connect(watch_name)
    viewer.layers.events.removed.connect(refresh)
    viewer.layers.events.moved.connect(refresh)
    refresh()
    return combo


def chosen(combo: ComboBox, what: str) -> Any:
    """The layer selected in ``combo``; raises a clear error when none is."""
    from mrisr.io.errors import MrisrInputError

    layer = combo.value
    if layer is None:
        raise MrisrInputError(f"no {what} layer selected; open a NIfTI file or load the mrisr sample data first")
    return layer


def notify_errors(action: Callable[[], Any]) -> Callable[[], Any]:
    """Wrap a button action so user errors become notifications (the widget stays usable)."""
    import functools

    @functools.wraps(action)
    def run() -> Any:
        from napari.utils.notifications import show_error

        from mrisr.io.errors import MrisrInputError

        try:
            return action()
        except (MrisrInputError, ValueError) as exc:
            show_error(str(exc))
            return None

    return run
