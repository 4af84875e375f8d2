"""The headline fidelity tables (issue 27): independent-noise phantoms (:mod:`noisy_phantoms`).

Table 1, per subject and keep: tissue SSIM of every method at each planning-scan SNR of the sweep
(10, 20, 40, noise-free), the frames carrying noise of their own at the level estimated in the
held-out real scan; below the methods, the registration error in mm of mrisr's tracker and of the
SimpleITK baseline's demons against the phantom's known displacement.

Table 2, the fidelity guarantees on the same phantoms (planning scan at the frames' noise level):
recovery of an entering needle (>= sinc), leakage of a planning-only needle (<= 1.5x sinc),
tissue SSIM with a planning scan of another contrast (>= sinc and >= the no-prior network).

Run through ``python benchmarks/fidelity.py`` (see its ``--help``).
"""

from __future__ import annotations

import time

import numpy as np
from _common import log, markdown_table, print_table, write_section
from noisy_phantoms import PLANNING_SNRS, denoised_truth, make_noisy_phantom
from sitk_keyhole import sitk_registered_keyhole

from mrisr.kspace.functional import zero_fill
from mrisr.metrics import object_mask, registration_error_mm

SITK = "SimpleITK registered keyhole"
#: the default network with the opt-in line step (mrisr.reconstruct.lines)
LINES = "network + --line-changes"
METHODS = ("sinc", SITK, "keyhole-registered", "keyhole-gated", "network tracked (default)", LINES, "network previous",
           "no-prior network")
#: the rows of the guarantee table (the SimpleITK baseline and step-wise mode are left out: the
#: guarantees are mrisr's, and the two cost most of the run's time)
GUARANTEE_METHODS = ("sinc", "keyhole-registered", "keyhole-gated", "network tracked (default)", LINES, "no-prior network")
GUARANTEES = {"needle enters": {"insert": "needle"}, "needle in planning only": {"planning_insert": "needle"},
              "other contrast": {"planning_contrast": "swap"}}


def snr_label(snr: float | None) -> str:
    return "noise-free" if snr is None else f"SNR {snr:g}"


def run_noisy_methods(phantom, prior_model, noprior_model, methods=METHODS,
                      extra_models: dict | None = None) -> tuple[dict, dict]:
    """Every method's frames and seconds per frame, and the registration errors of both registrations;
    ``extra_models`` (row name -> model) run as the default does, each as a row of its own.

    Returns:
        ``({method: (frames, seconds per frame)}, {"mrisr tracker" | "SimpleITK demons": [error dicts]})``.
    """
    from mrisr.reconstruct import ReconstructOptions, iter_reconstruct, prepare_state, reconstruct_frame

    lr, planning = phantom.lr, phantom.planning
    hr_xy = phantom.hr.data.shape[:2]
    frames = [lr.frame(t) for t in range(lr.n_frames)]
    masks = [object_mask(phantom.hr.frame(t)) for t in range(lr.n_frames)]
    true = [phantom.tracking_displacement(t) for t in range(lr.n_frames)]
    zooms = phantom.hr.zooms
    out: dict[str, tuple[list[np.ndarray], float]] = {}
    errors: dict[str, list[dict]] = {"mrisr tracker": [], "SimpleITK demons": []}

    extra_models = extra_models or {}

    def timed(name, fn):
        if name not in methods and name not in extra_models:
            return
        start = time.perf_counter()
        result = fn()
        out[name] = (result, (time.perf_counter() - start) / len(frames))

    def recon(options, model=None):
        return [r.sr for r in iter_reconstruct(lr, planning, options, model=model)]

    def sitk_frames():
        result = []
        for t, frame in enumerate(frames):
            image, field = sitk_registered_keyhole(frame, np.asarray(planning.data, dtype=np.float32))
            result.append(image)
            errors["SimpleITK demons"].append(registration_error_mm(field, true[t], zooms, masks[t]))
        return result

    timed("sinc", lambda: [zero_fill(f, hr_xy) for f in frames])
    timed(SITK, sitk_frames)
    def registered_keyhole():
        # the pipeline's own frames, reading the tracker's field after each (its error costs no second run)
        state = prepare_state(lr, planning, ReconstructOptions(method="keyhole-registered"), first_frame=frames[0])
        result = []
        for t, frame in enumerate(frames):
            result.append(reconstruct_frame(state, frame).sr)
            errors["mrisr tracker"].append(registration_error_mm(state.tracker.hr_displacement(), true[t], zooms,
                                                                 masks[t]))
        return result

    timed("keyhole-registered", registered_keyhole)
    timed("keyhole-gated", lambda: recon(ReconstructOptions(method="keyhole-gated")))
    timed("network tracked (default)", lambda: recon(ReconstructOptions(prior_mode="tracked"), prior_model))
    timed(LINES, lambda: recon(ReconstructOptions(prior_mode="tracked", line_changes=True), prior_model))
    for name, model in extra_models.items():
        timed(name, lambda model=model: recon(ReconstructOptions(prior_mode="tracked"), model))
    timed("network previous", lambda: recon(ReconstructOptions(prior_mode="previous"), prior_model))
    timed("no-prior network", lambda: [r.sr for r in iter_reconstruct(lr, None, ReconstructOptions(
        model="default-noprior", matrix=tuple(int(n) for n in hr_xy)), model=noprior_model)])
    return out, errors


