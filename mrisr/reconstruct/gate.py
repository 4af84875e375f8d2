"""The gate: the reference's detail kept only where the measured frame agrees with it.

Two steps of the per-frame pipeline (:func:`mrisr.reconstruct.pipeline.reconstruct_frame`), the
first and the last of forming the network's input (:func:`mrisr.reconstruct.network_input.form_network_input`):

* :func:`match_intensity` scales the registered reference so that its measured band matches the
  frame's sinc in the object: a global intensity change between frames (contrast arriving
  everywhere, a receiver-gain change) is then not mistaken for disagreement;
* :func:`gate` forms ``sinc + w * (reference - band(reference))``: the measured frame (zero-filled)
  plus the reference's detail outside the measured band, weighted by
  ``w = clip(2 - d / threshold, 0, 1)`` with ``d`` the disagreement map
  (:func:`mrisr.reconstruct.maps.disagreement_map`) that forgives the difference a misregistration
  of :data:`GATE_MISREGISTRATION` HR voxels makes at an edge, spread by a minimum filter over one LR
  voxel so the whole footprint of a disagreeing structure is covered. Forgiving edges lets the
  threshold be lower, so a structure in flat tissue that only the frame or only the reference has
  closes the gate more fully. Where the frame and the reference agree it is a keyhole in image
  space; where they disagree (a structure that entered, one that left, a registration error,
  another contrast) it falls back to what was measured, so the reference can neither hide nor
  invent it.
"""

from __future__ import annotations

import numpy as np

from mrisr.kspace.band import measured_band, object_mask

#: disagreement below which the gated keyhole keeps all of the prior's detail (none at twice it),
#: measured with :data:`GATE_MISREGISTRATION`. Both were chosen on MNI152 phantoms, never on the
#: held-out real scan: of the settings that brought a planning-only needle's leakage to sinc's level,
#: the one with the best tissue SSIM (benchmarks/RESULTS.md, 'Design decisions and their measurements')
GATE_THRESHOLD = 0.10
#: HR voxels of misregistration the gate forgives at an edge (:func:`mrisr.reconstruct.maps.disagreement_map`)
GATE_MISREGISTRATION = 3.0



def band_factor(band: np.ndarray, sinc: np.ndarray, high: float | None = None) -> float:
    """Least-squares factor matching a reference's measured band to the frame's sinc in the object
    (:func:`mrisr.kspace.band.object_mask`, ``high`` when the caller has it); 1 when the fit is not positive.

    Two float32 dot products in torch with the object mask as a weight (both cores): 3.6 ms on a
    256x256x32 frame against 13 ms for numpy's gather and float64 sums, the factor the same to
    5e-7 of itself.
    """
    import torch

    sinc_t = torch.from_numpy(np.ascontiguousarray(sinc, dtype=np.float32)).reshape(-1)
    band_t = torch.from_numpy(np.ascontiguousarray(band, dtype=np.float32)).reshape(-1)
    weighted = torch.from_numpy(object_mask(sinc, high)).reshape(-1).to(torch.float32).mul_(band_t)
    denom = float(torch.dot(weighted, band_t))
    factor = float(torch.dot(weighted, sinc_t)) / denom if denom > 0 else 1.0
    return factor if np.isfinite(factor) and factor > 0 else 1.0



def match_intensity(reference: np.ndarray, sinc: np.ndarray, lr_inplane: tuple[int, int],
                    high: float) -> tuple[np.ndarray, np.ndarray]:
    """The reference scaled so its measured band matches the frame's sinc in the object
    (:func:`band_factor`), and that band; the band is linear in the scale, so the match costs one
    dot product.

    Args:
        reference: the registered reference on the HR grid ``(X', Y', Z)``, float32.
        sinc: the frame zero-filled to the HR grid, float32 and contiguous.
        lr_inplane: the LR in-plane matrix (the measured band).
        high: :func:`mrisr.kspace.band.frame_high` of ``sinc``.

    Returns:
        ``(reference, band)``, both ``(X', Y', Z)`` float32.
    """
    band = measured_band(reference, lr_inplane)
    factor = np.float32(band_factor(band, sinc, high))
    return reference * factor, band * factor


def gate(reference: np.ndarray, band: np.ndarray, sinc: np.ndarray, lr_inplane: tuple[int, int], high: float,
         threshold: float = GATE_THRESHOLD) -> np.ndarray:
    """The gated composite ``sinc + w * (reference - band)`` (see the module docstring).

    Args:
        reference: the matched (and change-corrected) reference ``(X', Y', Z)``.
        band: its measured band.
        sinc: the frame zero-filled to the HR grid, float32 and contiguous.
        lr_inplane: the LR in-plane matrix.
        high: :func:`mrisr.kspace.band.frame_high` of ``sinc``.
        threshold: disagreement up to which all of the reference's detail is kept (none at twice it).

    Returns:
        ``(X', Y', Z)`` float32, non-negative.
    """
    from mrisr.reconstruct.maps import disagreement_map

    disagreement = disagreement_map(reference, sinc, lr_inplane, band=band, misregistration=GATE_MISREGISTRATION,
                                    high=high)
    import torch

    # element-wise in torch (both cores), the same float32 operations as numpy's
    weight = torch.from_numpy(disagreement).div_(np.float32(threshold)).neg_().add_(2.0).clamp_(0.0, 1.0).numpy()
    weight = torch.from_numpy(spread_minimum(weight, 2 * int(round(reference.shape[0] / lr_inplane[0])) + 1))
    detail = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32)) - torch.from_numpy(
        np.ascontiguousarray(band, dtype=np.float32))
    return detail.mul_(weight).add_(torch.from_numpy(sinc)).clamp_min_(0.0).numpy()


def spread_minimum(weight: np.ndarray, size: int) -> np.ndarray:
    """In-plane minimum filter of ``(X, Y, Z)`` over ``size x size`` voxels, as
    ``scipy.ndimage.minimum_filter(weight, (size, size, 1))`` computes it (mode ``reflect``: near
    a border the window's reflected voxels are all inside the clipped window, so it is the minimum
    over the clipped window).

    Two 1-D max-pools of the negated weight in torch, on a slice-major view (torch's pooling is
    vectorised over the innermost, slice axis): the same values (tested), several times faster than
    scipy's filter (benchmarks/RESULTS.md, 'Design decisions and their measurements').
    """
    import torch
    import torch.nn.functional as F

    if size < 1 or size % 2 == 0:
        raise ValueError(f"spread_minimum needs an odd window size, got {size}")
    half = size // 2
    t = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)).permute(2, 0, 1)[None]
    out = F.max_pool2d(-t, (size, 1), stride=1, padding=(half, 0))
    out = F.max_pool2d(out, (1, size), stride=1, padding=(0, half)).neg_()
    return np.ascontiguousarray(out[0].permute(1, 2, 0).numpy())



__all__ = ["GATE_MISREGISTRATION", "GATE_THRESHOLD", "band_factor", "gate", "match_intensity", "spread_minimum"]
