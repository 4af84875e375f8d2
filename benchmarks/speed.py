"""Per-frame latency of step-wise reconstruction, against the anchor architecture and the machine's
conv3d ceiling, measured in one run; plus the speed levers (inference mode, memory format,
torch.compile, threads, tiling, bf16) with the largest output difference each one causes.

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
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    cpu_flags,
    log,
    markdown_table,
    print_table,
    quick,
    static_slab,
    time_call,
    write_section,
)

KEEP = 6.25
#: budget for torch.compile's first call (compilation) before we call it a failure
COMPILE_BUDGET_S = 60.0
#: hard limit of the compile child (it still reports the compiled speed when compilation overruns the budget)
COMPILE_TIMEOUT_S = 240.0
#: largest abs difference (normalised intensity) for an optimised path to count as matching the reference
MATCH_TOL = 1e-3
#: hard limit of the bf16 probe on its small input
BF16_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------- the anchor replica


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1), nn.ReLU(inplace=True),
    )


class AnchorUNet(nn.Module):
    """Replica of the anchors' network: plain 3-D UNet, depth 3, 64/128/256 channels.

    Two 3x3x3 conv + ReLU per level, average pooling, transposed-conv upsampling, skip
    concatenation, no normalisation, no global residual, 1x1x1 output conv. Input
    ``(B, 2, X, Y, Z)`` (LR frame on the HR grid + prior), output ``(B, 1, X, Y, Z)``; X, Y, Z
    must be multiples of 4. About 5.4 M parameters.
    """

    def __init__(self, in_channels: int = 2, out_channels: int = 1, channels: tuple[int, int, int] = (64, 128, 256)):
        super().__init__()
        c1, c2, c3 = channels
        self.enc1 = _double_conv(in_channels, c1)
        self.enc2 = _double_conv(c1, c2)
        self.bottom = _double_conv(c2, c3)
        self.pool = nn.AvgPool3d(2)
        self.up2 = nn.ConvTranspose3d(c3, c2, 2, stride=2)
        self.dec2 = _double_conv(2 * c2, c2)
        self.up1 = nn.ConvTranspose3d(c2, c1, 2, stride=2)
        self.dec1 = _double_conv(2 * c1, c1)
        self.out = nn.Conv3d(c1, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottom(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        del e2, b
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out(d1)


# --------------------------------------------------------------------------- FLOP counting


def conv_flops(net: nn.Module, call) -> int:
    """FLOPs (2 x multiply-adds) of every Conv3d / ConvTranspose3d in one forward pass ``call()``."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        kernel = math.prod(module.kernel_size)
        if isinstance(module, nn.ConvTranspose3d):
            x = inputs[0]
            positions = x.shape[0] * math.prod(x.shape[2:])
            total += 2 * module.in_channels * (module.out_channels // module.groups) * kernel * positions
        else:
            positions = output.shape[0] * math.prod(output.shape[2:])
            total += 2 * (module.in_channels // module.groups) * module.out_channels * kernel * positions

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    try:
        with torch.inference_mode():
            call()
    finally:
        for h in handles:
            h.remove()
    return total


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --------------------------------------------------------------------------- measurements


def conv_ceiling(shape: tuple[int, ...], repeats: int) -> dict:
    """GFLOP/s of one large-channel 3x3x3 conv (64 -> 64) on ``shape`` ``(B, C, X, Y, Z)``."""
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv3d(shape[1], 64, 3, padding=1)
    x = torch.randn(shape, generator=gen)
    flops = 2 * shape[1] * 64 * 27 * math.prod(shape[2:]) * shape[0]
    with torch.inference_mode():
        median, _ = time_call(lambda: conv(x), repeats=repeats, warmup=2)
    return {"shape": shape, "seconds": median, "gflops": flops / 1e9, "gflop_s": flops / 1e9 / median}


def make_case(shape: tuple[int, int, int], frames: int, seed: int = 0):
    """A dynamic phantom whose HR frames are ``shape`` (real anatomy, breathing, contrast)."""
    from mrisr.phantom import make_dynamic

    return make_dynamic(static_slab(shape), frames=frames, keep=KEEP, seed=seed)


def stepwise(model, phantom, threads: int) -> dict:
    """Step-wise reconstruction of the whole phantom; frame 0 (prior preparation, warm-up) untimed."""
    from mrisr.metrics import ssim
    from mrisr.reconstruct import ReconstructOptions
    from mrisr.reconstruct.stepwise import Reconstruction

    rec = Reconstruction(phantom.lr, phantom.planning, ReconstructOptions(device="cpu", threads=threads), model=model)
    seconds, ssims, srs = [], [], []
    for result in rec.frames():
        srs.append(result.sr)
        if result.index > 0:
            seconds.append(result.seconds)
            ssims.append(ssim(result.sr, phantom.hr.data[..., result.index]))
    return {"seconds": float(np.median(seconds)), "all_seconds": seconds, "ssim": float(np.mean(ssims)),
            "srs": srs, "grid": rec.grid}


def measure_size(model, anchor: nn.Module, shape: tuple[int, int, int], frames: int, threads: int, repeats: int,
                 anchor_repeats: int) -> dict:
    """Step-wise latency, network and anchor forward times and FLOPs on one HR frame size."""
    from mrisr.kspace.functional import zero_fill
    from mrisr.models import robust_scale

    net = model.network
    log(f"phantom {shape} ({frames} frames)")
    phantom = make_case(shape, frames)
    step = stepwise(model, phantom, threads)
    log(f"step-wise {shape}: {step['seconds']:.3f} s/frame (frames {[round(s, 3) for s in step['all_seconds']]})")
    sinc = zero_fill(phantom.lr.data[..., 1], step["grid"].hr_inplane).astype(np.float32)
    scale = robust_scale(sinc, model.percentile)
    x = torch.from_numpy(sinc / scale)[None, None].contiguous()
    p = torch.from_numpy(step["srs"][0] / scale)[None, None].contiguous()
    with torch.inference_mode():
        network_s, _ = time_call(lambda: net(x, p), repeats=repeats, warmup=1)
        reference = net(x, p)
    flops = conv_flops(net, lambda: net(x, p))
    log(f"network forward {shape}: {network_s:.3f} s, {flops / 1e9:.1f} GFLOP")
    both = torch.cat([x, p], dim=1)
    anchor_flops = conv_flops(anchor, lambda: anchor(both))  # doubles as the warm-up pass
    with torch.inference_mode():
        anchor_s, anchor_all = time_call(lambda: anchor(both), repeats=anchor_repeats, warmup=0)
    log(f"anchor replica {shape}: {anchor_s:.2f} s ({[round(a, 2) for a in anchor_all]}), {anchor_flops / 1e9:.0f} GFLOP")
    return {"stepwise_s": step["seconds"], "network_s": network_s, "anchor_s": anchor_s, "ours_gflop": flops / 1e9,
            "anchor_gflop": anchor_flops / 1e9, "ssim": step["ssim"], "sinc_ssim": sinc_ssim(phantom, step["grid"]),
            "x": x, "p": p, "scale": scale, "reference": reference, "target": phantom.hr.data[..., 1].copy(),
            "lr_frame": phantom.lr.data[..., 1].copy(), "hr_inplane": step["grid"].hr_inplane}


def channels_last_copy(net: nn.Module) -> nn.Module:
    """A channels-last-3-D copy of ``net`` whose UNet also receives channels-last input."""
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last_3d)
    net_cl.unet.register_forward_pre_hook(lambda _m, a: (a[0].contiguous(memory_format=torch.channels_last_3d),) + a[1:])
    return net_cl


def paired(reference, candidate, repeats: int) -> tuple[float, float]:
    """Median times of two callables measured alternately (one warm-up each), so that changes in
    machine load during the measurement affect both alike."""
    reference()
    candidate()
    ref_times, times = [], []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        reference()
        ref_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        candidate()
        times.append(time.perf_counter() - t0)
    return float(np.median(ref_times)), float(np.median(times))


def sinc_ssim(phantom, grid) -> float:
    from mrisr.kspace.functional import zero_fill
    from mrisr.metrics import ssim

    values = [ssim(zero_fill(phantom.lr.data[..., t], grid.hr_inplane), phantom.hr.data[..., t])
              for t in range(1, phantom.lr.data.shape[3])]
    return float(np.mean(values))


def _worker_compile(data_dir: Path, threads: int, repeats: int) -> None:
    """Child process: torch.compile the default model (plain and channels-last 3-D), time compilation
    (cold cache) and calls interleaved with the eager reference, save the outputs."""
    from mrisr.models import load

    torch.set_num_threads(threads)
    net = load("default").network.eval()
    x = torch.from_numpy(np.load(data_dir / "x.npy"))
    p = torch.from_numpy(np.load(data_dir / "p.npy"))
    info: dict = {"cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default")}

    def eager():
        with torch.inference_mode():
            return net(x, p)

    for key, base in (("plain", net), ("channels_last", channels_last_copy(net))):
        compiled = torch.compile(base)

        def call(compiled=compiled):
            with torch.inference_mode():
                return compiled(x, p)

        t0 = time.perf_counter()
        call()
        info[key] = {"compile_s": time.perf_counter() - t0}
        (data_dir / "compile.json").write_text(json.dumps(info))
        info[key]["eager_s"], info[key]["seconds"] = paired(eager, call, repeats)
        np.save(data_dir / f"compile_{key}.npy", call().contiguous().numpy())
        (data_dir / "compile.json").write_text(json.dumps(info))


