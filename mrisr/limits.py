"""Bounds on numeric options, checked where they enter (CLI options, library entry points).

A value outside its bounds is a one-line :class:`~mrisr.io.errors.MrisrInputError` naming the
option, the value and the valid range, never a run that does not end, a silent no-op or a
terabyte allocation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from mrisr.io.errors import MrisrInputError, UsageError

#: the largest in-plane matrix accepted for an HR grid (scanners stop well below)
MAX_MATRIX = 4096
#: fine-tuning budget cap (a day)
MAX_MINUTES = 24 * 60
MAX_STEPS = 1_000_000
MAX_FRAMES = 10_000
#: the demo keeps about eight HR series of its phantom in memory (truth, baselines, reconstructions)
MAX_DEMO_FRAMES = 200
#: series the demo holds at once, for its memory check
DEMO_SERIES_HELD = 8
#: the smallest LR matrix a k-space fraction may leave, per in-plane axis
MIN_LR_MATRIX = 4
#: smallest sliding-window tile: in-plane (the network's stride multiple) and slices
MIN_TILE = (16, 16, 2)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_steps(steps: int | None, option: str = "--steps") -> None:
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise UsageError(f"{option} {steps}: must be an integer in 1..{MAX_STEPS}, e.g. {option} 200")


def check_lr(lr: float, option: str = "--lr") -> None:
    if not (math.isfinite(lr) and 0 < lr <= 1):
        raise UsageError(f"{option} {lr}: the learning rate must be a number in (0, 1], e.g. {option} 2e-5")


def check_frames(frames: int, option: str = "--frames") -> None:
    if not 1 <= frames <= MAX_FRAMES:
        raise UsageError(f"{option} {frames}: must be an integer in 1..{MAX_FRAMES}, e.g. {option} 20")


def check_keep(keep: float, option: str = "--keep", inplane: Sequence[int] | None = None) -> None:
    """``keep`` percent of k-space: in (0, 100] and, given the in-plane matrix, leaving at least 4x4 samples."""
    if not (math.isfinite(keep) and 0 < keep <= 100):
        raise UsageError(f"{option} {keep:g}: must be a percentage of k-space in (0, 100], e.g. {option} 6.25")
    if inplane is not None:
        from mrisr.kspace.functional import center_keep_shape

        kept = center_keep_shape(tuple(int(n) for n in inplane[:2]), keep)
        if min(kept) < MIN_LR_MATRIX:
            matrix = "x".join(str(int(n)) for n in inplane[:2])
            least = 100.0 * MIN_LR_MATRIX**2 / (int(inplane[0]) * int(inplane[1]))
            raise MrisrInputError(
                f"{option} {keep:g}: keeps only a {kept[0]}x{kept[1]} k-space matrix of the {matrix} image; "
                f"give at least {MIN_LR_MATRIX}x{MIN_LR_MATRIX} samples, e.g. {option} {max(least * 1.5, 0.1):.2g}"
            )
