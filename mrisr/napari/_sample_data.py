"""Sample data: a dynamic phantom made from the bundled Colin27 slab."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mrisr.phantom import DynamicPhantom

SAMPLE_FRAMES = 8
SAMPLE_KEEP = 6.25


def phantom_layers(phantom: DynamicPhantom) -> list[tuple[Any, dict[str, Any], str]]:
    """Planning scan, LR series (own coarser grid) and ground truth as napari layer data, in world space."""
    from mrisr.napari._geometry import volume_to_layer_data

    keep = f"{phantom.keep_actual:.3g} %"
    return [
        volume_to_layer_data(phantom.planning, "planning", role="planning", colormap="gray"),
        volume_to_layer_data(phantom.lr, f"dynamic LR ({keep} k-space)", role="lr", colormap="gray"),
        volume_to_layer_data(phantom.hr, "ground truth", role="ground_truth", colormap="gray"),
    ]


def dynamic_phantom() -> list[tuple[Any, dict[str, Any], str]]:
    """npe2 sample: :func:`mrisr.phantom.make_dynamic` of the bundled slab, 8 frames at 6.25 % k-space.

    Returns:
        Three image layers: ``planning`` ``(X, Y, Z)``, the LR series ``(T, X', Y', Z)`` and the
        ground truth ``(T, X, Y, Z)``.
    """
    from mrisr.data import load_sample
    from mrisr.phantom import make_dynamic

    return phantom_layers(make_dynamic(load_sample(), frames=SAMPLE_FRAMES, keep=SAMPLE_KEEP))
