"""Retriever: raw text -> typed hits with metadata; training, batch vs single path, save/load, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from xmr import model_io
from xmr.labels import LabelSet
from xmr.model import XLinearModel
from xmr.model_io import ModelFormatError
from xmr.rerank import Reranker, RerankConfig
from xmr.retriever import EMPTY_QUERY, NO_KNOWN_TERMS, Hit, Retrieval, Retriever
from xmr.text.featurizer import TextFeaturizer
from xmr.validation import InputError

# label -> its distinctive words; label names are deliberately awkward strings
TOPICS = {
    "https://shop.example/p/trains?id=1,2": ["wooden", "train", "railway", "engine", "track"],
    "Hornby R1234 — Flying Scotsman, OO gauge": ["hornby", "coach", "scotsman", "locomotive", "gauge"],
    "B00DOLL": ["barbie", "doll", "dress", "pink", "dollhouse"],
    "lego\tstar wars": ["lego", "bricks", "starwars", "minifigure", "xwing"],
    "木のおもちゃ 🧩": ["jigsaw", "puzzle", "pieces", "kinder", "würfel"],
    "kite": ["kite", "wind", "beach", "string", "flying"],
    "yoyo": ["yoyo", "spin", "trick", "throw", "bearing"],
    "drone": ["drone", "camera", "rotor", "remote", "quadcopter"],
}
NOISE = ["for", "kids", "the", "best", "gift", "new", "with", "set", "3", "year", "old"]
META = {
    "https://shop.example/p/trains?id=1,2": {"title": "Wooden train set", "price": 24.5, "url": "https://x/1"},
    "Hornby R1234 — Flying Scotsman, OO gauge": {"title": "Flying Scotsman", "brand": "Hornby"},
    "B00DOLL": {"title": "Barbie", "tags": ["doll", "pink"]},
    "nobody": {"title": "metadata for a label without instances is dropped"},
}


def corpus(n: int = 240, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Instances = 2-3 words of one topic (sometimes two topics) + noise; labels = the topics."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    texts, labels = [], []
    for i in range(n):
        ts = [names[i % len(names)]]
        if i % 5 == 0:
            ts.append(names[(i + 3) % len(names)])
        words = [w for t in ts for w in rng.choice(TOPICS[t], 2, replace=False)]
        words += list(rng.choice(NOISE, 2))
        rng.shuffle(words)
        texts.append(" ".join(words) if i % 7 else " ".join(words).upper())
        labels.append(ts)
    return texts, labels


TRAIN_KW = dict(nr_splits=2, max_leaf_size=2, threads=1, seed=0)


@pytest.fixture(scope="module")
def trained():
    texts, labels = corpus()
    return Retriever.train(texts, labels, label_metadata=META, **TRAIN_KW)


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("retriever") / "r"
    trained.save(path)
    return path


def _queries() -> list[str]:
    qs = [" ".join(words[:2]) for words in TOPICS.values()]
    return qs + ["", "   ", "!!! ???", "zzzz qqqq", "Wooden TRAIN for a 3 year old", "hornby", "doll", "x"]


# ------------------------------------------------------------------------------------------------ end to end
def test_train_save_load_retrieve(trained, saved):
    r = Retriever.load(saved)
    assert r.nr_labels == len(TOPICS) and r.model_version == trained.model_version
    for label, words in TOPICS.items():
        res = r.retrieve_one(f"{words[0]} {words[1]}", k=3)
        assert isinstance(res, Retrieval) and res.reason is None
        assert res.hits[0].label == label, (label, res)
        assert res.hits[0].metadata == {k: v for k, v in META.get(label, {}).items()}
        assert [h.score for h in res.hits] == sorted((h.score for h in res.hits), reverse=True)
    hit = r.retrieve_one("WOODEN train for a 3 year old", k=1).hits[0]
    assert hit == Hit("https://shop.example/p/trains?id=1,2", hit.score, META[hit.label])
    assert "nobody" not in r.labels and r.labels.id_of("nobody") is None


def test_loaded_equals_trained(trained, saved):
    r = Retriever.load(saved, mmap=False, warm=False)
    qs = _queries()
    assert [x.to_dict() for x in r.retrieve(qs, k=4)] == [x.to_dict() for x in trained.retrieve(qs, k=4)]


def test_batch_equals_single(trained):
    qs = _queries()
    batch = trained.retrieve(qs, k=5, beam_size=3)
    single = [trained.retrieve_one(q, k=5, beam_size=3) for q in qs]
    assert len(batch) == len(qs)
    for b, s in zip(batch, single):
        assert b.reason == s.reason and b.labels == s.labels
        assert [h.metadata for h in b.hits] == [h.metadata for h in s.hits]
        np.testing.assert_allclose([h.score for h in b.hits], [h.score for h in s.hits], rtol=1e-5, atol=1e-6)
    for q, s in zip(qs, single):  # rank_one is retrieve_one before the labels are decoded
        ids, scores, reason = trained.rank_one(q, k=5, beam_size=3)
        assert reason == s.reason and trained.labels.names(ids) == s.labels
        assert scores.tolist() == [h.score for h in s.hits]


@pytest.mark.parametrize("k", [1, 5, 100])
def test_rank_many_equals_rank_one(trained, k):
    qs = _queries() * 2
    for q, (ids, scores, reason) in zip(qs, trained.rank_many(qs, k=k)):
        want_ids, want_scores, want_reason = trained.rank_one(q, k=k)
        assert reason == want_reason and ids.tolist() == want_ids.tolist()
        assert scores.tobytes() == want_scores.tobytes()  # the same kernel arithmetic: the same bits
    for q, (ids, scores, reason) in zip(qs * 3, trained.rank_many(qs * 3, k=k, beam_size=2, threads=2)):
        want_ids, want_scores, want_reason = trained.rank_one(q, k=k, beam_size=2)
        assert reason == want_reason and ids.tolist() == want_ids.tolist()
        assert scores.tobytes() == want_scores.tobytes()
    assert trained.rank_many([]) == []
    with pytest.raises(InputError):
        trained.rank_many(["ok", None])
    with pytest.raises(InputError):
        trained.rank_many(["ok"], beam_size=0)


def test_empty_and_unknown_text(trained):
    for q in ("", "   ", "\t\n", "!!! ???", "—"):
        assert trained.retrieve_one(q) == Retrieval((), EMPTY_QUERY)
    assert trained.retrieve_one("zzzz qqqq") == Retrieval((), NO_KNOWN_TERMS)
    res = trained.retrieve(["", "zzzz", "hornby coach"])
    assert [x.reason for x in res] == [EMPTY_QUERY, NO_KNOWN_TERMS, None] and len(res[2]) > 0
    assert trained.retrieve([]) == [] and trained.retrieve(("",)) == [Retrieval((), EMPTY_QUERY)]


def test_k_and_beam(trained):
    assert len(trained.retrieve_one("hornby coach", k=2)) == 2
    many = trained.retrieve_one("hornby coach", k=1000, beam_size=100)  # clamped to the number of labels
    assert 0 < len(many) <= len(TOPICS)
    for bad in (0, -1, 1.5, True, "3", None):
        with pytest.raises(InputError, match="k must be a positive integer"):
            trained.retrieve_one("hornby", k=bad)
        with pytest.raises(InputError, match="k must be a positive integer"):
            trained.retrieve(["hornby"], k=bad)
    with pytest.raises(InputError, match="beam_size"):
        trained.retrieve_one("hornby", beam_size=0)
    with pytest.raises(InputError, match="beam_size"):
        trained.retrieve(["hornby"], beam_size=-2)
    for query in ("", "zzqx"):  # a query with no features still rejects a bad beam_size, in both paths
        with pytest.raises(InputError, match="beam_size"):
            trained.retrieve_one(query, beam_size=0)
        with pytest.raises(InputError, match="beam_size"):
            trained.retrieve([query], beam_size=0)


@pytest.mark.parametrize("bad", ["one string", b"bytes", 3, ["ok", None], ["ok", b"x"]])
def test_retrieve_type_errors(trained, bad):
    with pytest.raises(InputError):
        trained.retrieve(bad)


@pytest.mark.parametrize("bad", [None, 3, b"x", ["a"]])
def test_retrieve_one_type_errors(trained, bad):
    with pytest.raises(InputError, match="text must be a str"):
        trained.retrieve_one(bad)


def test_hydration_decodes_only_the_hits(saved, monkeypatch):
    r = Retriever.load(saved)
    calls = []
    real = LabelSet.hydrate
    monkeypatch.setattr(LabelSet, "hydrate", lambda self, ids: calls.append(list(ids)) or real(self, ids))
    res = r.retrieve_one("hornby coach", k=2)
    batch = r.retrieve(["hornby coach", "hornby scotsman", ""], k=2)
    assert r.labels._ids is None  # retrieval never builds the name -> id dictionary
    assert calls[0] == [r.labels.id_of(h.label) for h in res.hits] and len(calls[0]) == 2
    assert sorted(calls[1]) == sorted({r.labels.id_of(h.label) for x in batch for h in x.hits})  # each once


def test_results_are_json_ready(trained):
    res = trained.retrieve_one("wooden train", k=2)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["reason"] is None and d["hits"][0]["label"] == res.hits[0].label
    assert d["hits"][0]["metadata"]["price"] == 24.5
    info = json.loads(json.dumps(trained.info()))
    assert info["model_version"] == trained.model_version and info["nr_labels"] == len(TOPICS)
    assert info["features"] == "word+char" and info["meta"]["nr_label_metadata"] == 3


# ------------------------------------------------------------------------------------------ training options
def test_label_texts(tmp_path):
    texts, labels = corpus(seed=1)
    names = list(TOPICS)
    label_texts = {names[0]: "toy train with steam whistle", names[2]: "fashion doll", "unknown": "ignored"}
    r = Retriever.train(texts, labels, label_texts=label_texts, alpha=0.5, **TRAIN_KW)
    assert r.meta["nr_label_texts"] == 2 and r.model.meta["indexing"]["label_embedding"] == "pifa+lf-convex"
    # the featurizer was fitted on the label texts too: a word only they contain is a known term
    assert r.retrieve_one("whistle").reason is None
    assert r.retrieve_one("wooden railway", k=1).labels == [names[0]]
    r2 = Retriever.train(texts, labels, label_texts=label_texts, **TRAIN_KW)
    assert r2.model.meta["indexing"]["label_embedding"] == "pifa+lf-concat"
    r2.save(tmp_path / "r")
    assert Retriever.load(tmp_path / "r").retrieve_one("wooden railway", k=1).labels == [names[0]]


def test_prefitted_featurizer_metadata_path_and_options(tmp_path):
    texts, labels = corpus(n=120)
    feat = TextFeaturizer.from_spec("word").fit(texts)
    nr = feat.nr_features
    meta_path = tmp_path / "meta.jsonl"
    meta_path.write_text("".join(json.dumps({"id": k, **v}) + "\n" for k, v in META.items()), encoding="utf-8")
    r = Retriever.train(texts, labels, features=feat, label_metadata=meta_path, beam_size=3, topk=4, **TRAIN_KW)
    assert r.featurizer is feat and feat.nr_features == nr and r.featurizer.spec == "word"
    assert (r.model.beam_size, r.model.topk) == (3, 4)
    assert r.retrieve_one("barbie doll", k=1).hits[0].metadata == META["B00DOLL"]
    h = Retriever.train(texts, labels, features="word+char", hashing=1 << 12, **TRAIN_KW)
    assert h.model.nr_features == 2 << 12 and h.meta["hashing"] == 1 << 12
    assert h.retrieve_one("barbie doll", k=1).labels == ["B00DOLL"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(texts="one text"), "texts must be a sequence of strings"),
        (dict(texts=[]), "nothing to train on"),
        (dict(texts=["a", 3]), r"texts\[1\] is a int"),
        (dict(label_lists=[["a"]]), "label lists"),
        (dict(label_lists="abc"), "label_lists must be a sequence"),
        (dict(label_lists=[["a"], "b"] + [["c"]] * 238), r"label_lists\[1\] must be a list"),
        (dict(label_lists=[["a", ""]] + [["c"]] * 239), "labels are non-empty strings"),
        (dict(label_lists=[["a", 7]] + [["c"]] * 239), "labels are non-empty strings"),
        (dict(label_lists=[[]] + [["c"]] * 239), r"label_lists\[0\] is empty"),
        (dict(alpha=0.5), "alpha needs label_texts"),
        (dict(features=3), "features must be a spec string"),
        (dict(features="word+nope"), "feature spec"),
        (dict(label_features=np.zeros((8, 3))), "pass label_texts instead"),
        (dict(label_metadata=["not", "a", "mapping"]), "label_metadata must be a mapping"),
        (dict(label_texts={"kite": 3}), r"label_texts\['kite'\] is a int"),
        (dict(rerank={"candidates": 5}), "rerank needs label_texts"),
        (dict(rerank={"candidates": 0, "weight": 0.5}, label_texts={}), "candidates must be a positive int"),
        (dict(rerank={"weight": 2}, label_texts={}), r"weight must be a number in \[0, 1\]"),
        (dict(rerank=[100, 0.5], label_texts={}), "rerank must be a RerankConfig"),
    ],
)
def test_train_input_errors(kwargs, match):
    texts, labels = corpus()
    args = {"texts": texts, "label_lists": labels, **kwargs}
    with pytest.raises(InputError, match=match):
        Retriever.train(args.pop("texts"), args.pop("label_lists"), **args, **TRAIN_KW)


# ------------------------------------------------------------------------------------------------- save/load
class Crash(RuntimeError):
    pass


def _top(r: Retriever) -> list[list[str]]:
    return [x.labels for x in r.retrieve(_queries(), k=3)]


def test_overwrite_and_crash_mid_save_keep_old(trained, tmp_path, monkeypatch):
    path = tmp_path / "r"
    trained.save(path)
    other = Retriever.train(*corpus(n=160, seed=5), features="char", **TRAIN_KW)
    other.save(path)  # replacing a retriever is fine
    loaded = Retriever.load(path)  # memory-mapped from the directory it is saved over
    assert loaded.model_version == other.model_version
    loaded.save(path)
    assert _top(Retriever.load(path)) == _top(other)
    trained.save(path)

    def boom(self, p):
        raise Crash("disk on fire")

    monkeypatch.setattr(LabelSet, "save", boom)  # the last part written: everything else is on disk already
    with pytest.raises(Crash):
        other.save(path)
    monkeypatch.undo()
    calls = {"n": 0}
    real = model_io.save_npy

    def flaky(p, arr):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash("power cut")
        return real(p, arr)

    monkeypatch.setattr(model_io, "save_npy", flaky)
    with pytest.raises(Crash):
        other.save(path)
    monkeypatch.undo()
    r = Retriever.load(path)
    assert r.model_version == trained.model_version and _top(r) == _top(trained)
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # partial temp dirs removed


def test_refuses_to_overwrite_other_directories(trained, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("keep")
    with pytest.raises(ModelFormatError, match="refusing to overwrite"):
        trained.save(tmp_path / "docs")
    trained.model.save(tmp_path / "plain")
    with pytest.raises(ModelFormatError, match="refusing to overwrite"):
        trained.save(tmp_path / "plain")
    assert (tmp_path / "docs" / "a.txt").read_text() == "keep"


def _corrupt_copy(saved, tmp_path, damage):
    path = tmp_path / "c"
    shutil.copytree(saved, path)
    damage(path)
    return path


def _manifest(path, **changes):
    m = json.loads((path / "xmr-retriever.json").read_text())
    m.update(changes)
    (path / "xmr-retriever.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda p: (p / "xmr-retriever.json").unlink(), "not an xmr retriever directory"),
        (lambda p: (p / "xmr-retriever.json").write_text("{"), r"xmr-retriever.json: not valid JSON"),
        (lambda p: _manifest(p, format="xmr.other"), r"xmr-retriever.json: format is 'xmr.other'"),
        (lambda p: _manifest(p, version=99), "newer xmr"),
        (lambda p: _manifest(p, model_version=3), r"xmr-retriever.json: field 'model_version'"),
        (lambda p: _manifest(p, nr_labels=3), r"xmr-retriever.json: nr_labels is 3"),
        (lambda p: shutil.rmtree(p / "featurizer"), r"c/featurizer: missing"),
        (lambda p: (p / "featurizer" / "word.vocab.json").write_text("[1"), r"featurizer/word.vocab.json"),
        (lambda p: (p / "model" / "xmr-model.json").unlink(), r"c/model: not an xmr model directory"),
        (lambda p: (p / "model" / "weights" / "0" / "data.npy").write_bytes(b"junk"),
         r"c/model/weights/0/data.npy: not a valid .npy"),
        (lambda p: (p / "labels" / "names.bin").write_bytes(b"x"), r"labels/names.bin"),
        (lambda p: (shutil.rmtree(p / "labels"), LabelSet(["a", "b"]).save(p / "labels")),
         "the label set has 2 labels but the model has 8"),
    ],
)
def test_corrupt_retriever_names_the_file(saved, tmp_path, damage, match):
    path = _corrupt_copy(saved, tmp_path, damage)
    with pytest.raises(ModelFormatError, match=match):
        Retriever.load(path)


def test_load_plain_model_or_missing_dir(trained, tmp_path):
    trained.model.save(tmp_path / "plain")
    with pytest.raises(ModelFormatError, match="xmr text train"):
        Retriever.load(tmp_path / "plain")
    with pytest.raises(ModelFormatError, match="does not exist"):
        Retriever.load(tmp_path / "nowhere")


def test_constructor_checks_sizes(trained):
    with pytest.raises(InputError, match="labels"):
        Retriever(trained.featurizer, trained.model, LabelSet(["a"]))
    small = XLinearModel.train(trained.featurizer.transform(["hornby coach", "barbie doll"]),
                               np.eye(2, dtype=np.float32), nr_splits=2, max_leaf_size=2, threads=1)
    other_feat = TextFeaturizer.from_spec("word").fit(["a b c"])
    with pytest.raises(InputError, match="features"):
        Retriever(other_feat, small, LabelSet(["a", "b"]))


# ------------------------------------------------------------------------------------------------ rerank stage
LABEL_TEXTS = {name: " ".join(words) for name, words in TOPICS.items() if name != "yoyo"}  # yoyo: zero row


@pytest.fixture(scope="module")
def reranked():
    texts, labels = corpus()
    return Retriever.train(texts, labels, label_texts=LABEL_TEXTS, label_metadata=META,
                           rerank=RerankConfig(candidates=6, weight=0.5), **TRAIN_KW)


def _cosine_order(r: Retriever, q: str, ids: np.ndarray, model_scores: np.ndarray, w: float) -> list[str]:
    """Reference: blend by dense numpy cosine to the label texts' features, stable sort, as label names."""
    Z = r.featurizer.transform([LABEL_TEXTS.get(n, "") for n in r.labels.names(range(r.nr_labels))]).toarray()
    x = r.featurizer.transform([q]).toarray().ravel()
    final = (1 - w) * model_scores.astype(np.float64) + w * (Z[ids] @ x)
    return r.labels.names(ids[np.argsort(-final, kind="stable")].tolist())


