"""The server's limits and knobs, in a module light enough for the CLI to read its defaults from.

Every resource a client can make the server spend has a bound here (RELIABILITY.md gives the measured
cost behind each default): bytes per upload and in flight, requests in flight, pixels per decode and in
decoding at once, decode threads, open connections and the time to send request headers and a body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from automl.machine import usable_cpus
from automl.serve.connections import default_max_connections

MIB = 1024 * 1024


def _decode_threads() -> int:
    """One per CPU this container may use (affinity and cgroup quota, not the host's count), at most 4."""
    return min(4, usable_cpus())


@dataclass(frozen=True)
class ServeSettings:
    """Limits on uploads, decoding, requests and connections; the micro-batcher's shape; the optional API key."""

    max_body_bytes: int = 20 * MIB
    upload_timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    """A connection that has not sent a whole request's headers within this is closed (slowloris)."""
    max_batch: int = 32
    batch_window_ms: float = 5.0
    decode_threads: int = field(default_factory=_decode_threads)
    max_pixels: int = 16_000_000
    """Most pixels decoded for one photo (after a JPEG's DCT scaling, so any camera JPEG passes). Decode time
    and memory grow with it: a 16 MP RGBA PNG costs ~0.3 s and ~210 MB at peak."""
    max_in_flight: int = 64
    """Requests to /v1/predict being handled at once; one more gets 503 with Retry-After."""
    max_upload_bytes_in_flight: int = 128 * MIB
    """Bytes of request bodies held at once over all requests; a body that would pass it gets 503."""
    max_connections: int = field(default_factory=default_max_connections)
    """Open connections; beyond, the oldest one still sending its headers is closed (see connections.py)."""
    api_key: str | None = None

    @property
    def decode_pixel_budget(self) -> int:
        """Pixels decoding at once: one photo at the limit plus a quarter more, so that small photos are
        never queued behind a large one while a second large one waits its turn."""
        return self.max_pixels + self.max_pixels // 4
