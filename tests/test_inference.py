"""BeamSearchIndex against the numpy reference beam search, exhaustive scoring, and bad-input handling."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from indexing.tree import LabelTree
from tests.reference_beam import level_scores, reference_beam_search
from xmr.inference import BeamSearchIndex, ModelShapeError, QueryError
from xmr.postprocess import NAMES, transform


def make_model(seed=0, nr_labels=120, d=40, nr_leaves=17, nr_splits=3, density=0.25, bias=1.0, pruned_bias=False):
    """Random tree (labels interleaved across leaves) and weights following the weights convention."""
    rng = np.random.default_rng(seed)
    leaf = rng.integers(0, nr_leaves, nr_labels)
    leaf[:nr_leaves] = rng.permutation(nr_leaves)
    tree = LabelTree.from_leaf_assignment(leaf, nr_splits)
    rows = d + 1 if bias > 0 else d
    weights = []
    for t, k in enumerate(tree.level_sizes):
        W = sp.random(rows, k, density=density, format="csc", dtype=np.float32, random_state=seed * 10 + t)
        W.data = (W.data * 4 - 2).astype(np.float32)
        if bias > 0 and pruned_bias:
            W = sp.lil_matrix(W)
            W[d, : k // 2] = 0
            W = sp.csr_matrix(W)
            W.eliminate_zeros()
        W = sp.csc_matrix(W)
        W.sort_indices()
        weights.append(W)
    return tree, weights, bias


def make_queries(n=40, d=40, density=0.2, seed=1, empty_rows=()):
    X = sp.random(n, d, density=density, format="csr", dtype=np.float32, random_state=seed)
    X = sp.lil_matrix(X)
    for i in empty_rows:
        X[i, :] = 0
    X = sp.csr_matrix(X)
    X.eliminate_zeros()
    return X


def assert_same(got: sp.csr_matrix, want: sp.csr_matrix, tol=1e-5):
    """Same rows, same scores (to tol), same labels except where neighbouring scores tie within tol."""
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_allclose(got.data, want.data, rtol=tol, atol=tol)
    for i in range(got.shape[0]):
        a = got.indices[got.indptr[i] : got.indptr[i + 1]]
        b = want.indices[want.indptr[i] : want.indptr[i + 1]]
        s = want.data[want.indptr[i] : want.indptr[i + 1]]
        for j in np.flatnonzero(a != b):
            near = np.abs(s - s[j]) <= tol * max(1.0, abs(s[j]))
            assert near.sum() > 1 or j == len(s) - 1, f"row {i} rank {j}: {a} != {b}"
        assert np.all(np.diff(got.data[got.indptr[i] : got.indptr[i + 1]]) <= 0), "row not by descending score"


# level layouts of the sparse-query kernels: all hash tables, all dense blocks, dense top + hash bottom, and
# alternating (hash, dense, hash, ...)
LAYOUTS = ("hash", "dense", "mixed", "alternate")


def dense_flags(layout: str, depth: int):
    """The ``dense`` argument of BeamSearchIndex.build for a named layout."""
    if layout == "hash":
        return False
    if layout == "dense":
        return True
    if layout == "mixed":
        return tuple(t < (depth + 1) // 2 for t in range(depth))
    return tuple(t % 2 == 1 for t in range(depth))


def build(model_, layout="hash"):
    return BeamSearchIndex.build(*model_, dense=dense_flags(layout, model_[0].depth))


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module", params=LAYOUTS)
def index(model, request):
    ix = build(model, request.param).warm()
    assert ix.dense_levels == tuple(bool(v) for v in np.broadcast_to(dense_flags(request.param, 4), 4))
    return ix


@pytest.mark.parametrize("post_processor", NAMES)
@pytest.mark.parametrize("beam_size,topk", [(1, 1), (2, 5), (3, 10), (10, 7)])
def test_matches_reference(model, index, post_processor, beam_size, topk):
    X = make_queries(empty_rows=(3,))
    want = reference_beam_search(*model, X, beam_size, topk, post_processor)
    assert_same(index.predict(X, beam_size, topk, post_processor), want)
    assert_same(index.predict(X.toarray(), beam_size, topk, post_processor), want)


@pytest.mark.parametrize("post_processor", ["noop", "sigmoid", "l3-hinge", "log-l2-hinge"])
def test_full_beam_is_exhaustive(post_processor):
    """With a beam covering every node, beam search equals ranking all labels by their path score."""
    tree, weights, bias = model_ = make_model(seed=3, nr_labels=60, nr_leaves=9)
    X = make_queries(n=25, seed=4)
    path = None
    for t in range(tree.depth):
        s = transform(post_processor, level_scores(weights[t], bias, X))
        if path is None or post_processor == "noop":
            path = s
        elif post_processor.startswith("log-"):
            path = (path[:, tree.parents(t)] + s).astype(np.float32)
        else:
            path = (path[:, tree.parents(t)] * s).astype(np.float32)
    k = 8
    got = BeamSearchIndex.build(*model_).predict(X, max(tree.level_sizes), k, post_processor)
    for i in range(X.shape[0]):
        want = np.sort(path[i])[::-1][:k]
        np.testing.assert_allclose(got.data[got.indptr[i] : got.indptr[i + 1]], want, rtol=1e-5, atol=1e-6)
        labels = got.indices[got.indptr[i] : got.indptr[i + 1]]
        np.testing.assert_allclose(path[i, labels], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(bias=0.0), dict(pruned_bias=True), dict(bias=2.5), dict(nr_splits=16)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_bias_variants_and_shapes(kw, layout):
    m = make_model(seed=7, **kw)
    X = make_queries(seed=8, empty_rows=(0, 5))
    assert_same(build(m, layout).predict(X, 3, 6), reference_beam_search(*m, X, 3, 6))


def test_one_vs_all_tree():
    rng = np.random.default_rng(2)
    tree = LabelTree.one_vs_all(30)
    W = sp.csc_matrix(rng.normal(size=(41, 30)).astype(np.float32))
    X = make_queries(n=10)
    assert_same(BeamSearchIndex.build(tree, [W], 1.0).predict(X, 2, 4), reference_beam_search(tree, [W], 1.0, X, 2, 4))


def test_empty_rows_use_bias_only(model, index):
    tree, weights, bias = model
    X = sp.csr_matrix((3, 40), dtype=np.float32)
    got = index.predict(X, 2, 5)
    assert_same(got, reference_beam_search(tree, weights, bias, X, 2, 5))
    assert np.array_equal(got[0].toarray(), got[2].toarray())


def test_labels_map_back_to_caller_ids():
    """Labels interleaved across leaves come back in the caller's ids, with their own weights."""
    tree, weights, bias = make_model(seed=11, nr_labels=40, nr_leaves=6, density=0.6)
    assert (np.diff(tree.parents(tree.depth - 1)) < 0).any()  # really interleaved
    X = make_queries(n=15, seed=12, density=0.5)
    got = BeamSearchIndex.build(tree, weights, bias).predict(X, 100, 40, "noop")
    last = level_scores(weights[-1], bias, X)
    for i in range(15):
        labels = got.indices[got.indptr[i] : got.indptr[i + 1]]
        np.testing.assert_allclose(got.data[got.indptr[i] : got.indptr[i + 1]], last[i, labels], rtol=1e-5, atol=1e-6)
        assert sorted(labels) == list(range(40))


