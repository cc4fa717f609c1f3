"""Prometheus metrics of the lookup service (``prometheus_client``).

``lakeloop_serve_requests_total{route, method, status}``, ``lakeloop_serve_request_seconds{route}`` (a
latency histogram), ``lakeloop_serve_errors_total{route, kind}`` (5xx answers and requests that failed
without one) and, read from the store when scraped, ``lakeloop_serving_version_info{version}`` and
``lakeloop_serving_store_up``.  ``route`` is the route's template (``/v1/predictions/{key}``), so the
label set stays small.  With several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set by the server
before the workers start) every worker writes its samples to that folder and ``/metrics`` adds them up,
whichever worker answers.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from lakeloop.serving.base import ServingStore

__all__ = ["ServiceMetrics", "MULTIPROC_ENV"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _StoreCollector:
    """Reads the served version at scrape time (never stale, nothing per request)."""

    def __init__(self, store: ServingStore) -> None:
        self.store = store

    def collect(self):  # noqa: ANN201 - prometheus_client collector protocol
        up = GaugeMetricFamily("lakeloop_serving_store_up", "1 when the serving store answered this scrape")
        info = GaugeMetricFamily("lakeloop_serving_version_info", "the version being served (label)",
                                 labels=["version"])
        try:
            version = self.store.current_version()
        except Exception:  # noqa: BLE001 - a store failure is what this metric reports
            up.add_metric([], 0.0)
        else:
            up.add_metric([], 1.0)
            info.add_metric([version or ""], 1.0)
        yield up
        yield info


class ServiceMetrics:
    """The service's counters and histogram, in a registry of their own (one per application)."""

    def __init__(self, store: ServingStore) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("lakeloop_serve_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("lakeloop_serve_request_seconds", "time from request to the last byte of the answer",
                                 ["route"], buckets=_BUCKETS, registry=self.registry)
        self.errors = Counter("lakeloop_serve_errors", "5xx answers, and requests that ended without an answer",
                              ["route", "kind"], registry=self.registry)
        self._store = _StoreCollector(store)
        if not self.multiprocess:
            self.registry.register(self._store)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 500:
            self.errors.labels(route, str(status)).inc()

    def failed(self, route: str, kind: str) -> None:
        self.errors.labels(route, kind).inc()

    def render(self) -> tuple[bytes, str]:
        """The ``/metrics`` body: this process's samples, or every worker's in multiprocess mode."""
        if not self.multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(self._store)
        return generate_latest(registry), CONTENT_TYPE_LATEST
