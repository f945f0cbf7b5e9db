"""Hierarchical balanced 2-means over label embeddings (PECOS's ``HierarchicalKMeans``), built level by level.

Recursive exactly-balanced 2-means splits the labels into ``2^D`` leaves, ``D = max(1, ceil(log2(L / leaf)))``;
the leaves are then grouped ``B`` at a time into a :class:`~indexing.tree.LabelTree`. Every node's random
start is drawn from a hash of ``(seed, heap node id)``, and each node's split is computed the same way whichever
thread runs it, so the tree depends on the seed only, never on the thread count, and a group of nodes can be
split on its own (:func:`split_nodes`, with only its rows: how distributed training splits subtrees) with the
same result.

A level with at least as many nodes as threads is one numba call, one node per task (work buffers per thread).
The few levels above that split their nodes one after another with the scoring pass parallel over elements,
driven from Python per iteration (never a parallel kernel inside another cached kernel: see
:func:`_split_node_parallel`). Centroid sums are dense per worker, but only the features a node touches are read
or reset, and after the first iteration only the elements that changed side update them.
"""

from __future__ import annotations

import logging
import math
import time

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from .tree import LabelTree

logger = logging.getLogger("indexing.kmeans")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# Below this many embedding nonzeros in a level, its few nodes are split serially by the one-node-per-task kernel
# (same result): parallel scoring would save only milliseconds, while each extra cached kernel it needs costs a
# load in every new process (the scoring, setup, step and finish kernels: ~10-20 ms each).
_SERIAL_SPLIT_NNZ = 1 << 21


class ClusteringError(ValueError):
    """Bad input or options for hierarchical k-means."""


