"""The gRPC service end to end: a real server on a free loopback port, every RPC through real channels; and
micro-batching, whose concurrent calls must each get their own single-query answer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from serving.batching import MicroBatcher
from serving.cache import ResultCache
from serving.client import Client
from serving.gen import retrieval_pb2 as pb
from serving.gen import retrieval_pb2_grpc as pb_grpc
from serving.models import ModelLoadError, ModelRegistry, load_model
from serving.server import SERVICE_NAME, Limits, start_server
from tests.test_qac_model import synthetic_pairs
from tests.test_retriever import META, corpus
from xmr.qac.model import CompletionModel
from xmr.retriever import Retriever

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    texts, labels = corpus()
    Retriever.train(texts, labels, label_metadata=META, threads=1, nr_splits=2, max_leaf_size=2).save(root / "r")
    CompletionModel.train(synthetic_pairs(), threads=1, index="trie", max_leaf_size=3).save(root / "q")
    return root


@pytest.fixture(scope="module")
def registry(model_dirs):
    return ModelRegistry([load_model("products", model_dirs / "r"), load_model("queries", model_dirs / "q")])


@pytest.fixture(scope="module")
def server(registry):
    running = start_server(registry, port=0, workers=4, limits=Limits(max_top_k=20, max_query_chars=64,
                                                                     max_batch_queries=8))
    yield running
    running.stop(1.0)


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield pb_grpc.RetrievalStub(ch)


def code_of(call, *args, **kw):
    with pytest.raises(grpc.RpcError) as e:
        call(*args, **kw)
    return e.value.code(), e.value.details()


def test_list_models(stub, registry):
    got = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
    assert set(got) == {"products", "queries"}
    assert got["products"].kind == "retrieval" and got["queries"].kind == "completion"
    assert got["products"].version == registry.get("products").version
    assert got["queries"].nr_labels == registry.get("queries").nr_labels


def test_retrieve_equals_the_in_process_call(stub, registry):
    r = registry.get("products").model
    for q in ["wooden railway", "hornby coach", "barbie doll dress"]:
        resp = stub.Retrieve(pb.RetrieveRequest(model="products", query=q, top_k=3, request_id="abc"))
        want = r.retrieve_one(q, k=3)
        assert [h.label for h in resp.hits] == want.labels
        assert [h.score for h in resp.hits] == pytest.approx([h.score for h in want.hits], rel=1e-6)
        assert resp.request_id == "abc" and resp.model_version == r.model_version
    hit = stub.Retrieve(pb.RetrieveRequest(model="products", query="wooden railway", top_k=1)).hits[0]
    assert dict(hit.metadata) == {"title": "Wooden train set", "price": "24.5", "url": "https://x/1"}
    resp = stub.Retrieve(pb.RetrieveRequest(model="products", query="zzzz qqqq", top_k=3))
    assert not resp.hits and resp.reason == "no known terms in query"


def test_metadata_filter_and_beam(stub):
    resp = stub.Retrieve(pb.RetrieveRequest(model="products", query="hornby coach wooden", top_k=5,
                                            metadata_filter={"brand": "Hornby"}))
    assert [h.label for h in resp.hits] == ["Hornby R1234 — Flying Scotsman, OO gauge"]
    resp = stub.Retrieve(pb.RetrieveRequest(model="products", query="hornby", top_k=2, beam_size=1))
    assert len(resp.hits) <= 2


def test_batch_retrieve_in_order(stub):
    queries = ["wooden railway", "zzzz", "barbie doll", "lego bricks"]
    resp = stub.BatchRetrieve(pb.BatchRetrieveRequest(model="products", queries=queries, top_k=2, request_id="b"))
    assert len(resp.results) == 4 and resp.request_id == "b"
    for q, got in zip(queries, resp.results):
        one = stub.Retrieve(pb.RetrieveRequest(model="products", query=q, top_k=2))
        assert [h.label for h in got.hits] == [h.label for h in one.hits] and got.reason == one.reason
        assert [h.score for h in got.hits] == [h.score for h in one.hits]
        assert [dict(h.metadata) for h in got.hits] == [dict(h.metadata) for h in one.hits]
    wanted = {"brand": "Hornby"}
    resp = stub.BatchRetrieve(pb.BatchRetrieveRequest(model="products", queries=queries, top_k=2,
                                                      metadata_filter=wanted))
    for q, got in zip(queries, resp.results):
        one = stub.Retrieve(pb.RetrieveRequest(model="products", query=q, top_k=2, metadata_filter=wanted))
        assert got == pb.HitList(hits=one.hits, reason=one.reason)


def test_complete(stub, registry):
    m = registry.get("queries").model
    resp = stub.Complete(pb.CompleteRequest(model="queries", prefix="ho", previous_query="hornby", top_k=4))
    assert [c.text for c in resp.completions] == [q for q, _ in m.complete("hornby", "ho", 4)]
    assert resp.completions[0].text == "hornby coach"
    assert all(c.text.startswith("ho") for c in resp.completions)
    assert stub.Complete(pb.CompleteRequest(model="queries", prefix="", top_k=3)).completions  # before typing
    assert not stub.Complete(pb.CompleteRequest(model="queries", prefix="zzz", top_k=3)).completions


@pytest.mark.parametrize("rpc,request_,code,words", [
    ("Retrieve", pb.RetrieveRequest(model="nope", query="x", top_k=3), grpc.StatusCode.NOT_FOUND, "unknown model"),
    ("Retrieve", pb.RetrieveRequest(model="products", query="  ", top_k=3), grpc.StatusCode.INVALID_ARGUMENT,
     "query is empty"),
    ("Retrieve", pb.RetrieveRequest(model="products", query="x" * 65, top_k=3), grpc.StatusCode.INVALID_ARGUMENT,
     "65 characters"),
    ("Retrieve", pb.RetrieveRequest(model="products", query="doll", top_k=0), grpc.StatusCode.INVALID_ARGUMENT,
     "top_k"),
    ("Retrieve", pb.RetrieveRequest(model="products", query="doll", top_k=21), grpc.StatusCode.INVALID_ARGUMENT,
     "top_k"),
    ("Retrieve", pb.RetrieveRequest(model="products", query="doll", top_k=3, beam_size=10**6),
     grpc.StatusCode.INVALID_ARGUMENT, "beam_size"),
    ("Retrieve", pb.RetrieveRequest(model="queries", query="doll", top_k=3), grpc.StatusCode.INVALID_ARGUMENT,
     "completion model"),
    ("Complete", pb.CompleteRequest(model="products", prefix="d", top_k=3), grpc.StatusCode.INVALID_ARGUMENT,
     "retrieval model"),
    ("Complete", pb.CompleteRequest(model="queries", prefix="d" * 100, top_k=3), grpc.StatusCode.INVALID_ARGUMENT,
     "prefix has 100"),
    ("BatchRetrieve", pb.BatchRetrieveRequest(model="products", queries=[], top_k=3),
     grpc.StatusCode.INVALID_ARGUMENT, "1..8"),
    ("BatchRetrieve", pb.BatchRetrieveRequest(model="products", queries=["a"] * 9, top_k=3),
     grpc.StatusCode.INVALID_ARGUMENT, "1..8"),
    ("BatchRetrieve", pb.BatchRetrieveRequest(model="products", queries=["doll", ""], top_k=3),
     grpc.StatusCode.INVALID_ARGUMENT, "queries[1] is empty"),
])
def test_bad_requests_get_clear_statuses(stub, rpc, request_, code, words):
    got, details = code_of(getattr(stub, rpc), request_)
    assert got == code and words in details


def test_server_survives_odd_input_and_deadlines(stub):
    for q in ["\x00\x01", "🧩" * 10, "\ud7ff", "a\tb\nc"]:
        stub.Retrieve(pb.RetrieveRequest(model="products", query=q, top_k=1))
        stub.Complete(pb.CompleteRequest(model="queries", prefix=q, previous_query=q, top_k=2))
    for timeout in (1e-6, 0.0):  # gRPC may round a microsecond up; either way the answer is on time or refused
        try:
            stub.Retrieve(pb.RetrieveRequest(model="products", query="doll", top_k=3), timeout=timeout)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert stub.Retrieve(pb.RetrieveRequest(model="products", query="doll", top_k=3)).hits


def test_health_and_reflection(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        h = health_pb2_grpc.HealthStub(ch)
        for service in ("", SERVICE_NAME):
            assert h.Check(health_pb2.HealthCheckRequest(service=service)).status == \
                health_pb2.HealthCheckResponse.SERVING
        r = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(r.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in resp.list_services_response.service}
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


def test_asyncio_client(server):
    async def go():
        async with Client(f"127.0.0.1:{server.port}") as c:
            hits = (await c.retrieve("products", "wooden railway", top_k=2)).hits
            comp = (await c.complete("queries", "ho", previous_query="hornby", top_k=2)).completions
            batch = (await c.batch_retrieve("products", ["doll", "kite"], top_k=1)).results
            models = (await c.list_models()).models
            return hits, comp, batch, models

    hits, comp, batch, models = asyncio.run(go())
    assert hits and comp[0].text == "hornby coach" and len(batch) == 2 and len(models) == 2


def test_bearer_token(registry):
    running = start_server(registry, port=0, workers=2, token=TOKEN)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.RetrievalStub(ch)
            req = pb.RetrieveRequest(model="products", query="doll", top_k=1)
            assert code_of(stub.Retrieve, req)[0] == grpc.StatusCode.UNAUTHENTICATED
            assert code_of(stub.Retrieve, req, metadata=(("authorization", "Bearer wrong"),))[0] == \
                grpc.StatusCode.UNAUTHENTICATED
            assert stub.Retrieve(req, metadata=(("authorization", f"Bearer {TOKEN}"),)).hits
            h = health_pb2_grpc.HealthStub(ch)  # probes need no token
            assert h.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        running.stop(0.5)


def test_stop_refuses_new_calls(registry):
    running = start_server(registry, port=0, workers=2)
    target = f"127.0.0.1:{running.port}"
    with grpc.insecure_channel(target) as ch:
        assert pb_grpc.RetrievalStub(ch).ListModels(pb.ListModelsRequest()).models
    running.stop(0.5)
    with grpc.insecure_channel(target) as ch:
        got, _ = code_of(pb_grpc.RetrievalStub(ch).ListModels, pb.ListModelsRequest(), timeout=2)
        assert got in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_model_loading_errors(model_dirs, tmp_path):
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_model("x", tmp_path / "missing")
    with pytest.raises(ModelLoadError, match="neither an xmr retriever"):
        load_model("x", tmp_path)
    with pytest.raises(ModelLoadError, match="model name"):
        load_model("bad name!", model_dirs / "r")
    with pytest.raises(ModelLoadError, match="given twice"):
        ModelRegistry([load_model("a", model_dirs / "q"), load_model("a", model_dirs / "q")])


def test_cli_query_and_serve_errors(server, capsys):
    from serving.cli import main

    assert main(["query", "wooden railway", "--target", f"127.0.0.1:{server.port}", "--topk", "2"]) == 0
    out = capsys.readouterr().out
    assert " 1. " in out and "Wooden train set" in out
    assert main(["query", "ho", "--complete", "--previous", "hornby", "--target", f"127.0.0.1:{server.port}"]) == 0
    assert "hornby coach" in capsys.readouterr().out
    assert main(["query", "doll", "--model", "nope", "--target", f"127.0.0.1:{server.port}"]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(["serve", "--model", "nodir"]) == 2
    assert main(["serve", "--model", "x=/nonexistent/dir"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_serve_command_runs_and_stops_on_sigterm(model_dirs):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--model", f"q={model_dirs / 'q'}",
                             "--port", "0", "--log-format", "json", "--debug"], stderr=subprocess.PIPE, text=True)
    try:
        lines = [""]
        deadline = time.time() + 60
        while "serving on" not in lines[-1] and time.time() < deadline:
            lines.append(proc.stderr.readline())
        port = int(lines[-1].strip().rsplit(":", 1)[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            resp = pb_grpc.RetrievalStub(ch).Complete(pb.CompleteRequest(model="q", prefix="ho", top_k=2,
                                                                         request_id="rid-7"))
            assert resp.completions
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        logs = [json.loads(x) for x in lines + proc.stderr.read().splitlines() if x.startswith("{")]
    finally:
        proc.kill()
    start = next(x for x in logs if x.get("event") == "start")
    assert start["level"] == "INFO" and start["models"][0]["name"] == "q" and start["address"].endswith(f":{port}")
    call = next(x for x in logs if x.get("rpc") == "Complete")
    assert (call["request_id"], call["model"], call["code"], call["level"]) == ("rid-7", "q", "OK", "DEBUG")
    assert call["ms"] >= 0 and call["ts"].endswith("Z")


def test_json_log_lines_carry_extra_fields_and_tracebacks():
    import logging

    from xmr.json_logs import JsonFormatter

    rec = logging.LogRecord("xmr.serving", logging.WARNING, __file__, 1, "model %s: %s", ("m", "ünïcode"), None)
    rec.model, rec.ms = "m", 1.5
    out = json.loads(JsonFormatter().format(rec))
    assert out["message"] == "model m: ünïcode" and out["logger"] == "xmr.serving" and out["level"] == "WARNING"
    assert (out["model"], out["ms"]) == ("m", 1.5) and "args" not in out and "msg" not in out
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec = logging.LogRecord("xmr", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    out = json.loads(JsonFormatter().format(rec))
    assert "RuntimeError: boom" in out["exc"] and "\n" not in JsonFormatter().format(rec)


def test_reload_swaps_atomically_and_keeps_the_old_model_on_failure(model_dirs, tmp_path):
    import shutil

    shutil.copytree(model_dirs / "r", tmp_path / "r")
    registry = ModelRegistry([load_model("products", tmp_path / "r")])
    running = start_server(registry, port=0, workers=2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.RetrievalStub(ch)
            v0 = registry.get("products").version
            stale = stub.Retrieve(pb.RetrieveRequest(model="products", query="doll", top_k=2))  # now cached
            texts, labels = corpus(seed=1)
            Retriever.train(texts, labels, threads=1, nr_splits=2, max_leaf_size=2).save(tmp_path / "r")
            resp = stub.ReloadModel(pb.ReloadModelRequest(model="products"))
            assert resp.previous_version == v0 and resp.model.version != v0
            assert resp.model.version == registry.get("products").version
            fresh = stub.Retrieve(pb.RetrieveRequest(model="products", query="doll", top_k=2))
            assert stale.model_version == v0 and fresh.model_version == resp.model.version  # not the cached answer
            assert [h.label for h in fresh.hits] == registry.get("products").model.retrieve_one("doll", k=2).labels
            (tmp_path / "r" / "xmr-retriever.json").write_text("{broken")
            got, details = code_of(stub.ReloadModel, pb.ReloadModelRequest(model="products"))
            assert got == grpc.StatusCode.FAILED_PRECONDITION and "keeps serving" in details
            assert stub.Retrieve(pb.RetrieveRequest(model="products", query="doll", top_k=2)).hits
            assert code_of(stub.ReloadModel, pb.ReloadModelRequest(model="nope"))[0] == grpc.StatusCode.NOT_FOUND
    finally:
        running.stop(0.5)


def test_watcher_reloads_a_saved_again_directory(model_dirs, tmp_path):
    import shutil

    from serving.models import Watcher

    shutil.copytree(model_dirs / "q", tmp_path / "q")
    registry = ModelRegistry([load_model("queries", tmp_path / "q")])
    seen = []
    w = Watcher(registry, 3600, lambda name, ok: seen.append((name, ok)))
    w.check()
    assert seen == []  # nothing changed
    old = registry.get("queries")
    CompletionModel.train(synthetic_pairs(5), threads=1).save(tmp_path / "q")
    w.check()
    assert seen == [("queries", True)] and registry.get("queries") is not old
    (tmp_path / "q" / "labels.json").write_text("[]")
    (tmp_path / "q" / "qac.json").touch()
    w.check()
    assert seen[-1] == ("queries", False) and registry.get("queries").model.complete("", "h")


def test_prometheus_metrics(registry):
    import urllib.request

    running = start_server(registry, port=0, workers=2, metrics_port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.RetrievalStub(ch)
            stub.Retrieve(pb.RetrieveRequest(model="products", query="doll", top_k=2))
            code_of(stub.Retrieve, pb.RetrieveRequest(model="products", query="", top_k=2))
            code_of(stub.Retrieve, pb.RetrieveRequest(model="no-such", query="x", top_k=2))
            stub.BatchRetrieve(pb.BatchRetrieveRequest(model="products", queries=["a", "b", "c"], top_k=1))
        text = urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=5).read().decode()
        assert 'xmr_requests_total{code="OK",method="Retrieve",model="products"} 1.0' in text
        assert 'xmr_requests_total{code="INVALID_ARGUMENT",method="Retrieve",model="products"} 1.0' in text
        assert 'xmr_requests_total{code="NOT_FOUND",method="Retrieve",model=""} 1.0' in text
        assert 'xmr_batch_queries_sum{model="products"} 3.0' in text
        assert 'xmr_request_seconds_bucket' in text and 'xmr_model_info{kind="completion"' in text
    finally:
        running.stop(0.5)


def test_result_cache_is_a_bounded_lru():
    c = ResultCache(2)
    c.put("a", b"1")
    c.put("b", b"2")
    assert c.get("a") == b"1"  # now the most recent
    c.put("c", b"3")
    assert (c.get("a"), c.get("b"), c.get("c"), len(c)) == (b"1", None, b"3", 2)
    with pytest.raises(ValueError, match="at least 1"):
        ResultCache(0)


@pytest.mark.parametrize("cache_size", [0, 100])
def test_repeated_calls_get_the_same_answer_with_their_own_request_id(registry, cache_size):
    import urllib.request

    running = start_server(registry, port=0, workers=2, limits=Limits(cache_size=cache_size), metrics_port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.RetrievalStub(ch)
            want = registry.get("products").model.retrieve_one("wooden railway", k=2)
            for rid in ("r1", "r2", "r3"):
                got = stub.Retrieve(pb.RetrieveRequest(model="products", query="wooden railway", top_k=2,
                                                       request_id=rid))
                assert got.request_id == rid and [h.label for h in got.hits] == want.labels
                assert dict(got.hits[0].metadata) == {"title": "Wooden train set", "price": "24.5", "url": "https://x/1"}
            other = stub.Retrieve(pb.RetrieveRequest(model="products", query="wooden railway", top_k=1))
            assert [h.label for h in other.hits] == want.labels[:1]  # top_k is part of the key
            for rid in ("c1", "c2"):
                c = stub.Complete(pb.CompleteRequest(model="queries", prefix="ho", previous_query="hornby", top_k=3,
                                                     request_id=rid))
                assert c.request_id == rid and c.completions[0].text == "hornby coach"
            assert stub.Complete(pb.CompleteRequest(model="queries", prefix="ho", top_k=3)).completions
        text = urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=5).read().decode()
        if cache_size:
            assert 'xmr_cache_lookups_total{model="products",result="hit"} 2.0' in text
            assert 'xmr_cache_lookups_total{model="products",result="miss"} 2.0' in text
            assert 'xmr_cache_lookups_total{model="queries",result="hit"} 1.0' in text
        else:
            assert 'xmr_cache_lookups_total{' not in text
    finally:
        running.stop(0.5)


# ------------------------------------------------------------------------------------------ micro-batching
QUERIES = ["wooden railway", "hornby coach", "barbie doll", "lego bricks", "kite beach", "jigsaw puzzle", "zzzz",
           "pink dress", "train track", "flying scotsman"] * 3


def _answers(r):
    """score_one / score_many over a retriever's rank_one, recording the batches they were asked."""
    batches = []

    def one(text, k):
        batches.append([text])
        return r.rank_one(text, k=k)

    def many(texts, ks):
        batches.append(list(texts))
        ranked = r.rank_many(texts, k=max(ks))
        return [(ids[:k], scores[:k], reason) for k, (ids, scores, reason) in zip(ks, ranked)]

    return one, many, batches


