"""Entry point of the `automl` console script.

Each command group lives in its own module of this package and exposes `register(app)`; keeping
imports inside commands keeps `automl --help` fast (TensorFlow and Ray load only when needed).
"""

from __future__ import annotations

import importlib
import sys

import typer

from automl.errors import AutomlError

app = typer.Typer(
    name="automl",
    help="Find the best transfer-learning image classifier for your own photos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

COMMAND_MODULES = (
    "recipe",
    "data",
    "backbones",
    "cache",
    "search",
    "evaluate",
    "serve",
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"automl.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"automl.cli.{name}":
                continue  # command group not written yet
            raise
        module.register(app)


_register_all()


def main() -> None:
    """Run the CLI; user-facing errors print one clear message and exit with their code (2: bad input)."""
    try:
        app()
    except AutomlError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