# ----------------------------------------------------------------------------------------------- kernels
@njit(cache=True, nogil=True)
def _mix64(z):
    """splitmix64 finaliser of a uint64. O(1)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _init_pair(seed, node, n):
    """Positions ``(r, l)`` of two distinct elements of a node of size ``n >= 2``, from ``(seed, node)``. O(1)."""
    s = _mix64(seed * _GOLDEN + np.uint64(node))
    h1 = _mix64(s + _GOLDEN)
    h2 = _mix64(s + _GOLDEN + _GOLDEN)
    r = np.int64(h1 % np.uint64(n))
    l = (r + 1 + np.int64(h2 % np.uint64(n - 1))) % n
    return r, l


@njit(cache=True, nogil=True)
def _dot(indptr, indices, data, dense, d, i, v):
    """<x_i, v> for row ``i`` (CSR, or dense rows of length ``d`` starting at ``indptr[i]``). O(nnz(x_i))."""
    s = 0.0
    lo = indptr[i]
    if dense:
        for f in range(d):
            s += v[f] * data[lo + f]
    else:
        for k in range(lo, indptr[i + 1]):
            s += v[indices[k]] * data[k]
    return s


@njit(cache=True, nogil=True)
def _axpy(indptr, indices, data, dense, d, i, alpha, v):
    """v += alpha * x_i. O(nnz(x_i))."""
    lo = indptr[i]
    if dense:
        for f in range(d):
            v[f] += alpha * data[lo + f]
    else:
        for k in range(lo, indptr[i + 1]):
            v[indices[k]] += alpha * data[k]


@njit(cache=True, nogil=True)
def _scores_serial(indptr, indices, data, dense, d, ids, c, scores):
    """scores[p] = <c, x_{ids[p]}>. O(nnz of the node)."""
    for p in range(ids.size):
        scores[p] = _dot(indptr, indices, data, dense, d, ids[p], c)


@njit(cache=True, nogil=True, parallel=True)
def _scores_parallel(indptr, indices, data, dense, d, ids, c, scores):
    """Same as :func:`_scores_serial`, parallel over elements (each score is summed the same way). O(nnz)."""
    for p in prange(ids.size):
        scores[p] = _dot(indptr, indices, data, dense, d, ids[p], c)


@njit(cache=True, nogil=True)
def _balanced_sides(scores, m, side):
    """side[p] = 0 for the ``m`` smallest (score, position) pairs, else 1; ties go to lower positions. O(n)."""
    n = scores.size
    if m == 0:
        side[:] = 1
        return
    pivot = np.partition(scores, m - 1)[m - 1]
    need = m
    for p in range(n):
        if scores[p] < pivot:
            need -= 1
    for p in range(n):
        s = scores[p]
        if s < pivot:
            side[p] = 0
        elif s == pivot and need > 0:
            side[p] = 0
            need -= 1
        else:
            side[p] = 1


@njit(cache=True, nogil=True)
def _node_setup(indptr, indices, data, dense, d, ids, node, seed, c, mark, touched):
    """List the features the node touches (returns their count) and set ``c = x_r - x_l``. O(nnz of the node)."""
    n = ids.size
    nt = 0
    if dense:
        for f in range(d):
            touched[f] = f
        nt = d
    else:
        for p in range(n):
            i = ids[p]
            for k in range(indptr[i], indptr[i + 1]):
                f = indices[k]
                if mark[f] != node:
                    mark[f] = node
                    touched[nt] = f
                    nt += 1
    r, l = _init_pair(seed, node, n)
    _axpy(indptr, indices, data, dense, d, ids[r], 1.0, c)
    _axpy(indptr, indices, data, dense, d, ids[l], -1.0, c)
    return nt


@njit(cache=True, nogil=True)
def _node_step(indptr, indices, data, dense, d, ids, scores, side, new_side, it, max_iter, spherical, sl, sr, c,
               touched, nt):
    """One 2-means iteration after scoring: assign sides, update the side sums and ``c``; True when done.

    The first iteration builds the sums, later ones only move the elements that changed side.
    O(n + moved nonzeros + touched features).
    """
    n = ids.size
    m = n // 2
    _balanced_sides(scores, m, new_side)
    if it == 0:
        for p in range(n):
            if new_side[p]:
                _axpy(indptr, indices, data, dense, d, ids[p], 1.0, sr)
            else:
                _axpy(indptr, indices, data, dense, d, ids[p], 1.0, sl)
    else:
        moved = 0
        for p in range(n):
            if new_side[p] != side[p]:
                moved += 1
                w = 1.0 if new_side[p] else -1.0
                _axpy(indptr, indices, data, dense, d, ids[p], w, sr)
                _axpy(indptr, indices, data, dense, d, ids[p], -w, sl)
        if moved == 0:
            return True
    side[:] = new_side
    if it == max_iter - 1:
        return True
    if spherical:
        nl = 0.0
        nr = 0.0
        for q in range(nt):
            f = touched[q]
            nl += sl[f] * sl[f]
            nr += sr[f] * sr[f]
        a = 1.0 / math.sqrt(nr) if nr > 0.0 else 0.0
        b = 1.0 / math.sqrt(nl) if nl > 0.0 else 0.0
    else:
        a = 1.0 / (n - m)
        b = 1.0 / m
    for q in range(nt):
        f = touched[q]
        c[f] = a * sr[f] - b * sl[f]
    return False


@njit(cache=True, nogil=True)
def _node_finish(ids, out, side, sl, sr, c, touched, nt):
    """Zero the work buffers on the touched features; out = left ids then right ids, both ascending. O(n + nt)."""
    for q in range(nt):
        f = touched[q]
        sl[f] = 0.0
        sr[f] = 0.0
        c[f] = 0.0
    nl_out = 0
    nr_out = ids.size // 2
    for p in range(ids.size):
        if side[p]:
            out[nr_out] = ids[p]
            nr_out += 1
        else:
            out[nl_out] = ids[p]
            nl_out += 1


@njit(cache=True, nogil=True)
def _split_node(indptr, indices, data, dense, d, ids, out, node, seed, max_iter, spherical, sl, sr, c, mark, touched):
    """Balanced 2-means of the elements ``ids`` (ascending): ``out`` = left ids then right ids, both ascending.

    ``sl``, ``sr`` (float64[d]), ``c`` (float32[d]) must be zero on entry and are zero again on exit; ``mark``
    must not hold ``node``. O(max_iter * (nnz + n + touched features)).
    """
    n = ids.size
    if n < 2:
        out[:] = ids
        return
    nt = _node_setup(indptr, indices, data, dense, d, ids, node, seed, c, mark, touched)
    scores = np.empty(n)
    side = np.empty(n, np.uint8)
    new_side = np.empty(n, np.uint8)
    for it in range(max_iter):
        _scores_serial(indptr, indices, data, dense, d, ids, c, scores)
        if _node_step(indptr, indices, data, dense, d, ids, scores, side, new_side, it, max_iter, spherical, sl, sr,
                      c, touched, nt):
            break
    _node_finish(ids, out, side, sl, sr, c, touched, nt)


def _split_node_parallel(indptr, indices, data, dense, d, ids, out, node, seed, max_iter, spherical, bufs) -> None:
    """:func:`_split_node` with the scoring pass parallel over elements (same result).

    Driven from Python on purpose: a cached njit function that calls a ``parallel=True`` one can segfault
    when reloaded from the cache (seen with numba 0.68), and this path runs for fewer nodes than threads only.
    """
    n = ids.size
    if n < 2:
        out[:] = ids
        return
    sl, sr, c, mark, touched = bufs
    nt = _node_setup(indptr, indices, data, dense, d, ids, node, seed, c, mark, touched)
    scores = np.empty(n)
    side = np.empty(n, np.uint8)
    new_side = np.empty(n, np.uint8)
    for it in range(max_iter):
        _scores_parallel(indptr, indices, data, dense, d, ids, c, scores)
        if _node_step(indptr, indices, data, dense, d, ids, scores, side, new_side, it, max_iter, spherical, sl, sr,
                      c, touched, nt):
            break
    _node_finish(ids, out, side, sl, sr, c, touched, nt)


@njit(cache=True, nogil=True, parallel=True)
def _split_level_nodes(indptr, indices, data, dense, d, perm, out, starts, heap_base, seed, max_iter, spherical, sl, sr,
                       c, mark, touched):
    """Split every node of a level, one node per task; row ``t`` of the work buffers belongs to thread ``t``.

    O(max_iter * nnz / threads) when nodes outnumber threads.
    """
    for j in prange(starts.size - 1):
        t = numba.get_thread_id()
        s = starts[j]
        e = starts[j + 1]
        if t < sl.shape[0]:
            _split_node(indptr, indices, data, dense, d, perm[s:e], out[s:e], heap_base + j, seed, max_iter,
                        spherical, sl[t], sr[t], c[t], mark[t], touched[t])
        else:  # a thread id beyond the buffers (not expected): private buffers, same result
            _split_node(indptr, indices, data, dense, d, perm[s:e], out[s:e], heap_base + j, seed, max_iter,
                        spherical, np.zeros(d), np.zeros(d), np.zeros(d, np.float32), np.zeros(d, np.int32),
                        np.empty(d, np.int32))


# ------------------------------------------------------------------------------------------------ driver
def _as_embedding(emb) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, int, int]:
    """(indptr int64, indices, data float32, dense, L, d) views of a CSR or dense 2-D embedding matrix."""
    if sp.issparse(emb):
        if emb.ndim != 2:
            raise ClusteringError(f"embedding matrix must be 2-D, got {emb.ndim}-D")
        m = sp.csr_matrix(emb, dtype=np.float32, copy=False)
        L, d = m.shape
        if L == 0 or d == 0:
            raise ClusteringError(f"embedding matrix is empty (shape {m.shape})")
        if not np.isfinite(m.data).all():
            raise ClusteringError("embedding matrix contains non-finite values (NaN or inf)")
        indices = m.indices if m.indices.dtype in (np.int32, np.int64) else m.indices.astype(np.int64)
        return m.indptr.astype(np.int64, copy=False), indices, m.data, False, L, d
    try:
        a = np.asarray(emb, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ClusteringError(f"embedding matrix must be a 2-D numeric array or scipy sparse matrix: {e}") from None
    if a.ndim != 2:
        raise ClusteringError(f"embedding matrix must be 2-D, got shape {a.shape}")
    L, d = a.shape
    if L == 0 or d == 0:
        raise ClusteringError(f"embedding matrix is empty (shape {a.shape})")
    if not np.isfinite(a).all():
        raise ClusteringError("embedding matrix contains non-finite values (NaN or inf)")
    a = np.ascontiguousarray(a)
    indptr = np.arange(L + 1, dtype=np.int64) * d
    return indptr, np.zeros(0, np.int32), a.reshape(-1), True, L, d


def binary_depth(nr_labels: int, max_leaf_size: int) -> int:
    """Depth ``D`` of the binary 2-means recursion (0 when no clustering is needed)."""
    if nr_labels <= max_leaf_size:
        return 0
    depth = max(1, math.ceil(math.log2(nr_labels / max_leaf_size)))
    if 2**depth > nr_labels:
        raise ClusteringError(f"cannot split {nr_labels} labels into 2^{depth} non-empty leaves")
    return depth


def _work_buffers(d: int, rows: int | None) -> tuple[np.ndarray, ...]:
    """Zeroed (sl, sr, c, mark, touched) work buffers of length d, stacked ``rows`` deep (one per thread)."""
    shape = (d,) if rows is None else (rows, d)
    # c is float32: the scoring gathers from it, and half the bytes keep more of it in cache
    return (np.zeros(shape), np.zeros(shape), np.zeros(shape, np.float32), np.zeros(shape, np.int32),
            np.empty(shape, np.int32))


def _resolve_threads(threads: int) -> int:
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads == 0 or threads < -1:
        raise ClusteringError(f"threads must be -1 (all cores) or a positive integer, got {threads!r}")
    limit = numba.config.NUMBA_NUM_THREADS
    return limit if threads == -1 else min(int(threads), limit)


def _check_tree_shape(nr_splits, max_leaf_size) -> None:
    if not isinstance(nr_splits, (int, np.integer)) or nr_splits < 2:
        raise ClusteringError(f"nr_splits must be an integer >= 2, got {nr_splits!r}")
    if not isinstance(max_leaf_size, (int, np.integer)) or max_leaf_size < 1:
        raise ClusteringError(f"max_leaf_size must be an integer >= 1, got {max_leaf_size!r}")


def _check_split_options(max_iter, seed) -> None:
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ClusteringError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ClusteringError(f"seed must be a non-negative integer, got {seed!r}")


def split_nodes(
    emb,
    starts: np.ndarray,
    level: int,
    first_node: int,
    to_level: int,
    *,
    seed: int = 0,
    max_iter: int = 20,
    spherical: bool = True,
    threads: int = -1,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Split consecutive nodes of binary level ``level`` down to ``to_level``; return the new ``(perm, starts)``.

    Node j holds the rows ``starts[j]:starts[j+1]`` of ``emb`` (ascending within each node) and is node
    ``first_node + j`` of its level, so the random starts, and hence the split, are those of the same node in
    the whole recursion: a subtree split apart (on another machine, with only its rows) comes out the same.
    ``perm`` lists the rows of ``emb`` node by node at ``to_level``; ``starts`` delimits those nodes.
    """
    _check_split_options(max_iter, seed)
    if not 0 <= level <= to_level or first_node < 0:
        raise ClusteringError(f"need 0 <= level <= to_level and first_node >= 0, got {level}, {to_level}, {first_node}")
    arrays = _as_embedding(emb)
    L = arrays[4]
    starts = np.asarray(starts, dtype=np.int64)
    if starts.ndim != 1 or starts.size < 2 or starts[0] != 0 or starts[-1] != L or (np.diff(starts) < 1).any():
        raise ClusteringError(f"starts must rise from 0 to the {L} embedding rows with no empty node")
    return _split(arrays, starts, level, first_node, to_level, seed, max_iter, spherical, _resolve_threads(threads),
                  progress)


