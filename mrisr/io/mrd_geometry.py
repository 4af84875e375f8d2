"""The NIfTI affine of an ISMRMRD raw reconstruction.

Convention (written down because tools disagree by half a voxel):

* ISMRMRD's acquisition ``position`` is the centre of the slice (2-D) or slab (3-D) and
  ``read_dir``, ``phase_dir``, ``slice_dir`` are direction cosines, all in the patient frame
  (LPS, mm). NIfTI is RAS: x and y change sign.
* The scanner demodulates around ``position``: an object at ``position`` has k-space without a
  linear phase, and the centred inverse FFT used here (``fftshift(ifft(ifftshift(k)))``, with the
  k-space centre sample at block index ``M // 2``) puts it at voxel index ``M // 2``. So voxel
  ``(X // 2, Y // 2, Z // 2)`` of a 3-D slab, and voxel ``(X // 2, Y // 2)`` of each 2-D slice,
  lies at ``position``, and voxel indices grow along ``read_dir``, ``phase_dir`` and the slice
  direction. This is also Gadgetron's choice: its DICOM writer puts the first voxel at
  ``position - FOV/2 * (read_dir + phase_dir)``, i.e. ``position`` at voxel ``N / 2``
  (``dicom_ismrmrd_utility.cpp``, and ``DicomFinishGadget.cpp`` before it). python-ismrmrd-server's ``mrd2dicom.py`` copies
  ``position`` into DICOM ImagePositionPatient unchanged (the first voxel), which is half a
  field of view away from both; it is not followed.
* It is the same centred-FFT convention as :mod:`mrisr.io.geometry` (index ``N // 2`` stays put
  when k-space is cropped or zero-filled), so the pipeline's zero-filling keeps raw frames in place.

Voxel sizes: the encoded field of view over the k-space block's size along readout and phase
(and partitions); 2-D slices are spaced by their positions' steps (one slice: its thickness).
"""

from __future__ import annotations

import numpy as np

from mrisr.io.errors import MrisrInputError
from mrisr.io.mrd_layout import RawLayout

#: LPS (DICOM, ISMRMRD) <-> RAS (NIfTI): x and y change sign
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def raw_affine(layout: RawLayout) -> np.ndarray:
    """4x4 voxel-to-world (RAS+, mm) affine of the ``(X, Y, Z)`` image :mod:`mrisr.io.mrd` reconstructs.

    Raises:
        MrisrInputError: 2-D slices that are not equally spaced.
    """
    nx, ny, nz = layout.shape
    columns = np.zeros((3, 3))
    columns[:, 0] = layout.read_dir * layout.readout.spacing
    columns[:, 1] = layout.phase_dir * layout.phase.spacing
    positions = layout.slice_positions
    if layout.three_d:
        columns[:, 2] = layout.slice_dir * layout.partition.spacing
        centre_z = nz // 2
    elif layout.n_slices > 1:
        steps = np.diff(positions, axis=0)
        step = (positions[-1] - positions[0]) / (layout.n_slices - 1)
        if np.abs(steps - step).max() > 1e-2:
            gaps = np.round(np.linalg.norm(steps, axis=1), 3)
            raise MrisrInputError(
                f"{layout.path}: slices are not equally spaced (steps {', '.join(f'{g:g}' for g in gaps[:6])} mm); "
                "split the file into equally spaced slice groups"
            )
        columns[:, 2] = step
        centre_z = 0
    else:
        columns[:, 2] = layout.slice_dir * layout.partition.spacing
        centre_z = 0
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = positions[0] - columns @ np.array([nx // 2, ny // 2, centre_z], dtype=float)
    return LPS_TO_RAS @ affine
