"""PIFA and label embedding modes against direct dense numpy computations; input validation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from indexing.embeddings import EmbeddingError, label_embeddings, normalize_rows, pifa


def dense_normalize(a: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, n, out=np.zeros_like(a), where=n > 0)


def dense_pifa(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    return dense_normalize(dense_normalize(Y).T @ X)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = sp.random(60, 40, density=0.1, format="csr", random_state=1, dtype=np.float32)
    X.data -= 0.3  # negative values too, so sums may cancel
    Y = sp.random(60, 12, density=0.15, format="csr", random_state=2, dtype=np.float32)
    Y.data[:] = 1.0
    Yd = Y.toarray()
    Yd[:, 11] = 0  # one label without instances
    Y = sp.csr_matrix(Yd)
    LF = rng.normal(size=(12, 40)).astype(np.float32)
    LF[3] = 0.0
    return X, Y, LF


def test_pifa_sparse_matches_dense(data):
    X, Y, _ = data
    Z = pifa(X, Y)
    assert sp.isspmatrix_csr(Z) and Z.dtype == np.float32 and Z.has_sorted_indices
    assert Z.shape == (12, 40)
    np.testing.assert_allclose(Z.toarray(), dense_pifa(X.toarray().astype(np.float64), Y.toarray()), atol=1e-6)
    norms = np.linalg.norm(Z.toarray(), axis=1)
    assert norms[11] == 0.0  # label without instances stays zero
    np.testing.assert_allclose(norms[:11], 1.0, rtol=1e-5)
    assert (Z.data != 0).all()


def test_pifa_dense_input(data):
    X, Y, _ = data
    Z = pifa(X.toarray(), Y)
    assert isinstance(Z, np.ndarray) and Z.dtype == np.float32 and Z.flags.c_contiguous
    np.testing.assert_allclose(Z, pifa(X, Y).toarray(), atol=1e-6)
    np.testing.assert_allclose(pifa(X.toarray(), Y.toarray()), Z, atol=1e-6)


def test_pifa_weighted_labels_and_unsorted_input(data):
    X, Y, _ = data
    Yw = Y.copy()
    Yw.data = np.linspace(0.5, 2.0, Yw.nnz).astype(np.float32)
    Xu = X.copy()
    Xu.indices = Xu.indices.copy()
    for i in range(Xu.shape[0]):  # reverse each row's entries: unsorted indices
        lo, hi = Xu.indptr[i], Xu.indptr[i + 1]
        Xu.indices[lo:hi] = Xu.indices[lo:hi][::-1].copy()
        Xu.data[lo:hi] = Xu.data[lo:hi][::-1].copy()
    Xu.has_sorted_indices = False
    Z = pifa(Xu, Yw)
    assert Z.has_sorted_indices
    np.testing.assert_allclose(Z.toarray(), dense_pifa(X.toarray().astype(np.float64), Yw.toarray()), atol=1e-6)


def test_normalize_rows_empty_trailing_rows():
    m = sp.csr_matrix(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(normalize_rows(m).toarray(), [[0.6, 0.8], [0, 0], [0, 0]])
    np.testing.assert_allclose(normalize_rows(m.toarray()), [[0.6, 0.8], [0, 0], [0, 0]])


def test_mode_pifa_is_pifa(data):
    X, Y, _ = data
    assert (label_embeddings(X, Y) != pifa(X, Y)).nnz == 0


def test_mode_lf(data):
    X, Y, LF = data
    out = label_embeddings(X, Y, label_features=LF, mode="lf")
    np.testing.assert_allclose(out, dense_normalize(LF.astype(np.float64)), atol=1e-6)
    out_sp = label_embeddings(X, Y, label_features=sp.csr_matrix(LF), mode="lf")
    np.testing.assert_allclose(out_sp.toarray(), out, atol=1e-6)


@pytest.mark.parametrize("sparse_lf", [False, True])
def test_mode_convex(data, sparse_lf):
    X, Y, LF = data
    lf = sp.csr_matrix(LF) if sparse_lf else LF
    out = label_embeddings(X, Y, label_features=lf, alpha=0.3, mode="pifa+lf-convex")
    want = 0.3 * dense_pifa(X.toarray().astype(np.float64), Y.toarray()) + 0.7 * dense_normalize(LF.astype(np.float64))
    got = out.toarray() if sp.issparse(out) else out
    assert sp.issparse(out) == sparse_lf
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("sparse_lf", [False, True])
def test_mode_concat(data, sparse_lf):
    X, Y, LF = data
    lf = sp.csr_matrix(LF[:, :7]) if sparse_lf else LF[:, :7]
    out = label_embeddings(X, Y, label_features=lf, mode="pifa+lf-concat")
    assert out.shape == (12, 47)
    pifa_part = dense_pifa(X.toarray().astype(np.float64), Y.toarray())
    want = np.hstack([pifa_part, dense_normalize(LF[:, :7].astype(np.float64))])
    np.testing.assert_allclose(out.toarray() if sp.issparse(out) else out, want, atol=1e-6)
    dense_out = label_embeddings(X.toarray(), Y, label_features=LF[:, :7], mode="pifa+lf-concat")
    assert isinstance(dense_out, np.ndarray)
    np.testing.assert_allclose(dense_out, want, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mode": "pii"}, "unknown label embedding mode"),
        ({"mode": "lf"}, "needs label_features"),
        ({"mode": "pifa+lf-convex", "label_features": "LF"}, "needs alpha"),
        ({"mode": "pifa+lf-convex", "label_features": "LF", "alpha": 1.5}, r"alpha must lie in \[0, 1\]"),
        ({"mode": "pifa+lf-convex", "label_features": "LF", "alpha": "x"}, "alpha must be a number"),
        ({"mode": "pifa+lf-convex", "label_features": "LF5", "alpha": 0.5}, "same number of columns"),
        ({"mode": "lf", "label_features": "LF_rows"}, "label_features has 11 rows but Y has 12 labels"),
    ],
)
def test_label_embedding_errors(data, kwargs, match):
    X, Y, LF = data
    subs = {"LF": LF, "LF5": LF[:, :5], "LF_rows": LF[:11]}
    if isinstance(kwargs.get("label_features"), str):
        kwargs = {**kwargs, "label_features": subs[kwargs["label_features"]]}
    with pytest.raises(EmbeddingError, match=match):
        label_embeddings(X, Y, **kwargs)


def test_shape_and_value_errors(data):
    X, Y, LF = data
    with pytest.raises(EmbeddingError, match="Y has 59 rows but X has 60"):
        pifa(X, Y[:59])
    with pytest.raises(EmbeddingError, match="Y has 59 rows but X has 60"):
        label_embeddings(X, Y[:59], label_features=LF, mode="lf")
    bad = X.copy()
    bad.data[0] = np.inf
    with pytest.raises(EmbeddingError, match="X contains non-finite"):
        pifa(bad, Y)
    Xd = X.toarray()
    Xd[0, 0] = np.nan
    with pytest.raises(EmbeddingError, match="X contains non-finite"):
        pifa(Xd, Y)
    LFb = LF.copy()
    LFb[0, 0] = np.nan
    with pytest.raises(EmbeddingError, match="label_features contains non-finite"):
        label_embeddings(X, Y, label_features=LFb, mode="lf")
    with pytest.raises(EmbeddingError, match="must be 2-D"):
        pifa(np.ones(60, np.float32), Y)
    assert issubclass(EmbeddingError, ValueError)