def frame_snr_of(reference) -> float:
    """SNR of the frames: the held-out real scan's own (:func:`mrisr.metrics.noise.image_snr`)."""
    from mrisr.metrics.noise import image_snr

    return image_snr(np.asarray(reference.data, dtype=np.float32))


def run_headline(chosen: dict, keeps: list[float], frames: int, prior_model, noprior_model, score,
                 snrs=PLANNING_SNRS, write: bool = True, truth_figure: str | None = None,
                 extra_models: dict | None = None) -> list:
    """Tables 1 and 2 for every subject; writes the ``fidelity_noise`` section. Returns the rows of
    table 1 as ``(subject, keep, method, {snr label: tissue SSIM})`` for the caller's summary."""
    from mrisr.data import heldout_subject

    started = time.time()
    frame_snr = frame_snr_of(heldout_subject())
    truths, truth_notes, pairs = {}, [], {}
    for subject, static in chosen.items():
        truth, sigma, snr = denoised_truth(static)
        truths[subject] = truth
        pairs[subject] = (np.asarray(static.data, dtype=np.float32), np.asarray(truth.data))
        truth_notes.append(f"{subject}: source noise sigma {sigma:.3g} (SNR {snr:.1f})")
    if truth_figure:
        from noisy_phantoms import save_truth_figure

        log(f"truth figure: {save_truth_figure(truth_figure, pairs)}")
    labels = [snr_label(s) for s in snrs]
    extra_models = extra_models or {}
    methods = METHODS[:6] + tuple(extra_models) + METHODS[6:]
    sections, summary, guarantee_rows = [], [], []
    for subject, truth in truths.items():
        rows = []
        for keep in keeps:
            table: dict[str, dict[str, float]] = {m: {} for m in methods}
            seconds: dict[str, list[float]] = {m: [] for m in methods}
            reg: dict[str, dict[str, str]] = {"mrisr tracker": {}, "SimpleITK demons": {}}
            for snr, label in zip(snrs, labels):
                log(f"{subject} keep {keep:g}%: planning scan {label}")
                phantom = make_noisy_phantom(truth, frames, keep, frame_snr, snr)
                outputs, errors = run_noisy_methods(phantom, prior_model, noprior_model, extra_models=extra_models)
                for method, (pred, sec) in outputs.items():
                    table[method][label] = score(phantom, pred)["ssim_tissue"]
                    seconds[method].append(sec)
                for name, errs in errors.items():
                    reg[name][label] = (f"{np.mean([e['mean_mm'] for e in errs]):.2f} "
                                        f"({np.mean([e['true_mean_mm'] for e in errs]):.2f})")
            for method in methods:
                rows.append([f"{keep:g}", method] + [f"{table[method][lb]:.3f}" for lb in labels]
                            + [f"{np.mean(seconds[method]):.3f}"])
                summary.append((subject, keep, method, dict(table[method])))
            for name, values in reg.items():
                rows.append([f"{keep:g}", f"registration error mm: {name} (true motion mm)"]
                            + [values[lb] for lb in labels] + [""])
            guarantee_rows += guarantee_table_rows(subject, truth, keep, frames, frame_snr, prior_model,
                                                   noprior_model, score, extra_models)
        headers = ["keep %", "method"] + [f"tissue SSIM: planning {lb}" for lb in labels] + ["s/frame"]
        print(f"\n{subject}")
        print_table(headers, rows)
        sections.append(f"### {subject}\n\n" + markdown_table(headers, rows))
    g_headers = ["subject", "keep %", "method", "needle recovery", "needle continuity", "planning-needle leakage",
                 "tissue SSIM: other contrast", "guarantees"]
    print_table(g_headers, guarantee_rows)
    elapsed = time.time() - started
    if write:
        body = "\n\n".join(sections) + (
            f"\n\nIndependent-noise phantoms (`benchmarks/noisy_phantoms.py`): truth = the source denoised with "
            "scikit-image non-local means (slice by slice, h = 0.8 sigma; `python benchmarks/fidelity.py "
            "--truth-figure benchmarks/fidelity_truth.png` saves source, truth and difference); "
            f"{'; '.join(truth_notes)}. Frames: complex Gaussian noise of their own on the full acquisition before "
            f"the k-space crop, at the held-out real scan's level (SNR {frame_snr:.1f}); planning scan: noise of "
            f"its own at the SNR of each column. {frames} frames, seed 11; tissue = mrisr.metrics.object_mask of "
            "each ground-truth frame. Registration error: mean over the object of |estimated - true displacement| "
            "in mm, over the frames (in brackets: the true motion, the error of no registration). The SimpleITK "
            "baseline (`benchmarks/sitk_keyhole.py`) runs in the same process. Seconds per frame are whole-series "
            "means including frame 0's registration; they are timings only where the 'other load' line above says "
            "quiet (the speed target is `benchmarks/speed.py`'s).\n\n"
            "### Fidelity guarantees on the same phantoms (planning scan at the frames' noise level)\n\n"
            + markdown_table(g_headers, guarantee_rows)
            + "\n\nrecovery = share of the entering needle's true contrast kept (>= sinc's); continuity = share of "
            "its core voxels keeping at least half of their true depth (`mrisr.metrics.core_continuity`; issue "
            "target >= 0.9 at 6.25 %); leakage = contrast "
            "shown at the site of the planning-only needle relative to its contrast in the planning scan "
            "(<= 1.5x sinc's, or below 0.05 in absolute terms where sinc's is about 0); other contrast: tissue "
            f"SSIM >= sinc's and >= the no-prior network's. Run time {elapsed / 60:.1f} min.")
        write_section("fidelity_noise", "Fidelity, headline: independent-noise phantoms and the SimpleITK "
                      "registered keyhole", body)
    return summary


