"""The training data streams: the recipe's pair and chain settings, endless batches of
on-the-fly pairs (:class:`PairStream`) and chain frames, and the choice, step by step, of which
one the training loop draws from (:class:`Streams`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from mrisr.training.chains import ChainMemory, ChainSettings, ChainStream
from mrisr.training.config import TrainConfig
from mrisr.training.pairs import PairGenerator, PairSettings
from mrisr.training.sources import SlabVolume, build_bank
from mrisr.training.structures import StructureSettings


def chain_settings(cfg: TrainConfig) -> ChainSettings:
    """The recipe's chains section as the chain generator's settings."""
    c = cfg.chains
    return ChainSettings(length=tuple(c.length), period=tuple(c.period), irregular_mm=tuple(c.irregular_mm),
                         planning_fraction=c.planning_fraction, pool=c.pool)


def loader(dataset: IterableDataset, workers: int) -> DataLoader:
    """Batches as the dataset yields them (``batch_size=None``), from ``workers`` processes (0: this one)."""
    return DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None)


def pair_settings(cfg: TrainConfig) -> PairSettings:
    """The recipe's settings of the pair generator (patch, simulation, motion, prior, structures)."""
    return PairSettings(
        patch=tuple(cfg.data.patch),
        keep_range=tuple(cfg.simulation.keep_range),
        target_motion_mm=cfg.motion.target_mm,
        previous_motion_mm=tuple(cfg.motion.previous_mm),
        planning_motion_mm=tuple(cfg.motion.planning_mm),
        planning_probability=cfg.motion.planning_probability,
        contrast_change=cfg.motion.contrast_change,
        gamma_range=tuple(cfg.motion.gamma_range),
        noise_probability=cfg.simulation.noise_probability,
        noise_snr=tuple(cfg.simulation.noise_snr),
        perturb_probability=cfg.prior.perturb_probability,
        prior_noise_probability=cfg.prior.noise_probability,
        prior_noise_snr=tuple(cfg.prior.noise_snr),
        sites=cfg.loss.sites > 0,
        structures=StructureSettings(**cfg.structures.model_dump()),
        prior_input=cfg.model.prior_input,
    )


class PairStream(IterableDataset):
    """Endless batches of training pairs; a fraction carries the previous frame's inputs so
    the loop can swap in the network's own output as the prior."""

    def __init__(self, bank: list[SlabVolume], settings: PairSettings, batch_size: int, self_prior_probability: float,
                 seed: int) -> None:
        self.bank, self.settings, self.batch_size = bank, settings, batch_size
        self.p_self, self.seed = self_prior_probability, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        seed = self.seed + (info.id if info else 0) * 7919
        gen = PairGenerator(self.bank, self.settings, seed)
        pick = np.random.default_rng(seed + 1)
        while True:
            samples, flags = [], []
            # half the batch shares one simulated field of view, the other half another
            while len(samples) < self.batch_size:
                flag = bool(pick.uniform() < self.p_self)
                group = gen.draw_group(min(max(1, self.batch_size // 2), self.batch_size - len(samples)), self_prior=flag)
                samples += group
                flags += [flag] * len(group)
            zeros = torch.zeros_like(samples[0].sinc)
            no_sites = torch.zeros_like(samples[0].sinc, dtype=torch.bool)
            yield {
                "sinc": torch.stack([s.sinc for s in samples])[:, None],
                "prior": torch.stack([s.prior for s in samples])[:, None],
                "target": torch.stack([s.target for s in samples])[:, None],
                "prev_sinc": torch.stack([s.prev_sinc if s.prev_sinc is not None else zeros for s in samples])[:, None],
                "prev_prior": torch.stack([s.prev_prior if s.prev_prior is not None else zeros for s in samples])[:, None],
                "sites": torch.stack([s.sites if s.sites is not None else no_sites for s in samples])[:, None],
                "self_prior": torch.tensor(flags),
                "keep": torch.tensor([s.keep for s in samples]),
            }


@dataclass
class Streams:
    """The batches a run draws from: plain pairs and chain frames (either may be ``None``), the
    chains' memory of their last outputs, and the coin that picks a chain step."""

    pairs: Iterator[dict] | None
    chains: Iterator[dict] | None
    memory: ChainMemory
    pick: np.random.Generator
    chains_start: float
    chains_probability: float

    def next_batch(self, progress: float) -> tuple[dict, bool]:
        """The next batch and whether it is a chain step (the coin is tossed only when both streams run)."""
        chain_step = self.chains is not None and progress >= self.chains_start and (
            self.pairs is None or self.pick.uniform() < self.chains_probability)
        return next(self.chains if chain_step else self.pairs), chain_step


def open_streams(cfg: TrainConfig, start_step: int) -> Streams:
    """The run's data streams, seeded by the step it starts from (a resumed run draws new batches)."""
    bank = build_bank(cfg.data.train, cfg.data.inplane_mm, cfg.data.slice_mm, list(cfg.data.orientations))
    workers = cfg.data_workers
    use_chains = cfg.model.use_prior and cfg.chains.probability > 0
    pairs = None
    if not use_chains or cfg.chains.probability < 1 or cfg.chains.start > 0:
        pairs = iter(loader(PairStream(bank, pair_settings(cfg), cfg.optim.batch_size,
                                        cfg.prior.self_prior_probability if cfg.model.use_prior else 0.0,
                                        cfg.seed + start_step), workers))
    chains = None
    if use_chains:
        chains = iter(loader(ChainStream(bank, pair_settings(cfg), chain_settings(cfg), cfg.optim.batch_size,
                                          cfg.seed + 31 + start_step), workers))
    return Streams(pairs, chains, ChainMemory(), np.random.default_rng(cfg.seed + 97 + start_step),
                    cfg.chains.start, cfg.chains.probability)
