"""serving.heap: a frozen heap still frees what reference counting frees, and a replaced model is freed."""

from __future__ import annotations

import gc
import weakref

import grpc
import pytest

from serving.gen import retrieval_pb2 as pb
from serving.gen import retrieval_pb2_grpc as pb_grpc
from serving.heap import freeze_heap
from serving.models import ModelRegistry, load_model
from serving.server import Limits, start_server
from tests.test_retriever import corpus
from xmr.retriever import Retriever


class Node:
    """A weakly referenceable object that can point at another."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def thaw():
    yield
    gc.unfreeze()


def test_frozen_objects_are_freed_by_reference_counting_and_frozen_cycles_by_the_next_freeze():
    plain, a, b = Node(), Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector can free it
    refs = [weakref.ref(x) for x in (plain, a, b)]
    assert freeze_heap() == gc.get_freeze_count() > 0
    del plain, a, b
    gc.collect()
    assert refs[0]() is None  # freed at once by reference counting, frozen or not
    assert refs[1]() is not None and refs[2]() is not None  # a frozen cycle waits for the next freeze
    freeze_heap()
    assert refs[1]() is None and refs[2]() is None


@pytest.mark.parametrize("max_wait_ms", [None, 0.0])  # with micro-batching the old version's batcher is dropped too
def test_a_replaced_model_is_freed_after_a_reload_on_a_frozen_heap(tmp_path, max_wait_ms):
    texts, labels = corpus()
    Retriever.train(texts, labels, threads=1, nr_splits=2, max_leaf_size=2).save(tmp_path / "r")
    registry = ModelRegistry([load_model("products", tmp_path / "r")])
    running = start_server(registry, port=0, workers=2, limits=Limits(max_wait_ms=max_wait_ms))
    try:
        assert gc.get_freeze_count() > 0  # start_server froze the loaded heap
        old = weakref.ref(registry.get("products").model)
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.RetrievalStub(ch)
            request = pb.RetrieveRequest(model="products", query="doll", top_k=2)
            v0 = stub.Retrieve(request).model_version  # the old version's cache and batcher now exist
            Retriever.train(*corpus(seed=1), threads=1, nr_splits=2, max_leaf_size=2).save(tmp_path / "r")
            stub.ReloadModel(pb.ReloadModelRequest(model="products"))
            assert stub.Retrieve(request).model_version != v0  # the servicer has let go of the old version
        gc.collect()  # a young-generation pass, as the server's own would be; frozen objects are not looked at
        assert old() is None
    finally:
        running.stop(0.5)
