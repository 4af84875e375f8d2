"""Fidelity benchmark: every method x the scenarios where the prior is wrong, tissue metrics first.

The headline (:mod:`fidelity_noise`, written first): independent-noise phantoms
(:mod:`noisy_phantoms`: a denoised truth, frames and planning scan each with noise of their own,
the planning scan's SNR swept over 10, 20, 40 and noise-free) against the SimpleITK registered
keyhole (:mod:`sitk_keyhole`), with the registration error of both registrations and the fidelity
guarantees on the same phantoms. The tables below it (second) are the shared-noise phantoms.

Methods (all scored by mrisr.metrics, in one run): sinc (k-space zero-fill of the LR magnitude
frame), keyhole, registered keyhole, gated keyhole (the registered planning scan's detail only
where the frame agrees, after the sparse change correction of mrisr.reconstruct.changes; and
without it), the tracked prior alone (before the network), the network (default; without the
sparse change correction; without the contrast matching of mrisr.reconstruct.contrast) with each prior mode (tracked = default, planning, previous), the
no-prior network, and the default after fine-tuning on the planning scan.

Scenarios (mrisr.phantom.make_dynamic, 8 frames, breathing motion + contrast uptake): plain; a
needle entering the tissue (absent from the planning scan); a needle in the planning scan only;
the planning scan in another contrast; through-plane motion; LR noise; a planning scan with noise of
its own (in every other scenario the planning scan and the frames share the source volume's one
noise realisation, which rewards copying the planning scan's texture). Each at 6.25 % and 4 % of
k-space, on anatomy the bundled models never trained on (see ``subjects()``).

Columns: SSIM inside the object (tissue) and over the whole volume, contrast recovery of the
entering needle, leakage of the planning-only needle, seconds per frame, and the registration
error of the tracker in mm against the phantom's known motion.

Run: python benchmarks/fidelity.py [--quick] [--subjects mni152,real] [--finetune-minutes 1]
     [--headline-only | --skip-headline] [--truth-figure benchmarks/fidelity_truth.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import log, markdown_table, print_table, quick, write_section  # noqa: E402
from noisy_phantoms import PLANNING_SNRS  # noqa: E402
from sitk_keyhole import sitk_registered_keyhole  # noqa: E402

from mrisr.io import Volume  # noqa: E402
from mrisr.kspace.functional import zero_fill  # noqa: E402
from mrisr.metrics import contrast_recovery, core_continuity, leakage, object_mask, registration_error_mm, score_frame  # noqa: E402

#: scenario name -> make_dynamic keyword arguments (on top of frames, keep, seed)
SCENARIOS = {
    "plain": {},
    "needle enters": {"insert": "needle"},
    "needle in planning only": {"planning_insert": "needle"},
    "other contrast": {"planning_contrast": "swap"},
    "through-plane motion": {"through_plane_mm": 3.0},
    "noise (SNR 20)": {"noise_snr": 20.0},
    "planning scan with its own noise (SNR 20)": {"planning_noise_snr": 20.0},
}
METHODS = ("sinc", "keyhole", "SimpleITK registered keyhole", "keyhole-registered", "keyhole-gated", "keyhole-gated, no sparse changes",
           "tracked prior alone", "network tracked (default)", "default, no sparse changes",
           "default, no contrast matching",
           "network + data consistency", "network planning", "network previous", "no-prior network",
           "default + fine-tuning")


def subjects(names: list[str]) -> dict[str, Volume]:
    """Held-out anatomy: ``mni152`` (template, an average: flatters every method) and ``real``
    (a real single-subject scan with its own noise, never used for training)."""
    from quality import unseen_static

    out = {}
    for name in names:
        if name == "mni152":
            out["MNI152 (template)"] = unseen_static()
        elif name == "real":
            from mrisr.data import heldout_subject

            volume = heldout_subject()
            out[f"{volume.name} (real, single subject)"] = volume
        else:
            raise SystemExit(f"--subjects: unknown subject {name!r}; choose mni152, real")
    return out


def run_methods(phantom, prior_model, noprior_model, tuned_model,
                extra_models: dict | None = None) -> dict[str, tuple[list[np.ndarray], float]]:
    """Every method's frames and seconds per frame (tracked prior included); ``extra_models``
    (row name -> model) add rows of other prior-guided models with the default options."""
    from mrisr.reconstruct import ReconstructOptions, iter_reconstruct, prepare_state

    lr, planning = phantom.lr, phantom.planning
    hr_xy = phantom.hr.data.shape[:2]
    frames = [lr.frame(t) for t in range(lr.n_frames)]
    out: dict[str, tuple[list[np.ndarray], float]] = {}

    def timed(name, fn):
        start = time.perf_counter()
        result = fn()
        out[name] = (result, (time.perf_counter() - start) / len(frames))

    def recon(options, model=None):
        return [r.sr for r in iter_reconstruct(lr, planning, options, model=model)]

    timed("sinc", lambda: [zero_fill(f, hr_xy) for f in frames])
    timed("keyhole", lambda: recon(ReconstructOptions(method="keyhole")))
    sitk_fields = []

    def sitk_frames():
        result = []
        for frame in frames:
            image, field = sitk_registered_keyhole(frame, np.asarray(planning.data, dtype=np.float32))
            result.append(image)
            sitk_fields.append(field)
        return result

    timed("SimpleITK registered keyhole", sitk_frames)
    timed("keyhole-registered", lambda: recon(ReconstructOptions(method="keyhole-registered")))
    timed("keyhole-gated", lambda: recon(ReconstructOptions(method="keyhole-gated")))
    timed("keyhole-gated, no sparse changes",
          lambda: recon(ReconstructOptions(method="keyhole-gated", sparse_changes=False)))
    rec = prepare_state(lr, planning, ReconstructOptions(method="keyhole-registered"), first_frame=frames[0])
    fields = []

    def tracked_priors():
        priors = []
        for frame in frames:
            priors.append(rec.tracker.prior_for(frame))
            fields.append(rec.tracker.hr_displacement())  # (cheap next to the registration)
        return priors

    timed("tracked prior alone", tracked_priors)
    out["_registration"] = [registration_error_mm(field, phantom.tracking_displacement(t), phantom.hr.zooms,
                                                  object_mask(phantom.hr.frame(t))) for t, field in enumerate(fields)]
    out["_sitk_registration"] = [registration_error_mm(field, phantom.tracking_displacement(t), phantom.hr.zooms,
                                                       object_mask(phantom.hr.frame(t)))
                                 for t, field in enumerate(sitk_fields)]
    timed("network tracked (default)", lambda: recon(ReconstructOptions(prior_mode="tracked"), prior_model))
    timed("default, no sparse changes", lambda: recon(ReconstructOptions(sparse_changes=False), prior_model))
    timed("default, no contrast matching", lambda: recon(ReconstructOptions(match_contrast=False), prior_model))
    timed("network + data consistency", lambda: recon(ReconstructOptions(data_consistency=True), prior_model))
    for name, model in (extra_models or {}).items():
        timed(name, lambda model=model: recon(ReconstructOptions(prior_mode="tracked"), model))
    timed("network planning", lambda: recon(ReconstructOptions(prior_mode="planning"), prior_model))
    timed("network previous", lambda: recon(ReconstructOptions(prior_mode="previous"), prior_model))
    timed("no-prior network", lambda: [r.sr for r in iter_reconstruct(lr, None, ReconstructOptions(
        model="default-noprior", matrix=tuple(int(n) for n in hr_xy)), model=noprior_model)])
    if tuned_model is not None:
        timed("default + fine-tuning", lambda: recon(ReconstructOptions(prior_mode="tracked"), tuned_model))
    return out


def score(phantom, frames: list[np.ndarray]) -> dict[str, float]:
    """Mean tissue / whole SSIM, recovery of the entering needle, leakage of the planning-only one."""
    gt = phantom.hr.data
    rows = [score_frame(f, gt[..., t], frame=t) for t, f in enumerate(frames)]
    result = {"ssim_tissue": float(np.mean([r["ssim_tissue"] for r in rows])),
              "ssim_whole": float(np.mean([r["ssim_whole"] for r in rows])),
              "per_frame_tissue": [r["ssim_tissue"] for r in rows]}
    if phantom.insert_mask is not None:
        result["recovery"] = float(np.mean([contrast_recovery(f, gt[..., t], phantom.insert_mask[..., t])
                                            for t, f in enumerate(frames) if phantom.insert_mask[..., t].any()]))
        result["continuity"] = float(np.mean([core_continuity(f, gt[..., t], phantom.insert_mask[..., t])
                                              for t, f in enumerate(frames) if phantom.insert_mask[..., t].any()]))
    if phantom.planning_insert_mask is not None:
        result["leakage"] = float(np.mean([leakage(f, phantom.planning_insert_mask[..., t],
                                                   phantom.planning_insert_contrast)
                                           for t, f in enumerate(frames) if phantom.planning_insert_mask[..., t].any()]))
    return result


def maps_rows(subject: str, static, keeps: list[float], frames: int) -> list[list[str]]:
    """Disagreement map over each needle's core against the rest of the tissue, per method (mean and
    smallest ratio over the frames); the target is >= 3x for both needles."""
    from scipy import ndimage

    from mrisr.phantom import make_dynamic
    from mrisr.reconstruct import ReconstructOptions, iter_reconstruct

    rows = []
    for keep in keeps:
        phantom = make_dynamic(static, frames=frames, keep=keep, seed=11, insert="needle", planning_insert="needle")
        for label, options in (("network tracked (default)", ReconstructOptions(maps=True)),
                               ("keyhole-registered", ReconstructOptions(method="keyhole-registered", maps=True))):
            ratios: dict[str, list[float]] = {"entering": [], "planning only": []}
            for result in iter_reconstruct(phantom.lr, phantom.planning, options):
                t = result.index
                core, site = phantom.insert_mask[..., t], phantom.planning_insert_mask[..., t]
                rest = object_mask(phantom.hr.frame(t)) & ~ndimage.binary_dilation(core | site, iterations=3)
                level = float(result.maps.disagreement[rest].mean())
                for name, mask in (("entering", core), ("planning only", site)):
                    if mask.any():
                        ratios[name].append(float(result.maps.disagreement[mask].mean()) / level)
            rows.append([subject, f"{keep:g}", label]
                        + [f"{np.mean(v):.1f} (min {np.min(v):.1f})" for v in ratios.values()]
                        + ["met" if min(min(v) for v in ratios.values()) >= 3 else "missed"])
    return rows


def lever_rows(subject: str, static, frames: int) -> list[list[str]]:
    """The tracker's displacement smoothing (LR voxels) against the tracked prior, the registered
    keyhole and the registration error, plain phantom at 6.25 % (the lever behind the default of 3)."""
    from mrisr.phantom import make_dynamic
    from mrisr.reconstruct import ReconstructOptions, prepare_state
    from mrisr.reconstruct.keyhole import keyhole
    from mrisr.reconstruct.motion import MotionTracker, TrackingSettings

    phantom = make_dynamic(static, frames=frames, keep=6.25, seed=11)
    frames_lr = [phantom.lr.frame(t) for t in range(frames)]
    rec = prepare_state(phantom.lr, phantom.planning, ReconstructOptions(method="keyhole"), first_frame=frames_lr[0])
    truth = [phantom.hr.frame(t) for t in range(frames)]
    masks = [object_mask(f) for f in truth]
    true_fields = [phantom.tracking_displacement(t) for t in range(frames)]
    rows = []
    for smoothing in (1.0, 2.0, 3.0, 4.0):
        tracker = MotionTracker(rec.prior.data, frames_lr[0].shape, TrackingSettings(smoothing_voxels=smoothing))
        prior_ssim, keyhole_ssim, error = [], [], []
        for t, frame in enumerate(frames_lr):
            prior = tracker.prior_for(frame)
            prior_ssim.append(score_frame(prior, truth[t], masks[t])["ssim_tissue"])
            keyhole_ssim.append(score_frame(keyhole(frame, prior), truth[t], masks[t])["ssim_tissue"])
            error.append(registration_error_mm(tracker.hr_displacement(), true_fields[t], phantom.hr.zooms,
                                               masks[t])["mean_mm"])
        motion = np.mean([registration_error_mm(np.zeros_like(u), u, phantom.hr.zooms, m)["mean_mm"]
                          for u, m in zip(true_fields, masks)])
        rows.append([subject, f"{smoothing:g}" + (" (default)" if smoothing == 3.0 else ""),
                     f"{np.mean(prior_ssim):.3f}", f"{np.mean(keyhole_ssim):.3f}", f"{np.mean(error):.2f}",
                     f"{motion:.2f}"])
    return rows


def write_levers_section(rows: list[list[str]], frames: int) -> None:
    headers = ["subject", "tracker smoothing (LR voxels)", "tracked prior: tissue SSIM",
               "registered keyhole: tissue SSIM", "registration error mm", "true motion mm (no registration)"]
    print_table(headers, rows)
    body = markdown_table(headers, rows) + (
        f"\n\nPlain phantom at 6.25 %, {frames} frames, seed 11; error = mean over the object of |estimated - true "
        "displacement| in mm. The default (3) was chosen on MNI152 and Colin27; the held-out scan only confirms it.")
    write_section("fidelity_levers", "Fidelity levers: registration smoothing", body,
                  command="python benchmarks/fidelity.py")


def write_maps_section(rows: list[list[str]], frames: int) -> None:
    headers = ["subject", "keep %", "method", "entering needle: core / rest of tissue",
               "planning-only needle: site / rest of tissue", ">= 3x in every frame"]
    print_table(headers, rows)
    body = markdown_table(headers, rows) + (
        f"\n\nMean of the disagreement map (`mrisr reconstruct --maps`) over each needle's core divided by its mean "
        f"over the rest of the tissue (object mask less 3 voxels around both needles); mean over {frames} frames and "
        "the smallest frame. Phantoms with both needles at once, seed 11.")
    write_section("fidelity_maps", "Disagreement maps on the needle phantoms", body,
                  command="python benchmarks/fidelity.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 frames, one keep level, one subject (smoke test)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--subjects", default="real,mni152")
    parser.add_argument("--keeps", default="6.25,4")
    parser.add_argument("--finetune-minutes", type=float, default=1.0)
    parser.add_argument("--model", default="default")
    parser.add_argument("--extra-model", action="append", default=[], metavar="NAME=PATH",
                        help="another prior-guided model to add as a row (e.g. the model a new one replaces)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of the scenarios")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave RESULTS.md alone")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--maps-only", action="store_true", help="only the disagreement-map table")
    parser.add_argument("--levers-only", action="store_true", help="only the registration lever table")
    parser.add_argument("--headline-only", action="store_true",
                        help="only the independent-noise tables (the headline), not the shared-noise ones")
    parser.add_argument("--skip-headline", action="store_true",
                        help="only the shared-noise tables (after a separate --headline-only run)")
    parser.add_argument("--finetune-only", action="store_true",
                        help="only the fine-tuning table on the independent-noise phantoms (--finetune-minutes each)")
    parser.add_argument("--truth-figure", default=None, metavar="PNG",
                        help="save source, denoised truth and their difference (middle slice per subject) here")
    args = parser.parse_args()
    import torch

    from mrisr.models import load as load_model
    from mrisr.phantom import make_dynamic
    from mrisr.reconstruct import ReconstructOptions, prepare_state
    from mrisr.workflow import finetune_model

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    if args.quick:
        # --quick is MRISR_BENCH_QUICK=1: a smoke test writes to a scratch file, never to RESULTS.md
        os.environ["MRISR_BENCH_QUICK"] = "1"
    is_quick = quick()
    frames = 3 if is_quick else args.frames
    keeps = [6.25] if is_quick else [float(k) for k in args.keeps.split(",")]
    names = args.subjects.split(",")[:1] if is_quick else args.subjects.split(",")
    minutes = 0.1 if is_quick else args.finetune_minutes
    if args.maps_only or args.levers_only:
        chosen = subjects(names)
        if args.levers_only:
            write_levers_section([row for subject, static in chosen.items() for row in lever_rows(subject, static, frames)],
                                 frames)
        if args.maps_only:
            write_maps_section([row for subject, static in chosen.items()
                                for row in maps_rows(subject, static, keeps, frames)], frames)
        return
    prior_model, noprior_model = load_model(args.model), load_model("default-noprior")
    extra = {}
    for item in args.extra_model:
        name, _, path = item.partition("=")
        if not path or name in METHODS or name in extra:
            raise SystemExit(f"--extra-model {item}: expected NAME=PATH with a NAME not already a row")
        extra[name] = load_model(path)
    methods = METHODS[:10] + tuple(extra) + METHODS[10:]
    unknown = [name for name in args.scenarios.split(",") if name not in SCENARIOS]
    if unknown:
        raise SystemExit(f"--scenarios: unknown {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    scenarios = {name: SCENARIOS[name] for name in args.scenarios.split(",")}
    if len(scenarios) < len(SCENARIOS) and not args.no_write:
        raise SystemExit("--scenarios with a subset needs --no-write (RESULTS.md holds full runs only)")
    missing = {"plain", "needle enters", "needle in planning only"} - set(scenarios)
    if missing:
        raise SystemExit(f"--scenarios must include {', '.join(sorted(missing))} (the table's recovery and leakage)")
    chosen = subjects(names)
    from fidelity_noise import run_finetune_table, run_headline

    if args.finetune_only:
        run_finetune_table(chosen, keeps, frames, prior_model, minutes, score,
                           snrs=(20.0,) if is_quick else (20.0, None), write=not args.no_write)
        return

    if not args.skip_headline:
        run_headline(chosen, keeps, frames, prior_model, noprior_model, score,
                     snrs=(20.0, None) if is_quick else PLANNING_SNRS, write=not args.no_write,
                     truth_figure=args.truth_figure, extra_models=extra)
    if args.headline_only:
        return
    started = time.time()
    sections = []
    headline = []
    for subject, static in chosen.items():
        rows = []
        for keep in keeps:
            tuned = None
            if minutes > 0:
                plain = make_dynamic(static, frames=frames, keep=keep, seed=11)
                rec = prepare_state(plain.lr, plain.planning, ReconstructOptions(finetune=True), model=prior_model,
                                    first_frame=plain.lr.frame(0))
                tuned, _report = finetune_model(rec, minutes)
            results: dict[str, dict[str, dict]] = {m: {} for m in methods}
            registration = {}
            for scenario, kwargs in scenarios.items():
                log(f"{subject} keep {keep:g}%: {scenario}")
                phantom = make_dynamic(static, frames=frames, keep=keep, seed=11, **kwargs)
                outputs = run_methods(phantom, prior_model, noprior_model, tuned, extra)
                errors, sitk_errors = outputs.pop("_registration"), outputs.pop("_sitk_registration")
                registration[scenario] = (float(np.mean([e["mean_mm"] for e in errors])),
                                          float(np.mean([e["true_mean_mm"] for e in errors])),
                                          float(np.mean([e["mean_mm"] for e in sitk_errors])))
                for method, (pred, seconds) in outputs.items():
                    results[method][scenario] = {**score(phantom, pred), "seconds": seconds}
            for method in methods:
                if not results[method]:
                    continue
                r = results[method]
                rows.append([f"{keep:g}", method]
                            + [f"{r[s]['ssim_tissue']:.3f}" for s in scenarios]
                            + [f"{r['plain']['ssim_whole']:.3f}",
                               f"{r['needle enters']['recovery']:.2f}", f"{r['needle in planning only']['leakage']:.2f}",
                               f"{np.mean([r[s]['seconds'] for s in scenarios]):.3f}"])
                headline.append((subject, keep, method, r))
            rows.append([f"{keep:g}", "tracker error mm (true motion mm)"]
                        + [f"{registration[s][0]:.2f} ({registration[s][1]:.2f})" for s in scenarios]
                        + ["", "", "", ""])
            rows.append([f"{keep:g}", "SimpleITK demons error mm"]
                        + [f"{registration[s][2]:.2f}" for s in scenarios] + ["", "", "", ""])
        headers = (["keep %", "method"] + [f"tissue SSIM: {s}" for s in scenarios]
                   + ["whole SSIM (plain)", "needle recovery", "planning-needle leakage", "s/frame"])
        print(f"\n{subject}")
        print_table(headers, rows)
        sections.append(f"### {subject}\n\n" + markdown_table(headers, rows))
    elapsed = time.time() - started
    if args.no_write:
        return
    body = "\n\n".join(sections) + (
        f"\n\n{frames} frames per phantom, seed 11; tissue = mrisr.metrics.object_mask of each ground-truth frame; "
        "recovery = share of the entering needle's true contrast kept (sinc's is the bar); leakage = contrast shown at "
        "the site of the planning-only needle relative to its contrast in the planning scan (0 = none). "
        f"Fine-tuning: {minutes:g} min on the planning scan per subject and keep level (plain scenario's planning "
        f"scan; the same anatomy as every scenario's). Run time {elapsed / 60:.1f} min.")
    # the second table (the headline is fidelity_noise's); the title is kept for the links to it
    write_section("fidelity", "Fidelity: tissue metrics, keyhole baselines and phantoms where the prior is wrong",
                  body, command="python benchmarks/fidelity.py")
    write_maps_section([row for subject, static in chosen.items()
                        for row in maps_rows(subject, static, keeps, frames)], frames)
    write_levers_section([row for subject, static in chosen.items()
                          for row in lever_rows(subject, static, frames)], frames)


if __name__ == "__main__":
    main()
