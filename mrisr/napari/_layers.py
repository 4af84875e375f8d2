"""Layer pickers shared by the widgets: choices filtered by dimension, preferred roles first."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from magicgui.widgets import ComboBox

from mrisr.napari._geometry import layer_role

NONE_LABEL = "(none)"
#: layer names that say "planning scan": BIDS T1w/anat, acq-planning, or the word itself
PLANNING_NAME = re.compile(r"(T1w|planning|acq-planning|anat)", re.IGNORECASE)


def guess_role(layer: Any) -> str | None:
    """The layer's role: the one the plugin recorded, else guessed: a 4-D series is the dynamic
    (``lr``), a 3-D scan named like a planning scan (``T1w``, ``planning``, ``acq-planning``, ``anat``)
    is the ``planning`` scan; anything else ``None``."""
    role = layer_role(layer)
    if role is not None:
        return role
    if getattr(layer, "ndim", 0) == 4:
        return "lr"
    if PLANNING_NAME.search(str(getattr(layer, "name", ""))):
        return "planning"
    return None


def image_layers(viewer: Any, ndims: Sequence[int] = (3, 4), prefer: Sequence[str] = (),
                 exclude: Any = None) -> list[Any]:
    """Image layers of ``viewer`` with ``ndim`` in ``ndims`` (but not ``exclude``), those whose
    (guessed) role is in ``prefer`` first (in the order of ``prefer``), then the rest, top layer first."""
    from napari.layers import Image

    layers = [layer for layer in reversed(viewer.layers) if isinstance(layer, Image) and layer.ndim in ndims
              and not getattr(layer, "rgb", False) and layer is not exclude]

    def rank(layer: Any) -> int:
        role = guess_role(layer)
        return list(prefer).index(role) if role in prefer else len(prefer)

    return sorted(layers, key=rank)


def layer_combo(
    viewer: Any,
    label: str,
    ndims: Sequence[int] = (3, 4),
    prefer: Sequence[str] = (),
    optional: bool = False,
    exclude: Callable[[], Any] | None = None,
) -> ComboBox:
    """A combo box of image layers that refreshes when layers are added, removed or renamed.

    With ``optional`` the last choice is ``(none)`` (value ``None``); a preferred layer that
    appears while ``(none)`` is selected is picked automatically. ``exclude`` returns a layer never
    offered (the prior combo leaves out the layer chosen as the dynamic).
    """

    def excluded() -> Any:
        return exclude() if exclude is not None else None

    def choices(_widget: Any = None) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = [(layer.name, layer)
                                        for layer in image_layers(viewer, ndims, prefer, excluded())]
        if optional:
            items.append((NONE_LABEL, None))
        return items

    combo = ComboBox(label=label, choices=choices)

    def refresh(event: Any = None) -> None:
        combo.reset_choices()
        if combo.value is None:
            preferred = [layer for layer in image_layers(viewer, ndims, prefer, excluded())
                         if guess_role(layer) in prefer]
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
