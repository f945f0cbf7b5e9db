"""Rerank kernels against a plain numpy reference; config checks; save/load validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from xmr.model_io import ModelFormatError
from xmr.rerank import (MAX_GROUP, Reranker, RerankConfig, blend_topk, group_scores, group_table, pack_pairs,
                         query_table, rerank_batch, rerank_grouped, rerank_one, score_rows)
from xmr.validation import InputError


# ------------------------------------------------------------------------------------------ numpy reference
def ref_scores(Z: sp.csr_matrix, rows: np.ndarray, q_idx: np.ndarray, q_val: np.ndarray) -> np.ndarray:
    """dot(Z[r], q) for each row r, by dense vectors (float64)."""
    q = np.zeros(Z.shape[1])
    q[q_idx] = q_val
    return np.array([Z[int(r)].toarray().ravel().astype(np.float64) @ q for r in rows])


def ref_rerank(Z, q_idx, q_val, ids, scores, w, k) -> tuple[np.ndarray, np.ndarray]:
    final = (1 - w) * scores.astype(np.float64) + w * ref_scores(Z, ids, q_idx, q_val)
    order = np.argsort(-final, kind="stable")[:k]
    return ids[order], final[order].astype(np.float32)


def random_Z(rng, L=60, d=40, density=0.2, empty_rows=(3, 17, 59)) -> sp.csr_matrix:
    Z = sp.random(L, d, density=density, format="csr", dtype=np.float32, random_state=rng)
    Z = sp.csr_matrix(Z.toarray())  # drop explicit zeros, canonical
    for r in empty_rows:
        Z.data[Z.indptr[r]:Z.indptr[r + 1]] = 0
    Z.eliminate_zeros()
    norms = np.sqrt(np.asarray(Z.multiply(Z).sum(axis=1)).ravel())
    Z = sp.diags(np.where(norms > 0, 1 / np.maximum(norms, 1e-30), 0)).astype(np.float32) @ Z
    Z = Z.tocsr()
    Z.sort_indices()
    return Z


def random_query(rng, d, nnz):
    idx = np.sort(rng.choice(d, nnz, replace=False)).astype(np.int32)
    val = rng.random(nnz).astype(np.float32)
    return idx, val / max(np.linalg.norm(val), 1e-30)


def kernel_args(Z):
    return np.asarray(Z.indptr, np.int64), pack_pairs(np.asarray(Z.indices, np.int32), np.asarray(Z.data, np.float32))


# ---------------------------------------------------------------------------------------------------- kernels
def merge_scores(Z: sp.csr_matrix, rows: np.ndarray, q_idx: np.ndarray, q_val: np.ndarray) -> np.ndarray:
    """dot(Z[r], q) summed in float64 in feature order, as a merge-join does: the kernel's exact sums."""
    q = dict(zip(q_idx.tolist(), q_val.tolist()))
    out = []
    for r in rows:
        s = 0.0
        for f, z in zip(Z.indices[Z.indptr[r]:Z.indptr[r + 1]].tolist(), Z.data[Z.indptr[r]:Z.indptr[r + 1]].tolist()):
            if f in q:
                s += float(np.float32(z)) * float(np.float32(q[f]))
        out.append(s)
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_rows_matches_reference(seed):
    rng = np.random.default_rng(seed)
    Z = random_Z(rng)
    for nnz in (0, 1, 5, 40):
        q_idx, q_val = random_query(rng, Z.shape[1], nnz)
        rows = rng.integers(0, Z.shape[0], 30).astype(np.int32)
        rows[:3] = [3, 17, 59]  # empty rows score 0
        out = np.empty(rows.size)
        score_rows(*kernel_args(Z), rows, q_idx, q_val, out)
        np.testing.assert_allclose(out, ref_scores(Z, rows, q_idx, q_val), rtol=1e-6, atol=1e-9)
        assert out.tobytes() == merge_scores(Z, rows, q_idx, q_val).tobytes()
        assert (out[:3] == 0).all()