def _split(arrays, starts, level, first_node, to_level, seed, max_iter, spherical, nthreads, progress):
    """:func:`split_nodes` on validated arrays."""
    indptr, indices, data, dense, L, d = arrays
    useed = np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)
    perm = np.arange(L, dtype=np.int32)
    old_threads = numba.get_num_threads()
    old_chunk = numba.get_parallel_chunksize()
    bufs = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=to_level - level, desc="hierarchical k-means", unit="level")
    try:
        numba.set_num_threads(nthreads)
        for k in range(level, to_level):
            t0 = time.perf_counter()
            nodes = starts.size - 1
            heap_base = (1 << k) + (first_node << (k - level))
            out = np.empty_like(perm)
            if nodes >= nthreads or int(indptr[-1]) < _SERIAL_SPLIT_NNZ:  # indptr[-1]: nonzeros (dense: L x d)
                if bufs is None or bufs[0].ndim != 2:
                    bufs = _work_buffers(d, nthreads)
                numba.set_parallel_chunksize(1)  # node costs vary: hand nodes out one at a time
                _split_level_nodes(indptr, indices, data, dense, d, perm, out, starts, heap_base, useed, max_iter,
                                   spherical, *bufs)
            else:
                if bufs is None:
                    bufs = _work_buffers(d, None)
                numba.set_parallel_chunksize(0)  # equal-cost elements: default static chunks
                for j in range(nodes):
                    s, e = starts[j], starts[j + 1]
                    _split_node_parallel(indptr, indices, data, dense, d, perm[s:e], out[s:e], heap_base + j, useed,
                                         max_iter, spherical, bufs)
            perm = out
            sizes = np.diff(starts)
            child = np.empty(2 * nodes + 1, dtype=np.int64)
            child[0] = 0
            child[1::2] = starts[:-1] + sizes // 2
            child[2::2] = starts[1:]
            starts = child
            logger.info("level %d/%d: split %d nodes into %d in %.2fs", k + 1, to_level, nodes, 2 * nodes,
                        time.perf_counter() - t0)
            if bar is not None:
                bar.update(1)
    finally:
        numba.set_num_threads(old_threads)
        numba.set_parallel_chunksize(old_chunk)
        if bar is not None:
            bar.close()
    return perm, starts


