"""What a measurement ran on: CPU model, cores, memory and library versions, for reports and benchmarks."""

from __future__ import annotations

import os
import platform
from functools import cache
from importlib import metadata
from pathlib import Path

LIBRARIES = ("automl", "tensorflow-cpu", "keras", "ray", "optuna", "fastparquet", "numpy", "scikit-learn")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages / 2**30, 1)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@cache
def describe() -> dict[str, object]:
    """A JSON-ready description of this machine and the library versions in use."""
    return {
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": _memory_gib(),
        "gpu": None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": {name: version for name in LIBRARIES if (version := _version(name))},
    }


def one_line() -> str:
    """`AMD EPYC 9R14, 2 cores, 23.4 GiB, Linux 6.1, Python 3.11.7`: the header of a results table."""
    info = describe()
    return f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, {info['os']}, Python {info['python']}"
