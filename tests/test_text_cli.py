"""`xmr text train|predict` round trips and exit codes, and the labelled-text file format (xmr.text_io)."""

from __future__ import annotations

import io
import json
import re
import sys

import pytest

from tests.test_retriever import META, TOPICS, corpus
from xmr.cli import main
from xmr.retriever import EMPTY_QUERY, NO_KNOWN_TERMS, Retriever
from xmr.text_io import label_texts_from_metadata, read_label_texts, read_labelled_text, write_labelled_text
from xmr.validation import InputError

FAST = ["--nr-splits", "2", "--max-leaf-size", "2", "--threads", "1", "-q"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("textcli")
    texts, labels = corpus()
    # labels hold commas (and a TAB): the file uses '|' between labels and drops the TAB label
    keep = [i for i, ls in enumerate(labels) if not any("\t" in lab for lab in ls)]
    write_labelled_text(root / "train.tsv", [texts[i] for i in keep], [labels[i] for i in keep], label_sep="|")
    with open(root / "meta.csv", "w", encoding="utf-8", newline="") as f:
        import csv

        w = csv.writer(f)
        w.writerow(["title", "id", "brand"])
        for label, m in META.items():
            w.writerow([m["title"], label, m.get("brand", "")])
    (root / "queries.txt").write_text("wooden railway\n\nzzzz qqqq\nhornby coach\nBARBIE doll\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def model_dir(files):
    out = files / "model"
    rc = main(["text", "train", "--train", str(files / "train.tsv"), "-m", str(out), "--label-sep", "|",
               "--label-meta", str(files / "meta.csv"), "--label-text-fields", "title,brand", *FAST])
    assert rc == 0
    return out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected a message on stderr"
    return err[-1]


# ------------------------------------------------------------------------------------------------ happy paths
@pytest.mark.parametrize("cmd", [["text"], ["text", "train"], ["text", "predict"]])
def test_help(cmd, capsys):
    assert main([*cmd, "--help"]) == 0
    assert "usage: xmr text" in capsys.readouterr().out


def test_train_and_predict_json(files, model_dir, capsys):
    r = Retriever.load(model_dir)
    assert r.nr_labels == len(TOPICS) - 1 and r.meta["nr_label_texts"] == 3
    capsys.readouterr()
    assert main(["text", "predict", "-m", str(model_dir), "--input", str(files / "queries.txt"), "--json",
                 "--topk", "2", "-q"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["query"] for row in rows] == ["wooden railway", "", "zzzz qqqq", "hornby coach", "BARBIE doll"]
    assert [row["reason"] for row in rows] == [None, EMPTY_QUERY, NO_KNOWN_TERMS, None, None]
    train_label, hornby = list(TOPICS)[:2]
    assert rows[0]["hits"][0]["label"] == train_label and len(rows[0]["hits"]) == 2
    assert rows[0]["hits"][0]["metadata"] == {"title": META[train_label]["title"], "brand": ""}
    assert rows[3]["hits"][0] == {"label": hornby, "score": rows[3]["hits"][0]["score"],
                                  "metadata": {"title": "Flying Scotsman", "brand": "Hornby"}}
    assert rows[4]["hits"][0]["label"] == "B00DOLL"
    # the CLI's answers are the Python API's
    api = r.retrieve(["wooden railway", "hornby coach"], k=2)
    assert [h["label"] for h in rows[0]["hits"]] == api[0].labels
    assert [h["label"] for h in rows[3]["hits"]] == api[1].labels


def test_predict_plain_from_stdin(model_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hornby coach\n\nkite beach\n"))
    capsys.readouterr()
    assert main(["text", "predict", "-m", str(model_dir), "--topk", "1"]) == 0
    out = capsys.readouterr()
    blocks = out.out.strip().split("\n\n")
    assert blocks[0].startswith("> hornby coach\n   1. ") and "Hornby R1234" in blocks[0] and '"Hornby"' in blocks[0]
    assert blocks[1] == f">\n  (no hits: {EMPTY_QUERY})" or blocks[1] == f"> \n  (no hits: {EMPTY_QUERY})"
    assert re.search(r"> kite beach\n   1\. \d\.\d{4}  kite$", blocks[2])
    assert "answered 3 queries" in out.err  # logging goes to stderr


def test_train_from_stdin_with_label_text_file(files, tmp_path, monkeypatch, capsys):
    texts, labels = corpus(n=120)
    lines = "".join(f"{'|'.join(ls)}\t{t}\n" for t, ls in zip(texts, labels) if "\t" not in "".join(ls))
    (tmp_path / "lt.tsv").write_text(f"kite\tkite with long tail\n{list(TOPICS)[2]}\tfashion doll\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    rc = main(["text", "train", "--train", "-", "-m", str(tmp_path / "m"), "--label-sep", "|", "--features",
               "word:0.5+char", "--label-text", str(tmp_path / "lt.tsv"), "--alpha", "0.3", "--hashing", "4096",
               "--topk", "3", "--rerank-candidates", "5", "--rerank-weight", "0.4", *FAST])
    assert rc == 0, capsys.readouterr().err
    r = Retriever.load(tmp_path / "m")
    assert r.featurizer.spec == "word:0.5+char" and r.model.topk == 3 and r.meta["hashing"] == 4096
    assert r.model.meta["indexing"]["label_embedding"] == "pifa+lf-convex"
    assert (r.reranker.config.candidates, r.reranker.config.weight) == (5, 0.4)
    assert r.retrieve_one("kite beach", k=1).labels == ["kite"]


# ------------------------------------------------------------------------------------------------ exit codes
def test_bad_inputs_exit_2(files, model_dir, tmp_path, capsys):
    train = str(files / "train.tsv")
    (tmp_path / "notab.tsv").write_text("a\tfine line\nb no tab here\n")
    (tmp_path / "nolabel.tsv").write_text("a\tfine\n , \tno label\n")
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n{oops\n')
    (tmp_path / "latin1.txt").write_bytes(b"ok\ncaf\xe9\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "keep.txt").write_text("keep")
    from tests.test_retriever import corpus as _c  # a plain XLinearModel directory, not a retriever

    Retriever.train(*_c(n=40), nr_splits=2, max_leaf_size=4, threads=1).model.save(tmp_path / "plain")

    def tr(*extra):
        return ["text", "train", "--train", train, "-m", str(tmp_path / "m"), "--label-sep", "|", *FAST, *extra]

    def pr(*extra, model=model_dir):
        return ["text", "predict", "-m", str(model), "-q", *extra]

    cases = [
        (["text", "train", "--train", str(tmp_path / "nope.tsv"), "-m", str(tmp_path / "m")], "does not exist"),
        (["text", "train", "--train", str(tmp_path / "notab.tsv"), "-m", str(tmp_path / "m")], r"notab.tsv:2: no TAB"),
        (["text", "train", "--train", str(tmp_path / "nolabel.tsv"), "-m", str(tmp_path / "m")],
         r"nolabel.tsv:2: no label"),
        (tr("--label-meta", str(tmp_path / "bad.jsonl")), r"bad.jsonl:2: not valid JSON"),
        (tr("--label-text-fields", "title"), "--label-text-fields needs --label-meta"),
        (tr("--alpha", "0.5"), "--alpha needs --label-text"),
        (tr("--rerank-candidates", "10"), "--rerank-candidates needs --label-text"),
        (tr("--rerank-weight", "0.3"), "--rerank-weight needs --rerank-candidates"),
        (tr("--features", "words"), "feature spec"),
        (tr("--label-sep", "\t"), "label_sep"),
        (["text", "train", "--train", train, "-m", str(tmp_path / "docs"), "--label-sep", "|", *FAST], "refusing"),
        (pr(model=tmp_path / "nowhere"), "does not exist"),
        (pr(model=tmp_path / "plain"), "xmr text train"),
        (pr(model=tmp_path / "docs"), "not an xmr retriever directory"),
        (pr("--input", str(tmp_path / "nope.txt")), "does not exist"),
        (pr("--input", str(tmp_path)), "is a directory"),
        (pr("--input", str(tmp_path / "latin1.txt")), r"latin1.txt:2: not UTF-8"),
    ]
    for argv, pattern in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        line = _error_line(capsys)
        assert line.startswith("xmr: error: "), (argv, line)
        assert re.search(pattern, line), (argv, line)
    assert not (tmp_path / "m").exists()
    assert (tmp_path / "docs" / "keep.txt").read_text() == "keep"
    # usage errors argparse reports itself (exit 2, usage on stderr)
    for argv in (["text"], ["text", "predict"], pr("--topk", "0"), tr("--hashing", "-3"), ["text", "fly"]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        assert "usage: xmr" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- labelled-text files
def test_read_labelled_text_lines():
    lines = ["a, b ,,a\tfirst text\twith a tab\n", "\n", "  \n", "c\t\n", "d|e\tpipes\r\n"]
    texts, labels = read_labelled_text(lines)
    assert texts == ["first text\twith a tab", "", "pipes"]
    assert labels == [["a", "b"], ["c"], ["d|e"]]
    assert read_labelled_text(["d|e\tpipes"], label_sep="|") == (["pipes"], [["d", "e"]])


@pytest.mark.parametrize(
    "lines, match",
    [
        (["a\tok", "no tab"], r"<lines>:2: no TAB"),
        (["a\tok", " , \ttext"], r"<lines>:2: no label"),
        (["a\tok", 3], r"<lines>:2: expected a str"),
    ],
)
def test_read_labelled_text_errors(lines, match):
    with pytest.raises(InputError, match=match):
        read_labelled_text(lines)


def test_labelled_text_file_round_trip(tmp_path):
    texts = ["Wooden train — für Kinder", "line\nbreak\r\nin text", "tab\tinside", ""]
    labels = [["https://x.y/1?a=b"], ["B1", "木"], ["c"], ["d"]]
    write_labelled_text(tmp_path / "t.tsv", texts, labels)
    got_texts, got_labels = read_labelled_text(tmp_path / "t.tsv")
    assert got_labels == labels
    assert got_texts == [texts[0], "line break in text", "tab\tinside", ""]
    for bad_labels, match in (([["a,b"]], "cannot be written"), ([[" a"]], "cannot be written"), ([[]], "non-empty"),
                              (["abc"], "non-empty list")):
        with pytest.raises(InputError, match=match):
            write_labelled_text(tmp_path / "t.tsv", ["x"], bad_labels)
    assert read_labelled_text(tmp_path / "t.tsv")[1] == labels  # a failed write leaves the file as it was
    with pytest.raises(InputError, match="does not exist"):
        write_labelled_text(tmp_path / "no" / "t.tsv", ["x"], [["a"]])
    with pytest.raises(InputError, match="2 texts but 1 label lists"):
        write_labelled_text(tmp_path / "t.tsv", ["x", "y"], [["a"]])
    (tmp_path / "bad.tsv").write_bytes(b"a\tok\nb\t\xff\n")
    with pytest.raises(InputError, match=r"bad.tsv:2: not UTF-8"):
        read_labelled_text(tmp_path / "bad.tsv")


def test_label_texts_files_and_fields(tmp_path):
    (tmp_path / "lt.tsv").write_text("a\ttext of a\n\n b \ttext\tof b\n")
    assert read_label_texts(tmp_path / "lt.tsv") == {"a": "text of a", "b": "text\tof b"}
    for lines, match in ((["a\tx", "a\ty"], r"<lines>:2: label 'a' already has a text \(line 1\)"),
                         (["a"], "no TAB"), (["\tx"], "no label")):
        with pytest.raises(InputError, match=match):
            read_label_texts(lines)
    meta = {"a": {"title": "Echo", "brand": "Amazon", "n": 3}, "b": {"title": ""}, "c": {}}
    assert label_texts_from_metadata(meta, ["title", "brand", "n"]) == {"a": "Echo Amazon 3"}
