"""LabelSet (names + metadata, memory-mapped and lazily decoded) and label metadata files (JSONL / CSV)."""

from __future__ import annotations

import gzip
import json
import mmap
import shutil

import numpy as np
import pytest

from xmr.labels import LabelSet, read_label_metadata
from xmr.model_io import ModelFormatError
from xmr.validation import InputError

NAMES = [
    "B00X1",
    "https://shop.example/p/1?ref=a,b",
    "Hornby R1234 — Flying Scotsman, OO gauge",
    "tab\there",
    "line\nbreak",
    "木のおもちゃ 🚂",
    "x" * 5000,
]
META = [
    {"title": "Echo Dot", "price": 49.99, "tags": ["a", "b"], "nested": {"k": None}},
    None,
    {"title": "Flying Scotsman", "brand": "Hornby"},
    {},
    {"ü": "ß"},
    None,
    {"long": "y" * 3000},
]


@pytest.fixture()
def saved(tmp_path):
    LabelSet(NAMES, META).save(tmp_path / "labels")
    return tmp_path / "labels"


# ------------------------------------------------------------------------------------------------- LabelSet
@pytest.mark.parametrize("mmap_", [True, False])
def test_round_trip(saved, mmap_):
    labels = LabelSet.load(saved, mmap=mmap_)
    assert len(labels) == len(NAMES) and list(labels) == NAMES
    assert labels.names(np.array([2, 0])) == [NAMES[2], NAMES[0]]
    for i, m in enumerate(META):
        assert labels.name(i) == NAMES[i]
        assert labels.metadata(i) == (m or {})
        assert labels.id_of(NAMES[i]) == i
    assert labels.id_of("nope") is None and "nope" not in labels and NAMES[3] in labels
    assert labels.has_metadata
    assert isinstance(labels._names, mmap.mmap) == mmap_


def test_in_memory_matches_loaded(saved):
    a, b = LabelSet(NAMES, META), LabelSet.load(saved)
    assert [a.name(i) for i in range(len(a))] == list(b)
    assert [a.metadata(i) for i in range(len(a))] == [b.metadata(i) for i in range(len(b))]


def test_open_is_lazy(saved):
    labels = LabelSet.load(saved)
    assert labels._ids is None  # no name -> id dictionary until asked
    assert labels.metadata(2)["brand"] == "Hornby"
    assert labels._ids is None
    assert labels.id_of(NAMES[5]) == 5 and labels._ids is not None


def test_metadata_is_a_fresh_copy(saved):
    labels = LabelSet.load(saved)
    labels.metadata(0)["title"] = "changed"
    assert labels.metadata(0)["title"] == "Echo Dot"


def test_no_metadata_and_empty_set(tmp_path):
    labels = LabelSet(["a", "b"])
    assert labels.metadata(1) == {} and not labels.has_metadata
    labels.save(tmp_path / "a")
    assert LabelSet.load(tmp_path / "a").metadata(0) == {}
    LabelSet([]).save(tmp_path / "empty")
    assert len(LabelSet.load(tmp_path / "empty")) == 0


@pytest.mark.parametrize(
    "names, metadata, match",
    [
        (["a", "b", "a"], None, r"unique; 'a' is label 0 and label 2"),
        (["a", ""], None, "label 1 is an empty string"),
        (["a", 3], None, "label 1 is a int"),
        ("abc", None, "sequence of strings"),
        (["a", "\ud800"], None, "UTF-8"),
        (["a", "b"], [None], "metadata for 1 labels but 2"),
        (["a", "b"], [None, {"s": {1, 2}}], "label 'b' is not JSON-serialisable"),
        (["a", "b"], [None, {"x": float("nan")}], "not JSON-serialisable"),
        (["a", "b"], [None, "title"], "must be a mapping"),
        (["a"], {"a": {}}, "sequence"),
    ],
)
def test_invalid_construction(names, metadata, match):
    with pytest.raises(InputError, match=match):
        LabelSet(names, metadata)


