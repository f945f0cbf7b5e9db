"""Ranking stage of the retriever: re-score beam-search candidates by exact cosine to the label's own text.

Beam search *matches* (finds ``candidates`` plausible labels in O(log L)); this stage *ranks* them: each
candidate's model score is blended with the cosine between the query's features and the label's text features
(``Z``: one L2-normalised row per label, made by the same featurizer as the queries), and the blend is re-sorted::

    final = (1 - weight) * model_score + weight * cosine(query, Z[label])

Both scores lie in [0, 1] (model scores are products of per-level transformed scores, TF-IDF cosines of
non-negative features), so ``weight`` is a plain mixing share; ``weight = 1`` orders the candidates by cosine
alone. Ties keep the beam-search order. Cost per query: O(sum over candidates of nnz(Z[c]) + nnz(query) +
C log C) for C candidates, independent of the number of labels.

Each candidate row is scanned against a small linear-probing hash table of the query's features (at most 1/8
full): pass 1 notes where the row's ids hit the table, branching only for ids whose home slot spilled, pass 2
sums those few products in row order, so the float64 sums are exactly a merge-join's. Z is kept as interleaved
(id, value) int32 pairs, 64-byte aligned (2 MiB pages from 8 MiB up), and each candidate's whole row is
prefetched four candidates ahead. On the catalogue (100 candidates of ~110 nonzeros, queries of ~21; one core,
µs per query for the scores, warm / with 2 MiB of other data touched between queries as in the server): the
merge-join over the memory-mapped CSR took 47 / 94-105 (its three-way branch mispredicts), this kernel 30-33 /
45-53. Without the spill branch (wrong when two query features share a home slot) it took 20-21 / 41-44; a
collision-free table would need a second path for the queries that get none. A dense scatter of the query
into a d-vector would need a zeroed d-sized buffer per concurrent call (1.1 MB at d = 289k), so the stage
stays allocation-light (O(C + nnz(q)) scratch) and safe to call from many threads (nogil).

Single queries inside a retriever go faster still (:meth:`Reranker.group_by`, :func:`group_scores`): beam search
takes its candidates from a few leaves of the label tree (~8 on the catalogue), so Z is also kept re-keyed by
(leaf, feature) in a cache-line hash table like beam search's, and a query adds its ~21 features' rows for each
of those leaves: ~160 lookups and ~1,600 entries instead of the candidates' ~11,000, the same float64 sums
(18.7 against 43.8 us per query on the catalogue, the kernels alone, L2 evicted between queries; +24 MB). The
batch path keeps the row scan.

Saved inside a retriever directory as plain arrays (no pickle)::

    rerank/
      rerank.json    {"format": "xmr.rerank", "version": 1, "candidates", "weight", "shape": [L, d], "nnz",
                      "arrays": {"indptr": {"shape", "dtype"}, "indices": ..., "data": ...}}
      indptr.npy     int64[L + 1]   CSR of Z (rows = labels, sorted unique feature ids per row)
      indices.npy    int32[nnz]
      data.npy       float32[nnz]

(the interleaved pairs are built from indices and data at load: 8 bytes per nonzero more in memory.)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from xmr.inference.common import prefetch, prefetch_lines
from xmr.inference.hashlayout import WORDS, aligned_empty, bucket_count, fill_table, fmix64
from xmr.inference.index import batch_threads, run_with_threads
from xmr.inference.kernels_hash import probe
from xmr.validation import InputError

__all__ = ["RerankConfig", "Reranker", "RERANK_DIR", "pack_pairs", "query_table", "score_rows", "blend_topk",
           "rerank_one", "rerank_rows", "rerank_batch", "group_table", "GroupTable", "group_scores",
           "rerank_grouped", "RERANK_FORMAT", "RERANK_VERSION"]

RERANK_FORMAT = "xmr.rerank"
RERANK_VERSION = 1
CONFIG_NAME = "rerank.json"
RERANK_DIR = "rerank"  # its folder inside a retriever directory
_ARRAYS = {"indptr": np.dtype(np.int64), "indices": np.dtype(np.int32), "data": np.dtype(np.float32)}
MAX_GROUP = 4096  # larger groups (a flat tree) would zero too big a block per query: no group table then


# ------------------------------------------------------------------------------------------------- kernels
_GOLDEN = 0x9E3779B1  # Fibonacci hashing: slot = ((f * _GOLDEN) mod 2**32) >> shift


def pack_pairs(indices: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Interleave CSR ids and float32 values as int32 pairs (id, value bits), 64-byte aligned."""
    from xmr.inference.hashlayout import aligned_empty

    pairs = aligned_empty(2 * indices.size, np.int32)
    pairs[0::2] = indices
    pairs[1::2] = np.asarray(data, dtype=np.float32).view(np.int32)
    return pairs


