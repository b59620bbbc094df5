"""Prometheus metrics for the service, one registry per app so tests can build many apps.

With ``--workers N`` each worker is its own process; ``serve`` then sets
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` sums all workers (prometheus-client's
multiprocess mode), so a scrape never sees just one random worker.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

# Label values come from closed sets, whatever clients send: a made-up method is "other", a path no
# route matches is "unmatched" (issue #21: 2,000 requests with 1 KB method names made /metrics 40 MB).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The service's metrics; names start with ``seedlings_``."""

    def __init__(self):
        self.multiprocess = multiprocess_dir() is not None
        # In multiprocess mode values live in files shared by the workers, not in a registry.
        self.registry = CollectorRegistry()
        reg = None if self.multiprocess else self.registry
        if not self.multiprocess:
            ProcessCollector(registry=self.registry)
        self.requests = Counter("seedlings_http_requests_total", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=reg)
        self.latency = Histogram("seedlings_http_request_duration_seconds", "HTTP request latency",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=reg)
        self.in_flight = Gauge("seedlings_http_requests_in_flight", "HTTP requests being handled",
                               registry=reg, multiprocess_mode="livesum")
        self.batch_size = Histogram("seedlings_batch_size", "images per model run (micro-batching)",
                                    buckets=BATCH_BUCKETS, registry=reg)
        self.inference = Histogram("seedlings_inference_seconds", "model run time per batch",
                                   buckets=INFERENCE_BUCKETS, registry=reg)
        self.queue_depth = Gauge("seedlings_queue_depth", "images waiting for the model", registry=reg,
                                 multiprocess_mode="livesum")
        self.images = Counter("seedlings_images_total", "images classified", registry=reg)
        self.rejected = Counter("seedlings_images_rejected_total",
                                "inputs refused, by reason: each unusable image, or a request refused whole "
                                "(body, budget, queue)", ["reason"], registry=reg)
        self.ready = Gauge("seedlings_ready", "1 once the model is loaded and warmed", registry=reg,
                           multiprocess_mode="livemin")
        self.model_switches = Counter("seedlings_model_switches_total",
                                      "serve --model REGISTRY: versions swapped in (result=swapped) or left out "
                                      "because they did not load (result=failed)", ["result"], registry=reg)
        # (route, method, status) -> the request counter and latency histogram for those labels. Bounded:
        # routes are templates and statuses are the few the app returns.
        self._children: dict[tuple[str, str, int], tuple] = {}

    def observe_request(self, route: str, method: str, status: int, started: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a tuple check on every call; keep its children
            children = self._children[key] = (self.requests.labels(route, method, str(status)),
                                              self.latency.labels(route, method))
        children[0].inc()
        children[1].observe(time.perf_counter() - started)

    def observe_refused(self, status: int, reason: str) -> None:
        """A request the HTTP layer refused before the app saw it (malformed: 400; headers too slow: 408)."""
        self.observe_request("unparsed", "other", status, time.perf_counter())
        self.rejected.labels(reason).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every request by its route template, not its path.

    Route templates (``/v2/models/{name}/infer``) keep label cardinality bounded whatever
    paths clients send; unmatched paths are counted as ``unmatched``.
    """

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.observe_request(label, method if method in METHODS else "other", status["code"], started)