def tree_from_split(perm: np.ndarray, starts: np.ndarray, nr_splits: int) -> LabelTree:
    """The label tree whose leaves are the nodes of a finished recursion (``split_nodes`` down to the leaves)."""
    leaf = np.empty(perm.size, dtype=np.int32)
    leaf[perm] = np.repeat(np.arange(starts.size - 1, dtype=np.int32), np.diff(starts))
    return LabelTree.from_leaf_assignment(leaf, nr_splits)


def hierarchical_kmeans(
    emb,
    nr_splits: int = 16,
    max_leaf_size: int = 100,
    seed: int = 0,
    max_iter: int = 20,
    spherical: bool = True,
    threads: int = -1,
    progress: bool = False,
) -> LabelTree:
    """Label tree from recursive balanced 2-means of the label embeddings (rows of ``emb``), leaves grouped B-ary."""
    _check_tree_shape(nr_splits, max_leaf_size)
    _check_split_options(max_iter, seed)
    nthreads = _resolve_threads(threads)
    arrays = _as_embedding(emb)
    L = arrays[4]
    depth = binary_depth(L, max_leaf_size)
    if depth == 0:
        logger.info("%d labels <= max_leaf_size %d: one-vs-all tree", L, max_leaf_size)
        return LabelTree.one_vs_all(L)
    t_all = time.perf_counter()
    perm, starts = _split(arrays, np.array([0, L], dtype=np.int64), 0, 0, depth, seed, max_iter, spherical, nthreads,
                          progress)
    tree = tree_from_split(perm, starts, nr_splits)
    logger.info("hierarchical k-means: %d labels, level sizes %s, %.2fs", L, tree.level_sizes,
                time.perf_counter() - t_all)
    return tree
