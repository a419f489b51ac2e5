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


def usable_cpus() -> int:
    """CPUs this process may really use: its affinity mask, lowered by a cgroup CPU quota (a container's
    `--cpus`); `os.cpu_count()` is the host's, often far more than a container is given."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cpu_quota()
    return max(1, min(cpus, quota)) if quota is not None else max(1, cpus)


def _cgroup_cpu_quota() -> int | None:
    """The cgroup CPU limit rounded up, from cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`; None: no limit."""
    import math

    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else math.ceil(int(quota) / int(period))
    except (OSError, ValueError):
        pass
    try:
        quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()
        period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        return None if int(quota) <= 0 else math.ceil(int(quota) / int(period))
    except (OSError, ValueError):
        return None