def _hammer(b, queries, threads=16, timeout=30.0):
    """Every (query, 1 + i % 4) through ``b`` from ``threads`` threads at once, in order."""
    start = threading.Barrier(threads)

    def call(i):
        if i < threads:
            start.wait()
        return b.run(queries[i], 1 + i % 4, timeout=timeout)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(call, range(len(queries))))


@pytest.mark.parametrize("max_wait_s", [0.0, 0.02])
def test_batcher_answers_equal_single_queries(registry, max_wait_s):
    r = registry.get("products").model
    one, many, batches = _answers(r)
    sizes = []
    b = MicroBatcher(one, many, max_batch=8, max_wait_s=max_wait_s, on_batch=sizes.append)
    got = _hammer(b, QUERIES * 4)
    for i, (q, (ids, scores, reason)) in enumerate(zip(QUERIES * 4, got)):
        want = r.rank_one(q, k=1 + i % 4)
        assert ids.tolist() == want[0].tolist() and scores.tobytes() == want[1].tobytes() and reason == want[2]
    assert sizes == [len(x) for x in batches] and sum(sizes) == len(QUERIES) * 4 and max(sizes) <= 8
    assert not b._busy and not b._queue  # idle again, nothing left behind


def test_batcher_batches_the_calls_that_queue_behind_a_busy_scorer():
    entered, release = threading.Event(), threading.Event()
    batches = []

    def one(text, k):
        batches.append([text])
        if text == "first":
            entered.set()
            release.wait(10)
        return text.upper()

    threads = set()

    def many(texts, ks):
        batches.append(list(texts))
        threads.add(threading.current_thread())
        return [t.upper() * kk for t, kk in zip(texts, ks)]

    b = MicroBatcher(one, many, max_batch=3)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(b.run, "first", 1)
        assert entered.wait(10)
        rest = [pool.submit(b.run, t, 2) for t in "abcde"]
        while len(b._queue) < 5:
            time.sleep(0.001)
        release.set()
        assert first.result(10) == "FIRST" and [f.result(10) for f in rest] == ["AA", "BB", "CC", "DD", "EE"]
    # the first call is scored alone at once; the five queued behind it go in batches of at most 3, in order, and
    # its thread scores them before it passes the lead (no wake-up of a sleeping thread between batches)
    assert batches == [["first"], ["a", "b", "c"], ["d", "e"]] and len(threads) == 1 and not b._busy


