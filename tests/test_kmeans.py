"""Hierarchical balanced 2-means: the numba kernel against a plain numpy reference, tree invariants, determinism."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from indexing.kmeans import (
    ClusteringError,
    _init_pair,
    _split_node,
    _split_node_parallel,
    binary_depth,
    hierarchical_kmeans,
    split_nodes,
    tree_from_split,
)
from indexing.tree import LabelTree


# ------------------------------------------------------------------------------------- numpy reference
def ref_split(E: np.ndarray, ids: np.ndarray, r: int, l: int, max_iter: int, spherical: bool):
    """One balanced 2-means split of rows ``ids`` (ascending) of dense ``E``, starting from x_r - x_l."""
    X = E[ids].astype(np.float64)
    n = ids.size
    m = n // 2
    c = X[r] - X[l]
    prev = None
    for _ in range(max_iter):
        s = X @ c
        order = np.lexsort((ids, s))  # by score, then id
        left = np.zeros(n, dtype=bool)
        left[order[:m]] = True
        if prev is not None and (left == prev).all():
            break
        prev = left
        sl, sr = X[left].sum(0), X[~left].sum(0)
        if spherical:
            unit = lambda v: v / np.linalg.norm(v) if np.linalg.norm(v) > 0 else v  # noqa: E731
            c = unit(sr) - unit(sl)
        else:
            c = sr / (n - m) - sl / m
    return ids[prev], ids[~prev]


def ref_hierarchical(E: np.ndarray, max_leaf_size: int, seed: int, max_iter: int, spherical: bool) -> np.ndarray:
    """Leaf of every label from recursive reference splits (heap node ids seed each node's start)."""
    L = E.shape[0]
    depth = binary_depth(L, max_leaf_size)
    nodes = [np.arange(L)]
    for k in range(depth):
        children = []
        for j, ids in enumerate(nodes):
            r, l = _init_pair(np.uint64(seed), (1 << k) + j, ids.size)
            children += list(ref_split(E, ids, int(r), int(l), max_iter, spherical))
        nodes = children
    leaf = np.empty(L, dtype=np.int64)
    for j, ids in enumerate(nodes):
        leaf[ids] = j
    return leaf


def kernel_split(E, ids, node, seed=0, max_iter=20, spherical=True, par=False):
    """Run the numba split kernel (serial or element-parallel) on rows ``ids`` of E; returns (left, right)."""
    if sp.issparse(E):
        indptr, indices, data, dense = E.indptr.astype(np.int64), E.indices, E.data, False
    else:
        E = np.ascontiguousarray(E, dtype=np.float32)
        indptr = np.arange(E.shape[0] + 1, dtype=np.int64) * E.shape[1]
        indices, data, dense = np.zeros(0, np.int32), E.reshape(-1), True
    d = E.shape[1]
    ids = np.asarray(ids, dtype=np.int32)
    out = np.empty_like(ids)
    bufs = [np.zeros(d), np.zeros(d), np.zeros(d, np.float32), np.zeros(d, np.int32), np.empty(d, np.int32)]
    args = (indptr, indices, data, dense, d, ids, out, node, np.uint64(seed), max_iter, spherical)
    if par:
        _split_node_parallel(*args, bufs)
    else:
        _split_node(*args, *bufs)
    assert not bufs[0].any() and not bufs[1].any() and not bufs[2].any(), "work buffers must be left zeroed"
    m = ids.size // 2
    return out[:m], out[m:]


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    """Unit rows around 8 random directions, plus noise: 403 labels x 24 features, float32."""
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(8, 24))
    E = centers[rng.integers(0, 8, size=403)] + 0.6 * rng.normal(size=(403, 24))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    return E.astype(np.float32)


@pytest.fixture(scope="module")
def sparse_emb() -> sp.csr_matrix:
    """A sparse non-negative embedding with a few all-zero rows, rows L2-normalised."""
    E = sp.random(517, 300, density=0.03, format="csr", random_state=3, dtype=np.float32)
    E = sp.csr_matrix(E.multiply(1.0 / np.maximum(np.sqrt(E.multiply(E).sum(1)), 1e-30)), dtype=np.float32)
    E.sort_indices()
    return E


# ------------------------------------------------------------------------------------------- kernel
@pytest.mark.parametrize("spherical", [True, False])
@pytest.mark.parametrize("par", [False, True])
def test_split_kernel_matches_reference(blobs, spherical, par):
    rng = np.random.default_rng(1)
    for node in range(1, 6):
        ids = np.sort(rng.choice(blobs.shape[0], size=rng.integers(2, 200), replace=False))
        r, l = _init_pair(np.uint64(0), node, ids.size)
        assert 0 <= r < ids.size and 0 <= l < ids.size and r != l
        want_l, want_r = ref_split(blobs, ids, int(r), int(l), 20, spherical)
        got_l, got_r = kernel_split(blobs, ids, node, spherical=spherical, par=par)
        np.testing.assert_array_equal(got_l, want_l)
        np.testing.assert_array_equal(got_r, want_r)


