"""A router with 2 shard servers on loopback answers every query exactly as the unsplit retriever; a shard that
is down turns the router's health NOT_SERVING and its calls UNAVAILABLE, or partial when the request allows."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.gen import retrieval_pb2 as pb
from serving.gen import retrieval_pb2_grpc as pb_grpc
from serving.gen import shard_pb2 as spb
from serving.gen import shard_pb2_grpc as spb_grpc
from serving.models import RETRIEVAL, LoadedModel, ModelRegistry
from serving.router import RoutedRetriever
from serving.server import Limits, start_server
from serving.shard_server import start_shard_server
from tests.test_shards import synthetic
from xmr.retriever import Retriever
from xmr.shards import Router, split
from xmr.validation import InputError


@pytest.fixture(scope="module")
def setup():
    texts, labels, queries, meta = synthetic()
    r = Retriever.train(texts, labels, features="word", label_metadata=meta, nr_splits=4, max_leaf_size=6,
                        threads=1, seed=0)
    router, parts = split(r, 2)
    shards = [start_shard_server(p, workers=2) for p in parts]
    routed = RoutedRetriever(router, [f"127.0.0.1:{s.port}" for s in reversed(shards)])  # any order
    registry = ModelRegistry([LoadedModel("products", RETRIEVAL, routed, routed.model_version, "")])
    front = start_server(registry, port=0, workers=4, limits=Limits(cache_size=0))
    ch = grpc.insecure_channel(f"127.0.0.1:{front.port}")
    yield r, queries, shards, routed, front, pb_grpc.RetrievalStub(ch), ch
    ch.close()
    front.stop(0.5)
    routed.close()
    for s in shards:
        s.stop(0.5)


def test_routed_answers_equal_the_unsplit_retriever(setup):
    r, queries, _, _, _, stub, _ = setup
    for q in filter(str.strip, queries):  # the server refuses empty queries before any model sees them
        for k, beam in [(10, 0), (4, 3)]:
            resp = stub.Retrieve(pb.RetrieveRequest(model="products", query=q, top_k=k, beam_size=beam))
            want = r.retrieve_one(q, k=k, beam_size=beam or None)
            assert [h.label for h in resp.hits] == want.labels, q
            assert [h.score for h in resp.hits] == [h.score for h in want.hits]
            assert resp.reason == (want.reason or "") and not resp.partial
            assert resp.model_version == r.model_version
    hit = next(h for q in queries for h in stub.Retrieve(pb.RetrieveRequest(model="products", query=q, top_k=10)).hits
               if h.metadata)
    assert hit.metadata["title"].startswith("item ")
    batch = stub.BatchRetrieve(pb.BatchRetrieveRequest(model="products", queries=queries[:20], top_k=5))
    assert [[h.label for h in x.hits] for x in batch.results] == [r.retrieve_one(q, k=5).labels for q in queries[:20]]


def test_shard_requests_are_checked(setup):
    _, _, shards, routed, _, _, _ = setup
    with grpc.insecure_channel(f"127.0.0.1:{shards[0].port}") as ch:
        stub = spb_grpc.ShardStub(ch)
        ok = dict(feature_ids=[1], feature_values=[1.0], parents=[int(shards[0].servicer.shard.parents[0])],
                  parent_scores=[1.0], top_k=5, beam_size=10, model_version=routed.model_version)
        assert stub.Expand(spb.ExpandRequest(**ok)).hits is not None
        for change, code, words in [
            ({"model_version": "old"}, grpc.StatusCode.FAILED_PRECONDITION, "model version"),
            ({"top_k": 0}, grpc.StatusCode.INVALID_ARGUMENT, "top_k"),
            ({"feature_values": []}, grpc.StatusCode.INVALID_ARGUMENT, "feature_ids and feature_values"),
            ({"parents": [10**6]}, grpc.StatusCode.INVALID_ARGUMENT, "not on shard 0"),
            ({"parents": []}, grpc.StatusCode.INVALID_ARGUMENT, "parents and parent_scores"),
            ({"feature_ids": [10**9]}, grpc.StatusCode.INVALID_ARGUMENT, "feature id"),
            ({"feature_values": [float("nan")]}, grpc.StatusCode.INVALID_ARGUMENT, "non-finite"),
        ]:
            with pytest.raises(grpc.RpcError) as e:
                stub.Expand(spb.ExpandRequest(**{**ok, **change}))
            assert e.value.code() == code and words in e.value.details(), change
        d = stub.Describe(spb.DescribeRequest())
        assert (d.shard, d.nr_shards, d.model_version) == (0, 2, routed.model_version)


def test_router_refuses_a_wrong_set_of_shards(setup):
    _, _, shards, routed, _, _, _ = setup
    with pytest.raises(InputError, match=r"no server for shard\(s\) \[1\]"):
        RoutedRetriever(routed.router, [f"127.0.0.1:{shards[0].port}"])
    with pytest.raises(InputError, match="is shard 0 again"):
        RoutedRetriever(routed.router, [f"127.0.0.1:{shards[0].port}"] * 2)
    with pytest.raises(InputError, match="UNAVAILABLE"):
        RoutedRetriever(routed.router, ["127.0.0.1:1", f"127.0.0.1:{shards[0].port}"])


def test_reload_a_routed_model(setup, tmp_path):
    """ReloadModel loads the router directory again over the same shards; a router of another version is
    refused (FAILED_PRECONDITION naming the mismatch) and the old one serves on."""
    from xmr.shards import save_split

    r, queries, shards, _, _, _, _ = setup
    router, parts = split(r, 2)
    router_dir = save_split(router, parts, tmp_path / "split")[0]
    routed = RoutedRetriever(Router.load(router_dir), [f"127.0.0.1:{s.port}" for s in shards])
    seen = []
    routed.watch(seen.append, 0.05)
    front = start_server(ModelRegistry([LoadedModel("products", RETRIEVAL, routed, routed.model_version,
                                                    str(router_dir))]), port=0, workers=2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{front.port}") as ch:
            stub = pb_grpc.RetrievalStub(ch)
            resp = stub.ReloadModel(pb.ReloadModelRequest(model="products"))
            assert resp.previous_version == resp.model.version == r.model_version
            new = front.servicer.registry.get("products").model
            assert new is not routed and new.router is not routed.router
            want = r.retrieve_one(queries[0], k=5).labels
            assert [h.label for h in stub.Retrieve(pb.RetrieveRequest(model="products", query=queries[0],
                                                                      top_k=5)).hits] == want
            other = Retriever.train(*synthetic()[:2], features="word", nr_splits=4, max_leaf_size=6, threads=1,
                                    seed=1)
            save_split(*split(other, 2), tmp_path / "split")  # a new version, its shards not started
            with pytest.raises(grpc.RpcError) as e:
                stub.ReloadModel(pb.ReloadModelRequest(model="products"))
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "model version" in e.value.details()
            assert front.servicer.registry.get("products").model is new
            assert [h.label for h in stub.Retrieve(pb.RetrieveRequest(model="products", query=queries[0],
                                                                      top_k=5)).hits] == want
        assert new._watching == (seen.append, 0.05)  # watched like the old one: `xmr route`'s health follows it
    finally:
        front.stop(0.5)
        front.servicer.registry.get("products").model.close()


def test_a_shard_down_turns_health_and_calls_unavailable_or_partial(setup):
    r, queries, shards, routed, front, stub, ch = setup
    from serving.server import SERVICE_NAME

    states = []

    def on_change(up: bool) -> None:  # what `xmr route` does with the watcher's news
        states.append(up)
        for name in ("", SERVICE_NAME):
            front.health.set(name, health_pb2.HealthCheckResponse.SERVING if up
                             else health_pb2.HealthCheckResponse.NOT_SERVING)

    routed.watch(on_change, interval_s=0.2)
    h = health_pb2_grpc.HealthStub(ch)
    # a query whose beam reaches both shards
    q = next(q for q in queries if (x := routed.router.route_one(q)) is not None and len(routed.router.plan(x[2])) == 2)
    full = stub.Retrieve(pb.RetrieveRequest(model="products", query=q, top_k=10))
    shards[1].stop(0)
    deadline = time.time() + 10
    while h.Check(health_pb2.HealthCheckRequest()).status != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert time.time() < deadline, "health did not turn NOT_SERVING"
        time.sleep(0.1)
    assert states[0] is True and states[-1] is False
    with pytest.raises(grpc.RpcError) as e:
        stub.Retrieve(pb.RetrieveRequest(model="products", query=q, top_k=10))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "shard 1" in e.value.details()
    part = stub.Retrieve(pb.RetrieveRequest(model="products", query=q, top_k=10, allow_partial=True))
    assert part.partial and part.hits
    kept = [h.label for h in full.hits if h.label in {x.label for x in part.hits}]
    assert [h.label for h in part.hits][: len(kept)] == kept  # shard 0's hits, in the same order


def test_cli_shard_serve_route_query(setup, tmp_path):
    """`xmr shard`, two `xmr serve --shard`, `xmr route`, then `xmr query`: the unsplit retriever's answer."""
    import json
    import signal
    import subprocess
    import sys

    from serving.cli import main

    r, queries, *_ = setup
    r.save(tmp_path / "r")
    assert main(["shard", str(tmp_path / "r"), "--shards", "2", "-o", str(tmp_path / "split"), "-q"]) == 0
    assert main(["shard", str(tmp_path / "r"), "--shards", "999", "-o", str(tmp_path / "x"), "-q"]) == 2

    def start(*args):
        p = subprocess.Popen([sys.executable, "-m", "serving.cli", *args, "--port", "0", "-q"], stderr=subprocess.PIPE,
                             text=True)
        line, deadline = "", time.time() + 90
        while "serving on" not in line:
            line = p.stderr.readline()
            assert line or p.poll() is None, f"{args} exited"
            assert time.time() < deadline
        return p, line.strip().rsplit(" ", 1)[1]

    procs = []
    try:
        for i in range(2):
            procs.append(start("serve", "--shard", str(tmp_path / "split" / f"shard-{i}")))
        procs.append(start("route", "--router", str(tmp_path / "split" / "router"), "--shards",
                           ",".join(t for _, t in procs), "--name", "items"))
        q = next(q for q in queries if r.retrieve_one(q, k=5).hits)
        out = subprocess.run([sys.executable, "-m", "serving.cli", "query", q, "--target", procs[-1][1], "--model",
                              "items", "--topk", "5", "--json"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        assert [h["label"] for h in got["hits"]] == r.retrieve_one(q, k=5).labels
        for p, _ in procs:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(timeout=30) for p, _ in procs] == [0, 0, 0]
    finally:
        for p, _ in procs:
            p.kill()
