"""The layer order of mrisr's packages, written down once.

An import may point to its own layer or a lower one, never up, and no module may reach itself
through a chain of imports (imports inside functions count too). ``tests/test_layers.py`` reads
every import in ``mrisr/`` and fails on an arrow that runs up or a circle; the README's layout
section and ``docs/layout.md`` describe the same order.

Why this order: reading and writing files (``io``) and pure k-space maths (``kspace``) know nothing
of MRI methods; metrics, limits and sample data use only those; phantoms are built from them;
networks (``models``) run on arrays a caller formed; ``reconstruct`` forms the network's input
and runs the per-frame pipeline, so training, which must see exactly what inference feeds, sits
above it; the caller layer (``workflow``) is where fine-tuning and reconstruction are put
together, once, for every face; the faces (CLI, napari, batch, and the coming inline server
``serve``) only parse, call the layers below and report progress.
"""

from __future__ import annotations

#: low to high; each entry is a module or package under ``mrisr`` (``mrisr`` itself is the top
#: ``__init__``, which holds only the version)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("mrisr", "mrisr.io"),
    ("mrisr.kspace",),
    ("mrisr.limits", "mrisr.resources", "mrisr.metrics", "mrisr.deform", "mrisr.data", "mrisr.figures",
     "mrisr.layers"),
    ("mrisr.inserts", "mrisr.phantom"),
    ("mrisr.models",),
    ("mrisr.reconstruct",),
    ("mrisr.training",),
    ("mrisr.workflow",),
    ("mrisr.demo",),
    ("mrisr.batch", "mrisr.napari", "mrisr.serve"),
    ("mrisr.cli",),
)

#: faces that share a layer and must not import each other (the CLI, one layer up, may call them)
FACES: tuple[str, ...] = ("mrisr.batch", "mrisr.napari", "mrisr.serve")


def unit_of(module: str) -> str:
    """The :data:`LAYERS` entry ``module`` belongs to (its longest listed prefix).

    Example:
        >>> unit_of("mrisr.reconstruct.keyhole")
        'mrisr.reconstruct'
        >>> unit_of("mrisr")
        'mrisr'

    Raises:
        KeyError: a module of no listed unit (add it to :data:`LAYERS`).
    """
    if module == "mrisr":
        return module
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        prefix = ".".join(parts[:n])
        if any(prefix in layer for layer in LAYERS):
            return prefix
    raise KeyError(f"{module}: not in any layer of mrisr.layers.LAYERS; add its package there")


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` (0 lowest) of the unit ``module`` belongs to."""
    unit = unit_of(module)
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)
