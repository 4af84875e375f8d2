"""Run every benchmark (what `make bench` calls) and record how long each took.

Usage:
    .venv/bin/python benchmarks/run_all.py                    # speed, memory, finetune, quality, fidelity
    .venv/bin/python benchmarks/run_all.py --only speed       # a subset
    MRISR_BENCH_QUICK=1 .venv/bin/python benchmarks/run_all.py  # toy sizes: checks the scripts in ~10 min

Each script runs in its own process (``OMP_NUM_THREADS=2`` unless set) and writes its own section
of ``benchmarks/RESULTS.md``; this runner adds a section with the wall time of each script. The
whole run must stay under 45 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, REPO_ROOT, log, markdown_table, print_table, quick, write_section  # noqa: E402

SCRIPTS = ("speed", "memory", "finetune", "quality", "fidelity")
BUDGET_S = 45 * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these benchmarks")
    parser.add_argument("--skip", nargs="+", choices=SCRIPTS, default=[], help="skip these benchmarks")
    args = parser.parse_args()
    wanted = [name for name in (args.only or SCRIPTS) if name not in args.skip]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    rows, failed = [], []
    t_all = time.perf_counter()
    for name in wanted:
        script = BENCH_DIR / f"{name}.py"
        if not script.exists():
            log(f"{name}: {script.relative_to(REPO_ROOT)} not present, skipped")
            rows.append([name, "skipped (script not present)", "-"])
            continue
        log(f"running {script.relative_to(REPO_ROOT)}")
        t0 = time.perf_counter()
        extra = ["--quick"] if quick() and name == "quality" else []  # quality.py takes a flag, not the variable
        rc = subprocess.call([sys.executable, str(script), *extra], env=env, cwd=REPO_ROOT)
        wall = time.perf_counter() - t0
        status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        if rc != 0:
            failed.append(name)
        rows.append([name, status, f"{wall / 60:.1f}"])
        log(f"{name}: {status} in {wall / 60:.1f} min")
    total = time.perf_counter() - t_all
    rows.append(["total", "ok" if not failed else f"{len(failed)} failed", f"{total / 60:.1f}"])
    headers = ["benchmark", "status", "wall (min)"]
    print()
    print_table(headers, rows)
    within = total <= BUDGET_S
    body = "\n\n".join([
        markdown_table(headers, rows),
        f"Budget: the whole `make bench` under {BUDGET_S // 60} min on 2 cores: "
        f"{'met' if within else 'missed'} ({total / 60:.1f} min){' (quick mode)' if quick() else ''}.",
    ])
    write_section("run_all", "Run summary (`make bench`)", body)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
