"""Training-time structures (target-only, prior-only), contrast remaps and the gated prior input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrisr.data import load_sample
from mrisr.training.pairs import PairGenerator, PairSettings, gated_input, lowres_frame, zero_fill_torch
from mrisr.training.sources import SlabVolume
from mrisr.training.structures import StructureSettings, add_structures, ellipsoid, random_remap, tube

ZOOMS = (1.0, 1.0, 2.0)


def test_tube_has_the_volume_of_its_cylinder():
    """A tube of radius r and length L fully inside the grid occupies about pi r^2 L mm^3."""
    shape = (96, 96, 48)
    inside = torch.zeros(shape, dtype=torch.bool)
    inside[48, 48, 24] = True  # the tip
    rng = np.random.default_rng(0)
    occ = tube(shape, ZOOMS, rng, radius_mm=2.0, length_mm=20.0, inside=inside)
    volume_mm3 = float(occ.sum()) * math.prod(ZOOMS)
    cylinder = math.pi * 2.0**2 * 20.0
    assert 0.8 * cylinder < volume_mm3 < 1.35 * cylinder  # end caps add a little
    assert float(occ.max()) == 1.0 and float(occ.min()) == 0.0
    assert float(occ[48, 48, 24]) == 1.0  # it starts at the tip


def test_ellipsoid_is_centred_in_the_object_and_soft_edged():
    shape = (64, 64, 32)
    inside = torch.zeros(shape, dtype=torch.bool)
    inside[20, 30, 10] = True
    occ = ellipsoid(shape, ZOOMS, np.random.default_rng(1), radius_mm=5.0, inside=inside)
    assert float(occ[20, 30, 10]) == 1.0
    partial = ((occ > 0) & (occ < 1)).sum()
    assert partial > 0  # partial volume at the edge
    assert float(occ.sum()) * math.prod(ZOOMS) < 4 / 3 * math.pi * 7.0**3


def test_add_structures_changes_the_object_only_and_stays_non_negative():
    data = np.ascontiguousarray(load_sample().data[24:104, 24:120, 8:20], dtype=np.float32)
    volume = torch.from_numpy(data / np.percentile(data, 99.5))
    settings = StructureSettings(1.0, 1.0, 0.0, max_count=3)
    changed = [add_structures(volume, (1.5, 1.5, 3.0), np.random.default_rng(seed), settings) for seed in range(6)]
    for out in changed:
        assert out.shape == volume.shape and float(out.min()) >= 0.0
        diff = (out - volume).abs() > 1e-3
        assert diff.any()
        # structures start inside the object: most changed voxels are tissue
        assert float((volume[diff] > 0.1).float().mean()) > 0.5
    # the same seed gives the same structures
    again = add_structures(volume, (1.5, 1.5, 3.0), np.random.default_rng(0), settings)
    assert torch.equal(again, changed[0])


def test_random_remap_keeps_air_dark_and_reorders_tissue():
    ramp = torch.linspace(0, 1.2, 1000).reshape(10, 10, 10)
    reordered = 0
    for seed in range(20):
        out = random_remap(ramp, np.random.default_rng(seed))
        assert float(out[ramp < 0.05].max()) <= 0.05 * float(torch.quantile(ramp.flatten(), 0.99)) + 1e-6
        values = out.flatten()
        if bool((values[1:] < values[:-1] - 1e-6).any()):
            reordered += 1
    assert reordered >= 15  # usually non-monotone, as between T1 and T2 weighting


@pytest.fixture(scope="module")
def bank():
    data = np.ascontiguousarray(load_sample().data[24:104, 24:120, 4:20], dtype=np.float32)
    return [SlabVolume(data / np.percentile(data, 99.5), (1.5, 1.5, 3.0), "sample", "axial")]


def test_gated_prior_input_is_the_gated_keyhole_of_the_whole_field_of_view(bank):
    """The prior channel of a gated-keyhole pair is the gated keyhole formed on the whole field of
    view (as reconstruction forms it) and only then cropped; without structures or a prior error
    it is far closer to the target than sinc."""
    settings = PairSettings(patch=(32, 32, 8), prior_input="gated-keyhole", perturb_probability=0.0,
                            previous_motion_mm=(0.0, 0.0), planning_probability=0.0, noise_probability=0.0,
                            contrast_change=0.0)
    import mrisr.training.pairs as pairs

    shapes = []
    original = pairs.gated_input

    def recording(lowres, prior, sinc):
        shapes.append((tuple(prior.shape), tuple(sinc.shape)))
        return original(lowres, prior, sinc)

    pairs.gated_input = recording
    try:
        samples = PairGenerator(bank, settings, seed=3).draw_group(3)
    finally:
        pairs.gated_input = original
    # formed on the whole in-plane field of view (as reconstruction forms it on the whole frame),
    # over the patch's slices, then cropped to the 32x32 patch
    fov = (*bank[0].data.shape[:2], 8)
    assert shapes == [(fov, fov)] * 3
    from mrisr.metrics import ssim

    for s in samples:
        assert ssim(s.prior.numpy(), s.target.numpy()) > ssim(s.sinc.numpy(), s.target.numpy()) + 0.05
    target = torch.from_numpy(bank[0].data)
    lowres = lowres_frame(target, 6.25, None, np.random.default_rng(0))
    sinc = zero_fill_torch(lowres, target.shape[:2])
    gated = gated_input(lowres, target * 1.7, sinc)  # a prior equal to the truth, another scale
    np.testing.assert_allclose(gated.numpy(), target.numpy(), atol=2e-3 * float(target.max()))


#: the first two samples of ``PairGenerator(bank, PairSettings(patch=(32, 32, 8)), seed=7)`` on the
#: fixture's bank, recorded with the pair generator as it was before structures and the gated
#: input existed: (keep, sums of sinc / prior / target, their voxel [5, 7, 3])
BEFORE = [
    (11.5589385803241, (6357.31470900774, 6359.077091246843, 6369.246574610472),
     (0.8818662762641907, 0.8710147142410278, 0.8793532848358154)),
    (19.679251646064316, (6150.227638140321, 6122.039244025946, 6148.23340678215),
     (0.8879716396331787, 0.8665366172790527, 0.902298629283905)),
]


def test_structures_off_reproduce_the_pairs_of_existing_recipes(bank):
    """With every structure probability 0 (the schema's default) the generator draws nothing more
    from its RNG: the pairs are those the generator gave before these options existed."""
    samples = PairGenerator(bank, PairSettings(patch=(32, 32, 8)), seed=7).draw_group(2)
    for sample, (keep, sums, voxels) in zip(samples, BEFORE):
        assert sample.keep == pytest.approx(keep, rel=1e-12)
        got_sums = [float(getattr(sample, k).double().sum()) for k in ("sinc", "prior", "target")]
        got_voxels = [float(getattr(sample, k)[5, 7, 3]) for k in ("sinc", "prior", "target")]
        np.testing.assert_allclose(got_sums, sums, rtol=1e-5)
        np.testing.assert_allclose(got_voxels, voxels, rtol=1e-4)


def still_pairs(structures: StructureSettings, sites: bool = False) -> PairSettings:
    """Whole-slab pairs with no motion, noise, prior error, contrast change or gamma: target and
    prior differ only by the structures."""
    return PairSettings(patch=(96, 96, 16), perturb_probability=0.0, noise_probability=0.0,
                        previous_motion_mm=(0.0, 0.0), planning_probability=0.0, contrast_change=0.0,
                        gamma_range=(1.0, 1.0), structures=structures, sites=sites)


@pytest.mark.parametrize("where", ["target", "prior"])
def test_structures_go_into_one_side_only(bank, where, monkeypatch):
    """With no motion between target and prior, they differ where the inserted structures are (a
    small part of the volume), and the structures land on the side the settings name."""
    import mrisr.training.pairs as pairs

    def marking(volume, zooms, rng, settings):
        out = add_structures(volume, zooms, rng, settings).clone()
        out[tuple(n // 2 for n in out.shape)] = 1000.0  # a sentinel the patch (the whole slab) keeps
        return out

    structures = StructureSettings(1.0, 0.0, 0.0) if where == "target" else StructureSettings(0.0, 1.0, 0.0)
    settings = still_pairs(structures)
    for seed in range(3):
        plain = PairGenerator(bank, settings, seed=seed).draw_group(1)[0]
        changed = (plain.prior - plain.target).abs() > 1e-4
        assert 0.0005 < float(changed.float().mean()) < 0.2, seed
        with monkeypatch.context() as m:
            m.setattr(pairs, "add_structures", marking)
            s = PairGenerator(bank, settings, seed=seed).draw_group(1)[0]
        side, other = (s.target, s.prior) if where == "target" else (s.prior, s.target)
        assert float(side.max()) > 50 * float(other.max()), seed


def test_gated_input_refuses_self_priors(bank):
    settings = PairSettings(patch=(32, 32, 8), prior_input="gated-keyhole")
    with pytest.raises(ValueError, match="gated-keyhole"):
        PairGenerator(bank, settings, seed=0).draw_group(1, self_prior=True)


@pytest.mark.parametrize("where", ["target", "prior"])
def test_sites_cover_where_target_and_prior_differ_because_of_structures(bank, where):
    """The site mask of a pair covers the voxels where an inserted structure makes target and prior
    differ (no motion, so nothing else does), a small part of the patch; none without structures,
    and none unless asked for (a recipe without the site-weighted loss computes nothing)."""
    structures = StructureSettings(1.0, 0.0, 0.0) if where == "target" else StructureSettings(0.0, 1.0, 0.0)
    settings = still_pairs(structures, sites=True)
    for seed in range(3):
        s = PairGenerator(bank, settings, seed=seed).draw_group(1)[0]
        assert s.sites is not None and s.sites.dtype == torch.bool and s.sites.shape == s.target.shape
        strong = (s.prior - s.target).abs() > 0.15
        assert bool(strong.any()), seed
        assert bool(s.sites[strong].all()), seed  # every clear difference is a site
        assert 0.0005 < float(s.sites.float().mean()) < 0.3, seed
    plain = PairGenerator(bank, PairSettings(patch=(32, 32, 8), sites=True), seed=0).draw_group(1)[0]
    assert plain.sites is None
    unasked = PairGenerator(bank, still_pairs(structures), seed=0).draw_group(1)[0]
    assert unasked.sites is None


def test_prior_noise_is_independent_rician_noise_on_the_prior_only():
    """``prior_noise_probability`` gives the prior its own noise at the drawn SNR; the target and
    the measured frame are those of the same draw without it."""
    ax = np.arange(96, dtype=np.float32) - 47.5
    r = np.sqrt(ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + 0 * np.arange(16)[None, None, :])
    head = [SlabVolume(np.where(r < 30, 0.8, 0.0).astype(np.float32), (1.5, 1.5, 3.0), "disc", "axial")]
    base = dict(patch=(96, 96, 16), perturb_probability=0.0, noise_probability=0.0, previous_motion_mm=(0.0, 0.0),
                planning_probability=0.0, contrast_change=0.0, gamma_range=(1.0, 1.0))
    clean = PairGenerator(head, PairSettings(**base), seed=4).draw_group(1)[0]
    noisy = PairGenerator(head, PairSettings(**base, prior_noise_probability=1.0, prior_noise_snr=(20.0, 20.0)),
                          seed=4).draw_group(1)[0]
    torch.testing.assert_close(noisy.target, clean.target)
    torch.testing.assert_close(noisy.sinc, clean.sinc)
    residual = noisy.prior - clean.prior
    tissue = torch.from_numpy(r < 25)
    level = float(clean.prior[tissue].mean())
    # in tissue (signal >> noise) Rician noise is nearly Gaussian with sigma = level / SNR
    assert float(residual[tissue].std()) == pytest.approx(level / 20.0, rel=0.1)
    assert abs(float(residual[tissue].mean())) < 0.1 * level / 20.0
    # in the air the magnitude of pure noise is Rayleigh, mean sigma * sqrt(pi / 2): a real scan's floor
    air = torch.from_numpy(r > 35)
    assert float(noisy.prior[air].mean()) == pytest.approx(level / 20.0 * math.sqrt(math.pi / 2), rel=0.1)


def test_site_weighted_loss_weighs_errors_at_sites():
    from mrisr.training.losses import SRLoss

    target = torch.full((1, 1, 16, 16, 8), 0.5)
    sites = torch.zeros_like(target, dtype=torch.bool)
    sites[..., :4, :4, :] = True
    at_site, elsewhere = target.clone(), target.clone()
    at_site[..., 1, 1, 4] += 1.0
    elsewhere[..., 10, 10, 4] += 1.0
    plain = SRLoss(ssim=0.0, tissue=0.0)
    weighted = SRLoss(ssim=0.0, tissue=0.0, sites=8.0)
    # without the option, or without a mask, the place of an error does not matter
    assert float(plain(at_site, target, sites)[0]) == pytest.approx(float(plain(elsewhere, target, sites)[0]))
    assert float(weighted(at_site, target)[0]) == pytest.approx(float(weighted(elsewhere, target)[0]))
    # with both, an error at a site costs 1 + 8 times one elsewhere
    ratio = float(weighted(at_site, target, sites)[0]) / float(weighted(elsewhere, target, sites)[0])
    assert ratio == pytest.approx(9.0, rel=1e-5)


def test_a_gated_pair_filters_its_noisy_prior_as_reconstruction_does(monkeypatch):
    """With a gated-keyhole prior channel, a prior given noise of its own goes through the same
    Wiener filter reconstruction applies to a noisy planning scan (option ``denoise_prior``)
    before the gate; a clean prior does not."""
    import mrisr.training.pairs as pairs

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = pairs.denoised_prior

    def spy(prior):
        out = original(prior)
        seen.append((prior, out))
        return out

    monkeypatch.setattr(pairs, "denoised_prior", spy)
    bank = [SlabVolume(np.ascontiguousarray(load_sample().data[:, :, :8], dtype=np.float32), (1.5, 1.5, 3.0), "s", "axial")]
    base = dict(patch=(64, 64, 8), prior_input="gated-keyhole", perturb_probability=0.0, noise_probability=0.0)
    PairGenerator(bank, PairSettings(**base), seed=1).draw_group(1)
    assert seen == []
    PairGenerator(bank, PairSettings(**base, prior_noise_probability=1.0, prior_noise_snr=(10.0, 10.0)),
                  seed=1).draw_group(1)
    assert len(seen) == 1
    noisy, filtered = seen[0]
    # the filter took out most of the noise's power at the highest spatial frequencies
    def high(volume):
        spectrum = torch.fft.fft2(volume, dim=(0, 1))
        n = volume.shape[0] // 4
        return float(spectrum[volume.shape[0] // 2 - n: volume.shape[0] // 2 + n].abs().square().mean())
    assert high(filtered) < 0.5 * high(noisy)
