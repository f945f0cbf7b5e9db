"""Per-node binary solvers: LIBLINEAR-style dual coordinate descent on a compact local problem layout.

One node's problem is a set of rows of X, labels ``y`` in {+1, -1} and per-instance costs ``C_i``; we minimise
``1/2 ||w||^2 + 1/2 b^2 + sum_i C_i loss(y_i (w.x_i + beta b))``. The bias is treated as an extra feature of
value ``beta`` (absent when ``beta <= 0``), so it is regularised like any other weight.

Rows are first gathered into a *local layout* (:func:`gather_local`): the features the rows touch are renumbered
``0..u-1`` in ascending global order, so a worker's dense ``w`` has ``u + 1`` entries rather than ``d + 1`` (it
stays in cache) and pruned weights come out already sorted by global feature id. Several children of one parent
share the parent's layout and differ only in ``y`` and the costs. Local ids are unsigned (uint16 when ``d <= 65536``):
fewer bytes per entry, and numba skips its negative-index wrap-around on unsigned indices. A row whose stored values
are all equal (binary features, normalised) also records that value as its *scale*; the solvers then sum ``w`` over
the row's ids and multiply once, never reading its values (fewer bytes and operations per entry).

Kernels:
- :func:`solve_l2_svc`: squared hinge, D_ii = 1/(2 C_i), U = inf, with shrinking (Hsieh et al. 2008).
- :func:`solve_lr`: logistic loss, dual CD with inner Newton steps (Yu, Huang, Lin 2011).
Both shuffle with a 64-bit LCG re-seeded to the same constant for every node, so the result depends only on the
node's data, never on the thread that solves it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

LOSSES = {"squared-hinge": 0, "logistic": 1}
PREFETCH_MIN_NNZ = 1 << 15  # gathered entries from which software prefetching pays (rows outgrow L1/L2)
_SEED = np.uint64(0x9E3779B97F4A7C15)
_LCG_MUL = np.uint64(6364136223846793005)
_LCG_ADD = np.uint64(1442695040888963407)


class SolverError(ValueError):
    """Bad input to a per-node solver."""


@njit(cache=True, nogil=True)
def _shuffle(index, m, state):
    """Fisher-Yates shuffle of ``index[:m]`` driven by a 64-bit LCG; returns the new state. O(m)."""
    for i in range(m):
        state = state * _LCG_MUL + _LCG_ADD
        j = i + np.int64((state >> np.uint64(33)) % np.uint64(m - i))
        tmp = index[i]
        index[i] = index[j]
        index[j] = tmp
    return state


@njit(cache=True, nogil=True)
def solve_l2_svc(rp, ci, cv, sc, sqn, sel, y, cost, beta, eps, max_iter, w, st, index, prefetch):
    """Squared-hinge dual CD with shrinking on the local rows ``sel``; fills ``w`` (bias last if beta > 0).

    Local row i: entries ``rp[i]..rp[i+1]`` of ``ci`` (local feature ids) / ``cv``, scale ``sc[i]`` (0 = use
    ``cv``), squared norm ``sqn[i]``, label ``y[i]``, cost ``cost[i]``. ``st`` is an (n_local, 5) float64 work
    array indexed by local row (the per-row state on one cache line), ``index`` holds ``sel.size`` entries;
    ``prefetch`` requests rows ahead of use (worth it once the rows outgrow the caches). Returns the number of
    outer iterations.
    Cost: O(iterations x nnz of the active rows).
    """
    n = sel.size
    has_bias = beta > 0.0
    u = w.size - 1 if has_bias else w.size
    bb = beta * beta if has_bias else 0.0
    for k in range(w.size):
        w[k] = 0.0
    for s in range(n):
        i = sel[s]
        index[s] = i
        dii = 0.5 / cost[i]
        st[i, 0] = 0.0  # alpha
        st[i, 1] = 1.0 / (sqn[i] + bb + dii)  # 1 / Q_ii
        st[i, 2] = y[i]
        st[i, 3] = dii
        st[i, 4] = sc[i]
    active = n
    inf = np.inf
    pgmax_old = inf
    pgmin_old = -inf
    state = _SEED
    sink = 0.0
    it = 0
    while it < max_iter:
        pgmax_new = -inf
        pgmin_new = inf
        if active > 1:
            state = _shuffle(index, active, state)
        s = 0
        while s < active:
            # rows are visited in random order: request upcoming rows early to hide memory latency
            if prefetch and s + 8 < active:
                # written out rather than an inline="always" helper: numba's IR inlining slowed this loop ~30%
                sink += rp[index[s + 8]]
                j = index[s + 4]
                sink += st[j, 0]
                if rp[j + 1] > rp[j]:
                    sink += ci[rp[j]]
            i = index[s]
            scale = st[i, 4]
            g = 0.0
            k0 = rp[i]
            k1 = rp[i + 1]
            if scale != 0.0:
                # two partial sums halve the dependent-add chain that bounds this loop
                g2 = 0.0
                k = k0
                while k + 1 < k1:
                    g += w[ci[k]]
                    g2 += w[ci[k + 1]]
                    k += 2
                if k < k1:
                    g += w[ci[k]]
                g = (g + g2) * scale
            else:
                for k in range(k0, k1):
                    g += w[ci[k]] * cv[k]
            if has_bias:
                g += w[u] * beta
            a_old = st[i, 0]
            yi = st[i, 2]
            g = yi * g - 1.0 + a_old * st[i, 3]
            pg = 0.0
            if a_old == 0.0:
                if g > pgmax_old:
                    active -= 1
                    index[s] = index[active]
                    index[active] = i
                    continue
                elif g < 0.0:
                    pg = g
            else:
                pg = g
            if pg > pgmax_new:
                pgmax_new = pg
            if pg < pgmin_new:
                pgmin_new = pg
            if abs(pg) > 1e-12:
                a_new = a_old - g * st[i, 1]
                if a_new < 0.0:
                    a_new = 0.0
                st[i, 0] = a_new
                dlt = (a_new - a_old) * yi
                if scale != 0.0:
                    d2 = dlt * scale
                    for k in range(rp[i], rp[i + 1]):
                        w[ci[k]] += d2
                else:
                    for k in range(rp[i], rp[i + 1]):
                        w[ci[k]] += dlt * cv[k]
                if has_bias:
                    w[u] += dlt * beta
            s += 1
        it += 1
        if pgmax_new - pgmin_new <= eps:
            if active == n:
                break
            active = n
            pgmax_old = inf
            pgmin_old = -inf
            continue
        pgmax_old = pgmax_new
        pgmin_old = pgmin_new
        if pgmax_old <= 0.0:
            pgmax_old = inf
        if pgmin_old >= 0.0:
            pgmin_old = -inf
    if sink != sink:  # never true (X is finite); keeps the prefetching loads alive
        it += 1
    return it


@njit(cache=True, nogil=True)
def solve_lr(rp, ci, cv, sc, sqn, sel, y, cost, beta, eps, max_iter, w, st, index, prefetch):
    """Logistic-loss dual CD with inner Newton iterations on the local rows ``sel``; fills ``w``.

    Same layout as :func:`solve_l2_svc`, row scales ``sc`` included (``st`` holds alpha_i, C_i - alpha_i,
    ||x_i||^2, y_i, C_i per row).
    Returns the number of outer iterations. Cost: O(iterations x nnz) plus O(inner Newton steps).
    """
    n = sel.size
    has_bias = beta > 0.0
    u = w.size - 1 if has_bias else w.size
    bb = beta * beta if has_bias else 0.0
    for k in range(w.size):
        w[k] = 0.0
    for s in range(n):
        i = sel[s]
        c = cost[i]
        a0 = min(0.001 * c, 1e-8)
        st[i, 0] = a0
        st[i, 1] = c - a0
        st[i, 2] = sqn[i] + bb
        st[i, 3] = y[i]
        st[i, 4] = c
        index[s] = i
        dlt = y[i] * a0
        for k in range(rp[i], rp[i + 1]):
            w[ci[k]] += dlt * cv[k]
        if has_bias:
            w[u] += dlt * beta
    max_inner = 100
    innereps = 1e-2
    innereps_min = min(1e-8, eps)
    state = _SEED
    sink = 0.0
    it = 0
    while it < max_iter:
        if n > 1:
            state = _shuffle(index, n, state)
        newton_iter = 0
        gmax = 0.0
        for s in range(n):
            if prefetch and s + 8 < n:
                sink += rp[index[s + 8]]
                j = index[s + 4]
                sink += st[j, 0]
                if rp[j + 1] > rp[j]:
                    sink += ci[rp[j]] + cv[rp[j]]
            i = index[s]
            yi = st[i, 3]
            c = st[i, 4]
            scale = sc[i]
            wx = 0.0
            if scale != 0.0:
                for k in range(rp[i], rp[i + 1]):
                    wx += w[ci[k]]
                wx *= scale
            else:
                for k in range(rp[i], rp[i + 1]):
                    wx += w[ci[k]] * cv[k]
            if has_bias:
                wx += w[u] * beta
            a = st[i, 2]
            b = yi * wx
            ind1 = 0
            ind2 = 1
            sign = 1.0
            if 0.5 * a * (st[i, 1] - st[i, 0]) + b < 0.0:
                ind1 = 1
                ind2 = 0
                sign = -1.0
            a_old = st[i, ind1]
            z = a_old
            if c - z < 0.5 * c:
                z = 0.1 * z
            gp = a * (z - a_old) + sign * b + np.log(z / (c - z))
            if abs(gp) > gmax:
                gmax = abs(gp)
            inner = 0
            while inner <= max_inner:
                if abs(gp) < innereps:
                    break
                gpp = a + c / (c - z) / z
                tmpz = z - gp / gpp
                if tmpz <= 0.0:
                    z *= 0.1
                else:
                    z = tmpz
                gp = a * (z - a_old) + sign * b + np.log(z / (c - z))
                newton_iter += 1
                inner += 1
            if inner > 0:
                st[i, ind1] = z
                st[i, ind2] = c - z
                dlt = sign * (z - a_old) * yi
                if scale != 0.0:
                    d2 = dlt * scale
                    for k in range(rp[i], rp[i + 1]):
                        w[ci[k]] += d2
                else:
                    for k in range(rp[i], rp[i + 1]):
                        w[ci[k]] += dlt * cv[k]
                if has_bias:
                    w[u] += dlt * beta
        it += 1
        if gmax < eps:
            break
        if newton_iter <= n // 10:
            innereps = max(innereps_min, 0.1 * innereps)
    if sink != sink:  # never true (X is finite); keeps the prefetching loads alive
        it += 1
    return it


@njit(cache=True, nogil=True)
def prune_weights(w, has_bias, threshold, max_nnz, uniq, d, out_idx, out_val, pos):
    """Write the kept weights of a solved node to ``out_*[pos:]`` (global ids, bias as row d); return the count.

    Keeps ``|w_k| >= threshold`` (float32 values, exact zeros never kept); with ``max_nnz > 0`` only the
    ``max_nnz`` largest features (ties to the lower id), the bias taking a free slot or replacing the smallest
    kept weight when larger. Output is sorted by row. Cost: O(u + s log s) for s survivors.
    """
    u = w.size - 1 if has_bias else w.size
    cnt = 0
    for k in range(u):
        v = np.float32(w[k])
        if v != 0 and abs(v) >= threshold:
            out_idx[pos + cnt] = k
            out_val[pos + cnt] = v
            cnt += 1
    keep_bias = False
    bv = np.float32(0.0)
    if has_bias:
        bv = np.float32(w[u])
        keep_bias = bv != 0 and abs(bv) >= threshold
    if max_nnz > 0 and cnt > max_nnz:
        vals = out_val[pos:pos + cnt].copy()
        ids = out_idx[pos:pos + cnt].copy()
        order = np.argsort(-np.abs(vals), kind="mergesort")[:max_nnz]
        if keep_bias and abs(bv) > abs(vals[order[max_nnz - 1]]):
            order = order[:max_nnz - 1]
        else:
            keep_bias = False
        order.sort()
        cnt = order.size
        for q in range(cnt):
            out_idx[pos + q] = ids[order[q]]
            out_val[pos + q] = vals[order[q]]
    elif max_nnz > 0 and cnt == max_nnz and keep_bias:
        # no free slot: the bias replaces the smallest kept weight (the last such one on ties) only if larger
        worst = -1
        for q in range(cnt):
            if worst < 0 or abs(out_val[pos + q]) <= abs(out_val[pos + worst]):
                worst = q
        if abs(bv) > abs(out_val[pos + worst]):
            for q in range(worst, cnt - 1):
                out_idx[pos + q] = out_idx[pos + q + 1]
                out_val[pos + q] = out_val[pos + q + 1]
            cnt -= 1
        else:
            keep_bias = False
    for q in range(cnt):
        out_idx[pos + q] = uniq[out_idx[pos + q]]
    if keep_bias:
        out_idx[pos + cnt] = d
        out_val[pos + cnt] = bv
        cnt += 1
    return cnt


@njit(cache=True, nogil=True, inline="always")
def _row_scale(cv, k0, k1):
    """The common value of entries k0..k1 when they are all equal (and nonzero), else 0. O(nnz(x_i))."""
    v = np.float32(0.0)
    if k1 > k0:
        v = cv[k0]
        for k in range(k0 + 1, k1):
            if cv[k] != v:
                v = np.float32(0.0)
                break
    return v


@njit(cache=True, nogil=True, inline="always")
def _finish_local(ci, e0, pos, cnt, mark, uniq):
    """Sort the parent's features, renumber its entries ``e0..pos`` to local ids; reset ``mark``. O(nnz + u log u)."""
    uq = uniq[e0:e0 + cnt]
    uq.sort()
    for k in range(cnt):
        mark[uq[k]] = k
    for k in range(e0, pos):
        ci[k] = mark[ci[k]]
    for k in range(cnt):
        mark[uq[k]] = -1


