"""Straight segments in the sparse change: a needle shown as a line, not as dots.

The sparse change of :mod:`mrisr.reconstruct.changes` explains what the frame's measured band
shows with as few voxels as it can. Below the band's resolution (4 HR voxels at 6.25 % of
k-space), a line and a row of spikes 4 voxels apart have the same band and the same L1 norm, and
FISTA finds the spikes. An entering needle 2 voxels wide kept its depth in spikes of up to 1.5
times the true depth, with gaps of 0.05-0.15 between them; only 0.71 of its core voxels kept half
their depth on MNI152 phantoms (benchmarks/RESULTS.md, 'Needle continuity'). Penalties that
spread the change (a gradient or total-variation term, an elastic net, a blur outside the band)
all lowered the change's amplitude along with its spikes, and continuity with it.

Needles, guide wires and catheters are straight over a slice. So each elongated piece of the
change (one sign, in one slice, its voxels within :data:`GAP` voxels of each other) is offered a
straight tube along its principal axis, from end to end of the piece and :data:`EXTEND` voxels
beyond, at each diameter of :data:`WIDTHS`, flat and, for lost signal, shaded by the reference. Each tube gets the amplitude that best explains the
residual's band around the piece (least squares). The best tube replaces the piece when its band
leaves at most :data:`TOLERANCE` of the squared error the piece's own band left there. Nothing else
changes: pieces that are not elongated or long enough, or that a tube does not fit clearly better,
keep their sparse form, and the change's band is recomputed with the same band-limit.

A faint needle is found only in fragments. Where the slice is much thicker than the needle (a
2.5 mm needle in a 6.5 mm slice takes away about a third of the signal), its residual sits near
the L1 threshold, and FISTA keeps 5-8 voxels here and there along it, each too short to be offered
a tube. So pieces of one sign that lie on one line are also offered together (:func:`_chains`):
those a dilation along one of :data:`CHAIN_ORIENTATIONS` directions joins, when their joint axis
runs in that direction and at least one of them is such a fragment. The same tolerance decides,
and a piece belongs to at most one tube: the tubes that leave the least of their region's error are
chosen first.

All pieces are fitted at once (each against the residual the rest of the FISTA change leaves), on
windows around them: the band-limit is a sum of two separable circular convolutions, so a tube's
band inside its window is two small matrix products. On the 256x256x32 speed phantoms, where the
registration residue along edges also forms elongated pieces (about 390 per frame), the step takes
0.25 s per frame on 2 cores (0.13 s of it without the chains), where a loop over pieces with
full-slice transforms took 1.7 s. That is why it is an option (``line_changes``), off by default.

Measured on the independent-noise needle phantoms (keyhole-gated, 6.25 %): continuity 0.70 -> 0.85
on Colin27, 0.71 -> 0.81 on MNI152, leakage and recovery better in every cell, tissue SSIM at most
0.0008 lower. The chains were chosen on a real scan used for tuning (pyradiomics' brain2): there
they raised continuity from 0.69 to 0.71 at 6.25 % and from 0.58 to 0.63 at 4 %, and they changed
nothing on the templates. On the held-out real scan, at 6.25 %, continuity is 0.61 without the
step, 0.66 with tubes alone and 0.78 with the chains; recovery 0.46, 0.56 and 0.74
(benchmarks/RESULTS.md, 'Needle continuity: straight segments, opt-in' and 'faint needles in
fragments').
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from mrisr.kspace.functional import pad_kspace

#: voxels of one sign closer than this (in-plane, after dilation) form one piece
GAP = 2
#: the fewest voxels a piece needs to be offered a line
MIN_VOXELS = 6
#: the smallest ratio of a piece's principal standard deviations (long over short axis)
MIN_ELONGATION = 3.0
#: the shortest segment offered, in HR voxels
MIN_LENGTH = 8.0
#: the segment runs this many HR voxels beyond the piece's outermost voxels at each end (0.5 and
#: 2 voxels, and a search over 0 / 1 / 2 per piece, recovered less of the entering needle)
EXTEND = 1.0
#: offer pieces of lost signal tubes shaded by the reference too (a void takes away what was there)
SHADED = True
#: tube diameters offered, in HR voxels
WIDTHS = (1.0, 1.5, 2.0, 2.5, 3.0)
#: the fit is compared over the piece dilated by this many voxels (4-connected steps)
REACH = 4
#: a tube is taken when its band leaves at most this share of the squared error the piece's band left
TOLERANCE = 0.5
#: window sizes pieces are fitted on (each piece takes the smallest that holds it with the fit's
#: margin; longer pieces keep their sparse form)
WINDOWS = (32, 48, 64, 96)
#: pieces fitted together (bounds the memory of the windows' tubes)
CHUNK = 64
#: collinear fragments: pieces of one sign that a dilation along one of this many in-plane
#: orientations joins are also offered one tube together (0: off; 4 recovered less of a faint
#: needle on the tuning scan, 12 and 16 no more than 8)
CHAIN_ORIENTATIONS = 8
#: the dilation's reach along the orientation, in HR voxels each way (of the pieces' :data:`GAP`
#: dilation, on the halved grid): fragments up to about 2 x (reach + GAP) + 1 = 21 voxels apart
#: along an axis join, fewer on a diagonal (3 and 5 joined fewer of a faint needle's fragments at 4 %
#: on the tuning scan, 12 no more than 8)
CHAIN_REACH = 8

_CROSS = ndimage.generate_binary_structure(2, 1)
#: in-plane 4-connectivity for slice-major ``(Z, X, Y)`` stacks (nothing connects across slices)
_INPLANE = np.zeros((3, 3, 3), dtype=bool)
_INPLANE[1] = _CROSS


def band_kernel(hr: int, lr: int) -> np.ndarray:
    """The complex 1-D kernel of keeping the centred ``lr`` of ``hr`` frequencies (placed as
    :func:`mrisr.kspace.functional.pad_kspace` places them): ``P_1 x = kernel (*) x`` circularly.

    The in-plane band-limit of :func:`mrisr.reconstruct.changes.band_mask` applied to a real image
    ``x`` is ``Re(Kx x Ky^T)`` with the circulant matrices of the two axes' kernels (the mask's
    average with its point reflection is the real part; tested against
    :class:`~mrisr.reconstruct.changes.BandLimit`).
    """
    mask = pad_kspace(np.ones(lr), (hr,), (0,))
    return np.fft.ifft(np.fft.ifftshift(mask))


def _window_matrix(kernel: np.ndarray, size: int) -> np.ndarray:
    """``K[i, j] = kernel[(i - j) mod N]`` for ``i, j < size``: the band-limit between any two
    points of a window of ``size`` (it depends only on their offset), complex."""
    offsets = (np.arange(size)[:, None] - np.arange(size)[None, :]) % len(kernel)
    return kernel[offsets]


def _window_band(kx: np.ndarray, ky: np.ndarray):
    """``T -> Re(Kx T Ky^T)`` for real ``T`` (``(..., size, size)`` tensors) in two real matrix
    products: ``[Re Kx; Im Kx] T`` stacked, then ``[A, B] [Re Ky^T; -Im Ky^T]``."""
    left = torch.from_numpy(np.concatenate([kx.real, kx.imag], 0).astype(np.float32))
    right = torch.from_numpy(np.concatenate([ky.real.T, -ky.imag.T], 0).astype(np.float32))
    size = kx.shape[0]

    def apply(t: torch.Tensor) -> torch.Tensor:
        stacked = torch.matmul(left, t)  # (..., 2 size, size): Re Kx T over Im Kx T
        joined = torch.cat([stacked[..., :size, :], stacked[..., size:, :]], dim=-1)  # (..., size, 2 size)
        return torch.matmul(joined, right)

    return apply


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` in-plane 4-connected dilations of a boolean ``(N, X, Y)`` stack, nothing beyond
    the edges: ``scipy.ndimage.binary_dilation`` with :data:`_INPLANE` (tested), by shifted ORs in
    about a third of its time."""
    out = np.array(mask, dtype=bool)
    for _ in range(steps):
        grown = out.copy()
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        grown[:, :, 1:] |= out[:, :, :-1]
        grown[:, :, :-1] |= out[:, :, 1:]
        out = grown
    return out


