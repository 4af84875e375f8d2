"""Disagreement and unmeasured-detail maps (`mrisr reconstruct --maps`) on real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.io import load, save_like
from mrisr.kspace.functional import crop_lowres, zero_fill
from mrisr.metrics import object_mask
from mrisr.reconstruct import ReconstructOptions, iter_reconstruct
from mrisr.reconstruct.maps import consistency_nrmse, disagreement_map, frame_maps, unmeasured_map

runner = CliRunner()


@pytest.fixture(scope="module")
def needle_phantom(tmp_path_factory):
    """Needle in the frames only and a needle in the planning scan only, saved with an oblique affine."""
    from mrisr.data import load_sample
    from mrisr.phantom import make_dynamic

    sample = load_sample()
    crop = sample.with_data(np.ascontiguousarray(sample.data[16:112, 16:128, 8:24]))
    angle = np.deg2rad(12)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    crop.affine = rotation @ crop.affine
    phantom = make_dynamic(crop, frames=3, keep=6.25, seed=3, insert="needle", planning_insert="needle")
    return phantom, phantom.save(tmp_path_factory.mktemp("needle"))


def test_unmeasured_and_residual_of_measured_data_are_zero():
    rng = np.random.default_rng(0)
    hr = rng.random((24, 20, 3)).astype(np.float32) + 1.0
    lr = crop_lowres(hr, (8, 6))
    sinc = zero_fill(lr, hr.shape[:2])
    # the zero-filled complex image has nothing outside the band; its magnitude (what sinc is)
    # only the little that taking the magnitude adds, far less than the truth's own detail
    complex_sinc = zero_fill(crop_lowres(hr, (8, 6), magnitude=False), hr.shape[:2], magnitude=False)
    assert unmeasured_map(complex_sinc.real, lr.shape[:2]).max() < 0.6 * unmeasured_map(hr, lr.shape[:2]).max()
    assert unmeasured_map(sinc, lr.shape[:2]).mean() < 0.3 * unmeasured_map(hr, lr.shape[:2]).mean()
    assert consistency_nrmse(sinc, lr) < 0.02
    # the truth has detail outside the band; a wrong image does not match the frame
    assert unmeasured_map(hr, lr.shape[:2]).mean() > 0.05
    assert consistency_nrmse(0.7 * hr, lr) == pytest.approx(0.3, rel=0.05)
    # a prior equal to the truth agrees with the measured frame; without a prior the map is zero
    assert disagreement_map(hr, sinc, lr.shape[:2]).max() < 1e-3
    assert not disagreement_map(None, sinc, lr.shape[:2]).any()


def test_needles_light_up_the_disagreement_map(needle_phantom):
    phantom, _ = needle_phantom
    options = ReconstructOptions(method="keyhole-registered", maps=True)
    for result in iter_reconstruct(phantom.lr, phantom.planning, options):
        t = result.index
        maps = result.maps
        assert maps.disagreement.shape == maps.unmeasured.shape == result.sr.shape
        core, site = phantom.insert_mask[..., t], phantom.planning_insert_mask[..., t]
        rest = object_mask(phantom.hr.frame(t)) & ~ndimage.binary_dilation(core | site, iterations=3)
        background = maps.disagreement[rest].mean()
        assert maps.disagreement[core].mean() >= 3 * background, t  # entered after the planning scan
        assert maps.disagreement[site].mean() >= 3 * background, t  # only in the planning scan
        assert 0 <= maps.consistency_nrmse < 0.2
        summary = maps.summary()
        assert set(summary) == {"consistency_nrmse", "disagreement_mean", "disagreement_p99", "unmeasured_mean",
                                "unmeasured_p99"}


def test_maps_off_computes_nothing(needle_phantom):
    phantom, _ = needle_phantom
    results = list(iter_reconstruct(phantom.lr, phantom.planning, ReconstructOptions(method="keyhole")))
    assert all(r.maps is None for r in results)


def test_cli_maps_share_the_output_geometry(tmp_path, needle_phantom):
    _, paths = needle_phantom
    out = tmp_path / "sr.nii.gz"
    args = ["reconstruct", str(paths["lr"]), "--prior", str(paths["planning"]), "--method", "keyhole-registered",
            "-o", str(out), "-q"]
    result = runner.invoke(app, [*args, "--maps"])
    assert result.exit_code == 0, result.output
    sr = load(out)
    for name in ("disagreement", "unmeasured"):
        volume = load(tmp_path / f"sr_{name}.nii.gz")
        assert volume.data.shape == sr.data.shape, name
        np.testing.assert_array_equal(volume.affine, sr.affine)
        assert volume.tr == sr.tr and (volume.qform_code, volume.sform_code) == (sr.qform_code, sr.sform_code)
    sidecar = json.loads((tmp_path / "sr.json").read_text())
    maps = sidecar["maps"]
    assert maps["files"] == {"disagreement": "sr_disagreement.nii.gz", "unmeasured": "sr_unmeasured.nii.gz"}
    assert [row["frame"] for row in maps["per_frame"]] == [0, 1, 2]
    assert maps["max_consistency_nrmse"] == max(row["consistency_nrmse"] for row in maps["per_frame"])
    # the recorded residual is the one of the written output
    lr = load(paths["lr"])
    assert maps["per_frame"][1]["consistency_nrmse"] == pytest.approx(consistency_nrmse(sr.frame(1), lr.frame(1)),
                                                                      rel=1e-3)

    # without --maps nothing extra is written and the sidecar says so
    plain = tmp_path / "plain"
    plain.mkdir()
    result = runner.invoke(app, [*args[:-3], "-o", str(plain / "sr.nii.gz"), "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in plain.iterdir()) == ["sr.json", "sr.nii.gz"]
    assert json.loads((plain / "sr.json").read_text())["maps"] is None


def test_cli_maps_never_overwrite_an_input(tmp_path, needle_phantom):
    phantom, paths = needle_phantom
    # an input named like a map of the requested output
    victim = save_like(tmp_path / "sr_disagreement.nii.gz", phantom.lr.data, phantom.lr, tr=phantom.tr)
    before = Path(victim).read_bytes()
    result = runner.invoke(app, ["reconstruct", str(victim), "--prior", str(paths["planning"]), "--method", "keyhole",
                                 "-o", str(tmp_path / "sr.nii.gz"), "--maps", "-q"])
    assert result.exit_code == 1  # a failed run (docs/cli.md, exit codes)
    assert Path(victim).read_bytes() == before
    assert not (tmp_path / "sr.nii.gz").exists()


def test_frame_maps_match_the_parts(needle_phantom):
    phantom, _ = needle_phantom
    frame = phantom.lr.frame(0)
    sinc = zero_fill(frame, phantom.hr.data.shape[:2])
    out = phantom.hr.frame(0)
    maps = frame_maps(out, phantom.planning.data, sinc, frame)
    np.testing.assert_array_equal(maps.unmeasured, unmeasured_map(out, frame.shape[:2]))
    np.testing.assert_array_equal(maps.disagreement, disagreement_map(phantom.planning.data, sinc, frame.shape[:2]))


def test_forgiving_misregistration_spares_edges_not_new_structures():
    """The gate's disagreement (``misregistration`` > 0) discounts what a small shift of the prior
    makes at an edge, but keeps most of a structure that appeared in flat tissue."""
    lr_inplane = (16, 16)
    hr = np.full((64, 64, 2), 100.0, dtype=np.float32)
    hr[:, :24] = 20.0  # an edge between dark and bright tissue
    shifted = np.roll(hr, 1, axis=1)  # the prior, misregistered by one voxel
    new = hr.copy()
    new[40:43, 44:60] = 20.0  # a structure only the frame has, in flat bright tissue
    sinc_shift = zero_fill(crop_lowres(hr, lr_inplane), hr.shape[:2])
    sinc_new = zero_fill(crop_lowres(new, lr_inplane), hr.shape[:2])
    plain_edge = disagreement_map(shifted, sinc_shift, lr_inplane)
    forgiving_edge = disagreement_map(shifted, sinc_shift, lr_inplane, misregistration=3.0)
    plain_new = disagreement_map(hr, sinc_new, lr_inplane)
    forgiving_new = disagreement_map(hr, sinc_new, lr_inplane, misregistration=3.0)
    assert (forgiving_edge <= plain_edge + 1e-7).all() and (forgiving_new <= plain_new + 1e-7).all()
    edge = (slice(None), slice(20, 28))
    structure = (slice(38, 45), slice(46, 58))
    kept_at_edge = forgiving_edge[edge].max() / plain_edge[edge].max()
    kept_at_structure = forgiving_new[structure].max() / plain_new[structure].max()
    assert kept_at_edge < 0.65 and kept_at_structure > kept_at_edge + 0.2
    # nothing changes without a prior, or where the prior is flat
    assert not disagreement_map(None, sinc_new, lr_inplane, misregistration=3.0).any()