def test_split_kernel_sparse_matches_reference(sparse_emb):
    ids = np.arange(0, 517, 2)
    r, l = _init_pair(np.uint64(5), 3, ids.size)
    want_l, want_r = ref_split(sparse_emb.toarray(), ids, int(r), int(l), 20, True)
    got_l, got_r = kernel_split(sparse_emb, ids, 3, seed=5)
    np.testing.assert_array_equal(got_l, want_l)
    np.testing.assert_array_equal(got_r, want_r)


def test_split_ties_go_left_by_id():
    # all rows identical: every score ties, so the lowest ids go left
    E = np.ones((9, 4), dtype=np.float32)
    left, right = kernel_split(E, np.arange(9), node=1)
    np.testing.assert_array_equal(left, [0, 1, 2, 3])
    np.testing.assert_array_equal(right, [4, 5, 6, 7, 8])


def test_split_two_elements():
    E = np.array([[1, 0], [0, 1]], dtype=np.float32)
    left, right = kernel_split(E, np.array([0, 1]), node=7)
    assert sorted([*left, *right]) == [0, 1] and left.size == 1


def test_init_pair_distinct_and_spread():
    rs = [_init_pair(np.uint64(0), node, 10) for node in range(1, 400)]
    assert all(r != l and 0 <= r < 10 and 0 <= l < 10 for r, l in rs)
    assert len(set(rs)) > 50


# ----------------------------------------------------------------------------------- whole tree
def check_tree(tree: LabelTree, L: int, max_leaf_size: int, nr_splits: int) -> None:
    depth = binary_depth(L, max_leaf_size)
    leaf = np.asarray(tree.parents(tree.depth - 1))
    assert leaf.size == L
    counts = np.bincount(leaf)
    assert counts.size == 2**depth
    assert counts.min() == L // 2**depth and counts.max() == -(-L // 2**depth)
    for t in range(1, tree.depth - 1):
        assert (np.diff(tree.parents(t)) >= 0).all()
        assert np.bincount(tree.parents(t)).max() <= nr_splits
    assert tree.level_sizes[0] <= nr_splits


@pytest.mark.parametrize("spherical", [True, False])
def test_tree_matches_reference(blobs, spherical):
    tree = hierarchical_kmeans(blobs, nr_splits=4, max_leaf_size=20, seed=3, spherical=spherical, threads=1)
    want = ref_hierarchical(blobs, 20, 3, 20, spherical)
    np.testing.assert_array_equal(tree.parents(tree.depth - 1), want)
    check_tree(tree, blobs.shape[0], 20, 4)


@pytest.mark.parametrize(
    "L,leaf,B,sizes",
    [
        (403, 20, 4, (2, 8, 32, 403)),
        (403, 20, 16, (2, 32, 403)),
        (400, 100, 16, (4, 400)),
        (403, 100, 16, (8, 403)),
        (403, 403, 16, (403,)),
    ],
)
def test_level_sizes(blobs, L, leaf, B, sizes):
    tree = hierarchical_kmeans(blobs[:L], nr_splits=B, max_leaf_size=leaf, threads=1)
    assert tree.level_sizes == sizes
    if len(sizes) > 1:
        check_tree(tree, L, leaf, B)


def test_small_leaves():
    E = np.random.default_rng(0).normal(size=(37, 5)).astype(np.float32)
    tree = hierarchical_kmeans(E, nr_splits=2, max_leaf_size=2)  # 32 leaves of 1 or 2 labels
    check_tree(tree, 37, 2, 2)
    tree = hierarchical_kmeans(E[:32], nr_splits=2, max_leaf_size=1)
    check_tree(tree, 32, 1, 2)
    with pytest.raises(ClusteringError, match="non-empty leaves"):
        hierarchical_kmeans(E, max_leaf_size=1)  # 2^ceil(log2 37) = 64 leaves > 37 labels


def test_deterministic_across_runs_and_threads(sparse_emb):
    trees = [hierarchical_kmeans(sparse_emb, nr_splits=4, max_leaf_size=10, seed=11, threads=t) for t in (1, 2, 1)]
    if numba.config.NUMBA_NUM_THREADS >= 3:
        trees.append(hierarchical_kmeans(sparse_emb, nr_splits=4, max_leaf_size=10, seed=11, threads=3))
    assert all(t == trees[0] for t in trees[1:])
    check_tree(trees[0], 517, 10, 4)
    other = hierarchical_kmeans(sparse_emb, nr_splits=4, max_leaf_size=10, seed=12, threads=1)
    assert other != trees[0]


