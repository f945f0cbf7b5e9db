"""xmr/qac/sessions.py: reading AOL-format query logs with clear errors."""

from __future__ import annotations

import pytest

from xmr.qac.sessions import read_query_log, session_pairs
from xmr.validation import InputError


def test_original_aol_columns_in_any_order(tmp_path):
    path = tmp_path / "user-ct-test-collection-01.txt"
    path.write_text("AnonID\tQuery\tQueryTime\tItemRank\tClickURL\n"
                    "142\trentdirect.com\t2006-03-01 07:17:12\t\t\n"
                    "142\twww.prescriptionfortime.com\t2006-03-12 12:31:06\t1\thttp://www.prescriptionfortime.com\n")
    assert [q for _, q, _ in read_query_log(path)] == ["rentdirect.com", "www.prescriptionfortime.com"]
    other = tmp_path / "other.tsv"
    other.write_text("QueryTime\tAnonID\tQuery\n2006-03-01 07:17:12\t9\tlego\n")
    assert list(read_query_log(other)) == [("9", "lego", "2006-03-01 07:17:12")]
    assert [(p.previous, p.query) for p in session_pairs(read_query_log(other))] == [("", "lego")]


@pytest.mark.parametrize("content,match", [
    ("User\tQuery\tQueryTime\n", r"log.tsv:1: header .* lacks the column\(s\) \['AnonID'\]"),
    ("AnonID\tQuery\tQueryTime\n1\tq\n", r"log.tsv:2: 2 tab-separated fields, the header has 3"),
    ("AnonID\tQuery\tQueryTime\n1\tq\t2006-03-01\n", r"log.tsv:2: QueryTime '2006-03-01'"),
    ("", r"log.tsv: empty file"),
])
def test_bad_logs_name_file_and_line(tmp_path, content, match):
    path = tmp_path / "log.tsv"
    path.write_text(content)
    with pytest.raises(InputError, match=match):
        list(read_query_log(path))


def test_not_utf8_and_missing(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_bytes(b"AnonID\tQuery\tQueryTime\n1\t\xff\t2006-03-01 10:00:00\n")
    with pytest.raises(InputError, match="log.tsv:2: not UTF-8"):
        list(read_query_log(path))
    with pytest.raises(InputError, match="does not exist"):
        list(read_query_log(tmp_path / "nope.tsv"))
