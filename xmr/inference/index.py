"""BeamSearchIndex: XR-Linear beam search over a label tree, for batches and for single queries.

Semantics follow PECOS (xr-linear-reference.md section 3): level 0 scores all its nodes, each next level scores
the children of the previous beam; scores are transformed and combined by the post-processor; the top
``beam_size`` are kept at intermediate levels and the top ``topk`` at the last level.

Tie rule: candidates of a level are ordered by the previous beam (best first), each parent's children by
ascending node id (bottom level: ascending label id within a leaf); equal scores keep that order (a stable
sort by descending score). PECOS's nth_element may break exact ties differently.

Paths: sparse (CSR) queries, and dense ones that are mostly zeros, use the hash layout (``hashlayout``,
``kernels_hash``); really dense queries scan the candidates' CSC columns against the row (``kernels_scan``).
Levels that are small or dense enough are stored as dense d x K_t blocks instead of hash tables
(``hashlayout.plan_dense``); both paths score them by streaming the block rows of the query's nonzeros.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

from xmr.inference import kernels_hash as kh
from xmr.inference import kernels_scan as ks
from xmr.inference.constraint import NO_RANGES, LabelRanges, build_label_ranges
from xmr.inference.hashlayout import HashLayout, build_hash
from xmr.inference.layout import CompactLayout, build_compact, without_levels
from xmr.postprocess import DEFAULT, NAMES, postprocessor_code

# dense queries with at most 1/_SPARSE_ENOUGH nonzeros go through the sparse (hash) path
_SPARSE_ENOUGH = 16
_CODES = {name: postprocessor_code(name) for name in NAMES}
# single-query scratch sections, in kernels_hash.search_packed's order: (name, dtype)
_SCRATCH = (("acc", np.float32), ("keys", np.int64), ("slot", np.int64), ("pm", np.int64),
            ("buf_ids", np.int32), ("buf_sc", np.float32), ("out_ids", np.int32), ("out_sc", np.float32))


_NO_IDS, _NO_SCORES = np.zeros(0, np.int32), np.zeros(0, np.float32)  # start arrays of a search from the root


class QueryError(ValueError):
    """Queries that do not fit the model (wrong dimension, bad type, non-finite values) or bad search params."""


def _code(post_processor: str) -> int:
    code = _CODES.get(post_processor)
    return postprocessor_code(post_processor) if code is None else code  # raises on unknown names


def _root(code: int) -> float:
    return 1.0 if 1 <= code <= 5 else 0.0  # neutral parent: 1 for multiplying post-processors, else 0


def _check_params(beam_size: int, topk: int) -> None:
    if int(beam_size) < 1:
        raise QueryError(f"beam_size must be >= 1, got {beam_size}")
    if int(topk) < 1:
        raise QueryError(f"topk must be >= 1, got {topk}")


def _raise_kernel_status(status: int, d: int) -> None:
    if status == -1:
        raise QueryError(f"query has a feature id outside [0, {d}): wrong dimension for this model")
    if status == -2:
        raise QueryError("query holds non-finite values (NaN or inf)")


class _Scratch:
    """One thread's single-query buffers for a (beam, topk, max nnz) capacity, packed into one int64 array."""

    __slots__ = ("beam", "topk", "kbeam", "ktopk", "cap", "arr", "meta", "out_ids", "out_sc")

    def __init__(self, beam: int, topk: int, cap: int, max_cand: int) -> None:
        kk = max(beam, topk)
        counts = (max_cand, kk * cap, kk * cap, kk, 2 * kk, 2 * kk, topk, topk)
        self.meta = np.zeros(2 * len(_SCRATCH), dtype=np.int64)
        words = 0
        for i, ((_, dtype), n) in enumerate(zip(_SCRATCH, counts)):
            self.meta[2 * i], self.meta[2 * i + 1] = words, n
            words += -(-n // (8 // np.dtype(dtype).itemsize))
        self.arr = np.zeros(max(words, 1), dtype=np.int64)
        self.beam, self.topk, self.kbeam, self.ktopk, self.cap = beam, topk, beam, topk, cap
        a, n = self.meta[12], self.meta[13]
        self.out_ids = self.arr[a : a + -(-n // 2)].view(np.int32)[:n]
        a, n = self.meta[14], self.meta[15]
        self.out_sc = self.arr[a : a + -(-n // 2)].view(np.float32)[:n]


def batch_threads(threads: int | None, n: int) -> int:
    """Threads for a batch of n queries: ``threads`` (< 1 or None: all numba's), at most one per 16 queries."""
    maxt = numba.config.NUMBA_NUM_THREADS
    nthreads = maxt if threads is None or threads < 1 else min(int(threads), maxt)
    return min(nthreads, max(1, n // 16))  # tiny batches are not worth waking the thread pool


def _outputs(n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty((n, k), dtype=np.int32), np.empty((n, k), dtype=np.float32), np.zeros(n, dtype=np.int64)


class BeamSearchIndex:
    """Inference-ready XR-Linear model: built from ``(tree, weights, bias)``, immutable, thread-safe."""

    def __init__(self, compact: CompactLayout, fast: HashLayout) -> None:
        """Wrap prepared layouts; use :meth:`build`."""
        self._c = compact
        self._h = fast
        self._d = compact.nr_features
        self._local = threading.local()
        self._ranges: LabelRanges | None = None  # built on the first label-range query
        c = compact
        blocks = [int(c.max_chunk[t]) for t in range(c.depth) if fast.dense_levels and fast.dense_levels[t]]
        self._dense_args = (c.node_off, c.cptr, c.cptr_off, c.w_indptr, c.w_indices, c.w_data, c.bias_w, c.label_of,
                            fast.section("dense_off"), fast.section("dense"), max(blocks, default=1))

    # ---------------------------------------------------------------- build
    @classmethod
    def build(cls, tree, weights, bias: float, nr_features: int | None = None, dense="auto") -> BeamSearchIndex:
        """Validate the weights against the tree (and d, if given) and build the in-memory search layouts;
        ``dense`` picks the levels stored as dense blocks ("auto", True, False or one bool per level)."""
        compact = build_compact(tree, weights, float(bias), nr_features)
        fast = build_hash(compact, dense)
        return cls(without_levels(compact, fast.dense_levels), fast)

    @property
    def nr_features(self) -> int:
        """Query dimension d."""
        return self._d

    @property
    def nr_labels(self) -> int:
        """Number of labels L."""
        return self._c.level_sizes[-1]

    @property
    def nbytes(self) -> int:
        """Memory held by the search layouts, in bytes (compact CSC form of the hashed levels + hash layout)."""
        return self._c.nbytes + self._h.nbytes

    @property
    def dense_levels(self) -> tuple[bool, ...]:
        """Per level, whether the sparse-query kernels read it as a dense block (else through the hash table)."""
        return self._h.dense_levels

    def memory_report(self) -> dict[str, int]:
        """Bytes per part of the layouts: the compact CSC arrays and each section of the hash layout
        (``hash.dense``: the dense levels' blocks)."""
        return {"compact": self._c.nbytes, **{f"hash.{k}": v for k, v in self._h.sizes.items()}}

    def _max_candidates(self, beam: int) -> int:
        """Largest candidate list of any level for this beam (bounds the score-block scratch)."""
        sizes = (1,) + self._c.level_sizes
        return max(min(sizes[t + 1], min(beam, sizes[t]) * int(self._c.max_chunk[t])) for t in range(self._c.depth))

    def _scratch(self, beam: int, topk: int, nq: int) -> _Scratch:
        """This thread's single-query buffers, (re)made when the beam, topk or query size outgrows them."""
        s = getattr(self._local, "s", None)
        if s is None or s.beam != beam or s.topk != topk or s.cap < nq:
            kbeam, ktopk = self._clamp(int(beam), int(topk))
            s = self._local.s = _Scratch(kbeam, ktopk, max(nq, 64), self._max_candidates(kbeam))
            s.beam, s.topk = beam, topk
        return s

    # -------------------------------------------------------------- predict
    def predict(self, X, beam_size: int = 10, topk: int = 10, post_processor: str = DEFAULT,
                threads: int = -1) -> sp.csr_matrix:
        """Top-k labels of each query row: N x L CSR float32, each row's entries by descending score."""
        _check_params(beam_size, topk)
        code = _code(post_processor)
        root = np.float32(_root(code))
        d = self._d
        dense = not sp.issparse(X)
        if dense:
            X = np.asarray(X)
            if X.ndim == 1:
                X = X[None, :]
            if X.ndim != 2 or X.shape[1] != d:
                raise QueryError(f"queries have shape {X.shape}, the model expects (n, {d})")
            X = np.ascontiguousarray(X, dtype=np.float32)
            _raise_kernel_status(ks.check_dense(X), d)
            if np.count_nonzero(X) * _SPARSE_ENOUGH <= X.size:
                X = sp.csr_matrix(X)  # mostly zeros: the hash path beats scanning every candidate column
                dense = False
        if not dense:
            if X.ndim != 2 or X.shape[1] != d:
                raise QueryError(f"queries have shape {X.shape}, the model expects (n, {d})")
            X = sp.csr_matrix(X, dtype=np.float32)
            indptr, indices = X.indptr.astype(np.int64), X.indices.astype(np.int32)
            _raise_kernel_status(ks.check_sparse_rows(indptr, indices, X.data, d), d)
        n = X.shape[0]
        nthreads = batch_threads(threads, n)
        if dense:
            beam, k = self._clamp(int(beam_size), int(topk))
            out_ids, out_sc, out_n = _outputs(n, k)
            args = (X, *self._dense_args, beam, k, code, root)
            if nthreads == 1:
                ks.rows_dense(0, n, *args, out_ids, out_sc, out_n)
            else:
                run_with_threads(nthreads, ks.batch_dense, *args, 8 * nthreads, out_ids, out_sc, out_n)
        else:
            out_ids, out_sc, out_n = self._rows_sparse(indptr, indices, X.data, beam_size, topk, code, root, nthreads)
        return _to_csr(out_ids, out_sc, out_n, self.nr_labels)

    def predict_rows(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, beam_size: int = 10,
                     topk: int = 10, post_processor: str = DEFAULT, threads: int = 1
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k of each query row of a CSR matrix given as its arrays (int64 indptr, int32 indices, float32 data):
        (ids int32[n, k], scores float32[n, k], counts int64[n]), row i's first counts[i] entries best first, as
        predict_one_sparse would give them; no scipy matrices. ``threads=1`` (the default) searches on the calling
        thread, so many threads may call it at once (the serving micro-batcher); more enter numba's thread pool
        (as in :meth:`predict`, -1: all)."""
        _check_params(beam_size, topk)
        code = _code(post_processor)
        indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        indices = np.ascontiguousarray(indices, dtype=np.int32)
        data = np.ascontiguousarray(data, dtype=np.float32)
        if (indptr.ndim != 1 or indptr.size < 1 or indptr[0] != 0 or indptr[-1] != indices.size
                or data.size != indices.size or (np.diff(indptr) < 0).any()):
            raise QueryError(f"query rows: indptr must rise from 0 to the {indices.size} indices (and values)")
        _raise_kernel_status(ks.check_sparse_rows(indptr, indices, data, self._d), self._d)
        return self._rows_sparse(indptr, indices, data, beam_size, topk, code, np.float32(_root(code)),
                                 batch_threads(threads, indptr.size - 1))

    def _rows_sparse(self, indptr, indices, data, beam_size: int, topk: int, code: int, root: np.float32,
                     nthreads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The hash-layout search of checked CSR query rows, on ``nthreads`` threads."""
        n = indptr.size - 1
        beam, k = self._clamp(int(beam_size), int(topk))
        out_ids, out_sc, out_n = _outputs(n, k)
        if n:
            max_nq = int(np.diff(indptr).max())
            args = (indptr, indices, data, self._d, self._h.blob, self._h.meta, beam, k, code, root,
                    self._max_candidates(beam), max_nq)
            if nthreads == 1:
                kh.rows_sparse(0, n, *args, out_ids, out_sc, out_n)
            else:
                # a few blocks per thread balance uneven queries; results never depend on the split
                run_with_threads(nthreads, kh.batch_sparse, *args, 8 * nthreads, out_ids, out_sc, out_n)
        return out_ids, out_sc, out_n

    def _clamp(self, beam: int, topk: int) -> tuple[int, int]:
        """Beam and topk capped by what the tree can hold (so huge values do not size huge buffers)."""
        sizes = self._c.level_sizes
        return min(beam, max(sizes[:-1], default=1)), min(topk, sizes[-1])

    def predict_one(self, x, beam_size: int = 10, topk: int = 10,
                    post_processor: str = DEFAULT) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of one query (1 x d CSR row or 1-D dense float32): (labels int32[k], scores float32[k])."""
        # hot path: a few attribute reads and one kernel call; the kernel validates ids and values
        fmt = getattr(x, "format", None)
        if fmt == "csr" and x.shape[0] == 1:
            if x.shape[1] != self._d:
                raise QueryError(f"query has shape {x.shape}, the model expects (1, {self._d})")
            return self.predict_one_sparse(x.indices, x.data, beam_size, topk, post_processor)
        if isinstance(x, np.ndarray) and x.ndim == 1 and x.shape[0] == self._d:
            qi = np.flatnonzero(x)  # NaN and inf are nonzero, so the kernel still sees and rejects them
            if qi.size * _SPARSE_ENOUGH <= self._d:
                return self.predict_one_sparse(qi, x[qi], beam_size, topk, post_processor)
        if isinstance(x, np.ndarray) and x.ndim == 1:
            x = x[None, :]
        elif not isinstance(x, np.ndarray) and not sp.issparse(x):
            raise QueryError(f"query must be a 1 x d CSR row or a dense float32 array, got {type(x).__name__}")
        if x.shape[0] != 1:
            raise QueryError(f"predict_one takes one query, got shape {x.shape}")
        res = self.predict(x, beam_size, topk, post_processor, threads=1)
        row = slice(res.indptr[0], res.indptr[1])
        return res.indices[row].astype(np.int32), res.data[row].astype(np.float32)

    def predict_one_sparse(self, qi: np.ndarray, qv: np.ndarray, beam_size: int = 10, topk: int = 10,
                           post_processor: str = DEFAULT, label_range: tuple[int, int] | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
        """predict_one for a query given as feature ids and values, without building a scipy row.

        ``label_range=(lo, hi)`` restricts the search to labels with ids in [lo, hi): the beam only enters nodes
        that hold one (see ``constraint``), so all of it is spent where results can come from.
        """
        lo, hi, ranges = 0, -1, NO_RANGES
        if label_range is not None:
            lo, hi = self._check_range(label_range)
            if lo == hi:
                return np.zeros(0, np.int32), np.zeros(0, np.float32)
            ranges = self.label_ranges().packed
        return self._search_one(qi, qv, beam_size, topk, post_processor, ranges, lo, hi, 0, _NO_IDS, _NO_SCORES)

    def continue_one_sparse(self, qi: np.ndarray, qv: np.ndarray, level: int, start_ids: np.ndarray,
                            start_scores: np.ndarray, beam_size: int = 10, topk: int = 10,
                            post_processor: str = DEFAULT) -> tuple[np.ndarray, np.ndarray]:
        """predict_one_sparse from level ``level`` on, given the beam above it: ``start_ids`` (nodes of level
        ``level - 1``, best first, as the beam search left them) and their ``start_scores``. The scores are those
        the whole search would compute, so a model split by subtrees answers exactly as the unsplit one."""
        if not 1 <= level < self._c.depth:
            raise QueryError(f"level must be in 1..{self._c.depth - 1}, got {level}")
        sids = np.ascontiguousarray(start_ids, dtype=np.int32)
        ssc = np.ascontiguousarray(start_scores, dtype=np.float32)
        above = self._c.level_sizes[level - 1]
        most = min(int(beam_size), above)  # the scratch's score blocks hold a beam's children, no more
        if sids.ndim != 1 or sids.shape != ssc.shape or not 1 <= sids.size <= most:
            raise QueryError(f"the start beam needs 1..{most} node ids (at most beam_size) with one score each, got "
                             f"{sids.size} ids and {ssc.size} scores")
        if sids.min() < 0 or sids.max() >= above or not np.isfinite(ssc).all():
            raise QueryError(f"start beam node ids must lie in [0, {above}) with finite scores")
        return self._search_one(qi, qv, beam_size, topk, post_processor, NO_RANGES, 0, -1, level, sids, ssc)

    def _search_one(self, qi, qv, beam_size: int, topk: int, post_processor: str, ranges: np.ndarray, lo: int,
                    hi: int, t0: int, sids: np.ndarray, ssc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        code = _CODES.get(post_processor)
        if code is None:
            code = postprocessor_code(post_processor)
        if qi.__class__ is not np.ndarray or qv.__class__ is not np.ndarray:
            qi, qv = np.asarray(qi), np.asarray(qv)
        # the kernel reads qv[q] for every q < qi.size without bounds checks: a shorter qv would be read past its end
        if qi.ndim != 1 or qi.shape != qv.shape or qi.dtype.kind not in "iu":
            raise QueryError(f"query feature ids and values must be 1-D arrays of one length with integer ids, got "
                             f"{qi.dtype}{list(qi.shape)} ids and {qv.dtype}{list(qv.shape)} values")
        if qi.dtype != np.int32 or qv.dtype != np.float32:
            qi, qv = qi.astype(np.int32), qv.astype(np.float32)
        s = self._local.__dict__.get("s")
        if s is None or s.beam != beam_size or s.topk != topk or s.cap < qi.size:
            _check_params(beam_size, topk)
            s = self._scratch(beam_size, topk, qi.size)
        n = kh.search_packed(qi, qv, self._d, self._h.blob, self._h.meta, s.arr, s.meta, s.kbeam, s.ktopk, code,
                             1.0 if 1 <= code <= 5 else 0.0, ranges, lo, hi, t0, sids, ssc)
        if n < 0:
            _raise_kernel_status(n, self._d)
        return s.out_ids[:n].copy(), s.out_sc[:n].copy()

    def single_query_args(self, beam_size: int, topk: int, post_processor: str = DEFAULT) -> tuple:
        """The arguments of ``kernels_hash.search_packed`` after the query's features that a single-query search
        on this thread takes (d, blob, meta, scratch, scratch meta, its room for query features, beam, topk, code,
        root), for kernels that search inside a larger call (``xmr.fused_search``)."""
        code = _code(post_processor)
        s = self._local.__dict__.get("s")
        if s is None or s.beam != beam_size or s.topk != topk:
            _check_params(beam_size, topk)
            s = self._scratch(beam_size, topk, 0)
        return self._d, self._h.blob, self._h.meta, s.arr, s.meta, s.cap, s.kbeam, s.ktopk, code, _root(code)

    def label_ranges(self) -> LabelRanges:
        """The per-node label-id layout label-range queries search (built once, on first use)."""
        r = self._ranges
        if r is None:  # two threads may both build it: the same arrays, and the assignment is atomic
            r = self._ranges = build_label_ranges(self._c)
        return r

    def _check_range(self, label_range: tuple[int, int]) -> tuple[int, int]:
        try:
            lo, hi = (int(v) for v in label_range)
        except (TypeError, ValueError):
            raise QueryError(f"label_range must be a (lo, hi) pair of ints, got {label_range!r}") from None
        if not 0 <= lo <= hi <= self.nr_labels:
            raise QueryError(f"label_range must satisfy 0 <= lo <= hi <= {self.nr_labels}, got ({lo}, {hi})")
        return lo, hi

    def warm(self) -> BeamSearchIndex:
        """Compile or load every kernel by running each once on a tiny input; returns self."""
        x = np.zeros((1, self._d), dtype=np.float32)
        for threads in (1, -1):  # serial and parallel batch kernels, column-scan and hash paths
            self.predict(np.ones((32, self._d), dtype=np.float32), 1, 1, threads=threads)
            self.predict(sp.csr_matrix((32, self._d), dtype=np.float32), 1, 1, threads=threads)
        self.predict_one(sp.csr_matrix(x), 1, 1)
        self.predict_one(x[0], 1, 1)
        return self


def run_with_threads(nthreads: int, kernel: Callable[..., Any], *args: Any) -> None:
    """Call a parallel numba kernel on ``nthreads`` threads, restoring numba's thread count afterwards."""
    prev = numba.get_num_threads()
    numba.set_num_threads(nthreads)
    try:
        kernel(*args)
    finally:
        numba.set_num_threads(prev)


def _to_csr(out_ids: np.ndarray, out_sc: np.ndarray, out_n: np.ndarray, nr_labels: int) -> sp.csr_matrix:
    n, k = out_ids.shape
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(out_n, out=indptr[1:])
    mask = np.arange(k)[None, :] < out_n[:, None]
    return sp.csr_matrix((out_sc[mask], out_ids[mask], indptr), shape=(n, nr_labels))
