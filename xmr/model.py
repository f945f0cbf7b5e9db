"""XLinearModel: an XR-Linear model (label tree + per-level sparse weights) with training, prediction and I/O.

Training runs the three XR-Linear steps: label embeddings (PIFA, optionally with label features) ->
hierarchical k-means label tree -> one-vs-rest linear rankers per tree level. Prediction is beam search
through a :class:`xmr.inference.BeamSearchIndex`, built once on first use (or by :meth:`XLinearModel.warm`).
Models are saved to and loaded from the directory format of :mod:`xmr.model_io`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from indexing.tree import LabelTree
from xmr.validation import InputError, check_features, check_labels, check_positive_int

if TYPE_CHECKING:
    from xmr.inference import BeamSearchIndex
    from xmr.train import TrainParams

__all__ = ["XLinearModel"]

LOGGER = logging.getLogger(__name__)


def _check_post_processor(name: object) -> str:
    from xmr.postprocess import postprocessor_code

    postprocessor_code(name)  # raises a ValueError naming the valid choices
    return str(name)


def _as_weight(W: object, t: int) -> sp.csc_matrix:
    """CSC float32 with sorted indices; leaves already-conforming matrices (e.g. memory-mapped) uncopied."""
    if not sp.issparse(W):
        raise ValueError(f"weights[{t}] must be a scipy sparse matrix, got {type(W).__name__}")
    if W.format == "csc" and W.dtype == np.float32 and W.indices.dtype == W.indptr.dtype:
        if not W.has_sorted_indices:
            W = W.copy()
            W.sort_indices()
        return W
    W = sp.csc_matrix(W, dtype=np.float32)
    W.sum_duplicates()
    return W


class XLinearModel:
    """An XR-Linear model: a :class:`LabelTree`, one CSC weight matrix per level, a bias and prediction defaults."""

    def __init__(
        self,
        tree: LabelTree,
        weights: list[sp.spmatrix],
        bias: float = 1.0,
        beam_size: int = 10,
        topk: int = 10,
        post_processor: str = "l3-hinge",
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Wrap trained parts; weights follow the contract's convention ((d+1) x K_t CSC when bias > 0)."""
        if not isinstance(tree, LabelTree):
            raise ValueError(f"tree must be a LabelTree, got {type(tree).__name__}")
        weights = list(weights)
        if len(weights) != tree.depth:
            raise ValueError(f"got {len(weights)} weight matrices for a tree of depth {tree.depth}")
        bias = float(bias)
        if not np.isfinite(bias):
            raise ValueError(f"bias must be finite, got {bias}")
        weights = [_as_weight(W, t) for t, W in enumerate(weights)]
        rows = weights[0].shape[0]
        d = rows - 1 if bias > 0 else rows
        if d < 1:
            raise ValueError(f"weights have {rows} rows: too few for bias={bias}")
        for t, (W, K) in enumerate(zip(weights, tree.level_sizes)):
            if W.shape != (rows, K):
                raise ValueError(f"weights[{t}] has shape {W.shape}, expected ({rows}, {K}) for level {t}")
        self.tree = tree
        self.weights = weights
        self.bias = bias
        self.beam_size = check_positive_int(beam_size, "beam_size")
        self.topk = check_positive_int(topk, "topk")
        self.post_processor = _check_post_processor(post_processor)
        self.meta: dict[str, Any] = dict(meta or {})
        self._nr_features = d
        self._index: BeamSearchIndex | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ properties
    @property
    def nr_features(self) -> int:
        """Query dimension d."""
        return self._nr_features

    @property
    def nr_labels(self) -> int:
        """Number of labels L."""
        return self.tree.nr_labels

    @property
    def depth(self) -> int:
        """Number of tree levels (label level included)."""
        return self.tree.depth

    @property
    def nbytes(self) -> int:
        """Bytes of the model's arrays (weights and tree), as stored; the search index is extra."""
        w = sum(W.data.nbytes + W.indices.nbytes + W.indptr.nbytes for W in self.weights)
        return int(w + sum(self.tree.parents(t).nbytes for t in range(self.depth)))

    def __repr__(self) -> str:
        return (
            f"XLinearModel(nr_features={self.nr_features}, nr_labels={self.nr_labels}, "
            f"level_sizes={self.tree.level_sizes}, bias={self.bias}, nnz={sum(W.nnz for W in self.weights)})"
        )

    # ------------------------------------------------------------------------------------------- training
    @classmethod
    def train(
        cls,
        X: object,
        Y: object,
        *,
        label_features: object | None = None,
        alpha: float | None = None,
        nr_splits: int = 16,
        max_leaf_size: int = 100,
        seed: int = 0,
        kmeans_max_iter: int = 20,
        train_params: TrainParams | None = None,
        relevance: object | None = None,
        beam_size: int = 10,
        topk: int = 10,
        threads: int = -1,
        progress: bool = False,
        allow_empty_rows: bool = False,
        ray_address: str | None = None,
        ray_cpus_per_task: int = 1,
    ) -> XLinearModel:
        """Train PIFA -> hierarchical k-means -> per-level linear rankers on X (N x d) and Y (N x L).

        Label embeddings: PIFA alone without ``label_features``; with them, ``alpha`` given -> the convex
        combination alpha*PIFA + (1-alpha)*LF, ``alpha`` None -> the concatenation [PIFA, LF].
        ``threads`` (-1 = all cores) applies to clustering and, unless ``train_params.threads`` is set, training.
        Rows of Y without any label are rejected unless ``allow_empty_rows`` (then, as in PECOS, they only serve
        as negatives of the top level). With ``ray_address`` (``local:N`` or a cluster address), the subtrees
        under the top-level clusters cluster and train as Ray tasks of ``ray_cpus_per_task`` CPUs each
        (:mod:`xmr.distributed`; "tfn" negatives only): the model is the same as in one process.
        """
        import dataclasses
        from contextlib import nullcontext

        from indexing.embeddings import label_embeddings
        from indexing.kmeans import hierarchical_kmeans
        from xmr import __version__
        from xmr.train import TrainParams, train_levels

        params = train_params if train_params is not None else TrainParams()
        if threads != -1 and params.threads == -1:
            params = dataclasses.replace(params, threads=threads)
        beam_size = check_positive_int(beam_size, "beam_size")
        topk = check_positive_int(topk, "topk")
        t_all = time.perf_counter()
        X = check_features(X, name="X")
        Y = check_labels(Y, X.shape[0], allow_empty_rows=allow_empty_rows, name="Y")
        if relevance is not None:
            relevance = check_labels(relevance, X.shape[0], allow_empty_rows=True, nr_labels=Y.shape[1],
                                     name="relevance")
        if label_features is not None:
            label_features = check_features(label_features, name="label_features")
            if label_features.shape[0] != Y.shape[1]:
                raise InputError(
                    f"label_features has {label_features.shape[0]} rows but Y has {Y.shape[1]} labels (columns)"
                )
        mode = "pifa" if label_features is None else ("pifa+lf-concat" if alpha is None else "pifa+lf-convex")
        n, d = X.shape
        L = Y.shape[1]
        LOGGER.info("training XR-Linear: %d instances, %d features, %d labels", n, d, L)
        times: dict[str, float] = {}

        stats: list[dict[str, Any]] = []
        if ray_address is not None:
            from xmr import distributed

            ray_cpus_per_task = check_positive_int(ray_cpus_per_task, "ray_cpus_per_task")
            distributed.check_params(params)
        with nullcontext(None) if ray_address is None else distributed.ray_cluster(ray_address) as ray:
            t0 = time.perf_counter()
            emb = label_embeddings(X, Y, label_features=label_features, alpha=alpha, mode=mode)
            times["label_embeddings_s"] = time.perf_counter() - t0
            LOGGER.info("label embeddings (%s): %.2fs", mode, times["label_embeddings_s"])

            t0 = time.perf_counter()
            if ray is None:
                tree = hierarchical_kmeans(emb, nr_splits=nr_splits, max_leaf_size=max_leaf_size, seed=seed,
                                           max_iter=kmeans_max_iter, threads=threads, progress=progress)
            else:
                tree = distributed.cluster(ray, emb, nr_splits=nr_splits, max_leaf_size=max_leaf_size, seed=seed,
                                           max_iter=kmeans_max_iter, cpus_per_task=ray_cpus_per_task,
                                           threads=threads, progress=progress, stats=stats)
            del emb
            times["clustering_s"] = time.perf_counter() - t0
            LOGGER.info("hierarchical k-means: level sizes %s, %.2fs", tree.level_sizes, times["clustering_s"])

            t0 = time.perf_counter()
            if ray is None:
                weights = train_levels(X, Y, tree, params, relevance=relevance, progress=progress)
            else:
                weights = distributed.train(ray, X, Y, tree, params, relevance=relevance,
                                            cpus_per_task=ray_cpus_per_task, progress=progress, stats=stats)
            times["rankers_s"] = time.perf_counter() - t0
        nnz = sum(W.nnz for W in weights)
        LOGGER.info("rankers: %d levels, %d nonzero weights, %.2fs", tree.depth, nnz, times["rankers_s"])
        times["total_s"] = time.perf_counter() - t_all
        LOGGER.info("training done in %.2fs", times["total_s"])

        meta = {
            "trained_by": f"xmr {__version__}",
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data": {"nr_instances": n, "nr_features": d, "nr_labels": L, "nnz_X": int(getattr(X, "nnz", X.size)),
                     "nnz_Y": int(Y.nnz)},
            "indexing": {"label_embedding": mode, "alpha": alpha, "nr_splits": nr_splits,
                         "max_leaf_size": max_leaf_size, "seed": seed, "kmeans_max_iter": kmeans_max_iter},
            "train_params": _params_dict(params),
            "relevance": relevance is not None,
            "empty_label_rows": int(np.count_nonzero(np.diff(Y.indptr) == 0)),
            "nnz_weights": int(nnz),
            "times": {k: round(v, 4) for k, v in times.items()},
            "threads": threads,
            "cpu_count": os.cpu_count(),
        }
        if ray_address is not None:
            meta["distributed"] = {"ray_address": ray_address, "cpus_per_task": ray_cpus_per_task, "tasks": stats}
        return cls(tree, weights, bias=params.bias, beam_size=beam_size, topk=topk,
                   post_processor="l3-hinge", meta=meta)

    # ----------------------------------------------------------------------------------------- prediction
    @property
    def index(self) -> BeamSearchIndex:
        """The beam-search index over this model, built on first access (thread-safe)."""
        if self._index is None:
            with self._lock:
                if self._index is None:
                    from xmr.inference import BeamSearchIndex

                    t0 = time.perf_counter()
                    self._index = BeamSearchIndex.build(self.tree, self.weights, self.bias,
                                                        nr_features=self.nr_features)
                    LOGGER.debug("built beam-search index (%d bytes) in %.3fs", self._index.nbytes,
                                 time.perf_counter() - t0)
        return self._index

    def warm(self) -> XLinearModel:
        """Build the search index and compile its kernels now, so the first query is fast; returns self."""
        self.index.warm()
        return self

    def _pred_params(self, beam_size: int | None, topk: int | None, post_processor: str | None) -> tuple:
        b = self.beam_size if beam_size is None else check_positive_int(beam_size, "beam_size")
        k = self.topk if topk is None else check_positive_int(topk, "topk")
        pp = self.post_processor if post_processor is None else _check_post_processor(post_processor)
        return b, k, pp

    def predict(
        self, X: object, beam_size: int | None = None, topk: int | None = None, post_processor: str | None = None,
        threads: int = -1,
    ) -> sp.csr_matrix:
        """Top-k label scores of every row of X: N x L CSR float32, each row's entries by descending score."""
        b, k, pp = self._pred_params(beam_size, topk, post_processor)
        X = check_features(X, self.nr_features, name="X")
        return self.index.predict(X, beam_size=b, topk=k, post_processor=pp, threads=threads)

    def predict_one(
        self, x: object, beam_size: int | None = None, topk: int | None = None, post_processor: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of one query (1 x d sparse row or 1-D dense array): ``(labels int32[k], scores float32[k])``."""
        b, k, pp = self._pred_params(beam_size, topk, post_processor)
        return self.index.predict_one(x, beam_size=b, topk=k, post_processor=pp)

    def predict_one_sparse(
        self, indices: np.ndarray, values: np.ndarray, beam_size: int | None = None, topk: int | None = None,
        post_processor: str | None = None, label_range: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of one query given as feature ids and values (a featurizer's ``transform_one`` output);
        ``label_range=(lo, hi)``: only labels with ids in [lo, hi), the beam descending only into nodes that hold one."""
        # skips scipy: wrapping the pair in a 1 x d CSR row cost 16 us of validation against 6 us for the search
        b, k, pp = self._pred_params(beam_size, topk, post_processor)
        return self.index.predict_one_sparse(indices, values, b, k, pp, label_range)

    def single_query_args(self, beam_size: int | None, topk: int) -> tuple:
        """:meth:`BeamSearchIndex.single_query_args` with this model's defaults (beam size, post-processor)."""
        b, k, pp = self._pred_params(beam_size, topk, None)
        return self.index.single_query_args(b, k, pp)

    def predict_rows(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, beam_size: int | None = None,
                     topk: int | None = None, threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k of each CSR query row given as its arrays: (ids int32[n, k], scores float32[n, k], counts[n]),
        each row as predict_one_sparse gives it; on the calling thread unless ``threads`` says otherwise (see
        BeamSearchIndex.predict_rows)."""
        b, k, pp = self._pred_params(beam_size, topk, None)
        return self.index.predict_rows(indptr, indices, data, b, k, pp, threads)

    # ---------------------------------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> None:
        """Save atomically to directory ``path`` in the xmr model format (see :mod:`xmr.model_io`)."""
        from xmr.model_io import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, warm: bool = True, verify: bool = True
             ) -> XLinearModel:
        """Load and validate a saved model; ``mmap`` maps arrays read-only, ``warm`` builds the index now.

        Warming (the default) builds the beam-search layout and runs every kernel once, so the first query is
        as fast as the rest; pass ``warm=False`` when the model is only converted or inspected.
        """
        from xmr.model_io import load_model

        model = load_model(path, mmap=mmap, verify=verify)
        return model.warm() if warm else model


def _params_dict(params: object) -> dict[str, Any]:
    import dataclasses

    if dataclasses.is_dataclass(params):
        return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    return dict(vars(params))
