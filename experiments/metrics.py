"""Ranking metrics for the benchmarks: xmr.metrics.ranking_metrics when importable, else a local copy.

Both follow anchors.md: ranking by descending score (ties: smaller label id); P@k = hits in the top k / k and
R@k = hits / |true labels|, MRR@k = 1/rank of the first hit (0 if none), averaged over rows with >= 1 label.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

REPORTED = ("P@1", "P@3", "P@5", "R@10", "MRR@10")


def local_ranking_metrics(Y_true: sp.spmatrix, Y_pred: sp.spmatrix, k: int = 10, skip_empty: bool = True
                          ) -> dict[str, float]:
    """P@1..k, R@1..k and MRR@k as fractions (plain numpy, row loop)."""
    T = sp.csr_matrix(Y_true)
    P = sp.csr_matrix(Y_pred)
    if T.shape != P.shape:
        raise ValueError(f"Y_true has shape {T.shape} but Y_pred has shape {P.shape}")
    hits = np.zeros((T.shape[0], k), bool)
    nr_true = np.diff(T.indptr)
    for i in range(T.shape[0]):
        lo, hi = P.indptr[i], P.indptr[i + 1]
        lab, sc = P.indices[lo:hi], P.data[lo:hi]
        top = lab[np.lexsort((lab, -sc))][:k]
        hits[i, : len(top)] = np.isin(top, T.indices[T.indptr[i]:T.indptr[i + 1]])
    if skip_empty:
        hits, nr_true = hits[nr_true > 0], nr_true[nr_true > 0]
    if hits.shape[0] == 0:
        return {}
    cum = np.cumsum(hits, axis=1)
    ks = np.arange(1, k + 1)
    out = {f"P@{j}": float(v) for j, v in zip(ks, cum.mean(axis=0) / ks)}
    out.update({f"R@{j}": float(v) for j, v in zip(ks, (cum / np.maximum(nr_true, 1)[:, None]).mean(axis=0))})
    first = np.where(hits.any(axis=1), 1.0 / (np.argmax(hits, axis=1) + 1), 0.0)
    out[f"MRR@{k}"] = float(first.mean())
    return out


def ranking_metrics(Y_true: sp.spmatrix, Y_pred: sp.spmatrix, k: int = 10) -> tuple[dict[str, float], str]:
    """(metrics, implementation name); the xmr implementation, cross-checked against the local one."""
    local = local_ranking_metrics(Y_true, Y_pred, k=k, skip_empty=True)
    try:
        from xmr.metrics import ranking_metrics as xmr_metrics
    except ImportError:
        return local, "experiments.metrics (xmr.metrics not importable)"
    ours = xmr_metrics(Y_true, Y_pred, k=k, skip_empty=True)
    bad = [m for m in REPORTED if m in local and abs(ours.get(m, np.nan) - local[m]) > 1e-9]
    if bad:
        raise AssertionError(f"xmr.metrics and experiments.metrics disagree on {bad}: "
                             f"{[(ours.get(m), local[m]) for m in bad]}")
    return ours, "xmr.metrics"
