"""Prometheus metrics of one server: requests by status, latency, batch sizes, model time, process memory.

Each app gets its own registry (not the global one), so several apps in one process, as in the tests,
never collide, and `/metrics` shows only this server's series.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    """The series `/metrics` exposes; `record_batch` is the micro-batcher's observer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu seconds, open fds
        self.requests = Counter(
            "automl_http_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "automl_http_request_duration_seconds",
            "Time from request start to the end of the response.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "automl_batch_size",
            "Images per model call (micro-batching).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_seconds = Histogram(
            "automl_model_call_duration_seconds",
            "Time of one batched model call.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def record_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.model_seconds.observe(seconds)


class MetricsMiddleware:
    """Counts every HTTP response by route and status and times it (pure ASGI: it never buffers bodies).

    Routes outside `routes` are labelled `other`, so that scanners probing random paths cannot grow the
    number of series without bound.
    """

    def __init__(self, app: ASGIApp, *, metrics: ServerMetrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "other"
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before starting a response

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
