"""Atomic writes: files, Parquet tables and folders appear whole or not at all.

Readers (a user's `automl status`, a server loading a model, a resumed search) see the old version or
the new one, never half of one. Every writer stages under a uniquely named temporary sibling (two
writers never rename each other's half-written temporary), renames it into place, and removes the
temporary whatever happens. The bottleneck cache keeps its own temporaries (`automl.cache.store`):
its pruning recognises their prefix to clear what dead writers left, so it does not use this module.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _sibling(target: Path, kind: str = "tmp") -> Path:
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.{kind}")


@contextmanager
def staging_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """`with staging_file(p) as temp: write temp` puts it at `p` once the block ends without error."""
    target = Path(path)
    temp = _sibling(target)
    try:
        yield temp
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write `data` (text as UTF-8) to `path` atomically."""
    with staging_file(path) as temp:
        temp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


@contextmanager
def staging_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """`with staging_folder(p) as temp: fill temp` swaps it in for the folder `p` once the block succeeds.

    An existing folder at `p` stays complete until the new one is in place (see `replace_folder`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(staging: Path, target: Path) -> None:
    """Swap `staging` in for `target` by renames: the old folder is moved aside, then deleted."""
    if not target.exists():
        staging.rename(target)
        return
    retired = _sibling(target, "old")
    target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)
