"""XR-Linear training spread over a Ray cluster, giving the same model as training in one process.

With "tfn" negatives, everything under a top-level cluster c is an independent problem: every node below c
trains on rows positive for c only. So the driver computes the label embeddings and the top binary levels of the
2-means recursion; Ray tasks finish the recursion for groups of those nodes (each with only its labels'
embedding rows) and train, one task per top-level cluster, every level below it on ``X[rows positive for c]``;
the top level itself (all rows, at most B nodes) trains as tasks over column groups. The driver assembles one
tree and one model. Each 2-means node draws its random start from (seed, node id) and each linear node's
solution depends only on its own rows, so the result equals single-process training bit for bit
(``tests/test_distributed.py``), whatever the number of workers.

Ray is optional (``pip install 'xmr[ray]'``); nothing else in xmr imports this module.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import resource
import socket
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy.sparse as sp

from indexing.kmeans import binary_depth, hierarchical_kmeans, split_nodes, tree_from_split
from indexing.tree import LabelTree
from xmr.train import TrainError, TrainParams, _assemble, _check_inputs, _labels_upward, train_levels

log = logging.getLogger("xmr.distributed")


# ------------------------------------------------------------------------------------------------ connecting
def _import_ray():
    try:
        import ray
    except ImportError:
        raise TrainError("distributed training needs Ray: pip install 'xmr[ray]'") from None
    return ray


@contextmanager
def ray_cluster(address: str) -> Iterator[Any]:
    """Connect to ``address`` (``local:N`` starts a local Ray with N CPUs) unless Ray is already connected."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address.startswith("local:"):
        try:
            n = int(address[len("local:"):])
        except ValueError:
            n = 0
        if n < 1:
            raise TrainError(f"--ray local:N needs a number of CPUs N >= 1, got {address!r}")
        ray.init(num_cpus=n, include_dashboard=False, logging_level=logging.WARNING)
    else:
        _check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise TrainError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """TrainError unless ``host:port`` (or ``ray://host:port``) accepts a TCP connection within 5 s: Ray itself
    retries an unreachable head for minutes before it gives up."""
    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise TrainError(f"--ray needs host:port, ray://host:port, auto or local:N, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise TrainError(f"cannot reach the Ray cluster at {address!r}: {e}") from None


def _worker_stats(t0: float) -> dict[str, Any]:
    """Where a task ran, its seconds and its worker's peak resident memory (MiB)."""
    import ray

    return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid(),
            "seconds": round(time.perf_counter() - t0, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _workers(ray, cpus_per_task: int) -> int:
    """How many tasks of ``cpus_per_task`` CPUs the cluster runs at once."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_task)


def _gather(ray, refs: list, what: str, progress: bool) -> list:
    """Results of ``refs`` in submission order, with a progress bar over completions."""
    from tqdm.auto import tqdm

    pending = list(refs)
    with tqdm(total=len(refs), desc=what, unit="task", disable=not progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            bar.update(len(done))
    return ray.get(refs)


# ------------------------------------------------------------------------------------------------ clustering
def _finish_subtrees(emb, starts, level, first_node, to_level, seed, max_iter, threads):
    """Ray task: the rest of the 2-means recursion for consecutive nodes, on their embedding rows only."""
    t0 = time.perf_counter()
    perm, starts = split_nodes(emb, starts, level, first_node, to_level, seed=seed, max_iter=max_iter, threads=threads)
    return perm, starts, _worker_stats(t0)


def cluster(ray, emb, *, nr_splits: int, max_leaf_size: int, seed: int, max_iter: int, cpus_per_task: int,
            threads: int, progress: bool, stats: list) -> LabelTree:
    """The label tree of :func:`indexing.kmeans.hierarchical_kmeans`, its lower binary levels split by Ray tasks."""
    L = emb.shape[0]
    depth = binary_depth(L, max_leaf_size)
    workers = _workers(ray, cpus_per_task)
    top = min(depth, math.ceil(math.log2(2 * workers)))  # 2 nodes per worker: balanced halves, so even work
    if top == depth:
        return hierarchical_kmeans(emb, nr_splits, max_leaf_size, seed, max_iter, threads=threads, progress=progress)
    t0 = time.perf_counter()
    perm, starts = split_nodes(emb, np.array([0, L]), 0, 0, top, seed=seed, max_iter=max_iter, threads=threads)
    log.info("driver split the top %d binary levels of %d labels in %.2fs", top, L, time.perf_counter() - t0)
    nodes = starts.size - 1
    bounds = np.linspace(0, nodes, min(workers, nodes) + 1).astype(int)
    task = ray.remote(num_cpus=cpus_per_task, scheduling_strategy="SPREAD")(_finish_subtrees)
    refs, ids = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        rows = perm[starts[a]:starts[b]]
        ids.append(rows)
        refs.append(task.remote(emb[rows], starts[a:b + 1] - starts[a], top, int(a), depth, seed, max_iter,
                                cpus_per_task))
    perms, leaf_starts = [], [np.zeros(1, np.int64)]
    for rows, (p, s, st) in zip(ids, _gather(ray, refs, "k-means subtrees", progress)):
        perms.append(rows[p])
        leaf_starts.append(s[1:] + leaf_starts[-1][-1])
        stats.append({"task": "kmeans", **st})
    return tree_from_split(np.concatenate(perms), np.concatenate(leaf_starts), nr_splits)


# -------------------------------------------------------------------------------------------------- training
def check_params(params: TrainParams) -> None:
    """Raise :class:`TrainError` unless the subtrees are independent problems ("tfn" negatives)."""
    if params.negatives != "tfn":
        raise TrainError(f"distributed training needs negatives='tfn' (subtrees must be independent), "
                         f"got {params.negatives!r}")


def _train_task(X, Y, parents, params, relevance):
    """Ray task: ``train_levels`` on one subtree (or one column group of the top level)."""
    t0 = time.perf_counter()
    weights = train_levels(X, Y, LabelTree(parents), params, relevance=relevance)
    return weights, _worker_stats(t0)


def _subtree(tree: LabelTree, c: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Parent arrays of the tree hanging under top-level node c, and the ids of its nodes at each level below."""
    lo, hi = c, c + 1
    parents, ids = [], []
    for t in range(1, tree.depth):
        p = tree.parents(t)
        if t < tree.depth - 1:  # siblings are contiguous above the labels
            nodes = np.arange(np.searchsorted(p, lo, "left"), np.searchsorted(p, hi - 1, "right"))
        else:
            nodes = np.flatnonzero((p >= lo) & (p < hi))
        parents.append(p[nodes] - lo)
        ids.append(nodes)
        lo, hi = int(nodes[0]), int(nodes[-1]) + 1
    return parents, ids


def train(ray, X, Y, tree: LabelTree, params: TrainParams, *, relevance=None, cpus_per_task: int = 1,
          progress: bool = False, stats: list) -> list[sp.csc_matrix]:
    """The weights of :func:`xmr.train.train_levels`, trained as Ray tasks (subtrees under top-level nodes)."""
    check_params(params)
    params = dataclasses.replace(params, threads=cpus_per_task)
    csr, dense, Yp, R = _check_inputs(X, Y, tree, relevance)
    X = csr if csr is not None else dense
    ((_, y0, r0),) = deque(_labels_upward(tree, Yp, R), maxlen=1)  # the top level's alone: keep no others
    task = ray.remote(num_cpus=cpus_per_task, scheduling_strategy="SPREAD")(_train_task)
    refs, placement = [], []  # placement[i] = (level offset, ids of the columns each returned matrix fills)
    workers = _workers(ray, cpus_per_task)
    top_cols = np.array_split(np.arange(tree.level_sizes[0]), min(workers, tree.level_sizes[0]))
    x_ref = ray.put(X)
    for cols in top_cols:
        refs.append(task.remote(x_ref, y0[:, cols], [np.zeros(cols.size, np.int32)], params,
                                None if r0 is None else r0[:, cols]))
        placement.append((0, [cols]))
    del x_ref
    if tree.depth > 1:
        top_pos = y0.tocsc()
        sizes = np.diff(top_pos.indptr)
        for c in np.argsort(-sizes, kind="stable"):  # biggest first: they decide when the last task ends
            rows = top_pos.indices[top_pos.indptr[c]:top_pos.indptr[c + 1]]
            parents, ids = _subtree(tree, int(c))
            labels = ids[-1]
            refs.append(task.remote(X[rows], Yp[rows][:, labels], parents, params,
                                    None if R is None else R[rows][:, labels]))
            placement.append((1, ids))
        del top_pos
    del y0, r0
    log.info("training on Ray: %d top-level column groups and %d subtrees, %d CPU(s) per task", len(top_cols),
             len(refs) - len(top_cols), cpus_per_task)
    results = _gather(ray, refs, "train", progress)
    del refs  # the results own their buffers now: each level's are freed once it is assembled
    for (offset, _), (_, st) in zip(placement, results):
        stats.append({"task": "train-top" if offset == 0 else "train-subtree", **st})
    nrows = X.shape[1] + (1 if params.bias > 0 else 0)
    weights = []
    for t, K in enumerate(tree.level_sizes):
        pieces = []
        for (offset, ids), (ws, _) in zip(placement, results):
            if offset <= t < offset + len(ws):
                W = ws[t - offset]
                ws[t - offset] = None
                pieces.append((ids[t - offset], np.diff(W.indptr), W.indices, W.data))
        weights.append(_place_columns(pieces, nrows, K))
    return weights


def _place_columns(pieces: list, nrows: int, ncols: int) -> sp.csc_matrix:
    """One CSC matrix from (column ids, nonzeros per column, rows, values) pieces that cover every column once."""
    cols = np.concatenate([p[0] for p in pieces])
    if cols.size != ncols or not np.array_equal(np.sort(cols), np.arange(ncols)):
        raise TrainError("distributed training returned a level with missing or repeated columns")
    return _assemble(pieces, nrows, ncols)
