"""Subject-specific fine-tuning on the static HR planning scan.

Training pairs come from the planning scan alone, made to look like the subject's frames at
inference (:data:`FRAME_LIKE`): deformed as in training, LR simulated at the dynamic's k-space
fraction on its HR grid with noise of its own, the prior with noise of its own and filtered,
structures in the frame or the prior only, priors of another contrast; for a gated-keyhole model
the prior channel is formed by the same function as at inference. The learning rate is set explicitly *after* any
optimiser state would be restored (the anchor restores state after setting it, which silently
brings the old rate back).

Whether tuning helped is judged on held-out pairs whose target noise is independent of the inputs
(:mod:`mrisr.training.finetune_check`): early stopping picks the best state on one set, a second
set accepts it only when it beats the base model by more than twice the standard error; else the
base model is returned and the report says ``improved: false``.
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
    """What fine-tuning did.

    Attributes:
        steps / seconds: optimisation steps run and the wall-clock time, the check pairs included.
        best_val_loss / initial_val_loss: the check's error (``1 -`` tissue SSIM against the held
            half, :func:`mrisr.training.finetune_check.check_errors`) on the selection pairs, of the
            best state and of the base model.
        best_step: the step of the best state (0: no step beat the base model).
        lr / stopped_early: the learning rate read back from the optimiser; whether patience ended it.
        check_base_loss / check_tuned_loss: the same error on the acceptance pairs, base model
            and best state.
        improved: whether the best state beat the base model on the acceptance pairs by more than
            their standard error allows (else the returned model is the base model, weight for weight).
    """

    steps: int
    seconds: float
    best_val_loss: float
    initial_val_loss: float
    best_step: int
    lr: float
    stopped_early: bool
    check_base_loss: float = float("nan")
    check_tuned_loss: float = float("nan")
    improved: bool = False

    def summary(self) -> str:
        """One line on what the check found, for the faces' status messages.

        Example:
            >>> FinetuneReport(40, 12.0, 0.004, 0.005, 30, 2e-5, False, 0.006, 0.0055, True).summary()
            '40 steps in 12 s; held-out error 0.00600 -> 0.00550 (best step 30)'
        """
        head = f"{self.steps} steps in {self.seconds:.0f} s; "
        if self.best_step == 0:
            return head + f"no step lowered the base model's held-out error {self.initial_val_loss:.5f}"
        verdict = "" if self.improved else ", within the spread of the acceptance pairs"
        return head + (f"held-out error {self.check_base_loss:.5f} -> {self.check_tuned_loss:.5f} "
                       f"(best step {self.best_step}{verdict})")

    def as_dict(self, timings: bool = True) -> dict:
        """The report as a dict; ``timings=False`` leaves out the wall-clock ``seconds``
        (checkpoint metadata: the same steps on the same data give a byte-identical checkpoint)."""
        report = dict(self.__dict__)
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
                    seed: int) -> tuple[PairGenerator, tuple[int, int, int]]:
    """The generator of training pairs from the planning scan alone (normalised to its 99.5th
    percentile, patches of up to 64x64x16) and that patch size."""
    data = np.asarray(planning_hr, dtype=np.float32)
    data = data / max(float(np.percentile(data, 99.5)), 1e-6)
    depth = int(min(16, data.shape[2] - data.shape[2] % 2))
    inplane = [int(min(64, (n // 16) * 16)) for n in data.shape[:2]]
    patch = (max(16, inplane[0]), max(16, inplane[1]), max(2, depth))
    settings = PairSettings(patch=patch, keep_range=(keep * 0.9, min(keep * 1.1, 100.0)), target_motion_mm=4.0,
                            previous_motion_mm=(0.0, 2.5), planning_probability=0.3, gamma_range=(0.9, 1.1),
                            prior_input=prior_input, **FRAME_LIKE)
    bank = [SlabVolume(data, tuple(float(z) for z in zooms), "planning", "as-acquired")]
    return PairGenerator(bank, settings, seed), patch


def _recipe_tissue(model: SRModel) -> float:
    """The tissue weight of the loss the model was trained with (its recipe's; 0 for older models)."""
    return float(((model.meta.get("training") or {}).get("config") or {}).get("loss", {}).get("tissue", 0.0))


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
    planning_unfiltered: np.ndarray | None = None,
) -> tuple[SRModel, FinetuneReport]:
    """Fine-tune a copy of ``model`` on one subject's planning scan.

    Args:
        model: the base model (left untouched).
        planning_hr: planning scan on the dynamic's HR grid ``(X', Y', Z)``, as reconstruction
            gives it to the frames (filtered when its noise was shrunk).
        zooms: voxel size (mm) of that grid.
        keep: the dynamic's k-space percentage (training pairs use it, +-10 %).
        minutes / steps: budget of the training; whichever ends first (at least one must be
            given). Drawing the check pairs comes before it (the report's ``seconds`` include it).
        lr: learning rate (small: the model is already trained).
        patience: stop after this many validations (every ``validate_every`` steps) without a
            better held-out error. At the small learning rate it improves slowly and noisily, so a
            short patience stops long before the budget's gain, hence 15 (benchmarks/RESULTS.md,
            'Design decisions and their measurements').
        planning_unfiltered: the same planning scan before its noise was shrunk (``None``:
            ``planning_hr``, not filtered). Its noise is split in two
            (:func:`mrisr.training.finetune_check.split_noise`): the training pairs' truth is one
            half (filtered as reconstruction filters it when ``planning_hr`` was), the check pairs'
            target the other.

    Returns:
        The fine-tuned model (the best state on the selection pairs when the acceptance pairs
        confirm it beats the base model, else the base model's weights) and a report.
    """
    from mrisr.training.finetune_check import check_errors, recorrupted_pairs, significantly_better, split_noise
    from mrisr.training.pairs import denoised_prior

    if minutes is None and steps is None:
        raise ValueError("give minutes or steps")
    depth = int(np.shape(planning_hr)[2]) if np.ndim(planning_hr) >= 3 else 1
    if depth < MIN_FINETUNE_SLICES:
        raise MrisrInputError(
            f"planning scan: {depth} slice(s); fine-tuning needs at least {MIN_FINETUNE_SLICES} (its SSIM loss looks "
            f"at {SSIM_WINDOW} slices at once); pass a thicker planning scan or run without fine-tuning"
        )
    started = time.time()
    device = model.device
    net = copy.deepcopy(model.network).to(device)
    net.train()
    # training sees one half of the planning scan's noise split, the check pairs' target the other
    halves = split_noise(planning_hr if planning_unfiltered is None else planning_unfiltered, seed)
    truth = halves.given
    if planning_unfiltered is not None and planning_unfiltered is not planning_hr:
        # filtered as reconstruction filtered the planning scan it was given
        truth = denoised_prior(torch.from_numpy(halves.given)).numpy()
    train_gen, patch = _planning_pairs(truth, zooms, keep, model.prior_input, seed)
    selection, acceptance = (recorrupted_pairs(halves, zooms, keep, model.prior_input, seed + offset, patch=patch)
                             for offset in (99991, 7))
    loss_fn = SRLoss(tissue=_recipe_tissue(model)).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    for group in opt.param_groups:  # explicit, after any state restore
        group["lr"] = lr
    # the budget is the training's: drawing the check pairs (a few seconds) is not counted against it
    t0 = time.time()
    initial = float(check_errors(net, selection, device).mean())
    best = _Best(initial, copy.deepcopy(net.state_dict()))
    step, stopped = 0, False
    budget = minutes * 60 if minutes else None
    while not _budget_spent(step, steps, time.time() - t0, budget):
        _train_step(net, opt, loss_fn, train_gen.draw_group(batch_size), device)
        step += 1
        if step % validate_every == 0:
            current = float(check_errors(net, selection, device).mean())
            best.offer(current, net, step)
            if on_progress:
                on_progress(step, time.time() - t0, {"val_loss": current, "best": best.loss})
            if best.bad >= patience:
                stopped = True
                break
    if step % validate_every:
        # the steps since the last check count too (a budget shorter than validate_every kept none)
        best.offer(float(check_errors(net, selection, device).mean()), net, step)
    base_errors = check_errors(model.network, acceptance, device)
    tuned_errors = base_errors
    if best.step > 0:
        net.load_state_dict(best.state)
        tuned_errors = check_errors(net, acceptance, device)
    improved = best.step > 0 and significantly_better(base_errors, tuned_errors)
    if not improved:
        net.load_state_dict(model.network.state_dict())
    net.eval()
    tuned = SRModel(net, copy.deepcopy(model.meta), device, source=f"{model.source} (fine-tuned)",
                    precision=getattr(model, "precision", "auto"))
    tuned.tile = model.tile
    report = FinetuneReport(step, round(time.time() - started, 2), best.loss, initial, best.step, opt.param_groups[0]["lr"],
                            stopped, float(base_errors.mean()), float(tuned_errors.mean()), bool(improved))
    return tuned, report
