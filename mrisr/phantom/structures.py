"""Structures inserted into a phantom where the planning scan is wrong (:mod:`mrisr.inserts`): a
needle advancing into the tissue during the series, or one in the planning scan only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrisr.inserts import NeedlePath, needle_occupancy, plan_needle

__all__ = ["Structures", "plan_structures"]


@dataclass
class Structures:
    """Needles planned in the static anatomy.

    Attributes:
        needle: the needle inserted into the frames (absent from the planning scan), or None.
        planning_needle: the needle only the planning scan has, or None.
        planning_occupancy: ``(X, Y, Z)`` occupancy of ``planning_needle`` at full depth, or None.
    """

    needle: NeedlePath | None
    planning_needle: NeedlePath | None
    planning_occupancy: np.ndarray | None

    def frame_occupancy(self, shape: tuple[int, ...], zooms: tuple[float, ...], t: int, frames: int) -> np.ndarray:
        """``(X, Y, Z)`` occupancy of the inserted needle in frame ``t``: deeper in every frame."""
        return needle_occupancy(shape, zooms, self.needle, self.needle.max_depth_mm * (t + 1) / frames)

    def settings(self, insert: str | None, planning_insert: str | None) -> dict:
        """The ``insert`` and ``planning_insert`` entries of the phantom's settings."""
        return {
            "insert": None if self.needle is None else {"kind": insert, **self.needle.as_dict()},
            "planning_insert": (
                None if self.planning_needle is None else {"kind": planning_insert, **self.planning_needle.as_dict()}
            ),
        }


def plan_structures(
    image: np.ndarray,
    zooms: tuple[float, float, float],
    insert: str | None,
    planning_insert: str | None,
    insert_rng: np.random.Generator,
    planning_insert_rng: np.random.Generator,
) -> Structures:
    """Plan the needles ``insert`` and ``planning_insert`` ask for in ``image`` ``(X, Y, Z)``, each from
    its own random stream (so planning one never changes the other)."""
    needle = plan_needle(image, zooms, insert_rng) if insert else None
    planning_needle = plan_needle(image, zooms, planning_insert_rng) if planning_insert else None
    planning_occupancy = (needle_occupancy(image.shape, zooms, planning_needle, planning_needle.max_depth_mm)
                          if planning_needle is not None else None)
    return Structures(needle, planning_needle, planning_occupancy)
