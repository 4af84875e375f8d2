"""Test data builders shared by the test modules (a uniquely named module: test files import
it directly, while ``conftest`` names are ambiguous once sub-folders have their own conftest)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SHAPE_3D = (32, 28, 12)
N_FRAMES = 3
TR = 0.45
ZOOMS = (0.9, 1.1, 3.0)
ORIGIN = (-40.5, 12.25, 30.0)
ANGLES = (12.0, -7.0, 25.0)
QFORM_CODE = 1
SFORM_CODE = 2


def rotation(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation matrix ``Rz @ Ry @ Rx`` for angles (degrees) about X, Y and Z."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique(
    zooms: Sequence[float] = ZOOMS, origin: Sequence[float] = ORIGIN, angles_deg: Sequence[float] = ANGLES
) -> np.ndarray:
    """Voxel-to-world affine: rotation times anisotropic voxel sizes, plus an origin (mm)."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(angles_deg) @ np.diag(zooms)
    affine[:3, 3] = origin
    return affine


def head_phantom(shape: Sequence[int], seed: int = 0, shift: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Smooth positive ellipsoid with texture and a zero background, float32 ``(X, Y, Z)``."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    centre = [(n - 1) / 2 + s for n, s in zip(shape, shift)]
    radii = [0.38 * n for n in shape]
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
    # soft edge so the object is smooth in k-space
    body = 1.0 / (1.0 + np.exp((np.sqrt(r2) - 1.0) * 12.0))
    texture = np.zeros(shape)
    for _ in range(4):
        pos = [c + rng.uniform(-0.4, 0.4) * r for c, r in zip(centre, radii)]
        width = rng.uniform(1.5, 3.0)
        texture += rng.uniform(0.3, 0.8) * np.exp(-sum((g - p) ** 2 for g, p in zip(grids, pos)) / (2 * width**2))
    data = body * (1.0 + texture) * 100.0
    data[data < 1e-3] = 0.0
    return data.astype(np.float32)


def colin_crop():
    """A 64 x 80 x 6 crop of the bundled real T1 slab (Colin27), for small dynamic phantoms."""
    from mrisr.data import load_sample

    sample = load_sample()
    return sample.with_data(np.ascontiguousarray(sample.data[24:88, 24:104, 8:14]))


def reconstruct_cli(files: dict, out, *flags: str) -> tuple[dict, np.ndarray]:
    """``mrisr reconstruct LR --prior PLANNING --method keyhole-gated FLAGS -o OUT``: its sidecar and output."""
    import json

    from typer.testing import CliRunner

    from mrisr.cli import app
    from mrisr.io import load

    result = CliRunner().invoke(app, ["reconstruct", str(files["lr"]), "--prior", str(files["planning"]),
                                      "--method", "keyhole-gated", *flags, "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    sidecar = json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text())
    return sidecar, load(out).data


def make_finetuning_improve(patch) -> None:
    """For tests of what a face does with a tuned model (``patch``: a ``pytest.MonkeyPatch``):
    fine-tuning of the untrained tiny model runs 60 steps (a step budget, whatever the machine's
    speed) at a rate 150x the bundled model's, and any lower mean check error is accepted. The
    check's own margin is tested in test_training_finetune_check.py; without this, a few seconds
    of tuning at the bundled rate rightly do not beat the base model, and nothing is written."""
    from functools import partial

    import mrisr.training.finetune_check as check
    import mrisr.workflow

    patch.setattr(mrisr.workflow, "FINETUNE_LR", 3e-3)
    patch.setattr(mrisr.workflow, "finetune_model", partial(mrisr.workflow.finetune_model, steps=60))
    patch.setattr(check, "significantly_better", partial(check.significantly_better, standard_errors=0.0))
