"""xmr/qac/rank.py: the merge-and-rank kernel against the numpy ranking it replaced (same ids, same score bits)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tests.test_qac_model import synthetic_pairs
from xmr.qac.model import CO_FLOOR, CompletionModel
from xmr.qac.rank import NO_CANDIDATES, NO_PRIOR, popularity_factors, rank

EXPONENTS = [0.0, 1.0, 2.0, 3.0, 0.5, 1.7]


def _rank_reference(ids, scores, mpc_top, co_ids, co, candidates, counts, gamma, delta, k):
    """CompletionModel.rank_candidates before the kernel (numpy), on arrays: (ids, scores) of the top k.

    ``mpc_top``: MPC's top k; ``co_ids``/``co``: the prior's scores, None where it does not apply.
    """
    floor = 1.0  # no model scores at all: MPC's own order
    got_ids, got = [], []
    if scores is not None and scores.size:
        if scores[-1] > 0:
            floor = float(scores[-1])
        keep = scores > 0
        got_ids.append(ids[keep])
        got.append(scores[keep])
    extra = [mpc_top]
    if co is not None:
        top = np.argpartition(-co, candidates)[:candidates] if co.size > candidates else np.arange(co.size)
        extra.append(co_ids[top[np.lexsort((co_ids[top], -co[top]))]])
    extra = np.concatenate(extra)
    if extra.size:  # below the model's lowest score, in order (MPC first, then the prior)
        got_ids.append(extra)
        got.append(floor * (1.0 - 1e-3 * np.arange(1, extra.size + 1) / (extra.size + 1)))
    if not got_ids:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    every = np.concatenate(got_ids).astype(np.int64)
    ids, first = np.unique(every, return_index=True)  # a label the model returned keeps the model's score
    score = np.concatenate(got).astype(np.float64)[first]
    if gamma:
        score = score * (1.0 + counts[ids]) ** gamma
    if co is not None and co.size:
        prior = np.zeros(ids.size)
        at = np.minimum(np.searchsorted(co_ids, ids), co_ids.size - 1)  # both sorted
        hit = co_ids[at] == ids
        prior[hit] = co[at[hit]]
        score = score * (CO_FLOOR + prior) ** delta
    order = np.lexsort((ids, -score))[:k]
    return ids[order], score[order]


def _kernel(ids, scores, mpc_top, co_ids, co, candidates, counts, gamma, delta, k):
    """The kernel path on the reference's arguments, set up as CompletionModel._rank does."""
    if scores is None or not scores.size:
        ids, scores = NO_CANDIDATES
    if co is None:
        co_ids, co = NO_PRIOR
    return rank(ids, scores, mpc_top, co_ids, co, candidates, CO_FLOOR, delta, popularity_factors(counts, gamma), k)


def assert_same(got, want):
    """Same ids in the same order and the same score bits."""
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1].dtype == np.float64
    np.testing.assert_array_equal(got[1].view(np.uint64), want[1].view(np.uint64))


def random_case(rng: np.random.Generator, nr_labels: int, exponents=EXPONENTS, max_count: int = 50) -> dict:
    """Random kernel inputs: few labels and few distinct values, so that duplicates and score ties are common."""
    counts = rng.integers(1, max_count + 1, nr_labels).astype(np.int64)
    values = np.array([-0.5, 0.0, 1e-4, 0.01, 0.25, 0.5, 3.0])
    nm = min(int(rng.integers(0, 30)) if rng.random() < 0.9 else 0, nr_labels)
    ids = rng.integers(0, nr_labels, nm).astype(np.int32)
    if rng.random() < 0.7:  # a beam returns distinct labels; the merge must not rely on it
        ids = rng.permutation(nr_labels)[:nm].astype(np.int32)
    scores = (-np.sort(-rng.choice(values, nm)) if rng.random() < 0.6 else -np.sort(-rng.random(nm))).astype(
        np.float32)
    if rng.random() < 0.1:  # not best first, or float64 as a caller may pass
        scores = rng.permutation(scores) if rng.random() < 0.5 else rng.random(nm) - 0.2
    if rng.random() < 0.1:
        ids = scores = None
    mpc_top = rng.permutation(nr_labels)[: int(rng.integers(0, 15))].astype(np.int64)
    co_ids = co = None
    if rng.random() < 0.7:  # the prior applies: empty, or sorted distinct ids with (often tied) values
        co_ids = np.sort(rng.permutation(nr_labels)[: int(rng.integers(0, nr_labels + 1)) if rng.random() < 0.9
                                                      else 0]).astype(np.int32)
        pool = rng.random(4) if rng.random() < 0.5 else rng.random(co_ids.size + 1)
        co = rng.choice(pool, co_ids.size).astype(np.float32)
    total = (0 if scores is None else scores.size) + mpc_top.size + (0 if co is None else co.size)
    return dict(ids=ids, scores=scores, mpc_top=mpc_top, co_ids=co_ids, co=co,
                candidates=int(rng.choice([1, 3, 10, 100])), counts=counts,
                gamma=float(rng.choice(exponents)), delta=float(rng.choice(exponents)),
                k=int(rng.integers(1, total + 6)))