def _worker_bf16(data_dir: Path, threads: int) -> None:
    """Child process: fp32 vs bf16 autocast of the default model on a small input."""
    from mrisr.models import load

    torch.set_num_threads(threads)
    net = load("default").network.eval()
    x = torch.from_numpy(np.load(data_dir / "x_small.npy"))
    p = torch.from_numpy(np.load(data_dir / "p_small.npy"))
    info: dict = {}
    with torch.inference_mode():
        info["fp32_s"], _ = time_call(lambda: net(x, p), repeats=3, warmup=1)
        ref = net(x, p)
        (data_dir / "bf16.json").write_text(json.dumps(info))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t0 = time.perf_counter()
            out = net(x, p)
            info["bf16_s"] = time.perf_counter() - t0
    info["max_abs_diff"] = float((out.float() - ref).abs().max())
    (data_dir / "bf16.json").write_text(json.dumps(info))


def run_child(kind: str, data_dir: Path, threads: int, timeout: float, extra: list[str] | None = None) -> tuple[str, float]:
    """Run this script as a worker; returns (status, wall seconds)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--data", str(data_dir),
           "--threads", str(threads)] + (extra or [])
    # a fresh inductor cache: compilation is timed cold, as on a user's first run
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(data_dir / "inductor-cache"))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s", time.perf_counter() - t0
    if proc.returncode != 0:
        last = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return f"failed: {last[-1][:200] if last else 'exit ' + str(proc.returncode)}", time.perf_counter() - t0
    return "ok", time.perf_counter() - t0


def fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target is 2 cores)")
    parser.add_argument("--worker", choices=("compile", "bf16"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (median)")
    args = parser.parse_args()
    if args.worker == "compile":
        return _worker_compile(args.data, args.threads, args.repeats or 3)
    if args.worker == "bf16":
        return _worker_bf16(args.data, args.threads)

    from mrisr.metrics import ssim
    from mrisr.models import load

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
    log(f"conv3d ceiling: {ceiling['gflop_s']:.1f} GFLOP/s (64->64 3x3x3 on {ceiling_shape})")

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
            "x".join(map(str, shape)), fmt(size["stepwise_s"]), fmt(size["network_s"]), fmt(size["anchor_s"], 2),
            f"{size['anchor_s'] / size['stepwise_s']:.1f}x", f"{size['ours_gflop']:.1f}", f"{ours_gfs:.1f}",
            f"{100 * ours_gfs / ceiling['gflop_s']:.0f} %", f"{size['anchor_gflop']:.0f}",
            f"{anchor_gfs:.1f}", fmt(size["ssim"]), fmt(size["sinc_ssim"]),
        ])
        size["ours_gflop_s"] = ours_gfs

    # ---------------------------------------------------------------- levers on the main size
    m = per_size[main_shape]
    x, p, scale, reference, ref_s, target_frame = (m[k] for k in ("x", "p", "scale", "reference", "network_s", "target"))
    ref_ssim = ssim(reference[0, 0].numpy() * scale, target_frame)
    lever_rows: list[list[str]] = []

    def speed_word(ratio: float) -> str:
        return "win" if ratio >= 1.1 else "loss" if ratio <= 0.9 else "no gain (within 10 %)"

    def judge(ratio: float, out: torch.Tensor) -> str:
        """win / loss / no gain against the reference, and whether the output still matches it."""
        word = speed_word(ratio)
        differs = float((out.float() - reference).abs().max()) > MATCH_TOL
        return word + ("; output differs from the reference" if differs else "")

    def add(name: str, seconds: float | None, ref_seconds: float | None, out: torch.Tensor | None,
            verdict: str | None = None, note: str = "") -> None:
        diff = "" if out is None else f"{float((out.float() - reference).abs().max()):.1e}"
        ratio = None if seconds is None else ref_seconds / seconds
        verdict = verdict if verdict is not None else judge(ratio, out)
        q = "" if out is None else fmt(ssim(np.asarray(out[0, 0].float().numpy()) * scale, target_frame))
        lever_rows.append([name, "" if seconds is None else fmt(seconds), "" if ref_seconds is None else fmt(ref_seconds),
                           "" if ratio is None else f"{ratio:.2f}x", diff, q, verdict, note])
        log(f"lever {name}: {lever_rows[-1][1:]}")

    def ref_call():
        with torch.inference_mode():
            return net(x, p)

    def lever(name: str, call, note: str = "", verdict: str | None = None) -> tuple[float, float]:
        """Time ``call`` interleaved with the reference (drift in machine load hits both alike)."""
        ref_med, med = paired(ref_call, call, repeats)
        out = call()
        out = out.detach().contiguous() if isinstance(out, torch.Tensor) else out
        add(name, med, ref_med, out, verdict, note)
        return med, ref_med

    add("reference: eager fp32, inference_mode, contiguous, whole frame, "
        f"{threads} threads", ref_s, ref_s, reference, "reference", "the path `mrisr reconstruct` runs")

    def no_grad_call():
        with torch.no_grad():
            return net(x, p)

    lever("torch.no_grad instead of inference_mode", no_grad_call)
    lever("autograd on (neither)", lambda: net(x, p), "what a forgotten inference_mode costs")

    net_cl = channels_last_copy(net)

    def cl_call():
        with torch.inference_mode():
            return net_cl(x, p)

    cl_model = copy.copy(model)
    cl_model.network = net_cl
    phantom = make_case(main_shape, frames)
    ref_step = stepwise(model, phantom, threads)["seconds"]
    cl_step = stepwise(cl_model, phantom, threads)["seconds"]
    del phantom
    lever("channels_last_3d (weights + UNet input)", cl_call,
          f"step-wise s/frame with it {cl_step:.3f}, without {ref_step:.3f} (measured back to back)")

    other = 1 if threads != 1 else 2

    def other_threads_call():
        torch.set_num_threads(other)
        try:
            with torch.inference_mode():
                return net(x, p)
        finally:
            torch.set_num_threads(threads)

    med, ref_med = lever(f"{other} thread(s) instead of {threads}", other_threads_call)
    lever_rows[-1][-1] = f"{threads} threads are {med / ref_med:.2f}x as fast as {other}" if other < threads else ""

    for tile, overlap in (((128, 128, 32), 0.25), ((128, 128, 32), 0.0), ((96, 96, 16), 0.25)):
        tile_use = tuple(min(t, n) for t, n in zip(tile, x.shape[2:])) if not is_quick else tuple(max(8, n // 2) for n in x.shape[2:])

        def tiled_call(tile_use=tile_use, overlap=overlap):
            model.tile, model.tile_overlap = tile_use, overlap
            try:
                with torch.inference_mode():
                    return model._run(x, p)
            finally:
                model.tile, model.tile_overlap = None, 0.25

        auto = overlap == 0.25 and tile_use[:2] == (128, 128)
        lever(f"sliding-window tiles {'x'.join(map(str, tile_use))}, overlap {overlap}, batch 2, gaussian", tiled_call,
              "what frames > 12 M voxels use (bounds memory)" if auto else
              "seams: overlap 0 changes the output" if overlap == 0 else "")

    with tempfile.TemporaryDirectory(prefix="mrisr-bench-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "x.npy", x.numpy())
        np.save(tmp / "p.npy", p.numpy())
        status, wall = run_child("compile", tmp, threads, timeout=COMPILE_TIMEOUT_S + 20 * ref_s * (repeats + 3),
                                 extra=["--repeats", str(repeats)])
        info = json.loads((tmp / "compile.json").read_text()) if (tmp / "compile.json").exists() else {}
        for key, name in (("plain", "torch.compile (inductor)"),
                          ("channels_last", "torch.compile (inductor) + channels_last_3d")):
            got = info.get(key, {})
            if "seconds" in got:
                out = torch.from_numpy(np.load(tmp / f"compile_{key}.npy"))
                in_budget = got["compile_s"] <= COMPILE_BUDGET_S
                verdict = judge(got["eager_s"] / got["seconds"], out) + (
                    "" if in_budget else f"; compilation > {COMPILE_BUDGET_S:.0f} s")
                add(name, got["seconds"], got["eager_s"], out, verdict,
                    f"first call (compilation, cold cache) {got['compile_s']:.0f} s, per process and input shape; "
                    "reference timed in the same child")
            elif "compile_s" in got:
                add(name, None, None, None, "failed", f"compiled in {got['compile_s']:.0f} s, then {status}")
            else:
                add(name, None, None, None, "failed", f"{status} (wall {wall:.0f} s)")

        # bf16: only worth anything with native bf16 (avx512_bf16 / amx); probe once, small input, timeout
        flags = cpu_flags()
        native = bool({"avx512_bf16", "amx_bf16"} & flags) or torch.ops.mkldnn._is_mkldnn_bf16_supported()
        small = tuple(min(n, m) for n, m in zip(x.shape[2:], (64, 64, 16)))
        np.save(tmp / "x_small.npy", x[..., : small[0], : small[1], : small[2]].contiguous().numpy())
        np.save(tmp / "p_small.npy", p[..., : small[0], : small[1], : small[2]].contiguous().numpy())
        status, wall = run_child("bf16", tmp, threads, timeout=BF16_TIMEOUT_S)
        info = json.loads((tmp / "bf16.json").read_text()) if (tmp / "bf16.json").exists() else {}
        why = "native bf16 reported" if native else "no native bf16 on this CPU (no avx512_bf16/amx_bf16; oneDNN bf16 unsupported)"
        size = "x".join(map(str, small))
        if status == "ok" and "bf16_s" in info:
            note = (f"{why}; on {size}: fp32 {info['fp32_s']:.3f} s, bf16 {info['bf16_s']:.2f} s "
                    f"({info['bf16_s'] / info['fp32_s']:.0f}x slower), max abs diff {info['max_abs_diff']:.1e}")
            verdict = "win" if info["bf16_s"] < info["fp32_s"] * 0.9 else "loss"
        else:
            fp32 = f"fp32 {info['fp32_s']:.3f} s, " if "fp32_s" in info else ""
            note = f"{why}; on {size}: {fp32}bf16 {status}"
            verdict = "loss (did not finish)"
        add("bf16 autocast (probe on a small input)", None, None, None, verdict, note)

    import importlib.util

    missing = [name for name in ("onnxruntime", "openvino") if importlib.util.find_spec(name) is None]
    if missing:
        add("ONNX Runtime / OpenVINO backend", None, None, None, "not measured",
            f"{' and '.join(missing)} not installed (no new dependency for an unproven gain)")

    # ---------------------------------------------------------------- per-frame pre-processing
    from mrisr.kspace.functional import zero_fill

    lr_frame, hr_inplane = m["lr_frame"], m["hr_inplane"]

    def zf_numpy():
        return zero_fill(lr_frame, hr_inplane)

    def zf_torch():
        return zero_fill(torch.from_numpy(lr_frame), hr_inplane).numpy()

    zf_ref, zf_s = paired(zf_numpy, zf_torch, repeats)
    zf_diff = float(np.abs(zf_numpy() - zf_torch()).max()) / scale
    add("zero-fill of the LR frame to the HR grid with torch.fft (complex64) instead of numpy", zf_s, zf_ref, None,
        speed_word(zf_ref / zf_s) + ("" if zf_diff <= MATCH_TOL else "; output differs"),
        f"pre-processing, not the network: reference = numpy zero-fill; max abs diff {zf_diff:.1e}")

    # ---------------------------------------------------------------- predict overhead
    sinc_np = (x[0, 0].numpy() * scale).astype(np.float32)
    prior_np = (p[0, 0].numpy() * scale).astype(np.float32)
    net_s, pred_s = paired(ref_call, lambda: model.predict(sinc_np, prior_np), repeats)

    # ---------------------------------------------------------------- report
    from mrisr.reconstruct import ReconstructOptions

    prior_mode = ReconstructOptions().prior_mode
    headers = ["HR frame (X x Y x Z)", "step-wise s/frame", "network s", "anchor s", "x faster than anchor",
               "our GFLOP", "our GFLOP/s", "% of conv ceiling", "anchor GFLOP", "anchor GFLOP/s",
               f"SSIM (prior mode {prior_mode})", "SSIM sinc"]
    lever_headers = ["lever (on the main frame)", "s", "reference s (interleaved)", "speed vs reference", "max abs diff (normalised)",
                     "SSIM", "verdict", "note"]
    print()
    print_table(headers, headline_rows)
    print()
    print_table(lever_headers, lever_rows)
    targets = [
        [f"<= 0.5 s per {'x'.join(map(str, main_shape))} frame on {threads} threads", f"{m['stepwise_s']:.3f} s/frame",
         "met" if m["stepwise_s"] <= 0.5 else "missed"],
        [">= 30x faster than the anchor replica", f"{m['anchor_s'] / m['stepwise_s']:.1f}x",
         "met" if m["anchor_s"] / m["stepwise_s"] >= 30 else "missed"],
        [">= 40 % of the conv3d ceiling", f"{100 * m['ours_gflop_s'] / ceiling['gflop_s']:.0f} %",
         "met" if m["ours_gflop_s"] / ceiling["gflop_s"] >= 0.4 else "missed"],
    ]
    print()
    print_table(["target", "measured", "status"], targets)
    body = "\n\n".join([
        f"Default model `{model.source}` ({n_params(net) / 1e6:.2f} M parameters, "
        f"{json.dumps(model.meta.get('arguments', {}))}); anchor replica {anchor_params / 1e6:.2f} M parameters "
        "(random weights: speed only). LR = central 6.25 % of in-plane k-space, prior on the HR grid; "
        f"step-wise = `Reconstruction.frames()` with the default options (prior mode `{prior_mode}`; zero-fill + "
        f"normalise + network), median of frames 1-{frames - 1} "
        f"of a {frames}-frame phantom (frame 0 prepares the prior); network and anchor times: median of "
        f"{repeats} (anchor {anchor_repeats}) forward passes after a warm-up, `torch.inference_mode`, "
        f"{threads} threads. x faster = anchor forward / our step-wise frame (conservative: ours includes "
        "pre- and post-processing). FLOPs count Conv3d/ConvTranspose3d only (forward hooks).",
        f"Conv3d ceiling: 64->64 channels, 3x3x3, input {tuple(ceiling['shape'])}: "
        f"{ceiling['seconds']:.3f} s, **{ceiling['gflop_s']:.1f} GFLOP/s** on {threads} threads.",
        markdown_table(headers, headline_rows),
        markdown_table(["target", "measured", "status"], targets),
        "### Levers\n\nEach lever changes one thing of the reference path on the main frame "
        f"({'x'.join(map(str, main_shape))}, frame 1, prior = SR of frame 0); max abs diff is against the "
        f"reference output (1.0 = the frame's 99.5th percentile); SSIM against the ground-truth frame "
        f"(reference path: {ref_ssim:.4f}). Verdict: win / loss = at least 10 % faster / slower than the "
        f"reference; an output that differs by more than {MATCH_TOL:g} does not match it. `model.predict` (numpy in/out, normalisation) costs "
        f"{pred_s:.3f} s against {net_s:.3f} s for the bare network (interleaved).",
        markdown_table(lever_headers, lever_rows),
    ])
    path = write_section("speed", "Speed: per-frame latency, anchor replica, conv3d ceiling, levers", body)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