def test_rerank_matches_reference_and_can_be_turned_off(reranked):
    assert reranked.reranker is not None and reranked.reranker.shape == (len(TOPICS), reranked.model.nr_features)
    assert reranked.meta["rerank"] == {"candidates": 6, "weight": 0.5}
    tree = reranked.model.tree  # single queries are scored leaf by leaf (the batch path scans rows: same sums)
    assert reranked.reranker.grouped.groups.tolist() == tree.parents(tree.depth - 1).tolist()
    for q in _queries():
        res = reranked.retrieve_one(q, k=3)
        plain = reranked.retrieve_one(q, k=3, rerank=False)
        idx, vals = reranked.featurizer.transform_one(q)
        if idx.size == 0:
            assert res.reason == plain.reason is not None and not res.hits
            continue
        # rerank=False is plain beam search
        ids, scores = reranked.model.predict_one_sparse(idx, vals, topk=3)
        assert plain.labels == reranked.labels.names(ids.tolist())
        # with the stage: the 6 beam candidates re-ordered by the blend, top 3
        ids, scores = reranked.model.predict_one_sparse(idx, vals, topk=6)
        assert res.labels == _cosine_order(reranked, q, ids, scores, 0.5)[:3]
        assert [h.score for h in res.hits] == sorted((h.score for h in res.hits), reverse=True)
        assert all(0.0 <= h.score <= 1.0 for h in res.hits)
    # the label text decides: a query that is exactly one label's text ranks it first
    name = "B00DOLL"
    assert reranked.retrieve_one(LABEL_TEXTS[name], k=1).labels == [name]