@njit(cache=True, nogil=True)
def _gather_one(indptr, indices, data, rows, e0, mark, rp, ci, cv, sc, sqn, uniq):
    """Gather ``rows`` of a CSR into the local layout starting at entry ``e0``; return the feature count u.

    ``mark`` is a length-d int32 scratch array holding -1 on entry and on exit. O(nnz + u log u).
    """
    cnt = 0
    pos = e0
    for g in range(rows.size):
        r = rows[g]
        rp[g] = pos
        s = 0.0
        for k in range(indptr[r], indptr[r + 1]):
            f = indices[k]
            v = data[k]
            if mark[f] < 0:
                mark[f] = 0
                uniq[e0 + cnt] = f
                cnt += 1
            ci[pos] = f
            cv[pos] = v
            s += np.float64(v) * np.float64(v)
            pos += 1
        sqn[g] = s
        sc[g] = _row_scale(cv, rp[g], pos)
    _finish_local(ci, e0, pos, cnt, mark, uniq)
    return cnt


@njit(cache=True, nogil=True)
def _gather_one_dense(x, rows, e0, mark, rp, ci, cv, sc, sqn, uniq):
    """Dense-X version of :func:`_gather_one` (zeros skipped); ``mark`` as there. O(rows x d + u log u)."""
    d = x.shape[1]
    cnt = 0
    pos = e0
    for g in range(rows.size):
        r = rows[g]
        rp[g] = pos
        s = 0.0
        for f in range(d):
            v = x[r, f]
            if v != 0:
                if mark[f] < 0:
                    mark[f] = 0
                    uniq[e0 + cnt] = f
                    cnt += 1
                ci[pos] = f
                cv[pos] = v
                s += np.float64(v) * np.float64(v)
                pos += 1
        sqn[g] = s
        sc[g] = _row_scale(cv, rp[g], pos)
    _finish_local(ci, e0, pos, cnt, mark, uniq)
    return cnt


