"""napari plugin (npe2, manifest ``napari.yaml``): NIfTI reader and writer, a dynamic phantom
sample, and Simulate / Reconstruct / Compare widgets.

Layers keep the stored voxel axes ``(X, Y, Z)`` with time first for a series, ``(T, X, Y, Z)``;
the layer affine is the file's RAS affine (mm), time scaled by TR (s). See
:mod:`mrisr.napari._geometry` for the full convention. Nothing heavy is imported here: napari
imports each contribution only when it is used.
"""

__all__: list[str] = []
