"""Connections that never finish their request headers (slowloris) are closed, and open connections are capped.

Uvicorn starts its timeouts only once a request's headers are complete (the upload timeout in `upload.py`
too), and its keep-alive timer is disarmed by the first byte of the next request: a client that sends a
header line every few seconds holds a connection, a descriptor and a slot forever. With a few hundred of
them the process runs out of descriptors and `/healthz` goes unanswered.

`guarded_h11(header_timeout_s, max_connections)` is uvicorn's own h11 protocol with two additions:
- a header timer, armed when a connection opens and again after each response (waiting for the next
  request): if the client has not finished a request's headers when it fires, the connection is closed;
- a cap on open connections: a new connection beyond it evicts the oldest one still waiting for its
  headers (the slow ones), or, when every connection is busy with a real request, is closed itself.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

DESCRIPTORS_KEPT = 64
"""Descriptors left for the process itself (model files, TensorFlow, logs, the listening socket)."""


def default_max_connections() -> int:
    """Open connections allowed: the descriptor limit less what the process needs, at most 1000."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 1000 if soft == resource.RLIM_INFINITY else soft - DESCRIPTORS_KEPT
    return max(8, min(1000, limit))


def guarded_h11(header_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """Uvicorn's h11 protocol class with a request-header timeout and a cap on open connections."""

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _opened_at: float = 0.0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._opened_at = self.loop.time()
            self._arm_header_timer()
            if len(self.connections) > max_connections:
                self._make_room()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # a request's headers are complete
                self._disarm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()  # the next request's headers must come in time too

        def waiting_for_headers(self) -> bool:
            return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

        def _arm_header_timer(self) -> None:
            self._disarm_header_timer()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.waiting_for_headers():
                log.info(
                    "%s: no complete request headers within %g s; connection closed", _peer(self), header_timeout_s
                )
                self.transport.close()

        def _make_room(self) -> None:
            """Close the oldest connection still waiting for headers; with none, refuse this one."""
            idle: list[Any] = [
                c
                for c in self.connections
                if c is not self and isinstance(c, GuardedH11Protocol) and c.waiting_for_headers()
            ]
            if idle:
                min(idle, key=lambda c: c._opened_at).transport.close()
            else:
                log.warning("%d connections open, every one busy: refusing %s", len(self.connections), _peer(self))
                self.transport.close()

    return GuardedH11Protocol


def _peer(protocol: H11Protocol) -> str:
    return f"{protocol.client[0]}:{protocol.client[1]}" if protocol.client else "a client"
