"""Keep benchmarks/RESULTS.md current: each benchmark replaces its own section, stamped with machine and date."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from automl.machine import one_line

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = "# Benchmark results\n\nLatest numbers of each benchmark in `benchmarks/`; `make bench` reruns them all.\n"


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
