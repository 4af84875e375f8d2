"""Subject-specific fine-tuning on the static HR planning scan.

Training pairs come from the planning scan alone, made to look like the subject's frames at
inference (:data:`FRAME_LIKE`): deformed as in training, LR simulated at the dynamic's k-space
fraction on its HR grid with noise of its own, the prior with noise of its own and filtered,
structures in the frame or the prior only, priors of another contrast; for a gated-keyhole model
the prior channel is formed by the same function as at inference. The learning rate is set explicitly *after* any
optimiser state would be restored (the anchor restores state after setting it, which silently
brings the old rate back). Early stopping watches a fixed set of held-out patches.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mrisr.io.errors import MrisrInputError
from mrisr.models.predictor import SRModel
from mrisr.training.losses import SSIM_WINDOW, SRLoss
from mrisr.training.pairs import PairGenerator, PairSettings
from mrisr.training.sources import SlabVolume
from mrisr.training.structures import StructureSettings


@dataclass
class FinetuneReport:
    steps: int
    seconds: float
    best_val_loss: float
    initial_val_loss: float
    best_step: int
    lr: float
    stopped_early: bool

    @property
    def improved(self) -> bool:
        """Whether any validation beat the base model's held-out loss (else the tuned model is the
        base model, weight for weight)."""
        return self.best_step > 0 and self.best_val_loss < self.initial_val_loss

    def as_dict(self, timings: bool = True) -> dict:
        """The report as a dict, with ``improved``; ``timings=False`` leaves out the wall-clock
        ``seconds`` (checkpoint metadata: the same steps on the same data give a byte-identical checkpoint)."""
        report = {**self.__dict__, "improved": self.improved}
        if not timings:
            report.pop("seconds")
        return report


def _batch(samples, device):
    stack = lambda key: torch.stack([getattr(s, key) for s in samples])[:, None].to(device)  # noqa: E731
    return stack("sinc"), stack("prior"), stack("target")


#: the thinnest planning scan fine-tuning can cut training patches from (patches have an even depth)
MIN_FINETUNE_SLICES = SSIM_WINDOW + 1


#: what makes a fine-tuning pair look like a frame of the subject's series at inference: the frame
#: with acquisition noise of its own, the prior with noise of its own (then filtered as
#: reconstruction filters a noisy planning scan), structures in the frame only or the prior only,
#: and priors of another contrast. Without them, the pairs' prior and target shared one noise
#: realisation and one set of structures, and tuning taught the network to copy its prior
#: (benchmarks/RESULTS.md, 'Fine-tuning pairs like inference').
FRAME_LIKE = {
    "noise_probability": 0.7,
    "noise_snr": (15.0, 100.0),
    "prior_noise_probability": 0.5,
    "prior_noise_snr": (10.0, 60.0),
    "structures": StructureSettings(target_probability=0.4, prior_probability=0.35, remap_probability=0.15,
                                    max_count=3),
}


def _planning_pairs(planning_hr: np.ndarray, zooms: tuple[float, float, float], keep: float, prior_input: str,
                    seed: int) -> tuple[PairGenerator, list]:
    """The generator of training pairs from the planning scan alone (normalised to its 99.5th
    percentile, patches of up to 64x64x16) and a fixed set of eight held-out pairs."""
    data = np.asarray(planning_hr, dtype=np.float32)
    data = data / max(float(np.percentile(data, 99.5)), 1e-6)
    depth = int(min(16, data.shape[2] - data.shape[2] % 2))
    inplane = [int(min(64, (n // 16) * 16)) for n in data.shape[:2]]
    patch = (max(16, inplane[0]), max(16, inplane[1]), max(2, depth))
    settings = PairSettings(patch=patch, keep_range=(keep * 0.9, min(keep * 1.1, 100.0)), target_motion_mm=4.0,
                            previous_motion_mm=(0.0, 2.5), planning_probability=0.3, gamma_range=(0.9, 1.1),
                            prior_input=prior_input, **FRAME_LIKE)
    bank = [SlabVolume(data, tuple(float(z) for z in zooms), "planning", "as-acquired")]
    train_gen = PairGenerator(bank, settings, seed)
    held_out = PairGenerator(bank, settings, seed + 99991).draw_group(4) + PairGenerator(bank, settings, seed + 7).draw_group(4)
    return train_gen, held_out


def _recipe_tissue(model: SRModel) -> float:
    """The tissue weight of the loss the model was trained with (its recipe's; 0 for older models)."""
    return float(((model.meta.get("training") or {}).get("config") or {}).get("loss", {}).get("tissue", 0.0))


def _held_out_loss(net: torch.nn.Module, loss_fn: SRLoss, held_out: list, device: torch.device) -> float:
    """The loss on the held-out pairs (the network is left in training mode)."""
    net.eval()
    with torch.inference_mode():
        sinc, prior, target = _batch(held_out, device)
        pred = net(sinc, prior) if net.use_prior else net(sinc)
        value = float(loss_fn(pred, target)[0])
    net.train()
    return value


def _train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: SRLoss, samples: list,
                device: torch.device) -> None:
    """One optimisation step on ``samples`` (gradient norm clipped to 1)."""
    sinc, prior, target = _batch(samples, device)
    pred = net(sinc, prior) if net.use_prior else net(sinc)
    loss, _ = loss_fn(pred, target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()


def _budget_spent(step: int, steps: int | None, elapsed: float, budget_s: float | None) -> bool:
    """Whether the step budget or the wall-clock budget (whichever is given) has run out."""
    return (steps is not None and step >= steps) or (budget_s is not None and elapsed >= budget_s)


@dataclass
class _Best:
    """Early stopping's memory: the best held-out loss, the weights and step it came with, and the
    validations since it last improved."""

    loss: float
    state: dict
    step: int = 0
    bad: int = 0

    def offer(self, loss: float, net: torch.nn.Module, step: int) -> None:
        """Keep ``net``'s weights if ``loss`` beats the best by more than 1e-5, else count a validation without gain."""
        if loss < self.loss - 1e-5:
            self.loss, self.state, self.step, self.bad = loss, copy.deepcopy(net.state_dict()), step, 0
        else:
            self.bad += 1


def finetune(
    model: SRModel,
    planning_hr: np.ndarray,
    zooms: tuple[float, float, float],
    keep: float,
    minutes: float | None = 3.0,
    steps: int | None = None,
    lr: float = 2e-5,
    batch_size: int = 2,
    seed: int = 0,
    validate_every: int = 10,
    patience: int = 15,
    on_progress: Callable[[int, float, dict], None] | None = None,
) -> tuple[SRModel, FinetuneReport]:
    """Fine-tune a copy of ``model`` on one subject's planning scan.

    Args:
        model: the base model (left untouched).
        planning_hr: planning scan on the dynamic's HR grid ``(X', Y', Z)``.
        zooms: voxel size (mm) of that grid.
        keep: the dynamic's k-space percentage (training pairs use it, +-10 %).
        minutes / steps: budget; whichever ends first (at least one must be given).
        lr: learning rate (small: the model is already trained).
        patience: stop after this many validations (every ``validate_every`` steps) without a
            better held-out loss. At the small learning rate the held-out loss improves slowly and
            noisily, so a short patience stops long before the budget's gain, hence 15
            (benchmarks/RESULTS.md, 'Design decisions and their measurements').

    Returns:
        The fine-tuned model (the best state on held-out patches) and a report.
    """
    if minutes is None and steps is None:
        raise ValueError("give minutes or steps")
    depth = int(np.shape(planning_hr)[2]) if np.ndim(planning_hr) >= 3 else 1
    if depth < MIN_FINETUNE_SLICES:
        raise MrisrInputError(
            f"planning scan: {depth} slice(s); fine-tuning needs at least {MIN_FINETUNE_SLICES} (its SSIM loss looks "
            f"at {SSIM_WINDOW} slices at once); pass a thicker planning scan or run without fine-tuning"
        )
    device = model.device
    net = copy.deepcopy(model.network).to(device)
    net.train()
    train_gen, held_out = _planning_pairs(planning_hr, zooms, keep, model.prior_input, seed)
    loss_fn = SRLoss(tissue=_recipe_tissue(model)).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    for group in opt.param_groups:  # explicit, after any state restore
        group["lr"] = lr
    initial = _held_out_loss(net, loss_fn, held_out, device)
    best = _Best(initial, copy.deepcopy(net.state_dict()))
    step, stopped, t0 = 0, False, time.time()
    budget = minutes * 60 if minutes else None
    while not _budget_spent(step, steps, time.time() - t0, budget):
        _train_step(net, opt, loss_fn, train_gen.draw_group(batch_size), device)
        step += 1
        if step % validate_every == 0:
            current = _held_out_loss(net, loss_fn, held_out, device)
            best.offer(current, net, step)
            if on_progress:
                on_progress(step, time.time() - t0, {"val_loss": current, "best": best.loss})
            if best.bad >= patience:
                stopped = True
                break
    if step % validate_every:
        # the steps since the last check count too (a budget shorter than validate_every kept none)
        best.offer(_held_out_loss(net, loss_fn, held_out, device), net, step)
    net.load_state_dict(best.state)
    net.eval()
    tuned = SRModel(net, copy.deepcopy(model.meta), device, source=f"{model.source} (fine-tuned)",
                    precision=getattr(model, "precision", "auto"))
    tuned.tile = model.tile
    report = FinetuneReport(step, round(time.time() - t0, 2), best.loss, initial, best.step, opt.param_groups[0]["lr"],
                            stopped)
    return tuned, report
