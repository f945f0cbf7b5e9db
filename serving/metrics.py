"""Prometheus metrics of a server: requests and errors by method, model and status code, latency histograms,
BatchRetrieve sizes, model reloads, and which model versions serve. Each server has its own registry, exposed
on an HTTP port by prometheus-client (``xmr serve --metrics-port``)."""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

# single completions and retrievals take 0.05-0.5 ms in process; the buckets resolve that and the tail
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _Tallies:
    """Per-thread tallies of answered calls and cache lookups, summed when Prometheus scrapes.

    prometheus-client's Counter.inc and Histogram.observe take a lock each and walk the buckets in Python: ~11 us
    a call in the loaded server, where every call runs with cold caches. A thread's own tally needs no lock (only
    that thread writes it; a scrape reads a consistent-enough snapshot under the GIL) and costs ~3 us.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[dict[tuple, list[float]]] = []  # every thread's tally, kept after the thread ends
        self._lock = threading.Lock()

    def mine(self) -> dict[tuple, list[float]]:
        """This thread's tally: key -> [count, seconds, per-bucket counts...]."""
        t = getattr(self._local, "t", None)
        if t is None:
            t = self._local.t = {}
            with self._lock:
                self._all.append(t)
        return t

    def totals(self) -> dict[tuple, list[float]]:
        """Every thread's tallies summed, by key."""
        out: dict[tuple, list[float]] = {}
        with self._lock:
            tallies = list(self._all)
        for t in tallies:
            for key, row in list(t.items()):
                got = out.get(key)
                out[key] = list(row) if got is None else [a + b for a, b in zip(got, row)]
        return out


class _CallCollector:
    """Exposes the tallies as xmr_requests_total, xmr_request_seconds and xmr_cache_lookups_total."""

    def __init__(self, tallies: _Tallies) -> None:
        self.tallies = tallies

    def collect(self) -> Any:
        """The metric families, from the tallies' totals."""
        requests = CounterMetricFamily("xmr_requests", "RPCs answered, by method, model and gRPC status code",
                                       labels=["method", "model", "code"])
        latency = HistogramMetricFamily("xmr_request_seconds", "Time in the RPC handler, by method and model",
                                        labels=["method", "model"])
        cache = CounterMetricFamily("xmr_cache_lookups", "Result-cache lookups, by model and result (hit, miss)",
                                    labels=["model", "result"])
        by_rpc: dict[tuple[str, str], list[float]] = {}
        for key, row in sorted(self.tallies.totals().items()):
            if key[0] == "cache":
                cache.add_metric(list(key[1:]), row[0])
                continue
            requests.add_metric(list(key), row[0])
            got = by_rpc.get(key[:2])
            by_rpc[key[:2]] = row[1:] if got is None else [a + b for a, b in zip(got, row[1:])]
        for labels, (seconds, *counts) in by_rpc.items():
            cumulative, buckets = 0.0, []
            for bound, c in zip((*LATENCY_BUCKETS, float("inf")), counts):
                cumulative += c
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric(list(labels), buckets, seconds)
        return [requests, latency, cache]


class Metrics:
    """The server's metric families, in their own CollectorRegistry."""

    def __init__(self) -> None:
        """Create the families."""
        self.registry = CollectorRegistry()
        self._tallies = _Tallies()
        self.registry.register(_CallCollector(self._tallies))
        self.batch_size = Histogram("xmr_batch_queries", "Queries per batch call (BatchRetrieve or micro-batch)",
                                    ["model"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.reloads = Counter("xmr_model_reloads", "Model reload attempts, by model and outcome",
                               ["model", "outcome"], registry=self.registry)
        self.model_info = Gauge("xmr_model_info", "1 for each model version that serves", ["model", "kind", "version"],
                                registry=self.registry)

    def observe(self, method: str, model: str, code: str, seconds: float) -> None:
        """Count one answered RPC."""
        t = self._tallies.mine()
        key = (method, model, code)
        row = t.get(key)
        if row is None:
            row = t[key] = [0.0] * (len(LATENCY_BUCKETS) + 3)
        row[0] += 1
        row[1] += seconds
        row[2 + bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def cache_lookup(self, model: str, hit: bool) -> None:
        """Count one result-cache lookup."""
        t = self._tallies.mine()
        key = ("cache", model, "hit" if hit else "miss")
        row = t.get(key)
        if row is None:
            row = t[key] = [0.0]
        row[0] += 1

    def serving(self, models: list) -> None:
        """Set the model-info gauge to exactly the given LoadedModels."""
        self.model_info.clear()
        for m in models:
            self.model_info.labels(m.name, m.kind, m.version).set(1)

    def expose(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve /metrics over HTTP on ``host:port`` (0: any free port); returns the port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server.server_port
