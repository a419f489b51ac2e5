"""Entry point of the `automl` console script.

Each command group lives in its own module of this package and exposes `register(app)`; keeping
imports inside commands keeps `automl --help` fast (TensorFlow and Ray load only when needed).
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

# TensorFlow's C++ start-up chatter (oneDNN notices, absl pre-init lines) buries the progress line; warnings
# and errors still show. Set before any command imports TensorFlow; a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import typer

from automl.cli.text import plain
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
        importlib.import_module(f"automl.cli.{name}").register(app)


_register_all()

FILE_SYSTEM_REFUSALS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
"""Errors the machine, not the code, causes (a full disk, a read-only or forbidden folder): reported in one
line with the path, not as a traceback."""


def main() -> None:
    """Run the CLI; user-facing errors print one clear message and exit with their code (2: bad input)."""
    try:
        app()
    except AutomlError as exc:
        typer.secho(f"error: {plain(exc)}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno not in FILE_SYSTEM_REFUSALS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        typer.secho(f"error: {where}{exc.strerror}", err=True, fg=typer.colors.RED)
        typer.secho("  hint: free some space or choose a writable folder (output.folder, cache)", err=True)
        sys.exit(1)
