"""Keep benchmarks/RESULTS.md current: each benchmark replaces its own section, stamped with machine and date."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from pathlib import Path

from automl.machine import one_line

RESULTS = Path(__file__).with_name("RESULTS.md")
OUT = Path(__file__).with_name("out")
"""Raw numbers and plots of the latest runs (ignored by git; RESULTS.md is the record)."""
HEADER = "# Benchmark results\n\nLatest numbers of each benchmark in `benchmarks/`; `make bench` reruns them all.\n"


def publish(name: str, title: str, results: object, summary: str, command: str | None = None) -> None:
    """Raw numbers to benchmarks/out/<name>.json, `summary` to RESULTS.md section `name` and to stdout.

    `command` reproduces the run; by default the benchmark's module with this process's arguments.
    """
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    command = command or " ".join([f"python -m benchmarks.{Path(sys.argv[0]).stem}", *sys.argv[1:]])
    record(name, title, summary, command)
    print(summary)


def verdicts(checks: dict[str, bool]) -> str:
    """One `- PASS: check` / `- FAIL: check` line per stated target."""
    return "\n".join(f"- {'PASS' if passed else 'FAIL'}: {check}" for check, passed in checks.items())


def record(name: str, title: str, body: str, command: str) -> None:
    """Replace (or append) the section `name` of RESULTS.md with `body`, under a machine-and-date stamp."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- {name} -->\n## {title}\n\n"
        f"Measured {stamp} on {one_line()} with `{command}`.\n\n{body.strip()}\n<!-- /{name} -->\n"
    )
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else f"{text.rstrip()}\n\n{section}"
    RESULTS.write_text(text)


def table(rows: list[dict[str, object]]) -> str:
    """A Markdown table from rows that share their keys."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(str(row.get(key, "")) for key in keys) + " |" for row in rows]
    return "\n".join(lines)
