"""The tracked prior: demons registration, field resampling conventions, and the motion tracker
that deforms the planning scan to each LR frame's motion state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mrisr_testdata import head_phantom

from mrisr.data import load_sample
from mrisr.kspace import crop_lowres, zero_fill
from mrisr.models import load as load_model
from mrisr.models import make_tiny_checkpoint
from mrisr.phantom import make_dynamic
from mrisr.reconstruct import ReconstructOptions, iter_reconstruct
from mrisr.reconstruct.demons import demons, smooth, warp, warp_rows
from mrisr.reconstruct.motion import MotionTracker, TrackingSettings, _interp_matrix


def test_warp_identity_and_integer_shift():
    vol = torch.rand(8, 9, 5, generator=torch.Generator().manual_seed(0))
    assert float((warp(vol, torch.zeros(3, 8, 9, 5)) - vol).abs().max()) < 1e-5
    shift = torch.zeros(3, 8, 9, 5)
    shift[1] = 2.0
    np.testing.assert_allclose(warp(vol, shift)[:, :-2].numpy(), vol[:, 2:].numpy(), atol=1e-5)
    # the warp in blocks of rows (the tracker's HR warp) is the same warp
    disp = torch.randn(3, 8, 9, 5, generator=torch.Generator().manual_seed(1))
    blocks = torch.cat([warp_rows(vol, disp[:, i : i + 3], i) for i in range(0, 8, 3)])
    np.testing.assert_allclose(blocks.numpy(), warp(vol, disp).numpy(), atol=1e-6)


def _warp_3d(volume, disp):
    """The reference trilinear warp: torch's 3-D sampler on normalised coordinates."""
    import torch.nn.functional as F

    n = volume.shape
    idx = [torch.arange(s, dtype=torch.float32) for s in n]
    coords = []
    for a in (2, 1, 0):
        shape = [1, 1, 1]
        shape[a] = -1
        coords.append((idx[a].view(shape) + disp[a]) * (2.0 / max(n[a] - 1, 1)) - 1.0)
    grid = torch.stack(coords, dim=-1)[None]
    return F.grid_sample(volume[None, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0, 0]


def test_slice_stacked_warp_is_the_trilinear_warp():
    """The 2-D sampler on stacked slices equals the 3-D trilinear sampler: displacements across
    slices, past every border (clamped, never mixing two slices), in blocks of rows."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(5)
    vol = torch.from_numpy(gaussian_filter(rng.random((24, 20, 7)), 1.0).astype(np.float32))
    disp = torch.from_numpy((rng.standard_normal((3, 24, 20, 7)) * 3).astype(np.float32))
    disp[:, :2] += 40.0  # far outside: border values
    disp[2, :, :3] -= 9.0
    ref = _warp_3d(vol, disp)
    span = float(vol.max() - vol.min())
    np.testing.assert_allclose(warp(vol, disp).numpy(), ref.numpy(), atol=1e-5 * span)
    blocks = torch.cat([warp_rows(vol, disp[:, i : i + 5], i) for i in range(0, 24, 5)])
    np.testing.assert_allclose(blocks.numpy(), ref.numpy(), atol=1e-5 * span)
    # a single slice and a single row
    flat = vol[:, :, :1].contiguous()
    np.testing.assert_allclose(warp(flat, disp[:, :, :, :1]).numpy(), _warp_3d(flat, disp[:, :, :, :1]).numpy(),
                               atol=1e-5 * span)


def _cubic_reference(volume, disp):
    """Bicubic in-plane, linear between slices, one slice at a time with torch's 2-D sampler."""
    import torch.nn.functional as F

    n = volume.shape
    ix = (torch.arange(n[0], dtype=torch.float32).view(-1, 1, 1) + disp[0]).clamp(0, n[0] - 1)
    iy = (torch.arange(n[1], dtype=torch.float32).view(1, -1, 1) + disp[1]).clamp(0, n[1] - 1)
    iz = (torch.arange(n[2], dtype=torch.float32).view(1, 1, -1) + disp[2]).clamp(0, n[2] - 1)
    z0 = iz.floor()
    grid = torch.stack([iy * 2 / (n[1] - 1) - 1, ix * 2 / (n[0] - 1) - 1], dim=-1).reshape(1, n[0], n[1] * n[2], 2)
    picked = []
    for zsel in (z0, (z0 + 1).clamp(max=n[2] - 1)):
        acc = torch.zeros(n)
        for k in range(n[2]):
            sampled = F.grid_sample(volume[:, :, k][None, None], grid, mode="bicubic", padding_mode="border",
                                    align_corners=True).view(n)
            acc = torch.where(zsel == k, sampled, acc)
        picked.append(acc)
    return torch.lerp(picked[0], picked[1], iz - z0)


def test_cubic_warp_is_bicubic_in_plane_and_linear_between_slices():
    """Per slice, torch's bicubic sampler with border values (the repeated rows around each slice
    keep its 4x4 kernel inside the slice), blocks of rows included; exact on integer shifts."""
    rng = np.random.default_rng(7)
    vol = torch.from_numpy(rng.random((12, 10, 4)).astype(np.float32))
    disp = torch.from_numpy((rng.standard_normal((3, 12, 10, 4)) * 2).astype(np.float32))
    disp[:, :2] += 20.0
    ref = _cubic_reference(vol, disp)
    np.testing.assert_allclose(warp_rows(vol, disp, 0, mode="cubic").numpy(), ref.numpy(), atol=2e-5)
    blocks = torch.cat([warp_rows(vol, disp[:, i : i + 5], i, mode="cubic") for i in range(0, 12, 5)])
    np.testing.assert_allclose(blocks.numpy(), ref.numpy(), atol=2e-5)
    shift = torch.zeros(3, 12, 10, 4)
    shift[0] = 3.0
    np.testing.assert_allclose(warp_rows(vol, shift, 0, mode="cubic")[:-3].numpy(), vol[3:].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="warp mode"):
        warp_rows(vol, shift, 0, mode="nearest")


def test_cubic_warp_keeps_fine_texture_that_trilinear_blurs():
    """A half-voxel shift of white noise: trilinear averages two neighbours (standard deviation
    x0.71); the cubic warp keeps more of it (x0.85). A real planning scan's noise and texture are
    that fine."""
    x, y = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    vol = torch.from_numpy(np.random.default_rng(3).standard_normal((16, 16, 3)).astype(np.float32))
    smooth_x = torch.from_numpy(np.repeat((np.sin(x / 3.0) + 2).astype(np.float32)[..., None], 3, axis=2))
    shift = torch.zeros(3, 16, 16, 3)
    shift[0] = 0.5
    inner = (slice(3, -3), slice(3, -3))
    kept = {mode: float(warp_rows(vol, shift, 0, mode=mode)[inner].std() / vol[inner].std()) for mode in ("linear", "cubic")}
    assert kept["linear"] < 0.78 and kept["cubic"] > 0.8, kept
    # and on a smooth image the cubic warp is closer to the exact shifted image
    exact = torch.from_numpy(np.repeat((np.sin((x + 0.5) / 3.0) + 2).astype(np.float32)[..., None], 3, axis=2))[inner]
    err_linear = float((warp_rows(smooth_x, shift, 0, mode="linear")[inner] - exact).abs().max())
    err_cubic = float((warp_rows(smooth_x, shift, 0, mode="cubic")[inner] - exact).abs().max())
    assert err_cubic < err_linear / 1.5


def test_resampling_follows_the_kspace_centre_convention():
    """HR index N//2 and LR index M//2 are the same point: a ramp over LR indices, upsampled to the
    HR grid as the tracker upsamples its field, reads (i - N//2) * M/N + M//2 at HR index i."""
    expected = np.clip((np.arange(32) - 16) * 8 / 32 + 4, 0, 7)
    mat = _interp_matrix(32, 8)
    np.testing.assert_allclose(mat.sum(1).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose((mat @ torch.arange(8.0)).numpy(), expected, atol=1e-5)


def test_smoothing_keeps_constants_and_short_axes():
    field = torch.full((3, 6, 7, 1), 2.5)
    np.testing.assert_allclose(smooth(field, 1.5).numpy(), 2.5, atol=1e-5)
    assert smooth(torch.rand(3, 4, 4, 2), 3.0).shape == (3, 4, 4, 2)


def test_demons_recovers_a_smooth_shift():
    from scipy.ndimage import gaussian_filter

    texture = gaussian_filter(np.random.default_rng(3).random((40, 40, 12)), 2.0).astype(np.float32)
    base = torch.from_numpy(texture)
    true = torch.zeros(3, 40, 40, 12)
    true[0], true[1] = 1.5, -1.0
    fixed = warp(base, true)
    u = demons(fixed, base, 60, 1.0)
    interior = (slice(12, 28), slice(12, 28), slice(4, 8))
    assert abs(float(u[0][interior].mean()) - 1.5) < 0.1
    assert abs(float(u[1][interior].mean()) + 1.0) < 0.1
    assert float((warp(base, u) - fixed).abs().mean()) < 0.3 * float((base - fixed).abs().mean())


@pytest.mark.parametrize("max_inplane", [40, 12])
def test_tracker_moves_the_planning_scan_to_the_frame(max_inplane):
    """Planning scan at rest; the frame is the same anatomy shifted by (2, -1.5) HR voxels and seen
    through 6.25 % of k-space. The tracked prior is much closer to the true frame than the planning
    scan, also when registration runs on a coarser grid than the LR matrix."""
    hr = (64, 64, 8)
    planning = head_phantom(hr, seed=1)
    moved = head_phantom(hr, seed=1, shift=(2.0, -1.5, 0.0))
    lr_frame = crop_lowres(moved, (16, 16))
    tracker = MotionTracker(planning, (16, 16, 8), TrackingSettings(max_inplane=max_inplane))
    assert tracker.reg_shape == ((16, 16, 8) if max_inplane == 40 else (8, 8, 8))
    prior = tracker.prior_for(lr_frame)
    assert prior.shape == hr and prior.dtype == np.float32 and prior.min() >= 0
    before = np.abs(planning - moved).mean()
    after = np.abs(prior - moved).mean()
    assert after < 0.5 * before
    # the next frame starts from this motion
    assert tracker._field is not None


def test_tracker_rejects_mismatched_slices():
    with pytest.raises(ValueError, match="same number of slices"):
        MotionTracker(np.zeros((32, 32, 8), np.float32), (8, 8, 6))


def test_tracked_mode_feeds_the_tracked_planning_scan_to_every_frame(tmp_path):
    sample = load_sample()
    crop = sample.with_data(np.ascontiguousarray(sample.data[32:96, 40:104, 12:20]))
    phantom = make_dynamic(crop, frames=3, keep=6.25, seed=4)
    model = load_model(make_tiny_checkpoint(tmp_path / "tiny.safetensors", prior=True))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.network.head.weight.copy_(torch.randn(model.network.head.weight.shape, generator=gen) * 0.2)
    results = list(iter_reconstruct(phantom.lr, phantom.planning, ReconstructOptions(precision="fp32"), model=model))
    assert ReconstructOptions().prior_mode == "tracked" and len(results) == 3
    # an independent tracker on the same prepared planning scan gives the priors that were used
    from mrisr.reconstruct import prepare_state

    rec = prepare_state(phantom.lr, phantom.planning, ReconstructOptions(), model=model, first_frame=phantom.lr.frame(0))
    tracker = MotionTracker(rec.prior.data, rec.grid.lr_shape)
    for t, result in enumerate(results):
        frame = phantom.lr.frame(t)
        expected = model.predict(zero_fill(frame, rec.grid.hr_inplane), tracker.prior_for(frame), precision="fp32")
        np.testing.assert_allclose(result.sr, expected, rtol=1e-4, atol=1e-3)
    planning = list(iter_reconstruct(phantom.lr, phantom.planning, ReconstructOptions(prior_mode="planning"),
                                     model=model))
    assert not np.allclose(results[1].sr, planning[1].sr)


def test_sidecar_records_the_tracking(tmp_path):
    import json

    from mrisr.workflow import reconstruct_file

    sample = load_sample()
    crop = sample.with_data(np.ascontiguousarray(sample.data[32:96, 40:104, 12:20]))
    files = make_dynamic(crop, frames=2, keep=6.25, seed=4).save(tmp_path / "phantom")
    tiny = make_tiny_checkpoint(tmp_path / "tiny.safetensors", prior=True)
    report = reconstruct_file(files["lr"], tmp_path / "sr.nii.gz", files["planning"], ReconstructOptions(model=str(tiny)))
    side = json.loads(report.sidecar.read_text())
    assert side["options"]["prior_mode"] == "tracked"
    tracking = side["prior"]["tracking"]
    assert tracking["iterations"] == TrackingSettings().iterations and tracking["lr_shape"] == [16, 16, 8]
    assert tracking["registration_shape"] == [16, 16, 8] and tracking["hr_shape"] == [64, 64, 8]
    planning = reconstruct_file(files["lr"], tmp_path / "sr_planning.nii.gz", files["planning"],
                                ReconstructOptions(model=str(tiny), prior_mode="planning"))
    assert json.loads(planning.sidecar.read_text())["prior"]["tracking"] is None


def test_an_all_zero_frame_in_the_middle_is_a_one_line_error(tmp_path):
    """Nothing was measured in that frame: refused naming the frame (it used to be an IndexError of
    the tracked prior's histogram matching); the output is not written."""
    from typer.testing import CliRunner

    from mrisr.cli import app
    from mrisr.io import Volume, load, save_like
    from mrisr.reconstruct.demons import match_histogram

    sample = load_sample()
    crop = Volume(data=np.ascontiguousarray(sample.data[52:76, 52:76, 10:18]), affine=sample.affine)
    files = make_dynamic(crop, frames=3, keep=25, seed=2).save(tmp_path / "phantom")
    lr = load(files["lr"])
    data = np.asarray(lr.data).copy()
    data[..., 1] = 0
    dynamic = save_like(tmp_path / "gap.nii.gz", data, lr, tr=lr.tr)
    model = make_tiny_checkpoint(tmp_path / "tiny.safetensors", prior=True)
    out = tmp_path / "out" / "sr.nii.gz"
    result = CliRunner().invoke(app, ["reconstruct", str(dynamic), "--prior", str(files["planning"]),
                                      "--model", str(model), "-o", str(out), "--quiet"])
    assert result.exit_code == 1, result.output  # a failed run
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "frame 1 is all zero" in lines[0] and str(dynamic) in lines[0], result.stderr
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    # the tracker's histogram matching itself no longer fails on an empty image
    moving = np.asarray(crop.data, np.float32)
    np.testing.assert_array_equal(match_histogram(moving, np.zeros_like(moving)), moving)


def test_histogram_matching_ignores_a_noise_floor_in_the_air():
    """A planning scan with noise of its own has a Rician floor in the air that a noise-free frame
    lacks; counted as object, it would shift every matched quantile of the tissue."""
    from mrisr.reconstruct.demons import match_histogram

    rng = np.random.default_rng(0)
    fixed = np.zeros((48, 48, 4), np.float32)
    fixed[12:36, 12:36] = np.linspace(50, 100, 24, dtype=np.float32)[:, None, None]
    noisy = np.abs(fixed + rng.normal(0, 4.0, fixed.shape) + 1j * rng.normal(0, 4.0, fixed.shape)).astype(np.float32)
    tissue = fixed > 0
    matched = match_histogram(noisy, fixed, foreground=TrackingSettings().histogram_foreground)
    loose = match_histogram(noisy, fixed, foreground=0.0)  # the air's floor counted as object
    error, loose_error = (float(np.mean(np.abs(m[tissue] - fixed[tissue]))) for m in (matched, loose))
    assert error < 5.0 and loose_error > 2 * error


def test_histogram_matching_maps_a_brighter_air_to_the_frames():
    """With ``background`` (the tracker's default), the Rician floor in the air of a planning scan
    with noise of its own is mapped to the frame's darker air instead of staying bright; an air as
    dark as the frame's is left as without it."""
    from mrisr.reconstruct.demons import match_histogram

    rng = np.random.default_rng(1)
    fixed = np.zeros((48, 48, 4), np.float32)
    fixed[12:36, 12:36] = np.linspace(50, 100, 24, dtype=np.float32)[:, None, None]
    noisy = np.abs(fixed + rng.normal(0, 8.0, fixed.shape) + 1j * rng.normal(0, 8.0, fixed.shape)).astype(np.float32)
    air = fixed == 0
    plain = match_histogram(noisy, fixed, foreground=0.25)
    mapped = match_histogram(noisy, fixed, foreground=0.25, background=True)
    assert float(np.median(plain[air])) > 5.0  # the floor (about 10) survives the 0 -> 0 map
    assert float(np.median(mapped[air])) < 0.5  # mapped to the frame's air
    tissue = fixed > 0
    assert float(np.mean(np.abs(mapped[tissue] - fixed[tissue]))) < 7.0
    np.testing.assert_array_equal(match_histogram(fixed, noisy, foreground=0.25, background=True),
                                  match_histogram(fixed, noisy, foreground=0.25))
    assert TrackingSettings().histogram_background
