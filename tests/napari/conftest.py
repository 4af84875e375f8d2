"""Fixtures for the napari plugin tests: a tiny real dynamic phantom and a tiny model.

The phantom is a 32x32x8 crop of the bundled Colin27 slab (its affine moved to the crop, so
world positions stay true), turned into a 3-frame dynamic series at 6.25 % k-space: the LR
series is 8x8x8 on its own coarser grid.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("QT_API", "pyqt6")  # qtpy (napari) on the binding pytest-qt uses

CROP_START = (48, 56, 12)
CROP_SHAPE = (32, 32, 8)


def crop_volume(volume, start=CROP_START, shape=CROP_SHAPE):
    """A crop of a 3-D volume with the affine of the crop (voxel ``start`` becomes index 0)."""
    from mrisr.io import Volume

    region = tuple(slice(s, s + n) for s, n in zip(start, shape))
    shift = np.eye(4)
    shift[:3, 3] = start
    return Volume(data=np.ascontiguousarray(volume.data[region]), affine=volume.affine @ shift,
                  qform_code=volume.qform_code, sform_code=volume.sform_code)


@pytest.fixture(scope="session")
def sample_crop():
    from mrisr.data import load_sample

    return crop_volume(load_sample())


def _phantom(static, frames: int):
    from mrisr.phantom import make_dynamic

    return make_dynamic(static, frames=frames, keep=6.25, seed=0, motion_mm=2.0)


@pytest.fixture(scope="session")
def tiny_phantom(sample_crop):
    """3-frame phantom: planning (32, 32, 8), hr (32, 32, 8, 3), lr (8, 8, 8, 3)."""
    return _phantom(sample_crop, frames=3)


@pytest.fixture(scope="session")
def long_tiny_phantom(sample_crop):
    """6-frame version, for cancelling mid-series."""
    return _phantom(sample_crop, frames=6)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained prior model checkpoint (plumbing only)."""
    from mrisr.models import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny.safetensors", prior=True)