@njit(cache=True, nogil=True)
def query_table(q_idx, q_val):
    """Linear-probing hash table of the query's unique feature ids, at most 1/8 full: (keys int32, -1 empty;
    values float32; spill bool, set on the home slot of every key stored past it; shift of the hash). O(nnz(q))."""
    nq = q_idx.size
    bits = 4
    while (1 << bits) < 8 * nq:
        bits += 1
    mask = (1 << bits) - 1
    keys = np.full(1 << bits, -1, np.int32)
    vals = np.zeros(1 << bits, np.float32)
    spill = np.zeros(1 << bits, np.bool_)
    shift = 32 - bits
    for p in range(nq):
        h = ((np.int64(q_idx[p]) * _GOLDEN) & 0xFFFFFFFF) >> shift
        if keys[h] != -1:
            spill[h] = True
            while keys[h] != -1:
                h = (h + 1) & mask
        keys[h] = q_idx[p]
        vals[h] = q_val[p]
    return keys, vals, spill, shift


@njit(cache=True, nogil=True)
def score_rows(z_indptr, z_pairs, rows, q_idx, q_val, out):
    """out[j] = dot(Z[rows[j]], q) for a query given as sorted unique (q_idx int32, q_val float32); returns nothing.

    Z is CSR rows (z_indptr int64[L+1]) over interleaved (id, value bits) int32 pairs (:func:`pack_pairs`), ids
    unique per row; rows int32/int64[C]; out float64[C]. Per row, pass 1 looks every id up in the query's
    :func:`query_table` and notes the hits without a data-dependent branch (only ids whose home slot spilled
    probe further), pass 2 sums their products in float64 in row order (exactly a merge-join's sums); rows are
    prefetched four ahead. O(sum_j nnz(Z[rows[j]]) + nnz(q)) expected time, O(nnz(q)) scratch.
    """
    keys, vals, spill, shift = query_table(q_idx, q_val)
    mask = keys.size - 1
    zf = z_pairs.view(np.float32)
    n = rows.size
    pos = np.empty(q_idx.size + 1, np.int64)
    slot = np.empty(q_idx.size + 1, np.int64)
    for j in range(-4, n):
        if j + 4 < n:  # the whole row, one hint per cache line
            r4 = rows[j + 4]
            prefetch_lines(z_pairs, 2 * z_indptr[r4], 2 * z_indptr[r4 + 1])
        if j < 0:
            continue
        r = rows[j]
        c = 0
        for a in range(z_indptr[r], z_indptr[r + 1]):
            f = z_pairs[2 * a]
            h = ((np.int64(f) * _GOLDEN) & 0xFFFFFFFF) >> shift
            hit = keys[h] == f
            if not hit and spill[h]:
                g = (h + 1) & mask
                while keys[g] != -1:
                    if keys[g] == f:
                        h = g
                        hit = True
                        break
                    g = (g + 1) & mask
            pos[c] = a
            slot[c] = h
            c += hit
        s = 0.0
        for i in range(c):
            s += np.float64(zf[2 * pos[i] + 1]) * np.float64(vals[slot[i]])
        out[j] = s


