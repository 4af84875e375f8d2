"""Recurrent training data: long simulated dynamic series, one frame per training step.

Step-wise reconstruction feeds the network its own previous output as the prior, so any error
it makes comes back at the next frame. Training on single pairs never shows the network what its
own output looks like after tens of frames, and errors then compound (drift). A chain is one
simulated dynamic series of a training subject, with breathing-like periodic motion, slow
irregular motion and contrast uptake; the stream advances a pool of chains one frame at a time,
and the training loop keeps each chain's last network output to use as the next frame's prior
(see :func:`mrisr.training.loop.train`). A chain starts from the planning scan (another motion
state without contrast) as the prior of frame 0; some chains keep the planning scan as the prior
of every frame (the ``planning`` prior mode).

Everything is simulated on the full field of view, then cropped to the chain's fixed patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mrisr.training.pairs import PairGenerator, PairSettings, contrast_blob, crop_patch, random_field, sinc_lowres, warp
from mrisr.training.sources import SlabVolume


@dataclass
class ChainSettings:
    """Knobs of the chain simulator (validated by the training config schema)."""

    length: tuple[int, int] = (8, 48)
    period: tuple[float, float] = (6.0, 24.0)
    irregular_mm: tuple[float, float] = (0.0, 1.0)
    planning_fraction: float = 0.25
    pool: int = 16


class Chain:
    """One simulated dynamic series on a fixed patch of one training volume."""

    def __init__(self, gen: PairGenerator, settings: ChainSettings, chain_id: int) -> None:
        rng, s = gen.rng, gen.s
        self.id, self.rng, self.ps = chain_id, rng, s
        self.base, self.zooms = gen._base()
        shape = tuple(self.base.shape)
        self.shape = shape
        self.length = int(rng.integers(settings.length[0], settings.length[1] + 1))
        self.period = float(rng.uniform(*settings.period))
        self.phase = float(rng.uniform(0, 2 * math.pi))
        self.breathing = random_field(shape, self.zooms, rng.uniform(0.3, 1.0) * s.target_motion_mm, rng,
                                      s.control_spacing_mm)
        self.irregular = torch.zeros_like(self.breathing)
        self.irregular_mm = settings.irregular_mm
        self.contrast = contrast_blob(shape, self.zooms, rng, s.contrast_change) if rng.uniform() < 0.7 else None
        self.uptake_start = float(rng.uniform(0, self.length))
        self.uptake_rise = float(rng.uniform(2, 15))
        self.keep = gen._keep()
        self.snr = rng.uniform(*s.noise_snr) if rng.uniform() < s.noise_probability else None
        self.planning_mode = bool(rng.uniform() < settings.planning_fraction)
        self.start = gen._patch_start(self.base)
        f_plan = self.breathing * float(rng.uniform(0, 1)) + random_field(
            shape, self.zooms, rng.uniform(*s.planning_motion_mm), rng, s.control_spacing_mm)
        self.planning_full = warp(self.base, f_plan, self.zooms)
        self.t = 0

    @property
    def done(self) -> bool:
        return self.t >= self.length

    def next_frame(self) -> dict:
        """Simulate frame ``t`` and advance: patch-sized sinc input, target and planning prior,
        all divided by this frame's normalisation scale (returned too)."""
        rng = self.rng
        amp = 0.5 * (1 - math.cos(2 * math.pi * self.t / self.period + self.phase))
        self.irregular = 0.9 * self.irregular + random_field(self.shape, self.zooms, rng.uniform(*self.irregular_mm),
                                                             rng, self.ps.control_spacing_mm)
        target = warp(self.base, self.breathing * amp + self.irregular, self.zooms)
        if self.contrast is not None:
            uptake = min(1.0, max(0.0, (self.t - self.uptake_start) / self.uptake_rise))
            target = target * (1 + (self.contrast - 1) * uptake)
        sinc = sinc_lowres(target, self.keep, self.snr, rng)
        scale = float(torch.quantile(sinc.flatten()[:: max(1, sinc.numel() // 200_000)], 0.995).clamp_min(1e-6))
        patch = self.ps.patch
        first = self.t == 0
        self.t += 1
        return {
            "sinc": crop_patch(sinc, self.start, patch) / scale,
            "target": crop_patch(target, self.start, patch) / scale,
            "planning": crop_patch(self.planning_full, self.start, patch) / scale,
            "scale": scale,
            "id": self.id,
            "use_planning": first or self.planning_mode,
        }


class ChainStream(torch.utils.data.IterableDataset):
    """Endless batches of consecutive chain frames: each batch holds the next frame of
    ``batch_size`` chains from a pool, taken in turn, and a finished chain is replaced by a new one
    (with a new id, so the loop never uses another chain's output as a prior)."""

    def __init__(self, bank: list[SlabVolume], pair_settings: PairSettings, chain_settings: ChainSettings,
                 batch_size: int, seed: int) -> None:
        self.bank, self.ps, self.cs = bank, pair_settings, chain_settings
        self.batch_size, self.seed = batch_size, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        seed = self.seed + (info.id if info else 0) * 7919
        gen = PairGenerator(self.bank, self.ps, seed)
        pool_size = max(self.batch_size, self.cs.pool)
        next_id = seed * 1_000_003
        pool = []
        for _ in range(pool_size):
            pool.append(Chain(gen, self.cs, next_id))
            next_id += 1
        cursor = 0
        while True:
            frames = []
            for _ in range(self.batch_size):
                i = cursor % pool_size
                cursor += 1
                if pool[i].done:
                    pool[i] = Chain(gen, self.cs, next_id)
                    next_id += 1
                frames.append(pool[i].next_frame())
            yield {
                "sinc": torch.stack([f["sinc"] for f in frames])[:, None],
                "target": torch.stack([f["target"] for f in frames])[:, None],
                "planning": torch.stack([f["planning"] for f in frames])[:, None],
                "scale": torch.tensor([f["scale"] for f in frames], dtype=torch.float32),
                "id": torch.tensor([f["id"] for f in frames], dtype=torch.int64),
                "use_planning": torch.tensor([f["use_planning"] for f in frames]),
            }


class ChainMemory:
    """The training loop's side of the chains: each chain's last output, in absolute intensity
    units (output x scale), so the next frame can normalise it with its own scale."""

    def __init__(self) -> None:
        self._last: dict[int, torch.Tensor] = {}

    def priors(self, batch: dict, device: torch.device) -> torch.Tensor:
        """The prior of every frame in ``batch``: the planning scan at a chain's first frame (and
        for planning-mode chains), else that chain's previous output re-normalised."""
        prior = batch["planning"].to(device).clone()
        for i, (cid, plan) in enumerate(zip(batch["id"].tolist(), batch["use_planning"].tolist())):
            last = self._last.get(cid)
            if not plan and last is not None:
                prior[i] = last.to(device) / float(batch["scale"][i])
        return prior

    def remember(self, batch: dict, output: torch.Tensor) -> None:
        """Keep ``output`` (normalised, ``(B, 1, X, Y, Z)``) as each chain's last frame; forget chains
        that are gone from the pool."""
        ids = batch["id"].tolist()
        for i, cid in enumerate(ids):
            self._last[cid] = (output[i].detach().float().clamp_min(0) * float(batch["scale"][i])).cpu()
        if len(self._last) > 4096:
            for cid in sorted(self._last)[: len(self._last) - 2048]:
                del self._last[cid]
