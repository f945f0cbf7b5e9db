"""Ranking metrics of predicted label scores against true labels (P@k, R@k, nDCG@k, MRR@k).

Definitions follow PECOS's ``smat_util.Metrics`` so numbers are comparable with published anchors:

- each row of ``Y_pred`` is ranked by score, descending; ties go to the smaller column; duplicate entries of a
  row are summed first. Stored entries count as predictions whatever their value (zero scores included);
- ``T_i`` = the *stored* columns of row ``i`` of ``Y_true`` (values ignored); ``m_i(k)`` = how many of the
  first ``k`` predicted columns are in ``T_i`` (if fewer than ``k`` were predicted the count carries forward);
- ``P@k = sum_i m_i(k) / (N k)`` (the denominator is ``k`` even when fewer were predicted);
- ``R@k = mean_i m_i(k) / max(|T_i|, 1)``;
- ``nDCG@k = mean_i DCG_i(k) / IDCG_i(k)`` with binary gains and ``1/log2(rank+1)`` discounts, the ideal DCG
  taken over ``min(k, |T_i|)`` hits (0 for rows with no true label);
- ``MRR@k = mean_i 1/rank`` of the first true label within the top ``k`` (0 when none).

``N`` counts every row unless ``skip_empty=True``, which drops rows with no true label (the convention
"averaged over test rows with at least one label").
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from xmr.validation import InputError, check_positive_int

__all__ = ["ranking_metrics", "hit_matrix", "format_metrics_table"]


def _as_csr(M: object, name: str) -> sp.csr_matrix:
    if not sp.issparse(M):
        M = np.asarray(M)
        if M.ndim != 2:
            raise InputError(f"{name}: expected a 2-D matrix, got shape {M.shape}")
    m = sp.csr_matrix(M)
    if m.nnz and not np.isfinite(m.data).all():
        raise InputError(f"{name}: has non-finite values (NaN or inf)")
    return m


def _row_score_keys(rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """uint64 keys sorting by row ascending, then float32 score descending (one integer sort, no lexsort)."""
    bits = (np.asarray(scores, dtype=np.float32) + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into 0.0
    ascending = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))  # IEEE order as unsigned
    return (rows.astype(np.uint64) << np.uint64(32)) | (~ascending).astype(np.uint64)


def hit_matrix(Y_true: sp.csr_matrix, Y_pred: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hits, nr_true)``: ``hits[i, r]`` is True when the rank-``r`` prediction of row ``i`` is a true label.

    O(nnz(Y_pred) log nnz(Y_pred) + nnz(Y_true)) time, O(N k) memory.
    """
    n, nr_cols = Y_true.shape
    T = Y_true.copy()
    T.sum_duplicates()  # canonical: sorted unique columns per row, explicit zeros kept (they are "stored")
    P = Y_pred.copy()
    P.sum_duplicates()  # sums duplicates and sorts columns ascending, so a stable sort keeps ties by column
    nr_true = np.diff(T.indptr).astype(np.int64)
    p_rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(P.indptr))
    order = np.argsort(_row_score_keys(p_rows, P.data), kind="stable")  # row, score desc, then column
    rank = np.arange(P.nnz, dtype=np.int64) - P.indptr[p_rows].astype(np.int64)
    top = rank < k
    rows = p_rows[top]
    cols = P.indices[order][top].astype(np.int64)
    rank = rank[top]
    t_rows = np.repeat(np.arange(n, dtype=np.int64), nr_true)
    true_keys = t_rows * nr_cols + T.indices.astype(np.int64)  # sorted because T is canonical
    pred_keys = rows * nr_cols + cols
    pos = np.searchsorted(true_keys, pred_keys)
    found = pos < true_keys.size
    found[found] = true_keys[pos[found]] == pred_keys[found]
    hits = np.zeros((n, k), dtype=bool)
    hits[rows[found], rank[found]] = True
    return hits, nr_true


def ranking_metrics(Y_true: object, Y_pred: object, k: int = 10, skip_empty: bool = False) -> dict[str, float]:
    """P@1..k, R@1..k, nDCG@1..k and MRR@k of predicted scores ``Y_pred`` against ``Y_true``, as fractions."""
    k = check_positive_int(k, "k")
    T = _as_csr(Y_true, "Y_true")
    P = _as_csr(Y_pred, "Y_pred")
    if T.shape != P.shape:
        raise InputError(f"Y_true has shape {T.shape} but Y_pred has shape {P.shape}; they must match")
    hits, nr_true = hit_matrix(T, P, k)
    if skip_empty:
        keep = nr_true > 0
        hits, nr_true = hits[keep], nr_true[keep]
    n = hits.shape[0]
    out: dict[str, float] = {}
    if n == 0:
        for name in ("P", "R", "nDCG"):
            out.update({f"{name}@{j}": 0.0 for j in range(1, k + 1)})
        out[f"MRR@{k}"] = 0.0
        return out
    ks = np.arange(1, k + 1)
    matched = np.cumsum(hits, axis=1, dtype=np.int64)  # m_i(j) for j = 1..k
    prec = matched.sum(axis=0) / (n * ks)
    rec = (matched / np.maximum(nr_true, 1)[:, None]).mean(axis=0)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = np.cumsum(hits * disc, axis=1)
    ideal_cum = np.concatenate(([0.0], np.cumsum(disc)))
    idcg = ideal_cum[np.minimum(ks[None, :], nr_true[:, None])]
    ndcg = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0).mean(axis=0)
    any_hit = hits.any(axis=1)
    mrr = np.where(any_hit, 1.0 / (np.argmax(hits, axis=1) + 1), 0.0).mean()
    for name, values in (("P", prec), ("R", rec), ("nDCG", ndcg)):
        out.update({f"{name}@{j}": float(v) for j, v in zip(ks, values)})
    out[f"MRR@{k}"] = float(mrr)
    return out


def format_metrics_table(metrics: dict[str, float], k: int) -> str:
    """A readable table (percent, 2 decimals) of the output of :func:`ranking_metrics`."""
    lines = [f"{'k':>3}  {'P@k':>7}  {'R@k':>7}  {'nDCG@k':>7}"]
    for j in range(1, k + 1):
        lines.append(
            f"{j:>3}  {100 * metrics[f'P@{j}']:7.2f}  {100 * metrics[f'R@{j}']:7.2f}  {100 * metrics[f'nDCG@{j}']:7.2f}"
        )
    lines.append(f"MRR@{k}: {100 * metrics[f'MRR@{k}']:.2f}")
    return "\n".join(lines)
