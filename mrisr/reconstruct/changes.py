"""Sparse change recovery: what is new in a frame, and what is gone, with their unmeasured detail.

A frame measures only the central k-space band; the registered planning scan (the reference)
supplies the rest. Where the anatomy changed after the planning scan (a needle entered, a device
was withdrawn), the reference's detail is wrong. The gate of
:func:`mrisr.reconstruct.keyhole.gated_keyhole` can only fall back to the measured band there, so a
new needle is shown as blurred as the frame measures it and a withdrawn one still shows
(benchmarks/RESULTS.md, 'Design decisions and their measurements', sparse change recovery).

This module estimates the change itself, the way prior-image compressed sensing does (PICCS:
Chen, Tang and Leng, Med Phys 2008, there with total variation; here with the L1 norm): the
difference between the frame and the reference is assumed sparse in image space (a needle, a lesion,
a vessel is a few voxels wide; everything else agrees), and only its band is measured::

    c = argmin_c  1/2 || P c - r ||^2  +  lam || c ||_1,     r = sinc - band(reference)

with ``P`` the in-plane band-limit to the LR matrix (a real, symmetric k-space mask on the HR
grid) and ``lam`` a multiple of the residual's robust noise level (the median absolute deviation of
``r`` in the object), and ``c`` confined to the object (:data:`SUPPORT_LEVEL`). The reference
corrected by ``c`` then agrees with the frame at the changed site, so the gate keeps its detail
there: the new needle gets the sharp edges the band alone cannot give it, and the withdrawn one
is cancelled by a sparse fill of the same shape. Where the reference
does not fit at all (another contrast), the residual's MAD is large, ``lam`` with it, and ``c``
stays near zero: the gate falls back to the measured band as before.

The solver is FISTA (Beck and Teboulle 2009) with an over-relaxed step: each iteration is one real
2-D FFT pair per slice and a soft threshold. How far it runs is a trade-off, chosen on MNI152 and
Colin27 phantoms (never on the held-out real scan): early iterates are smooth and keep tissue
quality; later ones sharpen the changes and add small spurious spikes where the residual is noise
or a registration error. A narrower band needs more iterations (:func:`sparse_iterations`).

The default (20 iterations, step 1.5, ``lam`` = 4 MADs, continuation) is the setting that recovered
most of an entering needle's contrast while keeping a withdrawn one's leakage below sinc's, for a
small tissue cost. *Continuation* lets the threshold fall geometrically from the largest residual
in the object to ``lam`` over the iterations, so the largest changes are explained first (a
homotopy path, as in fixed-point continuation, Hale, Yin and Zhang 2008): it lowers the leakage at
no extra cost. The alternatives tried (other thresholds, a smooth synthesis dictionary, debiasing,
a threshold weighted by the gate) and the solver table are in benchmarks/RESULTS.md ('Fidelity
lever: sparse change recovery').
"""

from __future__ import annotations

import numpy as np
import torch

from mrisr.kspace.band import frame_high, object_mask

#: FISTA iterations of :func:`sparse_change` at 6.25 % of k-space; a narrower band gets more
#: (:func:`sparse_iterations`)
SPARSE_ITERATIONS = 20
#: the most FISTA iterations :func:`sparse_iterations` gives
SPARSE_MAX_ITERATIONS = 30
#: the threshold falls from the largest residual to the L1 weight over the iterations
SPARSE_CONTINUATION = True
#: FISTA step (the band-limit's Lipschitz constant is 1; over-relaxed)
SPARSE_STEP = 1.5
#: the L1 weight in robust standard deviations (MAD x 1.4826) of the residual in the object
SPARSE_STRENGTH = 4.0
#: the smallest robust standard deviation :func:`robust_sigma` returns, as a fraction of the frame's
#: 99th percentile: a noise-free frame that matches its reference up to a small change would
#: otherwise leave the L1 weight near zero, and the change as blurred as its band (the floor sits
#: below the phantoms' residual spread: benchmarks/RESULTS.md, 'Design decisions and their
#: measurements')
SIGMA_FLOOR = 0.005
#: where the change may be non-zero: the frame's sinc or the reference's band above this fraction of
#: the frame's 99th percentile
SUPPORT_LEVEL = 0.1


