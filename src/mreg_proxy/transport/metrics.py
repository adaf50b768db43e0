"""Prometheus metrics: what the proxy served, how fast, and what authentication cost.

One CollectorRegistry per application (not the process-wide default), so that every app, in
tests too, counts on its own. The authenticator already counts its bcrypt checks and cache hits;
a custom collector reads those counters at scrape time instead of counting them a second time.
"""

from __future__ import annotations

import time
from typing import Iterator, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ..keys import METRICS, SOURCE
from .forwarder import BODY_BYTES, UPSTREAM_ERROR

CONTENT_TYPE = CONTENT_TYPE_LATEST

# From a cached-credential HEAD (about a millisecond) to a multi-GB layer (minutes).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


# (metric name, help, the Authenticator's counter it reads)
AUTH_COUNTERS = (
    ("mreg_bcrypt_verifications", "Passwords checked with bcrypt (cache misses).", "bcrypt_checks"),
    ("mreg_credential_cache_hits", "Requests whose credentials were found in the verified-credential cache.",
     "cache_hits"),
    ("mreg_logins_throttled", "Password checks refused (429) after too many failures from the address.",
     "throttled"),
    ("mreg_logins_busy", "Password checks refused (503) because too many were waiting.", "busy"),
)


class AuthCounters(Protocol):
    """What the password checks count (auth/passwords.py's Authenticator)."""

    bcrypt_checks: int
    cache_hits: int
    throttled: int
    busy: int


class _AuthCollector(Collector):
    def __init__(self, authenticator: AuthCounters) -> None:
        self._authenticator = authenticator

    def collect(self) -> Iterator[Metric]:
        for name, documentation, attribute in AUTH_COUNTERS:
            yield CounterMetricFamily(name, documentation, value=getattr(self._authenticator, attribute))


class Metrics:
    def __init__(self, authenticator: AuthCounters) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "mreg_requests", "Requests answered, by method and status class (2xx, 4xx, ...).",
            ("method", "status"), registry=self.registry,
        )
        self._request_counters: dict[tuple[str, int], Counter] = {}
        self._bytes_in = Counter(
            "mreg_received_bytes", "Request body bytes received from clients.", registry=self.registry
        )
        self._bytes_out = Counter(
            "mreg_sent_bytes", "Response body bytes relayed to clients.", registry=self.registry
        )
        self._duration = Histogram(
            "mreg_request_duration_seconds", "Time from request to the last body byte sent.",
            buckets=DURATION_BUCKETS, registry=self.registry,
        )
        self._upstream_errors = Counter(
            "mreg_upstream_errors", "Registry failures: unreachable, bad answer, or broke off mid-body.",
            ("kind",), registry=self.registry,
        )
        self._reads = Counter(
            "mreg_reads", "Manifest and blob reads (GET, HEAD), by who answered: storage (the "
            "registry's files, read by the proxy) or registry (forwarded).",
            ("source",), registry=self.registry,
        )
        self._read_counters: dict[str, Counter] = {}
        self.registry.register(_AuthCollector(authenticator))

    def observe(
        self, method: str, status: int, seconds: float, bytes_in: int, bytes_out: int, upstream_error: str | None,
        source: str | None = None,
    ) -> None:
        key = (method, status // 100)
        counter = self._request_counters.get(key)
        if counter is None:  # prometheus_client's labels() takes a lock and builds keys: once per pair
            counter = self._request_counters[key] = self._requests.labels(method, f"{status // 100}xx")
        counter.inc()
        self._duration.observe(seconds)
        if bytes_in:
            self._bytes_in.inc(bytes_in)
        if bytes_out:
            self._bytes_out.inc(bytes_out)
        if upstream_error is not None:
            self._upstream_errors.labels(upstream_error).inc()
        if source is not None:
            self._reads_by_source(source).inc()

    def _reads_by_source(self, source: str) -> Counter:
        counter = self._read_counters.get(source)
        if counter is None:
            counter = self._read_counters[source] = self._reads.labels(source)
        return counter

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts every request once it is over (the body included: proxied bodies stream inside
    the handler). A handful of dict updates per request, nothing that waits."""
    started = time.perf_counter()
    status = 500  # what aiohttp answers when a handler raises
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[METRICS].observe(
            request.method,
            status,
            time.perf_counter() - started,
            request.content.total_bytes,
            request.get(BODY_BYTES, 0),
            request.get(UPSTREAM_ERROR),
            request.get(SOURCE),
        )
