"""Image I/O: the only place that reads or writes images. See :func:`load` and :func:`save_like`."""

from mrisr.io.errors import MrisrInputError, OptionError
from mrisr.io.geometry import coarsen_affine, hr_inplane_matrix, refine_affine, regrid_affine, voxel_sizes
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
    "hr_inplane_matrix",
    "is_nifti",
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
]