def guarantee_table_rows(subject, truth, keep, frames, frame_snr, prior_model, noprior_model, score,
                         extra_models: dict | None = None) -> list:
    """Table 2's rows for one subject and keep."""
    results: dict[str, dict[str, dict]] = {}
    extra_models = extra_models or {}
    for scenario, kwargs in GUARANTEES.items():
        log(f"{subject} keep {keep:g}%: {scenario} (noisy phantoms)")
        phantom = make_noisy_phantom(truth, frames, keep, frame_snr, frame_snr, **kwargs)
        outputs, _errors = run_noisy_methods(phantom, prior_model, noprior_model, GUARANTEE_METHODS, extra_models)
        for method, (pred, _sec) in outputs.items():
            results.setdefault(method, {})[scenario] = score(phantom, pred)
    sinc = results["sinc"]
    noprior = results["no-prior network"]
    rows = []
    for method in GUARANTEE_METHODS[:5] + tuple(extra_models) + GUARANTEE_METHODS[5:]:
        r = results[method]
        recovery = r["needle enters"]["recovery"]
        continuity = r["needle enters"]["continuity"]
        leak = r["needle in planning only"]["leakage"]
        contrast = r["other contrast"]["ssim_tissue"]
        checks = []
        if method not in ("sinc", "no-prior network"):
            leak_bar = max(1.5 * sinc["needle in planning only"]["leakage"], 0.05)
            checks = [("recovery", recovery >= sinc["needle enters"]["recovery"]), ("leakage", leak <= leak_bar),
                      ("contrast", contrast >= sinc["other contrast"]["ssim_tissue"]
                       and contrast >= noprior["other contrast"]["ssim_tissue"])]
        verdict = ", ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in checks) or "(bar)"
        rows.append([subject, f"{keep:g}", method, f"{recovery:.2f}", f"{continuity:.2f}", f"{leak:.2f}",
                     f"{contrast:.3f}", verdict])
    return rows


