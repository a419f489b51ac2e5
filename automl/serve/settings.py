"""The server's limits and knobs, in a module light enough for the CLI to read its defaults from."""

from __future__ import annotations

import os
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """Limits on uploads, the micro-batcher's shape, decode threads and the optional API key."""

    max_body_bytes: int = 20 * MIB
    upload_timeout_s: float = 30.0
    max_batch: int = 32
    batch_window_ms: float = 5.0
    decode_threads: int = os.cpu_count() or 2
    api_key: str | None = None
