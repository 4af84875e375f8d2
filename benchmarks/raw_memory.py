"""Peak resident memory of reading an ISMRMRD raw dynamic: 20 vs 200 frames must stay flat (streaming).

Two real subprocesses per series: the reader alone (``mrisr.io.load(..., lazy=True)`` and
:func:`mrisr.io.stream.iter_frames` over every frame) and ``mrisr reconstruct --method keyhole``
(the whole pipeline, no network). The raw files are written by ``tests/mrd_testdata.py``: a
64 x 64 x 16 phantom, 4 coils, 2x readout oversampling, 16 central phase-encode lines per frame.

Usage:
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/raw_memory.py
    MRISR_BENCH_QUICK=1 .venv/bin/python benchmarks/raw_memory.py     # 4 vs 40 frames
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import log, markdown_table, print_table, quick, write_section  # noqa: E402
from memory import mrisr_command, peak_rss  # noqa: E402

SHAPE = (64, 64, 16)
COILS = 4
LINES = 16

_WRITE = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from mrd_testdata import write_raw
from mrisr_testdata import head_phantom, oblique
frames = np.stack([head_phantom({shape}, seed=0, shift=(0.05 * t, 0, 0)) for t in range({n})], axis=-1)
write_raw({path!r}, frames, oblique((1.0, 1.0, 3.0)), coils={coils}, oversampling=2, lines={lines}, bulk=True)
"""

_READ = """
import sys
from mrisr.io import load
from mrisr.io.stream import iter_frames
volume = load(sys.argv[1], lazy=True)
total = sum(float(frame.sum()) for frame in iter_frames(volume))
print(volume.n_frames, volume.data.shape, total)
"""


def main() -> None:
    counts = (4, 40) if quick() else (20, 200)
    folder = Path(tempfile.mkdtemp(prefix="mrisr-bench-raw-"))
    rows = []
    try:
        from mrd_testdata import write_raw  # noqa: F401  (fails early without the raw extra)
        from mrisr_testdata import head_phantom, oblique

        from mrisr.io import save_like
        from mrisr.io.volume import Volume

        planning = folder / "planning.nii.gz"
        save_like(planning, head_phantom(SHAPE, seed=0), Volume(np.zeros(SHAPE, np.float32), oblique((1.0, 1.0, 3.0))))
        for n in counts:
            path = folder / f"raw{n}.h5"
            subprocess.run([sys.executable, "-c", _WRITE.format(tests=str(HERE.parent / "tests"), shape=SHAPE, n=n,
                                                                path=str(path), coils=COILS, lines=LINES)], check=True)
            size = path.stat().st_size / 1e6
            read_mb, read_s, _ = peak_rss([sys.executable, "-c", _READ, str(path)])
            out = folder / f"sr{n}.nii.gz"
            recon_mb, recon_s, _ = peak_rss([*mrisr_command(), "reconstruct", str(path), "--prior", str(planning),
                                             "--method", "keyhole", "-o", str(out), "--threads", "2", "-q"])
            log(f"{n} frames: file {size:.0f} MB, reader {read_mb:.0f} MB, reconstruct {recon_mb:.0f} MB")
            rows.append([f"{n}", f"{size:.0f}", f"{read_mb:.0f}", f"{read_s:.1f}", f"{recon_mb:.0f}", f"{recon_s:.1f}"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    header = ["frames", "raw file MB", "reader peak RSS MB", "reader s", "reconstruct (keyhole) peak RSS MB",
              "reconstruct s"]
    print_table(header, rows)
    body = (
        f"Raw dynamic {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} (2-D multi-slice), {COILS} coils, 2x readout oversampling, "
        f"{LINES} central lines per frame (LR {SHAPE[0]}x{LINES}x{SHAPE[2]}); peak RSS of the whole process "
        "(MB = 10^6 bytes).\n\n" + markdown_table(header, rows)
    )
    write_section("raw-memory", "Raw ISMRMRD dynamic: memory while streaming", body)


if __name__ == "__main__":
    main()