def test_rerank_batch_equals_single(reranked):
    qs = _queries()
    for rerank in (None, False):
        for k in (1, 3, 8, 50):
            batch = reranked.retrieve(qs, k=k, beam_size=2, rerank=rerank)
            for b, q in zip(batch, qs):
                s = reranked.retrieve_one(q, k=k, beam_size=2, rerank=rerank)
                assert b.reason == s.reason and b.labels == s.labels
                assert [h.metadata for h in b.hits] == [h.metadata for h in s.hits]
                np.testing.assert_allclose([h.score for h in b.hits], [h.score for h in s.hits], rtol=1e-5,
                                           atol=1e-6)
                assert len(b.hits) <= (0 if b.reason else min(k, len(TOPICS)))


@pytest.mark.parametrize("k", [1, 3, 50])
def test_rerank_many_equals_rank_one(reranked, k):
    qs = _queries()
    for q, (ids, scores, reason) in zip(qs, reranked.rank_many(qs, k=k)):
        want_ids, want_scores, want_reason = reranked.rank_one(q, k=k)
        assert reason == want_reason and ids.tolist() == want_ids.tolist()
        assert scores.tobytes() == want_scores.tobytes()


def test_rerank_weight_zero_keeps_beam_order(reranked):
    r0 = Retriever(reranked.featurizer, reranked.model, reranked.labels, reranked.meta,
                   reranked.reranker.with_config({"candidates": 6, "weight": 0.0}))
    qs = _queries()
    assert [x.labels for x in r0.retrieve(qs, k=3)] == [x.labels for x in reranked.retrieve(qs, k=3, rerank=False)]