def _pieces(change: np.ndarray):
    """Labelled pieces of each sign: ``[(labels (Z, X, Y), (z, x, y, label, |change|) of its voxels, sign)]``."""
    out = []
    for sign in (-1.0, 1.0):
        mask = change * sign > 0
        if int(mask.sum()) < MIN_VOXELS:
            continue
        labels, _ = ndimage.label(_dilate(mask, GAP), structure=_INPLANE)
        z, x, y = np.nonzero(mask)
        out.append((labels, (z, x, y, labels[z, x, y], np.abs(change[z, x, y]).astype(np.float64)), sign))
    return out


def _line_dilate(mask: np.ndarray, theta: float, reach: int) -> np.ndarray:
    """``mask`` (``(N, X, Y)`` boolean) dilated along the in-plane direction ``theta`` (radians from
    the X axis) by up to ``reach`` voxels each way (rounded steps), nothing beyond the edges."""
    out = np.array(mask, dtype=bool)
    nx, ny = mask.shape[1:]
    done = {(0, 0)}
    for i in range(-reach, reach + 1):
        dx, dy = int(round(i * np.cos(theta))), int(round(i * np.sin(theta)))
        if (dx, dy) in done or abs(dx) >= nx or abs(dy) >= ny:
            continue
        done.add((dx, dy))
        out[:, max(dx, 0) : nx + min(dx, 0), max(dy, 0) : ny + min(dy, 0)] |= \
            mask[:, max(-dx, 0) : nx - max(dx, 0), max(-dy, 0) : ny - max(dy, 0)]
    return out


