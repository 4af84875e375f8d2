"""The training loop: on-the-fly pairs, L1 + SSIM, AdamW with warm-up and cosine decay,
validation on held-out subjects, CSV log, checkpoints and resume."""

from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from mrisr.io.errors import MrisrInputError, one_line
from mrisr.io.guard import check_target, partial_file, release_input
from mrisr.models.checkpoint import save_checkpoint
from mrisr.models.network import PriorSRNet
from mrisr.models.predictor import resolve_device
from mrisr.training.chains import ChainMemory, ChainSettings, ChainStream
from mrisr.training.config import TrainConfig
from mrisr.training.losses import SRLoss
from mrisr.training.pairs import (
    PairGenerator,
    PairSettings,
    degrade_prior,
    gated_input,
    lowres_frame,
    random_field,
    warp,
    zero_fill_torch,
)
from mrisr.training.sources import SlabVolume, build_bank
from mrisr.training.structures import StructureSettings


def chain_settings(cfg: TrainConfig) -> ChainSettings:
    c = cfg.chains
    return ChainSettings(length=tuple(c.length), period=tuple(c.period), irregular_mm=tuple(c.irregular_mm),
                         planning_fraction=c.planning_fraction, pool=c.pool)


def initial_weights(cfg: TrainConfig, net: PriorSRNet, device: torch.device) -> dict | None:
    """Load ``cfg.init`` (a bundled name or checkpoint path) into ``net``; its provenance for the metadata."""
    if not cfg.init:
        return None
    from mrisr.io.hashing import file_sha256
    from mrisr.models.registry import resolve_model_path

    path = resolve_model_path(cfg.init)
    meta = _load_weights(net, path, device, "init checkpoint", "set the recipe's model section to the checkpoint's settings",
                         new_prior_input_ok=True)
    return {"source": str(cfg.init), "sha256": file_sha256(path), "steps": meta.get("training", {}).get("steps")}


def _load_weights(net: PriorSRNet, path: str | Path, device: torch.device, what: str, fix: str,
                  new_prior_input_ok: bool = False) -> dict:
    """Load a checkpoint's weights into ``net`` after checking it has the recipe's architecture; its metadata.

    With ``new_prior_input_ok`` (starting a new stage from it) the checkpoint may have another
    ``prior_input``: the body's weights are kept and the head starts from zero."""
    from mrisr.models.checkpoint import load_network

    loaded, meta = load_network(path, device)
    same_body = {k: v for k, v in (meta.get("arguments") or {}).items() if k != "prior_input"} == {
        k: v for k, v in net.config().items() if k != "prior_input"}
    new_input = getattr(loaded, "prior_input", "prior") != getattr(net, "prior_input", "prior")
    if not same_body or (new_input and not new_prior_input_ok):
        raise MrisrInputError(
            f"{path}: {what} model {meta.get('arguments')} differs from the recipe's model {net.config()}; {fix}"
        )
    net.load_state_dict(loaded.state_dict())
    if new_input:
        # a model started from one with another prior input keeps the UNet's features but
        # starts from a zero residual on its own base (the sinc or the gated keyhole)
        torch.nn.init.zeros_(net.head.weight)
        torch.nn.init.zeros_(net.head.bias)
    return meta


def _load_state(path: Path, opt: torch.optim.Optimizer, device: torch.device) -> tuple[int, float]:
    """Restore the optimiser from ``<checkpoint>.state.pt``; the step count and elapsed seconds.

    Only tensors and plain containers are read (``weights_only``): anything else in the file is a
    one-line error, never unpickled.
    """
    fix = "delete it to resume from the checkpoint's weights alone, or start a new run"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on foreign pickles: the file is judged below
            state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        reason = "it holds objects other than tensors" if "weights only" in str(exc).lower() else one_line(exc)
        raise MrisrInputError(f"{path}: not an mrisr optimiser state ({reason}); {fix}") from None
    if not isinstance(state, dict) or not {"optimizer", "step", "elapsed"} <= set(state):
        raise MrisrInputError(f"{path}: not an mrisr optimiser state (keys optimizer, step, elapsed expected); {fix}")
    try:
        opt.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
    except Exception as exc:
        raise MrisrInputError(f"{path}: optimiser state does not fit this model ({one_line(exc)}); {fix}") from None
    if step < 0 or not math.isfinite(elapsed) or elapsed < 0:
        raise MrisrInputError(f"{path}: step {step} / elapsed {elapsed} s are not a valid position; {fix}")
    return step, elapsed