def test_bad_ids(saved):
    labels = LabelSet.load(saved)
    for bad in (-1, len(NAMES)):
        with pytest.raises(IndexError, match="out of range"):
            labels.name(bad)
    with pytest.raises(TypeError):
        labels.metadata("0")


# ------------------------------------------------------------------------------------------------ corruption
def _flip(path, f):
    path.write_bytes(f(path.read_bytes()))


@pytest.mark.parametrize(
    "damage, file",
    [
        (lambda d: (d / "labels.json").unlink(), "labels.json"),
        (lambda d: (d / "labels.json").write_text("{"), "labels.json"),
        (lambda d: (d / "labels.json").write_text('{"format": "xmr.labels", "version": 9, "nr_labels": 7}'),
         "labels.json"),
        (lambda d: (d / "labels.json").write_text('{"format": "xmr.labels", "version": 1, "nr_labels": 6}'),
         "names.offsets.npy"),
        (lambda d: _flip(d / "names.bin", lambda b: b[:-3]), "names.bin"),
        (lambda d: (d / "meta.bin").unlink(), "meta.bin"),
        (lambda d: np.save(d / "names.offsets.npy", np.arange(8, dtype=np.int32)), "names.offsets.npy"),
        (lambda d: np.save(d / "names.offsets.npy", np.array([0, 5, 4, 9, 12, 15, 20, 30])), "names.offsets.npy"),
        (lambda d: _flip(d / "meta.offsets.npy", lambda b: b[:-8]), "meta.offsets.npy"),
        (lambda d: _flip(d / "names.bin", lambda b: b"\xff" + b[1:]), "names.bin"),
    ],
)
def test_corrupt_files_name_the_file(saved, damage, file):
    damage(saved)
    with pytest.raises(ModelFormatError, match=file):
        LabelSet.load(saved)


def test_corrupt_metadata_fails_on_access_naming_the_file(saved):
    _flip(saved / "meta.bin", lambda b: b"#" + b[1:])
    labels = LabelSet.load(saved)  # metadata JSON is checked per label, when read
    assert labels.name(0) == NAMES[0] and labels.metadata(2)["brand"] == "Hornby"
    with pytest.raises(ModelFormatError, match="meta.bin: metadata of label 0"):
        labels.metadata(0)
    assert labels.hydrate([2, 1]) == ([NAMES[2], NAMES[1]], [META[2], {}])  # the batch decode path
    with pytest.raises(ModelFormatError, match="meta.bin: metadata of label 0"):
        labels.hydrate([2, 0])


def test_batch_hydration_matches_per_label(saved):
    labels = LabelSet.load(saved)
    ids = [6, 0, 3, 0, 1]
    assert labels.hydrate(ids) == ([labels.name(i) for i in ids], [labels.metadata(i) for i in ids])
    assert labels.hydrate([]) == ([], [])


def test_duplicate_names_on_disk(saved, tmp_path):
    LabelSet(["aa", "bb"]).save(tmp_path / "two")
    (tmp_path / "two" / "names.bin").write_bytes(b"aaaa")
    labels = LabelSet.load(tmp_path / "two")
    with pytest.raises(ModelFormatError, match="appears twice"):
        labels.id_of("aa")


def test_missing_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        LabelSet.load(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------ metadata files
def test_jsonl(tmp_path):
    p = tmp_path / "meta.jsonl"
    p.write_text('{"id": "B1", "title": "Echo, Dot", "price": 49.9}\n\n'
                 '{"label": 7, "title": "seven"}\n'
                 '{"id": " C3 ", "label": "kept as attribute"}\n', encoding="utf-8")
    assert read_label_metadata(p) == {
        "B1": {"title": "Echo, Dot", "price": 49.9},
        "7": {"title": "seven"},
        "C3": {"label": "kept as attribute"},
    }


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"id": "a"}\n{"id": "b",\n', r"meta.jsonl:2: not valid JSON"),
        ('{"id": "a"}\n["b"]\n', r"meta.jsonl:2: expected a JSON object"),
        ('{"title": "a"}\n', r"meta.jsonl:1: .*no \"id\" or \"label\""),
        ('{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n', r"meta.jsonl:3: duplicate label id 'a' \(first on line 1\)"),
        ('{"id": true}\n', r"meta.jsonl:1: the label id must be a string"),
        ('{"id": "  "}\n', r"meta.jsonl:1: empty label id"),
    ],
)
def test_jsonl_errors(tmp_path, text, match):
    p = tmp_path / "meta.jsonl"
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        read_label_metadata(p)


