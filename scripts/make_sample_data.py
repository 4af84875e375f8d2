"""Derive the bundled sample ``mrisr/data/colin27_slab.nii.gz`` from the Colin27 T1 template.

Source: ``/usr/share/mricron/templates/ch2.nii.gz`` (Debian package ``mricron-data``), the
Colin27 single-subject average (Holmes et al. 1998), 181x217x181 at 1 mm in MNI space.

Output: an axial slab as a 2-D multi-slice scanner would write it, axes ``(X, Y, Z)`` =
(left->right, posterior->anterior, inferior->superior), RAS+ affine, qform/sform code 1:

* in-plane matrix 128x144 at 1.5x1.5 mm (192x216 mm field of view), centred on the head;
* 32 slices of 3 mm (96 mm), centred at MNI z = ``--center-z`` (default 6 mm: from the
  midbrain and temporal lobes up through the lateral ventricles);
* anti-aliased before sampling (Gaussian in-plane to the coarser resolution, a 3 mm
  boxcar slice profile through-plane), cubic interpolation;
* stored as int16 scaled so the maximum is 32000 (slope 1, intercept 0).

Run: ``python scripts/make_sample_data.py`` (optionally ``--source`` / ``--output``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = Path("/usr/share/mricron/templates/ch2.nii.gz")
DEFAULT_OUTPUT = ROOT / "mrisr" / "data" / "colin27_slab.nii.gz"

MATRIX = (128, 144, 32)
VOXEL_MM = (1.5, 1.5, 3.0)
INT16_PEAK = 32000


def slab_affine(center_world: np.ndarray, matrix=MATRIX, voxel_mm=VOXEL_MM) -> np.ndarray:
    """RAS+ affine of an axis-aligned grid whose geometric centre lies at ``center_world`` (mm)."""
    affine = np.diag([*voxel_mm, 1.0])
    centre_index = (np.asarray(matrix, dtype=np.float64) - 1.0) / 2.0
    affine[:3, 3] = np.asarray(center_world, dtype=np.float64) - affine[:3, :3] @ centre_index
    return affine


def head_center_xy(data: np.ndarray, affine: np.ndarray, z_range_mm: tuple[float, float]) -> np.ndarray:
    """World (x, y) of the centre of the head's bounding box within a range of z (mm)."""
    head = data > 0.1 * data.max()
    head = ndimage.binary_opening(head, iterations=2)
    ijk = np.argwhere(head)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    inside = (world[:, 2] >= z_range_mm[0]) & (world[:, 2] <= z_range_mm[1])
    world = world[inside]
    return (world[:, :2].min(axis=0) + world[:, :2].max(axis=0)) / 2.0


def make_slab(source: Path, center_z: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """The int16 slab ``(128, 144, 32)`` and its affine."""
    import nibabel as nib

    img = nib.load(str(source))
    data = np.asarray(img.dataobj, dtype=np.float32)
    src_affine = img.affine
    half_z = MATRIX[2] * VOXEL_MM[2] / 2.0
    cx, cy = head_center_xy(data, src_affine, (center_z - half_z, center_z + half_z))
    out_affine = slab_affine(np.array([cx, cy, center_z]))

    # anti-alias to the coarser grid: in-plane Gaussian (FWHM^2 = new^2 - old^2), 3 mm slice profile
    src_zooms = np.sqrt((src_affine[:3, :3] ** 2).sum(axis=0))
    fwhm = np.sqrt(np.maximum(np.asarray(VOXEL_MM[:2]) ** 2 - src_zooms[:2] ** 2, 0.0))
    sigma_vox = fwhm / 2.3548 / src_zooms[:2]
    smooth = ndimage.gaussian_filter(data, sigma=(sigma_vox[0], sigma_vox[1], 0.0))
    slice_vox = max(1, int(round(VOXEL_MM[2] / src_zooms[2])))
    smooth = ndimage.uniform_filter1d(smooth, size=slice_vox, axis=2)

    # output voxel -> source voxel, then cubic sampling
    index_map = np.linalg.inv(src_affine) @ out_affine
    coords = np.indices(MATRIX, dtype=np.float64).reshape(3, -1)
    coords = index_map[:3, :3] @ coords + index_map[:3, 3:4]
    slab = ndimage.map_coordinates(smooth, coords, order=3, mode="constant", cval=0.0).reshape(MATRIX)
    slab = np.clip(slab, 0.0, None)
    slab = np.round(slab / slab.max() * INT16_PEAK).astype(np.int16)
    return slab, out_affine


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="Colin27 ch2.nii.gz")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--center-z", type=float, default=6.0, help="world z (mm) of the slab centre")
    args = parser.parse_args(argv)
    if not args.source.exists():
        parser.error(f"{args.source}: not found; install it with `apt-get install mricron-data`")

    from mrisr.io import Volume, save_like

    slab, affine = make_slab(args.source, args.center_z)
    reference = Volume(data=slab, affine=affine, qform_code=1, sform_code=1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_like(args.output, slab, reference, dtype=np.int16)
    size_kb = args.output.stat().st_size / 1024
    print(f"{args.output}: {'x'.join(map(str, slab.shape))} at {'x'.join(map(str, VOXEL_MM))} mm, {size_kb:.0f} KB")
    return args.output


if __name__ == "__main__":
    main()