def _save_state(path: Path, opt: torch.optim.Optimizer, step: int, elapsed: float) -> None:
    """Write the optimiser state next to the checkpoint, atomically."""
    from mrisr.io.save import _publish

    tmp = partial_file(path)
    try:
        torch.save({"optimizer": opt.state_dict(), "step": step, "elapsed": elapsed}, tmp)
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _loader(dataset, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None)


def pair_settings(cfg: TrainConfig) -> PairSettings:
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
class ValidationCase:
    keep: float
    sinc: np.ndarray
    prior: np.ndarray
    target: np.ndarray
    scale: float


def build_validation(cfg: TrainConfig) -> list[ValidationCase]:
    """Fixed whole-slab cases from the held-out subject(s): target, perturbed previous-frame
    prior and sinc input at each validation keep level."""
    if not cfg.data.validation:
        return []
    bank = build_bank(cfg.data.validation, [1.5], [3.0], ["axial"])
    cases = []
    rng = np.random.default_rng(cfg.seed + 12345)
    for slab in bank:
        nz = slab.data.shape[2]
        depth = min(cfg.validation.slices, nz)
        for _ in range(cfg.validation.samples):
            z0 = int(nz // 2 - depth // 2 + rng.integers(-depth // 2, depth // 2 + 1))
            z0 = max(0, min(nz - depth, z0))
            base = torch.from_numpy(np.ascontiguousarray(slab.data[:, :, z0 : z0 + depth]))
            zooms = slab.zooms
            f_t = random_field(base.shape, zooms, 4.0, rng)
            target = warp(base, f_t, zooms)
            prior = degrade_prior(warp(base, f_t + random_field(base.shape, zooms, 2.0, rng), zooms), rng)
            for keep in cfg.validation.keeps:
                lowres = lowres_frame(target, keep, None, rng)
                sinc = zero_fill_torch(lowres, target.shape[:2])
                given = gated_input(lowres, prior, sinc) if cfg.model.prior_input == "gated-keyhole" else prior
                scale = float(np.percentile(sinc.numpy(), 99.5))
                cases.append(ValidationCase(keep, sinc.numpy(), given.numpy(), target.numpy(), scale))
    return cases


def validate(net: torch.nn.Module, cases: list[ValidationCase], device: torch.device) -> dict:
    """Mean SSIM / PSNR of sinc and of the network per keep level (the project's metric code)."""
    from mrisr.metrics import psnr, ssim

    net.eval()
    rows: dict[float, list[tuple[float, float, float]]] = {}
    with torch.inference_mode():
        for case in cases:
            x = torch.from_numpy(case.sinc / case.scale)[None, None].to(device)
            p = torch.from_numpy(case.prior / case.scale)[None, None].to(device)
            out = (net(x, p) if net.use_prior else net(x))[0, 0].float().cpu().numpy() * case.scale
            out = np.maximum(out, 0)
            base = case.prior if getattr(net, "prior_input", "prior") == "gated-keyhole" else case.sinc
            rows.setdefault(case.keep, []).append(
                (ssim(case.sinc, case.target), ssim(out, case.target), psnr(out, case.target), ssim(base, case.target))
            )
    net.train()
    result = {}
    for keep, vals in sorted(rows.items()):
        arr = np.array(vals)
        result[f"keep{keep:g}"] = {"sinc_ssim": float(arr[:, 0].mean()), "ssim": float(arr[:, 1].mean()),
                                   "psnr": float(arr[:, 2].mean()), "base_ssim": float(arr[:, 3].mean())}
    if result:
        result["mean_gain"] = float(np.mean([v["ssim"] - v["sinc_ssim"] for v in result.values()]))
    return result


def checkpoint_meta(cfg: TrainConfig, net: PriorSRNet, step: int, validation: dict, extra: dict | None = None) -> dict:
    from mrisr.training.sources import source_path

    data = {}
    for name in cfg.data.train + cfg.data.validation:
        try:
            data[name] = str(source_path(name))
        except Exception:
            data[name] = "unavailable"
    meta = {
        "architecture": "prior-sr-unet",
        "arguments": net.config(),
        "uses_prior": net.use_prior,
        "normalisation": {"method": "percentile", "percentile": 99.5, "of": "sinc input frame"},
        "keep_range": list(cfg.simulation.keep_range),
        "mask": cfg.simulation.mask,
        "training": {"config": json.loads(cfg.model_dump_json()), "steps": step},
        "data": {"train": cfg.data.train, "validation": cfg.data.validation, "sources": data,
                 "inplane_mm": cfg.data.inplane_mm, "slice_mm": cfg.data.slice_mm},
        "validation": validation,
    }
    if extra:
        meta.update(extra)
    return meta


def _lr_factor(progress: float, step: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train(
    cfg: TrainConfig,
    output: str | Path,
    resume: str | Path | None = None,
    on_progress: Callable[[int, int, dict], None] | None = None,
    log_path: str | Path | None = None,
) -> Path:
    """Train a model as the recipe says and write it to ``output`` (an mrisr checkpoint).

    A CSV log (``<output>.log.csv``) gets one row per logged step and validation; an
    intermediate checkpoint plus optimiser state (``<output>.state.pt``) allows ``resume``.
    """
    output = Path(output)
    from mrisr.io.guard import make_folder

    make_folder(output.parent)
    log_path = Path(log_path) if log_path else output.with_suffix(".log.csv")
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    net = PriorSRNet(**cfg.model.model_dump()).to(device)
    init_info = initial_weights(cfg, net, device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    start_step, elapsed_before = 0, 0.0
    state_path = output.with_suffix(".state.pt")
    if resume:
        meta = _load_weights(net, resume, device, "checkpoint", "resume with the model settings it was trained with")
        if os.path.realpath(resume) == os.path.realpath(output):
            # continuing a run in place is what --resume X -o X asks for: X may be replaced
            release_input(resume)
        rstate = Path(resume).with_suffix(".state.pt")
        if rstate.exists():
            start_step, elapsed_before = _load_state(rstate, opt, device)
        else:
            start_step = int(meta.get("training", {}).get("steps", 0))
    check_target(output)
    check_target(state_path)
    loss_fn = SRLoss(cfg.loss.l1, cfg.loss.ssim, cfg.loss.perceptual, tissue=cfg.loss.tissue,
                     sites=cfg.loss.sites).to(device)
    bank = build_bank(cfg.data.train, cfg.data.inplane_mm, cfg.data.slice_mm, list(cfg.data.orientations))
    workers = cfg.data_workers
    use_chains = cfg.model.use_prior and cfg.chains.probability > 0
    pairs = None
    if not use_chains or cfg.chains.probability < 1 or cfg.chains.start > 0:
        pairs = iter(_loader(PairStream(bank, pair_settings(cfg), cfg.optim.batch_size,
                                        cfg.prior.self_prior_probability if cfg.model.use_prior else 0.0,
                                        cfg.seed + start_step), workers))
    chains = None
    if use_chains:
        chains = iter(_loader(ChainStream(bank, pair_settings(cfg), chain_settings(cfg), cfg.optim.batch_size,
                                          cfg.seed + 31 + start_step), workers))
    memory = ChainMemory()
    pick = np.random.default_rng(cfg.seed + 97 + start_step)
    cases = build_validation(cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    budget_s = cfg.optim.minutes * 60 if cfg.optim.minutes else None
    t0 = time.time() - elapsed_before
    step = start_step
    last_val: dict = {}
    fields = ["step", "elapsed_s", "lr", "loss", "l1", "ssim_loss", "chain", "val_sinc_ssim", "val_ssim", "val_gain",
              "val_base_ssim"]
    new_log = not (resume and log_path.exists())
    if not new_log:
        # a resumed run keeps the columns its log started with
        with open(log_path, newline="") as fh:
            header = next(csv.reader(fh), None)
        if header:
            fields = [f for f in header if f in fields] or fields
    check_target(log_path)
    with open(log_path, "a" if not new_log else "w", newline="") as log_fh:
        writer = csv.DictWriter(log_fh, fieldnames=fields, extrasaction="ignore")
        if new_log:
            writer.writeheader()
        net.train()
        running: list[float] = []
        while True:
            elapsed = time.time() - t0
            progress = max(step / cfg.optim.steps, elapsed / budget_s if budget_s else 0.0)
            if progress >= 1.0:
                break
            for group in opt.param_groups:
                group["lr"] = cfg.optim.lr * _lr_factor(progress, step, cfg.optim.warmup_steps)
            chain_step = chains is not None and progress >= cfg.chains.start and (
                pairs is None or pick.uniform() < cfg.chains.probability)
            batch = next(chains if chain_step else pairs)
            sinc = batch["sinc"].to(device)
            target = batch["target"].to(device)
            if chain_step:
                prior = memory.priors(batch, device)
            else:
                prior = batch["prior"].to(device)
            if (not chain_step and cfg.model.use_prior and progress >= cfg.prior.self_prior_start
                    and bool(batch["self_prior"].any())):
                sel = batch["self_prior"].to(device)
                with torch.no_grad():
                    own = net(batch["prev_sinc"].to(device)[sel], batch["prev_prior"].to(device)[sel]).clamp_min(0)
                prior = prior.clone()
                prior[sel] = own
            with torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
                pred = net(sinc, prior) if cfg.model.use_prior else net(sinc)
            sites = batch.get("sites") if loss_fn.w_sites else None
            loss, parts = loss_fn(pred.float(), target, None if sites is None else sites.to(device))
            if chain_step:
                memory.remember(batch, pred)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            step += 1
            running.append(float(loss.detach()))
            row = {"step": step, "elapsed_s": round(time.time() - t0, 1), "lr": opt.param_groups[0]["lr"],
                   "loss": float(loss.detach()), "chain": int(chain_step),
                   **{k: v for k, v in parts.items() if k in fields}}
            if step % cfg.validation.every_steps == 0 and cases:
                last_val = validate(net, cases, device)
                gains = [v["ssim"] - v["sinc_ssim"] for k, v in last_val.items() if k.startswith("keep")]
                row.update(val_base_ssim=np.mean([v["base_ssim"] for k, v in last_val.items() if k.startswith("keep")]),
                           val_sinc_ssim=np.mean([v["sinc_ssim"] for k, v in last_val.items() if k.startswith("keep")]),
                           val_ssim=np.mean([v["ssim"] for k, v in last_val.items() if k.startswith("keep")]),
                           val_gain=float(np.mean(gains)))
            if step % 10 == 0 or "val_gain" in row:
                writer.writerow(row)
                log_fh.flush()
            if on_progress:
                on_progress(step, cfg.optim.steps, {"loss": float(np.mean(running[-20:])), "progress": progress, **row})
            if step % cfg.checkpoint_every_steps == 0:
                save_checkpoint(net, output, checkpoint_meta(cfg, net, step, last_val, {"partial": True, "init": init_info}))
                _save_state(state_path, opt, step, time.time() - t0)
    if cases:
        last_val = validate(net, cases, device)
    # no wall time in the checkpoint (the log and the optimiser state keep it): the same recipe and
    # step budget give the same bytes
    save_checkpoint(net, output, checkpoint_meta(cfg, net, step, last_val, {"init": init_info}))
    _save_state(state_path, opt, step, time.time() - t0)
    return output
