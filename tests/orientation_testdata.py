"""The orientation matrix's scenes: one world, sampled on a dynamic grid and a planning grid of other orientations.

The world is a smooth blob (the anatomy) with a bright marker at a known world point ``marker``.
:func:`make_scene` samples it on the dynamic's HR grid of one of :data:`dicom_testdata.ORIENTATIONS`
(axial, coronal, sagittal, oblique about 20 degrees, left-handed) and on an isotropic planning grid of
ANOTHER orientation (:data:`PLANNING_OF`) that covers it, centred on the same world point. The marker
sits on an HR voxel centre of the dynamic, off centre on every axis, so a flipped, swapped or shifted
axis anywhere moves it. :func:`assert_same_box` and :func:`argmax_world` are what the tests compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from dicom_testdata import ORIENTATIONS

#: the dynamic's HR matrix (X, Y, Z) and frames; ORIENTATIONS' voxels are 1.5 x 1.5 x 3 mm
HR_SHAPE = (24, 24, 6)
FRAMES = 2
TR = 0.5
#: HR voxel of the dynamic holding the marker (off centre on every axis)
MARKER_VOXEL = (16, 7, 3)
#: planning voxel size (mm, isotropic: the HR grid it implies is 1.5 mm in-plane in every orientation)
PLANNING_MM = 1.5
#: the planning scan's orientation for each dynamic orientation (never the same)
PLANNING_OF = {"axial": "sagittal", "coronal": "axial", "sagittal": "coronal", "oblique": "axial",
               "left_handed": "coronal"}


@dataclass
class Scene:
    """A dynamic HR series ``(X, Y, Z, T)`` and a planning scan ``(X, Y, Z)`` of one world (RAS, mm)."""

    hr: np.ndarray
    hr_affine: np.ndarray
    planning: np.ndarray
    planning_affine: np.ndarray
    marker: np.ndarray

    @property
    def hr_voxel_mm(self) -> float:
        """The in-plane HR voxel size (mm): the tolerance unit of the matrix."""
        return float(np.linalg.norm(self.hr_affine[:3, 0]))

    def save(self, folder: Path) -> dict[str, Path]:
        """``hr.nii.gz`` (4-D, TR) and ``planning.nii.gz`` in ``folder``, qform and sform set."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"hr": folder / "hr.nii.gz", "planning": folder / "planning.nii.gz"}
        write_nifti(paths["hr"], self.hr, self.hr_affine, tr=TR)
        write_nifti(paths["planning"], self.planning, self.planning_affine)
        return paths


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, tr: float | None = None) -> Path:
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    if tr is not None:
        zooms = list(image.header.get_zooms())
        image.header.set_zooms((*zooms[:3], tr))
    nib.save(image, path)
    return path


def voxel_world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World (RAS, mm) of every voxel centre, ``(*shape, 3)``."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape[:3]], indexing="ij"), axis=-1)
    return grid @ affine[:3, :3].T + affine[:3, 3]


def world_image(points: np.ndarray, centre: np.ndarray, marker: np.ndarray, frame: int = 0) -> np.ndarray:
    """The world at ``points`` (``(..., 3)`` mm): a soft blob (radius 14 mm) of level 100 that brightens a
    little per frame, and a marker of 600 (Gaussian, sigma 1.2 mm) at ``marker``."""
    r = np.linalg.norm(points - centre, axis=-1)
    blob = 100.0 * (1.0 + 0.05 * frame) / (1.0 + np.exp((r - 14.0) / 1.5))
    spot = 600.0 * np.exp(-np.sum((points - marker) ** 2, axis=-1) / (2 * 1.2**2))
    return (blob + spot).astype(np.float32)


def world_box(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The world bounding box ``[[min x, y, z], [max x, y, z]]`` of a grid's voxels (their outer faces)."""
    world = world_corners(affine, shape)
    return np.stack([world.min(axis=0), world.max(axis=0)])


def assert_same_box(affine: np.ndarray, shape: tuple[int, ...], reference_affine: np.ndarray,
                    reference_shape: tuple[int, ...], hr_affine: np.ndarray) -> None:
    """Two grids cover the same world box within half an HR voxel: each of the 8 outer corners of one is
    that of the other within half an HR voxel along every axis of the HR grid ``hr_affine`` (an oblique
    box is compared along its own axes, not by its axis-aligned hull)."""
    steps = np.asarray(hr_affine)[:3, :3]
    units = steps / np.linalg.norm(steps, axis=0)
    half = 0.5 * np.linalg.norm(steps, axis=0) + 1e-6
    difference = (world_corners(affine, shape) - world_corners(reference_affine, reference_shape)) @ units
    assert (np.abs(difference) <= half).all(), (difference, half)


def world_corners(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The 8 outer corners ``(8, 3)`` (mm) of a grid's voxels, in voxel-index order."""
    corners = np.array([[i, j, k] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                        for k in (-0.5, shape[2] - 0.5)])
    return corners @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def argmax_world(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World position (mm) of the brightest voxel of a 3-D volume."""
    index = np.unravel_index(int(np.argmax(data)), data.shape[:3])
    return (np.asarray(affine) @ np.array([*index, 1.0]))[:3]


def planning_detail(sr: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """What the planning scan added to an SR frame ``(X', Y', Z)``: the SR frame minus its LR frame
    ``(X, Y, Z)`` zero-filled onto the SR matrix. The LR frame's own marker dominates the SR frame, so
    only this detail shows where the planning scan's marker landed."""
    from mrisr.kspace.functional import zero_fill

    return np.asarray(sr, dtype=np.float32) - zero_fill(np.asarray(lr, dtype=np.float32), sr.shape[:2])


def make_scene(orientation: str) -> Scene:
    """The dynamic in ``orientation`` and the planning scan in ``PLANNING_OF[orientation]``."""
    hr_affine = ORIENTATIONS[orientation].copy()
    centre = (hr_affine @ np.array([*((np.array(HR_SHAPE) - 1) / 2), 1.0]))[:3]
    marker = (hr_affine @ np.array([*MARKER_VOXEL, 1.0]))[:3]
    points = voxel_world(hr_affine, HR_SHAPE)
    hr = np.stack([world_image(points, centre, marker, t) for t in range(FRAMES)], axis=-1)
    # planning: the other orientation's axes, isotropic voxels, a box that covers the dynamic's with 3 mm to spare
    axes = ORIENTATIONS[PLANNING_OF[orientation]][:3, :3]
    axes = axes / np.linalg.norm(axes, axis=0)
    box = world_box(hr_affine, HR_SHAPE)
    corners = np.array([[x, y, z] for x in box[:, 0] for y in box[:, 1] for z in box[:, 2]])
    extent = np.abs((corners - centre) @ axes).max(axis=0)  # half-extent along each planning axis
    shape = tuple(int(np.ceil(2 * (e + 3.0) / PLANNING_MM)) for e in extent)
    planning_affine = np.eye(4)
    planning_affine[:3, :3] = axes * PLANNING_MM
    planning_affine[:3, 3] = centre - planning_affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    planning = world_image(voxel_world(planning_affine, shape), centre, marker)
    return Scene(hr=hr, hr_affine=hr_affine, planning=planning, planning_affine=planning_affine, marker=marker)
