"""serving.metrics: per-thread call tallies add up to the right Prometheus counters and histograms."""

from __future__ import annotations

import threading

import numpy as np
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from serving.metrics import LATENCY_BUCKETS, Metrics


def _samples(m: Metrics) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_tallies_from_many_threads_sum_to_counters_and_cumulative_buckets() -> None:
    m = Metrics()
    rng = np.random.default_rng(1)
    seconds = [rng.exponential(0.002, 500) for _ in range(4)]
    codes = ["OK", "OK", "NOT_FOUND", "OK"]

    def work(i: int) -> None:
        for s in seconds[i]:
            m.observe("Retrieve", "aol", codes[i], float(s))
            m.cache_lookup("aol", s < 0.001)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = _samples(m)
    allsec = np.concatenate(seconds)
    assert got[("xmr_requests_total", (("code", "OK"), ("method", "Retrieve"), ("model", "aol")))] == 1500
    assert got[("xmr_requests_total", (("code", "NOT_FOUND"), ("method", "Retrieve"), ("model", "aol")))] == 500
    labels = (("method", "Retrieve"), ("model", "aol"))
    assert got[("xmr_request_seconds_count", labels)] == 2000
    assert np.isclose(got[("xmr_request_seconds_sum", labels)], allsec.sum())
    for bound in LATENCY_BUCKETS:  # Prometheus buckets are cumulative and inclusive: le="bound" counts <= bound
        assert got[("xmr_request_seconds_bucket", (("le", repr(bound)), *labels))] == (allsec <= bound).sum()
    assert got[("xmr_request_seconds_bucket", (("le", "+Inf"), *labels))] == 2000
    assert got[("xmr_cache_lookups_total", (("model", "aol"), ("result", "hit")))] == (allsec < 0.001).sum()
    assert got[("xmr_cache_lookups_total", (("model", "aol"), ("result", "miss")))] == (allsec >= 0.001).sum()


def test_no_calls_no_samples() -> None:
    assert not any(name.startswith(("xmr_requests", "xmr_request_seconds")) for name, _ in _samples(Metrics()))