@pytest.mark.parametrize("seed", range(4))
def test_kernel_matches_numpy_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    for _ in range(1500):
        case = random_case(rng, int(rng.choice([5, 40, 200])))
        assert_same(_kernel(**case), _rank_reference(**case))


def test_kernel_matches_numpy_with_extreme_exponents():
    """Factors that overflow to inf and underflow to 0 (NaN scores: last, by id, as np.lexsort puts them)."""
    rng = np.random.default_rng(7)
    saw_nan = False
    for _ in range(500):
        case = random_case(rng, 40, exponents=[0.0, 2.0, 60.0, 99.0], max_count=100_000)
        with np.errstate(over="ignore", invalid="ignore"):
            want = _rank_reference(**case)
            assert_same(_kernel(**case), want)
        saw_nan |= bool(np.isnan(want[1]).any())
    assert saw_nan


def test_ties_go_to_the_smaller_id():
    ids, scores = _kernel(np.array([9, 4, 7], dtype=np.int32), np.array([0.5, 0.5, 0.5], dtype=np.float32),
                          np.array([2], dtype=np.int64), None, None, 10, np.ones(10, dtype=np.int64), 1.0, 0.0, 3)
    assert ids.tolist() == [4, 7, 9] and scores.tolist() == [1.0, 1.0, 1.0]


def test_bad_model_candidates_raise():
    counts = np.ones(10, dtype=np.int64)
    with pytest.raises(ValueError, match="differ in length"):
        _kernel(np.arange(3), np.ones(2), np.zeros(0, dtype=np.int64), None, None, 10, counts, 2.0, 0.0, 5)
    with pytest.raises(IndexError, match="not a label id"):
        _kernel(np.array([3, 10]), np.ones(2), np.zeros(0, dtype=np.int64), None, None, 10, counts, 2.0, 0.0, 5)


def test_empty_inputs_rank_nothing():
    none = np.zeros(0, dtype=np.int64)
    got = _kernel(None, None, none, np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32), 10,
                  np.ones(3, dtype=np.int64), 2.0, 3.0, 5)
    assert got[0].size == 0 and got[1].size == 0


@pytest.fixture(scope="module")
def model_with_users() -> CompletionModel:
    pairs = synthetic_pairs(3)
    rng = random.Random(0)
    return CompletionModel.train(pairs, users=[f"u{rng.randrange(12)}" for _ in pairs], threads=1)


def test_model_ranking_matches_numpy(model_with_users):
    """rank_candidates through the model's own candidates, MPC table and co-user prior."""
    m = model_with_users
    rng = np.random.default_rng(0)
    previous = ["", "hornby", "lego", "harry potter", "unknown words", "hotmail login"]
    for _ in range(400):
        prev, k = rng.choice(previous), int(rng.integers(1, 25))
        gamma, delta = float(rng.choice(EXPONENTS)), float(rng.choice(EXPONENTS))
        label = m.labels[int(rng.integers(m.nr_labels))]
        prefix = label[: int(rng.integers(0, 4))]
        m.candidates = int(rng.choice([1, 2, 100]))
        lo, hi = m.prefix_range(prefix)
        idx, val = m.features.transform_one(prev, prefix)
        ids, scores = m.model.predict_one_sparse(idx, val, label_range=(lo, hi), topk=max(m.candidates, k))
        co_ids = co = None
        if delta and prev.strip():
            j = m.labels.index(prev) if prev in m.labels else None
            co_ids, co = m.co_users.scores(prev, j, lo, hi)
        want_ids, want = _rank_reference(ids, scores, m.mpc.top(lo, hi, k), co_ids, co, m.candidates,
                                         m.mpc.counts, gamma, delta, k)
        got = m.rank_candidates(prefix, ids, scores, k, gamma, prev, delta)
        assert got == [(m.labels[i], s) for i, s in zip(want_ids.tolist(), want.tolist())]
        assert all(type(s) is float for _, s in got)
    m.candidates = 100


def test_popularity_tables_are_bounded(model_with_users):
    m = model_with_users
    for g in [0.0, 1.0, 1.5, 2.5, 3.5, 4.5]:
        m.complete("hornby", "h", popularity=g)
    assert len(m._pop_factors) <= 4