def test_query_table_and_colliding_features():
    """Every query feature is found from its home slot; features sharing a home slot (probed past it) score
    exactly as in a merge-join."""
    rng = np.random.default_rng(5)
    for nnz in (1, 21, 200, 3000):
        q_idx, q_val = random_query(rng, 1 << 20, nnz)
        keys, vals, spill, shift = query_table(q_idx, q_val)
        assert (keys >= 0).sum() == nnz and keys.size >= 8 * nnz
        for f, v in zip(q_idx.tolist(), q_val.tolist()):
            h = ((f * 0x9E3779B1) & 0xFFFFFFFF) >> shift
            while keys[h] != f:
                assert spill[((f * 0x9E3779B1) & 0xFFFFFFFF) >> shift] and keys[h] != -1
                h = (h + 1) % keys.size
            assert vals[h] == np.float32(v)
    # three ids with the same home slot in the 32-slot table of a 3-feature query, and one id probing past them
    home = [f for f in range(5000) if ((f * 0x9E3779B1) & 0xFFFFFFFF) >> 27 == 7][:4]
    q_idx = np.array(home[:3], np.int32)
    q_val = np.array([0.5, 0.25, 0.125], np.float32)
    keys, _, spill, shift = query_table(q_idx, q_val)
    assert keys.size == 32 and shift == 27 and spill[7] and keys[7:10].tolist() == home[:3]
    ids = np.array([home[0], home[3], home[1], home[2], 1], np.int32)
    Z = sp.csr_matrix((np.array([1, 2, 4, 8, 16], np.float32), ids, np.array([0, 2, 5])), shape=(2, 5000))
    Z.sort_indices()
    out = np.empty(2)
    score_rows(*kernel_args(Z), np.array([1, 0], np.int32), q_idx, q_val, out)
    assert out.tolist() == [4 * 0.25 + 8 * 0.125, 1 * 0.5]


