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
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

BatchObserver = Callable[[int, float], None]
"""Called after each model call with (batch size, seconds): the metrics hook."""
SHUTTING_DOWN = "server is shutting down"

log = logging.getLogger(__name__)


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

    @property
    def running(self) -> bool:
        """Whether the consumer task is alive (False before `start()` and after it ended)."""
        return self._worker is not None and not self._worker.done()

    async def stop(self) -> None:
        """Stop the consumer; requests still queued fail instead of waiting forever."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._queue is not None and not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.result.done():
                pending.result.set_exception(RuntimeError(SHUTTING_DOWN))
        self._model_thread.shutdown(wait=True)

    async def predict(self, image: np.ndarray) -> np.ndarray:
        """The model's output row for one image, computed in a batch with whatever else is waiting."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        result: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(image, result))
        return await result

    async def _serve_batches(self) -> None:
        """Serve batch after batch; whatever goes wrong with one batch fails its callers, never strands them.

        A model or observer error fails that batch's unanswered callers and the worker goes on; a
        cancellation (`stop()`) fails them too, then ends the worker.
        """
        assert self._queue is not None
        while True:
            batch: list[_Pending] = []
            try:
                await self._gather(self._queue, batch)
                await self._run(batch)
            except asyncio.CancelledError:
                _fail(batch, RuntimeError(SHUTTING_DOWN))
                raise
            except Exception as exc:
                log.exception("a batch of %d images failed", len(batch))
                _fail(batch, exc)

    async def _run(self, batch: list[_Pending]) -> None:
        """One model call for the batch's callers still waiting; each gets its row, then the observer hears of it."""
        waiting = [pending for pending in batch if not pending.result.cancelled()]
        if not waiting:
            return
        started = time.perf_counter()
        images = np.stack([pending.image for pending in waiting])
        rows = await asyncio.get_running_loop().run_in_executor(self._model_thread, self._predict, images)
        seconds = time.perf_counter() - started
        for pending, row in zip(waiting, rows, strict=True):
            if not pending.result.done():  # its client may have gone away meanwhile
                pending.result.set_result(row)
        if self._observer is not None:
            self._observer(len(waiting), seconds)

    async def _gather(self, queue: asyncio.Queue[_Pending], batch: list[_Pending]) -> None:
        """Into `batch`: the first waiting image, then what else arrives within the window, up to max_batch.

        Filled in place, so that a cancellation while gathering still knows whom it took off the queue.
        """
        batch.append(await queue.get())
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


def _fail(batch: list[_Pending], error: BaseException) -> None:
    """Hand `error` to every caller of `batch` that has no answer yet."""
    for pending in batch:
        if not pending.result.done():
            pending.result.set_exception(error)
