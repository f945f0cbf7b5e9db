"""experiments/qac_eval.py helpers: BLEU of a completion and the prefix-length requests of a pair."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.qac_eval import BUCKETS, bucket_lengths, ceiling, sentence_bleu


def test_sentence_bleu():
    assert sentence_bleu("hornby coach", "hornby coach") == 1.0
    assert sentence_bleu("lego", "lego") == 1.0  # a one-word exact completion is perfect, not 0.1 ** 0.75
    assert sentence_bleu("", "lego") == 0.0
    assert sentence_bleu("a b", "a c") == pytest.approx(math.sqrt(0.5 * 0.1))
    # shorter than the reference: brevity penalty exp(1 - 3/1); unigram 1/1, orders 2-3 smoothed to 0.1/1
    assert sentence_bleu("a", "a b c") == pytest.approx(math.exp(1 - 3) * (1 * 0.1 * 0.1) ** (1 / 3))


def test_bucket_lengths():
    rng = np.random.default_rng(0)
    assert bucket_lengths(3, rng) == [("1", 1), ("2", 2), ("3", 3)]
    got = dict(bucket_lengths(7, rng))
    assert list(got) == list(BUCKETS[:6]) and 6 <= got["6-8"] <= 7
    got = dict(bucket_lengths(20, rng))
    assert list(got) == list(BUCKETS) and 9 <= got["9+"] <= 20


def test_ceiling():
    row = {"seen": {"overall": {"n": 10, "mrr10": 0.5}, "1-3": {"n": 4, "mrr10": 0.25}},
           "seen_first": {"overall": {"n": 5, "mrr10": 0.6}, "1-3": {"n": 2, "mrr10": 0.5}},
           "seen_with_previous": {"overall": {"n": 5, "mrr10": 0.4}, "1-3": {"n": 2, "mrr10": 0.0}}}
    overall, short = ceiling(row)
    assert overall == pytest.approx((0.6 * 5 + 5) / 10 / 0.5 - 1)
    assert short == pytest.approx((0.5 * 2 + 2) / 4 / 0.25 - 1)


def test_reference_rows_fill_from_mpc():
    from collections import Counter

    from experiments.qac_data import QacPair
    from experiments.qac_eval import session_counts, then_mpc, user_oracle
    from xmr.qac.mpc import MostPopularCompletion

    mpc = MostPopularCompletion(Counter({"hotmail": 9, "hotels": 5, "hornby": 1}))
    assert then_mpc(["hornby"], mpc, "ho") == ["hornby", "hotmail", "hotels"]
    assert then_mpc([f"h{i}" for i in range(10)], mpc, "h") == [f"h{i}" for i in range(10)]
    after = session_counts([("lego", "hornby"), ("lego", "hornby"), ("lego", "hotels")], mpc)
    assert after("lego", "ho") == ["hornby", "hotels", "hotmail"] and after("", "ho") == ["hotmail", "hotels", "hornby"]
    train = [QacPair("u1", "2006-03-01 00:00:00", "", "hornby")] * 2 + [QacPair("u2", "2006-03-01", "", "hotels")]
    oracle = user_oracle(train, mpc, ["u1", "u2", "nobody"])  # one user per request, in request order
    assert oracle("", "ho") == ["hornby", "hotmail", "hotels"]
    assert oracle("", "ho") == ["hotels", "hotmail", "hornby"]
    assert oracle("", "ho") == ["hotmail", "hotels", "hornby"]