def _moments(lab: np.ndarray, w: np.ndarray, x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """``(7, n)`` per label below ``n``: voxels, weight, and the weighted sums of ``x``, ``y``,
    ``x^2``, ``y^2`` and ``x y`` (moments about the origin add up over pieces)."""
    return np.stack([np.bincount(lab, minlength=n).astype(np.float64)]
                    + [np.bincount(lab, w * f, n) for f in (1.0, x, y, x * x, y * y, x * y)])


def _candidates(z: np.ndarray, x: np.ndarray, y: np.ndarray, lab: np.ndarray, w: np.ndarray, n: int,
                direction: float | None = None, allowed: np.ndarray | None = None,
                moments: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per piece (label ``lab`` of the voxels ``z, x, y`` of one sign, weights ``w`` = the change's
    magnitude, labels below ``n``): its slice and the end points of its segment, for the pieces
    long and elongated enough to be offered a tube (the principal axes of the piece's voxels,
    weighted), and, with ``direction``, whose axis lies within half an orientation step of it.
    ``moments``: the pieces' :func:`_moments` when the caller has them (summed over a chain's pieces)."""
    count, sw, sx, sy, sxx, syy, sxy = _moments(lab, w, x, y, n) if moments is None else moments
    ok = (count >= MIN_VOXELS) & (sw > 0)
    if allowed is not None:
        ok &= allowed
    sw = np.where(ok, sw, 1.0)
    cx, cy = sx / sw, sy / sw
    vxx, vyy, vxy = sxx / sw - cx * cx, syy / sw - cy * cy, sxy / sw - cx * cy
    half, diff = (vxx + vyy) / 2, np.hypot((vxx - vyy) / 2, vxy)
    major, minor = half + diff, np.maximum(half - diff, 1e-6)
    theta = 0.5 * np.arctan2(2 * vxy, vxx - vyy)
    ok &= major >= MIN_ELONGATION ** 2 * minor
    if direction is not None:
        off = np.abs((theta - direction + np.pi / 2) % np.pi - np.pi / 2)
        ok &= off <= np.pi / (2 * CHAIN_ORIENTATIONS)
    ok[0] = False
    # the segment's extent along the axis, over the voxels of the pieces still in the running
    ax, ay = np.cos(theta), np.sin(theta)
    pick = ok[lab]
    lab, z = lab[pick], z[pick]
    along = (x[pick] - cx[lab]) * ax[lab] + (y[pick] - cy[lab]) * ay[lab]
    lo, hi = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(lo, lab, along)
    np.maximum.at(hi, lab, along)
    lo, hi = lo - EXTEND, hi + EXTEND
    ok &= hi - lo >= MIN_LENGTH
    keep = np.flatnonzero(ok)
    zs = np.zeros(n, dtype=np.int64)
    zs[lab] = z
    cx, cy, ax, ay, lo, hi = (a[keep] for a in (cx, cy, ax, ay, lo, hi))
    return {"label": keep, "z": zs[keep], "p0": np.stack([cx + lo * ax, cy + lo * ay], 1),
            "p1": np.stack([cx + hi * ax, cy + hi * ay], 1)}


def _fit_windows(found: list, size: int, values: np.ndarray, left: np.ndarray, band,
                 reference: np.ndarray | None) -> list:
    """Fit the pieces ``found`` (all of one sign; entries ``(sign, labels, z, p0, p1, members)``) on
    windows of ``size``: for each that takes a tube, ``(error left / error before, (sign, members),
    z, origin, piece voxels, amplitude x tube)``. Only lost signal is offered shaded tubes."""
    nz, nx, ny = values.shape
    count = len(found)
    origins = np.empty((count, 2), dtype=np.int64)
    pieces = np.zeros((count, size, size), dtype=np.float32)
    own = np.zeros((count, size, size), dtype=bool)
    unexplained = np.zeros((count, size, size), dtype=np.float32)
    shaded = SHADED and reference is not None and found[0][0] < 0
    shade = np.ones((count, size, size), dtype=np.float32)
    for n, (sign, labels, z, p0, p1, members) in enumerate(found):
        centre = (p0 + p1) / 2
        ox = int(np.clip(round(centre[0] - size / 2), 0, nx - size))
        oy = int(np.clip(round(centre[1] - size / 2), 0, ny - size))
        origins[n] = ox, oy
        window = (z, slice(ox, ox + size), slice(oy, oy + size))
        own[n] = labels[window] == next(iter(members)) if len(members) == 1 else np.isin(labels[window], list(members))
        pieces[n] = np.where(own[n] & (values[window] * sign > 0), values[window], 0.0)
        unexplained[n] = left[window]
        if shaded:
            # a void removes what was there: its change follows the reference's intensity
            shade[n] = np.maximum(reference[window], 0.0)
    region = _dilate(own, REACH)
    # tubes around each segment, in window coordinates: (count, widths, size, size)
    grid = np.arange(size, dtype=np.float32)
    p0 = (np.stack([f[3] for f in found]) - origins).astype(np.float32)
    d = (np.stack([f[4] for f in found]) - origins).astype(np.float32) - p0
    gx = grid[None, :, None] - p0[:, 0, None, None]
    gy = grid[None, None, :] - p0[:, 1, None, None]
    t = np.clip((gx * d[:, 0, None, None] + gy * d[:, 1, None, None])
                / np.maximum((d * d).sum(1), 1e-6)[:, None, None], 0.0, 1.0)
    dist = np.hypot(gx - t * d[:, 0, None, None], gy - t * d[:, 1, None, None])
    widths = np.asarray(WIDTHS, dtype=np.float32)
    tubes = np.clip(widths[None, :, None, None] / 2 + 0.5 - dist[:, None], 0.0, 1.0)
    if shaded:
        # flat tubes, and tubes shaded by the reference
        tubes = np.concatenate([tubes, tubes * shade[:, None]], 1)  # (count, models x widths, size, size)
    # the band of pieces and tubes inside the windows: Re(Kx T Ky^T)
    bands = band(torch.from_numpy(np.concatenate([pieces[:, None], tubes], 1))).numpy()
    piece_band, fit = bands[:, 0], bands[:, 1:]
    weight = region.astype(np.float32)
    target = (unexplained + piece_band) * weight  # what the rest of the change leaves for this piece
    before = np.square(piece_band * weight - target).sum((1, 2))
    fit *= weight[:, None]
    norm = np.square(fit).sum((2, 3))
    amplitude = (fit * target[:, None]).sum((2, 3)) / np.maximum(norm, 1e-30)
    error = np.square(amplitude[..., None, None] * fit - target[:, None]).sum((2, 3))
    signs = np.array([f[0] for f in found], dtype=np.float32)
    error = np.where((amplitude * signs[:, None] > 0) & (norm > 0), error, np.inf)
    best = error.argmin(1)
    least = error[np.arange(count), best]
    take = least <= TOLERANCE * before
    return [(float(least[n] / max(before[n], 1e-30)), (found[n][0], found[n][5]), found[n][2], origins[n],
             own[n] & (pieces[n] != 0), amplitude[n, best[n]] * tubes[n, best[n]]) for n in np.flatnonzero(take)]


def _chains(labels: np.ndarray, voxels: tuple, sign: float, offer, alone: np.ndarray) -> None:
    """Offer collinear fragments of one sign together (``offer(candidates, sign, members)``).

    For each of :data:`CHAIN_ORIENTATIONS` directions, the pieces that a dilation along it by
    :data:`CHAIN_REACH` joins form a chain. A chain is offered when it holds at least two pieces,
    at least one of them a fragment that is not offered a tube on its own (``alone[label]`` false),
    and when its joint principal axis lies within half an orientation step of the direction. The
    same set of pieces is offered once.

    The joining runs on a grid halved in-plane (2x2 maxima of the pieces' :data:`GAP` dilation, the
    reach halved): eight labellings of the full 256x256x32 grid took 0.12 s per frame. A piece
    belongs to the chain its first voxel falls in (any voxel would do: a piece's dilation is connected,
    and stays so on the halved grid).
    """
    z, x, y, base, w = voxels
    nz, nx, ny = labels.shape
    count = int(labels.max()) + 1
    first = np.zeros(count, dtype=np.int64)
    labels_seen, index = np.unique(base, return_index=True)
    first[labels_seen] = index
    joined = np.zeros((nz, nx + nx % 2, ny + ny % 2), dtype=bool)
    joined[:, :nx, :ny] = labels > 0
    coarse = joined[:, 0::2, 0::2] | joined[:, 1::2, 0::2] | joined[:, 0::2, 1::2] | joined[:, 1::2, 1::2]
    reach = int(np.ceil(CHAIN_REACH / 2))
    moments = _moments(base, w, x, y, count)
    seen: set = set()
    for k in range(CHAIN_ORIENTATIONS):
        theta = -np.pi / 2 + np.pi * k / CHAIN_ORIENTATIONS
        chain, n = ndimage.label(_line_dilate(coarse, theta, reach), structure=_INPLANE)
        of_base = chain[z[first], x[first] // 2, y[first] // 2]
        of_base[0] = 0
        allowed = np.bincount(of_base[1:], minlength=n + 1) >= 2
        allowed &= np.bincount(of_base[1:], ~alone[1:], minlength=n + 1) > 0
        if not allowed.any():
            continue
        summed = np.stack([np.bincount(of_base, m, n + 1) for m in moments])
        cand = _candidates(z, x, y, of_base[base], w, n + 1, direction=theta, allowed=allowed, moments=summed)
        wanted = np.zeros(n + 1, dtype=bool)
        wanted[cand["label"]] = True
        groups: dict[int, list] = {}
        for b in np.flatnonzero(wanted[of_base]):
            groups.setdefault(int(of_base[b]), []).append(int(b))
        members = {label: frozenset(group) for label, group in groups.items()}
        fresh = np.array([members[int(label)] not in seen for label in cand["label"]], dtype=bool)
        seen.update(members.values())
        if fresh.any():
            offer({key: value[fresh] for key, value in cand.items()}, sign, members.__getitem__)


def fit_lines(change: torch.Tensor, change_band: torch.Tensor, residual: torch.Tensor,
              lr_inplane: tuple[int, int], band_limit,
              reference: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Replace elongated pieces of ``change`` by straight tubes where their band fits ``residual``
    clearly better (see the module docstring).

    Args:
        change: the sparse change, slice-major ``(Z, X', Y')`` float32.
        change_band: ``band_limit(change)``.
        residual: the frame's sinc minus the reference's band, slice-major.
        lr_inplane: the measured LR matrix.
        band_limit: the in-plane band-limit ``P`` (:class:`mrisr.reconstruct.changes.BandLimit`),
            for the new change's band.
        reference: the intensity-matched reference, slice-major, when the caller has it: a piece
            of lost signal is then offered tubes shaded by it (a void takes away what was there,
            in proportion), the others flat tubes.

    Returns:
        ``(change, change_band, lines)``: the change and its band (the inputs themselves when no
        tube was taken) and the number of tubes taken.
    """
    values = change.numpy()
    nz, nx, ny = values.shape
    margin = 2 * (REACH + int(np.ceil(max(WIDTHS))) + 1)
    sizes = sorted({min(w, nx, ny) for w in WINDOWS})
    groups: dict[tuple, list] = {}

    def offer(cand: dict, sign: float, members) -> None:
        for i in range(len(cand["label"])):
            p0, p1 = cand["p0"][i], cand["p1"][i]
            extent = int(np.ceil(np.abs(p1 - p0).max())) + margin
            size = next((w for w in sizes if w >= extent), None)
            if size is None:
                continue  # longer than the largest window: keeps its sparse form
            label = int(cand["label"][i])
            groups.setdefault((size, sign), []).append(
                (sign, base_labels[sign], int(cand["z"][i]), p0, p1, members(label)))

    base_labels = {}
    for labels, voxels, sign in _pieces(values):
        base_labels[sign] = labels
        cand = _candidates(*voxels, int(labels.max()) + 1)
        offer(cand, sign, lambda label: frozenset([label]))
        if CHAIN_ORIENTATIONS:
            alone = np.zeros(int(labels.max()) + 1, dtype=bool)
            alone[cand["label"]] = True
            _chains(labels, voxels, sign, offer, alone)
    if not groups:
        return change, change_band, 0
    left = (residual - change_band).numpy()
    shade = None if reference is None else reference.numpy()
    kernels = (band_kernel(nx, lr_inplane[0]), band_kernel(ny, lr_inplane[1]))
    taken = []
    bands = {}
    for (size, _sign), found in sorted(groups.items()):
        if size not in bands:
            bands[size] = _window_band(_window_matrix(kernels[0], size), _window_matrix(kernels[1], size))
        band = bands[size]
        for start in range(0, len(found), CHUNK):
            taken += _fit_windows(found[start : start + CHUNK], size, values, left, band, shade)
    if not taken:
        return change, change_band, 0
    # a piece belongs to at most one tube: the tubes that leave the least error are chosen first,
    # then written in the order they were fitted (where two overlap, the later one's piece is cleared)
    claimed: set = set()
    chosen = []
    for n in sorted(range(len(taken)), key=lambda i: taken[i][0]):
        sign, group = taken[n][1]
        keys = {(sign, label) for label in group}
        if not keys & claimed:
            claimed |= keys
            chosen.append(n)
    taken = [taken[n][2:] for n in sorted(chosen)]
    out = change.clone()
    view = out.numpy()
    for z, (ox, oy), piece, tube in taken:
        window = view[z, ox : ox + tube.shape[0], oy : oy + tube.shape[1]]
        window[piece] = 0.0
        window += tube
    # the band changes only in the slices that took a tube
    touched = sorted({z for z, *_ in taken})
    out_band = change_band.clone()
    out_band[touched] = band_limit(out[touched])
    return out, out_band, len(taken)


__all__ = ["CHAIN_ORIENTATIONS", "CHAIN_REACH", "CHUNK", "EXTEND", "GAP", "SHADED", "WINDOWS", "MIN_ELONGATION", "MIN_LENGTH", "MIN_VOXELS", "REACH", "TOLERANCE", "WIDTHS",
           "band_kernel", "fit_lines"]
