"""Per-frame latency of step-wise reconstruction, against the anchor architecture and the machine's
conv3d ceiling, measured in one run, before and after our optimisations (with the SSIM of both);
plus the speed levers (``speed_levers.py``: inference mode, memory layout, torch.compile, threads,
tiling, bf16, FFT backend) with the largest output difference each one causes.

Usage:
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/speed.py            # full (~8 min on 2 cores)
    MRISR_BENCH_QUICK=1 .venv/bin/python benchmarks/speed.py          # toy sizes, seconds

Sizes are ``(X, Y, Z)`` HR frames; the LR frame is the central 6.25 % of in-plane k-space
(64x64x32 for 256x256x32) and the prior lies on the HR grid, as in ``mrisr reconstruct``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, markdown_table, print_table, quick, static_slab, time_call, write_section  # noqa: E402
from anchor_replica import AnchorUNet, conv_ceiling, conv_flops, n_params  # noqa: E402
from speed_levers import MATCH_TOL, fmt, measure_levers, with_layout  # noqa: E402

KEEP = 6.25
#: largest output difference (normalised) accepted from the bf16 network against the fp32 one before optimisation
BF16_TOL = 5e-3


def make_case(shape: tuple[int, int, int], frames: int, seed: int = 0):
    """A dynamic phantom whose HR frames are ``shape`` (real anatomy, breathing, contrast)."""
    from mrisr.phantom import make_dynamic

    return make_dynamic(static_slab(shape), frames=frames, keep=KEEP, seed=seed)


def stepwise(model, phantom, threads: int, fft_backend: str = "torch", prior_mode: str | None = None,
             precision: str = "auto") -> dict:
    """Step-wise reconstruction of the whole phantom; frame 0 (prior preparation, warm-up) untimed.
    ``prior_mode`` None: the default options."""
    from mrisr.metrics import ssim
    from mrisr.reconstruct import ReconstructOptions, prepare_state, reconstruct_frames

    options = ReconstructOptions(device="cpu", threads=threads, precision=precision)
    if prior_mode:
        options.prior_mode = prior_mode
    rec = prepare_state(phantom.lr, phantom.planning, options, phantom.lr.frame(0), model=model)
    rec.fft_backend = fft_backend
    seconds, ssims, srs = [], [], []
    for result in reconstruct_frames(rec, phantom.lr.frames()):
        srs.append(result.sr)
        if result.index > 0:
            seconds.append(result.seconds)
            ssims.append(ssim(result.sr, phantom.hr.data[..., result.index]))
    return {"seconds": seconds, "ssim": float(np.mean(ssims)), "srs": srs, "grid": rec.grid}


def before_optimisation(model):
    """The same model as it ran before the speed work: contiguous layout (and numpy FFTs and float32,
    chosen in :func:`stepwise`)."""
    before = copy.copy(model)
    before.network = with_layout(model.network, torch.contiguous_format)
    return before


def measure_size(model, anchor: nn.Module, shape: tuple[int, int, int], frames: int, threads: int, repeats: int,
                 anchor_repeats: int) -> dict:
    """Step-wise latency (shipped and before optimisation, alternating), network and anchor forward
    times and FLOPs on one HR frame size."""
    from mrisr.models import robust_scale
    from mrisr.reconstruct.grid import frame_to_grid

    net = model.network
    log(f"phantom {shape} ({frames} frames)")
    phantom = make_case(shape, frames)
    before = before_optimisation(model)
    shipped_s, planning_s, before_s = [], [], []
    for _ in range(2):  # alternate, so a change in machine load hits all alike
        before_run = stepwise(before, phantom, threads, fft_backend="numpy", prior_mode="planning",
                              precision="fp32")
        planning_run = stepwise(model, phantom, threads, prior_mode="planning")
        step = stepwise(model, phantom, threads)
        before_s += before_run["seconds"]
        planning_s += planning_run["seconds"]
        shipped_s += step["seconds"]
    step_s, plan_s, old_s = (float(np.median(v)) for v in (shipped_s, planning_s, before_s))
    log(f"step-wise {shape}: default {step_s:.3f} s/frame, planning prior {plan_s:.3f}, before optimisation "
        f"{old_s:.3f} (frames {[round(s, 3) for s in shipped_s]} / {[round(s, 3) for s in before_s]})")
    sinc = frame_to_grid(phantom.lr.data[..., 1], step["grid"].hr_inplane)
    scale = robust_scale(sinc, model.percentile)
    x = torch.from_numpy(sinc / scale)[None, None].contiguous()
    given = step["srs"][0]
    if model.prior_input == "gated-keyhole":
        # what reconstruction hands such a network: the gated keyhole of the frame and its prior
        from mrisr.reconstruct.network_input import form_network_input

        given = form_network_input(phantom.lr.data[..., 1], given, sinc, sparse_changes=False).given
    p = torch.from_numpy(given / scale)[None, None].contiguous()
    with torch.inference_mode():
        network_s, _ = time_call(lambda: net(x, p), repeats=repeats, warmup=1)
        reference = net(x, p).contiguous()
        shipped_net_s, _ = time_call(lambda: model._run(x, p), repeats=repeats, warmup=1)
    flops = conv_flops(net, lambda: net(x, p))
    log(f"network forward {shape}: {network_s:.3f} s, {flops / 1e9:.1f} GFLOP")
    both = torch.cat([x, p], dim=1)
    anchor_flops = conv_flops(anchor, lambda: anchor(both))  # doubles as the warm-up pass
    with torch.inference_mode():
        anchor_s, anchor_all = time_call(lambda: anchor(both), repeats=anchor_repeats, warmup=0)
    log(f"anchor replica {shape}: {anchor_s:.2f} s ({[round(a, 2) for a in anchor_all]}), {anchor_flops / 1e9:.0f} GFLOP")
    max_diff = max(float(np.abs(a - b).max()) for a, b in zip(planning_run["srs"], before_run["srs"])) / scale
    return {"stepwise_s": step_s, "planning_s": plan_s, "before_s": old_s, "network_s": network_s,
            "shipped_net_s": shipped_net_s,
            "anchor_s": anchor_s, "ours_gflop": flops / 1e9, "anchor_gflop": anchor_flops / 1e9, "ssim": step["ssim"],
            "planning_ssim": planning_run["ssim"], "before_ssim": before_run["ssim"], "before_diff": max_diff,
            "sinc_ssim": sinc_ssim(phantom, step["grid"]),
            "x": x, "p": p, "scale": scale, "reference": reference, "target": phantom.hr.data[..., 1].copy(),
            "lr_frame": phantom.lr.data[..., 1].copy(), "hr_inplane": step["grid"].hr_inplane}


def sinc_ssim(phantom, grid) -> float:
    from mrisr.kspace.functional import zero_fill
    from mrisr.metrics import ssim

    values = [ssim(zero_fill(phantom.lr.data[..., t], grid.hr_inplane), phantom.hr.data[..., t])
              for t in range(1, phantom.lr.data.shape[3])]
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target is 2 cores)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (median)")
    args = parser.parse_args()

    from mrisr.models import load
    from mrisr.reconstruct import ReconstructOptions

    is_quick = quick()
    threads = args.threads
    torch.set_num_threads(threads)
    repeats = args.repeats or (2 if is_quick else 5)
    main_shape = (64, 64, 16) if is_quick else (256, 256, 32)
    slab_shape = (48, 48, 8) if is_quick else (192, 192, 16)
    frames = 3 if is_quick else 6
    anchor_repeats = 1 if is_quick else 2
    ceiling_shape = (1, 64, 24, 24, 16) if is_quick else (1, 64, 64, 64, 32)
    log(f"speed benchmark on {threads} threads; HR frames {main_shape} and {slab_shape}; quick={is_quick}")

    model = load("default", device="cpu")
    net = model.network.eval()
    ceiling = conv_ceiling(ceiling_shape, repeats)
    log(f"conv3d ceiling: {ceiling['gflop_s']:.1f} GFLOP/s (64->64 3x3x3 on {ceiling_shape}, {ceiling['layout']}; "
        f"{ceiling['by_layout']})")

    with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG untouched
        torch.manual_seed(0)
        anchor = AnchorUNet().eval()
    anchor_params = n_params(anchor)
    headline_rows, per_size = [], {}
    for shape in (main_shape, slab_shape):
        size = measure_size(model, anchor, shape, frames, threads, repeats, anchor_repeats)
        per_size[shape] = size
        ours_gfs = size["ours_gflop"] / size["network_s"]
        anchor_gfs = size["anchor_gflop"] / size["anchor_s"]
        headline_rows.append([
            "x".join(map(str, shape)), fmt(size["stepwise_s"]), fmt(size["planning_s"]), fmt(size["before_s"]),
            fmt(size["network_s"]), fmt(size["shipped_net_s"]), fmt(size["anchor_s"], 2), f"{size['anchor_s'] / size['stepwise_s']:.1f}x",
            f"{size['anchor_s'] / size['planning_s']:.1f}x", f"{size['ours_gflop']:.1f}",
            f"{ours_gfs:.1f}", f"{100 * ours_gfs / ceiling['gflop_s']:.0f} %", f"{size['anchor_gflop']:.0f}",
            f"{anchor_gfs:.1f}", fmt(size["ssim"], 4), fmt(size["planning_ssim"], 4), fmt(size["before_ssim"], 4),
            f"{size['before_diff']:.1e}", fmt(size["sinc_ssim"], 4),
        ])
        size["ours_gflop_s"] = ours_gfs

    m = per_size[main_shape]
    levers = measure_levers(model, m, threads, repeats, is_quick)

    prior_mode = ReconstructOptions().prior_mode
    headers = ["HR frame (X x Y x Z)", f"s/frame, default prior mode ({prior_mode})", "s/frame, planning prior",
               "s/frame, planning prior before optimisation", "network s (fp32)",
               f"network s (--precision auto: {model.compute_dtype()})", "anchor s",
               f"x faster than anchor ({prior_mode})", "x faster than anchor (planning)", "our GFLOP", "our GFLOP/s",
               "% of conv ceiling", "anchor GFLOP", "anchor GFLOP/s", f"whole-volume SSIM ({prior_mode})", "whole-volume SSIM (planning)",
               "whole-volume SSIM (planning, before optimisation)", "max abs diff planning vs before (normalised)", "whole-volume SSIM sinc"]
    lever_headers = ["lever (on the main frame)", "s", "reference s (interleaved)", "speed vs reference",
                     "max abs diff (normalised)", "SSIM", "verdict", "note"]
    print()
    print_table(headers, headline_rows)
    print()
    print_table(lever_headers, levers["rows"])
    # bf16 (--precision auto on a CPU with bf16 instructions) moves the output by ~1e-3 of the scale
    tolerance = MATCH_TOL if model.compute_dtype() == "float32" else BF16_TOL
    quality_kept = m["before_diff"] <= tolerance and m["planning_ssim"] >= m["before_ssim"] - 1e-4
    frame = "x".join(map(str, main_shape))
    targets = [
        [f"<= 0.5 s per {frame} frame on {threads} threads, default prior mode ({prior_mode})",
         f"{m['stepwise_s']:.3f} s/frame", "met" if m["stepwise_s"] <= 0.5 else "missed"],
        [f"<= 0.5 s per {frame} frame on {threads} threads, planning prior", f"{m['planning_s']:.3f} s/frame",
         "met" if m["planning_s"] <= 0.5 else "missed"],
        ["no loss of quality against the model before optimisation (planning prior)",
         f"SSIM {m['planning_ssim']:.4f} vs {m['before_ssim']:.4f}, max abs diff {m['before_diff']:.1e}",
         "met" if quality_kept else "missed"],
        [">= 30x faster than the anchor replica", f"{m['anchor_s'] / m['stepwise_s']:.1f}x",
         "met" if m["anchor_s"] / m["stepwise_s"] >= 30 else "missed"],
        [">= 40 % of the conv3d ceiling", f"{100 * m['ours_gflop_s'] / ceiling['gflop_s']:.0f} %",
         "met" if m["ours_gflop_s"] / ceiling["gflop_s"] >= 0.4 else "missed"],
    ]
    print()
    print_table(["target", "measured", "status"], targets)
    by_layout = ", ".join(f"{k} {v:.1f}" for k, v in ceiling["by_layout"].items())
    body = "\n\n".join([
        f"Default model `{model.source}` ({n_params(net) / 1e6:.2f} M parameters, "
        f"{json.dumps(model.meta.get('arguments', {}))}); anchor replica {anchor_params / 1e6:.2f} M parameters "
        "(random weights: speed only). LR = central 6.25 % of in-plane k-space, prior on the HR grid; "
        f"s/frame = `reconstruct_frames()` (zero-fill + prior + normalise + network) with the default options "
        f"(prior mode `{prior_mode}`, which includes registering the planning scan to each frame) and with the "
        "planning scan as the prior, median of frames "
        f"1-{frames - 1} of a {frames}-frame phantom, two runs each, alternating with the path before optimisation "
        "(planning prior, contiguous memory layout, numpy zero-fill, float32 network); frame 0 prepares the prior. "
        f"The shipped path runs with `--precision auto`: here the network runs in {model.compute_dtype()} "
        "(bf16 where the CPU has bf16 instructions; its output may differ from float32 by up to "
        f"{BF16_TOL:g} of the scale). "
        f"Network and anchor times: median of {repeats} (anchor {anchor_repeats}) forward passes after a warm-up, "
        f"`torch.inference_mode`, {threads} threads. x faster = anchor forward / our step-wise frame "
        "(conservative: ours includes pre- and post-processing). FLOPs count Conv3d/ConvTranspose3d only "
        "(forward hooks). SSIM: mean over frames 1-5 against the ground truth.",
        f"Conv3d ceiling: 64->64 channels, 3x3x3, input {tuple(ceiling['shape'])}, the faster memory layout "
        f"({by_layout} GFLOP/s): {ceiling['seconds']:.3f} s, **{ceiling['gflop_s']:.1f} GFLOP/s** on {threads} threads.",
        markdown_table(headers, headline_rows),
        markdown_table(["target", "measured", "status"], targets),
        "### Levers\n\nEach lever changes one thing of the float32 network on the main frame "
        f"({'x'.join(map(str, main_shape))}, frame 1, prior = SR of frame 0) and is timed alternating with it; "
        "max abs diff is against the reference output (1.0 = the frame's 99.5th percentile); SSIM against the "
        f"ground-truth frame (reference path: {levers['ref_ssim']:.4f}). Verdict: win / loss = at least 10 % "
        f"faster / slower than the reference; an output that differs by more than {MATCH_TOL:g} does not match it. "
        f"`model.predict` (numpy in/out, normalisation{', the gated keyhole' if model.prior_input != 'prior' else ''}) "
        f"costs {levers['pred_s']:.3f} s against "
        f"{levers['net_s']:.3f} s for the bare network (interleaved).",
        markdown_table(lever_headers, levers["rows"]),
    ])
    path = write_section("speed", "Speed: per-frame latency, anchor replica, conv3d ceiling, levers", body)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
