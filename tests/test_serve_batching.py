"""The micro-batcher on its own: concurrent callers share model calls and each gets its own row back."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from automl.serve.batching import MicroBatcher


def image_sums(images: np.ndarray) -> np.ndarray:
    """A real, cheap 'model': one output row per image that identifies the image it came from."""
    return images.reshape(len(images), -1).sum(axis=1, dtype=np.int64)[:, None]


def image(value: int) -> np.ndarray:
    return np.full((2, 2, 3), value, dtype=np.uint8)


def run_batched(callers: int, *, max_batch: int, window_s: float) -> tuple[list[np.ndarray], list[int]]:
    batches: list[int] = []

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(
            image_sums, max_batch=max_batch, window_s=window_s, observer=lambda size, _: batches.append(size)
        )
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.predict(image(i)) for i in range(callers)))
        finally:
            await batcher.stop()

    return asyncio.run(scenario()), batches


def test_concurrent_callers_share_batches_and_get_their_own_rows() -> None:
    rows, batches = run_batched(40, max_batch=16, window_s=0.05)
    assert [int(row[0]) for row in rows] == [i * 12 for i in range(40)]
    assert sum(batches) == 40
    assert max(batches) == 16, f"expected full batches of 16 under load, got {batches}"
    assert len(batches) <= 4


def test_without_a_window_a_lone_burst_still_batches_what_is_queued() -> None:
    rows, batches = run_batched(8, max_batch=32, window_s=0.0)
    assert [int(row[0]) for row in rows] == [i * 12 for i in range(8)]
    assert sum(batches) == 8


def test_a_failing_model_call_fails_its_callers_and_the_batcher_goes_on() -> None:
    calls = 0

    def fails_once(images: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("model exploded")
        return image_sums(images)

    async def scenario() -> tuple[list[object], np.ndarray]:
        batcher = MicroBatcher(fails_once, max_batch=4, window_s=0.05)
        await batcher.start()
        try:
            first = await asyncio.gather(*(batcher.predict(image(1)) for _ in range(3)), return_exceptions=True)
            return first, await batcher.predict(image(2))
        finally:
            await batcher.stop()

    first, later = asyncio.run(scenario())
    assert all(isinstance(result, RuntimeError) and "model exploded" in str(result) for result in first)
    assert int(later[0]) == 24


def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    async def scenario() -> list[int]:
        batcher = MicroBatcher(image_sums, max_batch=8, window_s=0.05)
        await batcher.start()
        try:
            gone = asyncio.create_task(batcher.predict(image(9)))
            kept = [asyncio.create_task(batcher.predict(image(i))) for i in range(3)]
            await asyncio.sleep(0)
            gone.cancel()
            return [int((await task)[0]) for task in kept]
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == [0, 12, 24]


@pytest.mark.parametrize(("max_batch", "window_s"), [(0, 0.01), (4, -1.0)])
def test_bad_settings_are_refused(max_batch: int, window_s: float) -> None:
    with pytest.raises(ValueError, match=r"max_batch|window_s"):
        MicroBatcher(image_sums, max_batch=max_batch, window_s=window_s)


def test_a_failing_observer_neither_fails_the_callers_nor_stops_the_batcher() -> None:
    def broken_metrics(size: int, seconds: float) -> None:
        raise RuntimeError("metrics backend down")

    async def scenario() -> list[int]:
        batcher = MicroBatcher(image_sums, max_batch=4, window_s=0.01, observer=broken_metrics)
        await batcher.start()
        try:
            first = await asyncio.wait_for(asyncio.gather(*(batcher.predict(image(i)) for i in range(3))), 5)
            later = await asyncio.wait_for(batcher.predict(image(5)), 5)
            return [int(row[0]) for row in [*first, later]]
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == [0, 12, 24, 60]


def test_stopping_while_a_batch_is_in_the_model_fails_its_callers_instead_of_stranding_them() -> None:
    in_model = threading.Event()
    release = threading.Event()

    def slow_model(images: np.ndarray) -> np.ndarray:
        in_model.set()
        release.wait(5)
        return image_sums(images)

    async def scenario() -> list[object]:
        batcher = MicroBatcher(slow_model, max_batch=4, window_s=0.01)
        await batcher.start()
        callers = [asyncio.create_task(batcher.predict(image(i))) for i in range(2)]
        await asyncio.to_thread(in_model.wait, 5)
        threading.Timer(0.2, release.set).start()  # the model call ends on its own; stop() waits for it
        await batcher.stop()
        return await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 5)

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) and "shutting down" in str(r) for r in results), results
