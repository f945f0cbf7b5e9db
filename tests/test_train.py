"""Level training against a plain numpy/per-node reference of the XR-Linear training problem."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import xmr.train as train_mod
from indexing.tree import LabelTree
from tests.reference_beam import reference_beam_search
from tests.test_solver import prune_reference
from xmr.solver import solve_binary
from xmr.train import TrainError, TrainParams, train_levels


def _data(n=240, d=40, L=24, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.15, random_state=seed, format="csr", dtype=np.float32)
    X = sp.csr_matrix(X.multiply(1.0 / np.maximum(1e-6, sp.linalg.norm(X, axis=1))[:, None]), dtype=np.float32)
    Y = sp.random(n, L, density=0.06, random_state=seed + 1, format="csr", dtype=np.float32)
    Y.data[:] = 1.0
    Y = Y.tolil()
    Y[:, L - 1] = 0  # a label without positives
    Y = Y.tocsr()
    Y.eliminate_zeros()
    tree = LabelTree.from_leaf_assignment(rng.permutation(L) % 8, 2)  # levels (2, 4, 8, L)
    return X, Y, tree


def reference_levels(X, Y, tree, params, relevance=None, mined=None):
    """Per-node numpy construction of every binary problem, solved by solve_binary, pruned by the numpy rule.

    ``mined[t]`` (t >= 1): boolean N x K_{t-1} matcher-aware negatives for the man / tfn+man schemes.
    """
    n, d = X.shape
    depth = tree.depth
    Yd = [None] * depth
    Rd = [None] * depth
    Yd[-1] = Y.toarray() != 0
    Rd[-1] = relevance.toarray() if relevance is not None else Yd[-1].astype(np.float64)
    for t in range(depth - 1, 0, -1):
        C = np.zeros((tree.level_sizes[t], tree.level_sizes[t - 1]))
        C[np.arange(tree.level_sizes[t]), tree.parents(t)] = 1
        Yd[t - 1] = (Yd[t].astype(np.float64) @ C) != 0
        Rd[t - 1] = Rd[t] @ C if relevance is not None else Yd[t - 1].astype(np.float64)
    has_bias = params.bias > 0
    out = []
    for t in range(depth):
        K = tree.level_sizes[t]
        W = np.zeros((d + (1 if has_bias else 0), K), dtype=np.float32)
        for j in range(K):
            p = tree.parents(t)[j]
            pos = Yd[t][:, j]
            if t == 0:
                inst = np.ones(n, dtype=bool)
            else:
                m = Yd[t - 1][:, p].copy() if params.negatives != "man" else np.zeros(n, dtype=bool)
                if params.negatives != "tfn":
                    m |= mined[t][:, p]
                inst = m | pos
            rows = np.flatnonzero(inst)
            if rows.size == 0:
                continue
            y = np.where(pos[rows], 1.0, -1.0)
            cost = np.where(pos[rows], params.Cp * Rd[t][rows, j], params.Cn)
            w = solve_binary(X[rows], y, cost, loss=params.loss, bias=params.bias, eps=params.eps,
                             max_iter=params.max_iter)
            r, v = prune_reference(w, has_bias, params.threshold, params.max_nonzeros_per_label or 0, d)
            W[r, j] = v
        out.append(W)
    return out


def _assert_same(weights, ref):
    assert len(weights) == len(ref)
    for W, R in zip(weights, ref):
        assert W.shape == R.shape
        np.testing.assert_allclose(W.toarray(), R, rtol=1e-6, atol=1e-7)
        assert W.nnz == np.count_nonzero(R)


def _check_convention(W, rows, K):
    assert isinstance(W, sp.csc_matrix)
    assert W.shape == (rows, K)
    assert W.dtype == np.float32
    assert W.indices.dtype == np.int32 and W.indptr.dtype == np.int32
    assert (W.data != 0).all()
    for j in range(K):
        assert (np.diff(W.indices[W.indptr[j]:W.indptr[j + 1]]) > 0).all()
    C = W.copy()
    C.has_sorted_indices = False
    C.sort_indices()
    np.testing.assert_array_equal(C.indices, W.indices)


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("bias", [1.0, 0.0, -1.0])
def test_weights_convention(bias):
    X, Y, tree = _data()
    weights = train_levels(X, Y, tree, TrainParams(bias=bias, threads=1))
    d = X.shape[1]
    rows = d + 1 if bias > 0 else d
    for t, W in enumerate(weights):
        _check_convention(W, rows, tree.level_sizes[t])
    assert weights[-1].nnz > 0


@pytest.mark.parametrize("loss", ["squared-hinge", "logistic"])
@pytest.mark.parametrize("bias", [1.0, 0.0])
def test_tfn_matches_per_node_reference(loss, bias):
    X, Y, tree = _data(seed=1)
    params = TrainParams(loss=loss, Cp=2.0, Cn=0.5, bias=bias, threshold=0.05, threads=2)
    _assert_same(train_levels(X, Y, tree, params), reference_levels(X, Y, tree, params))


def test_tight_eps_reaches_reference_optimum():
    X, Y, tree = _data(seed=2)
    params = TrainParams(eps=1e-4, max_iter=5000, threshold=0.0, threads=2)
    _assert_same(train_levels(X, Y, tree, params), reference_levels(X, Y, tree, params))


def test_thread_count_independent():
    X, Y, tree = _data(seed=3)
    w1 = train_levels(X, Y, tree, TrainParams(threads=1))
    w2 = train_levels(X, Y, tree, TrainParams(threads=2))
    w3 = train_levels(X, Y, tree, TrainParams(threads=-1))
    for a, b, c in zip(w1, w2, w3):
        for other in (b, c):
            np.testing.assert_array_equal(a.indptr, other.indptr)
            np.testing.assert_array_equal(a.indices, other.indices)
            np.testing.assert_array_equal(a.data, other.data)


def test_memory_batches_and_buffer_refills_do_not_change_result(monkeypatch):
    X, Y, tree = _data(seed=4)
    params = TrainParams(threshold=0.01, threads=2)
    ref = train_levels(X, Y, tree, params)
    monkeypatch.setattr(train_mod, "_gather_budget", lambda x_nnz: 50)
    monkeypatch.setattr(train_mod, "_OUT_BUDGET", 8)
    _assert_same(train_levels(X, Y, tree, params), [W.toarray() for W in ref])


@pytest.mark.parametrize("m", [1, 3, 10])
def test_pruning_threshold_and_max_nonzeros(m):
    X, Y, tree = _data(seed=5)
    params = TrainParams(threshold=0.02, max_nonzeros_per_label=m, threads=2)
    weights = train_levels(X, Y, tree, params)
    _assert_same(weights, reference_levels(X, Y, tree, params))
    for W in weights:
        assert np.diff(W.indptr).max() <= m
        assert np.abs(W.data).min() >= 0.02


def test_relevance_sets_positive_costs():
    X, Y, tree = _data(seed=6)
    rng = np.random.default_rng(0)
    R = Y.copy()
    R.data = rng.uniform(0.2, 3.0, R.nnz).astype(np.float32)
    params = TrainParams(Cp=1.5, threads=2, threshold=0.01)
    got = train_levels(X, Y, tree, params, relevance=R)
    _assert_same(got, reference_levels(X, Y, tree, params, relevance=R))
    plain = train_levels(X, Y, tree, params)
    ones = Y.copy()
    ones.data[:] = 1.0
    # unit relevance induces counts above the bottom level (R_{t-1} = R_t C_t), so only the labels' level matches
    _assert_same(train_levels(X, Y, tree, params, relevance=ones)[-1:], [plain[-1].toarray()])
    assert any((a != b).nnz for a, b in zip(got, plain))


def test_dense_X_matches_sparse():
    X, Y, tree = _data(seed=7)
    params = TrainParams(threads=2)
    a = train_levels(X, Y, tree, params)
    b = train_levels(X.toarray(), Y, tree, params)
    _assert_same(b, [W.toarray() for W in a])


@pytest.mark.parametrize("loss", ["squared-hinge", "logistic"])
def test_binary_features_match_per_node_reference(loss):
    # normalised binary rows take the solvers' scaled-row path (values never read); a few rows keep distinct values
    X, Y, tree = _data(seed=11)
    X = X.copy()
    X.data[:] = 1.0
    X = sp.csr_matrix(X.multiply((1.0 / np.maximum(1.0, np.sqrt(X.getnnz(axis=1))))[:, None]), dtype=np.float32)
    X.data[X.indptr[5]:X.indptr[9]] *= 1.5 + np.arange(X.indptr[9] - X.indptr[5], dtype=np.float32) % 3
    params = TrainParams(loss=loss, Cp=2.0, threads=2, threshold=0.02)
    _assert_same(train_levels(X, Y, tree, params), reference_levels(X, Y, tree, params))


def _numpy_mined():
    """A stand-in for the matcher prediction (numpy beam search) that records what it returned per level."""
    mined = {}

    def fake(X_, tree_, weights, t, params_, threads):
        sub = LabelTree([tree_.parents(k) for k in range(t)])
        P = reference_beam_search(sub, weights[:t], params_.bias, X_, params_.man_beam_size, params_.man_beam_size,
                                  params_.man_post_processor)
        mined[t] = P.toarray() != 0
        return P

    return mined, fake


@pytest.mark.parametrize("negatives", ["man", "tfn+man"])
def test_matcher_aware_negatives(monkeypatch, negatives):
    X, Y, tree = _data(seed=8)
    params = TrainParams(negatives=negatives, man_beam_size=2, threads=2, threshold=0.02)
    mined, fake = _numpy_mined()
    monkeypatch.setattr(train_mod, "_predict_upper_levels", fake)
    got = train_levels(X, Y, tree, params)
    assert sorted(mined) == [1, 2, 3]
    _assert_same(got, reference_levels(X, Y, tree, params, mined=mined))
    tfn = train_levels(X, Y, tree, TrainParams(threads=2, threshold=0.02))
    assert any((a != b).nnz for a, b in zip(got, tfn))


@pytest.mark.parametrize("post", ["l3-hinge", "sigmoid"])
def test_matcher_aware_negatives_with_inference_module(monkeypatch, post):
    pytest.importorskip("xmr.inference")
    X, Y, tree = _data(seed=9)
    params = TrainParams(negatives="man", man_beam_size=2, man_post_processor=post, threads=2)
    weights = train_levels(X, Y, tree, params)
    for t, W in enumerate(weights):
        _check_convention(W, X.shape[1] + 1, tree.level_sizes[t])
    _, fake = _numpy_mined()
    monkeypatch.setattr(train_mod, "_predict_upper_levels", fake)
    _assert_same(weights, [W.toarray() for W in train_levels(X, Y, tree, params)])


def test_one_level_tree_and_progress():
    X, Y, _ = _data(seed=10)
    tree = LabelTree.one_vs_all(Y.shape[1])
    weights = train_levels(X, Y, tree, TrainParams(threads=1), progress=True)
    params = TrainParams(threads=1)
    _assert_same(weights, reference_levels(X, Y, tree, params))


def test_input_errors():
    X, Y, tree = _data()
    with pytest.raises(TrainError, match="loss"):
        train_levels(X, Y, tree, TrainParams(loss="hinge"))
    with pytest.raises(TrainError, match="negatives"):
        train_levels(X, Y, tree, TrainParams(negatives="usn"))
    with pytest.raises(TrainError, match="Cp"):
        train_levels(X, Y, tree, TrainParams(Cp=0))
    with pytest.raises(TrainError, match="threads"):
        train_levels(X, Y, tree, TrainParams(threads=0))
    with pytest.raises(TrainError, match="max_nonzeros_per_label"):
        train_levels(X, Y, tree, TrainParams(max_nonzeros_per_label=-2))
    with pytest.raises(TrainError, match="shape"):
        train_levels(X, Y[:, :-1], tree)
    with pytest.raises(TrainError, match="shape"):
        train_levels(X[:-1], Y, tree)
    with pytest.raises(TrainError, match="sparse"):
        train_levels(X, Y.toarray(), tree)
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(TrainError, match="NaN"):
        train_levels(bad, Y, tree)
    with pytest.raises(TrainError, match="float"):
        train_levels(np.ones((X.shape[0], 3), dtype=np.int64), Y, tree)
    R = Y.copy()
    R.data[0] = 0.0
    R.eliminate_zeros()
    with pytest.raises(TrainError, match="relevance"):
        train_levels(X, Y, tree, relevance=R)
    with pytest.raises(TrainError, match="LabelTree"):
        train_levels(X, Y, [np.zeros(3)])
    with pytest.raises(TrainError, match="TrainParams"):
        train_levels(X, Y, tree, {"loss": "logistic"})
