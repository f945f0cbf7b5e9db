"""xmr/qac/cousers.py: the run_scores kernel against numpy, the prior's arithmetic, the word fallback, files."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import scipy.sparse as sp

from xmr.model_io import ModelFormatError
from xmr.qac.cousers import CoUserPrior, merge_rows, run_scores
from xmr.qac.model import CompletionModel
from xmr.validation import InputError


def reference_run_scores(M: sp.csr_matrix, users, weights, lo: int, hi: int):
    """Plain numpy: the weighted sum of the users' rows, restricted to columns [lo, hi), nonzero entries only."""
    dense = np.zeros(M.shape[1])
    for u, w in zip(users, weights):
        dense += w * M[u].toarray().ravel()
    ids = np.flatnonzero(dense[lo:hi]) + lo
    return ids, dense[ids]


@pytest.mark.parametrize("seed", range(6))
def test_kernel_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    M = sp.random(30, 200, density=0.1, format="csr", random_state=seed, dtype=np.float32)
    M.sort_indices()
    users = rng.choice(30, size=int(rng.integers(0, 8)), replace=False).astype(np.int32)
    weights = rng.random(users.size).astype(np.float32)
    for lo, hi in [(0, 200), (17, 18), (50, 120), (199, 200), (5, 5)]:
        ids, got = run_scores(M.indptr, M.indices, M.data, users, weights, lo, hi)
        want_ids, want = reference_run_scores(M, users, weights, lo, hi)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(got, want, rtol=1e-6)


LABELS = ["hotmail", "x", "x y", "y", "z"]


def tiny() -> CoUserPrior:
    # user a: "x" twice, "y" once; user b: "x" once, "z" three times; user c: "hotmail"
    typed = [("a", "x"), ("a", "x"), ("a", "y"), ("b", "x"), ("b", "z"), ("b", "z"), ("b", "z"), ("c", "hotmail")]
    return CoUserPrior.fit([u for u, _ in typed], [LABELS.index(q) for _, q in typed], LABELS)


def test_prior_is_the_user_mixture():
    prior = tiny()
    ids, got = prior.scores("x", LABELS.index("x"), 0, len(LABELS))
    # P(a | x) = 2/3, P(b | x) = 1/3; P(y | a) = 1/3, P(z | b) = 3/4, P(x | a) = 2/3, P(x | b) = 1/4
    want = {"x": 2 / 3 * 2 / 3 + 1 / 3 * 1 / 4, "y": 2 / 3 * 1 / 3, "z": 1 / 3 * 3 / 4}
    assert dict(zip([LABELS[i] for i in ids], got.tolist())) == pytest.approx(want)
    ids, got = prior.scores("x", LABELS.index("x"), LABELS.index("y"), len(LABELS))  # a prefix's id run
    assert [LABELS[i] for i in ids] == ["y", "z"]


def test_unknown_previous_falls_back_to_its_words():
    prior = tiny()
    users, weights = prior.user_weights("z and more", None)  # only b typed a label with the word "z"
    assert users.tolist() == [1] and weights.tolist() == [1.0]
    ids, _ = prior.scores("z and more", None, 0, len(LABELS))
    assert {LABELS[i] for i in ids} == {"x", "z"}
    # "x" was typed by a and b, "y" only by a: a weighs more
    users, weights = prior.user_weights("x y", None)
    assert users.tolist() == [0] or weights[users.tolist().index(0)] > 0.5
    for nothing in ("never seen", "", "   "):
        assert prior.scores(nothing, None, 0, len(LABELS))[0].size == 0


def test_max_users_keeps_the_heaviest():
    typed = [(f"u{i}", "q") for i in range(10) for _ in range(i + 1)]
    prior = CoUserPrior.fit([u for u, _ in typed], [0] * len(typed), ["q"], max_users=3)
    users, weights = prior.user_weights("q", 0)
    names = sorted({u for u, _ in typed})
    assert sorted(names[u] for u in users) == ["u7", "u8", "u9"] and weights.sum() == pytest.approx(1.0)


def test_bad_fit_input():
    with pytest.raises(InputError, match="users for"):
        CoUserPrior.fit(["a"], [0, 1], LABELS)
    with pytest.raises(InputError, match="max_users"):
        CoUserPrior.fit(["a"], [0], LABELS, max_users=0)


