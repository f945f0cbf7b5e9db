"""Per-node solvers against a direct minimiser of the primal objective, and pruning against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize

from xmr.solver import SolverError, prune_weights, solve_binary


def _problem(n=150, d=25, seed=0, pos=0.3):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.25, random_state=seed, format="csr", dtype=np.float32)
    y = np.where(rng.random(n) < pos, 1.0, -1.0)
    cost = np.where(y > 0, 2.0, 0.5) * rng.uniform(0.5, 1.5, n)
    return X, y, cost


def _primal(v, X, y, cost, loss, beta):
    """Primal objective and gradient in float64; v = [w, b] (b only if beta > 0)."""
    d = X.shape[1]
    w = v[:d]
    s = X @ w + (beta * v[d] if beta > 0 else 0.0)
    m = y * s
    if loss == "squared-hinge":
        h = np.maximum(0.0, 1.0 - m)
        f = (cost * h * h).sum()
        gm = -2.0 * cost * h * y
    else:
        f = (cost * np.logaddexp(0.0, -m)).sum()
        gm = -cost * y / (1.0 + np.exp(m))
    g = v.copy()
    g[:d] += X.T @ gm
    if beta > 0:
        g[d] += beta * gm.sum()
    return 0.5 * v @ v + f, g


def _lbfgs(X, y, cost, loss, beta):
    X64 = X.astype(np.float64)
    nv = X.shape[1] + (1 if beta > 0 else 0)
    r = minimize(_primal, np.zeros(nv), args=(X64, y, cost, loss, beta), jac=True, method="L-BFGS-B",
                 options=dict(gtol=1e-11, ftol=1e-16, maxiter=20000, maxcor=30))
    return r.x


@pytest.mark.parametrize("loss", ["squared-hinge", "logistic"])
@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0])
def test_solver_matches_direct_minimiser(loss, beta):
    X, y, cost = _problem()
    w = solve_binary(X, y, cost, loss=loss, bias=beta, eps=1e-5, max_iter=20000)
    ref = _lbfgs(X, y, cost, loss, beta)
    assert w.shape == ref.shape == (X.shape[1] + (1 if beta > 0 else 0),)
    np.testing.assert_allclose(w, ref, atol=2e-5)
    f_w = _primal(w, X.astype(np.float64), y, cost, loss, beta)[0]
    f_ref = _primal(ref, X.astype(np.float64), y, cost, loss, beta)[0]
    assert f_w <= f_ref * (1 + 1e-7)


@pytest.mark.parametrize("loss", ["squared-hinge", "logistic"])
def test_default_eps_is_close_to_optimum(loss):
    X, y, cost = _problem(seed=3)
    w = solve_binary(X, y, cost, loss=loss)
    ref = _lbfgs(X, y, cost, loss, 1.0)
    f_w = _primal(w, X.astype(np.float64), y, cost, loss, 1.0)[0]
    f_ref = _primal(ref, X.astype(np.float64), y, cost, loss, 1.0)[0]
    assert f_ref <= f_w <= f_ref * 1.02


@pytest.mark.parametrize("loss", ["squared-hinge", "logistic"])
def test_dense_and_sparse_agree_and_are_deterministic(loss):
    X, y, cost = _problem(seed=5)
    w1 = solve_binary(X, y, cost, loss=loss)
    w2 = solve_binary(X, y, cost, loss=loss)
    w3 = solve_binary(X.toarray(), y, cost, loss=loss)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(w1, w3)


@pytest.mark.parametrize("loss", ["squared-hinge", "logistic"])
def test_constant_value_rows_match_direct_minimiser(loss):
    # binary rows, L2-normalised (every stored value of a row equal: the solvers' scaled-row path), plus a few
    # rows with distinct values and an empty one, mixed in one problem
    X, y, cost = _problem(seed=13)
    X = X.tolil()
    X[4, :] = 0
    X = X.tocsr()
    X.data[:] = 1.0
    X = sp.csr_matrix(X.multiply((1.0 / np.maximum(1.0, np.sqrt(X.getnnz(axis=1))))[:, None]), dtype=np.float32)
    X.data[X.indptr[7]:X.indptr[10]] *= np.linspace(0.5, 2.0, X.indptr[10] - X.indptr[7], dtype=np.float32)
    w = solve_binary(X, y, cost, loss=loss, eps=1e-5, max_iter=20000)
    np.testing.assert_allclose(w, _lbfgs(X, y, cost, loss, 1.0), atol=2e-5)
    np.testing.assert_array_equal(w, solve_binary(X.toarray(), y, cost, loss=loss, eps=1e-5, max_iter=20000))


def test_wide_feature_space_uses_32bit_local_ids():
    # d > 65536 takes the uint32 local-id layout; the solution must equal the one on the compacted columns
    X, y, cost = _problem(seed=17)
    cols = np.sort(np.random.default_rng(0).choice(100_000, X.shape[1], replace=False))
    wide = sp.csr_matrix((X.data, cols[X.indices], X.indptr), shape=(X.shape[0], 100_000))
    w_wide = solve_binary(wide, y, cost)
    w = solve_binary(X, y, cost)
    np.testing.assert_array_equal(w_wide[cols], w[:-1])
    assert w_wide[-1] == w[-1]
    assert np.count_nonzero(w_wide[:-1]) == np.count_nonzero(w[:-1])


def test_all_negative_and_empty_rows():
    X, y, cost = _problem(seed=7)
    X = X.tolil()
    X[3, :] = 0
    X = X.tocsr()
    y[:] = -1.0
    w = solve_binary(X, y, cost, eps=1e-6, max_iter=10000)
    ref = _lbfgs(X, y, cost, "squared-hinge", 1.0)
    np.testing.assert_allclose(w, ref, atol=2e-5)
    assert w[-1] < 0


def test_solver_input_errors():
    X, y, cost = _problem()
    with pytest.raises(SolverError, match="loss"):
        solve_binary(X, y, cost, loss="hinge")
    with pytest.raises(SolverError, match="length"):
        solve_binary(X, y[:-1], cost)
    with pytest.raises(SolverError, match=r"\+1 and -1"):
        solve_binary(X, y * 2, cost)
    with pytest.raises(SolverError, match="positive"):
        solve_binary(X, y, -cost)


# ----------------------------------------------------------------------------------------------- pruning
def prune_reference(w, has_bias, threshold, max_nnz, d):
    """Plain numpy pruning rule: returns (rows, values) sorted by row, bias as row d."""
    w32 = w.astype(np.float32)
    feats = w32[:-1] if has_bias else w32
    keep = np.flatnonzero((feats != 0) & (np.abs(feats) >= threshold))
    b = w32[-1] if has_bias else np.float32(0)
    keep_b = has_bias and b != 0 and abs(b) >= threshold
    if max_nnz and max_nnz > 0:
        ranked = sorted(keep.tolist(), key=lambda k: (-abs(feats[k]), k))
        kept = ranked[:max_nnz]
        if keep_b and len(kept) == max_nnz:
            if abs(b) > abs(feats[kept[-1]]):
                kept = kept[:-1]
            else:
                keep_b = False
        keep = np.array(sorted(kept), dtype=np.int64)
    rows = list(keep) + ([d] if keep_b else [])
    vals = list(feats[keep]) + ([b] if keep_b else [])
    return np.array(rows, dtype=np.int64), np.array(vals, dtype=np.float32)


def _prune(w, has_bias, threshold, max_nnz, uniq, d):
    out_idx = np.zeros(w.size + 3, dtype=np.int32)
    out_val = np.zeros(w.size + 3, dtype=np.float32)
    cnt = prune_weights(w, has_bias, threshold, max_nnz, uniq, d, out_idx, out_val, 2)
    return out_idx[2:2 + cnt].astype(np.int64), out_val[2:2 + cnt]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("has_bias", [True, False])
@pytest.mark.parametrize("max_nnz", [0, 1, 3, 5, 50])
@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.5])
def test_prune_matches_reference(seed, has_bias, max_nnz, threshold):
    rng = np.random.default_rng(seed)
    u = 12
    # rounded values create ties; some exact zeros
    w = np.round(rng.normal(0, 0.6, u + (1 if has_bias else 0)), 1)
    d = 40
    uniq = np.sort(rng.choice(d, u, replace=False)).astype(np.int32)
    rows, vals = _prune(w, has_bias, threshold, max_nnz, uniq, d)
    ref_rows, ref_vals = prune_reference(w, has_bias, threshold, max_nnz, u)
    ref_rows = np.where(ref_rows == u, d, uniq[np.minimum(ref_rows, u - 1)])
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_array_equal(vals, ref_vals)
    assert (vals != 0).all()
    assert (np.diff(rows) > 0).all()


def test_prune_bias_slot_rules():
    uniq = np.arange(4, dtype=np.int32)
    w = np.array([0.9, -0.3, 0.5, 0.2, 0.4])  # bias 0.4
    assert _prune(w, True, 0.1, 3, uniq, 4)[0].tolist() == [0, 2, 4]  # bias replaces 0.3
    assert _prune(w, True, 0.1, 5, uniq, 4)[0].tolist() == [0, 1, 2, 3, 4]  # room: all kept
    assert _prune(w, True, 0.1, 2, uniq, 4)[0].tolist() == [0, 2]  # 0.4 < 0.5: bias dropped
    w = np.array([0.9, -0.3, 0.0, 0.0, 0.4])
    assert _prune(w, True, 0.1, 3, uniq, 4)[0].tolist() == [0, 1, 4]  # free slot
    w = np.array([0.3, -0.3, 0.3, 0.0, 0.35])
    assert _prune(w, True, 0.1, 2, uniq, 4)[0].tolist() == [0, 4]  # ties: lower ids kept, bias replaces id 1


def test_duplicate_entries_are_summed():
    X, y, cost = _problem(seed=11)
    dup = sp.csr_matrix((np.repeat(X.data / 2, 2), np.repeat(X.indices, 2), X.indptr * 2), shape=X.shape)
    assert not dup.has_canonical_format
    np.testing.assert_allclose(solve_binary(dup, y, cost, eps=1e-6, max_iter=5000),
                               solve_binary(X, y, cost, eps=1e-6, max_iter=5000), atol=1e-6)