@njit(cache=True, nogil=True)
def group_scores(tab, mask, ent, group, offset, gsize, d, rows, q_idx, q_val, out):
    """out[j] = dot(Z[rows[j]], q), the same float64 sums as :func:`score_rows`, through a :func:`group_table`.

    The candidates' groups (the label tree's leaves: beam search returns labels from a few of them) are found
    in first-appearance order and given one float64 block each; every (group, query feature) row of the table
    is added into its group's block, so the cost is the query's nonzeros times the distinct groups, not the
    candidates' row lengths. Query features ascend and are added in order, so each label's sum is score_rows's
    (its row's hits in feature order, from 0.0). Lookups are pipelined as in beam search (hash and prefetch the
    bucket of pair p, probe pair p-8 and prefetch its row, accumulate pair p-16). O(C * groups + groups *
    nnz(q) + touched row entries) time, O(C + groups * nnz(q) + block sizes) scratch.
    """
    n = rows.size
    nq = q_idx.size
    ug = np.empty(max(n, 1), np.int64)
    ustart = np.empty(max(n, 1), np.int64)
    at = np.empty(max(n, 1), np.int64)
    nu = 0
    total = 0
    for j in range(n):
        g = group[rows[j]]
        u = nu
        for i in range(nu):  # few groups: a linear scan beats hashing them
            if ug[i] == g:
                u = i
                break
        if u == nu:
            ug[nu] = g
            ustart[nu] = total
            total += gsize[g]
            nu += 1
        at[j] = ustart[u] + offset[rows[j]]
    acc = np.zeros(max(total, 1), np.float64)
    entf = ent.view(np.float32)
    npairs = nu * nq
    keys = np.empty(max(npairs, 1), np.int64)
    slot = np.empty(max(npairs, 1), np.int64)
    D = 8
    for p in range(npairs + 2 * D):
        if p < npairs:
            key = ug[p // nq] * d + q_idx[p % nq]
            bw = np.int64(fmix64(key) & np.uint64(mask)) << 3
            keys[p] = key
            slot[p] = bw
            prefetch(tab, bw)
        r = p - D
        if 0 <= r < npairs:
            w = probe(tab, 0, mask, slot[r], keys[r])
            slot[r] = w
            if w >= 0:
                e0 = 2 * (tab[w] & 0xFFFFFFFF)
                prefetch_lines(ent, e0, e0 + 2 * (tab[w] >> 32))
        a = p - 2 * D
        if 0 <= a < npairs and slot[a] >= 0:
            w = slot[a]
            xv = np.float64(q_val[a % nq])
            m = ustart[a // nq]
            e0 = tab[w] & 0xFFFFFFFF
            for e in range(e0, e0 + (tab[w] >> 32)):
                acc[m + ent[2 * e]] += xv * np.float64(entf[2 * e + 1])
    for j in range(n):
        out[j] = acc[at[j]]


@njit(cache=True, nogil=True)
def rerank_grouped(tab, mask, ent, group, offset, gsize, d, q_idx, q_val, ids, scores, weight, k, out_ids, out_sc):
    """:func:`rerank_one` with the cosines from :func:`group_scores` (the same results, fewer memory reads)."""
    cos = np.empty(ids.size, dtype=np.float64)
    group_scores(tab, mask, ent, group, offset, gsize, d, ids, q_idx, q_val, cos)
    return blend_topk(ids, scores, cos, weight, k, out_ids, out_sc)


@njit(cache=True, nogil=True)
def blend_topk(ids, scores, cos, weight, k, out_ids, out_sc):
    """Blend (1 - weight) * scores + weight * cos, sort descending (stable: ties keep input order), keep top k.

    ids int32[C], scores float32[C], cos float64[C]; writes min(k, C) entries into out_ids int32 / out_sc
    float32 and returns that count. O(C log C).
    """
    n = ids.size
    final = np.empty(n, dtype=np.float64)
    for j in range(n):
        final[j] = (1.0 - weight) * np.float64(scores[j]) + weight * cos[j]
    order = np.argsort(-final, kind="mergesort")
    m = min(k, n)
    for j in range(m):
        o = order[j]
        out_ids[j] = ids[o]
        out_sc[j] = final[o]
    return m


@njit(cache=True, nogil=True)
def rerank_one(z_indptr, z_pairs, q_idx, q_val, ids, scores, weight, k, out_ids, out_sc):
    """Re-score one query's candidates (ids, scores: beam-search output) and write its top k; returns the count.

    :func:`score_rows` then :func:`blend_topk`: O(sum over candidates of nnz(Z[c]) + nnz(q) + C log C).
    """
    cos = np.empty(ids.size, dtype=np.float64)
    score_rows(z_indptr, z_pairs, ids, q_idx, q_val, cos)
    return blend_topk(ids, scores, cos, weight, k, out_ids, out_sc)


@njit(cache=True, nogil=True)
def rerank_rows(z_indptr, z_pairs, q_indptr, q_indices, q_data, c_indptr, c_ids, c_scores, weight, k,
                out_indptr, out_ids, out_sc):
    """:func:`rerank_batch` on the calling thread only (small batches: waking the thread pool costs more)."""
    for i in range(q_indptr.size - 1):
        a = c_indptr[i]
        b = c_indptr[i + 1]
        o = out_indptr[i]
        rerank_one(z_indptr, z_pairs, q_indices[q_indptr[i]:q_indptr[i + 1]],
                   q_data[q_indptr[i]:q_indptr[i + 1]], c_ids[a:b], c_scores[a:b], weight, k,
                   out_ids[o:out_indptr[i + 1]], out_sc[o:out_indptr[i + 1]])


@njit(cache=True, nogil=True, parallel=True)
def rerank_batch(z_indptr, z_pairs, q_indptr, q_indices, q_data, c_indptr, c_ids, c_scores, weight, k,
                 out_indptr, out_ids, out_sc):
    """:func:`rerank_one` for every query i in parallel: query i is CSR row i of (q_*), its candidates span
    c_indptr[i]..c_indptr[i+1] of (c_ids, c_scores), its output out_indptr[i]..out_indptr[i+1] of (out_ids,
    out_sc) (out_indptr[i+1] - out_indptr[i] = min(k, its candidates)).

    O(sum over queries of their :func:`rerank_one` cost) work spread over the numba threads. Never call this
    from another cached njit function (numba 0.68 can crash reloading such a cache); call it from Python.
    """
    n = q_indptr.size - 1
    for i in prange(n):
        a = c_indptr[i]
        b = c_indptr[i + 1]
        ids = c_ids[a:b]
        cos = np.empty(b - a, dtype=np.float64)
        score_rows(z_indptr, z_pairs, ids, q_indices[q_indptr[i]:q_indptr[i + 1]],
                   q_data[q_indptr[i]:q_indptr[i + 1]], cos)
        o = out_indptr[i]
        blend_topk(ids, c_scores[a:b], cos, weight, k, out_ids[o:out_indptr[i + 1]], out_sc[o:out_indptr[i + 1]])


# ------------------------------------------------------------------------------------------- group table
@dataclass(frozen=True)
class GroupTable:
    """Z re-keyed by (label group, feature) for :func:`group_scores` (see :func:`group_table`)."""

    groups: np.ndarray  # int64[L]: the group of each label (as given)
    tab: np.ndarray  # int64 buckets of 4 (key, payload) slots; payload = row length << 32 | first entry
    mask: int  # buckets - 1
    ent: np.ndarray  # int32 (offset within the group, float32 value bits) pairs, rows in key order
    offset: np.ndarray  # int64[L]: each label's place in its group (groups ordered by label id)
    gsize: np.ndarray  # int64[groups]

    @property
    def nbytes(self) -> int:
        """Memory held by the table."""
        return self.tab.nbytes + self.ent.nbytes + self.offset.nbytes + self.gsize.nbytes


def group_table(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, groups: np.ndarray, d: int
                ) -> GroupTable | None:
    """Z (CSR arrays, L x d) as rows keyed by (group of the label, feature), in a cache-line hash table at most
    half full (the beam-search layout's scheme, ``xmr.inference.hashlayout``); None when a group holds more than
    MAX_GROUP labels. O(nnz log nnz) to build, ~25 MB for the catalogue's 1.1M nonzeros."""
    groups = np.asarray(groups, dtype=np.int64)
    L = indptr.size - 1
    if groups.shape != (L,) or (L and groups.min() < 0):
        raise InputError(f"rerank groups: need one group id >= 0 per label ({L}), got shape {groups.shape}")
    gsize = np.bincount(groups, minlength=1).astype(np.int64)
    if gsize.max(initial=0) > MAX_GROUP:
        return None
    by_group = np.argsort(groups, kind="stable")
    offset = np.empty(L, dtype=np.int64)
    offset[by_group] = np.arange(L) - np.r_[0, np.cumsum(gsize)[:-1]][groups[by_group]]
    lab = np.repeat(np.arange(L, dtype=np.int64), np.diff(indptr))
    key = groups[lab] * d + indices
    off = offset[lab]
    order = np.lexsort((off, key))
    key, off, val = key[order], off[order], np.asarray(data, dtype=np.float32)[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, dtype=np.int64)
    if key.size >= 2**32:
        raise InputError("rerank: Z has more than 2**32 nonzeros, too many for the group table")
    pay = (np.diff(np.r_[starts, key.size]).astype(np.int64) << 32) | starts.astype(np.int64)
    nbuckets = bucket_count(starts.size)
    tab = aligned_empty(nbuckets * WORDS, np.int64)
    tab[:] = -1
    fill_table(tab, 0, nbuckets - 1, key[starts], pay)
    tab.flags.writeable = False
    return GroupTable(groups, tab, nbuckets - 1, pack_pairs(off.astype(np.int32), val), offset, gsize)


# ------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class RerankConfig:
    """How many beam-search candidates to re-score (``candidates``) and the cosine's share of the blend."""

    candidates: int = 100
    weight: float = 0.5

    def __post_init__(self) -> None:
        c = self.candidates
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1:
            raise InputError(f"rerank candidates must be a positive int, got {c!r}")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float, np.floating, np.integer)) or not \
                (math.isfinite(float(w)) and 0.0 <= float(w) <= 1.0):
            raise InputError(f"rerank weight must be a number in [0, 1], got {w!r}")
        object.__setattr__(self, "candidates", int(c))
        object.__setattr__(self, "weight", float(w))

    @classmethod
    def coerce(cls, value: RerankConfig | Mapping[str, Any]) -> RerankConfig:
        """A RerankConfig from itself or a mapping {"candidates", "weight"} (InputError on anything else)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"candidates", "weight"}
            if unknown:
                raise InputError(f"rerank: unknown keys {sorted(unknown)} (expected 'candidates', 'weight')")
            return cls(**value)
        raise InputError(f"rerank must be a RerankConfig or a dict {{'candidates', 'weight'}}, got "
                         f"{type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready {"candidates", "weight"}."""
        return {"candidates": self.candidates, "weight": self.weight}


