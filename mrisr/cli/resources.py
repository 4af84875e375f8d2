"""`mrisr config` and `mrisr pipeline`: the recipes and the Snakemake workflow shipped with mrisr."""

from __future__ import annotations

import typer

from mrisr.cli.app import app
from mrisr.cli.common import user_errors

config_app = typer.Typer(
    help="The packaged recipes (training, fine-tuning, batch): list them, print one to copy and edit.",
    no_args_is_help=True,
)
pipeline_app = typer.Typer(help="The packaged Snakemake workflow (Snakefile, config, local and SLURM profiles).",
                           no_args_is_help=True)
app.add_typer(config_app, name="config", short_help="List and show the packaged recipes.")
app.add_typer(pipeline_app, name="pipeline", short_help="Where the packaged Snakemake workflow is.")


@config_app.command("list", short_help="Names of the packaged recipes.")
def config_list() -> None:
    """Print the names of the packaged recipes, one a line (use them as mrisr train NAME)."""
    from mrisr.resources import recipe_names

    with user_errors():
        names = recipe_names()
    typer.echo("\n".join(names))


@config_app.command("show", short_help="Print a packaged recipe.")
def config_show(name: str = typer.Argument(..., help="Recipe name, e.g. default or batch.")) -> None:
    """Print a packaged recipe: mrisr config show default > my_recipe.yaml gives a copy to edit."""
    from mrisr.resources import recipe_path

    with user_errors():
        text = recipe_path(name).read_text(encoding="utf-8")
    typer.echo(text, nl=False)


@config_app.command("path", short_help="Path of a packaged recipe.")
def config_path(name: str = typer.Argument(..., help="Recipe name, e.g. default or batch.")) -> None:
    """Print the path of a packaged recipe file."""
    from mrisr.resources import recipe_path

    with user_errors():
        path = recipe_path(name)
    typer.echo(str(path))


@pipeline_app.command("path", short_help="Folder of the Snakefile and its profiles.")
def pipeline_path() -> None:
    """Print the folder of the Snakemake workflow, e.g.

    snakemake -s "$(mrisr pipeline path)/Snakefile" --profile "$(mrisr pipeline path)/profiles/local"
    --config input=bids output=bids/derivatives/mrisr
    """
    from mrisr.resources import pipeline_folder

    with user_errors():
        folder = pipeline_folder()
    typer.echo(str(folder))
