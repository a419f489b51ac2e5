"""Where things live: the data root, the cache folder and the run folders, all overridable by environment."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "AUTOML_DATA"
CACHE_ENV = "AUTOML_CACHE"


def data_root() -> Path:
    """`$AUTOML_DATA`, else `data/` in the working directory (the set-up links it to the shared datasets)."""
    return Path(os.environ.get(DATA_ENV, "data")).expanduser()


def resolve_dataset(folder: str | os.PathLike[str]) -> Path:
    """An absolute dataset path as given, a relative one under the data root (or the working directory)."""
    path = Path(folder).expanduser()
    if path.is_absolute():
        return path
    under_root = data_root() / path
    if under_root.exists() or not path.exists():
        return under_root.absolute()
    return path.absolute()


def user_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/automl` (default `~/.cache/automl`): converted weights and, by default, bottlenecks."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "automl"


def cache_root(configured: str | None = None) -> str:
    """The bottleneck cache: the recipe's setting, else `$AUTOML_CACHE`, else the user cache folder.

    Returned as a string because it may be an fsspec URL on a cluster.
    """
    if configured:
        return configured
    return os.environ.get(CACHE_ENV) or str(user_cache_dir() / "bottlenecks")
