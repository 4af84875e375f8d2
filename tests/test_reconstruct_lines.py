"""Straight segments in the sparse change (mrisr.reconstruct.lines): a needle becomes a line, not a
row of dots; a blob and an edge's shift keep their sparse form; the window band-limit is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrisr.data import load_sample
from mrisr.kspace.band import measured_band
from mrisr.kspace.functional import crop_lowres, zero_fill
from mrisr.metrics import core_continuity
from mrisr.reconstruct import lines
from mrisr.reconstruct.changes import BandLimit, sparse_change

LR = (32, 32)  # 6.25 % of a 128 x 128 in-plane matrix


@pytest.fixture(scope="module")
def anatomy() -> np.ndarray:
    """A real T1 slab (Colin27), 128 x 128 x 4."""
    return np.ascontiguousarray(load_sample().data[:, 8:136, 12:16], dtype=np.float32)


def _changes(reference: np.ndarray, truth: np.ndarray, noise: float = 0.0):
    """Both changes (L1 alone, with lines) of a frame of ``truth`` with white noise of ``noise``
    times the object's mean added before the k-space crop, and the residual."""
    rng = np.random.default_rng(3)
    frame = truth + noise * float(truth[truth > 0.1 * truth.max()].mean()) * rng.standard_normal(truth.shape)
    sinc = zero_fill(crop_lowres(frame.astype(np.float32), LR), truth.shape[:2])
    band = measured_band(reference, LR)
    return ([sparse_change(sinc, band, LR, lines=flag, reference=reference) for flag in (False, True)],
            (sinc - band).astype(np.float32))


@pytest.mark.parametrize(("hr", "lr"), [((64, 48), (16, 12)), ((64, 48), (13, 11)), ((40, 40), (10, 9))])
def test_the_window_band_limit_is_the_band_limit(hr, lr):
    """Re(Kx T Ky^T) on a window that holds the image equals BandLimit, for even and odd matrices."""
    image = np.random.default_rng(0).random((2, *hr)).astype(np.float32)
    expected = BandLimit(hr, lr)(torch.from_numpy(image)).numpy()
    band = lines._window_band(lines._window_matrix(lines.band_kernel(hr[0], lr[0]), hr[0])[:, : hr[0]],
                              lines._window_matrix(lines.band_kernel(hr[1], lr[1]), hr[1]))
    np.testing.assert_allclose(band(torch.from_numpy(image)).numpy(), expected, atol=1e-5)


def test_the_dilation_is_scipys():
    from scipy import ndimage

    mask = np.random.default_rng(1).random((3, 30, 25)) > 0.97
    mask[:, 0, 0] = mask[:, -1, -1] = True  # at the edges
    for steps in (1, 2, 4):
        np.testing.assert_array_equal(lines._dilate(mask, steps),
                                      ndimage.binary_dilation(mask, structure=lines._INPLANE, iterations=steps))


def test_an_oblique_needle_becomes_a_continuous_line(anatomy):
    """A signal void 2 voxels wide along a diagonal: L1 alone explains it with spikes; the tube keeps
    the depth along it, and its band fits the residual better."""
    xs = np.arange(128)[:, None]
    ys = np.arange(128)[None, :]
    # distance to the segment (40, 40) -> (85, 70)
    p0, d = np.array([40.0, 40.0]), np.array([45.0, 30.0])
    t = np.clip(((xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]) / (d @ d), 0, 1)
    dist = np.hypot(xs - p0[0] - t * d[0], ys - p0[1] - t * d[1])
    needle = np.clip(1.5 - dist, 0, 1)[:, :, None] * np.ones((1, 1, anatomy.shape[2]))
    truth = (anatomy * (1 - needle)).astype(np.float32)
    (sparse, lined), residual = _changes(anatomy, truth, noise=0.1)
    core = np.broadcast_to((dist < 1.0)[:, :, None], truth.shape)
    kept = {}
    for name, (change, _) in (("sparse", sparse), ("lines", lined)):
        kept[name] = core_continuity(anatomy + change, truth, core)
    assert kept["lines"] > kept["sparse"] + 0.1, kept
    assert kept["lines"] > 0.75, kept
    fit = {name: float(np.square(band - residual).sum()) for name, (_, band) in (("sparse", sparse), ("lines", lined))}
    assert fit["lines"] < fit["sparse"], fit
    # the band returned is the change's band
    band_limit = BandLimit((128, 128), LR)
    np.testing.assert_allclose(lined[1], band_limit(torch.from_numpy(lined[0].transpose(2, 0, 1).copy())).numpy()
                               .transpose(1, 2, 0), atol=1e-3 * float(np.abs(lined[1]).max()))


def _needle(shape, start, step, depth):
    """A needle ``depth`` deep, 2 voxels across, from ``start`` along ``step``: ``(occupancy, core)``."""
    xs, ys = np.arange(shape[0])[:, None], np.arange(shape[1])[None, :]
    p0, d = np.asarray(start, dtype=float), np.asarray(step, dtype=float)
    t = np.clip(((xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]) / (d @ d), 0, 1)
    dist = np.hypot(xs - p0[0] - t * d[0], ys - p0[1] - t * d[1])
    return depth * np.clip(1.5 - dist, 0, 1), dist < 1.0


