"""xmr.fused_search through Retriever.rank_one_records: byte for byte what rank_one composed with
LabelRecords.entries gives (its reference), on every path: plain, reranked, fallbacks and bad input."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest

from tests.test_retriever import LABEL_TEXTS, META, TOPICS, TRAIN_KW, _queries, corpus
from xmr.records import LabelRecords
from xmr.rerank import Reranker, RerankConfig
from xmr.retriever import EMPTY_QUERY, Retriever
from xmr.validation import InputError

QUERIES = _queries() + ["wooden tráin ünïcödé", "Wooden train ", "木のおもちゃ 🧩 puzzle", "train" * 40,
                        " ".join(f"w{i}x" for i in range(300))]  # the last: hundreds of char n-grams


@pytest.fixture(scope="module")
def retrievers() -> dict[str, Retriever]:
    texts, labels = corpus()
    return {
        "plain": Retriever.train(texts, labels, label_metadata=META, **TRAIN_KW),
        "char": Retriever.train(texts, labels, features="char", **TRAIN_KW),
        "reranked": Retriever.train(texts, labels, label_texts=LABEL_TEXTS, label_metadata=META,
                                    rerank=RerankConfig(candidates=6, weight=0.5), **TRAIN_KW),
    }


def _records(r: Retriever) -> LabelRecords:
    return LabelRecords([f"<{i}:{name}>".encode() for i, name in enumerate(r.labels.names(range(r.nr_labels)))])


def _composed(r: Retriever, q: str, records: LabelRecords, k: int, beam: int | None) -> tuple[bytes, str | None]:
    ids, scores, reason = r.rank_one(q, k, beam)
    return records.entries(ids, scores), reason


def _check_all(r: Retriever, records: LabelRecords) -> None:
    for q, k, beam in itertools.product(QUERIES, (1, 3, 100), (None, 1, 4)):
        assert r.rank_one_records(q, records, k, beam) == _composed(r, q, records, k, beam), (q, k, beam)


@pytest.mark.parametrize("name", ["plain", "char", "reranked"])
def test_fused_equals_composed(retrievers, name):
    r = retrievers[name]
    records = _records(r)
    _check_all(r, records)
    assert r._fused  # the kernel path was taken
    body, reason = r.rank_one_records("wooden train", records, 3)
    assert reason is None and body.startswith(b"<")


def test_wide_query_falls_back_once_then_fuses(retrievers, monkeypatch):
    texts, labels = corpus()
    r = Retriever.train(texts, labels, features="char", **TRAIN_KW)  # its own index: a fresh scratch
    records = _records(r)
    wide = " ".join(w for words in TOPICS.values() for w in words)
    nnz = r.featurizer.transform_one(wide)[0].size
    assert nnz > 64  # more features than a fresh scratch holds
    calls = []
    rank_one = Retriever.rank_one
    monkeypatch.setattr(Retriever, "rank_one", lambda self, *a, **kw: calls.append(a) or rank_one(self, *a, **kw))
    first = r.rank_one_records(wide, records, 5)
    assert len(calls) == 1  # the kernel said FALLBACK; the composed path grew the scratch
    second = r.rank_one_records(wide, records, 5)
    assert len(calls) == 1  # now in one call
    assert first == second == _composed(r, wide, records, 5, None)


def test_python_path_featurizer_is_composed(retrievers):
    texts, labels = corpus()
    r = Retriever.train(texts, labels, features="word+char", hashing=1 << 12, **TRAIN_KW)  # no term table
    records = _records(r)
    _check_all(r, records)
    assert r._fused is False


def test_reranker_without_group_table_is_composed(retrievers):
    base = retrievers["reranked"]
    rr = base.reranker
    r = copy.copy(base)
    r.reranker = Reranker._from_arrays(rr.indptr, rr.indices, rr.data, rr.shape, rr.config)  # row scan only
    r._fused = None
    records = _records(r)
    _check_all(r, records)
    assert r._fused is False


def test_reasons_and_bad_input(retrievers):
    r = retrievers["plain"]
    records = _records(r)
    assert r.rank_one_records("   ", records) == (b"", EMPTY_QUERY)
    for bad in (dict(text=7), dict(text=None)):
        with pytest.raises(InputError):
            r.rank_one_records(bad["text"], records)
    with pytest.raises(InputError):
        r.rank_one_records("train", records, k=0)
    with pytest.raises((InputError, ValueError)):
        r.rank_one_records("train", records, beam_size=0)
    assert np.all(np.frombuffer(r.rank_one_records("train", records, 1)[0][-4:], "<f4") > 0)


def _check_many(r: Retriever, records: LabelRecords) -> None:
    """rank_many_records equals rank_one_records of each (text, k) for batches of every size and mixed ks."""
    ks = [1 + i % 5 for i in range(len(QUERIES))]
    ks[3] = 100  # one call asking for many more hits than the rest
    want = [r.rank_one_records(q, records, k) for q, k in zip(QUERIES, ks)]
    for n in (1, 2, 7, len(QUERIES)):
        for at in range(0, len(QUERIES), n):
            assert r.rank_many_records(QUERIES[at:at + n], records, ks[at:at + n]) == want[at:at + n], (n, at)


@pytest.mark.parametrize("name", ["plain", "char", "reranked"])
def test_batch_of_texts_in_one_call_equals_single_calls(retrievers, name, monkeypatch):
    r = retrievers[name]
    records = _records(r)
    r.rank_many_records(QUERIES, records, [3] * len(QUERIES))  # the wide text grows the scratch once
    singles = []
    rank_one_records = Retriever.rank_one_records
    monkeypatch.setattr(Retriever, "rank_one_records",
                        lambda self, *a, **kw: singles.append(a[0]) or rank_one_records(self, *a, **kw))
    got = r.rank_many_records(QUERIES, records, [3] * len(QUERIES))
    assert singles == []  # every text in the one kernel call
    monkeypatch.undo()
    assert got == [r.rank_one_records(q, records, 3) for q in QUERIES]
    _check_many(r, records)
    assert r.rank_many_records([], records, []) == []


def test_batch_wide_text_falls_back_to_the_single_path(retrievers):
    texts, labels = corpus()
    r = Retriever.train(texts, labels, features="char", **TRAIN_KW)  # a fresh scratch
    records = _records(r)
    wide = " ".join(w for words in TOPICS.values() for w in words)
    batch = ["wooden train", wide, "   ", "barbie doll"]
    want = [_composed(r, q, records, 4, None) for q in batch]
    assert r.rank_many_records(batch, records, [4] * 4) == want


def test_batch_composed_paths_and_bad_input(retrievers):
    texts, labels = corpus()
    r = Retriever.train(texts, labels, features="word+char", hashing=1 << 12, **TRAIN_KW)  # no term table
    _check_many(r, _records(r))
    assert r._fused is False
    p = retrievers["plain"]
    records = _records(p)
    with pytest.raises(InputError, match="same length"):
        p.rank_many_records(["a", "b"], records, [1])
    with pytest.raises(InputError):
        p.rank_many_records(["train"], records, [0])
    with pytest.raises(InputError):
        p.rank_many_records(["train", 7], records, [1, 1])


def test_warm_batch_compiles_the_batch_kernel_for_the_real_call(retrievers):
    r = retrievers["reranked"]
    assert r.warm_batch() is r
    before = {sig for sig in r._fused[4].__globals__["search_texts"].signatures}
    r.rank_many_records(["wooden train", "barbie"], _records(r), [2, 3])
    assert set(r._fused[4].__globals__["search_texts"].signatures) == before  # no new specialisation compiled
