"""Trie/k-means hybrid label trees: trie on top, k-means below, padding, prefixes, determinism, bad input."""

from __future__ import annotations

import random

import numpy as np
import pytest
import scipy.sparse as sp

from indexing.hybrid import hybrid_index, hybrid_tree
from indexing.tree import LabelTree
from indexing.trie import TrieError, trie_index


def random_labels(seed: int, n: int, alphabet: str = "abcAB", max_len: int = 7) -> list[str]:
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(alphabet) for _ in range(rng.randint(1, max_len))))
    return sorted(out, key=lambda s: rng.random())


def char_embeddings(labels: list[str]) -> sp.csr_matrix:
    """Tiny stand-in for prefix-weighted char features: character counts weighted 1/(1+position)."""
    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for i, s in enumerate(labels):
        for p, ch in enumerate(s.casefold()):
            rows.append(i)
            cols.append(vocab.setdefault(ch, len(vocab)))
            vals.append(1.0 / (1 + p))
    m = sp.csr_matrix((vals, (rows, cols)), shape=(len(labels), len(vocab)), dtype=np.float32)
    m.sum_duplicates()
    return m


def ancestors(tree: LabelTree, level: int) -> np.ndarray:
    node = np.arange(tree.nr_labels)
    for t in range(tree.depth - 1, level, -1):
        node = np.asarray(tree.parents(t))[node]
    return node


@pytest.fixture(scope="module")
def labels() -> list[str]:
    return random_labels(0, 600)


def test_trie_on_top_kmeans_below(labels):
    emb = char_embeddings(labels)
    pt = hybrid_index(labels, emb, trie_depth=2, nr_splits=4, max_leaf_size=10)
    tree = pt.tree
    LabelTree([tree.parents(t) for t in range(tree.depth)])  # invariants hold
    trie = trie_index(labels, max_depth=2, max_leaf_size=10)
    # the top levels are exactly the trie's
    for t in range(trie.tree.depth - 1):
        assert np.array_equal(tree.parents(t), trie.tree.parents(t))
        assert pt.prefixes[t] == trie.prefixes[t]
        assert pt.starts[t] is not None
    assert all(s is None for s in pt.starts[trie.tree.depth - 1:])
    assert tree.depth > trie.tree.depth  # k-means levels were added
    # every label once at the bottom, leaves within the cap, and under the same trie node as in the trie
    assert sorted(tree.label_order().tolist()) == list(range(len(labels)))
    assert np.bincount(tree.parents(tree.depth - 1)).max() <= 10
    assert np.array_equal(ancestors(tree, 1), ancestors(trie.tree, 1))


def test_every_node_prefix_is_shared_by_its_labels(labels):
    pt = hybrid_index(labels, char_embeddings(labels), trie_depth=1, nr_splits=3, max_leaf_size=8)
    for t in range(pt.tree.depth - 1):
        anc = ancestors(pt.tree, t)
        for j, p in enumerate(pt.prefixes[t]):
            keys = {labels[i].casefold() for i in np.flatnonzero(anc == j)}
            assert keys and all(k.startswith(p) for k in keys)
            assert pt.exact[t][j] == (keys == {p})


def test_matching_nodes_on_kmeans_levels(labels):
    pt = hybrid_index(labels, char_embeddings(labels), trie_depth=2, nr_splits=4, max_leaf_size=6)
    for q in ["a", "Ab", "abc", "cc", "bca", "zz", ""]:
        for t in range(pt.tree.depth - 1):
            anc = ancestors(pt.tree, t)
            expect = sorted({int(anc[i]) for i, s in enumerate(labels) if s.casefold().startswith(q.casefold())})
            assert pt.matching_nodes(t, q).tolist() == expect


def test_padding_to_common_depth():
    # "a..." is big (k-means below), "b..." small (hangs directly): the small one is padded with a chain
    labels = [f"a{i:03d}" for i in range(40)] + ["b1", "b2"]
    emb = np.random.default_rng(0).random((len(labels), 5))
    tree = hybrid_tree(labels, emb, trie_depth=1, nr_splits=2, max_leaf_size=5)
    anc = [ancestors(tree, t) for t in range(tree.depth - 1)]
    b_ids = [40, 41]
    assert tree.level_sizes[0] == 2
    for t in range(1, tree.depth - 1):
        # the "b" labels share one single-child chain node on every level below the trie
        assert len({int(anc[t][i]) for i in b_ids}) == 1
        j = int(anc[t][40])
        assert int(tree.parents(t)[j]) == int(anc[t - 1][40])
        assert (tree.parents(t) == tree.parents(t)[j]).sum() == 1
    assert np.bincount(tree.parents(tree.depth - 1)).max() <= 5


def test_small_label_set_is_one_vs_all():
    tree = hybrid_tree(["x", "y", "z"], np.eye(3), max_leaf_size=5)
    assert tree == LabelTree.one_vs_all(3)


def test_single_key_group_is_still_clustered():
    labels = ["Foo", "foo", "FOO", "fOo", "FOo", "foO"]
    tree = hybrid_tree(labels, np.eye(6), trie_depth=2, nr_splits=2, max_leaf_size=2)
    assert np.bincount(tree.parents(tree.depth - 1)).max() <= 2


def test_deterministic_for_a_seed_dense_equals_sparse(labels):
    emb = char_embeddings(labels)
    a = hybrid_tree(labels, emb, trie_depth=2, nr_splits=4, max_leaf_size=10, seed=3)
    b = hybrid_tree(labels, emb.copy(), trie_depth=2, nr_splits=4, max_leaf_size=10, seed=3)
    c = hybrid_tree(labels, emb.toarray(), trie_depth=2, nr_splits=4, max_leaf_size=10, seed=3)
    assert a == b == c
    d = hybrid_tree(labels, emb, trie_depth=2, nr_splits=4, max_leaf_size=10, seed=4)
    assert d.level_sizes[:2] == a.level_sizes[:2]


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"embeddings": np.zeros((3, 2))}, "one per label"),
        ({"embeddings": np.zeros(4)}, "2-D"),
        ({"embeddings": [["x", "y"]] * 4}, "numeric"),
        ({"trie_depth": 0}, "trie_depth"),
        ({"max_leaf_size": 1}, "max_leaf_size"),
        ({"nr_splits": 1}, "nr_splits"),
        ({"seed": -1}, "seed"),
        ({"labels": ["a", "a", "b", "c"]}, "twice"),
    ],
)
def test_bad_input(kw, match):
    args = {"labels": ["a", "b", "c", "d"], "embeddings": np.eye(4)} | kw
    with pytest.raises(TrieError, match=match):
        hybrid_tree(args.pop("labels"), args.pop("embeddings"), **args)
