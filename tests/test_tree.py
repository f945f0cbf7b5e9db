"""LabelTree: invariants, children, PECOS chain round trip (incl. renumbering), leaf grouping shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from indexing.tree import LabelTree, LabelTreeError


def paths(tree: LabelTree) -> np.ndarray:
    """Ancestor ids of every label, one column per level above the labels (top first)."""
    node = np.arange(tree.nr_labels)
    cols = []
    for t in range(tree.depth - 1, 0, -1):
        node = np.asarray(tree.parents(t))[node]
        cols.append(node)
    return np.stack(cols[::-1], axis=1) if cols else np.zeros((tree.nr_labels, 0), dtype=np.int64)


@pytest.fixture
def small() -> LabelTree:
    # 2 top nodes, 5 mid nodes (2 + 3), 9 labels interleaved over the mid nodes
    return LabelTree([np.zeros(2, dtype=np.int64), np.array([0, 0, 1, 1, 1]), np.array([4, 0, 1, 0, 2, 3, 4, 2, 1])])


def test_basic_properties(small):
    assert small.depth == 3
    assert small.level_sizes == (2, 5, 9)
    assert small.nr_labels == 9
    assert small.parents(2).dtype == np.int32
    assert not small.parents(2).flags.writeable
    indptr, idx = small.children(2)
    assert indptr.tolist() == [0, 2, 4, 6, 7, 9]
    assert idx.tolist() == [1, 3, 2, 8, 4, 7, 5, 0, 6]
    indptr, idx = small.children(1)
    assert indptr.tolist() == [0, 2, 5] and idx.tolist() == [0, 1, 2, 3, 4]
    indptr, idx = small.children(0)
    assert indptr.tolist() == [0, 2] and idx.tolist() == [0, 1]
    assert small.label_order().tolist() == [1, 3, 2, 8, 4, 7, 5, 0, 6]
    assert repr(small) == "LabelTree(level_sizes=(2, 5, 9))"


Z2 = np.zeros(2, dtype=np.int64)


@pytest.mark.parametrize(
    "parents,match",
    [
        ([], "at least one level"),
        ([Z2, np.array([0, 0, 0])], "level 0: cluster 1 has no children"),
        ([Z2, np.array([1, 0, 1]), np.array([0, 1, 2])], "level 1: siblings must be contiguous"),
        ([Z2, np.array([0, 2])], r"parent ids must lie in \[0, 2\)"),
        ([Z2, np.array([-1, 0, 1])], "parent ids must lie"),
        ([np.ones(2, dtype=np.int64)], r"parent ids must lie in \[0, 1\)"),
        ([Z2, np.array([0.0, 1.0])], "must hold integers"),
        ([Z2, np.zeros((2, 2), dtype=np.int64)], "must be 1-D"),
        ([np.zeros(0, dtype=np.int64)], "non-empty"),
    ],
)
def test_invariant_violations(parents, match):
    with pytest.raises(LabelTreeError, match=match):
        LabelTree(parents)
    assert issubclass(LabelTreeError, ValueError)


def test_unsigned_parent_arrays():
    tree = LabelTree([np.zeros(2, dtype=np.uint64), np.array([0, 1, 1], dtype=np.uint64)])
    assert tree.level_sizes == (2, 3) and tree.parents(1).dtype == np.int32
    with pytest.raises(LabelTreeError, match="no children"):
        LabelTree([np.zeros(2, dtype=np.uint64), np.array([1, 1], dtype=np.uint64)])


def test_bottom_level_may_interleave(small):
    assert (np.diff(small.parents(2)) < 0).any()  # allowed: labels keep the caller's ids


def test_equality(small):
    same = LabelTree([np.asarray(small.parents(t)) for t in range(small.depth)])
    assert same == small
    assert LabelTree.one_vs_all(9) != small
    assert small != "tree"


def test_one_vs_all():
    t = LabelTree.one_vs_all(7)
    assert t.depth == 1 and t.level_sizes == (7,)
    chain = t.to_chain()
    assert len(chain) == 1 and chain[0].shape == (7, 1)


def test_to_chain_invariants(small):
    chain = small.to_chain()
    assert [c.shape for c in chain] == [(2, 1), (5, 2), (9, 5)]
    above = 1
    for c in chain:
        assert sp.isspmatrix_csc(c) and c.dtype == np.float32
        assert c.shape[1] == above
        assert (c.data == 1).all()
        assert (np.diff(c.tocsr().indptr) == 1).all()  # one parent per node
        assert (np.diff(c.indptr) > 0).all()  # no empty cluster
        above = c.shape[0]


def test_chain_round_trip(small):
    tree, perms = LabelTree.from_chain(small.to_chain())
    assert tree == small
    assert all((p == np.arange(p.size)).all() for p in perms)


def test_from_chain_renumbers_non_contiguous():
    # chain whose middle level interleaves siblings: mid nodes 0..4 under tops [1, 0, 1, 0, 1]
    top = np.zeros(2, dtype=int)
    mid = np.array([1, 0, 1, 0, 1])
    lab = np.array([0, 1, 2, 3, 4, 0, 2, 4, 1, 3])

    def csc(parent, above):
        n = parent.size
        return sp.csc_matrix((np.ones(n, np.float32), (np.arange(n), parent)), shape=(n, above))

    chain = [csc(top, 1), csc(mid, 2), csc(lab, 5)]
    tree, perms = LabelTree.from_chain(chain)
    assert tree.level_sizes == (2, 5, 10)
    assert (np.diff(tree.parents(1)) >= 0).all()
    # perms[t][new] = old: every label keeps the same ancestors, expressed in the old ids
    old_paths = np.stack([mid[lab], lab], axis=1)
    new_paths = paths(tree)
    mapped = np.stack([perms[0][new_paths[:, 0]], perms[1][new_paths[:, 1]]], axis=1)
    np.testing.assert_array_equal(mapped, old_paths)
    np.testing.assert_array_equal(perms[2], np.arange(10))  # labels never renumbered
    assert sorted(perms[1].tolist()) == list(range(5))
    # top level was already in order; the renumbered tree's chain comes back unchanged
    tree2, perms2 = LabelTree.from_chain(tree.to_chain())
    assert tree2 == tree and all((p == np.arange(p.size)).all() for p in perms2)


def test_from_chain_errors():
    good = sp.csc_matrix(np.ones((3, 1), np.float32))
    with pytest.raises(LabelTreeError, match="has 2 columns"):
        LabelTree.from_chain([good, sp.csc_matrix(np.ones((4, 2), np.float32))])
    two = sp.csc_matrix(np.array([[1, 1], [0, 1]], np.float32))
    with pytest.raises(LabelTreeError, match="exactly one nonzero"):
        LabelTree.from_chain([sp.csc_matrix(np.ones((2, 1), np.float32)), two])


def pecos_leaf_assignment(L: int, leaf_size: int) -> np.ndarray:
    """Balanced leaf codes like hierarchical k-means gives: 2^D leaves of floor/ceil(L / 2^D) labels."""
    depth = max(1, math.ceil(math.log2(L / leaf_size)))
    return np.repeat(np.arange(2**depth), np.diff(np.linspace(0, L, 2**depth + 1).astype(int)))


@pytest.mark.parametrize(
    "L,B,leaf,sizes",
    [
        (30938, 16, 100, (2, 32, 512, 30938)),
        (1000, 16, 100, (16, 1000)),
        (1000, 2, 100, (2, 4, 8, 16, 1000)),
        (68406, 16, 100, (4, 64, 1024, 68406)),
        (400, 4, 100, (4, 400)),
    ],
)
def test_from_leaf_assignment_shapes(L, B, leaf, sizes):
    codes = pecos_leaf_assignment(L, leaf)
    tree = LabelTree.from_leaf_assignment(np.random.default_rng(0).permutation(codes), B)
    assert tree.level_sizes == sizes
    chain = tree.to_chain()
    assert chain[0].shape == (sizes[0], 1)
    for t in range(1, tree.depth - 1):
        # PECOS grouping: parent(k) = k // B
        np.testing.assert_array_equal(tree.parents(t), np.arange(sizes[t]) // B)


def test_from_leaf_assignment_errors():
    with pytest.raises(LabelTreeError, match="nr_splits"):
        LabelTree.from_leaf_assignment(np.array([0, 1]), 1)
    with pytest.raises(LabelTreeError, match="no children"):
        LabelTree.from_leaf_assignment(np.array([0, 2, 2]), 2)  # leaf 1 unused
    with pytest.raises(LabelTreeError, match="non-empty 1-D"):
        LabelTree.from_leaf_assignment(np.array([], dtype=np.int64), 2)


def test_arrays_round_trip(small):
    arrays = small.to_arrays()
    assert set(arrays) == {"parents_0", "parents_1", "parents_2"}
    assert LabelTree.from_arrays(arrays, 3) == small
    del arrays["parents_1"]
    with pytest.raises(LabelTreeError, match="missing array parents_1"):
        LabelTree.from_arrays(arrays, 3)
