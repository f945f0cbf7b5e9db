"""Benchmark data loaders (experiments/datasets.py): ARFF parsing, aol-q2site rules, cache round trip, counts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from experiments import datasets as D

ARFF = """% a comment
@relation tiny

@attribute f0 numeric
@attribute 'f 1' numeric
@attribute f2 {0,1}
@attribute lab_a {0,1}
@attribute lab_b {0,1}

@data
{0 3,2 4,3 1}
{1 1.5,4 1}
{}
{3 1,4 1}
"""


def parse(text: str, **kw):
    kw.setdefault("nr_labels", 2)
    return D.parse_arff(text.splitlines(keepends=True), source="t.arff", **kw)


def test_parse_sparse_arff_features_first_labels_last():
    X, Y, feats, labels = parse(ARFF)
    assert feats == ["f0", "f 1", "f2"] and labels == ["lab_a", "lab_b"]
    assert X.dtype == np.float32 and Y.dtype == np.float32
    assert X.shape == (4, 3) and Y.shape == (4, 2)
    np.testing.assert_array_equal(X.toarray(), [[3, 0, 4], [0, 1.5, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(Y.toarray(), [[1, 0], [0, 1], [0, 0], [1, 1]])


def test_parse_checks_label_names_from_xml(tmp_path):
    xml = tmp_path / "tiny.xml"
    xml.write_text('<?xml version="1.0"?><labels xmlns="http://mulan.sourceforge.net/labels">'
                   '<label name="lab_a"></label><label name="lab_b"></label></labels>')
    names = D.read_mulan_labels(xml)
    assert names == ["lab_a", "lab_b"]
    X, Y, _, _ = parse(ARFF, label_names=names, nr_labels=None)
    assert Y.shape == (4, 2)
    with pytest.raises(D.ArffError, match="not the labels named"):
        parse(ARFF, label_names=["lab_b", "lab_a"], nr_labels=None)


def test_parse_dense_rows():
    text = ARFF.split("@data")[0] + "@data\n1,0,2,0,1\n0,0,0,1,1\n"
    X, Y, _, _ = parse(text)
    np.testing.assert_array_equal(X.toarray(), [[1, 0, 2], [0, 0, 0]])
    np.testing.assert_array_equal(Y.toarray(), [[0, 1], [1, 1]])


@pytest.mark.parametrize("row, message", [
    ("{0 1,2 1", "does not end with"),
    ("{0 1,2}", "not 'index value'"),
    ("{0 x}", "non-numeric"),
    ("{7 1}", "out of range"),
    ("{2 1,0 1}", "strictly increasing"),
    ("{3 2}", "label values must be 0 or 1"),
    ("{0 nan}", "non-finite"),
    ("1,2,3", "dense row has 3 values"),
])
def test_malformed_rows_name_file_and_line(row, message):
    text = ARFF + row + "\n"
    bad_line = len(text.splitlines())
    with pytest.raises(D.ArffError, match=message) as err:
        parse(text)
    assert f"t.arff:{bad_line}:" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_malformed_header():
    with pytest.raises(D.ArffError, match="no @data"):
        parse("@relation x\n@attribute a numeric\n@attribute b numeric\n")
    with pytest.raises(D.ArffError, match="only 1 attributes"):
        parse("@relation x\n@attribute a numeric\n@data\n{0 1}\n")
    with pytest.raises(D.ArffError, match="t.arff:2: unexpected header"):
        parse("@relation x\nhello\n")


def test_l2_normalize_rows_keeps_zero_rows():
    X = sp.csr_matrix(np.array([[3, 4, 0], [0, 0, 0], [0, 2, 0]], np.float32))
    N = D.l2_normalize_rows(X)
    np.testing.assert_allclose(N.toarray(), [[0.6, 0.8, 0], [0, 0, 0], [0, 1, 0]], rtol=1e-6)
    assert N.dtype == np.float32 and X[0, 0] == 3  # input untouched


@pytest.mark.parametrize("url, host", [
    ("http://www.Books4You.addr.com/", "books4you.addr.com"),
    ("http://peabodylibrary.org/", "peabodylibrary.org"),
    ("http://www.wolfslair.org:8080/", "wolfslair.org:8080"),  # the port is part of the host label
    ("http://www.www.x.com/a?b=c", "www.x.com"),  # only one leading www. goes
    ("http://wwwfoo.com/", "wwwfoo.com"),
    ("http://sub.www.x.com/", "sub.www.x.com"),
    ("HTTP://WWW.EXAMPLE.COM", "example.com"),
])
def test_click_host(url, host):
    assert D.click_host(url) == host


def test_aol_instances_time_split_and_unseen_labels(tmp_path):
    tsv = tmp_path / "log.tsv"
    tsv.write_text("AnonID\tQuery\tQueryTime\tClickURLs\n"
                   "1\tcats\t2006-03-01 10:00:00\thttp://www.cats.com/ http://pets.org/a\n"
                   "1\tdogs\t2006-04-30 23:59:59\thttp://dogs.com/\n"
                   "2\tnoclick\t2006-04-01 00:00:00\t\n"
                   "2\tcat food\t2006-05-01 00:00:00\thttp://cats.com/x http://new.com/\n"
                   "2\tunseen\t2006-05-02 00:00:00\thttp://never.com/\n")
    q_tr, y_tr, q_te, y_te, names = D.aol_instances(tsv)
    assert names == ["cats.com", "pets.org", "dogs.com"]  # first appearance; within a row, by name
    assert q_tr == ["cats", "dogs"] and y_tr == [[0, 1], [2]]
    assert q_te == ["cat food"] and y_te == [[0]]


def test_aol_bad_rows(tmp_path):
    tsv = tmp_path / "log.tsv"
    tsv.write_text("AnonID\tQuery\tQueryTime\tClickURLs\n1\tq\t2006-03-01\thttp://a.com/\n")
    with pytest.raises(D.DatasetError, match=r"log.tsv:2: QueryTime"):
        list(D.read_aol_rows(tsv))
    tsv.write_text("AnonID\tQuery\tQueryTime\tClickURLs\n1\tq\n")
    with pytest.raises(D.DatasetError, match=r"log.tsv:2: 2 tab-separated"):
        list(D.read_aol_rows(tsv))


def test_restrict_labels_keeps_most_frequent_and_drops_empty_rows():
    Y = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [0, 1, 0]], np.float32))
    X = sp.csr_matrix(np.arange(5, dtype=np.float32)[:, None] + 1)
    Yt = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 1]], np.float32))
    out, keep = D.restrict_labels({"X_train": X, "Y_train": Y, "X_test": X[:2], "Y_test": Yt}, 2)
    np.testing.assert_array_equal(keep, [1, 2])  # label 1 (3x), label 2 (2x)
    np.testing.assert_array_equal(out["X_train"].toarray().ravel(), [2, 3, 4, 5])
    np.testing.assert_array_equal(out["Y_train"].toarray(), [[1, 0], [1, 1], [0, 1], [1, 0]])
    np.testing.assert_array_equal(out["Y_test"].toarray(), [[0, 1]])
    np.testing.assert_array_equal(out["X_test"].toarray().ravel(), [2])


def test_names():
    assert D.canonical_name("aol-q2site-1000") == "aol-q2site-1k"
    assert D.canonical_name("aol-q2site-16k") == "aol-q2site-16k"
    assert D.canonical_name("aol-q2site-1500") == "aol-q2site-1500"
    with pytest.raises(D.DatasetError, match="unknown data set"):
        D.canonical_name("nope")


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "CACHE", tmp_path)
    rng = np.random.default_rng(0)
    mats = {k: sp.random(5, 4, density=0.5, format="csr", dtype=np.float64, random_state=rng) for k in D.MATRICES}
    D.write_cache("bibtex", dict(mats), {"labels": ["a", "b", "c", "d"]})
    assert D.is_cached("bibtex")
    got = D.load("bibtex", build_missing=False)
    for key, m in zip(D.MATRICES, got):
        assert m.dtype == np.float32 and m.indices.dtype == np.int32
        np.testing.assert_allclose(m.toarray(), mats[key].toarray(), rtol=1e-6)
    assert D.info("bibtex")["nr_labels"] == 4
    assert (tmp_path / "bibtex" / "labels.txt").read_text().split() == ["a", "b", "c", "d"]
    with pytest.raises(D.DatasetError, match="not cached"):
        D.load("delicious", build_missing=False)


@pytest.mark.parametrize("name, shapes", [
    ("bibtex", (4880, 2515, 1836, 159)),
    ("delicious", (12920, 3185, 500, 983)),
])
def test_mulan_real_counts(shared_data, name, shapes):
    mats, meta = D.load_mulan(name, shared_data)
    assert (mats["X_train"].shape[0], mats["X_test"].shape[0], mats["X_train"].shape[1],
            mats["Y_train"].shape[1]) == shapes
    assert len(meta["labels"]) == shapes[3]
    norms = np.sqrt(np.asarray(mats["X_train"].multiply(mats["X_train"]).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms[norms > 0], 1.0, rtol=1e-5)


def test_aol_real_counts_match_anchors(shared_data):
    _, y_tr, q_te, y_te, names = D.aol_instances(shared_data / "aol-querylog" / "aol_800_users.tsv")
    assert (len(y_tr), len(q_te), len(names)) == (173_486, 65_238, 68_406)
    assert all(y_te)