@njit(cache=True, nogil=True, parallel=True)
def gather_local(indptr, indices, data, dense, d, rows_cat, prow_off, pnnz_off, nworkers, ci):
    """Gather many row sets (one per parent) into local layouts, parents interleaved over ``nworkers``.

    Parent p owns rows ``rows_cat[prow_off[p]:prow_off[p+1]]`` and entries ``pnnz_off[p]..pnnz_off[p+1]``.
    ``ci`` (length ``pnnz_off[-1]``, unsigned, able to hold ids below ``d``) receives the local feature ids.
    Returns ``(rp, cv, sc, sqn, uniq, u)``: row g of the concatenation spans ``rp[g]..rp[g+1]``, ``sc[g]`` is its
    scale (0 unless all its values are equal); parent p's local feature k is global ``uniq[pnnz_off[p] + k]``,
    k < ``u[p]``. With ``dense`` 2-D, the CSR arrays are ignored. Cost: O(total gathered nnz + sum u log u),
    memory O(total gathered nnz + workers x d).
    """
    npar = prow_off.size - 1
    nrows = rows_cat.size
    nnz = pnnz_off[npar]
    rp = np.empty(nrows + 1, dtype=np.int64)
    cv = np.empty(nnz, dtype=np.float32)
    sc = np.empty(nrows, dtype=np.float32)
    sqn = np.empty(nrows, dtype=np.float64)
    uniq = np.empty(nnz, dtype=np.int32)
    u = np.zeros(npar, dtype=np.int64)
    use_dense = dense.shape[0] > 0
    for wk in prange(nworkers):
        mark = np.full(d, -1, dtype=np.int32)
        for p in range(wk, npar, nworkers):
            r0 = prow_off[p]
            r1 = prow_off[p + 1]
            if use_dense:
                u[p] = _gather_one_dense(dense, rows_cat[r0:r1], pnnz_off[p], mark, rp[r0:r1], ci, cv, sc[r0:r1],
                                         sqn[r0:r1], uniq)
            else:
                u[p] = _gather_one(indptr, indices, data, rows_cat[r0:r1], pnnz_off[p], mark, rp[r0:r1], ci, cv,
                                   sc[r0:r1], sqn[r0:r1], uniq)
    rp[nrows] = nnz
    return rp, cv, sc, sqn, uniq, u


