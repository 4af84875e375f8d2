"""The recipes and the cohort workflow that ship with mrisr, wherever it is installed.

* recipes: the YAML files of ``configs/`` — training recipes (``default``, ``default-recurrent``,
  ``default-gated``, ``default-sites``, ``default-noise``, ``default-real``, ``default-noprior``) and the
  batch recipe (``batch``);
* the Snakemake workflow: ``pipelines/`` (``Snakefile``, ``config.yaml``, ``profiles/``).

A wheel carries them inside the package (``mrisr/_shipped/``, put there by the build); a source
checkout (``pip install -e .``) uses the repository's folders. So after ``pip install mrisr``::

    mrisr train default -o my.safetensors          # a packaged recipe by name
    mrisr config show default > my_recipe.yaml     # a copy to edit
    snakemake -s "$(mrisr pipeline path)/Snakefile" --profile "$(mrisr pipeline path)/profiles/local" ...

Example:
    >>> from mrisr.resources import recipe_path
    >>> recipe_path("default").name
    'default.yaml'
"""

from __future__ import annotations

from pathlib import Path

from mrisr.io.errors import MrisrInputError

__all__ = ["pipeline_folder", "recipe_names", "recipe_path", "shipped_folder"]

_PACKAGE = Path(__file__).resolve().parent


def shipped_folder(name: str) -> Path:
    """The shipped folder ``name`` (``configs`` or ``pipelines``).

    Raises:
        MrisrInputError: when the installation lacks it (a broken or partial install).
    """
    packaged = _PACKAGE / "_shipped" / name
    if packaged.is_dir():
        return packaged
    checkout = _PACKAGE.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name
    raise MrisrInputError(
        f"{packaged}: the shipped {name}/ folder is missing from this mrisr installation; reinstall mrisr"
    )


def recipe_names() -> list[str]:
    """Names of the packaged recipes (``batch``, ``default``, ...), sorted."""
    return sorted(path.stem for path in shipped_folder("configs").glob("*.yaml"))


def recipe_path(recipe: str | Path) -> Path:
    """A recipe file: ``recipe`` itself if it is an existing file, else the packaged recipe of that name.

    Args:
        recipe: a YAML path, or a packaged recipe name such as ``default`` (``default.yaml`` works too).

    Returns:
        The path of the YAML file.

    Raises:
        MrisrInputError: neither a file nor a packaged recipe; the message lists the packaged names.
    """
    path = Path(recipe)
    if path.is_file():
        return path
    name = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    packaged = shipped_folder("configs") / f"{name}.yaml"
    if path.parent == Path(".") or path.parent == Path("configs"):
        if packaged.is_file():
            return packaged
    raise MrisrInputError(
        f"{recipe}: config not found; give a YAML file or a packaged recipe: {', '.join(recipe_names())} "
        "(mrisr config list)"
    )


def pipeline_folder() -> Path:
    """The folder of the Snakemake workflow (``Snakefile``, ``config.yaml``, ``profiles/local``, ``profiles/slurm``)."""
    return shipped_folder("pipelines")
