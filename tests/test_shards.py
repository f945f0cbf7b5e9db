"""A retriever split into a router and shards answers exactly as the unsplit one (labels, bit-identical scores,
tie order), through save and load; bad splits and mismatched parts are refused with clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from xmr.model_io import ModelFormatError
from xmr.retriever import Retriever
from xmr.shards import Router, Shard, SplitRetriever, assign_subtrees, save_split, split
from xmr.validation import InputError

WORDS = [f"w{i}" for i in range(400)]


def synthetic(nr_labels: int = 300, n: int = 1500, seed: int = 0):
    """Each label owns 3 words; a text mixes 2 words of 1-2 labels and a common word."""
    rng = np.random.default_rng(seed)
    own = rng.choice(len(WORDS), (nr_labels, 3))
    texts, labels = [], []
    for i in range(n):
        labs = rng.choice(nr_labels, 1 + (i % 4 == 0), replace=False)
        words = [WORDS[w] for lab in labs for w in rng.choice(own[lab], 2, replace=False)]
        words.append(WORDS[int(rng.integers(0, 20))])
        texts.append(" ".join(words))
        labels.append([f"L{lab}" for lab in labs])
    queries = [" ".join(WORDS[w] for w in rng.choice(len(WORDS), 2)) for _ in range(150)] + ["", "zzz unknown"]
    meta = {f"L{j}": {"title": f"item {j}", "price": j / 10} for j in range(0, nr_labels, 3)}
    return texts, labels, queries, meta


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def retriever(data):
    texts, labels, _, meta = data
    r = Retriever.train(texts, labels, features="word", label_metadata=meta, nr_splits=4, max_leaf_size=6,
                        threads=1, seed=0)
    assert r.model.depth >= 4  # the router holds at least two levels
    return r


def same_answers(r: Retriever, sr: SplitRetriever, queries, k: int, beam: int | None) -> None:
    for q in queries:
        ids, scores, reason = r.rank_one(q, k=k, beam_size=beam)
        top, names = sr.rank_one(q, k=k, beam_size=beam)
        assert [lab for lab, _ in top] == ids.tolist(), q
        assert [s for _, s in top] == scores.tolist(), q  # bit-identical
        assert names == r.labels.names(ids)
        assert bool(top) == bool(ids.size) and (reason is None) == bool(ids.size)


@pytest.mark.parametrize("shards", [1, 2, 3, 4])
def test_split_answers_as_the_whole(retriever, data, shards):
    router, parts = split(retriever, shards)
    assert sum(p.label_ids.size for p in parts) == retriever.nr_labels
    assert sorted(np.concatenate([p.label_ids for p in parts]).tolist()) == list(range(retriever.nr_labels))
    sr = SplitRetriever(router, parts)
    for k, beam in [(10, None), (5, 3), (30, 1), (retriever.nr_labels, 25)]:
        same_answers(retriever, sr, data[2], k, beam)
    spread = [len(router.plan(routed[2])) for routed in map(router.route_one, data[2]) if routed is not None]
    assert max(spread) == shards  # some beams reach every shard, so merging is exercised


def test_split_survives_save_and_load_and_keeps_metadata(retriever, data, tmp_path):
    router, parts = split(retriever, 3)
    paths = save_split(router, parts, tmp_path / "out")
    assert [p.name for p in paths] == ["router", "shard-0", "shard-1", "shard-2"]
    loaded = SplitRetriever(Router.load(paths[0]), [Shard.load(p) for p in paths[1:]])
    same_answers(retriever, loaded, data[2], 10, None)
    s = loaded.shards[0]
    j = next(i for i, lab in enumerate(s.label_ids.tolist()) if lab % 3 == 0 and retriever.labels.has_metadata)
    assert s.labels.metadata(j) == retriever.labels.metadata(int(s.label_ids[j]))


def test_subtrees_are_balanced_by_labels(retriever):
    owner = assign_subtrees(retriever.model.tree, 2)
    tree = retriever.model.tree
    under = np.ones(tree.nr_labels)
    for t in range(tree.depth - 1, 0, -1):
        under = np.bincount(tree.parents(t), weights=under, minlength=tree.level_sizes[t - 1])
    loads = [under[owner == s].sum() for s in range(2)]
    assert sum(loads) == tree.nr_labels and max(loads) - min(loads) <= under.max()


def test_bad_splits_and_parts_are_refused(retriever, tmp_path):
    top = retriever.model.tree.level_sizes[0]
    with pytest.raises(InputError, match="shards must be in"):
        split(retriever, top + 1)
    with pytest.raises(InputError, match="shards must be in"):
        split(retriever, 0)
    router, parts = split(retriever, 2)
    with pytest.raises(InputError, match="needs shards 0..1"):
        SplitRetriever(router, parts[:1])
    parts[1].model_version = "other"
    with pytest.raises(InputError, match="model version"):
        SplitRetriever(router, parts)
    foreign = int(np.setdiff1d(np.arange(router.owner.size), parts[0].parents)[0])
    with pytest.raises(InputError, match=f"node {foreign} is not on shard 0"):
        parts[0].expand(np.array([0], np.int32), np.array([1.0], np.float32), np.array([foreign]),
                        np.array([1.0], np.float32), 5)
    with pytest.raises(ModelFormatError, match="no xmr-shard.json"):
        Shard.load(tmp_path)
    router.save(tmp_path / "r")
    (tmp_path / "r" / "owner.npy").write_bytes(b"junk")
    with pytest.raises(ModelFormatError, match="owner.npy"):
        Router.load(tmp_path / "r")


def test_one_level_models_and_rerank_stages_cannot_be_split(data):
    texts, labels, _, _ = data
    flat = Retriever.train(texts[:200], labels[:200], features="word", nr_splits=2, max_leaf_size=10**6, threads=1)
    assert flat.model.depth == 1
    with pytest.raises(InputError, match="one-level model"):
        split(flat, 1)
    reranked = Retriever.train(texts[:200], labels[:200], features="word", threads=1, nr_splits=2, max_leaf_size=4,
                               label_texts={lab: lab for ls in labels[:200] for lab in ls},
                               rerank={"candidates": 20, "weight": 0.5})
    with pytest.raises(InputError, match="rerank stage"):
        split(reranked, 2)
