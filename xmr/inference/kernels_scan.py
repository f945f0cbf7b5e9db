"""Column-scan beam search kernels: score each candidate by scanning its CSC column against a dense query.

Used for dense queries: no per-query conversion, and the column scan reads the dense row directly. Per level
the cost is the number of stored weights of the candidate columns; sparse queries use ``kernels_hash``. Levels
stored as dense blocks (``hashlayout``) are scored from the block instead, streaming each chunk's slice of the
rows of the query's nonzeros (ascending feature ids, as the column scan adds them: the same float sums).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from xmr.inference.common import combine_score, insert_topk, transform_score


@njit(cache=True, nogil=True)
def search_dense(x, node_off, cptr, cptr_off, w_indptr, w_indices, w_data, bias_w, label_of, dense_off, dense,
                 beam, topk, code, root, buf_ids, buf_sc, qi, qv, acc, out_ids, out_sc):
    """Beam search for one dense query x (float32[d]); writes out_ids/out_sc, returns the count.

    O(sum over levels of the stored weights of the candidate columns (dense levels: candidates * nnz(x)) +
    candidates * k). buf_ids/buf_sc: int32/float32[2, max(beam, topk)] scratch for the two alternating beams;
    qi/qv: int64/float32[d], acc: float32[largest chunk of a dense level].
    """
    depth = node_off.size - 1
    nq = 0
    for t in range(depth):
        if dense_off[t] >= 0:  # some level is dense: list the nonzeros once
            for f in range(x.size):
                if x[f] != 0:
                    qi[nq] = f
                    qv[nq] = x[f]
                    nq += 1
            break
    nb = 1
    cur = 0
    buf_ids[0, 0] = 0
    buf_sc[0, 0] = root
    for t in range(depth):
        k = topk if t == depth - 1 else beam
        nxt = 1 - cur
        m = 0
        base = node_off[t]
        co = cptr_off[t]
        doff = dense_off[t]
        kt = node_off[t + 1] - base
        for i in range(nb):
            p = buf_ids[cur, i]
            ps = buf_sc[cur, i]
            if doff >= 0:
                j0 = cptr[co + p]
                cs = cptr[co + p + 1] - j0
                blk = acc[:cs]
                for o in range(cs):
                    blk[o] = bias_w[base + j0 + o]
                for q in range(nq):
                    xv = qv[q]
                    r = doff + qi[q] * kt + j0
                    row = dense[r : r + cs]
                    for o in range(cs):
                        blk[o] += xv * row[o]
                for o in range(cs):
                    v = transform_score(code, blk[o])
                    if t > 0:
                        v = combine_score(code, ps, v)
                    m = insert_topk(buf_ids[nxt], buf_sc[nxt], m, k, j0 + o, v)
                continue
            for j in range(cptr[co + p], cptr[co + p + 1]):
                g = base + j
                s = bias_w[g]
                for e in range(w_indptr[g], w_indptr[g + 1]):
                    s += w_data[e] * x[w_indices[e]]
                v = transform_score(code, s)
                if t > 0:
                    v = combine_score(code, ps, v)
                m = insert_topk(buf_ids[nxt], buf_sc[nxt], m, k, j, v)
        nb = m
        cur = nxt
    for i in range(nb):
        out_ids[i] = label_of[buf_ids[cur, i]]
        out_sc[i] = buf_sc[cur, i]
    return nb


@njit(cache=True, nogil=True)
def rows_dense(lo_row, hi_row, X, node_off, cptr, cptr_off, w_indptr, w_indices, w_data, bias_w, label_of, dense_off,
               dense, max_chunk, beam, topk, code, root, out_ids, out_sc, out_n):
    """search_dense over rows lo_row..hi_row-1 of a dense float32 N x d matrix (serial)."""
    kk = max(beam, topk)
    buf_ids = np.empty((2, kk), dtype=np.int32)
    buf_sc = np.empty((2, kk), dtype=np.float32)
    qi = np.empty(X.shape[1], dtype=np.int64)
    qv = np.empty(X.shape[1], dtype=np.float32)
    acc = np.empty(max_chunk, dtype=np.float32)
    for i in range(lo_row, hi_row):
        out_n[i] = search_dense(X[i], node_off, cptr, cptr_off, w_indptr, w_indices, w_data, bias_w, label_of,
                                dense_off, dense, beam, topk, code, root, buf_ids, buf_sc, qi, qv, acc, out_ids[i],
                                out_sc[i])


@njit(cache=True, nogil=True, parallel=True)
def batch_dense(X, node_off, cptr, cptr_off, w_indptr, w_indices, w_data, bias_w, label_of, dense_off, dense,
                max_chunk, beam, topk, code, root, nblocks, out_ids, out_sc, out_n):
    """rows_dense over nblocks contiguous blocks of rows in parallel."""
    n = X.shape[0]
    for b in prange(nblocks):
        rows_dense(b * n // nblocks, (b + 1) * n // nblocks, X, node_off, cptr, cptr_off, w_indptr, w_indices, w_data,
                   bias_w, label_of, dense_off, dense, max_chunk, beam, topk, code, root, out_ids, out_sc, out_n)


@njit(cache=True, nogil=True)
def check_sparse_rows(indptr, indices, data, d):
    """0 if every CSR entry has a feature id in [0, d) and a finite value, else -1 (range) or -2 (non-finite)."""
    for i in range(indptr.size - 1):
        for e in range(indptr[i], indptr[i + 1]):
            f = indices[e]
            if f < 0 or f >= d:
                return -1
            if not np.isfinite(data[e]):
                return -2
    return 0


@njit(cache=True, nogil=True)
def check_dense(X):
    """0 if every value of the dense (2-D) query matrix is finite, else -2."""
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            if not np.isfinite(X[i, j]):
                return -2
    return 0
