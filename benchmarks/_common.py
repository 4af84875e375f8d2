"""Helpers shared by the benchmark scripts: timing, tables, test volumes and RESULTS.md sections.

Every script writes one section of ``benchmarks/RESULTS.md`` (replacing its previous section, so
re-running a script updates only its own rows), headed by the date, the machine's core count,
torch's thread count and version, and the exact command that produced it.

Set ``MRISR_BENCH_QUICK=1`` to shrink every benchmark to seconds (for checking the scripts
themselves); quick results go to a scratch file instead of RESULTS.md unless
``MRISR_BENCH_RESULTS`` names a file.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
RESULTS_TITLE = "# mrisr benchmark results\n\nWritten by `make bench` (`benchmarks/run_all.py`); each script replaces its own section.\n"
#: environment variables worth quoting in "the exact command"
COMMAND_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MRISR_BENCH_QUICK", "MRISR_BENCH_RESULTS")


def _cpu_busy_seconds() -> float | None:
    """Busy CPU time of the whole machine (all processes, all cores) from /proc/stat, in seconds."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


_START = (time.time(), _cpu_busy_seconds(), _own_cpu_seconds())


def other_load() -> str:
    """How much CPU other processes took since this process started (timings are noisy if it is high).

    Machine-wide busy time (/proc/stat) minus this process's and its waited-for children's CPU
    time, as a percentage of the machine's capacity over the wall time, plus the load average.
    """
    wall = time.time() - _START[0]
    busy = _cpu_busy_seconds()
    if busy is None or _START[1] is None or wall <= 0:
        return "unknown (no /proc/stat)"
    other = max(0.0, (busy - _START[1]) - (_own_cpu_seconds() - _START[2]))
    share = 100.0 * other / (wall * (os.cpu_count() or 1))
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    verdict = "quiet" if share < 5 else "BUSY: timings are inflated" if share >= 15 else "some contention"
    return f"{share:.0f} % of the CPUs used by other processes during this run ({verdict}); load average {load}"


def quick() -> bool:
    """True when ``MRISR_BENCH_QUICK=1``: every benchmark runs at toy sizes."""
    return os.environ.get("MRISR_BENCH_QUICK", "") not in ("", "0")


def results_path() -> Path:
    """``MRISR_BENCH_RESULTS``, else RESULTS.md (full runs) or a scratch file (quick runs)."""
    if os.environ.get("MRISR_BENCH_RESULTS"):
        return Path(os.environ["MRISR_BENCH_RESULTS"])
    if quick():
        return Path(tempfile.gettempdir()) / "mrisr-bench-RESULTS-quick.md"
    return RESULTS


def command_line() -> str:
    """The command that is running, as one could paste it (relevant environment variables first)."""
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in COMMAND_ENV if k in os.environ]
    exe = Path(sys.executable)
    try:
        exe_text = os.path.relpath(exe, REPO_ROOT) if not os.path.relpath(exe, REPO_ROOT).startswith("..") else str(exe)
    except ValueError:
        exe_text = str(exe)
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO_ROOT))
    except ValueError:
        script_text = str(script)
    return " ".join(env + [shlex.quote(exe_text), shlex.quote(script_text)] + [shlex.quote(a) for a in sys.argv[1:]])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty where unavailable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_line() -> str:
    """One line: date, cores, torch threads and version, CPU."""
    import torch

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    flags = cpu_flags()
    simd = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "none listed"
    return (
        f"{now}; os.cpu_count() = {os.cpu_count()}; torch threads = {torch.get_num_threads()}; "
        f"torch {torch.__version__}; CPU: {cpu_model()} ({simd}); Python {platform.python_version()}"
    )


def write_section(key: str, title: str, body: str, path: Path | None = None, command: str | None = None) -> Path:
    """Replace (or append) the section ``key`` of RESULTS.md.

    Args:
        key: section id (``speed``, ``memory``, ...), used in HTML comment markers.
        title: the section's heading text.
        body: markdown below the header lines (tables, notes).
        path: file to write (default :func:`results_path`).
        command: the command to quote (default: this process's own command line, see :func:`command_line`).

    Returns:
        The file written.
    """
    path = Path(path) if path is not None else results_path()
    start, end = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
    section = (
        f"{start}\n## {title}\n\n"
        f"- machine: {machine_line()}\n"
        f"- command: `{command or command_line()}`\n"
        f"- other load: {other_load()}\n"
        + ("- **quick mode** (toy sizes; not a measurement)\n" if quick() else "")
        + f"\n{body.rstrip()}\n{end}\n"
    )
    text = path.read_text() if path.exists() else RESULTS_TITLE
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table (cells are str()-ed; floats should be pre-formatted)."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """The same table aligned for a terminal."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time (s) of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- test volumes


def static_slab(shape: tuple[int, int, int], slice_mm: float = 3.0):
    """A real T1 slab (the bundled Colin27 sample) resampled to ``shape`` ``(X, Y, Z)``.

    The field of view of the sample (192 x 216 mm in-plane) is kept in-plane; slices keep
    ``slice_mm``. Content is real anatomy, which is all the speed and memory benchmarks need.

    Returns:
        A 3-D :class:`mrisr.io.Volume`, float32, axis-aligned RAS affine.
    """
    from scipy import ndimage

    from mrisr.data import load_sample
    from mrisr.io import Volume

    sample = load_sample()
    data = np.asarray(sample.data, dtype=np.float32)
    factors = [n / s for n, s in zip(shape, data.shape)]
    out = ndimage.zoom(data, factors, order=1, prefilter=False, grid_mode=True, mode="nearest")
    out = np.ascontiguousarray(np.maximum(out[: shape[0], : shape[1], : shape[2]], 0), dtype=np.float32)
    fov = np.array(sample.zooms[:2]) * np.array(data.shape[:2])
    zooms = (fov[0] / shape[0], fov[1] / shape[1], slice_mm)
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = -0.5 * np.array(zooms) * (np.array(shape) - 1)
    return Volume(data=out, affine=affine)


def repeat_frames(lr: np.ndarray, frames: int) -> np.ndarray:
    """``(X, Y, Z, T)`` -> ``(X, Y, Z, frames)`` by playing the series forward and backward.

    Cheap way to make a long series from a short phantom with continuous motion (no jump
    from the last frame back to the first).
    """
    t = lr.shape[3]
    cycle = list(range(t)) + list(range(t - 2, 0, -1)) if t > 2 else list(range(t))
    order = [cycle[i % len(cycle)] for i in range(frames)]
    return np.ascontiguousarray(lr[..., order])
