"""Quality on anatomy the bundled models never trained on (MNI152 2009, held out).

For each keep level: trilinear, sinc (zero-fill of the LR magnitude data), the no-prior model,
the prior-guided model handed the ground-truth previous frame (teacher forcing), the same model
step-wise on its own outputs, step-wise + data consistency, and step-wise + fine-tuning.
Then the SSIM gain over sinc per frame over a long series (drift). Every number goes through
mrisr.metrics: tissue (object mask) first, the whole volume (mostly background) beside it; the
fidelity benchmark (benchmarks/fidelity.py) adds keyhole baselines and phantoms where the prior is wrong. Run: python benchmarks/quality.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mrisr.data import load_sample, mni152_path  # noqa: E402
from mrisr.demo import trilinear_to_grid  # noqa: E402
from mrisr.io import Volume, load  # noqa: E402
from mrisr.kspace.functional import zero_fill  # noqa: E402
from mrisr.metrics import object_mask, score_frame, ssim  # noqa: E402
from mrisr.models import load as load_model  # noqa: E402
from mrisr.phantom import make_dynamic  # noqa: E402
from mrisr.reconstruct import ReconstructOptions, data_consistency, iter_reconstruct  # noqa: E402
from mrisr.reconstruct.prior import resample_to_grid  # noqa: E402

HERE = Path(__file__).resolve().parent


def unseen_static() -> Volume:
    """MNI152 2009 resampled onto the sample's grid (1.5 x 1.5 x 3 mm axial slab, MNI space)."""
    sample = load_sample()
    mni = load(mni152_path())
    mni.data = np.asarray(mni.data, dtype=np.float32)
    data = resample_to_grid(mni, sample.spatial_shape, sample.affine)
    return sample.with_data(data)


def evaluate(pred: list[np.ndarray], gt: np.ndarray) -> tuple[float, float, float, list[float]]:
    """Mean SSIM over the whole volume, SSIM in tissue (object mask), PSNR in tissue, and whole SSIM per frame."""
    rows = [score_frame(p, gt[..., t]) for t, p in enumerate(pred)]
    s = [r["ssim_whole"] for r in rows]
    return (float(np.mean(s)), float(np.mean([r["ssim_tissue"] for r in rows])),
            float(np.mean([r["psnr_tissue"] for r in rows])), s)


