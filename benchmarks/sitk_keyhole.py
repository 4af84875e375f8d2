"""The "SimpleITK registered keyhole": the classical baseline of issue 27, as a user would write it.

For each LR frame:

1. the planning scan band-limited like the frame (its central k-space, magnitude, on the HR grid);
2. histogram-matched to the frame's sinc image (``sitk.HistogramMatching``: 256 levels, 7 match
   points, threshold at the mean intensity);
3. registered to the sinc frame with ``FastSymmetricForcesDemonsRegistrationFilter`` (50
   iterations, displacement smoothed with a standard deviation of 1.5 voxels), on the full HR grid;
4. the full-resolution planning scan warped with that field (linear);
5. its outer k-space put around the frame's measured centre (:func:`mrisr.reconstruct.keyhole.keyhole`).

It knows nothing of the previous frame: each frame is registered from no motion. The images are
handed to SimpleITK with unit spacing, so the demons force, the smoothing and the field are in HR
voxels (the field is the pull-back displacement of :func:`mrisr.metrics.registration_error_mm`).
"""

from __future__ import annotations

import numpy as np

ITERATIONS = 50
STANDARD_DEVIATION = 1.5
HISTOGRAM_LEVELS = 256
MATCH_POINTS = 7


def _image(array: np.ndarray):
    """``(X, Y, Z)`` numpy -> SimpleITK image (SimpleITK orders axes ``(Z, Y, X)``), unit spacing."""
    import SimpleITK as sitk

    return sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0)), dtype=np.float32))


def _array(image) -> np.ndarray:
    import SimpleITK as sitk

    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))


def sitk_registered_keyhole(lr_frame: np.ndarray, planning: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The baseline's frame and its displacement.

    Args:
        lr_frame: the measured LR magnitude frame ``(x, y, Z)``.
        planning: the planning scan on the HR grid ``(X, Y, Z)``, intensity-matched to the frames.

    Returns:
        The keyhole ``(X, Y, Z)`` float32, and the displacement ``(3, X, Y, Z)`` in HR voxels.
    """
    import SimpleITK as sitk

    from mrisr.kspace.band import measured_band
    from mrisr.kspace.functional import zero_fill
    from mrisr.reconstruct.keyhole import keyhole

    hr_inplane = planning.shape[:2]
    sinc = np.asarray(zero_fill(np.asarray(lr_frame, dtype=np.float32), hr_inplane), dtype=np.float32)
    fixed = _image(sinc)
    moving = _image(measured_band(planning, lr_frame.shape[:2]))
    moving = sitk.HistogramMatching(moving, fixed, numberOfHistogramLevels=HISTOGRAM_LEVELS,
                                    numberOfMatchPoints=MATCH_POINTS, thresholdAtMeanIntensity=True)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(ITERATIONS)
    demons.SetStandardDeviations(STANDARD_DEVIATION)
    field = demons.Execute(fixed, moving)
    # read before the transform takes the field over (SimpleITK moves the image into it)
    displacement = np.moveaxis(np.transpose(sitk.GetArrayFromImage(field), (2, 1, 0, 3)), -1, 0)
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    full = _image(planning)
    warped = _array(sitk.Resample(full, full, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    return keyhole(lr_frame, warped), np.ascontiguousarray(displacement, dtype=np.float32)
