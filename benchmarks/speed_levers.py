"""The speed levers of ``benchmarks/speed.py``: each changes one thing of the shipped path on the
main frame and is timed interleaved with it (so a change in machine load hits both alike), with
the largest output difference it causes and the SSIM it reaches.

torch.compile and bf16 run in child processes (a cold compile cache; a bf16 probe that can be
killed): ``python benchmarks/speed_levers.py --worker compile|bf16 --data DIR``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
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
from _common import cpu_flags, log, time_call  # noqa: E402

#: budget for torch.compile's first call (compilation) before we call it a failure
COMPILE_BUDGET_S = 60.0
#: hard limit of the compile child (it still reports the compiled speed when compilation overruns the budget)
COMPILE_TIMEOUT_S = 240.0
#: largest abs difference (normalised intensity) for an optimised path to count as matching the reference
MATCH_TOL = 1e-3
#: hard limit of the bf16 probe on its small input
BF16_TIMEOUT_S = 60.0


def with_layout(net: nn.Module, memory_format: torch.memory_format) -> nn.Module:
    """A copy of ``net`` whose weights and UNet input use ``memory_format``."""
    return copy.deepcopy(net).set_memory_format(memory_format)


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


def fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


# --------------------------------------------------------------------------- child processes


def _worker_compile(data_dir: Path, threads: int, repeats: int) -> None:
    """Child process: torch.compile the default model in both memory layouts, time compilation
    (cold cache) and calls interleaved with the shipped eager path, save the outputs."""
    from mrisr.models import load

    torch.set_num_threads(threads)
    net = load("default").network.eval()
    x = torch.from_numpy(np.load(data_dir / "x.npy"))
    p = torch.from_numpy(np.load(data_dir / "p.npy"))
    info: dict = {"cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default")}

    def eager():
        with torch.inference_mode():
            return net(x, p)

    for key, fmt_ in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last_3d)):
        compiled = torch.compile(with_layout(net, fmt_))

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


# --------------------------------------------------------------------------- the levers


def measure_levers(model, m: dict, threads: int, repeats: int, is_quick: bool) -> dict:
    """All levers on the main frame ``m`` (from ``speed.measure_size``); returns the table rows,
    the reference SSIM and the cost of ``model.predict`` against the bare network."""
    from mrisr.metrics import ssim

    net = model.network
    x, p, scale, reference, ref_s, target_frame = (m[k] for k in ("x", "p", "scale", "reference", "network_s", "target"))
    ref_ssim = ssim(reference[0, 0].numpy() * scale, target_frame)
    rows: list[list[str]] = []

    def speed_word(ratio: float) -> str:
        return "win" if ratio >= 1.1 else "loss" if ratio <= 0.9 else "no gain (within 10 %)"

    def judge(ratio: float, out: torch.Tensor) -> str:
        """win / loss / no gain against the reference, and whether the output still matches it."""
        differs = float((out.float() - reference).abs().max()) > MATCH_TOL
        return speed_word(ratio) + ("; output differs from the reference" if differs else "")

    def add(name: str, seconds: float | None, ref_seconds: float | None, out: torch.Tensor | None,
            verdict: str | None = None, note: str = "") -> None:
        diff = "" if out is None else f"{float((out.float() - reference).abs().max()):.1e}"
        ratio = None if seconds is None else ref_seconds / seconds
        verdict = verdict if verdict is not None else judge(ratio, out)
        q = "" if out is None else fmt(ssim(np.asarray(out[0, 0].float().numpy()) * scale, target_frame))
        rows.append([name, "" if seconds is None else fmt(seconds), "" if ref_seconds is None else fmt(ref_seconds),
                     "" if ratio is None else f"{ratio:.2f}x", diff, q, verdict, note])
        log(f"lever {name}: {rows[-1][1:]}")

    def ref_call():
        with torch.inference_mode():
            return net(x, p)

    def lever(name: str, call, note: str = "", verdict: str | None = None) -> tuple[float, float]:
        ref_med, med = paired(ref_call, call, repeats)
        out = call()
        out = out.detach().contiguous() if isinstance(out, torch.Tensor) else out
        add(name, med, ref_med, out, verdict, note)
        return med, ref_med

    layout = "channels_last_3d" if net.memory_format == torch.channels_last_3d else "contiguous"
    add(f"reference: eager fp32, inference_mode, {layout}, whole frame, {threads} threads", ref_s, ref_s, reference,
        "reference", "`mrisr reconstruct --precision fp32`; `--precision auto` runs the bf16 row where the CPU has "
        "bf16 instructions")

    def no_grad_call():
        with torch.no_grad():
            return net(x, p)

    lever("torch.no_grad instead of inference_mode", no_grad_call)
    lever("autograd on (neither)", lambda: net(x, p), "what a forgotten inference_mode costs")

    other_fmt = torch.contiguous_format if layout == "channels_last_3d" else torch.channels_last_3d
    net_other = with_layout(net, other_fmt)

    def other_layout_call():
        with torch.inference_mode():
            return net_other(x, p)

    lever("contiguous memory layout (before optimisation)" if layout == "channels_last_3d" else
          "channels_last_3d memory layout", other_layout_call, "weights + UNet input")

    other = 1 if threads != 1 else 2

    def other_threads_call():
        torch.set_num_threads(other)
        try:
            with torch.inference_mode():
                return net(x, p)
        finally:
            torch.set_num_threads(threads)

    med, ref_med = lever(f"{other} thread(s) instead of {threads}", other_threads_call)
    rows[-1][-1] = f"{threads} threads are {med / ref_med:.2f}x as fast as {other}" if other < threads else ""

    for tile, overlap in (((128, 128, 32), 0.25), ((128, 128, 32), 0.0), ((96, 96, 16), 0.25)):
        tile_use = tuple(min(t, n) for t, n in zip(tile, x.shape[2:])) if not is_quick else tuple(max(8, n // 2) for n in x.shape[2:])

        def tiled_call(tile_use=tile_use, overlap=overlap):
            model.tile, model.tile_overlap = tile_use, overlap
            try:
                with torch.inference_mode():
                    return model._run(x, p, "fp32")  # one change: tiles, not the precision
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
        for key, name in (("contiguous", "torch.compile (inductor), contiguous layout"),
                          ("channels_last", "torch.compile (inductor), channels_last_3d layout")):
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
        from mrisr.models.predictor import native_bf16_cpu

        if native_bf16_cpu():
            def bf16_call():
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    return net(x, p).float()

            lever("bf16 autocast, whole frame (what --precision auto runs on this CPU)", bf16_call,
                  "native bf16 on this CPU: the shipped path; only the correction is in bf16, the gated keyhole is "
                  "added in fp32")
        else:
            _bf16_row(x, p, tmp, threads, add)

    missing = [name for name in ("onnxruntime", "openvino") if importlib.util.find_spec(name) is None]
    if missing:
        add("ONNX Runtime / OpenVINO backend", None, None, None, "not measured",
            f"{' and '.join(missing)} not installed (no new dependency for an unproven gain)")

    from mrisr.reconstruct.grid import frame_to_grid

    lr_frame, hr_inplane = m["lr_frame"], m["hr_inplane"]
    zf_ref, zf_s = paired(lambda: frame_to_grid(lr_frame, hr_inplane, "numpy"),
                          lambda: frame_to_grid(lr_frame, hr_inplane, "torch"), repeats)
    zf_diff = float(np.abs(frame_to_grid(lr_frame, hr_inplane, "numpy") - frame_to_grid(lr_frame, hr_inplane)).max()) / scale
    add("zero-fill of the LR frame to the HR grid: torch.fft (complex64, shipped) against numpy", zf_s, zf_ref, None,
        speed_word(zf_ref / zf_s) + ("" if zf_diff <= MATCH_TOL else "; output differs"),
        f"pre-processing, not the network: reference = numpy zero-fill (before optimisation); max abs diff {zf_diff:.1e}")

    sinc_np = (x[0, 0].numpy() * scale).astype(np.float32)
    prior_np = (p[0, 0].numpy() * scale).astype(np.float32)
    net_s, pred_s = paired(ref_call, lambda: model.predict(sinc_np, prior_np, precision="fp32"),
                           repeats)
    return {"rows": rows, "ref_ssim": ref_ssim, "net_s": net_s, "pred_s": pred_s}


def _bf16_row(x: torch.Tensor, p: torch.Tensor, tmp: Path, threads: int, add) -> None:
    """Without native bf16 (avx512_bf16 / amx), bf16 is emulated and slow: probe once, small input, timeout."""
    flags = cpu_flags()
    native = bool({"avx512_bf16", "amx_bf16"} & flags) or torch.ops.mkldnn._is_mkldnn_bf16_supported()
    small = tuple(min(n, m) for n, m in zip(x.shape[2:], (64, 64, 16)))
    sl = (slice(None), slice(None)) + tuple(slice(0, s) for s in small)
    np.save(tmp / "x_small.npy", x[sl].contiguous().numpy())
    np.save(tmp / "p_small.npy", p[sl].contiguous().numpy())
    status, _ = run_child("bf16", tmp, threads, timeout=BF16_TIMEOUT_S)
    info = json.loads((tmp / "bf16.json").read_text()) if (tmp / "bf16.json").exists() else {}
    why = "native bf16 on this CPU" if native else (
        "no native bf16 on this CPU (no avx512_bf16/amx_bf16; oneDNN bf16 unsupported)")
    size = "x".join(map(str, small))
    if "bf16_s" in info:
        ratio = info["bf16_s"] / info["fp32_s"]
        note = (f"{why}; on {size}: fp32 {info['fp32_s']:.3f} s, bf16 {info['bf16_s']:.2f} s "
                f"({ratio:.0f}x {'slower' if ratio > 1 else 'faster'}), max abs diff {info['max_abs_diff']:.1e}")
        verdict = "win" if info["bf16_s"] < info["fp32_s"] * 0.9 else "loss"
    else:
        fp32 = f"fp32 {info['fp32_s']:.3f} s, " if "fp32_s" in info else ""
        note = f"{why}; on {size}: {fp32}bf16 {status}"
        verdict = "loss (did not finish)"
    add("bf16 autocast (probe on a small input)", None, None, None, verdict, note)


def main() -> None:
    parser = argparse.ArgumentParser(description="worker processes of benchmarks/speed.py")
    parser.add_argument("--worker", choices=("compile", "bf16"), required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.worker == "compile":
        _worker_compile(args.data, args.threads, args.repeats)
    else:
        _worker_bf16(args.data, args.threads)


if __name__ == "__main__":
    main()
