"""xmr/qac/model.py: prefix consistency, MPC fill, session context, save/load, bad input (small synthetic log)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from indexing.tree import LabelTree
from xmr.model_io import ModelFormatError
from xmr.qac.features import QacFeaturizer, join_blocks
from xmr.qac.model import CompletionModel, sample_prefix_lengths
from xmr.validation import InputError

TOPICS = ["lego", "lego city", "hornby", "harry potter", "hotels", "honda", "weather", "walmart", "wells fargo",
          "ebay", "espn", "google", "games", "hotmail", "home depot", "Hotmail  Login"]


def synthetic_pairs(seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = [("hornby", "hornby coach")] * 30 + [("", "hotmail")] * 40  # hotmail: the most popular 'h' query
    for _ in range(300):
        a, b = rng.choice(TOPICS), rng.choice(TOPICS)
        pairs.append((a if rng.random() < 0.7 else "", b))
    return pairs


@pytest.fixture(scope="module")
def model() -> CompletionModel:
    return CompletionModel.train(synthetic_pairs(), threads=1)


def test_labels_are_normalised_and_sorted(model):
    assert model.labels == sorted(set(model.labels))
    assert "hotmail login" in model.labels and "Hotmail  Login" not in model.labels
    assert model.labels == CompletionModel.label_names(synthetic_pairs())


@pytest.mark.parametrize("previous", ["", "hornby", "lego", "unknown words here"])
@pytest.mark.parametrize("prefix", ["h", "H", "ho", "hot", "Hotmail l", "lego ", "w", "zzz", "", "  e"])
def test_completions_start_with_prefix(model, previous, prefix):
    got = model.complete(previous, prefix, k=5)
    p = " ".join(prefix.casefold().split()) + (" " if prefix[-1:].isspace() and prefix.strip() else "")
    assert all(q.startswith(p) for q, _ in got)
    assert len({q for q, _ in got}) == len(got)
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)


def test_mpc_fills_to_k(model):
    h = [q for q in model.labels if q.startswith("h")]
    got = model.complete("lego", "h", k=len(h))
    assert sorted(q for q, _ in got) == sorted(h)
    assert len(model.complete("", "", k=len(model.labels))) == len(model.labels)
    assert model.complete("", "zzz") == []


def test_session_context_changes_the_ranking(model):
    assert model.complete("hornby", "h", k=3)[0][0] == "hornby coach"
    assert model.complete("lego", "h", k=3)[0][0] != "hornby coach"
    assert model.complete("", "h", k=3)[0][0] == "hotmail"  # first query: popularity wins


def test_odd_text_never_raises(model):
    for prev, prefix in [("\x00\u202e😀", "\t\n"), ("a" * 10_000, "ü" * 500), ("", "%%%"), ("😀", "😀")]:
        assert isinstance(model.complete(prev, prefix), list)


def test_single_and_batch_features_agree(model):
    f = model.features
    reqs = [("hornby", "h"), ("", "lego c"), ("weather today", ""), ("", "")]
    X = f.transform([a for a, _ in reqs], [b for _, b in reqs]).toarray()
    for row, (a, b) in zip(X, reqs):
        idx, val = f.transform_one(a, b)
        dense = np.zeros(f.nr_features, dtype=np.float32)
        dense[idx] = val
        np.testing.assert_allclose(dense, row, rtol=1e-6, atol=1e-7)
        assert np.all(np.diff(idx) > 0)


def test_join_blocks_matches_numpy():
    rng = np.random.default_rng(0)
    for n, m in [(0, 0), (3, 0), (0, 4), (7, 5)]:
        pi, qi = np.sort(rng.choice(50, n, replace=False)).astype(np.int32), np.arange(m, dtype=np.int32)
        pv, qv = rng.random(n, dtype=np.float32), rng.random(m, dtype=np.float32)
        fp, fq = np.float32(0.6), np.float32(0.8)
        idx, val = join_blocks(pi, pv, qi, qv, 50, fp, fq)
        assert idx.dtype == np.int32 and val.dtype == np.float32
        assert idx.tolist() == np.concatenate([pi, qi + np.int32(50)]).tolist()
        assert val.tobytes() == np.concatenate([pv * fp, qv * fq]).astype(np.float32).tobytes()


def test_save_load_round_trip(model, tmp_path):
    model.save(tmp_path / "qac")
    back = CompletionModel.load(tmp_path / "qac")
    for prev, prefix in [("hornby", "h"), ("", "w"), ("lego", "lego "), ("", "")]:
        assert back.complete(prev, prefix, k=7) == model.complete(prev, prefix, k=7)
    model.save(tmp_path / "qac")  # replacing a saved model is allowed
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("keep me")
    with pytest.raises(ModelFormatError):
        model.save(tmp_path / "other")


def test_load_rejects_corrupt_files(model, tmp_path):
    model.save(tmp_path / "qac")
    (tmp_path / "qac" / "labels.json").write_text(json.dumps(["b", "a"]))
    with pytest.raises(ModelFormatError, match="labels.json"):
        CompletionModel.load(tmp_path / "qac")
    model.save(tmp_path / "qac2")
    (tmp_path / "qac2" / "qac.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="qac.json"):
        CompletionModel.load(tmp_path / "qac2")
    with pytest.raises(ModelFormatError):
        CompletionModel.load(tmp_path / "missing")


def test_bad_input(model):
    for args in [(None, "h"), ("x", 3), (b"x", "h")]:
        with pytest.raises(InputError):
            model.complete(*args)
    for k in [0, -1, 2.5, True, "3"]:
        with pytest.raises(InputError):
            model.complete("", "h", k=k)
    with pytest.raises(InputError):
        model.complete("", "zzz", beam_size=0)
    with pytest.raises(InputError):
        CompletionModel.train("not pairs")
    with pytest.raises(InputError):
        CompletionModel.train([("a", 3)])
    with pytest.raises(InputError):
        CompletionModel.train([("a", "  ")])
    with pytest.raises(InputError):
        CompletionModel.train(synthetic_pairs(), prefixes_per_pair=0)


def test_given_tree_and_tree_builder():
    pairs = synthetic_pairs(1)
    n = len(CompletionModel.label_names(pairs))
    m = CompletionModel.train(pairs, index=LabelTree.one_vs_all(n), threads=1)
    assert m.complete("hornby", "h")[0][0] == "hornby coach"
    seen = []
    m2 = CompletionModel.train(pairs, index=lambda labels: seen.append(labels) or LabelTree.one_vs_all(len(labels)),
                               threads=1)
    assert seen == [m2.labels]
    with pytest.raises(InputError, match="tree has"):
        CompletionModel.train(pairs, index=LabelTree.one_vs_all(n + 1), threads=1)
    with pytest.raises(InputError, match="index must be"):
        CompletionModel.train(pairs, index="btree", threads=1)


def test_prefix_lengths_always_include_a_short_one():
    rng = np.random.default_rng(0)
    for n in [1, 2, 5, 30]:
        for _ in range(50):
            lens = sample_prefix_lengths(n, 3, rng)
            assert lens == sorted(set(lens)) and 1 <= lens[0] <= min(3, n) and lens[-1] <= n


def test_featurizer_weights_validated(model):
    with pytest.raises(InputError):
        QacFeaturizer(model.features.prefix, model.features.previous, prefix_weight=0)


def test_first_query_is_mpc_and_prior_is_validated(model):
    assert model.complete("", "h", k=5) == [(q, pytest.approx(s)) for q, s in model.complete("  ", "h", k=5)]
    assert [q for q, _ in model.complete("", "h", k=5)] == [q for q, _ in model.mpc.complete("h", 5)]
    plain = [q for q, _ in model.complete("hornby", "h", k=5, popularity=0.0)]
    assert plain[0] == "hornby coach"
    for bad in [-1, True, "2", float("nan")]:
        with pytest.raises(InputError):
            model.complete("hornby", "h", popularity=bad)


@pytest.mark.parametrize("index", ["kmeans", "trie", "hybrid"])
def test_every_index_kind_completes_within_the_prefix(index):
    pairs = synthetic_pairs(2)
    m = CompletionModel.train(pairs, index=index, trie_depth=2, max_leaf_size=2, threads=1, nr_splits=2)
    assert m.meta["index"] == index and m.model.tree.depth >= 2
    # beam 1 with one candidate: only a search confined to the prefix's subtrees can still find the answer
    m.candidates = 1
    got = m.complete("hornby", "ho", k=1, beam_size=1, popularity=0.0)
    assert got[0][0] == "hornby coach"
    for prefix in ["h", "ho", "hotm", "w", "lego c", "x"]:
        assert all(q.startswith(prefix) for q, _ in m.complete("lego", prefix, k=10, beam_size=1))


def test_unconstrained_search_filters_afterwards(model):
    for prefix in ["h", "ho", "w", "lego "]:
        got = model.complete("hornby", prefix, k=5, constrained=False)
        assert got and all(q.startswith(prefix) for q, _ in got)
    # with the whole tree searched, a generous beam finds the same best completion
    assert model.complete("hornby", "h", 1, beam_size=50, constrained=False) == model.complete("hornby", "h", 1,
                                                                                              beam_size=50)
