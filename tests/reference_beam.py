"""Plain numpy XR-Linear beam search: the reference every inference test compares against.

Exhaustive per-level scoring (every node of every level, float64), then beam selection per query.
Tie rule (shared with the numba kernels): candidates of level t are listed in the order of the previous beam
(best first), each parent's children by ascending node id (bottom level: ascending label id within a leaf);
selection is a stable sort by descending score, so equal scores go to the earlier candidate.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from xmr.postprocess import COMBINE_NONE, combine, combine_kind, postprocessor_code, root_score, transform


def level_scores(weights: sp.spmatrix, bias: float, X) -> np.ndarray:
    """Raw scores ``X @ W[:d] + bias * W[d]`` of every node of one level, dense float64 N x K."""
    W = sp.csc_matrix(weights, dtype=np.float64)
    d = X.shape[1]
    Xd = X.toarray() if sp.issparse(X) else np.asarray(X)
    S = Xd.astype(np.float64) @ W[:d].toarray()
    if bias > 0 and W.shape[0] == d + 1:
        S += bias * W[d].toarray().ravel()[None, :]
    return S


def nodes_in_range(tree, lo: int, hi: int) -> list[np.ndarray]:
    """Per level, a bool mask of the nodes that hold at least one label id in [lo, hi)."""
    ok = np.zeros(tree.nr_labels, dtype=bool)
    ok[lo:hi] = True
    masks = [ok]
    for t in range(tree.depth - 1, 0, -1):
        up = np.zeros(tree.level_sizes[t - 1], dtype=bool)
        up[tree.parents(t)[masks[0]]] = True
        masks.insert(0, up)
    return masks


def reference_beam_search(tree, weights, bias, X, beam_size, topk, post_processor="l3-hinge",
                          label_range=None) -> sp.csr_matrix:
    """Beam search over (tree, weights, bias) for queries X; N x L CSR float32, rows by descending score.
    ``label_range=(lo, hi)``: candidates holding no label id in [lo, hi) are dropped at every level."""
    X = sp.csr_matrix(X) if sp.issparse(X) else np.atleast_2d(np.asarray(X))
    n = X.shape[0]
    depth = tree.depth
    allowed = nodes_in_range(tree, *label_range) if label_range is not None else None
    scores = [transform(post_processor, level_scores(weights[t], bias, X)) for t in range(depth)]
    kind = combine_kind(postprocessor_code(post_processor))
    rows, cols, vals = [], [], []
    for i in range(n):
        beam_ids = np.zeros(1, dtype=np.int64)
        beam_sc = np.full(1, root_score(post_processor), dtype=np.float32)
        for t in range(depth):
            indptr, indices = tree.children(t)
            cand, par = [], []
            for p, ps in zip(beam_ids, beam_sc):
                kids = indices[indptr[p] : indptr[p + 1]]
                cand.append(kids)
                par.append(np.full(kids.size, ps, dtype=np.float32))
            cand = np.concatenate(cand).astype(np.int64)
            par = np.concatenate(par)
            if allowed is not None:
                par = par[allowed[t][cand]]
                cand = cand[allowed[t][cand]]
            child = scores[t][i, cand]
            sc = child if (t == 0 or kind == COMBINE_NONE) else combine(post_processor, par, child)
            keep = topk if t == depth - 1 else beam_size
            order = np.argsort(-sc.astype(np.float64), kind="stable")[:keep]
            beam_ids, beam_sc = cand[order], sc[order]
        rows.append(np.full(beam_ids.size, i))
        cols.append(beam_ids)
        vals.append(beam_sc)
    rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    vals = np.concatenate(vals).astype(np.float32) if vals else np.zeros(0, dtype=np.float32)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    # rows were appended in order and each row's entries in rank order, so this CSR keeps descending scores
    return sp.csr_matrix((vals, cols, indptr), shape=(n, tree.nr_labels))