def test_rerank_flag_errors(trained, reranked):
    with pytest.raises(InputError, match="has no rerank stage"):
        trained.retrieve_one("hornby", rerank=True)
    with pytest.raises(InputError, match="has no rerank stage"):
        trained.retrieve(["hornby"], rerank=True)
    with pytest.raises(InputError, match="rerank must be True, False or None"):
        reranked.retrieve_one("hornby", rerank="yes")
    assert trained.retrieve_one("hornby", rerank=False).labels == trained.retrieve_one("hornby").labels
    assert reranked.retrieve_one("hornby", rerank=True).labels == reranked.retrieve_one("hornby").labels
    with pytest.raises(InputError, match="reranker's label features are 8 x 3"):
        Retriever(reranked.featurizer, reranked.model, reranked.labels, None,
                  Reranker(__import__("scipy.sparse").sparse.csr_matrix((8, 3), dtype=np.float32), {}))


@pytest.fixture(scope="module")
def saved_reranked(reranked, tmp_path_factory):
    path = tmp_path_factory.mktemp("reranked") / "r"
    reranked.save(path)
    return path


def test_rerank_save_load(reranked, saved_reranked, saved):
    manifest = json.loads((saved_reranked / "xmr-retriever.json").read_text())
    assert manifest["version"] == 1 and manifest["rerank"] == {"candidates": 6, "weight": 0.5}
    assert sorted(p.name for p in (saved_reranked / "rerank").iterdir()) == [
        "data.npy", "indices.npy", "indptr.npy", "rerank.json"]
    r = Retriever.load(saved_reranked)
    assert isinstance(r.reranker.data, np.memmap) and r.reranker.config == reranked.reranker.config
    assert r.info()["rerank"]["candidates"] == 6
    qs = _queries()
    assert [x.to_dict() for x in r.retrieve(qs, k=4)] == [x.to_dict() for x in reranked.retrieve(qs, k=4)]
    assert [r.retrieve_one(q, k=4).to_dict() for q in qs] == [reranked.retrieve_one(q, k=4).to_dict() for q in qs]
    # a retriever saved without the stage has no rerank key and loads without one
    assert "rerank" not in json.loads((saved / "xmr-retriever.json").read_text())
    assert Retriever.load(saved).reranker is None and Retriever.load(saved).info()["rerank"] is None


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda p: shutil.rmtree(p / "rerank"), r"c/rerank: missing; the manifest names a rerank stage"),
        (lambda p: _manifest(p, rerank=5), r"xmr-retriever.json: field 'rerank' must be an object"),
        (lambda p: (p / "rerank" / "data.npy").write_bytes(b"junk"), r"c/rerank/data.npy: not a valid .npy"),
        (lambda p: (p / "rerank" / "rerank.json").write_text("[]"), r"c/rerank/rerank.json: expected a JSON object"),
        (lambda p: (shutil.rmtree(p / "rerank"), Reranker(__import__("scipy.sparse").sparse.csr_matrix(
            (8, 3), dtype=np.float32), {}).save(p / "rerank")), r"rerank/rerank.json: Z is 8 x 3"),
    ],
)
def test_corrupt_rerank_names_the_file(saved_reranked, tmp_path, damage, match):
    path = _corrupt_copy(saved_reranked, tmp_path, damage)
    with pytest.raises(ModelFormatError, match=match):
        Retriever.load(path)
