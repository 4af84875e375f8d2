"""Subject-specific fine-tuning on the static HR planning scan.

Training pairs come from the planning scan alone (deformed as in training, LR simulated at the
dynamic's k-space fraction on its HR grid). The learning rate is set explicitly *after* any
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


@dataclass
class FinetuneReport:
    steps: int
    seconds: float
    best_val_loss: float
    initial_val_loss: float
    best_step: int
    lr: float
    stopped_early: bool

    def as_dict(self, timings: bool = True) -> dict:
        """The report as a dict; ``timings=False`` leaves out the wall-clock ``seconds`` (checkpoint
        metadata: the same steps on the same data give a byte-identical checkpoint)."""
        report = dict(self.__dict__)
        if not timings:
            report.pop("seconds")
        return report


def _batch(samples, device):
    stack = lambda key: torch.stack([getattr(s, key) for s in samples])[:, None].to(device)  # noqa: E731
    return stack("sinc"), stack("prior"), stack("target")


#: the thinnest planning scan fine-tuning can cut training patches from (patches have an even depth)
MIN_FINETUNE_SLICES = SSIM_WINDOW + 1


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
    data = np.asarray(planning_hr, dtype=np.float32)
    data = data / max(float(np.percentile(data, 99.5)), 1e-6)
    depth = int(min(16, data.shape[2] - data.shape[2] % 2))
    inplane = [int(min(64, (n // 16) * 16)) for n in data.shape[:2]]
    patch = (max(16, inplane[0]), max(16, inplane[1]), max(2, depth))
    settings = PairSettings(patch=patch, keep_range=(keep * 0.9, min(keep * 1.1, 100.0)), target_motion_mm=4.0,
                            previous_motion_mm=(0.0, 2.5), planning_probability=0.3, noise_probability=0.0,
                            gamma_range=(0.9, 1.1), prior_input=model.prior_input)
    bank = [SlabVolume(data, tuple(float(z) for z in zooms), "planning", "as-acquired")]
    train_gen = PairGenerator(bank, settings, seed)
    held_out = PairGenerator(bank, settings, seed + 99991).draw_group(4) + PairGenerator(bank, settings, seed + 7).draw_group(4)
    # the loss the model was trained with (its recipe's tissue weight; 0 for older models)
    tissue = float(((model.meta.get("training") or {}).get("config") or {}).get("loss", {}).get("tissue", 0.0))
    loss_fn = SRLoss(tissue=tissue).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    for group in opt.param_groups:  # explicit, after any state restore
        group["lr"] = lr

    def val_loss() -> float:
        net.eval()
        with torch.inference_mode():
            sinc, prior, target = _batch(held_out, device)
            pred = net(sinc, prior) if net.use_prior else net(sinc)
            value = float(loss_fn(pred, target)[0])
        net.train()
        return value

    initial = best = val_loss()
    best_state = copy.deepcopy(net.state_dict())
    best_step, bad, step = 0, 0, 0
    t0 = time.time()
    budget = minutes * 60 if minutes else None
    stopped = False
    while True:
        if steps is not None and step >= steps:
            break
        if budget is not None and time.time() - t0 >= budget:
            break
        sinc, prior, target = _batch(train_gen.draw_group(batch_size), device)
        pred = net(sinc, prior) if net.use_prior else net(sinc)
        loss, _ = loss_fn(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        if step % validate_every == 0:
            current = val_loss()
            if current < best - 1e-5:
                best, best_state, best_step, bad = current, copy.deepcopy(net.state_dict()), step, 0
            else:
                bad += 1
            if on_progress:
                on_progress(step, time.time() - t0, {"val_loss": current, "best": best})
            if bad >= patience:
                stopped = True
                break
    if step % validate_every:
        # the steps since the last check count too (a budget shorter than validate_every kept none)
        current = val_loss()
        if current < best - 1e-5:
            best, best_state, best_step = current, copy.deepcopy(net.state_dict()), step
    net.load_state_dict(best_state)
    net.eval()
    tuned = SRModel(net, copy.deepcopy(model.meta), device, source=f"{model.source} (fine-tuned)",
                    precision=getattr(model, "precision", "auto"))
    tuned.tile = model.tile
    report = FinetuneReport(step, round(time.time() - t0, 2), best, initial, best_step, opt.param_groups[0]["lr"],
                            stopped)
    return tuned, report
