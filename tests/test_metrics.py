"""ranking_metrics against a plain per-row Python loop written straight from the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from xmr.metrics import format_metrics_table, ranking_metrics
from xmr.validation import InputError


def loop_metrics(Y_true, Y_pred, k, skip_empty=False) -> dict[str, float]:
    """Reference: one row at a time, dictionaries and sorted() only."""
    T = sp.csr_matrix(Y_true)
    P = sp.coo_matrix(Y_pred)
    n = T.shape[0]
    preds: list[dict[int, float]] = [dict() for _ in range(n)]
    for i, j, v in zip(P.row, P.col, P.data):
        # duplicates summed in the matrix's dtype, as scipy does (float64 sums would change which scores tie)
        preds[i][int(j)] = preds[i].get(int(j), P.dtype.type(0)) + v
    sums = {f"{m}@{j}": 0.0 for m in ("P", "R", "nDCG") for j in range(1, k + 1)}
    mrr = 0.0
    rows = 0
    for i in range(n):
        truth = set(int(c) for c in T.indices[T.indptr[i] : T.indptr[i + 1]])
        if skip_empty and not truth:
            continue
        rows += 1
        ranked = [c for c, _ in sorted(preds[i].items(), key=lambda cv: (-cv[1], cv[0]))][:k]
        for j in range(1, k + 1):
            hits = sum(1 for c in ranked[:j] if c in truth)
            sums[f"P@{j}"] += hits / j
            sums[f"R@{j}"] += hits / max(len(truth), 1)
            dcg = sum(1.0 / math.log2(r + 2) for r, c in enumerate(ranked[:j]) if c in truth)
            idcg = sum(1.0 / math.log2(r + 2) for r in range(min(j, len(truth))))
            sums[f"nDCG@{j}"] += dcg / idcg if idcg > 0 else 0.0
        for r, c in enumerate(ranked):
            if c in truth:
                mrr += 1.0 / (r + 1)
                break
    out = {key: (v / rows if rows else 0.0) for key, v in sums.items()}
    out[f"MRR@{k}"] = mrr / rows if rows else 0.0
    return out


def _random_case(seed: int, n: int = 60, L: int = 25):
    rng = np.random.default_rng(seed)
    T = sp.random(n, L, density=0.12, format="csr", random_state=rng)
    T.data[:] = 1.0
    T = T.tolil()
    T[3, :] = 0  # an empty row
    T = T.tocsr()
    T.eliminate_zeros()
    # predictions with ties (rounded scores), duplicates (coo with repeated entries), short rows, an empty row
    m = int(n * 6)
    rows = rng.integers(0, n, m)
    cols = rng.integers(0, L, m)
    vals = np.round(rng.random(m) * 2 - 1, 1).astype(np.float32)  # negatives, ties, and -0.0 vs 0.0
    P = sp.csr_matrix(sp.coo_matrix((vals, (rows, cols)), shape=(n, L)), copy=False)
    P_dup = sp.csr_matrix((vals, cols, np.r_[0, np.cumsum(np.bincount(rows[np.argsort(rows, kind="stable")],
                                                                        minlength=n))]), shape=(n, L))
    order = np.argsort(rows, kind="stable")
    P_dup = sp.csr_matrix((vals[order], cols[order], P_dup.indptr), shape=(n, L))  # unsummed duplicates
    return T, P, P_dup


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 10])
@pytest.mark.parametrize("skip_empty", [False, True])
def test_matches_loop(seed, k, skip_empty):
    T, P, P_dup = _random_case(seed)
    for pred in (P, P_dup):
        got = ranking_metrics(T, pred, k=k, skip_empty=skip_empty)
        want = loop_metrics(T, pred, k, skip_empty=skip_empty)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_hand_example():
    # row 0: truth {1, 3}; predicted order 3 (0.9), 0 (0.5), 1 (0.5: tie, larger column goes second)
    # row 1: truth {} ; row 2: truth {2}, only one prediction (miss)
    T = sp.csr_matrix(np.array([[0, 1, 0, 1], [0, 0, 0, 0], [0, 0, 1, 0]], dtype=np.float32))
    P = sp.csr_matrix(np.array([[0.5, 0.5, 0, 0.9], [0.2, 0, 0, 0], [0, 0, 0, 0.3]], dtype=np.float32))
    m = ranking_metrics(T, P, k=3)
    assert m["P@1"] == pytest.approx(1 / 3)
    assert m["P@3"] == pytest.approx((2 / 3) / 3)
    assert m["R@1"] == pytest.approx(0.5 / 3)
    assert m["R@3"] == pytest.approx(1.0 / 3)
    assert m["MRR@3"] == pytest.approx(1 / 3)
    ndcg3_row0 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["nDCG@3"] == pytest.approx(ndcg3_row0 / 3)
    s = ranking_metrics(T, P, k=3, skip_empty=True)
    assert s["P@1"] == pytest.approx(1 / 2)
    assert s["MRR@3"] == pytest.approx(1 / 2)


def test_explicit_zero_true_entries_count_as_labels():
    T = sp.csr_matrix((np.array([0.0], dtype=np.float32), np.array([2]), np.array([0, 1])), shape=(1, 4))
    P = sp.csr_matrix(np.array([[0, 0, 1.0, 0]], dtype=np.float32))
    assert ranking_metrics(T, P, k=1)["P@1"] == 1.0


def test_dense_inputs_and_all_keys():
    T = np.eye(3, dtype=np.float32)
    P = np.eye(3, dtype=np.float32) * 0.7
    m = ranking_metrics(T, P, k=2)
    assert list(m) == ["P@1", "P@2", "R@1", "R@2", "nDCG@1", "nDCG@2", "MRR@2"]
    assert m["P@1"] == 1.0 and m["P@2"] == 0.5 and m["R@2"] == 1.0 and m["MRR@2"] == 1.0
    assert "MRR@2" in format_metrics_table(m, 2)


def test_no_rows():
    T = sp.csr_matrix((0, 5), dtype=np.float32)
    assert ranking_metrics(T, T, k=2)["P@1"] == 0.0
    T = sp.csr_matrix((3, 5), dtype=np.float32)
    assert ranking_metrics(T, T, k=2, skip_empty=True)["MRR@2"] == 0.0


def test_bad_inputs():
    T = sp.csr_matrix(np.eye(3, dtype=np.float32))
    with pytest.raises(InputError, match="shape"):
        ranking_metrics(T, sp.csr_matrix((3, 4), dtype=np.float32))
    with pytest.raises(InputError, match="positive integer"):
        ranking_metrics(T, T, k=0)
    bad = T.copy()
    bad.data[0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        ranking_metrics(T, bad)


def test_larger_case_fast_path_consistency():
    rng = np.random.default_rng(7)
    n, L, k = 2000, 500, 10
    T = sp.random(n, L, density=0.01, format="csr", random_state=rng)
    # prediction rows already sorted by descending score, as the engine writes them
    cols = np.argsort(-rng.random((n, L)), axis=1)[:, :k]
    vals = np.sort(rng.random((n, k)).astype(np.float32), axis=1)[:, ::-1]
    P = sp.csr_matrix((vals.ravel(), cols.ravel(), np.arange(0, n * k + 1, k)), shape=(n, L))
    got = ranking_metrics(T, P, k=k)
    want = loop_metrics(T, P, k)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
