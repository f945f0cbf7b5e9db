"""Micro-batching: concurrent Retrieve calls scored together give each caller its own single-query answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from serving.batching import MicroBatcher
from serving.gen import retrieval_pb2 as pb
from serving.gen import retrieval_pb2_grpc as pb_grpc
from serving.server import Limits, start_server
from tests.test_serving import model_dirs, registry  # noqa: F401 - shared fixtures

QUERIES = ["wooden railway", "hornby coach", "barbie doll", "lego bricks", "kite beach", "jigsaw puzzle", "zzzz",
           "pink dress", "train track", "flying scotsman"] * 3


def test_batcher_answers_equal_single_queries(registry):  # noqa: F811
    r = registry.get("products").model
    sizes = []
    b = MicroBatcher(r, max_batch=8, max_wait_s=0.05, on_batch=sizes.append)
    try:
        futs = [b.submit(q, 1 + i % 4) for i, q in enumerate(QUERIES)]
        for i, (q, f) in enumerate(zip(QUERIES, futs)):
            got, want = f.result(timeout=30), r.retrieve_one(q, k=1 + i % 4)
            assert got.labels == want.labels and got.reason == want.reason
            assert [h.score for h in got.hits] == pytest.approx([h.score for h in want.hits], rel=1e-5)
        assert sum(sizes) == len(QUERIES) and max(sizes) > 1 and max(sizes) <= 8
    finally:
        b.close()


def test_batcher_passes_errors_to_every_waiting_call():
    class Broken:
        def retrieve(self, texts, k):
            raise RuntimeError("boom")

    b = MicroBatcher(Broken(), max_batch=4, max_wait_s=0.01)
    try:
        futs = [b.submit("x", 1) for _ in range(3)]
        for f in futs:
            with pytest.raises(RuntimeError, match="boom"):
                f.result(timeout=10)
        assert b._thread.is_alive()
    finally:
        b.close()


def test_server_micro_batches_concurrent_calls(registry):  # noqa: F811
    running = start_server(registry, port=0, workers=16, limits=Limits(max_wait_ms=20, max_batch=16))
    r = registry.get("products").model
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.RetrievalStub(ch)

            def call(q):
                return stub.Retrieve(pb.RetrieveRequest(model="products", query=q, top_k=3))

            with ThreadPoolExecutor(16) as pool:
                got = list(pool.map(call, QUERIES))
        for q, resp in zip(QUERIES, got):
            assert [h.label for h in resp.hits] == r.retrieve_one(q, k=3).labels
        hist = running.servicer.metrics.batch_size.labels("products")
        batches = [s for m in hist.collect() for s in m.samples if s.name.endswith("_count")][0].value
        assert batches < len(QUERIES)  # some calls shared a batch
    finally:
        running.stop(0.5)