def test_save_load_round_trip_and_corruption(tmp_path):
    prior = tiny()
    prior.save(tmp_path)
    back = CoUserPrior.load(tmp_path, len(LABELS))
    for name in ("user_labels", "label_users", "word_users"):
        assert (getattr(back, name) != getattr(prior, name)).nnz == 0
    assert back.words == prior.words and back.max_users == prior.max_users
    with pytest.raises(ModelFormatError, match="do not fit"):
        CoUserPrior.load(tmp_path, len(LABELS) + 1)
    idx = np.load(tmp_path / "user_labels.indices.npy")
    idx[[0, 1]] = idx[[1, 0]]  # row 0 (user a: "x", "y") out of order
    np.save(tmp_path / "user_labels.indices.npy", idx)
    with pytest.raises(ModelFormatError, match="user_labels is not a valid"):
        CoUserPrior.load(tmp_path, len(LABELS))
    prior.save(tmp_path)
    (tmp_path / "word_users.data.npy").unlink()
    with pytest.raises(ModelFormatError, match="cannot read"):
        CoUserPrior.load(tmp_path, len(LABELS))
    prior.save(tmp_path)
    (tmp_path / "cousers.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ModelFormatError, match="manifest"):
        CoUserPrior.load(tmp_path, len(LABELS))


def user_log(seed: int = 0):
    """Two kinds of users: hotel planners ("hornby" then "hotel deals") and mail readers ("hotmail", much more
    popular overall). After "hornby" a planner is typing, so "hot" should complete to "hotel deals"."""
    rng = random.Random(seed)
    pairs, users = [], []
    for u in range(12):
        planner = u < 4
        for _ in range(10):
            seq = ["hornby", "hotel deals"] if planner else ["weather", "hotmail", "hotmail login"]
            prev = ""
            for q in seq:
                pairs.append((prev, q))
                users.append(f"u{u}")
                prev = q
        pairs.append(("", rng.choice(["lego", "ebay"])))
        users.append(f"u{u}")
    return pairs, users


def test_completion_model_uses_the_prior(tmp_path):
    pairs, users = user_log()
    # planners also typed "rail timetable", never followed by anything: the session model has no feature for it
    # as a previous query, but the users who typed it are known
    for u in range(4):
        pairs.append(("", "rail timetable"))
        users.append(f"u{u}")
    with_prior = CompletionModel.train(pairs, users=users, threads=1, index="trie", max_leaf_size=2)
    without = CompletionModel.train(pairs, threads=1, index="trie", max_leaf_size=2)
    assert without.co_users is None and with_prior.co_users is not None
    assert with_prior.complete("rail timetable", "hot", 1)[0][0] == "hotel deals"
    assert without.complete("rail timetable", "hot", 1)[0][0] == "hotmail"
    assert with_prior.complete("rail timetable", "hot", 1, co_user_weight=0.0)[0][0] == "hotmail"
    # a first query never uses it: MPC
    assert with_prior.complete("", "hot", 1)[0][0] == "hotmail"
    with_prior.save(tmp_path / "m")
    back = CompletionModel.load(tmp_path / "m")
    for prev, prefix in [("rail timetable", "hot"), ("weather", "h"), ("", "h"), ("unknown", "")]:
        assert back.complete(prev, prefix, 5) == with_prior.complete(prev, prefix, 5)
    with pytest.raises(InputError, match="one user per pair"):
        CompletionModel.train(pairs, users=users[:-1], threads=1)
    with pytest.raises(InputError, match="co_user_weight"):
        with_prior.complete("hornby", "ho", co_user_weight=-1)


def _merge_rows_reference(M: sp.csr_matrix, rows: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """merge_rows in plain numpy (what user_weights did before the kernel)."""
    cols = np.concatenate([M.indices[M.indptr[r]:M.indptr[r + 1]] for r in rows])
    vals = np.concatenate([M.data[M.indptr[r]:M.indptr[r + 1]] for r in rows])
    uniq, inv = np.unique(cols, return_inverse=True)
    w = np.bincount(inv, weights=vals)
    if uniq.size > k:
        keep = np.lexsort((uniq, -w))[:k]
        uniq, w = uniq[keep], w[keep]
    return uniq, w


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_cols, density", [(300, 0.08), (30_000, 0.0008)])  # dense and sorting paths
def test_merge_rows_matches_numpy(seed, n_cols, density):
    rng = np.random.default_rng(seed)
    M = sp.random(40, n_cols, density=density, random_state=seed, format="csr", dtype=np.float32)
    M.data = np.round(M.data * 4) / 4  # equal sums: the tie rule matters (and stored zeros still count)
    for k in (1, 5, 50, 1000):
        rows = sorted(rng.choice(40, size=int(rng.integers(1, 6)), replace=False).tolist())
        got = merge_rows(M.indptr, M.indices, M.data, np.array(rows, dtype=np.int64), k, n_cols)
        want = _merge_rows_reference(M, rows, k)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
