"""Untrusted text (file names, labels, error messages, anything read from a run folder) made safe for a terminal.

Rich reads `[...]` as markup: a file named `[/b].jpg` or a label `[/]` would crash a table with a
`MarkupError`, and `[link=...]` would forge a link. Control characters (ESC, BEL, carriage return) in a
name would move the cursor, recolour the terminal or hide a line. `safe()` escapes the markup and
shows every control character as a visible `\\xNN` escape.
"""

from __future__ import annotations

import re
from typing import Any

from rich.markup import escape

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(value: Any) -> str:
    """`value` as text with control characters shown as `\\xNN` (for plain output: typer.echo, JSON-less lines)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def safe(value: Any) -> str:
    """`value` as Rich markup that prints literally: markup escaped, control characters made visible."""
    return escape(plain(value))
