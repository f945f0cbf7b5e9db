"""Sparse-query beam search over the hash layout (see ``hashlayout``): the single-query and batch fast path.

Dense levels (see ``hashlayout``) stream each chunk's slice of the query features' dense rows instead; a level
is one kind or the other, so the two inner loops stay separate (one branch per level).

Per hash level, one software-pipelined pass over the (beam parent, query feature) pairs: hash pair p and prefetch
its bucket, probe pair p-D (its bucket has arrived) and prefetch every cache line of the row it points to,
accumulate pair p-2D into the candidates' score block (initialised with the bias). About 2D rows' misses stay in
flight instead of one. (On the catalogue model, whose bottom rows average 45 entries = 6 lines, prefetching
only a row's first line left the accumulation memory-bound: ~70 of ~120 us per query at beam 20 / top 100;
the whole row: ~75-80 us in all, the same with D = 8, 24 or 32.) Then transform, combine and keep the top k,
skipping parents, and candidates' exp, that provably cannot enter the top k.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from xmr.inference.common import combine_score, hinge_power, insert_topk, prefetch, prefetch_lines, transform_score
from xmr.inference.constraint import node_in_range, unpack_ranges
from xmr.inference.hashlayout import DENSE_ROW, fmix64

_D = 16  # pipeline distance (pairs) between hashing, probing and accumulating


@njit(cache=True, nogil=True, inline="always")
def probe(tab, toff, mask, bw, key):
    """Word index of the payload of key, probing from its home bucket word bw, or -1. O(1) expected."""
    b = (bw - toff) >> 3
    while True:
        bw = toff + (b << 3)
        for s in range(4):
            kk = tab[bw + 2 * s]
            if kk == key:
                return bw + 2 * s + 1
            if kk == -1:
                return -1
        b = (b + 1) & mask


@njit(cache=True, nogil=True, inline="always")
def _accumulate(tab, tabf, ent, entf, w, xv, acc, m):
    """Add xv * row (payload at word w) into the score block starting at acc[m]. O(row entries); a dense row:
    O(chunk size), contiguous and vectorised (adding xv * 0.0 leaves a sum's value unchanged)."""
    pay = tab[w]
    hi = pay >> 32
    if hi < 0:
        acc[m - hi - 1] += xv * tabf[2 * w]
    else:
        lo = pay & 0xFFFFFFFF
        if hi < DENSE_ROW:
            for e in range(lo, lo + hi):
                acc[m + ent[2 * e]] += xv * entf[2 * e + 1]
        else:
            f0 = 2 * lo
            for o in range(hi - DENSE_ROW):
                acc[m + o] += xv * entf[f0 + o]


@njit(cache=True, nogil=True)
def _accumulate_dense(qi, qv, dense, doff, kt, cptr, co, pids, pm, acc):
    """Add x_f * W[f, chunk] into each parent chunk's score block, W a dense row-major d x kt level starting at
    dense[doff]. Features in query order per block: the same float sums as the hash path. O(nb * nnz * chunk)."""
    for i in range(pids.size):
        j0 = cptr[co + pids[i]]
        cs = cptr[co + pids[i] + 1] - j0
        m = pm[i]
        blk = acc[m : m + cs]
        for q in range(qi.size):
            xv = qv[q]
            r = doff + np.int64(qi[q]) * kt + j0
            row = dense[r : r + cs]
            for o in range(cs):
                blk[o] += xv * row[o]


@njit(cache=True, nogil=True)
def search_sparse(qi, qv, d, node_off, cptr, cptr_off, bias_w, label_of, tab, tab_off, tab_mask, ent, dense_off,
                  dense, beam, topk, code, root, acc, keys, slot, pm, buf_ids, buf_sc, out_ids, out_sc, span, span_off,
                  lab, lo, hi, t0, start_ids, start_sc):
    """Beam search for one sparse query (feature ids qi, values qv); returns the count written to out_*, or
    -1 (a feature id outside [0, d)) / -2 (a non-finite value).

    With hi >= 0 (``span``/``span_off``/``lab`` from ``constraint.LabelRanges``), only nodes holding a label id in
    [lo, hi) enter the beam and the result, at O(log node size) per candidate; hi < 0: no constraint.
    t0 = 0 starts at the root; t0 > 0 starts at level t0 from the beam ``start_ids`` (local ids of level t0-1
    nodes, in beam order, at most max(beam, topk) of them) with scores ``start_sc``, as a sharded model's shard
    continues the beam its router found: the same arithmetic, so the same scores, as the unsplit search.

    O(sum over levels of beam*nnz lookups + touched row entries + candidates; a dense level: candidates*nnz
    multiply-adds instead of the lookups and entries). Scratch: acc float32[max candidates], keys/slot
    int64[max(beam, topk)*nnz], pm int64[kk], buf_ids/buf_sc [2*kk], kk = max(beam, topk).
    """
    nq = qi.size
    for q in range(nq):
        if qi[q] < 0 or qi[q] >= d:
            return -1
        if not np.isfinite(qv[q]):
            return -2
    tabf = tab.view(np.float32)
    entf = ent.view(np.float32)
    kk = max(beam, topk)
    depth = node_off.size - 1
    cur = 0
    if t0 == 0:
        nb = 1
        buf_ids[0] = 0
        buf_sc[0] = root
    else:
        nb = start_ids.size
        for i in range(nb):
            buf_ids[i] = start_ids[i]
            buf_sc[i] = start_sc[i]
    for t in range(t0, depth):
        k = topk if t == depth - 1 else beam
        co = cptr_off[t]
        base = node_off[t]
        toff = tab_off[t]
        mask = tab_mask[t]
        cb = cur * kk
        m = 0
        for i in range(nb):  # score blocks start with the bias
            j0 = cptr[co + buf_ids[cb + i]]
            cs = cptr[co + buf_ids[cb + i] + 1] - j0
            pm[i] = m
            for o in range(cs):
                acc[m + o] = bias_w[base + j0 + o]
            m += cs
        if dense_off[t] >= 0:
            _accumulate_dense(qi, qv, dense, dense_off[t], node_off[t + 1] - base, cptr, co, buf_ids[cb : cb + nb],
                              pm, acc)
            nxt = 1 - cur
            nb = _select(code, t, acc, cptr, co, buf_ids[cb : cb + nb], buf_sc[cb : cb + nb], nb,
                         buf_ids[nxt * kk : nxt * kk + kk], buf_sc[nxt * kk : nxt * kk + kk], k, depth, label_of,
                         span, span_off, lab, lo, hi)
            cur = nxt
            continue
        npairs = nb * nq
        ih = qh = 0  # parent / feature of the pair being hashed
        ia = qa = 0  # ... and of the pair being accumulated
        for p in range(npairs + 2 * _D):
            if p < npairs:
                key = np.int64(buf_ids[cb + ih]) * d + qi[qh]
                bw = toff + (np.int64(fmix64(key) & np.uint64(mask)) << 3)
                keys[p] = key
                slot[p] = bw
                prefetch(tab, bw)
                qh += 1
                if qh == nq:
                    qh = 0
                    ih += 1
            r = p - _D
            if 0 <= r < npairs:
                w = probe(tab, toff, mask, slot[r], keys[r])
                slot[r] = w
                if w >= 0:
                    rl = tab[w] >> 32
                    if rl > 0:  # the whole row, one hint per cache line (its first line only: 1.5x slower)
                        e0 = 2 * (tab[w] & 0xFFFFFFFF)
                        prefetch_lines(ent, e0, e0 + (2 * rl if rl < DENSE_ROW else rl - DENSE_ROW))
            a = p - 2 * _D
            if 0 <= a < npairs:
                w = slot[a]
                if w >= 0:
                    _accumulate(tab, tabf, ent, entf, w, qv[qa], acc, pm[ia])
                qa += 1
                if qa == nq:
                    qa = 0
                    ia += 1
        nxt = 1 - cur
        nb = _select(code, t, acc, cptr, co, buf_ids[cb : cb + nb], buf_sc[cb : cb + nb], nb,
                     buf_ids[nxt * kk : nxt * kk + kk], buf_sc[nxt * kk : nxt * kk + kk], k, depth, label_of, span,
                     span_off, lab, lo, hi)
        cur = nxt
    for i in range(nb):
        out_ids[i] = label_of[buf_ids[cur * kk + i]]
        out_sc[i] = buf_sc[cur * kk + i]
    return nb


@njit(cache=True, nogil=True, inline="always")
def _select(code, t, acc, cptr, co, pids, psc, nb, ids, sc, k, depth, label_of, span, span_off, lab, lo, hi):
    """Top k of the candidates' combined scores into ids/sc (ties -> earlier candidate); returns the count.
    Under a label-range constraint (hi >= 0) a candidate holding no label id in [lo, hi) is dropped.

    Every post-processor but noop has transform <= 1 (multiply) or <= 0 (add), so a child never beats its
    parent: a parent that cannot beat the current k-th is skipped whole. For lp-hinge, ps * exp(-(1-s)^p) > kth
    needs (1-s)^p < log(ps / kth); candidates above that bound (with a 1e-6 margin on the log, far beyond float32
    rounding) skip the exp. The bound is compared in the (1-s)^p domain, so a refresh costs one log (it was
    1 - g^(1/p): a pow per refresh, and with k = 100 the k-th changes often: ~20 us of a ~110 us catalogue
    query at beam 20). O(candidates + insertions * k).
    """
    mm = 0
    pos = 0
    bounded = code >= 1 and t > 0
    hinge = 2 <= code <= 5
    constrained = hi >= 0
    for i in range(nb):
        ps = psc[i] if t > 0 else np.float32(1.0)
        j0 = cptr[co + pids[i]]
        cs = cptr[co + pids[i] + 1] - j0
        if bounded and mm == k and not ps > sc[k - 1]:
            pos += cs
            continue
        lim_th = np.float32(np.nan)
        g = np.inf
        for o in range(cs):
            if constrained and not node_in_range(t, j0 + o, depth, label_of, span, span_off, lab, lo, hi):
                continue
            s = acc[pos + o]
            if hinge and mm == k:
                h = 1.0 - np.float64(s)
                hp = hinge_power(h, code - 1) if h > 0.0 else 0.0
                if hp > g:  # the k-th only grows, so a bound computed for an older k-th stays valid
                    continue
                th = sc[k - 1]
                if th != lim_th:  # refresh the bound lazily, only for candidates that pass the stale one
                    lim_th = th
                    g = math.log(np.float64(ps) / np.float64(th)) + 1e-6 if th > 0 else np.inf
                    if hp > g:
                        continue
            v = transform_score(code, s)
            if t > 0:
                v = combine_score(code, psc[i], v)
            mm = insert_topk(ids, sc, mm, k, j0 + o, v)
        pos += cs
    return mm


@njit(cache=True, nogil=True, inline="always")
def _unpack_i64(blob, meta, s):
    a = meta[2 * s]
    return blob[a : a + meta[2 * s + 1]]


@njit(cache=True, nogil=True, inline="always")
def _unpack_32(blob, meta, s, dtype):
    a = meta[2 * s]
    n = meta[2 * s + 1]
    return blob[a : a + (n + 1) // 2].view(dtype)[:n]


@njit(cache=True, nogil=True)
def search_packed(qi, qv, d, blob, meta, scratch, smeta, beam, topk, code, root, ranges, lo, hi, t0, start_ids,
                  start_sc):
    """search_sparse on the packed model blob and a packed scratch (section orders: hashlayout.SECTIONS and
    index._SCRATCH); results land in the scratch's out sections. Returns the count or a negative status.
    ``ranges``: a ``constraint.LabelRanges.packed`` array; hi < 0: no label-range constraint (``NO_RANGES``).
    t0, start_ids, start_sc: where the search starts (see search_sparse; t0 = 0: the root)."""
    span_off, span, lab = unpack_ranges(ranges)
    return search_sparse(
        qi, qv, d, _unpack_i64(blob, meta, 0), _unpack_i64(blob, meta, 1), _unpack_i64(blob, meta, 2),
        _unpack_32(blob, meta, 5, np.float32), _unpack_32(blob, meta, 6, np.int32), _unpack_i64(blob, meta, 7),
        _unpack_i64(blob, meta, 3), _unpack_i64(blob, meta, 4), _unpack_32(blob, meta, 8, np.int32),
        _unpack_i64(blob, meta, 9), _unpack_32(blob, meta, 10, np.float32), beam, topk, code, root,
        _unpack_32(scratch, smeta, 0, np.float32), _unpack_i64(scratch, smeta, 1), _unpack_i64(scratch, smeta, 2),
        _unpack_i64(scratch, smeta, 3), _unpack_32(scratch, smeta, 4, np.int32),
        _unpack_32(scratch, smeta, 5, np.float32), _unpack_32(scratch, smeta, 6, np.int32),
        _unpack_32(scratch, smeta, 7, np.float32), span, span_off, lab, lo, hi, t0, start_ids, start_sc)


@njit(cache=True, nogil=True)
def rows_sparse(lo_row, hi_row, indptr, indices, data, d, blob, meta, beam, topk, code, root, max_cand, max_nq,
                out_ids, out_sc, out_n):
    """search_sparse over CSR query rows lo_row..hi_row-1 with one set of scratch buffers (serial)."""
    kk = max(beam, topk)
    node_off = _unpack_i64(blob, meta, 0)
    cptr = _unpack_i64(blob, meta, 1)
    cptr_off = _unpack_i64(blob, meta, 2)
    tab_off = _unpack_i64(blob, meta, 3)
    tab_mask = _unpack_i64(blob, meta, 4)
    bias_w = _unpack_32(blob, meta, 5, np.float32)
    label_of = _unpack_32(blob, meta, 6, np.int32)
    tab = _unpack_i64(blob, meta, 7)
    ent = _unpack_32(blob, meta, 8, np.int32)
    dense_off = _unpack_i64(blob, meta, 9)
    dense = _unpack_32(blob, meta, 10, np.float32)
    acc = np.empty(max_cand, dtype=np.float32)
    keys = np.empty(max(1, kk * max_nq), dtype=np.int64)
    slot = np.empty(max(1, kk * max_nq), dtype=np.int64)
    pm = np.empty(kk, dtype=np.int64)
    buf_ids = np.empty(2 * kk, dtype=np.int32)
    buf_sc = np.empty(2 * kk, dtype=np.float32)
    none64 = np.empty(0, dtype=np.int64)
    no_ids = np.empty(0, dtype=np.int32)
    no_sc = np.empty(0, dtype=np.float32)
    for i in range(lo_row, hi_row):
        lo = indptr[i]
        hi = indptr[i + 1]
        out_n[i] = search_sparse(indices[lo:hi], data[lo:hi], d, node_off, cptr, cptr_off, bias_w, label_of, tab,
                                 tab_off, tab_mask, ent, dense_off, dense, beam, topk, code, root, acc, keys, slot, pm,
                                 buf_ids, buf_sc, out_ids[i], out_sc[i], none64, none64, label_of, 0, -1, 0, no_ids,
                                 no_sc)


@njit(cache=True, nogil=True, parallel=True)
def batch_sparse(indptr, indices, data, d, blob, meta, beam, topk, code, root, max_cand, max_nq, nblocks, out_ids,
                 out_sc, out_n):
    """rows_sparse over nblocks contiguous blocks of rows in parallel (each query is independent, so the
    result does not depend on the number of threads)."""
    n = indptr.size - 1
    for b in prange(nblocks):
        rows_sparse(b * n // nblocks, (b + 1) * n // nblocks, indptr, indices, data, d, blob, meta, beam, topk, code,
                    root, max_cand, max_nq, out_ids, out_sc, out_n)