# ----------------------------------------------------------------------------------------------- reranker
class Reranker:
    """Label-text features Z (L x d CSR, rows L2-normalised) and a :class:`RerankConfig`."""

    def __init__(self, Z: sp.csr_matrix, config: RerankConfig | Mapping[str, Any]) -> None:
        """Take Z as CSR (converted to int64 indptr, int32 sorted indices, float32 data; rows used as given)."""
        self.config = RerankConfig.coerce(config)
        if not sp.issparse(Z):
            raise InputError(f"rerank: Z must be a scipy sparse matrix, got {type(Z).__name__}")
        Z = Z.tocsr()
        if not Z.has_canonical_format:  # the kernels need sorted unique ids per row
            Z = Z.copy()
            Z.sum_duplicates()
        self.shape = (int(Z.shape[0]), int(Z.shape[1]))
        self.indptr = np.asarray(Z.indptr, dtype=np.int64)
        self.indices = np.asarray(Z.indices, dtype=np.int32)
        self.data = np.asarray(Z.data, dtype=np.float32)
        self.pairs = pack_pairs(self.indices, self.data)
        self.grouped: GroupTable | None = None

    @classmethod
    def _from_arrays(cls, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int],
                     config: RerankConfig, pairs: np.ndarray | None = None,
                     grouped: GroupTable | None = None) -> Reranker:
        self = cls.__new__(cls)
        self.config, self.shape, self.indptr, self.indices, self.data = config, shape, indptr, indices, data
        self.pairs = pack_pairs(indices, data) if pairs is None else pairs
        self.grouped = grouped
        return self

    def with_config(self, config: RerankConfig | Mapping[str, Any]) -> Reranker:
        """The same Z (shared, not copied) under another configuration."""
        return Reranker._from_arrays(self.indptr, self.indices, self.data, self.shape, RerankConfig.coerce(config),
                                     self.pairs, self.grouped)

    def group_by(self, groups: np.ndarray) -> Reranker:
        """Score single queries through a :func:`group_table` of Z by these label groups (the label tree's
        leaves: the retriever passes each label's parent); the same results, less memory read. Returns self.

        On the catalogue (100 candidates from ~8 leaves, queries of ~21 nonzeros) a query then reads ~1,600
        entries of Z in ~160 lookups instead of the candidates' ~11,000; without a usable grouping (a group
        over MAX_GROUP labels) the candidates' rows are scanned as before."""
        groups = np.asarray(groups, dtype=np.int64)
        if self.grouped is None or not np.array_equal(self.grouped.groups, groups):
            self.grouped = group_table(self.indptr, self.indices, self.data, groups, self.shape[1])
        return self

    @property
    def candidates(self) -> int:
        """Number of beam-search candidates to fetch and re-score."""
        return self.config.candidates

    @property
    def nnz(self) -> int:
        """Stored entries of Z."""
        return int(self.indices.size)

    def rerank_one(self, q_idx: np.ndarray, q_val: np.ndarray, ids: np.ndarray, scores: np.ndarray, k: int
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Top k of one query's candidates after blending: ``(ids int32, scores float32)``, best first."""
        ids = np.asarray(ids, dtype=np.int32)
        out_ids = np.empty(min(k, ids.size), dtype=np.int32)
        out_sc = np.empty(out_ids.size, dtype=np.float32)
        q_idx, q_val = np.asarray(q_idx, dtype=np.int32), np.asarray(q_val, dtype=np.float32)
        scores = np.asarray(scores, dtype=np.float32)
        g = self.grouped
        if g is None:
            rerank_one(self.indptr, self.pairs, q_idx, q_val, ids, scores, self.config.weight, k, out_ids, out_sc)
        else:
            rerank_grouped(g.tab, g.mask, g.ent, g.groups, g.offset, g.gsize, self.shape[1], q_idx, q_val, ids,
                           scores, self.config.weight, k, out_ids, out_sc)
        return out_ids, out_sc

    def rerank_batch(self, Q: sp.csr_matrix, P: sp.csr_matrix, k: int, threads: int = -1) -> sp.csr_matrix:
        """Top k of each row's candidates (P: beam-search output, row i for query row i of Q) as CSR, best first.

        Entries of each output row are in rank order (not sorted by column), like ``XLinearModel.predict``.
        ``threads`` < 1: all numba threads; batches under 32 rows run on the calling thread (as the engine's
        beam search does); results never depend on the thread count.
        """
        if not Q.has_sorted_indices:
            Q = Q.copy()
            Q.sort_indices()
        c_indptr = np.asarray(P.indptr, dtype=np.int64)
        out_indptr = np.zeros(Q.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.minimum(np.diff(c_indptr), k), out=out_indptr[1:])
        out_ids = np.empty(int(out_indptr[-1]), dtype=np.int32)
        out_sc = np.empty(out_ids.size, dtype=np.float32)
        args = (self.indptr, self.pairs, np.asarray(Q.indptr, dtype=np.int64),
                np.asarray(Q.indices, dtype=np.int32), np.asarray(Q.data, dtype=np.float32), c_indptr,
                np.asarray(P.indices, dtype=np.int32), np.asarray(P.data, dtype=np.float32), self.config.weight, k,
                out_indptr, out_ids, out_sc)
        nthreads = batch_threads(threads, Q.shape[0])
        if nthreads == 1:
            rerank_rows(*args)
        else:
            run_with_threads(nthreads, rerank_batch, *args)
        return sp.csr_matrix((out_sc, out_ids, out_indptr), shape=P.shape)

    def warm(self) -> Reranker:
        """Compile (or load from cache) the kernels now, so the first query is fast; returns self."""
        ids = np.zeros(min(1, self.shape[0]), dtype=np.int32)
        self.rerank_one(np.zeros(0, np.int32), np.zeros(0, np.float32), ids, np.zeros(ids.size, np.float32), 1)
        n = 32  # enough rows for the parallel kernel, so both batch kernels are compiled/loaded here
        Q = sp.csr_matrix((n, self.shape[1]), dtype=np.float32)
        P = sp.csr_matrix((np.zeros(n * ids.size, np.float32), np.repeat(ids, n), np.arange(n + 1) * ids.size),
                          shape=(n, self.shape[0]))
        self.rerank_batch(Q, P, 1, threads=2)
        self.rerank_batch(Q[:1], P[:1], 1)
        return self

    # ------------------------------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> None:
        """Write ``rerank.json`` and Z's three arrays into directory ``path`` (created; not atomic by itself)."""
        from xmr.model_io import save_npy

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {name: save_npy(path / f"{name}.npy", np.asarray(getattr(self, name), dtype=dt))
                  for name, dt in _ARRAYS.items()}
        doc = {"format": RERANK_FORMAT, "version": RERANK_VERSION, **self.config.to_dict(),
               "shape": list(self.shape), "nnz": self.nnz, "arrays": arrays}
        with open(path / CONFIG_NAME, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, shape: tuple[int, int] | None = None) -> Reranker:
        """Load and validate a saved reranker (ModelFormatError naming the file); arrays memory-mapped when asked.

        ``shape`` (labels, features), when given, must match the saved Z.
        """
        from xmr.model_io import ModelFormatError, load_array, read_json_object

        path = Path(path)
        cpath = path / CONFIG_NAME
        doc = read_json_object(cpath)
        if doc.get("format") != RERANK_FORMAT:
            raise ModelFormatError(f"{cpath}: not an {RERANK_FORMAT} file")
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= RERANK_VERSION:
            raise ModelFormatError(f"{cpath}: unsupported version {version!r} (this xmr reads 1..{RERANK_VERSION})")
        try:
            config = RerankConfig(doc.get("candidates"), doc.get("weight"))  # type: ignore[arg-type]
        except InputError as e:
            raise ModelFormatError(f"{cpath}: {e}") from None
        dims = doc.get("shape")
        if not (isinstance(dims, list) and len(dims) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                  and x >= 0 for x in dims)):
            raise ModelFormatError(f"{cpath}: field 'shape' must be [labels, features], got {dims!r}")
        L, d = dims
        if shape is not None and (L, d) != tuple(shape):
            raise ModelFormatError(f"{cpath}: Z is {L} x {d} but the retriever has {shape[0]} labels x "
                                   f"{shape[1]} features")
        specs = doc.get("arrays")
        if not isinstance(specs, dict):
            raise ModelFormatError(f"{cpath}: field 'arrays' is missing")
        arr = {}
        for name, dt in _ARRAYS.items():
            rel = f"{name}.npy"
            try:
                a = load_array(path, rel, specs.get(name), mmap)
            except ModelFormatError as e:
                msg = str(e)
                raise ModelFormatError(msg if msg.startswith(str(path)) else f"{path}/{msg}") from None
            if a.dtype != dt or a.ndim != 1:
                raise ModelFormatError(f"{path / rel}: holds {a.dtype}{list(a.shape)}, expected 1-D {dt}")
            arr[name] = a
        _check_csr(arr["indptr"], arr["indices"], arr["data"], L, d, path)
        return cls._from_arrays(arr["indptr"], arr["indices"], arr["data"], (L, d), config)


