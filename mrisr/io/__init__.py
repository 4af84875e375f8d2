"""Image I/O: the only place that reads or writes images. See :func:`load` and :func:`save_like`.

Also the one :func:`file_sha256` (an image file, a header with its detached data, or a DICOM folder) and
the one atomic JSON writer (:func:`write_json_atomic`) every sidecar and status file goes through.

Every file format mrisr reads or writes lives here, so :func:`load` can dispatch on the file type
without an import running up the layers (:mod:`mrisr.layers`): NIfTI and the SimpleITK formats, ISMRMRD
raw k-space (``mrd*.py``: each frame's measured central lines, reconstructed on the LR matrix), and
DICOM series in and out (reading dynamics in both scanner layouts, writing derived series).
A server face (``mrisr.serve``) turns stream messages into frames with the same helpers."""

from mrisr.io.errors import MrisrInputError, OptionError
from mrisr.io.geometry import coarsen_affine, hr_inplane_matrix, refine_affine, regrid_affine, voxel_sizes
from mrisr.io.hashing import file_sha256, image_files
from mrisr.io.jsonio import write_json_atomic, write_text_atomic
from mrisr.io.load import check_frame, image_stem, is_nifti, load, sitk_to_volume, validate_values, volume_to_sitk
from mrisr.io.save import FrameWriter, check_writable, nifti_header, save_like
from mrisr.io.volume import Volume

__all__ = [
    "FrameWriter",
    "MrisrInputError",
    "OptionError",
    "Volume",
    "check_frame",
    "check_writable",
    "coarsen_affine",
    "file_sha256",
    "hr_inplane_matrix",
    "is_nifti",
    "image_files",
    "image_stem",
    "load",
    "nifti_header",
    "refine_affine",
    "regrid_affine",
    "save_like",
    "sitk_to_volume",
    "validate_values",
    "volume_to_sitk",
    "voxel_sizes",
    "write_json_atomic",
    "write_text_atomic",
]
