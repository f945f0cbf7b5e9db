"""Label embeddings for clustering: PIFA (positive instance feature aggregation) and user label features.

PIFA represents label ``l`` by the L2-normalised sum of the (row-normalised-by-``Y``) feature vectors of the
instances tagged with ``l``: ``Z = normalize_rows(normalize_rows(Y)^T X)``. Sparse ``X`` gives a CSR float32
matrix with sorted indices; dense ``X`` gives a dense float32 array. Rows that end up all-zero stay zero.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

Matrix = sp.csr_matrix | np.ndarray

MODES = ("pifa", "lf", "pifa+lf-convex", "pifa+lf-concat")


class EmbeddingError(ValueError):
    """The matrices given for label embedding are malformed (shape, finiteness, options)."""


def _as_matrix(a, name: str) -> Matrix:
    """CSR float32 (sorted indices) for sparse input, C-contiguous float32 2-D array for dense input."""
    if sp.issparse(a):
        if a.ndim != 2:
            raise EmbeddingError(f"{name} must be 2-D, got {a.ndim}-D")
        m = sp.csr_matrix(a, dtype=np.float32, copy=False)
        if not np.isfinite(m.data).all():
            raise EmbeddingError(f"{name} contains non-finite values (NaN or inf)")
        if not m.has_sorted_indices:
            m = m.copy()
            m.sort_indices()
        return m
    try:
        m = np.asarray(a, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise EmbeddingError(f"{name} must be a 2-D numeric array or scipy sparse matrix: {e}") from None
    if m.ndim != 2:
        raise EmbeddingError(f"{name} must be 2-D, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise EmbeddingError(f"{name} contains non-finite values (NaN or inf)")
    return np.ascontiguousarray(m)


def _row_norms(m: Matrix) -> np.ndarray:
    """Euclidean norm of each row, accumulated in float64."""
    if sp.issparse(m):
        sq = np.zeros(m.nnz + 1)  # a trailing zero keeps reduceat in bounds when the last rows are empty
        np.square(m.data, out=sq[:-1], dtype=np.float64)
        sums = np.add.reduceat(sq, m.indptr[:-1])
        sums[np.diff(m.indptr) == 0] = 0.0  # reduceat reads the next row's first value for empty rows
        return np.sqrt(sums)
    return np.sqrt(np.einsum("ij,ij->i", m, m, dtype=np.float64))


def normalize_rows(m: Matrix) -> Matrix:
    """Scale every row to unit L2 norm (float32); all-zero rows stay zero."""
    norms = _row_norms(m)
    inv = np.zeros_like(norms)
    np.divide(1.0, norms, out=inv, where=norms > 0)
    if sp.issparse(m):
        out = sp.csr_matrix(m, dtype=np.float32, copy=True)
        out.data *= np.repeat(inv.astype(np.float32), np.diff(out.indptr))
        return out
    return (m * inv[:, None]).astype(np.float32)


def pifa(X, Y) -> Matrix:
    """PIFA label embeddings (L x d): row-normalised ``normalize_rows(Y)^T X``."""
    X = _as_matrix(X, "X")
    Y = _as_matrix(Y, "Y")
    if Y.shape[0] != X.shape[0]:
        raise EmbeddingError(f"Y has {Y.shape[0]} rows but X has {X.shape[0]}: one row of labels per instance")
    Yn = normalize_rows(Y if sp.issparse(Y) else sp.csr_matrix(Y))
    # Yn^T in CSR (one O(nnz(Y)) conversion) keeps the product sparse-sparse, memory ~ nnz(Z)
    YnT = Yn.T.tocsr()
    if sp.issparse(X):
        Z = sp.csr_matrix(YnT @ X, dtype=np.float32)
        Z.eliminate_zeros()
        Z.sort_indices()
    else:
        Z = np.ascontiguousarray(YnT @ X, dtype=np.float32)
    return normalize_rows(Z)


def _check_alpha(alpha) -> float:
    if alpha is None:
        raise EmbeddingError("mode 'pifa+lf-convex' needs alpha in [0, 1], got None")
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise EmbeddingError(f"alpha must be a number in [0, 1], got {alpha!r}") from None
    if not (0.0 <= a <= 1.0):
        raise EmbeddingError(f"alpha must lie in [0, 1], got {alpha!r}")
    return a


def label_embeddings(X, Y, label_features=None, alpha: float | None = None, mode: str = "pifa") -> Matrix:
    """Label embeddings for clustering: "pifa", "lf", "pifa+lf-convex" or "pifa+lf-concat" (rows L2-normalised)."""
    if mode not in MODES:
        raise EmbeddingError(f"unknown label embedding mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "pifa":
        return pifa(X, Y)
    if label_features is None:
        raise EmbeddingError(f"mode {mode!r} needs label_features (one row per label)")
    X = _as_matrix(X, "X")
    Y = _as_matrix(Y, "Y")
    if Y.shape[0] != X.shape[0]:
        raise EmbeddingError(f"Y has {Y.shape[0]} rows but X has {X.shape[0]}: one row of labels per instance")
    nr_labels = Y.shape[1]
    lf = _as_matrix(label_features, "label_features")
    if lf.shape[0] != nr_labels:
        raise EmbeddingError(f"label_features has {lf.shape[0]} rows but Y has {nr_labels} labels (columns)")
    a = _check_alpha(alpha) if mode == "pifa+lf-convex" else None
    lf = normalize_rows(lf)
    if mode == "lf":
        return lf
    p = pifa(X, Y)
    if mode == "pifa+lf-convex":
        if p.shape[1] != lf.shape[1]:
            raise EmbeddingError(
                f"'pifa+lf-convex' adds PIFA ({p.shape[1]} columns, the features of X) to label_features "
                f"({lf.shape[1]} columns): they must have the same number of columns"
            )
        if sp.issparse(p) and sp.issparse(lf):
            out = sp.csr_matrix(a * p + (1.0 - a) * lf, dtype=np.float32)
            out.eliminate_zeros()
            out.sort_indices()
            return out
        dense = lambda m: m.toarray() if sp.issparse(m) else m  # noqa: E731
        return np.ascontiguousarray(a * dense(p) + (1.0 - a) * dense(lf), dtype=np.float32)
    # pifa+lf-concat
    if not sp.issparse(p) and not sp.issparse(lf):
        return np.ascontiguousarray(np.hstack([p, lf]), dtype=np.float32)
    out = sp.hstack([sp.csr_matrix(p), sp.csr_matrix(lf)], format="csr", dtype=np.float32)
    out.eliminate_zeros()
    out.sort_indices()
    return out