def test_csv(tmp_path):
    p = tmp_path / "meta.csv"
    p.write_text('title,ID,price\n"Train, wooden",T1,9.99\n"multi\nline",T2,\n\n', encoding="utf-8")
    assert read_label_metadata(p) == {"T1": {"title": "Train, wooden", "price": "9.99"},
                                      "T2": {"title": "multi\nline", "price": ""}}
    p.write_text("sku,title\nS1,one\nS2,two\n")  # no id/label column: the first column
    assert read_label_metadata(p) == {"S1": {"title": "one"}, "S2": {"title": "two"}}
    t = tmp_path / "meta.tsv"
    t.write_text("label\ttitle\nL1\ta, b\n")
    assert read_label_metadata(t) == {"L1": {"title": "a, b"}}


def test_format_from_content_gzip_and_bom(tmp_path):
    (tmp_path / "a.txt").write_text('{"id": "x", "t": 1}\n')
    assert read_label_metadata(tmp_path / "a.txt") == {"x": {"t": 1}}
    (tmp_path / "b.txt").write_text("id;title\nx;hello\n")
    assert read_label_metadata(tmp_path / "b.txt") == {"x": {"title": "hello"}}
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress('{"id": "é", "t": "ü"}\n'.encode()))
    assert read_label_metadata(tmp_path / "c.jsonl.gz") == {"é": {"t": "ü"}}
    (tmp_path / "d.csv").write_bytes("\ufeffid,title\nx,y\n".encode())
    assert read_label_metadata(tmp_path / "d.csv") == {"x": {"title": "y"}}


@pytest.mark.parametrize(
    "text, match",
    [
        ("id,title\na,one\nb,two,extra\n", r"meta.csv:3: 3 fields but the header has 2"),
        ("id,title\na,one\na,again\n", r"meta.csv:3: duplicate label id 'a' \(first on line 2\)"),
        ("id,id\na,b\n", r"meta.csv:1: the header repeats"),
        ("id,\na,b\n", r"meta.csv:1: the header has an empty column name"),
        ('id,title\na,"unclosed\n', r"meta.csv:\d+: "),
        ("id,title\n,one\n", r"meta.csv:2: empty label id"),
    ],
)
def test_csv_errors(tmp_path, text, match):
    p = tmp_path / "meta.csv"
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        read_label_metadata(p)


def test_unreadable_metadata_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_label_metadata(tmp_path / "nope.jsonl")
    (tmp_path / "bad.jsonl").write_bytes(b'{"id": "a"}\n{"id": "\xff"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid UTF-8"):
        read_label_metadata(tmp_path / "bad.jsonl")
    with pytest.raises(InputError, match="is a directory"):
        read_label_metadata(tmp_path)
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"id": "a"}\n')[:-6])
    with pytest.raises(InputError, match=r"cut.jsonl.gz: corrupt gzip"):
        read_label_metadata(tmp_path / "cut.jsonl.gz")


def test_metadata_file_feeds_label_set(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(json.dumps({"id": n, "rank": i}) for i, n in enumerate(NAMES)) + "\n")
    meta = read_label_metadata(p)
    labels = LabelSet(NAMES, [meta.get(n) for n in NAMES])
    labels.save(tmp_path / "l")
    assert [LabelSet.load(tmp_path / "l").metadata(i)["rank"] for i in range(len(NAMES))] == list(range(len(NAMES)))
    shutil.rmtree(tmp_path / "l")