def test_predict_one_matches_predict(model, index):
    X = make_queries(n=12, empty_rows=(2,))
    batch = index.predict(X, 3, 6)
    for i in range(12):
        for q in (X[i], X[i].toarray()[0], X[i].toarray()):
            labels, scores = index.predict_one(q, 3, 6)
            assert labels.dtype == np.int32 and scores.dtype == np.float32
            row = slice(batch.indptr[i], batch.indptr[i + 1])
            np.testing.assert_array_equal(labels, batch.indices[row])
            np.testing.assert_array_equal(scores, batch.data[row])


def test_predict_one_sparse_matches_and_rejects_mismatched_arrays(model, index):
    X = make_queries(n=4)
    for i in range(4):
        row = X[i]
        want = index.predict_one(row, 3, 6)
        for qi, qv in ((row.indices, row.data), (row.indices.tolist(), row.data.tolist())):
            got = index.predict_one_sparse(qi, qv, 3, 6)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
    qi = X[0].indices
    for bad_qi, bad_qv in ((qi, np.ones(max(qi.size - 1, 0), np.float32)),  # values shorter than ids
                           (qi[None, :], np.ones((1, qi.size), np.float32)),  # 2-D
                           (qi.astype(np.float64), np.ones(qi.size, np.float32))):  # non-integer ids
        with pytest.raises(QueryError, match="1-D arrays of one length"):
            index.predict_one_sparse(bad_qi, bad_qv, 3, 6)


