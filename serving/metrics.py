"""Prometheus metrics of a server: requests and errors by method, model and status code, latency histograms,
BatchRetrieve sizes, model reloads, and which model versions serve. Each server has its own registry, exposed
on an HTTP port by prometheus-client (``xmr serve --metrics-port``)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# single completions and retrievals take 0.05-0.5 ms in process; the buckets resolve that and the tail
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """The server's metric families, in their own CollectorRegistry."""

    def __init__(self) -> None:
        """Create the families."""
        self.registry = CollectorRegistry()
        self.requests = Counter("xmr_requests", "RPCs answered, by method, model and gRPC status code",
                                ["method", "model", "code"], registry=self.registry)
        self.latency = Histogram("xmr_request_seconds", "Time in the RPC handler, by method and model",
                                 ["method", "model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("xmr_batch_queries", "Queries per batch call (BatchRetrieve or micro-batch)",
                                    ["model"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.reloads = Counter("xmr_model_reloads", "Model reload attempts, by model and outcome",
                               ["model", "outcome"], registry=self.registry)
        self.model_info = Gauge("xmr_model_info", "1 for each model version that serves", ["model", "kind", "version"],
                                registry=self.registry)
        self.cache_lookups = Counter("xmr_cache_lookups", "Result-cache lookups, by model and result (hit, miss)",
                                     ["model", "result"], registry=self.registry)
        self._children: dict[tuple, Any] = {}

    def _child(self, family: Any, *labels: str) -> Any:
        # labels() costs ~4 us a call; the label sets are few (served model names only), so keep the children
        key = (id(family), *labels)
        got = self._children.get(key)
        if got is None:
            got = self._children[key] = family.labels(*labels)
        return got

    def observe(self, method: str, model: str, code: str, seconds: float) -> None:
        """Count one answered RPC."""
        self._child(self.requests, method, model, code).inc()
        self._child(self.latency, method, model).observe(seconds)

    def cache_lookup(self, model: str, hit: bool) -> None:
        """Count one result-cache lookup."""
        self._child(self.cache_lookups, model, "hit" if hit else "miss").inc()

    def serving(self, models: list) -> None:
        """Set the model-info gauge to exactly the given LoadedModels."""
        self.model_info.clear()
        for m in models:
            self.model_info.labels(m.name, m.kind, m.version).set(1)

    def expose(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve /metrics over HTTP on ``host:port`` (0: any free port); returns the port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server.server_port
