"""Inline latency of `mrisr serve`: from a frame's last message received to its last SR image sent.

A phantom dynamic (the bundled T1 slab, :func:`mrisr.phantom.make_dynamic`, 6.25 % of k-space) is
streamed to a server running in this process by the example client
(``scripts/serve_client_example.py``) in a subprocess, as 2-D slices, one frame per frame time
(``--pace``): the planning series first, then the dynamic, as on a scanner. The server records,
per frame, the seconds from the frame's last message received to its last image sent
(:attr:`mrisr.serve.SessionResult.latencies`); the client records its own view (last slice sent
to last SR slice received). Frame 0 also prepares the series (grid, prior, tracker) and is
reported alone; median and 95th percentile are over frames 1..N-1, against the frame time.

Sizes: a 256 x 256 x 32 frame (the issue's 3-D target) and 2-D multi-slice interventional sizes.
The frame time of a size is its LR phase-encode lines x slices x ``--line-tr-ms`` (a spoiled
gradient echo), unless ``--frame-seconds`` names one.

    python benchmarks/serve_latency.py                 # 50 frames per size, writes RESULTS.md
    python benchmarks/serve_latency.py --quick         # toy sizes, seconds; not a measurement

Run it on an otherwise idle machine: the figures are wall-clock times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, log, markdown_table, print_table, quick, static_slab, write_section  # noqa: E402

#: (name, HR shape (X, Y, Z)) of the full run
SIZES = (("3-D slab", (256, 256, 32)), ("2-D multi-slice (3 slices)", (192, 192, 3)),
         ("2-D, 2 slices", (256, 256, 2)))  # the phantom needs 2 voxels on every axis
QUICK_SIZES = (("3-D slab (quick)", (64, 64, 8)), ("2-D multi-slice (quick)", (48, 48, 3)))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def measure(name: str, shape: tuple[int, int, int], frames: int, keep: float, line_tr_ms: float,
            frame_seconds: float | None, model: str, threads: int, folder: Path) -> dict:
    import torch

    from mrisr.io import load
    from mrisr.phantom import make_dynamic
    from mrisr.serve import MrdServer, StreamLimits

    torch.set_num_threads(threads)
    static = static_slab(shape, slice_mm=3.0 if shape[2] > 1 else 5.0)
    files = make_dynamic(static, frames=frames, keep=keep, seed=0, tr=1.0).save(folder / name.split()[0])
    lr = load(files["lr"])
    lines, slices = lr.spatial_shape[1], lr.spatial_shape[2]
    tr = frame_seconds or lines * slices * line_tr_ms / 1000.0
    server = MrdServer("127.0.0.1", 0, {"model": model, "device": "cpu", "threads": threads},
                       StreamLimits(idle_seconds=max(120.0, 4 * tr)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    timings = folder / f"{name.split()[0]}-client.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    try:
        log(f"{name}: HR {'x'.join(map(str, shape))}, LR {'x'.join(map(str, lr.spatial_shape))}, {frames} frames "
            f"every {tr:.3f} s")
        done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "serve_client_example.py"),
                               str(files["planning"]), str(files["lr"]), "-p", str(server.address[1]),
                               "--pace", f"{tr:.6f}", "--timings", str(timings)],
                              env=env, capture_output=True, text=True, timeout=frames * tr + 3600)
        if done.returncode != 0:
            raise RuntimeError(f"client failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    finally:
        server.stop()
        thread.join(30)
    result = server.results[-1]
    if result.error or len(result.latencies) != frames:
        raise RuntimeError(f"{name}: server session {result.error or f'{len(result.latencies)} of {frames} frames'}")
    client = json.loads(timings.read_text())
    client_latency = [r - s for s, r in zip(client["sent"], client["received"])]
    later = result.latencies[1:]
    return {"name": name, "hr": shape, "lr": lr.spatial_shape, "tr": tr, "first": result.latencies[0],
            "median": statistics.median(later) if later else float("nan"), "p95": percentile(later, 95),
            "max": max(later) if later else float("nan"),
            "client_median": statistics.median(client_latency[1:]) if len(client_latency) > 1 else float("nan"),
            "client_p95": percentile(client_latency[1:], 95)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes and 5 frames (checks the script; not a measurement)")
    parser.add_argument("--frames", type=int, default=None, help="frames per size (default 50; quick 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads of the server (the target is 2 cores)")
    parser.add_argument("--model", default="default", help="model the server uses")
    parser.add_argument("--keep", type=float, default=6.25, help="percentage of k-space the dynamic acquires")
    parser.add_argument("--line-tr-ms", type=float, default=3.0, help="time per phase-encode line (frame time = lines x slices x this)")
    parser.add_argument("--frame-seconds", type=float, default=None, help="frame time of every size instead")
    args = parser.parse_args()
    if args.quick:
        os.environ["MRISR_BENCH_QUICK"] = "1"
    is_quick = quick()
    frames = args.frames or (5 if is_quick else 50)
    sizes = QUICK_SIZES if is_quick else SIZES
    rows = []
    with tempfile.TemporaryDirectory(prefix="mrisr-serve-latency-") as tmp:
        for name, shape in sizes:
            m = measure(name, shape, frames, args.keep, args.line_tr_ms, args.frame_seconds, args.model,
                        args.threads, Path(tmp))
            rows.append([m["name"], "x".join(map(str, m["hr"])), "x".join(map(str, m["lr"])), f"{m['tr']:.3f}",
                         f"{m['first']:.3f}", f"{m['median']:.3f}", f"{m['p95']:.3f}", f"{m['max']:.3f}",
                         f"{m['median'] / m['tr']:.2f}", f"{m['p95'] / m['tr']:.2f}",
                         f"{m['client_median']:.3f}", f"{m['client_p95']:.3f}"])
    headers = ["size", "HR frame", "LR frame (sent)", "frame time s", "frame 0 s (prepares the series)",
               "median s", "p95 s", "max s", "median / frame time", "p95 / frame time",
               "client-side median s", "client-side p95 s"]
    print()
    print_table(headers, rows)
    body = (f"{frames} frames per size, model `{args.model}`, server on {args.threads} torch threads, client in its own "
            "process pacing one frame per frame time. Server-side latency: a frame's last message received to its "
            "last SR image sent; medians and p95 over frames 1..N-1.\n\n" + markdown_table(headers, rows))
    path = write_section("serve-latency", "Inline latency (`mrisr serve`)", body)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
