"""Compact inference layout: all levels' weights in one column-major (CSC) block, siblings contiguous.

Built once from ``(tree, weights, bias)``. Node ids are global across levels (level t occupies
``node_off[t]:node_off[t+1]``). The bottom level is renumbered so the labels of one leaf are contiguous
(``label_of[new] = original label id``); upper levels already have contiguous siblings (LabelTree invariant).
The bias row is pulled out into ``bias_w`` (already multiplied by beta, 0 where pruned or bias <= 0).
An index keeps no CSC weights for the levels it stores as dense blocks (``without_levels``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp


class ModelShapeError(ValueError):
    """Weights that do not fit the label tree or the weights convention."""


@dataclass(frozen=True)
class CompactLayout:
    """Concatenated per-level arrays the numba kernels read (see module docstring)."""

    nr_features: int
    depth: int
    level_sizes: tuple[int, ...]
    node_off: np.ndarray  # int64[depth+1]
    cptr: np.ndarray  # int64: per level, K_{t-1}+1 child pointers (local ids), concatenated
    cptr_off: np.ndarray  # int64[depth]: start of level t in cptr
    max_chunk: np.ndarray  # int64[depth]: largest sibling group of level t
    w_indptr: np.ndarray  # int64[nodes+1]
    w_indices: np.ndarray  # int32 feature ids
    w_data: np.ndarray  # float32
    bias_w: np.ndarray  # float32[nodes]: beta * bias weight
    label_of: np.ndarray  # int32[L]: original label id of bottom node j

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return sum(
            a.nbytes
            for a in (self.node_off, self.cptr, self.cptr_off, self.max_chunk, self.w_indptr, self.w_indices,
                      self.w_data, self.bias_w, self.label_of)
        )


def infer_nr_features(weights, bias: float) -> int:
    """Number of query features d implied by the weights convention ((d+1) rows when bias > 0)."""
    rows = weights[0].shape[0]
    return rows - 1 if bias > 0 else rows


def check_weights(tree, weights, bias: float, nr_features: int | None = None) -> int:
    """Validate weights against the tree and the convention (and d, when given); return d."""
    if len(weights) != tree.depth:
        raise ModelShapeError(f"got {len(weights)} weight matrices for a tree of depth {tree.depth}")
    if not np.isfinite(bias):
        raise ModelShapeError(f"bias must be finite, got {bias}")
    d = infer_nr_features(weights, bias)
    if nr_features is not None and d != nr_features:
        want = nr_features + 1 if bias > 0 else nr_features
        raise ModelShapeError(f"weights have {weights[0].shape[0]} rows; d={nr_features} with bias={bias} needs {want}")
    if d < 1:
        raise ModelShapeError(f"weights have {weights[0].shape[0]} rows: too few for bias={bias}")
    for t, (W, K) in enumerate(zip(weights, tree.level_sizes)):
        if not sp.issparse(W):
            raise ModelShapeError(f"weights[{t}] must be a scipy sparse matrix, got {type(W).__name__}")
        if W.shape[1] != K:
            raise ModelShapeError(f"weights[{t}] has {W.shape[1]} columns, level {t} of the tree has {K} nodes")
        if W.shape[0] != weights[0].shape[0]:
            raise ModelShapeError(f"weights[{t}] has {W.shape[0]} rows, weights[0] has {weights[0].shape[0]}")
        if W.nnz and not np.isfinite(W.data).all():
            raise ModelShapeError(f"weights[{t}] holds non-finite values")
    return d


def build_compact(tree, weights, bias: float, nr_features: int | None = None) -> CompactLayout:
    """Concatenate the levels' CSC weights (bottom level permuted leaf-contiguous) into a CompactLayout."""
    d = check_weights(tree, weights, bias, nr_features)
    depth = tree.depth
    sizes = tree.level_sizes
    label_of = tree.label_order().astype(np.int32)
    node_off = np.zeros(depth + 1, dtype=np.int64)
    node_off[1:] = np.cumsum(sizes)
    cptrs, indptrs, indices, datas, biases, max_chunk = [], [], [], [], [], []
    nnz = 0
    for t in range(depth):
        cp, _ = tree.children(t)
        cptrs.append(cp.astype(np.int64))
        max_chunk.append(int(np.diff(cp).max()))
        W = sp.csc_matrix(weights[t], dtype=np.float32)
        if t == depth - 1:
            W = W[:, label_of]
        W.sum_duplicates()
        W.sort_indices()
        b = np.zeros(W.shape[1], dtype=np.float32)
        if bias > 0 and W.shape[0] == d + 1:
            b = (np.float32(bias) * W[d].toarray().ravel().astype(np.float32)).astype(np.float32)
            W = W[:d]
            W = sp.csc_matrix(W)
        keep = W.data != 0
        if not keep.all():
            W = sp.csc_matrix((W.data[keep], W.indices[keep], _counts_to_indptr(W, keep)), shape=W.shape)
        indptrs.append(W.indptr[:-1].astype(np.int64) + nnz)
        nnz += W.nnz
        indices.append(W.indices.astype(np.int32))
        datas.append(W.data.astype(np.float32))
        biases.append(b)
    cptr_off = np.zeros(depth, dtype=np.int64)
    cptr_off[1:] = np.cumsum([c.size for c in cptrs])[:-1]
    w_indptr = np.concatenate(indptrs + [np.array([nnz], dtype=np.int64)])
    return CompactLayout(
        nr_features=d,
        depth=depth,
        level_sizes=tuple(int(s) for s in sizes),
        node_off=node_off,
        cptr=np.concatenate(cptrs),
        cptr_off=cptr_off,
        max_chunk=np.asarray(max_chunk, dtype=np.int64),
        w_indptr=w_indptr,
        w_indices=np.concatenate(indices),
        w_data=np.concatenate(datas),
        bias_w=np.concatenate(biases),
        label_of=label_of,
    )


def _counts_to_indptr(W: sp.csc_matrix, keep: np.ndarray) -> np.ndarray:
    # drop explicit zeros (the convention forbids them, but a caller's matrix may still carry some)
    col = np.repeat(np.arange(W.shape[1]), np.diff(W.indptr))
    indptr = np.zeros(W.shape[1] + 1, dtype=np.int64)
    np.cumsum(np.bincount(col[keep], minlength=W.shape[1]), out=indptr[1:])
    return indptr


def without_levels(c: CompactLayout, drop) -> CompactLayout:
    """The layout with the stored weights of the levels flagged in ``drop`` removed (their columns left empty):
    levels the search reads from dense blocks need no CSC copy."""
    if not any(drop):
        return c
    keep_col = np.ones(c.w_indptr.size - 1, dtype=bool)
    for t, flag in enumerate(drop):
        if flag:
            keep_col[c.node_off[t] : c.node_off[t + 1]] = False
    counts = np.diff(c.w_indptr)
    keep = np.repeat(keep_col, counts)
    indptr = np.zeros_like(c.w_indptr)
    np.cumsum(counts * keep_col, out=indptr[1:])
    return replace(c, w_indptr=indptr, w_indices=c.w_indices[keep], w_data=c.w_data[keep])
