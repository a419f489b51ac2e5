"""Run every benchmark in turn (`make bench`), each in its own process so none inherits another's threads.

    python -m benchmarks [NAME ...]      # default: all, in the order below

Each benchmark replaces its own section of benchmarks/RESULTS.md. Run on a quiet machine: numbers taken
while other jobs share the cores are not comparable.
"""

from __future__ import annotations

import subprocess
import sys

ALL = (
    "decode",
    "extraction",
    "openvino_settings",
    "cache_read",
    "cache_precision",
    "train_trial",
    "search_throughput",
    "phases",
    "serve_load",
)


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(ALL)}", file=sys.stderr)
        return 2
    failed = []
    for name in names or ALL:
        print(f"== benchmarks.{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"missed targets or failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