def test_batcher_passes_errors_to_every_call_of_the_batch_and_lives_on():
    entered, release = threading.Event(), threading.Event()

    def one(text, k):
        if text == "hold":
            entered.set()
            release.wait(10)
        return text

    def many(texts, ks):
        raise RuntimeError("boom")

    b = MicroBatcher(one, many, max_batch=4)
    with ThreadPoolExecutor(4) as pool:
        hold = pool.submit(b.run, "hold", 1)
        assert entered.wait(10)
        futs = [pool.submit(b.run, "x", 1) for _ in range(3)]
        while len(b._queue) < 3:
            time.sleep(0.001)
        release.set()
        assert hold.result(10) == "hold"
        for f in futs:
            with pytest.raises(RuntimeError, match="boom"):
                f.result(10)
    assert b.run("after", 1) == "after" and not b._busy


def test_batcher_call_that_times_out_in_the_queue_is_skipped():
    entered, release = threading.Event(), threading.Event()
    scored = []

    def one(text, k):
        scored.append(text)
        if text == "hold":
            entered.set()
            release.wait(10)
        return text

    def many(texts, ks):
        scored.extend(texts)
        return list(texts)

    b = MicroBatcher(one, many)
    with ThreadPoolExecutor(2) as pool:
        hold = pool.submit(b.run, "hold", 1)
        assert entered.wait(10)
        with pytest.raises(TimeoutError, match="waiting for a batch"):
            b.run("late", 1, timeout=0.01)
        release.set()
        assert hold.result(10) == "hold"
    assert scored == ["hold"] and not b._busy and not b._queue


def test_server_micro_batches_concurrent_calls(registry):
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
