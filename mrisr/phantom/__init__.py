"""Dynamic phantoms made from a real static volume: breathing motion, contrast uptake, LR simulation.

:func:`make_dynamic` turns one static HR volume ``(X, Y, Z)`` into

* ``hr``: a 4-D ground truth ``(X, Y, Z, T)`` on the static grid, each frame the static
  anatomy warped by a breathing deformation (plus a small irregular component) and, if
  asked, brightened by contrast uptake in a smooth spherical region;
* ``planning``: the same anatomy at a different motion state (deep inspiration), no
  contrast, the prior a planning scan would give;
* ``lr``: the k-space centre of every ``hr`` frame (``keep`` percent), a genuinely smaller
  in-plane matrix with the coarsened affine, as a scanner would write it.

Phantoms where the prior is wrong (see :mod:`mrisr.inserts`): ``insert="needle"`` advances a
needle into the tissue during the series (absent from the planning scan), ``planning_insert="needle"``
puts one in the planning scan only, ``planning_contrast="swap"`` gives the planning scan another
tissue contrast, ``through_plane_mm`` adds motion along the slice axis. Their masks and reference
contrasts come with the phantom, so :mod:`mrisr.metrics.fidelity` can score any method on them.

Everything is float32 and deterministic for a seed; the global NumPy RNG is never used.

The recipe (:mod:`mrisr.phantom.make`) calls one step per module: :mod:`~mrisr.phantom.checks`
(the arguments), :mod:`~mrisr.phantom.motion` (breathing, irregular motion, the planning scan's
motion state, warping), :mod:`~mrisr.phantom.contrast` (uptake curve and region),
:mod:`~mrisr.phantom.structures` (inserted needles), :mod:`~mrisr.phantom.frames` (the HR
series), :mod:`~mrisr.phantom.planning` (the planning scan), :mod:`~mrisr.phantom.acquisition`
(the LR series and its noise); :mod:`~mrisr.phantom.result` holds the phantom and
:mod:`~mrisr.phantom.files` writes it.

Example:
    >>> from mrisr.data import load_sample
    >>> phantom = make_dynamic(load_sample(), frames=4, keep=6.25, seed=0)  # doctest: +SKIP
    >>> phantom.save("phantom/")  # doctest: +SKIP
"""

from mrisr.phantom.contrast import gamma_variate
from mrisr.phantom.files import INSERT_FILES, METADATA_FILE, PHANTOM_FILES, phantom_paths
from mrisr.phantom.make import make_dynamic
from mrisr.phantom.result import DynamicPhantom

__all__ = [
    "DynamicPhantom",
    "INSERT_FILES",
    "METADATA_FILE",
    "PHANTOM_FILES",
    "gamma_variate",
    "make_dynamic",
    "phantom_paths",
]
