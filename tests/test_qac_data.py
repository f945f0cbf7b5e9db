"""experiments/qac_data.py: sessions at 30-minute gaps, merged click repeats, first queries, time split."""

from __future__ import annotations

import pytest

from experiments import qac_data as Q
from xmr.validation import InputError

ROWS = [  # (user, query, time), deliberately out of order
    ("7", "Hornby  Trains", "2006-03-01 10:00:00"),
    ("7", "hornby trains", "2006-03-01 10:01:00"),      # a second click on the same query: merged
    ("7", "hornby coach", "2006-03-01 10:05:00"),
    ("7", "-", "2006-03-01 10:06:00"),                  # AOL placeholder: dropped
    ("7", "lego", "2006-03-01 11:00:00"),               # 55 min later: new session
    ("7", "hornby trains", "2006-05-02 09:00:00"),      # test period
    ("3", "brio", "2006-04-30 23:59:59"),
    ("3", "brio track", "2006-05-01 00:10:00"),         # 10 min later, across the split: same session
]


def test_session_pairs():
    pairs = Q.session_pairs(ROWS)
    assert [(p.user, p.previous, p.query) for p in pairs] == [
        ("3", "", "brio"), ("3", "brio", "brio track"),
        ("7", "", "hornby trains"), ("7", "hornby trains", "hornby coach"), ("7", "", "lego"),
        ("7", "", "hornby trains")]


def test_gap_is_strictly_more_than_30_minutes():
    rows = [("1", "a", "2006-03-01 10:00:00"), ("1", "b", "2006-03-01 10:30:00"), ("1", "c", "2006-03-01 11:00:01")]
    assert [p.previous for p in Q.session_pairs(rows)] == ["", "a", ""]


def test_split_by_the_next_querys_time():
    train, test = Q.split_pairs(Q.session_pairs(ROWS))
    assert [p.query for p in test] == ["brio track", "hornby trains"]
    s = Q.summary(train, test)
    assert s["labels"] == 4 and s["test_seen"] == 1 and s["test_first_queries"] == 1


def test_normalize_query():
    assert Q.normalize_query("  Straße\tZÜRICH ") == "strasse zürich"
    assert Q.normalize_query("-") == "" and Q.normalize_query("   ") == ""


def test_bad_log_names_the_line(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_text("AnonID\tQuery\tQueryTime\tClickURLs\n1\tq\t2006-03-01 10:00:00\t\n2\tq\tyesterday\t\n")
    with pytest.raises(InputError, match=r"log.tsv:3: QueryTime"):
        Q.load_pairs(path)


def test_real_log_counts(shared_data):
    train, test = Q.split_pairs(Q.load_pairs(shared_data / "aol-querylog" / "aol_800_users.tsv"))
    s = Q.summary(train, test)
    assert s["train_pairs"] > 100_000 and s["test_pairs"] > 30_000
    assert 0.3 < s["test_seen_share"] < 0.9