def methods_for(phantom, prior_model, noprior_model, finetune_minutes: float) -> dict[str, list[np.ndarray]]:
    lr, gt = phantom.lr, np.asarray(phantom.hr.data)
    hr_xy = gt.shape[:2]
    frames = [lr.frame(t) for t in range(lr.n_frames)]
    sincs = [zero_fill(f, hr_xy) for f in frames]
    out = {"trilinear": [trilinear_to_grid(f, gt.shape[:3]) for f in frames], "sinc": sincs}
    out["no-prior model"] = [noprior_model.predict(s) for s in sincs]
    planning = resample_to_grid(phantom.planning, gt.shape[:3], phantom.hr.affine)
    from mrisr.reconstruct.network_input import form_network_input

    teacher = []
    for t, s in enumerate(sincs):
        given = planning if t == 0 else gt[..., t - 1]
        if prior_model.prior_input == "gated-keyhole":
            given = form_network_input(frames[t], given, s, sparse_changes=False).given
        teacher.append(prior_model.predict(s, given))
    out["prior model, true previous frame"] = teacher
    previous = ReconstructOptions(prior_mode="previous")
    out["prior model, step-wise"] = [r.sr for r in iter_reconstruct(lr, phantom.planning, previous, model=prior_model)]
    out["prior model, tracked planning prior (default)"] = [
        r.sr for r in iter_reconstruct(lr, phantom.planning, ReconstructOptions(prior_mode="tracked"), model=prior_model)]
    out["prior model, planning prior every frame"] = [
        r.sr for r in iter_reconstruct(lr, phantom.planning, ReconstructOptions(prior_mode="planning"), model=prior_model)]
    out["step-wise + data consistency"] = [data_consistency(s, f) for s, f in zip(out["prior model, step-wise"], frames)]
    if finetune_minutes > 0:
        from mrisr.reconstruct import prepare_state
        from mrisr.workflow import finetune_model

        opts = ReconstructOptions()  # the default prior mode, as `mrisr reconstruct --finetune` runs
        rec = prepare_state(lr, phantom.planning, ReconstructOptions(finetune=True), model=prior_model,
                            first_frame=frames[0])
        tuned, report = finetune_model(rec, finetune_minutes)
        out[f"default prior mode ({opts.prior_mode}) + fine-tuning ({finetune_minutes:g} min)"] = [
            r.sr for r in iter_reconstruct(lr, phantom.planning, opts, model=tuned)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer frames (smoke test)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--drift-frames", type=int, default=50)
    parser.add_argument("--finetune-minutes", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="default", help="prior-guided model (bundled name or checkpoint)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    frames = 3 if args.quick else args.frames
    drift_frames = 6 if args.quick else args.drift_frames
    ft_minutes = 0.2 if args.quick else args.finetune_minutes
    t_start = time.time()
    static = unseen_static()
    prior_model, noprior_model = load_model(args.model), load_model("default-noprior")
    rows = []
    for keep in (25.0, 10.0, 6.25, 4.0):
        phantom = make_dynamic(static, frames=frames, keep=keep, seed=11)
        gt = np.asarray(phantom.hr.data)
        results = methods_for(phantom, prior_model, noprior_model, ft_minutes if keep == 6.25 else 0.0)
        sinc_ssim, sinc_masked = evaluate(results["sinc"], gt)[:2]
        for name, pred in results.items():
            s, m, q, _ = evaluate(pred, gt)
            rows.append({"keep": keep, "method": name, "ssim": s, "psnr": q, "gain": s - sinc_ssim, "masked": m,
                         "masked_gain": m - sinc_masked})
            print(f"keep {keep:5g}%  {name:42s} tissue SSIM {m:.4f} ({m - sinc_masked:+.4f})  whole {s:.4f} "
                  f"({s - sinc_ssim:+.4f})  tissue PSNR {q:.2f}", flush=True)
    # drift over a long series, step-wise
    phantom = make_dynamic(static, frames=drift_frames, keep=6.25, seed=5)
    gt = np.asarray(phantom.hr.data)
    sincs = [zero_fill(phantom.lr.frame(t), gt.shape[:2]) for t in range(drift_frames)]
    sinc_ssims = [ssim(b, gt[..., t]) for t, b in enumerate(sincs)]
    srs = [r.sr for r in iter_reconstruct(phantom.lr, phantom.planning, ReconstructOptions(prior_mode="previous"),
                                          model=prior_model)]
    gains = [ssim(s, gt[..., t]) - b for t, (s, b) in enumerate(zip(srs, sinc_ssims))]
    masks = [object_mask(gt[..., t]) for t in range(drift_frames)]
    sinc_head = [ssim(b, gt[..., t], mask=masks[t]) for t, b in enumerate(sincs)]
    head_gains = [ssim(s, gt[..., t], mask=masks[t]) - sinc_head[t] for t, s in enumerate(srs)]
    del srs
    planning_srs = [r.sr for r in iter_reconstruct(phantom.lr, phantom.planning, ReconstructOptions(prior_mode="planning"),
                                                   model=prior_model)]
    planning_gains = [ssim(s, gt[..., t]) - b for t, (s, b) in enumerate(zip(planning_srs, sinc_ssims))]
    del planning_srs
    tracked_srs = [r.sr for r in iter_reconstruct(phantom.lr, phantom.planning, ReconstructOptions(prior_mode="tracked"),
                                                  model=prior_model)]
    tracked_gains = [ssim(s, gt[..., t]) - b for t, (s, b) in enumerate(zip(tracked_srs, sinc_ssims))]
    tracked_head = [ssim(s, gt[..., t], mask=masks[t]) - sinc_head[t] for t, s in enumerate(tracked_srs)]
    del tracked_srs
    # the bar of the step-wise target: the no-prior model, frame by frame, in tissue
    noprior_srs = [r.sr for r in iter_reconstruct(phantom.lr, None, ReconstructOptions(
        model="default-noprior", matrix=tuple(int(n) for n in gt.shape[:2])), model=noprior_model)]
    noprior_head = [ssim(s, gt[..., t], mask=masks[t]) - sinc_head[t] for t, s in enumerate(noprior_srs)]
    del noprior_srs
    below_noprior = {name: [g - n for g, n in zip(series, noprior_head)]
                     for name, series in (("previous", head_gains), ("tracked", tracked_head))}
    plot = HERE / "quality_drift.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=110)
    ax.plot(range(drift_frames), gains, marker="o", ms=2, label="step-wise (prior = SR of frame t-1)")
    ax.plot(range(drift_frames), head_gains, marker="o", ms=2, ls=":", color="C0", label="step-wise, in tissue (object mask)")
    ax.plot(range(drift_frames), planning_gains, marker="s", ms=2, label="planning scan as prior for every frame")
    ax.plot(range(drift_frames), tracked_gains, marker="^", ms=2, color="C2",
            label="tracked planning scan (default)")
    ax.plot(range(drift_frames), tracked_head, marker="^", ms=2, ls=":", color="C2",
            label="tracked, in tissue (object mask)")
    ax.legend(fontsize=8)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("frame")
    ax.set_ylabel("SSIM gain over sinc")
    ax.set_title(f"prior modes on unseen anatomy (MNI152), 6.25% k-space, {drift_frames} frames")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(plot)
    elapsed = time.time() - t_start
    print(f"drift: gain frame 1 {gains[0]:+.4f}, last frame {gains[-1]:+.4f}, min {min(gains):+.4f}")
    print(f"tracked prior: gain frame 1 {tracked_gains[0]:+.4f}, last {tracked_gains[-1]:+.4f}, "
          f"min {min(tracked_gains):+.4f}")
    print(f"planning prior: gain frame 1 {planning_gains[0]:+.4f}, last {planning_gains[-1]:+.4f}, "
          f"min {min(planning_gains):+.4f}")
    from _common import write_section  # the shared RESULTS.md writer

    lines = ["| keep % | method | tissue SSIM | gain over sinc | whole-volume SSIM | gain | tissue PSNR dB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['keep']:g} | {r['method']} | {r['masked']:.4f} | {r['masked_gain']:+.4f} | {r['ssim']:.4f} | "
                     f"{r['gain']:+.4f} | {r['psnr']:.2f} |")
    def criterion(g: list[float]) -> str:
        return "met" if abs(g[-1] - g[0]) <= 0.01 else "missed"

    lines += ["", f"Drift over {drift_frames} frames at 6.25 % (seed 5), model `{args.model}`:", "",
              "| prior mode | gain at frame 1 | gain at the last frame | difference | smallest gain | frames below sinc "
              "| within 0.01 (no drift) |",
              "|---|---|---|---|---|---|---|",
              f"| step-wise (`previous`) | {gains[0]:+.4f} | {gains[-1]:+.4f} | {gains[-1] - gains[0]:+.4f} | "
              f"{min(gains):+.4f} | {sum(g <= 0 for g in gains)} | {criterion(gains)} |",
              f"| step-wise, in tissue | {head_gains[0]:+.4f} | {head_gains[-1]:+.4f} | "
              f"{head_gains[-1] - head_gains[0]:+.4f} | {min(head_gains):+.4f} | {sum(g <= 0 for g in head_gains)} | "
              f"{criterion(head_gains)} |",
              f"| tracked planning scan (`tracked`, default) | {tracked_gains[0]:+.4f} | {tracked_gains[-1]:+.4f} | "
              f"{tracked_gains[-1] - tracked_gains[0]:+.4f} | {min(tracked_gains):+.4f} | "
              f"{sum(g <= 0 for g in tracked_gains)} | {criterion(tracked_gains)} |",
              f"| tracked, in tissue | {tracked_head[0]:+.4f} | {tracked_head[-1]:+.4f} | "
              f"{tracked_head[-1] - tracked_head[0]:+.4f} | {min(tracked_head):+.4f} | "
              f"{sum(g <= 0 for g in tracked_head)} | {criterion(tracked_head)} |",
              f"| planning scan for every frame (`planning`) | {planning_gains[0]:+.4f} | {planning_gains[-1]:+.4f} | "
              f"{planning_gains[-1] - planning_gains[0]:+.4f} | {min(planning_gains):+.4f} | "
              f"{sum(g <= 0 for g in planning_gains)} | {criterion(planning_gains)} |",
              f"| no-prior model (`default-noprior`), in tissue | {noprior_head[0]:+.4f} | {noprior_head[-1]:+.4f} | "
              f"{noprior_head[-1] - noprior_head[0]:+.4f} | {min(noprior_head):+.4f} | "
              f"{sum(g <= 0 for g in noprior_head)} | {criterion(noprior_head)} |",
              "",
              "Against the no-prior model in tissue, frame by frame (the step-wise target: at or above it at every "
              "frame):", "",
              "| prior mode | smallest margin over the no-prior model | frames below it | at or above it at every frame |",
              "|---|---|---|---|",
              *[f"| {name} | {min(m):+.4f} | {sum(x < 0 for x in m)} of {len(m)} | "
                f"{'met' if min(m) >= 0 else 'missed'} |" for name, m in below_noprior.items()],
              "", "Plot: `benchmarks/quality_drift.png`.",
              "", f"Subject: MNI152 2009 template (nilearn), never used for training (it is the validation subject "
              f"of the training log; the weights are the last step, not selected on it). {frames} frames per keep "
              f"level, seed 11. Run time {elapsed:.0f} s."]
    write_section("quality", "Quality on unseen anatomy", "\n".join(lines), command="python benchmarks/quality.py")


if __name__ == "__main__":
    main()
