"""Merge and rank query-completion candidates in one numba kernel: the last step of ``CompletionModel.complete``.

The numpy version took ~20 small calls (concatenate, unique, lexsort, argpartition, searchsorted, power, ...),
each with a fixed overhead: ~60% of a warm ``complete`` call on AOL, more with cold caches. The kernel gives the
same completions in the same order with bit-identical scores (tests/test_qac_rank.py checks it against the numpy
version). Two things stay in numpy on purpose, because the kernel could only approximate their bits:

* the powers ``(1 + count) ** popularity`` and ``(CO_FLOOR + prior) ** co_user_weight``: numpy's float64 power is
  not libm's ``pow`` (numba's): it has fast paths (exponent 2 -> square, 0.5 -> sqrt) and, on AVX-512 machines,
  an SVML kernel that differs from glibc in the last bit for ~5% of inputs. The kernel multiplies by factors
  numpy computed: a per-label table per popularity exponent (cached by the model), and the prior's per request;
* the cut of the prior's candidates when it has more than asked for: ``np.argpartition`` keeps an arbitrary
  (implementation- and machine-dependent) choice of the entries tied at the cut. On the 60,000 AOL serving
  requests 2,900 cut, 2,175 of them through a tie, and 1,893 keep other entries than a (score desc, id asc) cut
  would; such a cut would change 5 of the 60,000 answers, so it is left for a deliberate change.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

__all__ = ["NO_CANDIDATES", "NO_PRIOR", "merge_rank", "popularity_factors", "rank"]

NO_IDS = np.zeros(0, dtype=np.int64)
NO_SCORES = np.zeros(0, dtype=np.float64)
NO_CANDIDATES = (np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32))  # the beam search's dtypes
NO_PRIOR = (np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32))  # CoUserPrior.scores' dtypes


def popularity_factors(counts: np.ndarray, weight: float) -> np.ndarray:
    """(1 + count) ** weight of every label as numpy computes it (a table to cache per weight); empty for 0."""
    return (1.0 + counts) ** weight if weight else NO_SCORES


@lru_cache(maxsize=64)
def _floor_factor(floor: float, weight: float) -> float:
    """floor ** weight as numpy computes it inside an array: the prior factor of a label the prior lacks."""
    return float(((np.zeros(1) + floor) ** weight)[0])


def rank(model_ids: np.ndarray, model_scores: np.ndarray, mpc_ids: np.ndarray, co_ids: np.ndarray, co: np.ndarray,
         prior_candidates: int, co_floor: float, co_weight: float, pop_factor: np.ndarray,
         k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of the top k merged candidates: numpy computes what its bits define, :func:`merge_rank` the rest.

    ``model_ids`` / ``model_scores``: best first, int32 / float32 as the beam search returns them (other dtypes
    are taken as int64 / float64: a second compiled signature). ``mpc_ids``: int64 (``MostPopularCompletion.top``).
    ``co_ids`` / ``co``: the prior's nonzero entries as ``CoUserPrior.scores`` returns them (int32 ids sorted,
    float32), empty for no prior; its top ``prior_candidates`` compete; factor (co_floor + co) ** co_weight.
    ``pop_factor``: :func:`popularity_factors` of the labels' counts.
    """
    # every numpy call costs ~5 us with cold caches (a served request's case), so none is spent that the bits
    # or the dtypes do not need
    cut, co_factor, absent = NO_IDS, NO_SCORES, 1.0
    if co.size:
        if co.size > prior_candidates:  # ties at the cut fall as np.argpartition leaves them, as before the kernel
            cut = np.argpartition(-co, prior_candidates)[:prior_candidates]
        co_factor = np.add(co, co_floor, dtype=np.float64) ** co_weight
        absent = _floor_factor(co_floor, co_weight)
    if model_ids.dtype != np.int32 or model_scores.dtype != np.float32:
        model_ids, model_scores = np.asarray(model_ids, dtype=np.int64), np.asarray(model_scores, dtype=np.float64)
    return merge_rank(model_ids, model_scores, mpc_ids, co_ids, co, cut, co_factor, absent, pop_factor, k)


