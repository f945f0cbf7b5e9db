"""serving.wire: hand-assembled answers parse, with the generated classes, to the messages protobuf would build."""

from __future__ import annotations

import numpy as np
import pytest

from serving.gen import retrieval_pb2 as pb
from serving.wire import (HitTable, bool_field, hit_prefix, length_field, scored_entries, serializer, string_field,
                          varint, wire_metadata)
from xmr.labels import LabelSet

HITS = [
    ("B00X1", {}, 0.75),
    ("wooden train set – ünïcödé 木製の汽車", {"brand": "Brio", "price": "12.5"}, 0.0),
    ("x" * 300, {"k" * 200: "v" * 20_000}, -1.25),  # multi-byte varint lengths at every level
    ("", {"": ""}, 3.4e38),
]


def test_varint_matches_protobuf() -> None:
    for n in (0, 1, 127, 128, 300, 16_383, 16_384, 2**31, 2**63 - 1):
        msg = pb.ModelInfo(nr_labels=n).SerializeToString()  # field 4, varint: tag byte 0x20 then the varint
        assert (b"\x20" + varint(n) if n else b"") == msg


def test_retrieve_response_bytes_parse_to_the_message() -> None:
    scores = np.array([s for _, _, s in HITS], dtype=np.float32)
    body = scored_entries([hit_prefix(label, meta) for label, meta, _ in HITS], scores)
    wire = body + string_field(2, "v1-abc") + string_field(4, "") + string_field(3, "req-7")
    want = pb.RetrieveResponse(hits=[pb.Hit(label=label, score=s, metadata=meta) for label, meta, s in HITS],
                               model_version="v1-abc", request_id="req-7")
    assert pb.RetrieveResponse.FromString(wire) == want


def test_empty_answer_with_reason() -> None:
    wire = scored_entries([], np.zeros(0, np.float32)) + string_field(2, "v") + string_field(4, "no known terms")
    assert pb.RetrieveResponse.FromString(wire) == pb.RetrieveResponse(model_version="v", reason="no known terms")


def test_request_id_appended_to_a_cached_answer_is_the_one_read() -> None:
    cached = pb.RetrieveResponse(model_version="v", request_id="").SerializeToString()
    assert pb.RetrieveResponse.FromString(cached + string_field(3, "new")).request_id == "new"


def test_hit_lists_of_a_batch_answer() -> None:
    lists = [HITS[:2], [], HITS[2:]]
    parts = []
    for i, hits in enumerate(lists):
        body = (scored_entries([hit_prefix(label, meta) for label, meta, _ in hits], [s for _, _, s in hits])
                + string_field(2, "why" if not hits else "") + bool_field(3, i == 2))
        parts.append(length_field(1, body))
    wire = b"".join(parts) + string_field(2, "v") + string_field(3, "r")
    want = pb.BatchRetrieveResponse(model_version="v", request_id="r", results=[
        pb.HitList(hits=[pb.Hit(label=label, score=s, metadata=meta) for label, meta, s in hits],
                   reason="why" if not hits else "", partial=i == 2) for i, hits in enumerate(lists)])
    assert pb.BatchRetrieveResponse.FromString(wire) == want


def test_completions() -> None:
    """A completion model's table, given label ids as its ranker returns them (int64) and float64 scores."""
    labels = ["é", "wood" * 100, "", "wooden train"]
    table = HitTable.of_completions(labels)
    ids, scores = np.array([3, 1, 0, 2], dtype=np.int64), np.array([0.5, 1e-30, 0.0, -2.0])
    wire = table.entries(ids, scores) + string_field(2, "qac-1")
    want = pb.CompleteResponse(completions=[pb.Completion(text=labels[i], score=s) for i, s in zip(ids, scores)],
                               model_version="qac-1")
    assert pb.CompleteResponse.FromString(wire) == want
    assert table.entries(ids[:0], scores[:0]) == b""


def test_scores_are_float32_bits() -> None:
    s = np.array([0.1, np.float32(1) / 3], dtype=np.float64)  # rounded to float32 as protobuf's float would be
    wire = scored_entries([hit_prefix("a", {}), hit_prefix("b", {})], s)
    got = [h.score for h in pb.RetrieveResponse.FromString(wire).hits]
    assert np.array_equal(np.array(got, np.float32), s.astype(np.float32))


@pytest.mark.parametrize("msg", [pb.RetrieveResponse(model_version="v"), pb.ListModelsResponse()])
def test_serializer_passes_bytes_and_serializes_messages(msg: object) -> None:
    ser = serializer(type(msg))
    assert ser(msg) == msg.SerializeToString()
    assert ser(b"\x12\x01v") == b"\x12\x01v"


def test_hit_table_of_a_label_set_gives_the_hits() -> None:
    names = [label for label, _, _ in HITS[:3]] + ["plain"]
    metas = [meta for _, meta, _ in HITS[:3]] + [{"n": 3, "tags": ["a", "é"], "ok": True}]
    table = HitTable.of_labels(LabelSet(names, metas), chunk=2)  # several hydrate chunks
    ids = np.array([3, 1, 1, 0, 2], np.int32)
    scores = np.array([0.5, -2.0, 0.0, 1e-3, 7.0], np.float32)
    got = pb.RetrieveResponse.FromString(table.entries(ids, scores)).hits
    assert [h.label for h in got] == [names[i] for i in ids]
    assert np.array_equal(np.array([h.score for h in got], np.float32), scores)
    assert dict(got[0].metadata) == {"n": "3", "tags": '["a", "é"]', "ok": "true"}
    assert dict(got[1].metadata) == HITS[1][1]
    assert table.entries(ids, scores) == scored_entries([hit_prefix(names[i], wire_metadata(metas[i])) for i in ids],
                                                         scores)
    assert table.entries(np.zeros(0, np.int32), np.zeros(0, np.float32)) == b""
