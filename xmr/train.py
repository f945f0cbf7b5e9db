"""Level-by-level training of XR-Linear weights over a label tree (PECOS ``HierarchicalMLModel.train``).

Node j of level t with parent p trains one binary problem on ``I_j = {i : M_t[i,p] != 0} U {i : Y_t[i,j] != 0}``
(all rows at level 0), y = +1 where ``Y_t[i,j] != 0``, costs Cp * r_i / Cn. M_t is ``Y_{t-1}`` ("tfn"), the
binarised beam-search prediction of the trained levels 0..t-1 ("man"), or their union ("tfn+man").

Work is grouped by parent: each parent's rows (the union of its children's instance sets) are gathered once into a
compact local layout (:func:`xmr.solver.gather_local`) and all its children are solved on it, one parallel numba
call per level (per memory batch), jobs statically balanced over workers (longest first). Each worker writes its
pruned weights to its own buffer; a level's CSC is assembled from those, never from a dense ``K_t x d`` array.
Every job's result depends only on its own data, so weights do not depend on the thread count.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from indexing.tree import LabelTree
from xmr.solver import (LOSSES, PREFETCH_MIN_NNZ, as_float32_csr, gather_local, local_id_array, prune_weights,
                        solve_l2_svc, solve_lr)

log = logging.getLogger("xmr.train")

NEGATIVES = ("tfn", "man", "tfn+man")
_GATHER_BUDGET = 1 << 23  # entries of gathered rows held at once (12 bytes each), at least nnz(X)
_OUT_BUDGET = 1 << 23  # entries of pruned-weight buffers, shared by the workers (each gets at least one job's)


class TrainError(ValueError):
    """Bad training input or parameters."""


@dataclass
class TrainParams:
    """Per-level training parameters (PECOS ``MLModel.TrainParams`` plus negative mining)."""

    loss: str = "squared-hinge"
    Cp: float = 1.0
    Cn: float = 1.0
    bias: float = 1.0
    threshold: float = 0.1
    max_nonzeros_per_label: int | None = None
    negatives: str = "tfn"
    eps: float = 0.1
    max_iter: int = 100
    threads: int = -1
    man_beam_size: int = 10
    man_post_processor: str = "l3-hinge"

    def validate(self) -> None:
        """Raise :class:`TrainError` naming the first parameter out of range."""
        if self.loss not in LOSSES:
            raise TrainError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        if self.negatives not in NEGATIVES:
            raise TrainError(f"negatives must be one of {list(NEGATIVES)}, got {self.negatives!r}")
        for name in ("Cp", "Cn", "eps"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise TrainError(f"{name} must be a finite number > 0, got {v!r}")
        if not (isinstance(self.bias, (int, float)) and math.isfinite(self.bias)):
            raise TrainError(f"bias must be a finite number (<= 0 for no bias), got {self.bias!r}")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold) and self.threshold >= 0):
            raise TrainError(f"threshold must be a finite number >= 0, got {self.threshold!r}")
        m = self.max_nonzeros_per_label
        if m is not None and not (isinstance(m, (int, np.integer)) and m >= 0):
            raise TrainError(f"max_nonzeros_per_label must be None or an integer >= 0, got {m!r}")
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise TrainError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if not (isinstance(self.threads, (int, np.integer)) and (self.threads == -1 or self.threads >= 1)):
            raise TrainError(f"threads must be -1 (all cores) or an integer >= 1, got {self.threads!r}")
        if not (isinstance(self.man_beam_size, (int, np.integer)) and self.man_beam_size >= 1):
            raise TrainError(f"man_beam_size must be an integer >= 1, got {self.man_beam_size!r}")
        if not isinstance(self.man_post_processor, str):
            raise TrainError(f"man_post_processor must be a name, got {self.man_post_processor!r}")


# ----------------------------------------------------------------------------------------------- kernels
@njit(cache=True, nogil=True)
def _lpt_schedule(cost, ptr, jobs):
    """Assign jobs (sorted by cost, descending) greedily to the least-loaded of ``ptr.size - 1`` workers.

    Fills ``(ptr, jobs)``: worker w runs ``jobs[ptr[w]:ptr[w+1]]`` in that order. O(jobs x workers).
    """
    n = cost.size
    nworkers = ptr.size - 1
    load = np.zeros(nworkers, dtype=np.float64)
    owner = np.empty(n, dtype=np.int64)
    for j in range(n):
        best = 0
        for w in range(1, nworkers):
            if load[w] < load[best]:
                best = w
        owner[j] = best
        load[best] += cost[j]
    ptr[:] = 0
    for j in range(n):
        ptr[owner[j] + 1] += 1
    for w in range(nworkers):
        ptr[w + 1] += ptr[w]
    fill = ptr[:-1].copy()
    for j in range(n):
        jobs[fill[owner[j]]] = j
        fill[owner[j]] += 1


@njit(cache=True, nogil=True, parallel=True)
def _solve_jobs(plan, job_cost, wptr, wjobs, wdone, job_parent, job_col, prow_off, rows_cat, in_m, rp, ci, cv, sc, sqn,
                pnnz_off, uniq, pu, ypos_ptr, ypos_rows, ypos_rel, loss, cp, cn, beta, eps, max_iter, threshold,
                max_nnz, d, cap, out_idx, out_val, job_cnt, job_n, prefetch_min):
    """Solve and prune the remaining jobs of every worker; worker w appends to ``out_*[w*cap:(w+1)*cap]``.

    With ``plan``, first fills the schedule ``(wptr, wjobs)`` from ``job_cost`` (:func:`_lpt_schedule`; done here
    so that training loads one kernel fewer). A job (parent p, child col) trains on p's gathered rows; with a
    non-empty ``in_m`` only on the rows flagged there or positive for col. A worker stops early when its buffer
    cannot hold the next job's worst case; ``wdone[w]`` counts its finished jobs (call again, without ``plan``,
    after harvesting). Cost: sum over jobs of O(iterations x parent nnz).
    """
    if plan:
        _lpt_schedule(job_cost, wptr, wjobs)
    use_mask = in_m.size > 0
    nworkers = wptr.size - 1
    has_bias = beta > 0.0
    nb = 1 if has_bias else 0
    for wk in prange(nworkers):
        j0 = wptr[wk] + wdone[wk]
        j1 = wptr[wk + 1]
        maxn = 1
        maxu = 1
        for q in range(j0, j1):
            p = job_parent[wjobs[q]]
            maxn = max(maxn, prow_off[p + 1] - prow_off[p])
            maxu = max(maxu, pu[p])
        wbuf = np.empty(maxu + 1, dtype=np.float64)
        st = np.empty((maxn, 5), dtype=np.float64)
        index = np.empty(maxn, dtype=np.int32)
        ybuf = np.empty(maxn, dtype=np.float64)
        cbuf = np.empty(maxn, dtype=np.float64)
        sel_all = np.arange(maxn, dtype=np.int32)
        sel_buf = np.empty(maxn, dtype=np.int32)
        used = 0
        base = wk * cap
        for q in range(j0, j1):
            job = wjobs[q]
            p = job_parent[job]
            col = job_col[job]
            r0 = prow_off[p]
            n = prow_off[p + 1] - r0
            u = pu[p]
            if used + u + nb > cap:
                break
            rows = rows_cat[r0:r0 + n]
            y = ybuf[:n]
            c = cbuf[:n]
            y[:] = -1.0
            c[:] = cn
            for k in range(ypos_ptr[col], ypos_ptr[col + 1]):
                loc = np.searchsorted(rows, ypos_rows[k])
                y[loc] = 1.0
                c[loc] = cp * ypos_rel[k]
            if use_mask:
                m = 0
                for i in range(n):
                    if in_m[r0 + i] != 0 or y[i] > 0.0:
                        sel_buf[m] = i
                        m += 1
                sel = sel_buf[:m]
            else:
                sel = sel_all[:n]
            job_n[job] = sel.size
            w = wbuf[:u + nb]
            pf = pnnz_off[p + 1] - pnnz_off[p] >= prefetch_min
            if loss == 0:
                solve_l2_svc(rp[r0:r0 + n + 1], ci, cv, sc[r0:r0 + n], sqn[r0:r0 + n], sel, y, c, beta, eps, max_iter,
                             w, st, index, pf)
            else:
                solve_lr(rp[r0:r0 + n + 1], ci, cv, sc[r0:r0 + n], sqn[r0:r0 + n], sel, y, c, beta, eps, max_iter, w,
                         st, index, pf)
            uo = pnnz_off[p]
            cnt = prune_weights(w, has_bias, threshold, max_nnz, uniq[uo:uo + u], d, out_idx, out_val, base + used)
            job_cnt[job] = cnt
            used += cnt
            wdone[wk] += 1


# ------------------------------------------------------------------------------------------------ helpers
def _segments(indptr: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Indices of the concatenation of segments ``indptr[o]:indptr[o+1]`` for o in ``order``."""
    starts = indptr[order]
    lens = indptr[order + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offs = np.cumsum(lens) - lens
    return np.repeat(starts - offs, lens) + np.arange(total, dtype=np.int64)


def _gather_budget(x_nnz: int) -> int:
    """Entries of gathered parent rows held at once: as much as X itself, at least ``_GATHER_BUDGET``."""
    return max(x_nnz, _GATHER_BUDGET)


@contextmanager
def _num_threads(threads: int):
    """Set numba's thread count for the block (-1 = all), restoring the previous value after."""
    prev = numba.get_num_threads()
    n = numba.config.NUMBA_NUM_THREADS if threads == -1 else min(int(threads), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(prev)


def _check_inputs(X, Y, tree: LabelTree, relevance):
    """Validate and normalise (X, Y, relevance); return (csr or None, dense, Y csr pattern, R csr or None)."""
    if not isinstance(tree, LabelTree):
        raise TrainError(f"tree must be an indexing.tree.LabelTree, got {type(tree).__name__}")
    if sp.issparse(X):
        if X.ndim != 2:
            raise TrainError(f"X must be 2-D, got shape {X.shape}")
        if not np.issubdtype(X.dtype, np.floating):
            raise TrainError(f"X must hold floats (float32), got {X.dtype}")
    else:
        X = np.asarray(X)
        if X.ndim != 2 or not np.issubdtype(X.dtype, np.floating):
            raise TrainError(f"X must be a 2-D float32 array or sparse matrix, got {X.dtype} of shape {X.shape}")
    csr, dense = as_float32_csr(X)
    vals = csr.data if csr is not None else dense
    if not np.isfinite(vals).all():
        raise TrainError("X holds NaN or infinite values")
    n = X.shape[0]
    if not sp.issparse(Y):
        raise TrainError(f"Y must be a scipy sparse matrix (CSR), got {type(Y).__name__}")
    if Y.shape != (n, tree.nr_labels):
        raise TrainError(f"Y must have shape (N={n}, nr_labels={tree.nr_labels}), got {Y.shape}")
    Y = sp.csr_matrix(Y, copy=True)
    Y.sum_duplicates()
    if not np.isfinite(Y.data).all():
        raise TrainError("Y holds NaN or infinite values")
    Y.eliminate_zeros()
    Y.sort_indices()
    Yp = sp.csr_matrix((np.ones(Y.nnz, np.float32), Y.indices.astype(np.int32), Y.indptr.astype(np.int64)),
                       shape=Y.shape)
    R = None
    if relevance is not None:
        if not sp.issparse(relevance) or relevance.shape != Y.shape:
            raise TrainError(f"relevance must be a sparse matrix of Y's shape {Y.shape}")
        R = Yp.multiply(sp.csr_matrix(relevance)).tocsr()
        R.sort_indices()
        if R.nnz != Yp.nnz or not np.array_equal(R.indices, Yp.indices) or not np.array_equal(R.indptr, Yp.indptr):
            raise TrainError("relevance must hold a nonzero value at every nonzero of Y")
        if not (np.isfinite(R.data).all() and (R.data > 0).all()):
            raise TrainError("relevance values at Y's nonzeros must be finite and > 0")
        R = sp.csr_matrix((R.data.astype(np.float64), Yp.indices, Yp.indptr), shape=Y.shape)
    return csr, dense, Yp, R


def _binarise(M: sp.spmatrix) -> sp.csr_matrix:
    """Pattern of M's nonzeros as a CSR of float32 ones with sorted indices."""
    M = sp.csr_matrix(M)
    M.sum_duplicates()
    M.eliminate_zeros()
    M.sort_indices()
    return sp.csr_matrix((np.ones(M.nnz, np.float32), M.indices, M.indptr), shape=M.shape)


def _predict_upper_levels(X, tree: LabelTree, weights: list, t: int, params: TrainParams, threads: int):
    """Beam-search prediction (N x K_{t-1}) of the trained levels 0..t-1, used as matcher-aware negatives."""
    from xmr.inference import BeamSearchIndex

    sub = LabelTree([tree.parents(k) for k in range(t)])
    index = BeamSearchIndex.build(sub, weights[:t], params.bias, nr_features=X.shape[1])
    return index.predict(X, beam_size=params.man_beam_size, topk=params.man_beam_size,
                         post_processor=params.man_post_processor, threads=threads)


# ---------------------------------------------------------------------------------------------- training
def train_levels(X, Y, tree: LabelTree, params: TrainParams | None = None, relevance=None,
                 progress: bool = False) -> list[sp.csc_matrix]:
    """Train one weight matrix per tree level; ``weights[t]`` is (d+1 or d) x K_t CSC float32."""
    params = TrainParams() if params is None else params
    if not isinstance(params, TrainParams):
        raise TrainError(f"params must be a TrainParams, got {type(params).__name__}")
    params.validate()
    csr, dense, Yp, R = _check_inputs(X, Y, tree, relevance)
    data = _FeatureData(csr, dense)
    ys, rs = _level_labels(tree, Yp, R)
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(tree.level_sizes), disable=not progress, desc="train", unit="node")
    weights: list[sp.csc_matrix] = []
    try:
        with _num_threads(params.threads) as nworkers:
            for t in range(tree.depth):
                t0 = time.perf_counter()
                inst_ptr, inst_rows, in_m = _instance_sets(X if csr is None else csr, data.n, tree, weights, t, ys,
                                                           params, nworkers)
                ypos = ys[t].tocsc()
                ypos.sort_indices()
                if rs[t] is not None:
                    rel = rs[t].tocsc()
                    rel.sort_indices()
                    ypos_rel = rel.data.astype(np.float64)
                else:
                    ypos_rel = np.ones(ypos.nnz, dtype=np.float64)
                positives = (ypos.indptr.astype(np.int64), ypos.indices.astype(np.int32), ypos_rel)
                W, pairs = _train_level(data, inst_ptr, inst_rows, in_m, tree.children(t), positives, params,
                                        nworkers, bar)
                weights.append(W)
                log.info("level %d: %d nodes under %d parents, %d instance-node pairs, %d weights, %.2fs",
                         t, tree.level_sizes[t], inst_ptr.size - 1, pairs, W.nnz, time.perf_counter() - t0)
    finally:
        bar.close()
    return weights


class _FeatureData:
    """X as the kernels take it: CSR arrays (or a dense 2-D array) plus per-row nonzero counts."""

    def __init__(self, csr: sp.csr_matrix | None, dense: np.ndarray) -> None:
        if csr is not None:
            self.indptr, self.indices, self.data = csr.indptr, csr.indices, csr.data
            self.dense = dense  # empty placeholder
            self.n, self.d = csr.shape
            self.rownnz = np.diff(csr.indptr)
        else:
            self.indptr, self.indices = np.zeros(1, np.int64), np.zeros(0, np.int32)
            self.data = np.zeros(0, np.float32)
            self.dense = dense
            self.n, self.d = dense.shape
            self.rownnz = np.count_nonzero(dense, axis=1).astype(np.int64)
        self.nnz = int(self.rownnz.sum())


def _labels_upward(tree: LabelTree, Yp: sp.csr_matrix, R: sp.csr_matrix | None):
    """Yield (t, Y_t, R_t) from the label level up: Y_{t-1} = bin(Y_t C_t), R_{t-1} = R_t C_t (R None = unit)."""
    chain = tree.to_chain()
    y, r = Yp, R
    yield tree.depth - 1, y, r
    for t in range(tree.depth - 1, 0, -1):
        y = _binarise(y @ chain[t])
        if r is not None:
            r = (r @ chain[t]).tocsr()
            r.sort_indices()
        yield t - 1, y, r


def _level_labels(tree: LabelTree, Yp: sp.csr_matrix, R: sp.csr_matrix | None) -> tuple[list, list]:
    """Label pattern and relevance (None = unit) of every level."""
    ys: list = [None] * tree.depth
    rs: list = [None] * tree.depth
    for t, y, r in _labels_upward(tree, Yp, R):
        ys[t], rs[t] = y, r
    return ys, rs


def _instance_sets(X, n: int, tree: LabelTree, weights: list, t: int, ys: list, params: TrainParams,
                   nworkers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rows of each parent of level t (CSC-style ptr, rows ascending) and, for "man", a mined flag per row.

    With "man", a parent's rows are its mined rows plus the positives of any child; a row that is only a
    positive (flag 0) joins just the children it is positive for.
    """
    if t == 0:
        return np.array([0, n], dtype=np.int64), np.arange(n, dtype=np.int32), None
    m = ys[t - 1]
    if params.negatives != "tfn":
        man = _binarise(_predict_upper_levels(X, tree, weights, t, params, nworkers))
        if man.shape != m.shape:
            raise TrainError(f"matcher prediction has shape {man.shape}, expected {m.shape}")
        m = (man * 2 + m).tocsr() if params.negatives == "man" else _binarise(m + man)
    mc = m.tocsc()
    mc.sum_duplicates()
    mc.sort_indices()
    in_m = (mc.data >= 2).astype(np.int8) if params.negatives == "man" else None
    return mc.indptr.astype(np.int64), mc.indices.astype(np.int32), in_m


def _split_batches(order: np.ndarray, pnnz: np.ndarray, budget: int) -> list[np.ndarray]:
    """Consecutive runs of ``order`` whose gathered entries stay within ``budget`` (one parent at least)."""
    batches = []
    start = 0
    while start < order.size:
        stop = start + 1
        acc = pnnz[order[start]]
        while stop < order.size and acc + pnnz[order[stop]] <= budget:
            acc += pnnz[order[stop]]
            stop += 1
        batches.append(order[start:stop])
        start = stop
    return batches


def _train_level(data: _FeatureData, inst_ptr, inst_rows, in_m, children, positives, params: TrainParams,
                 nworkers: int, bar) -> tuple[sp.csc_matrix, int]:
    """Train all nodes of one level; return (CSC weights, number of instance-node pairs solved)."""
    ch_ptr, ch_idx = children
    ch_ptr = ch_ptr.astype(np.int64)
    ch_idx = ch_idx.astype(np.int64)
    nb = 1 if params.bias > 0 else 0
    nrow_p = np.diff(inst_ptr)
    csum = np.concatenate(([0], np.cumsum(data.rownnz[inst_rows], dtype=np.int64)))
    pnnz = csum[inst_ptr[1:]] - csum[inst_ptr[:-1]]
    nch = np.diff(ch_ptr)
    order = np.argsort(-(pnnz + nrow_p), kind="stable")  # biggest parents first: better load balance
    order = order[nch[order] > 0]
    pieces: list = []
    pairs = 0
    for batch in _split_batches(order, pnnz, _gather_budget(data.nnz)):
        prow_off = np.concatenate(([0], np.cumsum(nrow_p[batch]))).astype(np.int64)
        pnnz_off = np.concatenate(([0], np.cumsum(pnnz[batch]))).astype(np.int64)
        seg = _segments(inst_ptr, batch)
        rows_cat = inst_rows[seg]
        in_m_cat = in_m[seg] if in_m is not None else np.zeros(0, np.int8)
        ci = local_id_array(int(pnnz_off[-1]), data.d)
        layout = (ci,) + gather_local(data.indptr, data.indices, data.data, data.dense, data.d, rows_cat, prow_off,
                                      pnnz_off, nworkers, ci)
        job_parent = np.repeat(np.arange(batch.size, dtype=np.int64), nch[batch])
        job_col = ch_idx[_segments(ch_ptr, batch)]
        job_cost = (pnnz[batch] + nrow_p[batch]).astype(np.float64)[job_parent]
        pairs += _solve_batch(layout, prow_off, rows_cat, in_m_cat, pnnz_off, job_parent, job_col, job_cost,
                              positives, params, data.d, nb, nworkers, pieces, bar)
    return _assemble(pieces, data.d + nb, ch_idx.size), pairs


def _solve_batch(layout, prow_off, rows_cat, in_m_cat, pnnz_off, job_parent, job_col, job_cost, positives,
                 params: TrainParams, d: int, nb: int, nworkers: int, pieces: list, bar) -> int:
    """Run the jobs of one gathered batch, refilling worker buffers as needed; append (cols, counts, rows, vals)."""
    ci, rp, cv, sc, sqn, uniq, pu = layout
    wptr = np.zeros(nworkers + 1, dtype=np.int64)
    wjobs = np.empty(job_col.size, dtype=np.int64)
    cap = max(_OUT_BUDGET // nworkers, int(pu.max()) + nb)
    out_idx = np.empty(nworkers * cap, dtype=np.int32)
    out_val = np.empty(nworkers * cap, dtype=np.float32)
    job_cnt = np.zeros(job_col.size, dtype=np.int64)
    job_n = np.zeros(job_col.size, dtype=np.int64)
    wdone = np.zeros(nworkers, dtype=np.int64)
    plan = True
    while plan or (wdone < np.diff(wptr)).any():
        before = wdone.copy()
        _solve_jobs(plan, job_cost, wptr, wjobs, wdone, job_parent, job_col, prow_off, rows_cat, in_m_cat, rp, ci, cv,
                    sc, sqn, pnnz_off, uniq, pu, *positives, LOSSES[params.loss], float(params.Cp), float(params.Cn),
                    float(params.bias), float(params.eps), int(params.max_iter), float(params.threshold),
                    int(params.max_nonzeros_per_label or 0), d, cap, out_idx, out_val, job_cnt, job_n,
                    PREFETCH_MIN_NNZ)
        plan = False
        for w in range(nworkers):
            done = wjobs[wptr[w] + before[w]:wptr[w] + wdone[w]]
            if done.size:
                cnts = job_cnt[done]
                used = int(cnts.sum())
                pieces.append((job_col[done], cnts, out_idx[w * cap:w * cap + used].copy(),
                               out_val[w * cap:w * cap + used].copy()))
        bar.update(int((wdone - before).sum()))
    return int(job_n.sum())


def _assemble(pieces, nrows: int, ncols: int) -> sp.csc_matrix:
    """One CSC from per-job column segments (each column's rows already ascending)."""
    if pieces:
        cols = np.concatenate([p[0] for p in pieces])
        cnts = np.concatenate([p[1] for p in pieces])
        idx = np.concatenate([p[2] for p in pieces])
        val = np.concatenate([p[3] for p in pieces])
    else:
        cols = cnts = np.zeros(0, np.int64)
        idx, val = np.zeros(0, np.int32), np.zeros(0, np.float32)
    indptr = np.zeros(ncols + 1, dtype=np.int64)
    np.add.at(indptr, cols + 1, cnts)
    np.cumsum(indptr, out=indptr)
    src_ptr = np.concatenate(([0], np.cumsum(cnts))).astype(np.int64)
    gidx = _segments(src_ptr, np.argsort(cols, kind="stable"))
    index_dtype = np.int32 if indptr[-1] < 2**31 else np.int64
    W = sp.csc_matrix((val[gidx], idx[gidx].astype(index_dtype), indptr.astype(index_dtype)), shape=(nrows, ncols))
    W.has_sorted_indices = True
    return W
