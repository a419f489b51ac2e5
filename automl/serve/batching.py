"""Micro-batching: concurrent requests share one model call, so throughput rises with load.

A request puts its decoded image on a queue and awaits a future. One consumer task takes the first
waiting image, gathers more for up to `window_s` seconds (or until `max_batch`), runs the model once on
the stacked batch in its own thread (the event loop keeps accepting and decoding requests meanwhile),
and hands each request its row. Under load the queue fills while the model runs, so the next batch is
taken without waiting; a lone client pays at most one window of extra latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

BatchObserver = Callable[[int, float], None]
"""Called after each model call with (batch size, seconds): the metrics hook."""


@dataclass
class _Pending:
    image: np.ndarray
    result: asyncio.Future[np.ndarray]


class MicroBatcher:
    """Gathers single images from concurrent coroutines into batches for `predict` (uint8 N×H×W×3 → N×C)."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch: int = 32,
        window_s: float = 0.005,
        observer: BatchObserver | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if window_s < 0:
            raise ValueError(f"window_s must not be negative, got {window_s}")
        self._predict = predict
        self.max_batch = max_batch
        self.window_s = window_s
        self._observer = observer
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        # One thread: model calls run one at a time, in order, off the event loop.
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def start(self) -> None:
        """Start the consumer task on the running event loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._serve_batches(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop the consumer; requests still queued fail instead of waiting forever."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._queue is not None and not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.result.done():
                pending.result.set_exception(RuntimeError("server is shutting down"))
        self._model_thread.shutdown(wait=True)

    async def predict(self, image: np.ndarray) -> np.ndarray:
        """The model's output row for one image, computed in a batch with whatever else is waiting."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        result: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(image, result))
        return await result

    async def _serve_batches(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather(self._queue)
            if not batch:
                continue
            started = time.perf_counter()
            try:
                rows = await loop.run_in_executor(self._model_thread, self._predict, np.stack([p.image for p in batch]))
            except Exception as exc:
                for pending in batch:
                    if not pending.result.done():
                        pending.result.set_exception(exc)
                continue
            if self._observer is not None:
                self._observer(len(batch), time.perf_counter() - started)
            for pending, row in zip(batch, rows, strict=True):
                if not pending.result.done():  # its client may have gone away meanwhile
                    pending.result.set_result(row)

    async def _gather(self, queue: asyncio.Queue[_Pending]) -> list[_Pending]:
        """The first waiting image, then everything else that arrives within the window, up to max_batch."""
        batch = [await queue.get()]
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return [pending for pending in batch if not pending.result.cancelled()]