def group_args(Z, groups):
    g = group_table(np.asarray(Z.indptr, np.int64), np.asarray(Z.indices, np.int32), np.asarray(Z.data, np.float32),
                    groups, Z.shape[1])
    return g.tab, g.mask, g.ent, g.groups, g.offset, g.gsize, Z.shape[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_scores_are_score_rows_sums(seed):
    """The group table gives bit-identical sums to the row scan, for any grouping (contiguous or scattered
    groups, one group, one label per group, empty groups), repeated candidates and empty queries."""
    rng = np.random.default_rng(seed)
    Z = random_Z(rng)
    L = Z.shape[0]
    groupings = [np.arange(L) // 7, rng.integers(0, 9, L), np.zeros(L, np.int64), np.arange(L),
                 np.where(np.arange(L) < 30, 2, 5)]  # groups 0, 1, 3, 4 empty
    for groups in groupings:
        args = group_args(Z, groups)
        for nnz in (0, 1, 5, 40):
            q_idx, q_val = random_query(rng, Z.shape[1], nnz)
            rows = rng.integers(0, L, 30).astype(np.int32)
            rows[:4] = [3, 17, 59, 3]
            out, ref = np.empty(rows.size), np.empty(rows.size)
            group_scores(*args, rows, q_idx, q_val, out)
            score_rows(*kernel_args(Z), rows, q_idx, q_val, ref)
            assert out.tobytes() == ref.tobytes()
            assert out.tobytes() == merge_scores(Z, rows, q_idx, q_val).tobytes()
        out = np.empty(0)
        group_scores(*args, np.zeros(0, np.int32), q_idx, q_val, out)  # no candidates


def test_group_table_layout_and_limits():
    rng = np.random.default_rng(3)
    Z = random_Z(rng)
    L = Z.shape[0]
    groups = rng.integers(0, 6, L)
    g = group_table(np.asarray(Z.indptr, np.int64), Z.indices, Z.data, groups, Z.shape[1])
    assert g.gsize.sum() == L and (g.mask + 1) & g.mask == 0
    for gr in range(6):  # each label's place in its group: groups keep label-id order
        members = np.flatnonzero(groups == gr)
        assert g.offset[members].tolist() == list(range(members.size))
    assert (g.tab[0::2] >= 0).sum() <= 4 * (g.mask + 1) // 2  # at most half full
    assert group_table(np.zeros(MAX_GROUP + 2, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32),
                       np.zeros(MAX_GROUP + 1, np.int64), 3) is None  # a flat tree: no table
    with pytest.raises(InputError, match="one group id"):
        group_table(np.asarray(Z.indptr, np.int64), Z.indices, Z.data, groups[:-1], Z.shape[1])
    with pytest.raises(InputError, match="one group id"):
        group_table(np.asarray(Z.indptr, np.int64), Z.indices, Z.data, groups - 1, Z.shape[1])


@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
def test_rerank_grouped_is_rerank_one(w):
    rng = np.random.default_rng(11)
    Z = random_Z(rng)
    args = group_args(Z, np.arange(Z.shape[0]) // 10)
    for trial in range(20):
        q_idx, q_val = random_query(rng, Z.shape[1], int(rng.integers(0, 15)))
        c = int(rng.integers(1, 40))
        ids = rng.choice(Z.shape[0], c, replace=False).astype(np.int32)
        scores = np.sort(rng.random(c).astype(np.float32))[::-1].copy()
        for k in (1, 5, c + 3):
            a_ids, a_sc = np.empty(min(k, c), np.int32), np.empty(min(k, c), np.float32)
            b_ids, b_sc = a_ids.copy(), a_sc.copy()
            assert rerank_one(*kernel_args(Z), q_idx, q_val, ids, scores, w, k, a_ids, a_sc) == \
                rerank_grouped(*args, q_idx, q_val, ids, scores, w, k, b_ids, b_sc)
            assert a_ids.tolist() == b_ids.tolist() and a_sc.tobytes() == b_sc.tobytes()


@pytest.mark.parametrize("w", [0.0, 0.3, 0.5, 1.0])
def test_rerank_one_matches_reference(w):
    rng = np.random.default_rng(7)
    Z = random_Z(rng)
    for trial in range(20):
        q_idx, q_val = random_query(rng, Z.shape[1], int(rng.integers(0, 15)))
        c = int(rng.integers(1, 40))
        ids = rng.choice(Z.shape[0], c, replace=False).astype(np.int32)
        scores = np.sort(rng.random(c).astype(np.float32))[::-1].copy()
        for k in (1, 5, c, c + 3):
            out_ids = np.empty(min(k, c), np.int32)
            out_sc = np.empty(out_ids.size, np.float32)
            n = rerank_one(*kernel_args(Z), q_idx, q_val, ids, scores, w, k, out_ids, out_sc)
            r_ids, r_sc = ref_rerank(Z, q_idx, q_val, ids, scores, w, k)
            assert n == min(k, c)
            np.testing.assert_array_equal(out_ids, r_ids)
            np.testing.assert_allclose(out_sc, r_sc, rtol=1e-6, atol=1e-7)


def test_ties_keep_beam_order_and_empty_query():
    Z = sp.csr_matrix(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=np.float32))
    ids = np.array([4, 0, 2, 1, 3], np.int32)
    scores = np.full(5, 0.5, np.float32)
    args = kernel_args(Z)
    out_ids, out_sc = np.empty(5, np.int32), np.empty(5, np.float32)
    # query = feature 0: rows 4, 0, 1 tie at cosine 1 and keep their candidate order
    rerank_one(*args, np.array([0], np.int32), np.array([1], np.float32), ids, scores, 0.5, 5, out_ids, out_sc)
    assert out_ids.tolist() == [4, 0, 1, 2, 3]
    np.testing.assert_allclose(out_sc, [0.75, 0.75, 0.75, 0.25, 0.25])
    assert out_ids.tolist() == ref_rerank(Z, np.array([0]), np.array([1.0]), ids, scores, 0.5, 5)[0].tolist()
    # empty query: every cosine 0, order unchanged, scores scaled by (1 - w)
    n = rerank_one(*args, np.zeros(0, np.int32), np.zeros(0, np.float32), ids, scores, 0.3, 3, out_ids, out_sc)
    assert n == 3 and out_ids[:3].tolist() == [4, 0, 2]
    np.testing.assert_allclose(out_sc[:3], 0.35)
    # no candidates
    assert rerank_one(*args, np.array([0], np.int32), np.array([1], np.float32), np.zeros(0, np.int32),
                      np.zeros(0, np.float32), 0.5, 3, out_ids, out_sc) == 0


def test_blend_topk_stable():
    ids = np.arange(6, dtype=np.int32)
    scores = np.array([0.9, 0.8, 0.8, 0.1, 0.8, 0.0], np.float32)
    cos = np.zeros(6)
    out_ids, out_sc = np.empty(4, np.int32), np.empty(4, np.float32)
    assert blend_topk(ids, scores, cos, 0.0, 4, out_ids, out_sc) == 4
    assert out_ids.tolist() == [0, 1, 2, 4]


def test_batch_matches_one_and_reranker_wrappers():
    rng = np.random.default_rng(3)
    Z = random_Z(rng)
    n, d, L = 25, Z.shape[1], Z.shape[0]
    queries = [random_query(rng, d, int(rng.integers(0, 12))) for _ in range(n)]
    Q = sp.csr_matrix((np.concatenate([v for _, v in queries]), np.concatenate([i for i, _ in queries]),
                       np.cumsum([0] + [i.size for i, _ in queries])), shape=(n, d))
    cands = [rng.choice(L, int(rng.integers(0, 30)), replace=False).astype(np.int32) for _ in range(n)]
    cscores = [np.sort(rng.random(c.size).astype(np.float32))[::-1].copy() for c in cands]
    P = sp.csr_matrix((np.concatenate(cscores), np.concatenate(cands), np.cumsum([0] + [c.size for c in cands])),
                      shape=(n, L))
    rr = Reranker(Z, RerankConfig(candidates=30, weight=0.6))
    k = 7
    R = rr.rerank_batch(Q, P, k)  # 25 rows: serial kernel
    grouped = Reranker(Z, rr.config).group_by(np.arange(L) // 8)
    assert grouped.grouped is not None and rr.grouped is None
    assert grouped.with_config({"candidates": 5, "weight": 0.6}).grouped is grouped.grouped  # shared
    assert grouped.group_by(np.arange(L) // 8).grouped is grouped.grouped  # same groups: not rebuilt
    R2 = rr.rerank_batch(sp.vstack([Q, Q]).tocsr(), sp.vstack([P, P]).tocsr(), k, threads=2)  # parallel kernel
    np.testing.assert_array_equal(R2.indptr[: n + 1], R.indptr)
    np.testing.assert_array_equal(R2.indices, np.concatenate([R.indices, R.indices]))
    np.testing.assert_array_equal(R2.data, np.concatenate([R.data, R.data]))
    assert R.shape == (n, L)
    for i in range(n):
        a, b = R.indptr[i], R.indptr[i + 1]
        one_ids, one_sc = rr.rerank_one(*queries[i], cands[i], cscores[i], k)
        np.testing.assert_array_equal(R.indices[a:b], one_ids)
        np.testing.assert_array_equal(R.data[a:b], one_sc)
        r_ids, r_sc = ref_rerank(Z, *queries[i], cands[i], cscores[i], 0.6, k)
        np.testing.assert_array_equal(one_ids, r_ids)
        np.testing.assert_allclose(one_sc, r_sc, rtol=1e-6, atol=1e-7)
        g_ids, g_sc = grouped.rerank_one(*queries[i], cands[i], cscores[i], k)  # through the group table
        assert g_ids.tolist() == one_ids.tolist() and g_sc.tobytes() == one_sc.tobytes()
    # the raw kernel, called directly
    out_indptr = R.indptr.astype(np.int64)
    out_ids, out_sc = np.empty(R.nnz, np.int32), np.empty(R.nnz, np.float32)
    rerank_batch(*kernel_args(Z), Q.indptr.astype(np.int64), Q.indices, Q.data, P.indptr.astype(np.int64),
                 P.indices, P.data, 0.6, k, out_indptr, out_ids, out_sc)
    np.testing.assert_array_equal(out_ids, R.indices)


def test_unsorted_Z_and_query_matrix_are_sorted():
    Z = sp.csr_matrix((np.array([0.6, 0.8], np.float32), np.array([2, 0], np.int32), np.array([0, 2])),
                      shape=(1, 3))
    assert not Z.has_sorted_indices
    rr = Reranker(Z, {"candidates": 1, "weight": 1.0})
    ids, sc = rr.rerank_one(np.array([0, 2], np.int32), np.array([0.8, 0.6], np.float32), np.array([0]),
                            np.array([0.0]), 1)
    np.testing.assert_allclose(sc, [1.0], rtol=1e-6)


# ----------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
def test_config_rejects_bad_candidates(bad):
    with pytest.raises(InputError, match="candidates"):
        RerankConfig(candidates=bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", None])
def test_config_rejects_bad_weight(bad):
    with pytest.raises(InputError, match="weight"):
        RerankConfig(weight=bad)


def test_config_coerce():
    assert RerankConfig.coerce({"candidates": 50, "weight": 1}) == RerankConfig(50, 1.0)
    with pytest.raises(InputError, match="unknown keys"):
        RerankConfig.coerce({"cands": 5})
    with pytest.raises(InputError, match="RerankConfig"):
        RerankConfig.coerce(5)


# -------------------------------------------------------------------------------------------------------- I/O
@pytest.fixture
def saved_reranker(tmp_path):
    Z = random_Z(np.random.default_rng(0))
    Reranker(Z, RerankConfig(20, 0.4)).save(tmp_path / "rr")
    return Z, tmp_path / "rr"


def test_save_load_roundtrip(saved_reranker):
    Z, path = saved_reranker
    for mmap in (True, False):
        rr = Reranker.load(path, mmap=mmap, shape=Z.shape)
        assert rr.config == RerankConfig(20, 0.4) and rr.shape == Z.shape and rr.nnz == Z.nnz
        np.testing.assert_array_equal(rr.indices, Z.indices)
        np.testing.assert_array_equal(rr.data, Z.data)
        rr.warm()
    assert isinstance(Reranker.load(path).data, np.memmap)


def _edit(path, **changes):
    doc = json.loads((path / "rerank.json").read_text())
    doc.update(changes)
    (path / "rerank.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("damage, match", [
    (lambda p: (p / "rerank.json").unlink(), r"rr/rerank.json: missing"),
    (lambda p: (p / "rerank.json").write_text("{"), r"rr/rerank.json: not valid JSON"),
    (lambda p: _edit(p, format="x"), r"rr/rerank.json: not an xmr.rerank"),
    (lambda p: _edit(p, version=9), r"rr/rerank.json: unsupported version"),
    (lambda p: _edit(p, weight=3), r"rr/rerank.json: rerank weight"),
    (lambda p: _edit(p, shape=[5]), r"rr/rerank.json: field 'shape'"),
    (lambda p: (p / "data.npy").write_bytes(b"junk"), r"rr/data.npy: not a valid .npy"),
    (lambda p: (p / "indices.npy").unlink(), r"rr/indices.npy: array file is missing"),
    (lambda p: np.save(p / "indices.npy", np.load(p / "indices.npy")[::-1].copy()), r"rr/indices.npy: "
     "feature ids not sorted"),
    (lambda p: np.save(p / "data.npy", np.full_like(np.load(p / "data.npy"), np.nan)), r"rr/data.npy: non-finite"),
])
def test_corrupt_reranker_names_the_file(saved_reranker, damage, match):
    _, path = saved_reranker
    damage(path)
    with pytest.raises(ModelFormatError, match=match):
        Reranker.load(path)


def test_shape_mismatch(saved_reranker):
    Z, path = saved_reranker
    with pytest.raises(ModelFormatError, match="retriever has 61 labels"):
        Reranker.load(path, shape=(61, Z.shape[1]))
