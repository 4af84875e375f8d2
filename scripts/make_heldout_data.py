"""Derive ``mrisr/data/heldout_brain1.nii.gz``: a real single-subject clinical T1 scan, held out.

Every bundled model is trained on templates (Colin27, INIA19) and validated on MNI152; all of
them are averages of many scans, smooth and noise-free, and they flatter every method. This file
is one real acquisition with its own noise and texture (a post-contrast T1-weighted axial brain
scan with a tumour, the ``brain1`` test case of pyradiomics), never used for training or tuning:
the fidelity benchmark scores every method on it.

Source: ``data/brain1_image.nrrd`` from the PyPI sdist ``pyradiomics-bhklab==3.1.4`` (byte-identical
to pyradiomics 3.1.0's copy; BSD-3-Clause, Copyright 2017 Harvard Medical School), 256x256x25 at
0.78x0.78x6.5 mm, int16. Fetched once by this script from PyPI: with ``pip download`` or, where
that fails (pip 23 could not generate this sdist's metadata on 2026-12-07), straight from PyPI's
simple index; either way the archive's sha256 is checked.

Derivation: the in-plane k-space centre 128x128 (1.5625 mm voxels, what a scanner acquiring that
matrix over the same field of view would reconstruct; noise stays real, just band-limited), the
central 20 slices (6.5 mm), magnitude, int16 (slope 1). About 0.4 MB.

Run: ``python scripts/make_heldout_data.py`` (optionally ``--source brain1_image.nrrd``).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "mrisr" / "data" / "heldout_brain1.nii.gz"
SDIST = "pyradiomics-bhklab==3.1.4"
MEMBER = "pyradiomics_bhklab-3.1.4/data/brain1_image.nrrd"
SOURCE_SHA256_PREFIX = "fffdb111"
SDIST_FILE = "pyradiomics_bhklab-3.1.4.tar.gz"
SDIST_SHA256 = "a44a087efc4ede91b5dfa5cf0de58ea3596bfaec1ef2484f278504b0a8fd5ffb"
INDEX = "https://pypi.org/simple/pyradiomics-bhklab/"
INPLANE = (128, 128)
SLICES = 20


def _download_from_index(folder: Path) -> Path:
    """The sdist from PyPI's simple index (the link on its project page), its sha256 checked."""
    import re
    import urllib.request

    page = urllib.request.urlopen(INDEX, timeout=60).read().decode()
    match = re.search(r'href="([^"#]*/' + re.escape(SDIST_FILE) + r')(?:#[^"]*)?"', page)
    if match is None:
        raise SystemExit(f"{INDEX}: no link to {SDIST_FILE}; pass --source brain1_image.nrrd")
    payload = urllib.request.urlopen(match.group(1), timeout=300).read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{SDIST_FILE}: sha256 {digest[:8]}... is not the expected {SDIST_SHA256[:8]}...")
    target = folder / SDIST_FILE
    target.write_bytes(payload)
    return target


def fetch_source(folder: Path, member: str = MEMBER) -> Path:
    """``member`` of the sdist (brain1 unless told), extracted into ``folder``."""
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST, "-d",
                        str(folder)], check=True)
        sdist = next(folder.glob("pyradiomics_bhklab-*.tar.gz"))
    except (subprocess.CalledProcessError, StopIteration):
        sdist = _download_from_index(folder)
    with tarfile.open(sdist) as tar:
        tar.extract(member, folder, filter="data")
    return folder / member


def load_checked(source: Path, sha256_prefix: str = SOURCE_SHA256_PREFIX):
    """The source volume, once its sha256 starts with ``sha256_prefix``."""
    from mrisr.io import load

    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if not digest.startswith(sha256_prefix):
        raise SystemExit(f"{source}: sha256 {digest[:8]}... is not the expected {sha256_prefix}...")
    return load(source)


def derive(source: Path) -> tuple[np.ndarray, np.ndarray]:
    from mrisr.io.geometry import coarsen_affine
    from mrisr.kspace.functional import crop_lowres

    volume = load_checked(source)
    data = np.asarray(volume.data, dtype=np.float32)
    z0 = (data.shape[2] - SLICES) // 2
    data = data[:, :, z0 : z0 + SLICES]
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, :3] @ np.array([0.0, 0.0, z0]) + volume.affine[:3, 3]
    low = crop_lowres(data, INPLANE)
    affine = coarsen_affine(affine, data.shape, (*INPLANE, SLICES))
    return np.clip(np.rint(low), 0, 32767).astype(np.int16), affine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, help="brain1_image.nrrd (default: fetched from PyPI)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    from mrisr.io import Volume, save_like

    with tempfile.TemporaryDirectory() as tmp:
        source = args.source or fetch_source(Path(tmp))
        data, affine = derive(source)
    save_like(args.output, data, Volume(data=data, affine=affine), dtype=np.int16)
    print(f"{args.output}: {data.shape} int16, {args.output.stat().st_size} bytes")


if __name__ == "__main__":
    main()