def band_mask(hr_inplane: tuple[int, int], lr_inplane: tuple[int, int]) -> torch.Tensor:
    """The measured band as a real, symmetric mask on ``torch.fft.rfft2``'s half spectrum, ``(X', Y'//2+1)``.

    The centre ``lr_inplane`` block of the ``hr_inplane`` k-space (placed as
    :func:`mrisr.kspace.functional.pad_kspace` places it), averaged with its point reflection: an
    even LR matrix keeps one of each pair of Nyquist frequencies, which a real image shares between
    them, so those weigh 0.5. Applied to a real image this is exactly the real part of its centre
    crop zero-filled back (tested).
    """
    from mrisr.kspace.functional import pad_kspace

    centred = pad_kspace(np.ones(tuple(lr_inplane), dtype=np.float32), tuple(hr_inplane), (0, 1))
    mask = np.fft.ifftshift(centred)
    reflected = np.roll(mask[::-1, ::-1], 1, axis=(0, 1))  # M(-f) on the unshifted grid
    return torch.from_numpy(np.ascontiguousarray(((mask + reflected) / 2)[:, : hr_inplane[1] // 2 + 1], dtype=np.float32))


def robust_sigma(residual: np.ndarray, sinc: np.ndarray, high: float | None = None) -> float:
    """1.4826 x the median absolute deviation of ``residual`` in the object
    (:func:`mrisr.kspace.band.object_mask`, ``high`` when the caller has it), on every second voxel
    in-plane, and at least :data:`SIGMA_FLOOR` of the frame's 99th percentile; 0 without an object."""
    sub_r, sub_s = residual[::2, ::2], sinc[::2, ::2]
    high = frame_high(sinc) if high is None else high
    values = sub_r[object_mask(sub_s, high)] if high > 0 else sub_r[:0]
    if values.size == 0:
        return 0.0
    return max(float(1.4826 * np.median(np.abs(values - np.median(values)))), SIGMA_FLOOR * high)


class BandLimit:
    """``P``: the in-plane band-limit of :func:`band_mask` applied to slice-major ``(Z, X', Y')`` tensors.

    Pruned FFTs: the row transform runs only on the columns the band keeps, and only the rows it
    keeps are transformed back. The same values as a full ``irfft2(rfft2(x) * mask)`` (to float
    rounding, tested) in about half the time (benchmarks/RESULTS.md, 'Design decisions and their
    measurements').
    """

    def __init__(self, hr_inplane: tuple[int, int], lr_inplane: tuple[int, int]) -> None:
        mask = band_mask(hr_inplane, lr_inplane)
        self.size = (int(hr_inplane[0]), int(hr_inplane[1]))
        self.columns = int(torch.nonzero(mask.abs().sum(0) > 0).max()) + 1
        self.rows = torch.nonzero(mask[:, : self.columns].abs().sum(1) > 0)[:, 0]
        self.weights = mask[self.rows][:, : self.columns].to(torch.complex64)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.fft.fft(torch.fft.rfft(x, dim=-1)[..., : self.columns], dim=-2)[..., self.rows, :] * self.weights
        full = torch.zeros((*x.shape[:-2], self.size[0], self.columns), dtype=k.dtype)
        full[..., self.rows, :] = k
        return torch.fft.irfft(torch.fft.ifft(full, dim=-2), n=self.size[1], dim=-1)


def sparse_iterations(hr_inplane: tuple[int, int], lr_inplane: tuple[int, int]) -> int:
    """FISTA iterations for a band of ``lr_inplane`` on ``hr_inplane``: :data:`SPARSE_ITERATIONS`
    at 6.25 % of k-space or more, scaled by the square root of 6.25 % over the kept share below it
    (25 at 4 %), at most :data:`SPARSE_MAX_ITERATIONS`.

    The fewer frequencies a frame measures, the more the change is left to the L1 prior and the
    slower FISTA converges: at 4 % a withdrawn needle's fill was incomplete after 20 iterations and
    close to complete after 25 (benchmarks/RESULTS.md, 'Fidelity lever: sparse change recovery');
    a pruned band-limit at 4 % costs what one at 6.25 % does, so the time per frame grows by a
    quarter of the change's share only.

    Example:
        >>> sparse_iterations((256, 256), (64, 64)), sparse_iterations((256, 256), (51, 51))
        (20, 25)
    """
    share = (lr_inplane[0] * lr_inplane[1]) / float(hr_inplane[0] * hr_inplane[1])
    if share >= 0.0625:
        return SPARSE_ITERATIONS
    return int(min(SPARSE_MAX_ITERATIONS, round(SPARSE_ITERATIONS * (0.0625 / share) ** 0.5)))


def sparse_change(sinc: np.ndarray, band: np.ndarray, lr_inplane: tuple[int, int],
                  iterations: int | None = None, step: float = SPARSE_STEP,
                  strength: float = SPARSE_STRENGTH, continuation: bool | None = None,
                  high: float | None = None, lines: bool = False,
                  reference: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The sparse change ``c`` whose band explains ``sinc - band`` (see the module docstring).

    Args:
        sinc: the measured LR frame zero-filled to the HR grid, ``(X', Y', Z)``.
        band: the reference seen through the measured band
            (:func:`mrisr.kspace.band.measured_band`), intensity-matched to the frame.
        lr_inplane: the LR in-plane matrix.
        iterations / step / strength: FISTA iterations (``None``: :func:`sparse_iterations`), step
            and L1 weight in robust standard deviations of the residual.
        continuation: let the threshold fall from the largest residual to the L1 weight over the
            iterations (off: the L1 weight throughout; ``None``: :data:`SPARSE_CONTINUATION`).
        high: the frame's 99th percentile (:func:`mrisr.kspace.band.frame_high`) when the
            caller has it.
        lines: offer elongated pieces of ``c`` a straight tube (:func:`mrisr.reconstruct.lines.fit_lines`).
        reference: the matched reference ``(X', Y', Z)`` whose band is ``band``, when the caller
            has it: tubes of lost signal then follow its intensity.

    Returns:
        ``(c, P c)``, each ``(X', Y', Z)`` float32: the change (add it to the reference) and its
        band (add it to ``band``). Zeros where no residual exceeds the threshold (the reference
        fits the frame).

    Example:
        >>> from mrisr.kspace.band import measured_band
        >>> ref = np.zeros((32, 32, 1), np.float32); ref[8:24, 8:24] = 1
        >>> truth = ref.copy(); truth[15:17, 10:22] = 0  # a new 2-voxel bar
        >>> sinc, band = measured_band(truth, (16, 16)), measured_band(ref, (16, 16))
        >>> c, _ = sparse_change(sinc, band, (16, 16))
        >>> bool(c[15:17, 10:22].mean() < -0.5 and abs(c[:, :5]).max() < 0.05)
        True
    """
    # element-wise work in torch (both cores; numpy's loops run on one), the same float32 operations
    sinc_t = torch.from_numpy(np.ascontiguousarray(sinc, dtype=np.float32))
    band_t = torch.from_numpy(np.ascontiguousarray(band, dtype=np.float32))
    sinc = sinc_t.numpy()
    residual_t = sinc_t - band_t
    residual = residual_t.numpy()
    high = frame_high(sinc) if high is None else float(high)
    sigma = robust_sigma(residual, sinc, high)
    if not np.isfinite(sigma) or sigma <= 0 or not float(residual_t.abs().max()) > strength * sigma:
        zeros = np.zeros(sinc.shape, dtype=np.float32)
        return zeros, zeros.copy()
    shrink = float(step * strength * sigma)
    band_limit = BandLimit(sinc.shape[:2], lr_inplane)
    # slice-major, so each slice's FFTs run over contiguous memory
    r = residual_t.permute(2, 0, 1).contiguous()
    # the change is confined to the object (the frame or the reference above SUPPORT_LEVEL of the
    # frame's 99th percentile, both as the band sees them): in the air around it a change has
    # nothing to change, and unconfined, a misregistered scalp was explained by specks in the air
    # at the field of view's edge (its periodic band-limit reaches there)
    support = (torch.maximum(sinc_t, band_t) > SUPPORT_LEVEL * high).permute(2, 0, 1).contiguous().float()
    c = torch.zeros_like(r)
    z = torch.zeros_like(r)
    t = 1.0
    # continuation: the threshold falls geometrically from the largest residual in the object to
    # its final value at the last iteration, so the largest changes are explained first
    # the largest |residual| in the object (0 without one): |r| >= 0, so masking by multiplication is exact
    start = max(float((r.abs() * support).max()), strength * sigma)
    ratio = strength * sigma / start
    iterations = int(sparse_iterations(sinc.shape[:2], lr_inplane) if iterations is None else iterations)
    continuation = SPARSE_CONTINUATION if continuation is None else continuation
    for k in range(iterations):
        level = step * start * ratio ** ((k + 1) / iterations) if continuation else shrink
        gradient = band_limit(z).sub_(r)
        new = torch.nn.functional.softshrink(z.sub_(gradient, alpha=step), level).mul_(support)
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        # new + (t - 1) / t_next * (new - c), into z's memory (z is spent)
        torch.lerp(c, new, 1.0 + (t - 1.0) / t_next, out=z)
        c, t = new, t_next
    c_band = band_limit(c)
    if lines:
        from mrisr.reconstruct.lines import fit_lines

        shade = None if reference is None else torch.from_numpy(
            np.ascontiguousarray(np.asarray(reference, dtype=np.float32).transpose(2, 0, 1)))
        c, c_band, _ = fit_lines(c, c_band, r, lr_inplane, band_limit, shade)
    return c.permute(1, 2, 0).contiguous().numpy(), c_band.permute(1, 2, 0).contiguous().numpy()


def apply_sparse_change(reference: np.ndarray, band: np.ndarray, sinc: np.ndarray, lr_inplane: tuple[int, int],
                        high: float, lines: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pipeline's sparse-change step: the matched reference corrected by the sparse change the
    frame's measured band shows (:func:`sparse_change`), its band, and the change's sign.

    A structure that entered after the planning scan is then shown with the detail the band cannot
    measure, one that left is cancelled rather than only gated, and the gate
    (:func:`mrisr.reconstruct.gate.gate`) is computed on the corrected reference.

    Args:
        reference: the intensity-matched reference on the HR grid ``(X', Y', Z)``.
        band: its measured band (:func:`mrisr.kspace.band.measured_band`).
        sinc: the frame zero-filled to the HR grid, float32 and contiguous.
        lr_inplane: the LR in-plane matrix.
        high: :func:`mrisr.kspace.band.frame_high` of ``sinc``.
        lines: elongated pieces of the change may become straight tubes
            (:func:`mrisr.reconstruct.lines.fit_lines`; option ``line_changes``).

    Returns:
        ``(reference, band, sign)``: the corrected reference and band (float32), and the change's
        sign (``int8``: -1 where the frame lost signal, +1 where it gained, 0 elsewhere) for the
        change guard (:func:`mrisr.reconstruct.change_guard.keep_measured_change`).
    """
    change, change_band = sparse_change(sinc, band, lr_inplane, high=high, lines=lines, reference=reference)
    sign = np.sign(change).astype(np.int8)
    # the band of the corrected reference, linear in the change (a full measured_band of it
    # differs only where the LR magnitude rectifies a negative lobe, at the object's edge)
    return reference + change, band + change_band, sign


__all__ = ["SIGMA_FLOOR", "SPARSE_CONTINUATION", "SPARSE_ITERATIONS", "SPARSE_MAX_ITERATIONS", "SPARSE_STEP", "SPARSE_STRENGTH", "SUPPORT_LEVEL", "BandLimit",
           "apply_sparse_change", "band_mask", "robust_sigma", "sparse_change", "sparse_iterations"]
