"""Cartesian in-plane k-space masks: one base class, one override point, a string factory.

Masks are boolean arrays over the in-plane k-space ``(X, Y)`` (centred: DC at ``N // 2``).
Phase-encoding lines run along X and are selected along Y, as on most 2-D Cartesian scans.
The ``random`` and ``equispaced`` masks follow the fastMRI conventions: the fully sampled
centre has ``round(N * center_fraction)`` lines, and random masks pick each remaining line with
probability ``(N / acceleration - num_low) / (N - num_low)``.
"""

from __future__ import annotations

import numpy as np

from mrisr.kspace.functional import center_keep_shape


class KspaceMask:
    """Base class: subclasses implement :meth:`make`.

    Args:
        keep: nominal percentage of k-space samples to keep, in ``(0, 100]``.
    """

    name = "base"

    def __init__(self, keep: float) -> None:
        if not (0 < keep <= 100):
            raise ValueError(f"keep must be in (0, 100] percent, got {keep}")
        self.keep = float(keep)

    @property
    def acceleration(self) -> float:
        return 100.0 / self.keep

    def make(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """Boolean mask of in-plane ``shape`` ``(X, Y)``."""
        raise NotImplementedError

    def __call__(self, shape: tuple[int, int], rng: np.random.Generator | int | None = None) -> np.ndarray:
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return self.make(tuple(int(s) for s in shape), rng)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keep={self.keep})"


class CenterMask(KspaceMask):
    """Central rectangle with the matrix's aspect ratio (the papers' dynamic-MRI setting)."""

    name = "center"

    def make(self, shape, rng):
        size = center_keep_shape(shape, self.keep)
        mask = np.zeros(shape, dtype=bool)
        sx = shape[0] // 2 - size[0] // 2
        sy = shape[1] // 2 - size[1] // 2
        mask[sx : sx + size[0], sy : sy + size[1]] = True
        return mask


class _LineMask(KspaceMask):
    def __init__(self, keep: float, center_fraction: float | None = None) -> None:
        super().__init__(keep)
        # a centre of about a third of the kept lines, like fastMRI's 0.08 at 4x
        self.center_fraction = float(center_fraction) if center_fraction is not None else min(0.32 / self.acceleration, 1.0)
        if not (0 < self.center_fraction <= 1):
            raise ValueError(f"center_fraction must be in (0, 1], got {center_fraction}")

    def _center(self, n: int) -> tuple[np.ndarray, int]:
        num_low = max(1, int(round(n * self.center_fraction)))
        lines = np.zeros(n, dtype=bool)
        start = n // 2 - num_low // 2
        lines[start : start + num_low] = True
        return lines, num_low

    def lines(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def make(self, shape, rng):
        lines = self.lines(shape[1], rng)
        return np.broadcast_to(lines[None, :], shape).copy()


class RandomLineMask(_LineMask):
    """Fully sampled centre plus uniformly random phase-encode lines (fastMRI ``random``)."""

    name = "random"

    def lines(self, n, rng):
        lines, num_low = self._center(n)
        if num_low < n:
            prob = (n / self.acceleration - num_low) / (n - num_low)
            lines |= rng.uniform(size=n) < max(prob, 0.0)
        return lines


class EquispacedLineMask(_LineMask):
    """Fully sampled centre plus every ``R``-th line with a random offset (fastMRI ``equispaced``)."""

    name = "equispaced"

    def lines(self, n, rng):
        lines, num_low = self._center(n)
        # spacing chosen so the total matches n / acceleration (fastMRI's adjusted acceleration)
        remaining = max(n / self.acceleration - num_low, 1e-6)
        spacing = max(1, int(round((n - num_low) / remaining)))
        offset = int(rng.integers(0, spacing))
        lines[offset::spacing] = True
        return lines


class VariableDensityMask(KspaceMask):
    """2-D variable-density random sampling: probability falls off with k-space radius.

    The density ``p(r) = (1 - r)^power`` is scaled to hit ``keep`` percent on average, with a
    small fully sampled disc at the centre. Suits 3-D Cartesian acquisitions with two
    phase-encoding directions.
    """

    name = "variable-density"

    def __init__(self, keep: float, power: float = 3.0, center_radius: float = 0.04) -> None:
        super().__init__(keep)
        self.power = float(power)
        self.center_radius = float(center_radius)

    def make(self, shape, rng):
        gx = (np.arange(shape[0]) - shape[0] // 2) / (shape[0] / 2)
        gy = (np.arange(shape[1]) - shape[1] // 2) / (shape[1] / 2)
        radius = np.sqrt(gx[:, None] ** 2 + gy[None, :] ** 2) / np.sqrt(2)
        density = (1 - np.clip(radius, 0, 1)) ** self.power
        target = self.keep / 100 * radius.size
        lo, hi = 0.0, 1e4
        for _ in range(60):  # bisect a scale so the expected count matches the target
            mid = (lo + hi) / 2
            if np.minimum(density * mid, 1).sum() < target:
                lo = mid
            else:
                hi = mid
        prob = np.minimum(density * lo, 1)
        mask = rng.uniform(size=shape) < prob
        mask |= radius * np.sqrt(2) <= self.center_radius
        return mask


MASKS: dict[str, type[KspaceMask]] = {
    cls.name: cls for cls in (CenterMask, RandomLineMask, EquispacedLineMask, VariableDensityMask)
}


def make_mask(name: str, keep: float, **kwargs) -> KspaceMask:
    """Mask by name: ``center``, ``random``, ``equispaced`` or ``variable-density``.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    try:
        cls = MASKS[name]
    except KeyError:
        raise ValueError(f"unknown mask mode {name!r}; choose one of {', '.join(MASKS)}") from None
    return cls(keep, **kwargs)
