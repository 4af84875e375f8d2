"""Bundled sample data and the locations of the full template volumes used for training.

* :func:`sample_path` / :func:`load_sample`: a small real T1 slab shipped with the package
  (``colin27_slab.nii.gz``, 128x144x32 at 1.5x1.5x3 mm, derived from Colin27 by
  ``scripts/make_sample_data.py``; provenance and licence in ``mrisr/data/README.md``).
* :func:`heldout_path` / :func:`heldout_subject`: a real single-subject clinical T1 scan with its
  own noise (``heldout_brain1.nii.gz``, 128x128x20 at 1.56x1.56x6.5 mm, derived from pyradiomics'
  ``brain1`` test case by ``scripts/make_heldout_data.py``), never used for training or tuning:
  benchmarks validate on it.
* :func:`colin27_path`, :func:`mni152_path`: full 1 mm templates found on this machine
  (Debian ``mricron-data``; the ``nilearn`` package), for training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrisr.io.errors import MrisrInputError
from mrisr.io.volume import Volume

__all__ = ["HELDOUT_NAME", "SAMPLE_NAME", "colin27_path", "heldout_path", "heldout_subject", "load_sample",
           "mni152_path", "sample_path"]

SAMPLE_NAME = "colin27_slab.nii.gz"
HELDOUT_NAME = "heldout_brain1.nii.gz"
COLIN27_LOCATIONS = (
    Path("/usr/share/mricron/templates/ch2.nii.gz"),
    Path("/usr/share/data/mricron/templates/ch2.nii.gz"),
)
MNI152_T1_NAME = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def _bundled(name: str, what: str, recreate: str) -> Path:
    path = Path(__file__).resolve().parent / name
    if not path.exists():
        raise MrisrInputError(f"{path}: {what} is missing; recreate it with {recreate} or reinstall mrisr")
    return path


def _load_float32(path: Path) -> Volume:
    from mrisr.io.load import load

    volume = load(path)
    volume.data = np.asarray(volume.data, dtype=np.float32)
    return volume


def sample_path() -> Path:
    """Path of the bundled sample slab ``(X, Y, Z) = (128, 144, 32)``, 1.5x1.5x3 mm, int16.

    Raises:
        MrisrInputError: if the file is missing from the installation.
    """
    return _bundled(SAMPLE_NAME, "bundled sample", "`python scripts/make_sample_data.py` "
                    "(needs Colin27 from `apt-get install mricron-data`)")


def load_sample() -> Volume:
    """The bundled sample as a float32 3-D :class:`~mrisr.io.Volume` (RAS+ affine in mm)."""
    return _load_float32(sample_path())


def heldout_path() -> Path:
    """Path of the held-out real scan ``(X, Y, Z) = (128, 128, 20)``, 1.5625x1.5625x6.5 mm, int16.

    Raises:
        MrisrInputError: if the file is missing from the installation.
    """
    return _bundled(HELDOUT_NAME, "held-out scan", "`python scripts/make_heldout_data.py`")


def heldout_subject() -> Volume:
    """The held-out real single-subject T1 scan as a float32 3-D :class:`~mrisr.io.Volume`.

    Never used for training, tuning or model selection; see ``mrisr/data/README.md``.
    """
    return _load_float32(heldout_path())


def colin27_path() -> Path:
    """Path of the full Colin27 T1 template (181x217x181 at 1 mm, MNI space).

    Raises:
        MrisrInputError: if Debian's ``mricron-data`` is not installed.
    """
    for path in COLIN27_LOCATIONS:
        if path.exists():
            return path
    raise MrisrInputError(
        f"{COLIN27_LOCATIONS[0]}: Colin27 template not found; install it with `sudo apt-get install mricron-data`"
    )


def mni152_path() -> Path:
    """Path of the MNI ICBM152 2009a nonlinear symmetric T1 template shipped inside ``nilearn``.

    Raises:
        MrisrInputError: if nilearn (or the template file in it) is not installed.
    """
    try:
        import nilearn
    except ImportError:
        raise MrisrInputError(
            f"{MNI152_T1_NAME}: MNI152 template not found because nilearn is not installed; "
            "install it with `pip install nilearn` (or `pip install mrisr[train]`)"
        ) from None
    path = Path(nilearn.__file__).resolve().parent / "datasets" / "data" / MNI152_T1_NAME
    if not path.exists():
        raise MrisrInputError(
            f"{path}: MNI152 T1 template missing from the nilearn installation; reinstall it with "
            "`pip install --force-reinstall nilearn`"
        )
    return path