def test_predict_rows_matches_predict_one_sparse_and_rejects_bad_rows(model, index):
    X = make_queries(n=12, empty_rows=(3,)).tocsr()
    ids, scores, counts = index.predict_rows(X.indptr, X.indices, X.data, 3, 6)
    assert ids.shape == scores.shape == (12, 6) and counts.shape == (12,)
    for i in range(12):
        want = index.predict_one_sparse(X[i].indices, X[i].data, 3, 6)
        np.testing.assert_array_equal(ids[i, : counts[i]], want[0])
        assert scores[i, : counts[i]].tobytes() == want[1].tobytes()
    X2 = sp.vstack([X] * 4).tocsr()  # 48 rows: enough for the thread pool
    many = index.predict_rows(X2.indptr, X2.indices, X2.data, 3, 6, threads=2)
    for got, want in zip(many, (ids, scores, counts)):
        assert got.tobytes() == np.concatenate([want] * 4).tobytes()
    ids, _, counts = index.predict_rows(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
    assert ids.shape[0] == counts.size == 0
    bad = [(np.array([0, 2, 1]), np.array([1, 2]), np.ones(2)),  # falling indptr
           (np.array([1, 2]), np.array([1, 2]), np.ones(2)),  # not from 0
           (np.array([0, 2]), np.array([1, 2]), np.ones(3)),  # values and ids of different lengths
           (np.array([0, 2]), np.array([1, 10**6]), np.ones(2)),  # feature id out of range
           (np.array([0, 1]), np.array([1]), np.array([np.nan]))]  # non-finite value
    for indptr, indices, data in bad:
        with pytest.raises(QueryError):
            index.predict_rows(indptr, indices, data)


def test_deterministic_across_threads(model, index):
    X = make_queries(n=300, seed=21)
    a = index.predict(X, 3, 10, threads=1)
    b = index.predict(X, 3, 10, threads=2)
    c = index.predict(X, 3, 10, threads=-1)
    for m in (b, c):
        np.testing.assert_array_equal(a.indptr, m.indptr)
        np.testing.assert_array_equal(a.indices, m.indices)
        np.testing.assert_array_equal(a.data, m.data)


def test_output_format(model, index):
    X = make_queries(n=5)
    got = index.predict(X, 2, 5)
    assert sp.isspmatrix_csr(got) and got.dtype == np.float32 and got.shape == (5, model[0].nr_labels)
    assert index.predict(X[:0], 2, 5).shape == (0, model[0].nr_labels)
    assert index.nbytes > 0 and index.nr_features == 40 and index.nr_labels == 120


def test_bad_queries(index):
    with pytest.raises(QueryError, match="expects"):
        index.predict(sp.csr_matrix((2, 41), dtype=np.float32))
    with pytest.raises(QueryError, match="expects"):
        index.predict(np.zeros((2, 39), dtype=np.float32))
    with pytest.raises(QueryError, match="expects"):
        index.predict_one(np.zeros(39, dtype=np.float32))
    X = make_queries(n=3).toarray()
    X[1, 2] = np.nan
    with pytest.raises(QueryError, match="non-finite"):
        index.predict(X)
    with pytest.raises(QueryError, match="non-finite"):
        index.predict(sp.csr_matrix(X))
    X[1, 2] = np.inf
    with pytest.raises(QueryError, match="non-finite"):
        index.predict_one(sp.csr_matrix(X[1:2]))
    with pytest.raises(QueryError, match="beam_size"):
        index.predict(X[:1] * 0, beam_size=0)
    with pytest.raises(ValueError, match="post_processor"):
        index.predict(X[:1] * 0, post_processor="average")


def test_bad_models():
    tree, weights, bias = make_model()
    with pytest.raises(ModelShapeError, match="weight matrices"):
        BeamSearchIndex.build(tree, weights[:-1], bias)
    with pytest.raises(ModelShapeError, match="columns"):
        BeamSearchIndex.build(tree, weights[:-1] + [weights[-1][:, :-1]], bias)
    with pytest.raises(ModelShapeError, match="needs 42"):
        BeamSearchIndex.build(tree, weights, bias, nr_features=41)
    assert BeamSearchIndex.build(tree, weights, bias, nr_features=40).nr_features == 40
    bad = weights[0].copy()
    bad.data[0] = np.nan
    with pytest.raises(ModelShapeError, match="non-finite"):
        BeamSearchIndex.build(tree, [bad] + weights[1:], bias)


def test_exact_ties_follow_the_documented_rule():
    """Quantised weights make many exact ties; float math is then exact and the tie order must match."""
    rng = np.random.default_rng(5)
    tree, weights, bias = make_model(seed=5, nr_labels=80, nr_leaves=10, density=0.3)
    weights = [sp.csc_matrix((np.round(w.data * 2) / 2, w.indices, w.indptr), shape=w.shape) for w in weights]
    for w in weights:
        w.eliminate_zeros()
    X = sp.csr_matrix((rng.random((30, 40)) < 0.15).astype(np.float32))
    indexes = [build((tree, weights, bias), layout) for layout in LAYOUTS]
    for pp in ("noop", "l3-hinge", "log-l1-hinge", "sigmoid"):
        want = reference_beam_search(tree, weights, bias, X, 3, 8, pp)
        for got in [f(X, 3, 8, pp) for ix in indexes for f in (ix.predict, lambda X, *a: ix.predict(X.toarray(), *a))]:
            np.testing.assert_array_equal(got.indptr, want.indptr)
            np.testing.assert_array_equal(got.indices, want.indices)
            np.testing.assert_array_equal(got.data, want.data)


@pytest.mark.parametrize("density,nr_splits", [(0.05, 16), (0.6, 16), (0.9, 4), (0.02, 2)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_row_kinds_inline_sparse_dense(density, nr_splits, layout):
    """Sparse and dense weights exercise every row kind of the hash layout (inline, sparse) and dense levels."""
    m = make_model(seed=9, nr_labels=300, d=50, nr_leaves=40, nr_splits=nr_splits, density=density)
    X = make_queries(n=30, d=50, density=0.3, seed=10)
    index = build(m, layout)
    assert_same(index.predict(X, 4, 10), reference_beam_search(*m, X, 4, 10))


def _decode_row(h, w: int, cs: int) -> dict[int, float]:
    """The (sibling offset -> weight) map of the row whose payload is at word ``w`` of the hash table: a plain
    Python reading of the payload encoding (hashlayout docstring), for comparison with the CSR weights."""
    from xmr.inference.hashlayout import DENSE_ROW

    tab, ent = h.section("tab"), h.section("ent")
    hi, lo = int(tab[w]) >> 32, int(tab[w]) & 0xFFFFFFFF
    if hi < 0:
        return {-hi - 1: float(np.array([lo], np.uint32).view(np.float32)[0])}
    vals = ent.view(np.float32)
    if hi >= DENSE_ROW:
        assert hi - DENSE_ROW == cs
        return {o: float(vals[2 * lo + o]) for o in range(cs) if vals[2 * lo + o] != 0}
    return {int(ent[2 * e]): float(vals[2 * e + 1]) for e in range(lo, lo + hi)}


def test_hash_layout_finds_every_row_and_stores_its_weights():
    from xmr.inference.hashlayout import DENSE_ROW, SECTIONS, fmix64
    from xmr.inference.kernels_hash import probe

    tree, weights, bias = make_model(seed=13, density=0.4)
    index = BeamSearchIndex.build(tree, weights, bias, dense=False)
    h, c = index._h, index._c
    assert {name for name, _ in SECTIONS} <= set(h.sizes)
    tab, tab_off, tab_mask = h.section("tab"), h.section("tab_off"), h.section("tab_mask")
    d = c.nr_features
    kinds = set()
    for t in range(tree.depth):
        cp = c.cptr[c.cptr_off[t] :]
        lo, hi = c.node_off[t], c.node_off[t + 1]
        rows: dict[tuple[int, int], dict[int, float]] = {}
        chunk = 0
        for j in range(hi - lo):
            while cp[chunk + 1] <= j:
                chunk += 1
            for e in range(c.w_indptr[lo + j], c.w_indptr[lo + j + 1]):
                rows.setdefault((chunk, int(c.w_indices[e])), {})[j - int(cp[chunk])] = float(c.w_data[e])
        for (chunk, f), want in rows.items():
            key = chunk * d + f
            bw = tab_off[t] + (int(fmix64(key)) & int(tab_mask[t])) * 8
            w = probe(tab, tab_off[t], tab_mask[t], bw, key)
            assert w >= 0
            assert _decode_row(h, w, int(cp[chunk + 1] - cp[chunk])) == want
            pay_hi = int(tab[w]) >> 32
            kinds.add("inline" if pay_hi < 0 else "dense" if pay_hi >= DENSE_ROW else "sparse")
        assert probe(tab, tab_off[t], tab_mask[t], tab_off[t], 10**15) == -1
    assert kinds == {"inline", "sparse", "dense"}
    assert index.nbytes == c.nbytes + h.nbytes and sum(index.memory_report().values()) <= index.nbytes


def test_predict_one_thread_safe(model, index):
    from concurrent.futures import ThreadPoolExecutor

    X = make_queries(n=64, seed=17)
    want = index.predict(X, 3, 5)
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda i: index.predict_one(X[i], 3, 5), range(64)))
    for i, (labels, scores) in enumerate(got):
        np.testing.assert_array_equal(labels, want.indices[want.indptr[i] : want.indptr[i + 1]])
        np.testing.assert_array_equal(scores, want.data[want.indptr[i] : want.indptr[i + 1]])


def test_mostly_zero_dense_queries_take_the_sparse_path(model, index):
    X = make_queries(n=30, density=0.03, seed=23, empty_rows=(4,))
    want = reference_beam_search(*model, X, 3, 6)
    assert_same(index.predict(X.toarray(), 3, 6), want)
    for i in range(30):
        labels, scores = index.predict_one(X[i].toarray()[0], 3, 6)
        np.testing.assert_array_equal(labels, want.indices[want.indptr[i] : want.indptr[i + 1]])


@pytest.mark.parametrize("post_processor", NAMES)
def test_dense_levels_give_the_hash_path_bits(post_processor):
    """Dense blocks sum the same products in the same order as the hash rows: bit-identical results."""
    m = make_model(seed=31, nr_labels=200, d=60, nr_leaves=30, nr_splits=4, density=0.3)
    X = make_queries(n=50, d=60, density=0.25, seed=32, empty_rows=(7,))
    X.data = (X.data * 2 - 0.5).astype(np.float32)  # negative values too
    want = build(m, "hash").predict(X, 4, 9, post_processor)
    assert_same(want, reference_beam_search(*m, X, 4, 9, post_processor))
    for layout in LAYOUTS[1:]:
        ix = build(m, layout)
        dense_x = ix.predict(X.toarray(), 4, 9, post_processor)  # column-scan kernel, dense blocks where stored
        for got in (ix.predict(X, 4, 9, post_processor), ix.predict(X, 4, 9, post_processor, threads=1), dense_x):
            np.testing.assert_array_equal(got.indptr, want.indptr)
            np.testing.assert_array_equal(got.indices, want.indices)
            np.testing.assert_array_equal(got.data, want.data)
        for i in range(0, 50, 7):
            labels, scores = ix.predict_one(X[i], 4, 9, post_processor)
            np.testing.assert_array_equal(labels, want.indices[want.indptr[i] : want.indptr[i + 1]])
            np.testing.assert_array_equal(scores, want.data[want.indptr[i] : want.indptr[i + 1]])


def test_dense_level_plan_and_memory():
    from xmr.inference.hashlayout import plan_dense

    m = make_model(seed=33, nr_splits=16)
    small = BeamSearchIndex.build(*m)
    assert small.dense_levels == (True,) * m[0].depth  # tiny levels: dense by default
    hashed = BeamSearchIndex.build(*m, dense=False)
    assert hashed.memory_report()["hash.dense"] == 0 and hashed.memory_report()["hash.tab"] > 0
    rep = small.memory_report()
    assert rep["hash.dense"] == 4 * 40 * sum(m[0].level_sizes)
    assert small._c.w_data.size == 0 and hashed._c.w_data.size == sum(w[:40].nnz for w in m[1])  # no CSC copy
    mixed = BeamSearchIndex.build(*m, dense=(True, False, True))
    assert mixed._c.w_data.size == m[1][1][:40].nnz
    X = make_queries(n=20, seed=34)
    for ix in (small, mixed):
        for Q in (X, X.toarray()):
            got, want = ix.predict(Q, 3, 5), hashed.predict(Q, 3, 5)
            np.testing.assert_array_equal(got.indices, want.indices)
            np.testing.assert_array_equal(got.data, want.data)
    assert sum(rep.values()) <= small.nbytes
    assert plan_dense(small._c, "auto", budget=0) == (False,) * m[0].depth  # nothing fits a zero budget
    assert plan_dense(small._c, np.array([False, True, True])) == (False, True, True)
    assert plan_dense(small._c, "none") == (False,) * 3 and plan_dense(small._c, "all") == (True,) * 3
    with pytest.raises(ValueError, match="per-level"):
        BeamSearchIndex.build(*m, dense=(True,))
    with pytest.raises(ValueError, match="dense must be"):
        BeamSearchIndex.build(*m, dense="some")
    # a big, very sparse level with long chunks stays hashed; short chunks or high density make it dense
    rng = np.random.default_rng(3)
    tree = LabelTree.one_vs_all(400)
    W = sp.random(2001, 400, density=0.002, format="csc", dtype=np.float32, random_state=rng)
    assert BeamSearchIndex.build(tree, [W], 1.0).dense_levels == (False,)
    W = sp.random(2001, 400, density=0.1, format="csc", dtype=np.float32, random_state=rng)
    assert BeamSearchIndex.build(tree, [W], 1.0).dense_levels == (True,)


def test_big_blob_allocation_is_aligned_and_writable():
    """Large layouts come from an anonymous mapping (2 MiB pages where the kernel allows): still a plain array."""
    from xmr.inference.hashlayout import aligned_empty

    for n, dtype in ((5 << 20, np.int64), (1000, np.int64), (3001, np.float32)):
        a = aligned_empty(n, dtype)
        assert a.shape == (n,) and a.dtype == dtype and a.flags.writeable and a.ctypes.data % 64 == 0
        a[:] = 7
        assert a[0] == 7 and a[-1] == 7
