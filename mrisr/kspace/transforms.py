"""MONAI-style array and dictionary transforms over :mod:`mrisr.kspace.functional`.

They work on channel-first arrays ``(C, X, Y, Z)`` as MONAI pipelines carry them; the
undersampling acts on the spatial in-plane axes of every channel.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, Transform
from monai.utils import ensure_tuple

from mrisr.kspace.functional import center_keep_shape, crop_kspace, fftc, ifftc, pad_kspace
from mrisr.kspace.simulate import undersample_array


def _as_numpy(x):
    """numpy view of the input and the tensor it came from (``None`` for numpy input)."""
    if isinstance(x, torch.Tensor):  # MetaTensor included
        return x.detach().cpu().numpy(), x
    return np.asarray(x), None


def _back(x, like):
    """Return ``x`` in the input's kind: numpy, or a tensor on the input's device. A MetaTensor
    keeps its metadata only when the grid is unchanged (a cropped matrix has another affine)."""
    if like is None:
        return x
    out = torch.as_tensor(x, device=like.device)
    if isinstance(like, MetaTensor) and out.shape == like.shape:
        return MetaTensor(out, meta=like.meta)
    return out


class SimulateLowRes(Randomizable, Transform):
    """Undersample channel-first ``(C, X, Y, Z)`` data, keeping a percentage of k-space.

    Args:
        keep: fixed percentage, or ``(low, high)`` to draw one uniformly per call.
        mode: mask mode (see :func:`mrisr.kspace.make_mask`).
        zero_fill: return on the input grid (the usual choice for training).
        noise_snr: optional SNR, or ``(low, high)`` drawn per call.
    """

    def __init__(
        self,
        keep: float | Sequence[float],
        mode: str = "center",
        zero_fill: bool = True,
        noise_snr: float | Sequence[float] | None = None,
    ) -> None:
        self.keep = keep
        self.mode = mode
        self.zero_fill = zero_fill
        self.noise_snr = noise_snr
        self._keep = float(keep) if np.isscalar(keep) else None
        self._snr = None

    def randomize(self, data=None) -> None:
        self._keep = float(self.keep) if np.isscalar(self.keep) else float(self.R.uniform(*self.keep))
        if self.noise_snr is None:
            self._snr = None
        else:
            self._snr = float(self.noise_snr) if np.isscalar(self.noise_snr) else float(self.R.uniform(*self.noise_snr))

    def __call__(self, img, randomize: bool = True):
        if randomize:
            self.randomize()
        arr, like = _as_numpy(img)
        moved = np.moveaxis(arr, 0, -1)  # (X, Y, Z, C)
        out, _ = undersample_array(moved, self._keep, self.mode, self.zero_fill, self._snr, self.R)
        return _back(np.ascontiguousarray(np.moveaxis(out, -1, 0)), like)


class SimulateLowResd(Randomizable, MapTransform):
    """Dictionary version of :class:`SimulateLowRes`: reads ``keys`` and writes ``output_keys``
    (default: overwrite), recording the drawn keep percentage under ``keep_key``."""

    def __init__(
        self,
        keys,
        keep: float | Sequence[float],
        mode: str = "center",
        zero_fill: bool = True,
        noise_snr: float | Sequence[float] | None = None,
        output_keys=None,
        keep_key: str = "keep",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.sim = SimulateLowRes(keep, mode, zero_fill, noise_snr)
        self.output_keys = ensure_tuple(output_keys) if output_keys is not None else self.keys
        if len(self.output_keys) != len(self.keys):
            raise ValueError(f"output_keys {self.output_keys} must match keys {self.keys} one to one")
        self.keep_key = keep_key

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.sim.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        self.sim.randomize()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize()
        for key, out_key in zip(self.key_iterator(d), self.output_keys):
            d[out_key] = self.sim(d[key], randomize=False)
        d[self.keep_key] = self.sim._keep
        return d


class ZeroFill(Transform):
    """Zero-fill the in-plane k-space of ``(C, X, Y, Z)`` data to ``size`` (sinc interpolation)."""

    def __init__(self, size: Sequence[int]) -> None:
        self.size = tuple(int(s) for s in size)

    def __call__(self, img):
        arr, like = _as_numpy(img)
        k = fftc(arr, axes=(1, 2))
        out = np.abs(ifftc(pad_kspace(k, self.size, axes=(1, 2)), axes=(1, 2))).astype(np.float32)
        return _back(out, like)


class CenterCrop(Transform):
    """Crop the in-plane k-space of ``(C, X, Y, Z)`` data to the centred block for ``keep`` %."""

    def __init__(self, keep: float) -> None:
        self.keep = float(keep)

    def __call__(self, img):
        arr, like = _as_numpy(img)
        size = center_keep_shape(arr.shape[1:3], self.keep)
        out = np.abs(ifftc(crop_kspace(fftc(arr, axes=(1, 2)), size, axes=(1, 2)), axes=(1, 2))).astype(np.float32)
        return _back(out, like)
