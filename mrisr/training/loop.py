"""The training loop: on-the-fly pairs and chain frames (:mod:`mrisr.training.streams`), L1 + SSIM,
AdamW with warm-up and cosine decay, validation on held-out subjects
(:mod:`mrisr.training.validation`), CSV log, checkpoints and resume.

:func:`train` is the recipe; each of its steps (resuming, the data streams, the log, one
optimisation step, the logged row, checkpointing) is a function or class of its own here."""

from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from mrisr.io.errors import MrisrInputError, one_line
from mrisr.io.guard import check_target, partial_file, release_input
from mrisr.models.checkpoint import save_checkpoint
from mrisr.models.network import PriorSRNet
from mrisr.models.predictor import resolve_device
from mrisr.training.chains import ChainMemory
from mrisr.training.config import TrainConfig
from mrisr.training.losses import SRLoss
from mrisr.training.streams import open_streams
from mrisr.training.validation import build_validation, validate, validation_columns


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


def _progress(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """How far the run is, 0 to 1: the step budget's or the wall-clock budget's share, whichever is further."""
    budget_s = cfg.optim.minutes * 60 if cfg.optim.minutes else None
    return max(step / cfg.optim.steps, elapsed / budget_s if budget_s else 0.0)


def _resume(resume: str | Path | None, output: Path, net: PriorSRNet, opt: torch.optim.Optimizer,
            device: torch.device) -> tuple[int, float]:
    """Load the weights (and, when ``<resume>.state.pt`` exists, the optimiser state) of the run to
    continue; the step and elapsed seconds it had reached (``(0, 0.0)`` for a new run)."""
    if not resume:
        return 0, 0.0
    meta = _load_weights(net, resume, device, "checkpoint", "resume with the model settings it was trained with")
    if os.path.realpath(resume) == os.path.realpath(output):
        # continuing a run in place is what --resume X -o X asks for: X may be replaced
        release_input(resume)
    state = Path(resume).with_suffix(".state.pt")
    if state.exists():
        return _load_state(state, opt, device)
    return int(meta.get("training", {}).get("steps", 0)), 0.0


LOG_FIELDS = ["step", "elapsed_s", "lr", "loss", "l1", "ssim_loss", "chain", "val_sinc_ssim", "val_ssim", "val_gain",
              "val_base_ssim"]


@dataclass
class _TrainLog:
    """The open CSV log of a run and its columns."""

    fh: TextIO
    writer: csv.DictWriter
    fields: list[str]

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self.fh.flush()


@contextmanager
def _open_log(path: Path, resume: bool) -> Iterator[_TrainLog]:
    """A new CSV log with its header, or, when resuming, the existing one to append to (with the
    columns it started with)."""
    fields = list(LOG_FIELDS)
    new_log = not (resume and path.exists())
    if not new_log:
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), None)
        if header:
            fields = [f for f in header if f in fields] or fields
    check_target(path)
    with open(path, "a" if not new_log else "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new_log:
            writer.writeheader()
        yield _TrainLog(fh, writer, fields)


@dataclass
class _Learner:
    """The network and what updates it: optimiser, gradient scaler (mixed precision on CUDA) and loss."""

    cfg: TrainConfig
    net: PriorSRNet
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: SRLoss
    device: torch.device

    @classmethod
    def create(cls, cfg: TrainConfig, net: PriorSRNet, opt: torch.optim.Optimizer, device: torch.device) -> _Learner:
        """The recipe's loss and, on CUDA, a gradient scaler around ``net`` and ``opt``."""
        loss_fn = SRLoss(cfg.loss.l1, cfg.loss.ssim, cfg.loss.perceptual, tissue=cfg.loss.tissue,
                         sites=cfg.loss.sites).to(device)
        return cls(cfg, net, opt, torch.amp.GradScaler("cuda", enabled=device.type == "cuda"), loss_fn, device)

    def set_lr(self, progress: float, step: int) -> None:
        """Warm-up, then cosine decay to 5 % of the recipe's rate."""
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.optim.lr * _lr_factor(progress, step, self.cfg.optim.warmup_steps)

    def prior(self, batch: dict, chain_step: bool, memory: ChainMemory, progress: float) -> torch.Tensor:
        """The batch's prior: a chain's last output, the simulated prior, or (for the flagged
        samples, once self-priors have started) the network's own output on the previous frame."""
        cfg, device = self.cfg, self.device
        if chain_step:
            return memory.priors(batch, device)
        prior = batch["prior"].to(device)
        if cfg.model.use_prior and progress >= cfg.prior.self_prior_start and bool(batch["self_prior"].any()):
            sel = batch["self_prior"].to(device)
            with torch.no_grad():
                own = self.net(batch["prev_sinc"].to(device)[sel], batch["prev_prior"].to(device)[sel]).clamp_min(0)
            prior = prior.clone()
            prior[sel] = own
        return prior

    def step(self, batch: dict, chain_step: bool, memory: ChainMemory, progress: float) -> tuple[torch.Tensor, dict]:
        """One optimisation step on ``batch``; its loss and the loss's parts."""
        net, device, cuda = self.net, self.device, self.device.type == "cuda"
        sinc = batch["sinc"].to(device)
        target = batch["target"].to(device)
        prior = self.prior(batch, chain_step, memory, progress)
        with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
            pred = net(sinc, prior) if self.cfg.model.use_prior else net(sinc)
        sites = batch.get("sites") if self.loss_fn.w_sites else None
        loss, parts = self.loss_fn(pred.float(), target, None if sites is None else sites.to(device))
        if chain_step:
            memory.remember(batch, pred)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        return loss, parts


def _step_row(step: int, elapsed: float, opt: torch.optim.Optimizer, loss: torch.Tensor, parts: dict,
              chain_step: bool, fields: list[str]) -> dict:
    """The log row of a step (validation columns are added on validation steps)."""
    return {"step": step, "elapsed_s": round(elapsed, 1), "lr": opt.param_groups[0]["lr"], "loss": float(loss.detach()),
            "chain": int(chain_step), **{k: v for k, v in parts.items() if k in fields}}


def _save(cfg: TrainConfig, learner: _Learner, output: Path, step: int, validation: dict, t0: float,
          extra: dict) -> None:
    """Write the checkpoint and, next to it, the optimiser state a resumed run starts from (with
    the seconds since ``t0``)."""
    save_checkpoint(learner.net, output, checkpoint_meta(cfg, learner.net, step, validation, extra))
    _save_state(output.with_suffix(".state.pt"), learner.opt, step, time.time() - t0)


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
    step, elapsed_before = _resume(resume, output, net, opt, device)
    check_target(output)
    check_target(output.with_suffix(".state.pt"))
    learner = _Learner.create(cfg, net, opt, device)
    streams = open_streams(cfg, step)
    cases = build_validation(cfg)
    t0 = time.time() - elapsed_before
    last_val: dict = {}
    with _open_log(log_path, bool(resume)) as log:
        net.train()
        running: list[float] = []
        while (progress := _progress(cfg, step, time.time() - t0)) < 1.0:
            learner.set_lr(progress, step)
            batch, chain_step = streams.next_batch(progress)
            loss, parts = learner.step(batch, chain_step, streams.memory, progress)
            step += 1
            running.append(float(loss.detach()))
            row = _step_row(step, time.time() - t0, opt, loss, parts, chain_step, log.fields)
            if step % cfg.validation.every_steps == 0 and cases:
                last_val = validate(net, cases, device)
                row.update(validation_columns(last_val))
            if step % 10 == 0 or "val_gain" in row:
                log.write(row)
            if on_progress:
                on_progress(step, cfg.optim.steps, {**row, "loss": float(np.mean(running[-20:])), "progress": progress})
            if step % cfg.checkpoint_every_steps == 0:
                _save(cfg, learner, output, step, last_val, t0, {"partial": True, "init": init_info})
    if cases:
        last_val = validate(net, cases, device)
    # no wall time in the checkpoint (the log and the optimiser state keep it): the same recipe and
    # step budget give the same bytes
    _save(cfg, learner, output, step, last_val, t0, {"init": init_info})
    return output
