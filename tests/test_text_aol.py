"""experiments/text_aol.py: the validation split never reaches the test period, and spec variants parse."""

from __future__ import annotations

import pytest

from experiments import text_aol as A

HEADER = "AnonID\tQuery\tQueryTime\tClickURLs\n"
ROWS = [
    ("1", "hornby trains", "2006-03-02 10:00:00", "http://www.hornby.com/a"),
    ("1", "lego", "2006-04-01 10:00:00", "http://lego.com/ http://www.amazon.com/x"),
    ("2", "hornby coach", "2006-04-20 09:00:00", "http://hornby.com/b"),       # validation, known label
    ("2", "brio", "2006-04-21 09:00:00", "http://brio.net/"),                   # validation, unseen label: dropped
    ("2", "amazon lego", "2006-04-22 09:00:00", "http://amazon.com/ http://brio.net/"),  # keeps amazon.com only
    ("3", "may query", "2006-05-02 09:00:00", "http://hornby.com/"),            # test period: never used
    ("3", "no click", "2006-04-25 09:00:00", ""),                               # no click: not an instance
]


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "aol.tsv"
    path.write_text(HEADER + "".join("\t".join(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def test_validation_split_stays_in_the_training_period(log):
    split = A.validation_split(log, start="2006-04-17")
    assert split.train_texts == ["hornby trains", "lego"]
    assert split.train_labels == [["hornby.com"], ["amazon.com", "lego.com"]]
    assert split.test_texts == ["hornby coach", "amazon lego"]
    assert split.test_labels == [["hornby.com"], ["amazon.com"]]
    assert "may query" not in split.train_texts + split.test_texts
    assert split.info["nr_validation_rows"] == 3


@pytest.mark.parametrize("spec, expected", [
    ("word1-2+char", ("word1-2+char", False, None)),
    ("word+char@lt", ("word+char", True, None)),
    ("word+char@lt=0.3", ("word+char", True, 0.3)),
])
def test_parse_variant(spec, expected):
    assert A.parse_variant(spec) == expected


def test_parse_variant_rejects_unknown_options():
    with pytest.raises(ValueError, match="bad variant"):
        A.parse_variant("word@xx")


def test_ablation_specs_take_each_block_alone_then_both():
    assert A.ablation_specs("word1-2:1.5+char@lt=0.3") == [
        ("word n-grams alone", "word1-2@lt=0.3"), ("char n-grams alone", "char@lt=0.3"),
        ("both", "word1-2:1.5+char@lt=0.3")]
