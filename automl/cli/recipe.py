"""`automl recipe check|schema`: validate recipes and give editors their JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from automl.recipe import dump_recipe, json_schema, load_recipe

recipe_app = typer.Typer(help="Validate recipes and print their JSON Schema.", no_args_is_help=True)


@recipe_app.command("check")
def check(
    file: Path = typer.Argument(..., help="Recipe YAML file."),
    as_json: bool = typer.Option(False, "--json", help="Print the resolved recipe as JSON."),
    show: bool = typer.Option(False, "--show", help="Print the resolved recipe, defaults filled in."),
) -> None:
    """Validate FILE; exit 2 with file:line, key and allowed values on the first problems."""
    recipe = load_recipe(file)
    if as_json:
        typer.echo(recipe.model_dump_json(indent=2))
    elif show:
        typer.echo(dump_recipe(recipe), nl=False)
    else:
        typer.echo(f"{file}: ok ({recipe.name})")


@recipe_app.command("schema")
def schema() -> None:
    """Print the recipe JSON Schema (point your editor's YAML plugin at it)."""
    typer.echo(json.dumps(json_schema(), indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(recipe_app, name="recipe")