def test_a_faint_needle_in_fragments_becomes_one_line(anatomy, monkeypatch):
    """A faint needle (40 % deep) in a noisy frame: L1 finds only fragments of it, too short to be
    offered a tube each; joined along their common direction they take one, and the needle keeps its
    depth along its length."""
    occupancy, core2d = _needle(anatomy.shape[:2], (30, 60), (60, 10), 0.4)
    truth = (anatomy * (1 - occupancy[:, :, None])).astype(np.float32)
    core = np.broadcast_to(core2d[:, :, None], truth.shape)
    kept = {}
    for name, orientations in (("pieces", 0), ("chains", lines.CHAIN_ORIENTATIONS)):
        monkeypatch.setattr(lines, "CHAIN_ORIENTATIONS", orientations)
        (sparse, lined), residual = _changes(anatomy, truth, noise=0.2)
        kept[name] = core_continuity(anatomy + lined[0], truth, core)
        kept["sparse"] = core_continuity(anatomy + sparse[0], truth, core)
    assert kept["sparse"] < 0.3 and kept["pieces"] < 0.6, kept
    assert kept["chains"] > 0.9, kept


def test_only_collinear_fragments_are_joined():
    """Three short fragments on one diagonal, 6 voxels apart, and one across it: the diagonal three
    are offered as one segment along the diagonal; the crossing one joins no chain."""
    change = np.zeros((1, 64, 64), dtype=np.float32)
    for i in range(3):  # 4-voxel diagonal fragments, each too short for a tube of its own
        for j in range(4):
            change[0, 10 + 9 * i + j, 10 + 9 * i + j] = -1.0
    for j in range(4):  # across the diagonal, farther from it than the chain's reach
        change[0, 52 + j, 8 - j] = -1.0
    offered = []
    (labels, voxels, sign), = lines._pieces(change)
    alone = np.zeros(int(labels.max()) + 1, dtype=bool)
    lines._chains(labels, voxels, sign, lambda cand, s, members: offered.extend(
        (members(int(label)), cand["p0"][i], cand["p1"][i]) for i, label in enumerate(cand["label"])), alone)
    assert len(offered) == 1, offered
    members, p0, p1 = offered[0]
    diagonal = {int(labels[0, 10 + 9 * i, 10 + 9 * i]) for i in range(3)}
    assert set(members) == diagonal
    direction = (p1 - p0) / np.linalg.norm(p1 - p0)
    assert abs(abs(direction[0]) - abs(direction[1])) < 0.05  # along the diagonal
    assert np.linalg.norm(p1 - p0) > 2 * 9 * np.sqrt(2)  # from the first fragment to the last


def test_a_round_lesion_keeps_its_sparse_form(anatomy):
    """Not elongated: nothing is offered a tube, the change is the L1 change."""
    xs, ys = np.meshgrid(np.arange(128), np.arange(128), indexing="ij")
    blob = (np.hypot(xs - 64, ys - 60) < 4)[:, :, None]
    truth = np.where(blob, 0.2 * anatomy, anatomy).astype(np.float32)
    (sparse, lined), _ = _changes(anatomy, truth)
    np.testing.assert_array_equal(sparse[0], lined[0])
    np.testing.assert_array_equal(sparse[1], lined[1])


def test_a_shifted_edge_fits_no_worse():
    """A bright square moved by one voxel: its change is a one-voxel line along two edges, which a
    tube may take; the change's band never explains the residual worse than the L1 change did."""
    reference = np.zeros((128, 128, 2), dtype=np.float32)
    reference[40:90, 40:90] = 1000.0
    truth = np.roll(reference, 1, axis=0)
    (sparse, lined), residual = _changes(reference, truth, noise=0.05)
    assert np.abs(sparse[0]).max() > 0
    fit = [float(np.square(band - residual).sum()) for _, band in (sparse, lined)]
    assert fit[1] <= fit[0] * 1.001, fit


def test_the_option_is_off_by_default_and_validated():
    from mrisr.batch.config import ReconstructSettings
    from mrisr.io import MrisrInputError
    from mrisr.reconstruct import ReconstructOptions

    assert ReconstructOptions().line_changes is False
    assert ReconstructSettings().line_changes is False
    with pytest.raises(MrisrInputError, match="line_changes"):
        ReconstructOptions(line_changes="often")


def test_the_cli_flag_reaches_the_pipeline_and_the_sidecar(tmp_path):
    """A needle entering a moving phantom with noisy frames: --line-changes changes the output and
    is recorded; without --sparse-changes it changes nothing (the sparse change is not run)."""
    from mrisr_testdata import colin_crop, reconstruct_cli

    from mrisr.phantom import make_dynamic

    files = make_dynamic(colin_crop(), frames=3, keep=6.25, seed=4, insert="needle", noise_snr=20.0,
                         planning_noise_snr=20.0).save(tmp_path / "phantom")
    outputs = {}
    for name, flags in (("plain", []), ("lines", ["--line-changes"]), ("none", ["--no-sparse-changes"]),
                        ("none+lines", ["--no-sparse-changes", "--line-changes"])):
        side, outputs[name] = reconstruct_cli(files, tmp_path / f"sr_{name}.nii.gz", *flags)
        assert side["options"]["line_changes"] is ("lines" in name)
    assert not np.allclose(outputs["plain"], outputs["lines"])
    np.testing.assert_array_equal(outputs["none"], outputs["none+lines"])
