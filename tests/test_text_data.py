"""Raw-text loaders (experiments/text_data.py): Reuters SGML, aol-q2site text, Amazon toys; errors name file:line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from experiments import text_data as T
from experiments.datasets import DatasetError, aol_instances


def doc(newid: int, split: str = "TRAIN", topics_attr: str = "YES", topics: tuple[str, ...] = ("earn",),
        text: str = "<TITLE>T</TITLE><BODY>B</BODY>", text_type: str = "") -> str:
    """One <REUTERS> element in the shape of reut2-*.sgm."""
    ds = "".join(f"<D>{t}</D>" for t in topics)
    return (f'<REUTERS TOPICS="{topics_attr}" LEWISSPLIT="{split}" CGISPLIT="TRAINING-SET" OLDID="1" '
            f'NEWID="{newid}">\n<DATE>26-FEB-1987</DATE>\n<TOPICS>{ds}</TOPICS>\n<PLACES><D>usa</D></PLACES>\n'
            f"<UNKNOWN>&#5;&#5;C T</UNKNOWN>\n<TEXT{text_type}>&#2;\n{text}\n</TEXT>\n</REUTERS>\n")


SGML = '<!DOCTYPE lewis SYSTEM "lewis.dtd">\n' + "".join([
    doc(1, topics=("cocoa",), text="<TITLE>BAHIA COCOA &lt;REVIEW&gt;</TITLE>\n<DATELINE>SALVADOR</DATELINE>"
                                   "<BODY>Showers &amp; sun\nReuter\n&#3;</BODY>"),
    doc(2, topics=("grain", "wheat"), text='<TITLE>WHEAT BRIEF</TITLE>', text_type=' TYPE="BRIEF"'),
    doc(3, split="TEST", topics=("wheat", "copper")),  # copper unseen in training: dropped
    doc(4, split="TEST", topics=("copper",)),  # only an unseen topic: the document is dropped
    doc(5, split="TEST", topics=()),  # TOPICS="YES" without topics: dropped
    doc(6, split="NOT-USED"),
    doc(7, topics_attr="NO", topics=()),
    doc(8, topics_attr="BYPASS"),
    doc(9, split="TEST", topics=("earn",), text="raw unprocessed\ntext &#31;here", text_type=' TYPE="UNPROC"'),
    doc(10, topics=()),  # training document without topics: dropped
])


def write_folder(tmp_path, *texts: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (tmp_path / f"reut2-{i:03d}.sgm").write_bytes(text.encode("latin-1"))
    return tmp_path


def test_parse_reuters_fields_entities_and_text_types():
    docs = T.parse_reuters_sgml(SGML, "x.sgm")
    assert [d.newid for d in docs] == list(range(1, 11))
    d1 = docs[0]
    assert (d1.lewissplit, d1.topics_attr, d1.topics) == ("TRAIN", "YES", ("cocoa",))
    assert d1.title == "BAHIA COCOA <REVIEW>"
    assert d1.body == "Showers & sun\nReuter"  # &#3; (a control character) is gone, the dateline is not text
    assert d1.text == "BAHIA COCOA <REVIEW>\nShowers & sun\nReuter"
    assert d1.source == "x.sgm:2"
    assert docs[1].text == "WHEAT BRIEF" and docs[1].topics == ("grain", "wheat")
    assert docs[8].text == "raw unprocessed\ntext  here"  # UNPROC: whole <TEXT>, control character -> space
    assert docs[4].topics == () and docs[6].topics_attr == "NO"


def test_modapte_split_drops_topicless_and_unseen(tmp_path):
    split = T.reuters_modapte(write_folder(tmp_path, SGML))
    assert split.train_labels == [["cocoa"], ["grain", "wheat"]]
    # earn appears in training only in BYPASS / NOT-USED documents, so the UNPROC test document is dropped too.
    assert split.test_labels == [["wheat"]]
    assert split.test_texts == ["T\nB"]
    info = split.info
    assert (info["modapte_train"], info["modapte_test"]) == (3, 4)
    assert (info["train_with_topics"], info["test_with_topics"]) == (2, 3)
    assert (info["nr_train"], info["nr_test"], info["nr_labels"]) == (2, 1, 3)
    assert info["test_topics_unseen_in_train"] == 2  # copper, earn


def test_reuters_files_read_as_latin1(tmp_path):
    text = '<!DOCTYPE lewis SYSTEM "lewis.dtd">\n' + doc(1, text="<BODY>growth.\xfc end</BODY>")
    (tmp_path / "reut2-000.sgm").write_bytes(text.encode("latin-1"))  # byte 0xFC: not valid UTF-8
    [d] = T.read_reuters(tmp_path)
    assert d.body == "growth.\u00fc end"


@pytest.mark.parametrize("text, where, message", [
    (doc(1).replace("</REUTERS>", ""), "f.sgm:1", "not closed"),
    (doc(1) + "</REUTERS>\n", "f.sgm:10", "without an open"),
    (doc(1) + "stray words\n" + doc(2), "f.sgm:10", "outside any <REUTERS>"),
    (doc(1).replace('LEWISSPLIT="TRAIN"', 'LEWISSPLIT="TRIAN"'), "f.sgm:1", "LEWISSPLIT='TRIAN'"),
    (doc(1).replace('TOPICS="YES"', 'TOPICS="MAYBE"'), "f.sgm:1", "TOPICS='MAYBE'"),
    (doc(1).replace('NEWID="1"', 'NEWID="x1"'), "f.sgm:1", "NEWID='x1'"),
    (doc(1).replace('OLDID="1"', "OLDID=1"), "f.sgm:1", "malformed <REUTERS> attributes"),
    (doc(1).replace("<TOPICS><D>earn</D>", "<TOPICS>earn<D>x</D>"), "f.sgm:1", "outside <D>"),
    (doc(1).replace("<D>earn</D>", "<D></D>"), "f.sgm:1", "empty <D></D>"),
    (doc(1).replace("</TOPICS>", ""), "f.sgm:1", "<TOPICS> is not closed"),
    (doc(1).replace("<TOPICS><D>earn</D></TOPICS>", ""), "f.sgm:1", "no <TOPICS>"),
    (doc(1) + doc(2).replace("<TITLE>T</TITLE>", "<TITLE>T</TITLE><TITLE>U</TITLE>"), "f.sgm:10", "2 <TITLE>"),
])
def test_malformed_sgml_names_file_and_line(text, where, message):
    with pytest.raises(DatasetError) as err:
        T.parse_reuters_sgml(text, "f.sgm")
    assert str(err.value).startswith(where + ":") and message in str(err.value)


def test_duplicate_newid_across_files_and_missing_folder(tmp_path):
    write_folder(tmp_path, doc(1), doc(2) + doc(1))
    with pytest.raises(DatasetError, match=r"reut2-001\.sgm:10: NEWID 1 already used at .*reut2-000\.sgm:1"):
        T.read_reuters(tmp_path)
    with pytest.raises(DatasetError, match="no reut2-"):
        T.read_reuters(tmp_path / "absent")


AOL = ("AnonID\tQuery\tQueryTime\tClickURLs\n"
       "1\tcheap flights\t2006-03-01 10:00:00\thttp://www.expedia.com http://orbitz.com/x\n"
       "1\tno click\t2006-03-01 10:01:00\t\n"
       "2\tweather\t2006-04-02 09:00:00\thttp://weather.com\n"
       "2\tflights\t2006-05-02 09:00:00\thttp://www.orbitz.com\n"
       "3\tnews\t2006-05-03 09:00:00\thttp://cnn.com\n")


def test_aol_text_split_matches_aol_instances(tmp_path):
    path = tmp_path / "aol.tsv"
    path.write_text(AOL)
    split = T.aol_q2site_text(path)
    assert split.train_texts == ["cheap flights", "weather"]
    assert split.train_labels == [["expedia.com", "orbitz.com"], ["weather.com"]]
    assert split.test_texts == ["flights"] and split.test_labels == [["orbitz.com"]]
    names, Ytr, Yte = split.label_matrices()
    assert names == aol_instances(path)[4] == ["expedia.com", "orbitz.com", "weather.com"]
    np.testing.assert_array_equal(Yte.toarray(), [[0, 1, 0]])


def test_aol_malformed_row_and_missing_file(tmp_path):
    path = tmp_path / "aol.tsv"
    path.write_text(AOL + "4\tbad time\t2006-05-03\thttp://x.com\n")
    with pytest.raises(DatasetError, match=r"aol\.tsv:7: QueryTime"):
        T.aol_q2site_text(path)
    with pytest.raises(DatasetError, match="missing"):
        T.aol_q2site_text(tmp_path / "absent.tsv")


def test_label_matrices_ignore_unseen_test_labels():
    split = T.TextSplit(["a", "b"], [["x", "y"], ["y"]], ["c"], [["z", "x"]])
    names, Ytr, Yte = split.label_matrices()
    assert names == ["x", "y"]
    np.testing.assert_array_equal(Ytr.toarray(), [[1, 1], [0, 1]])
    np.testing.assert_array_equal(Yte.toarray(), [[1, 0]])
    with pytest.raises(ValueError, match="differ in length"):
        T.TextSplit(["a"], [], [], [])


CATALOGUE = ("uniq_id;product_name;amazon_category_and_sub_category;manufacturer;price;number_available_in_stock;"
             "number_of_reviews;number_of_answered_questions;average_rating\n"
             "a1;Train set;Hobbies > Trains;Hornby;3.42;5\u00a0new;15;1;4.9\n"
             "b2;Doll;;Acme;;;2;0;\n")


def test_amazon_toys_reads_and_rejects_bad_rows(tmp_path):
    good = tmp_path / "toys.csv"
    good.write_text(CATALOGUE, encoding="utf-8")
    products = T.amazon_toys(good)
    assert [p.uid for p in products] == ["a1", "b2"]
    assert products[0].categories == ("Hobbies", "Hobbies > Trains") and products[1].categories == ()
    for bad_row, message in [("c3;Kite;Toys;Acme;1.0;;2;0\n", "8 fields"),
                             ("a1;Kite;Toys;Acme;1.0;;2;0;4\n", "duplicate uniq_id"),
                             ("c3;Kite;Toys;Acme;cheap;;2;0;4\n", "price")]:
        bad = tmp_path / "bad.csv"
        bad.write_text(CATALOGUE + bad_row, encoding="utf-8")
        with pytest.raises(DatasetError, match=rf"bad\.csv:4: .*{message}"):
            T.amazon_toys(bad)


# --------------------------------------------------------------------------------------------- shared data
def test_reuters_modapte_counts_on_shared_data(shared_data):
    split = T.reuters_modapte(shared_data / "reuters21578")
    info = split.info
    assert (info["nr_documents"], info["modapte_train"], info["modapte_test"]) == (21578, 9603, 3299)
    assert (info["nr_train"], info["nr_test"]) == (7775, 3019)
    assert (info["nr_labels"], info["nr_labels_in_test"]) == (115, 90)
    assert split.train_labels[0] == ["cocoa"] and split.train_texts[0].startswith("BAHIA COCOA REVIEW\nShowers")
    assert all(t.strip() for t in split.train_texts + split.test_texts)
    assert not any(ch in t for t in split.train_texts for ch in "\x02\x03\x05\x1f")


def test_aol_text_on_shared_data_keeps_label_order(shared_data):
    path = shared_data / "aol-querylog" / "aol_800_users.tsv"
    split = T.aol_q2site_text(path)
    assert (len(split.train_texts), len(split.test_texts), len(split.label_names())) == (173486, 65238, 68406)
    # The label ids are aol_instances' (those of the cached feature data set), and first-appearance order agrees.
    assert split.label_names() == list(dict.fromkeys(lab for labels in split.train_labels for lab in labels))


def test_amazon_toys_on_shared_data(shared_data):
    products = T.amazon_toys(shared_data / "amazon-toys" / "amazon_co-ecommerce_sample_trimmed.csv")
    assert len(products) == 10000 and len({p.uid for p in products}) == 10000
    assert sum(1 for p in products if p.categories) == 9310


# --------------------------------------------------------------------------------------------- experiments.reuters
def synthetic_reuters(folder, nr_train: int = 40, nr_test: int = 12):
    """A tiny ModApte-shaped collection: 4 topics, each with its own words, a few documents with two topics."""
    words = {"grain": "wheat harvest bushels farm", "crude": "oil barrel opec refinery",
             "money": "dollar currency central bank", "acq": "merger shares takeover stake"}
    topics = list(words)
    rng = np.random.RandomState(0)
    parts = []
    for i in range(nr_train + nr_test):
        first = topics[i % 4]
        labels = (first,) if i % 5 else (first, topics[(i + 1) % 4])
        body = " ".join(" ".join(rng.permutation(words[t].split())) for t in labels)
        parts.append(doc(i + 1, split="TRAIN" if i < nr_train else "TEST", topics=labels,
                         text=f"<TITLE>{first.upper()} NEWS {i}</TITLE><BODY>{body} said today</BODY>"))
    return write_folder(folder, '<!DOCTYPE lewis SYSTEM "lewis.dtd">\n' + "".join(parts))


def test_reuters_experiment_end_to_end_with_xmr(tmp_path):
    from experiments import reuters as R
    from xmr.text.featurizer import TextFeaturizer

    root = synthetic_reuters(tmp_path / "sgml")
    out = tmp_path / "res" / "r.md"
    args = ["--root", str(root), "--peers", "xmr", "--threads", "1", "--n-single", "3", "--out", str(out),
            "--data-dir", str(tmp_path / "feat"), "--runs-dir", str(tmp_path / "runs"), "--seeds", "0,1"]
    assert R.main(args) == 0
    payload = json.loads(out.with_suffix(".json").read_text())
    assert [(r["library"], r["seed"]) for r in payload["rows"]] == [("xmr", 0), ("xmr", 1)]
    row = payload["rows"][0]
    assert row["ok"] and row["n_train"] == 40 and row["n_test"] == 12
    assert row["P@1"] == 100.0  # every topic has its own vocabulary
    assert payload["means"]["xmr"]["nr_seeds"] == 2
    report = out.read_text()
    assert "| reuters (4 labels) | xmr | 100.00 |" in report and "| xmr | 2 | 100.00 ± 0.00 |" in report
    # The data folder holds the fitted featurizer; its transform of the test texts IS the benchmarked X_test.
    split = T.reuters_modapte(root)
    feat = TextFeaturizer.load(tmp_path / "feat" / "featurizer")
    X_test = sp.load_npz(tmp_path / "feat" / "X_test.npz")
    assert abs(feat.transform(split.test_texts) - X_test).max() < 1e-6
    assert (tmp_path / "feat" / "labels.txt").read_text().split() == split.label_names()
    assert R.main([*args, "--reuse"]) == 0  # the report is rebuilt from the saved runs


def test_reuters_experiment_bad_arguments(tmp_path, capsys):
    from experiments import reuters as R

    root = synthetic_reuters(tmp_path / "sgml", nr_train=8, nr_test=4)
    common = ["--root", str(root), "--out", str(tmp_path / "r.md"), "--data-dir", str(tmp_path / "feat")]
    assert R.main([*common, "--peers", "xmr,nope"]) == 2
    assert "unknown libraries" in capsys.readouterr().err
    assert R.main([*common, "--seeds", "0,x"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert R.main([*common, "--peers", "xmr", "--features", "words"]) == 2
    assert "feature spec" in capsys.readouterr().err
    assert R.main(["--root", str(tmp_path / "absent"), "--out", str(tmp_path / "r.md")]) == 2
    assert "no reut2-" in capsys.readouterr().err


def test_reuters_comparisons_are_deltas_and_ratios():
    from experiments.reuters import comparisons

    base = {"ok": True, "P@1": 90.0, "P@3": 40.0, "P@5": 25.0, "R@10": 98.0, "MRR@10": 95.0, "train_s": 10.0,
            "batch_s": 1.0, "single_p50_ms": 0.2, "single_p99_ms": 0.5, "peak_mb": 100.0, "model_mb": 1.0}
    rows = [{**base, "library": "xmr", "P@1": 91.0, "train_s": 5.0}, {**base, "library": "libpecos"}]
    comp = {c["quantity"]: c for c in comparisons(rows)}
    assert comp["P@1"]["text"] == "+1.00 pts" and comp["train_s"]["value"] == 0.5
    assert comparisons(rows[:1]) == []
