"""MostPopularCompletion's top-k kernel against a plain numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from xmr.qac.mpc import KEPT, LONG_RUN, MostPopularCompletion, top_counts


def _top_reference(counts: np.ndarray, lo: int, hi: int, k: int) -> np.ndarray:
    """Positions of the k largest counts in [lo, hi): count descending, then position (a full stable sort)."""
    run = counts[lo:hi]
    return lo + np.lexsort((np.arange(run.size), -run))[:k]


@pytest.mark.parametrize("seed", range(5))
def test_top_counts_matches_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, [3, 50, 10**6][seed % 3], 3000).astype(np.int64)  # few values: many ties
    for _ in range(300):
        lo = int(rng.integers(0, counts.size))
        hi = int(rng.integers(lo, counts.size + 1))
        k = int(rng.integers(1, 200))
        got = top_counts(counts, lo, hi, k)
        assert got.dtype == np.int64 and got.tolist() == _top_reference(counts, lo, hi, k).tolist()
    assert top_counts(counts, 5, 5, 3).size == 0 and top_counts(counts, 0, 10, 0).size == 0


def test_long_runs_are_kept_and_answer_as_short_ones() -> None:
    rng = np.random.default_rng(7)
    queries = [f"q{i:05d}" for i in range(3 * LONG_RUN)]
    mpc = MostPopularCompletion({q: int(c) for q, c in zip(queries, rng.integers(1, 20, len(queries)))})
    lo, hi = mpc.run("q")
    assert hi - lo == len(queries) >= LONG_RUN
    for k in (1, 10, KEPT, KEPT + 5):
        assert mpc.top(lo, hi, k).tolist() == _top_reference(mpc.counts, lo, hi, k).tolist()
    assert (lo, hi) in mpc._long_runs
