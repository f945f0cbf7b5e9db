"""xmr/qac/mpc.py against a brute-force scan; case-insensitivity, word boundaries, save/load, bad input."""

from __future__ import annotations

import random

import numpy as np
import pytest

from xmr.model_io import ModelFormatError
from xmr.qac.mpc import MostPopularCompletion, casefold_prefix
from xmr.validation import InputError

COUNTS = {"lego": 5, "Lego Star Wars": 3, "lego star wars": 2, "legoland": 4, "lego city": 5, "hornby": 1,
          "hornby coach": 7, "zürich": 2}


def brute(counts, prefix, k):
    merged = {}
    for q, c in counts.items():
        key = " ".join(q.casefold().split())
        merged[key] = merged.get(key, 0) + c
    p = casefold_prefix(prefix)
    hits = [(q, c) for q, c in merged.items() if q.startswith(p)]
    return sorted(hits, key=lambda t: (-t[1], t[0]))[:k]


@pytest.mark.parametrize("prefix", ["", "l", "LEGO", "lego ", "lego s", "h", "hornby c", "zü", "x", "  lego   c"])
@pytest.mark.parametrize("k", [1, 2, 10])
def test_matches_brute_force(prefix, k):
    assert MostPopularCompletion(COUNTS).complete(prefix, k) == brute(COUNTS, prefix, k)


def test_long_runs_keep_their_top_and_match_brute_force():
    rng = random.Random(1)
    counts = {f"{a}{b}{i}": rng.randint(1, 30) for a in "ab" for b in "xyz" for i in range(300)}  # ties abound
    mpc = MostPopularCompletion(counts)
    for prefix in ["", "a", "b", "ax", "bz1"]:
        for k in [1, 7, 128, 129, 2000]:
            assert mpc.complete(prefix, k) == brute(counts, prefix, k)
            assert mpc.complete(prefix, k) == brute(counts, prefix, k)  # again, from the kept top
    assert (0, len(counts)) in mpc._long_runs and len(mpc._long_runs) == 3  # "", "a", "b": the runs >= 512


def test_case_variants_add_up_and_finished_words_stay_words():
    mpc = MostPopularCompletion(COUNTS)
    assert mpc.complete("lego star", 1) == [("lego star wars", 5)]
    assert "legoland" not in [q for q, _ in mpc.complete("lego ", 10)]


def test_random_against_brute_force():
    rng = random.Random(0)
    words = ["a", "ab", "abc", "b", "ba", "c"]
    counts = {" ".join(rng.choices(words, k=rng.randint(1, 3))): rng.randint(1, 5) for _ in range(300)}
    mpc = MostPopularCompletion(counts)
    for _ in range(200):
        prefix = rng.choice(list(counts))[: rng.randint(0, 6)]
        assert mpc.complete(prefix, 5) == brute(counts, prefix, 5)


def test_from_queries_and_round_trip(tmp_path):
    mpc = MostPopularCompletion.from_queries(["b", "a", "b", "ab"])
    assert mpc.complete("", 3) == [("b", 2), ("a", 1), ("ab", 1)]
    mpc.save(tmp_path)
    back = MostPopularCompletion.load(tmp_path)
    assert back.queries == mpc.queries and np.array_equal(back.counts, mpc.counts)


def test_bad_input():
    with pytest.raises(InputError, match="non-empty"):
        MostPopularCompletion({" ": 1})
    with pytest.raises(InputError, match="positive integer"):
        MostPopularCompletion({"a": 0})
    mpc = MostPopularCompletion({"a": 1})
    with pytest.raises(InputError, match="prefix"):
        mpc.complete(None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="k must"):
        mpc.complete("a", 0)


def test_corrupt_files_name_the_file(tmp_path):
    MostPopularCompletion({"a": 1, "b": 2}).save(tmp_path)
    (tmp_path / "queries.json").write_text('["b", "a"]')
    with pytest.raises(ModelFormatError, match="queries.json"):
        MostPopularCompletion.load(tmp_path)
    (tmp_path / "mpc.json").write_text("{oops")
    with pytest.raises(ModelFormatError, match="mpc.json"):
        MostPopularCompletion.load(tmp_path)