def _check_csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, L: int, d: int, path: Path) -> None:
    """Z's arrays describe an L x d CSR with sorted unique in-range ids and finite values (ModelFormatError)."""
    from xmr.model_io import ModelFormatError

    ip = np.asarray(indptr)
    if ip.size != L + 1:
        raise ModelFormatError(f"{path / 'indptr.npy'}: {ip.size} entries, expected {L + 1} (labels + 1)")
    if (L >= 0 and (int(ip[0]) != 0 or int(ip[-1]) != indices.size)) or (np.diff(ip) < 0).any():
        raise ModelFormatError(f"{path / 'indptr.npy'}: must rise from 0 to nnz={indices.size}")
    if data.size != indices.size:
        raise ModelFormatError(f"{path / 'data.npy'}: {data.size} values for {indices.size} indices")
    if indices.size:
        ix = np.asarray(indices)
        if int(ix.min()) < 0 or int(ix.max()) >= d:
            raise ModelFormatError(f"{path / 'indices.npy'}: feature ids out of range [0, {d})")
        rising = np.diff(ix.astype(np.int64)) > 0
        rising[ip[1:-1][(ip[1:-1] > 0) & (ip[1:-1] < ix.size)] - 1] = True  # a row may restart low
        if not rising.all():
            raise ModelFormatError(f"{path / 'indices.npy'}: feature ids not sorted and unique within a row")
        if not np.isfinite(np.asarray(data)).all():
            raise ModelFormatError(f"{path / 'data.npy'}: non-finite values (NaN or inf)")