@pytest.mark.parametrize("top", [0, 1, 3])
@pytest.mark.parametrize("dense", [False, True])
def test_subtrees_split_apart_give_the_same_tree(sparse_emb, top, dense):
    # the way distributed training splits: the top levels on everything, then groups of nodes on their rows only
    emb = sparse_emb.toarray() if dense else sparse_emb
    depth = binary_depth(517, 10)
    want = hierarchical_kmeans(emb, nr_splits=4, max_leaf_size=10, seed=11)
    perm, starts = split_nodes(emb, np.array([0, 517]), 0, 0, top, seed=11)
    nodes = starts.size - 1
    perms, leaf_starts = [], [np.zeros(1, np.int64)]
    for a, b in ((0, nodes // 2), (nodes // 2, nodes)) if nodes > 1 else ((0, 1),):
        rows = perm[starts[a]:starts[b]]
        p, s = split_nodes(emb[rows], starts[a:b + 1] - starts[a], top, a, depth, seed=11, threads=1)
        perms.append(rows[p])
        leaf_starts.append(s[1:] + leaf_starts[-1][-1])
    assert tree_from_split(np.concatenate(perms), np.concatenate(leaf_starts), 4) == want


def test_split_nodes_bad_arguments(sparse_emb):
    with pytest.raises(ClusteringError, match="starts must rise"):
        split_nodes(sparse_emb, np.array([0, 100]), 0, 0, 2)
    with pytest.raises(ClusteringError, match="starts must rise"):
        split_nodes(sparse_emb, np.array([0, 0, 517]), 0, 0, 2)
    with pytest.raises(ClusteringError, match="level <= to_level"):
        split_nodes(sparse_emb, np.array([0, 517]), 3, 0, 2)


def test_sparse_and_dense_give_same_tree(sparse_emb):
    a = hierarchical_kmeans(sparse_emb, nr_splits=16, max_leaf_size=8, seed=2, threads=2)
    b = hierarchical_kmeans(sparse_emb.toarray(), nr_splits=16, max_leaf_size=8, seed=2, threads=2)
    assert a == b


def test_sparse_matches_reference(sparse_emb):
    tree = hierarchical_kmeans(sparse_emb, nr_splits=2, max_leaf_size=30, seed=4, threads=2)
    want = ref_hierarchical(sparse_emb.toarray(), 30, 4, 20, True)
    np.testing.assert_array_equal(tree.parents(tree.depth - 1), want)


def test_restores_numba_threads(blobs):
    before = numba.get_num_threads()
    hierarchical_kmeans(blobs, max_leaf_size=50, threads=1)
    assert numba.get_num_threads() == before


def test_clusters_are_coherent():
    # two well separated groups must be split apart at the root
    rng = np.random.default_rng(0)
    E = np.vstack([rng.normal(size=(50, 6)) + [10, 0, 0, 0, 0, 0], rng.normal(size=(50, 6)) - [10, 0, 0, 0, 0, 0]])
    perm = rng.permutation(100)
    tree = hierarchical_kmeans(E[perm].astype(np.float32), nr_splits=2, max_leaf_size=50, spherical=False)
    leaf = np.asarray(tree.parents(1))
    group = (perm >= 50).astype(int)
    assert (leaf == group).all() or (leaf == 1 - group).all()


def test_progress_bar_runs(blobs):
    tree = hierarchical_kmeans(blobs, max_leaf_size=100, progress=True)
    assert tree.nr_labels == blobs.shape[0]


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"nr_splits": 1}, "nr_splits"),
        ({"max_leaf_size": 0}, "max_leaf_size"),
        ({"max_iter": 0}, "max_iter"),
        ({"seed": -1}, "seed"),
        ({"threads": 0}, "threads"),
    ],
)
def test_bad_options(blobs, kwargs, match):
    with pytest.raises(ClusteringError, match=match):
        hierarchical_kmeans(blobs, **kwargs)


def test_bad_embeddings():
    with pytest.raises(ValueError, match="empty"):
        hierarchical_kmeans(np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match="empty"):
        hierarchical_kmeans(sp.csr_matrix((5, 0), dtype=np.float32))
    bad = np.ones((300, 3), np.float32)
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        hierarchical_kmeans(bad)
    with pytest.raises(ValueError, match="non-finite"):
        hierarchical_kmeans(sp.csr_matrix(bad))
    with pytest.raises(ValueError, match="2-D"):
        hierarchical_kmeans(np.ones(10, np.float32))


def test_binary_depth():
    assert binary_depth(100, 100) == 0
    assert binary_depth(101, 100) == 1
    assert binary_depth(30938, 100) == 9
    assert binary_depth(68406, 100) == 10
    assert binary_depth(1000, 100) == math.ceil(math.log2(10))
    with pytest.raises(ClusteringError):
        binary_depth(37, 1)