@njit(cache=True, nogil=True)
def merge_rank(model_ids, model_scores, mpc_ids, co_ids, co, cut, co_factor, co_absent, pop_factor, k):
    """(ids, scores) of the top ``k`` candidates, score descending, ties by id ascending.

    Candidates, in order: the model's (``model_ids`` / ``model_scores``, best first, any int / float) with a score
    > 0, MPC's (``mpc_ids`` int64), then the prior's: its entries (``co_ids`` int32 sorted / ``co`` float32) at
    positions ``cut`` (int64; empty: all of them) by (co desc, id asc). The n extra ones (MPC's and the prior's)
    score floor * (1 - 1e-3 j / (n + 1)), j = 1..n, with floor the model's last score if > 0, else 1.0. A label
    keeps its first candidate's score, times ``pop_factor[id]`` (float64 per label; empty: off), times
    ``co_factor`` (float64, per ``co`` entry) at its ``co_ids`` entry, else ``co_absent`` (no prior: off).

    O(c (log |co| + min(k, 32)) + p log p) expected for c candidates, p of them the prior's (p <= its cut): a hash
    table drops repeated labels, a binary search finds each label's prior, insertion keeps the top k (a merge
    sort for k > 32). ~2.5 us warm for 100 model + 10 MPC candidates, ~6 us with 100 more from the prior.
    """
    nm = model_scores.size
    if model_ids.size != nm:
        raise ValueError("model_ids and model_scores differ in length")
    floor = model_scores[nm - 1] if nm and model_scores[nm - 1] > 0 else 1.0
    picked = np.sort(cut) if cut.size else np.arange(co.size)
    picked = picked[np.argsort(-co[picked], kind="mergesort")]  # co_ids ascending: stable = ties by id
    n_extra = mpc_ids.size + picked.size
    size = 16
    while size < 2 * (nm + n_extra):
        size *= 2
    slots = np.full(size, -1, dtype=np.int64)  # open addressing: label id -> its position in ids
    ids = np.empty(nm + n_extra, dtype=np.int64)
    score = np.empty(nm + n_extra, dtype=np.float64)
    m = 0
    for t in range(nm + n_extra):
        if t < nm:
            q, s = model_ids[t], model_scores[t]
            if not s > 0:
                continue
            if pop_factor.size and not 0 <= q < pop_factor.size:  # the only ids from outside
                raise IndexError("a model candidate is not a label id")
        else:
            j = t - nm
            q = mpc_ids[j] if j < mpc_ids.size else np.int64(co_ids[picked[j - mpc_ids.size]])
            s = floor * (1.0 - 1e-3 * (j + 1) / (n_extra + 1))  # the numpy version's operation order
        h = (q * 2654435761) & (size - 1)  # odd multiplier: a run of ids spreads over distinct slots
        while slots[h] >= 0 and ids[slots[h]] != q:
            h = (h + 1) & (size - 1)
        if slots[h] < 0:  # a label keeps its first candidate's score
            slots[h], ids[m], score[m] = m, q, s
            m += 1
    key = np.empty(m, dtype=np.float64)
    for i in range(m):
        s = score[i]
        if pop_factor.size:
            s = s * pop_factor[ids[i]]
        if co_ids.size:
            at = np.searchsorted(co_ids, ids[i])
            s = s * (co_factor[at] if at < co_ids.size and co_ids[at] == ids[i] else co_absent)
        score[i] = s
        key[i] = -s if s == s else np.inf  # scores are >= 0 or NaN (inf x 0), and np.lexsort puts NaN last
    top = _top(key, ids[:m], k)
    return ids[top], score[top]


@njit(cache=True, nogil=True, inline="always")
def _before(key_a, id_a, key_b, id_b):
    """(key, id) a sorts before b. O(1)."""
    return key_a < key_b or (key_a == key_b and id_a < id_b)


@njit(cache=True, nogil=True)
def _top(key, ids, k):
    """Positions of the k smallest (key, id) pairs, in order. O(m k) by insertion for k <= 32, else O(m log m)."""
    m = key.size
    if k > 32:
        by_id = np.argsort(ids)
        return by_id[np.argsort(key[by_id], kind="mergesort")][:k]  # stable: ties by id
    top = np.empty(min(k, m), dtype=np.int64)
    n = 0
    for i in range(m):
        if n < top.size:
            j = n
            n += 1
        elif _before(key[i], ids[i], key[top[n - 1]], ids[top[n - 1]]):
            j = n - 1  # the last one drops out
        else:
            continue
        while j > 0 and _before(key[i], ids[i], key[top[j - 1]], ids[top[j - 1]]):
            top[j] = top[j - 1]
            j -= 1
        top[j] = i
    return top
