"""Label-range constrained beam search (autocompletion's prefix descent) against the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from indexing.tree import LabelTree
from tests.reference_beam import reference_beam_search
from tests.test_inference import LAYOUTS, assert_same, build, make_model, make_queries
from xmr.inference import QueryError
from xmr.inference.constraint import build_label_ranges
from xmr.postprocess import NAMES

RANGES = [(0, 120), (0, 1), (119, 120), (10, 30), (57, 58), (40, 95)]


def one_by_one(index, X, beam, topk, pp, label_range):
    """predict_one_sparse over the rows of X, gathered into an N x L CSR."""
    indptr, cols, vals = [0], [], []
    for i in range(X.shape[0]):
        r = X.getrow(i)
        ids, sc = index.predict_one_sparse(r.indices, r.data, beam, topk, pp, label_range=label_range)
        cols += ids.tolist()
        vals += sc.tolist()
        indptr.append(len(cols))
    # built from indptr, not coordinates, so each row keeps its rank order
    return sp.csr_matrix((np.array(vals, np.float32), np.array(cols, np.int64), np.array(indptr)),
                         shape=(X.shape[0], index.nr_labels))


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("post_processor", ["l3-hinge", "sigmoid", "noop"])
@pytest.mark.parametrize("label_range", RANGES)
def test_matches_reference(model, layout, post_processor, label_range):
    index = build(model, layout)
    X = make_queries(n=25, empty_rows=(2,))
    for beam, topk in [(1, 1), (3, 10), (10, 7)]:
        want = reference_beam_search(*model, X, beam, topk, post_processor, label_range=label_range)
        got = one_by_one(index, X, beam, topk, post_processor, label_range)
        assert_same(got, want)
        assert ((got.indices >= label_range[0]) & (got.indices < label_range[1])).all()


@pytest.mark.parametrize("post_processor", NAMES)
def test_full_beam_is_the_exhaustive_top_k_of_the_range(model, post_processor):
    tree, weights, bias = model
    index = build(model)
    X = make_queries(n=10)
    lo, hi = 20, 70
    # path score of every label: the combination of its ancestors' transformed scores
    want = reference_beam_search(tree, weights, bias, X, 10**6, tree.nr_labels, post_processor)
    got = one_by_one(index, X, 10**6, 5, post_processor, (lo, hi))
    for i in range(X.shape[0]):
        ids = want.indices[want.indptr[i]:want.indptr[i + 1]]
        sc = want.data[want.indptr[i]:want.indptr[i + 1]]
        keep = (ids >= lo) & (ids < hi)
        top = ids[keep][:5]
        g = got.indices[got.indptr[i]:got.indptr[i + 1]]
        np.testing.assert_allclose(got.data[got.indptr[i]:got.indptr[i + 1]], sc[keep][:5], rtol=1e-5, atol=1e-6)
        assert set(g) == set(top) or np.unique(sc[keep][:6]).size < 6


def test_flat_tree_and_empty_range():
    tree = LabelTree.one_vs_all(30)
    rng = np.random.default_rng(0)
    W = sp.csc_matrix(sp.random(11, 30, density=0.5, random_state=1, dtype=np.float32))
    index = build((tree, [W], 1.0))
    X = make_queries(n=5, d=10, density=0.5)
    want = reference_beam_search(tree, [W], 1.0, X, 4, 6, label_range=(5, 12))
    assert_same(one_by_one(index, X, 4, 6, "l3-hinge", (5, 12)), want)
    ids, sc = index.predict_one_sparse(np.array([1], np.int32), np.array([rng.random()], np.float32), 4, 6,
                                       label_range=(7, 7))
    assert ids.size == 0 and sc.size == 0


def test_unconstrained_results_unchanged(model):
    index = build(model)
    X = make_queries(n=10)
    whole = one_by_one(index, X, 3, 10, "l3-hinge", (0, 120))
    free = one_by_one(index, X, 3, 10, "l3-hinge", None)
    assert_same(whole, free)


@pytest.mark.parametrize("bad", [(-1, 3), (5, 4), (0, 121), (1,), "ab", (1.5, None)])
def test_bad_ranges(model, bad):
    index = build(model)
    with pytest.raises(QueryError, match="label_range"):
        index.predict_one_sparse(np.array([1], np.int32), np.array([1.0], np.float32), label_range=bad)


def test_layout_lists_each_nodes_labels_sorted(model):
    tree = model[0]
    r = build_label_ranges(build(model)._c)
    L = tree.nr_labels
    for t in range(tree.depth - 1):
        under = np.arange(tree.level_sizes[t])
        anc = np.arange(L)
        for s in range(tree.depth - 1, t, -1):
            anc = tree.parents(s)[anc]
        for j in under:
            a, b = r.span[r.span_off[t] + j], r.span[r.span_off[t] + j + 1]
            np.testing.assert_array_equal(r.lab[t * L + a:t * L + b], np.flatnonzero(anc == j))