def run_finetune_table(chosen: dict, keeps: list[float], frames: int, prior_model, minutes: float, score,
                       snrs=(20.0, None), write: bool = True) -> list:
    """Fine-tuning on the independent-noise phantoms: the default with the base model against the
    default after ``minutes`` of ``--finetune`` (as ``mrisr reconstruct --finetune`` does it: the
    tuned model only where its check accepted it, else the base model), per subject,
    keep and planning-scan SNR; writes the ``fidelity_finetune`` section."""
    from mrisr.data import heldout_subject
    from mrisr.reconstruct import ReconstructOptions, iter_reconstruct, prepare_state
    from mrisr.workflow import finetune_model

    started = time.time()
    frame_snr = frame_snr_of(heldout_subject())
    rows = []
    for subject, static in chosen.items():
        truth, _sigma, _snr = denoised_truth(static)
        for keep in keeps:
            for snr in snrs:
                log(f"{subject} keep {keep:g}%: fine-tuning, planning scan {snr_label(snr)}")
                phantom = make_noisy_phantom(truth, frames, keep, frame_snr, snr)
                lr, planning = phantom.lr, phantom.planning

                def tissue(options, model=None, lr=lr, planning=planning, phantom=phantom):
                    return score(phantom, [r.sr for r in iter_reconstruct(lr, planning, options, model=model)])[
                        "ssim_tissue"]

                gated = tissue(ReconstructOptions(method="keyhole-gated"))
                base = tissue(ReconstructOptions(), prior_model)
                state = prepare_state(lr, planning, ReconstructOptions(finetune=True), model=prior_model,
                                      first_frame=lr.frame(0))
                tuned, report = finetune_model(state, minutes)
                after = tissue(ReconstructOptions(), tuned) if report.improved else base
                gain = after - base
                verdict = "gain met" if gain >= 0.01 else ("no loss" if gain >= -0.002 else "LOST")
                rows.append([subject, f"{keep:g}", snr_label(snr), f"{gated:.4f}", f"{base:.4f}", f"{after:.4f}",
                             f"{gain:+.4f}", "yes" if report.improved else "no (base model used)",
                             f"{report.steps} / {report.best_step}", f"{report.seconds:.0f}", verdict])
    headers = ["subject", "keep %", "planning scan", "keyhole-gated", "default (base model)",
               f"default + --finetune ({minutes:g} min)", "gain", "improved", "steps / best step",
               "fine-tuning s", "target (>= +0.01; never below -0.002)"]
    print_table(headers, rows)
    if write:
        body = (markdown_table(headers, rows)
                + f"\n\nThe phantoms of the headline (independent noise, seed 11, {frames} frames, frames at the "
                f"held-out scan's SNR {frame_snr:.1f}). Fine-tuning: `mrisr.workflow.finetune_model` on the prepared "
                "(filtered) planning scan, as `mrisr reconstruct --finetune` runs it; where the check "
                "(`mrisr.training.finetune_check`: held-out pairs whose target noise is independent of the inputs) "
                "did not accept the tuned model, the base model is used and the gain is 0 by construction. Tissue SSIM as in the "
                f"headline. Run time {(time.time() - started) / 60:.1f} min.")
        write_section("fidelity_finetune", f"Fine-tuning on the independent-noise phantoms ({minutes:g} min)", body)
    return rows
