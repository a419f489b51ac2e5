"""Shared budgets of one server: requests, body bytes and decoding pixels in flight.

Requests and bytes are refused when their budget is spent (503 with Retry-After: no queue grows); decoding
waits for pixels, but only requests already admitted wait, so that queue is bounded by `max_in_flight`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

from fastapi import HTTPException

RETRY_AFTER_S = 1


def busy(what: str, *, close: bool = False) -> HTTPException:
    """503 with Retry-After: the server is at one of its limits; the same request may succeed a second later.
    `close`: the request's body is left unread, so the connection is closed rather than drained."""
    headers = {"Retry-After": str(RETRY_AFTER_S)} | ({"Connection": "close"} if close else {})
    return HTTPException(503, f"server busy: {what}; retry in {RETRY_AFTER_S} s", headers=headers)


class Budget:
    """A count of something held (requests, bytes) with a hard limit: taking more than is left raises 503."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.used = 0

    def take(self, amount: int, *, close: bool = False) -> None:
        if self.used + amount > self.limit:
            raise busy(f"{self.what} would pass the limit of {self.limit:,}", close=close)
        self.used += amount

    def give_back(self, amount: int) -> None:
        self.used = max(0, self.used - amount)

    @contextlib.contextmanager
    def holding(self, amount: int) -> Iterator[None]:
        self.take(amount)
        try:
            yield
        finally:
            self.give_back(amount)


class PixelBudget:
    """Pixels being decoded at once; a decode waits until its pixels fit (any waiter that fits goes first, so a
    small photo never waits behind a large one). A single photo larger than the budget is decoded alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def holding(self, pixels: int) -> AsyncIterator[None]:
        amount = min(pixels, self.limit)
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + amount <= self.limit)
            self.used += amount
        try:
            yield
        finally:
            async with self._changed:
                self.used -= amount
                self._changed.notify_all()