def local_id_array(nnz: int, d: int) -> np.ndarray:
    """Output array for :func:`gather_local`'s local feature ids: uint16 when ``d <= 65536``, else uint32."""
    return np.empty(nnz, dtype=np.uint16 if d <= 1 << 16 else np.uint32)


_EMPTY_DENSE = np.zeros((0, 0), dtype=np.float32)


def as_float32_csr(X) -> tuple[sp.csr_matrix | None, np.ndarray]:
    """Split X into (CSR with int64 indptr / int32 indices / float32 data, or None; dense 2-D float32 or empty)."""
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        if not X.has_canonical_format:  # duplicate entries would make ||x_i||^2 wrong
            X = X.copy()
            X.sum_duplicates()
        X = sp.csr_matrix((np.asarray(X.data, dtype=np.float32), X.indices.astype(np.int32, copy=False),
                           X.indptr.astype(np.int64, copy=False)), shape=X.shape)
        return X, _EMPTY_DENSE
    return None, np.ascontiguousarray(X, dtype=np.float32)


def solve_binary(X, y, cost, loss: str = "squared-hinge", bias: float = 1.0, eps: float = 0.1,
                 max_iter: int = 100) -> np.ndarray:
    """Solve one binary problem on all rows of X (CSR or dense); return dense float64 w of length d (+1 bias)."""
    if loss not in LOSSES:
        raise SolverError(f"unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
    csr, dense = as_float32_csr(X)
    n, d = X.shape
    y = np.asarray(y, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if y.shape != (n,) or cost.shape != (n,):
        raise SolverError(f"y and cost must have length {n}, got {y.shape} and {cost.shape}")
    if not np.isin(y, (-1.0, 1.0)).all():
        raise SolverError("y must hold only +1 and -1")
    if not (np.isfinite(cost).all() and (cost > 0).all()):
        raise SolverError("costs must be finite and positive")
    if csr is None:
        indptr, indices, data = np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
        nnz = int(np.count_nonzero(dense))
    else:
        indptr, indices, data = csr.indptr, csr.indices, csr.data
        nnz = csr.nnz
    rows = np.arange(n, dtype=np.int32)
    ci = local_id_array(nnz, d)
    rp, cv, sc, sqn, uniq, u = gather_local(indptr, indices, data, dense, d, rows, np.array([0, n], np.int64),
                                            np.array([0, nnz], np.int64), 1, ci)
    uu = int(u[0])
    has_bias = bias > 0
    w = np.zeros(uu + (1 if has_bias else 0))
    index = np.empty(n, dtype=np.int32)
    st = np.empty((n, 5))
    solver = solve_l2_svc if LOSSES[loss] == 0 else solve_lr
    solver(rp, ci, cv, sc, sqn, rows, y, cost, float(bias), float(eps), int(max_iter), w, st, index,
           nnz >= PREFETCH_MIN_NNZ)
    out = np.zeros(d + (1 if has_bias else 0))
    out[uniq[:uu]] = w[:uu]
    if has_bias:
        out[d] = w[uu]
    return out
