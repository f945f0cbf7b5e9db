"""The catalogue reader, the self-supervised product instances and the cached default product retriever."""

from __future__ import annotations

import gzip
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from xmr import catalogue
from xmr.catalogue import (
    Product, default_cache_path, default_retriever, load_catalogue, parse_catalogue, product_instances,
    product_text, pseudo_queries, train_product_retriever,
)
from xmr.validation import InputError

HEADER = ("uniq_id;product_name;amazon_category_and_sub_category;manufacturer;price;number_available_in_stock;"
          "number_of_reviews;number_of_answered_questions;average_rating")

BRANDS = ["Hornby", "Bigjigs", "Lego", "Playmobil", "Ravensburger"]
KINDS = [("Wooden Train Set", "Hobbies > Model Trains & Railway Sets"), ("Coach Carriage", "Hobbies > Rolling Stock"),
         ("Jigsaw Puzzle 1000 Pieces", "Jigsaws & Puzzles > Jigsaws"), ("Pirate Ship", "Figures & Playsets"),
         ("Fire Station", "Figures & Playsets > Buildings")]
COLOURS = ["red", "blue"]


def synthetic_rows() -> list[str]:
    rows = []
    for n, (brand, (kind, cat), colour) in enumerate(itertools.product(BRANDS, KINDS, COLOURS)):
        price = f"{5 + n}.99" if n % 3 else ""
        stock = f"{n % 7 + 1}\xa0new" if n % 2 else ""
        rows.append(f"p{n:03d};{brand} {colour.title()} {kind} Model {n};{cat};{brand};{price};{stock};{n};1;4.5")
    return rows


@pytest.fixture(scope="module")
def catalogue_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cat") / "toys.csv"
    path.write_text("\n".join([HEADER, *synthetic_rows()]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def products(catalogue_file) -> list[Product]:
    return load_catalogue(catalogue_file)


@pytest.fixture(scope="module")
def retriever(products):
    return train_product_retriever(products, threads=1, max_leaf_size=8)


# ------------------------------------------------------------------------------------------------- reader
def test_reads_fields(products):
    assert len(products) == 50
    p = products[1]
    assert p.uid == "p001" and p.manufacturer == "Hornby" and p.name == "Hornby Blue Wooden Train Set Model 1"
    assert p.categories == ("Hobbies", "Hobbies > Model Trains & Railway Sets")
    assert p.category == "Hobbies > Model Trains & Railway Sets"
    assert p.price == pytest.approx(6.99) and p.rating == 4.5 and p.reviews == 1
    assert p.stock == 2 and p.stock_condition == "new"
    assert products[0].price is None and products[0].stock is None


def test_gzip_and_blank_lines(tmp_path, catalogue_file):
    path = tmp_path / "toys.csv.gz"
    path.write_bytes(gzip.compress(catalogue_file.read_bytes() + b"\n\n"))
    assert load_catalogue(path) == load_catalogue(catalogue_file)


def test_bundled_catalogue():
    products = load_catalogue()
    assert len(products) == 10_000
    assert len({p.uid for p in products}) == 10_000
    assert sum(p.price is not None for p in products) == 8565


def test_quickstart_still_exports_the_reader():
    from xmr import quickstart

    assert quickstart.Product is Product and quickstart.load_catalogue is load_catalogue


@pytest.mark.parametrize("row, problem", [
    ("p9;Too;few;fields", "4 fields, expected 9"),
    ("p9;A;B;C;1;;1;1;4.5;extra", "10 fields, expected 9"),
    (";Name;Cat;Maker;1;;1;1;4.5", "empty uniq_id"),
    ("p000;Again;Cat;Maker;1;;1;1;4.5", "duplicate uniq_id 'p000' (first on line 2)"),
    ("p9; ;Cat;Maker;1;;1;1;4.5", "empty product_name"),
    ("p9;Name;Cat;Maker;cheap;;1;1;4.5", "column price: 'cheap' is not a valid float"),
    ("p9;Name;Cat;Maker;-3;;1;1;4.5", "column price: '-3' is outside"),
    ("p9;Name;Cat;Maker;1;;1;1;7.5", "column average_rating: '7.5' is outside [0, 5]"),
    ("p9;Name;Cat;Maker;1;;1;1;nan", "column average_rating: 'nan' is outside"),
    ("p9;Name;Cat;Maker;1;plenty;1;1;4.5", "number_available_in_stock: 'plenty' is not like '5 new'"),
    ("p9;Name;Cat;Maker;1;;many;1;4.5", "column number_of_reviews: 'many' is not a valid int"),
])
def test_malformed_row_names_line_and_problem(row, problem):
    text = "\n".join([HEADER, *synthetic_rows()[:3], row]) + "\n"
    with pytest.raises(InputError) as e:
        parse_catalogue(text, "toys.csv")
    assert "toys.csv:5: " in str(e.value) and problem in str(e.value)


@pytest.mark.parametrize("text, problem", [
    ("", "the catalogue is empty"),
    (HEADER + "\n", "no products after the header"),
    ("uniq_id;product_name\np1;x\n", "toys.csv:1: missing columns ['amazon_category_and_sub_category', "
                                     "'manufacturer']"),
    ("uniq_id,product_name,amazon_category_and_sub_category,manufacturer\n", "columns are ';'-separated"),
])
def test_malformed_catalogue(text, problem):
    with pytest.raises(InputError, match="toys.csv") as e:
        parse_catalogue(text, "toys.csv")
    assert problem in str(e.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_catalogue(tmp_path / "absent.csv")
    with pytest.raises(InputError, match="is a directory"):
        load_catalogue(tmp_path)
    bad = tmp_path / "latin1.csv"
    bad.write_bytes((HEADER + "\np1;Caf\xe9 set;Cat;Maker;1;;1;1;4\n").encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1.csv:2: not valid UTF-8"):
        load_catalogue(bad)
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(gzip.compress(HEADER.encode() * 50)[:40])
    with pytest.raises(InputError, match="corrupt gzip"):
        load_catalogue(truncated)


# ------------------------------------------------------------------------------------- training instances
def test_pseudo_queries_are_deterministic_fragments(products):
    p = products[7]
    qs = pseudo_queries(p, n_fragments=4, seed=3)
    assert qs == pseudo_queries(p, n_fragments=4, seed=3)
    assert qs != pseudo_queries(p, n_fragments=4, seed=4)
    assert qs[0] == product_text(p) and qs[1] == p.name
    title = set(p.name.split())
    for q in qs[3:]:  # fragments, then the manufacturer with title words: all made of title words
        assert set(q.split()) <= title | {p.manufacturer}
        assert len(q.split()) <= 5


def test_product_instances_merge_identical_queries(products):
    texts, label_lists, label_texts, metadata = product_instances(products, n_fragments=2)
    assert len(texts) == len(set(texts)) == len(label_lists)
    assert set(label_texts) == set(metadata) == {p.uid for p in products}
    assert {u for labels in label_lists for u in labels} == set(label_texts)
    shared = label_lists[texts.index("hornby model trains railway sets")]  # manufacturer + category leaf
    assert shared == ["p000", "p001"]
    assert all(len(labels) == len(set(labels)) for labels in label_lists)
    assert metadata["p001"]["title"] == "Hornby Blue Wooden Train Set Model 1" and metadata["p001"]["stock"] == 2
    with pytest.raises(InputError, match="duplicate product id 'p000'"):
        product_instances([products[0], products[0]])


# ------------------------------------------------------------------------------------------------ retriever
def test_retrieves_products_from_fragments(retriever, products):
    assert retriever.nr_labels == len(products)
    top = retriever.retrieve_one("playmobil pirate ship", k=5)
    assert top.reason is None and len(top.hits) == 5
    assert {"p036", "p037"} <= set(top.labels[:3])  # the two Playmobil pirate ships
    assert top.hits[0].metadata["manufacturer"] == "Playmobil"
    exact = retriever.retrieve_one("Ravensburger Red Jigsaw Puzzle 1000 Pieces Model 44", k=3)
    assert exact.hits[0].label == "p044"
    batch = retriever.retrieve(["playmobil pirate ship", ""], k=5)
    assert batch[0].labels == top.labels and batch[1].reason == "empty query"


def test_recipe_serves_the_rerank_stage_and_keys_the_cache(retriever, products, monkeypatch):
    rr = catalogue.DEFAULTS["rerank"]
    assert retriever.reranker is not None and retriever.reranker.config.to_dict() == rr
    assert retriever.meta["recipe"]["rerank"] == rr and retriever.reranker.shape[0] == retriever.nr_labels
    q = "playmobil pirate ship"
    assert retriever.retrieve_one(q, k=3, rerank=False).hits and retriever.retrieve_one(q, k=3).hits
    plain = train_product_retriever(products, rerank=None, threads=1, max_leaf_size=8)
    assert plain.reranker is None and plain.meta["recipe"]["rerank"] is None
    fingerprint = catalogue._fingerprint(b"catalogue")
    monkeypatch.setitem(catalogue.DEFAULTS, "rerank", None)  # a cache trained without the stage is stale
    assert catalogue._fingerprint(b"catalogue") != fingerprint


def test_unknown_text_gives_reason(retriever):
    res = retriever.retrieve_one("zzqx", k=5)
    assert res.hits == () and res.reason == "no known terms in query"


# ------------------------------------------------------------------------------------------ default + cache
def test_default_cache_path_follows_xmr_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XMR_HOME", str(tmp_path))
    assert default_cache_path() == tmp_path / "models" / catalogue.RECIPE
    monkeypatch.delenv("XMR_HOME")
    assert default_cache_path() == Path.home() / ".cache" / "xmr" / "models" / catalogue.RECIPE
    assert default_cache_path(tmp_path / "c") == tmp_path / "c" / "models" / catalogue.RECIPE


def test_default_retriever_trains_once_then_loads_the_cache(monkeypatch, tmp_path, catalogue_file, capsys):
    calls = []
    real = catalogue.train_product_retriever

    def counting(products, **kw):
        calls.append(len(products))
        return real(products, max_leaf_size=8, **kw)

    monkeypatch.setattr(catalogue, "train_product_retriever", counting)
    first = default_retriever(tmp_path, progress=True, catalogue=catalogue_file, threads=1)
    assert calls == [50] and "training the product retriever" in capsys.readouterr().out
    path = default_cache_path(tmp_path)
    assert (path / "xmr-retriever.json").is_file()
    assert not [p for p in path.parent.iterdir() if p.name != path.name and not p.name.endswith("lock")]
    second = default_retriever(tmp_path, progress=True, catalogue=catalogue_file, threads=1)
    assert calls == [50] and capsys.readouterr().out == ""  # loaded: no training, nothing printed
    assert second.model_version == first.model_version
    assert second.meta["catalogue"]["nr_products"] == 50
    q = "bigjigs wooden train set"
    assert second.retrieve_one(q, k=5).labels == first.retrieve_one(q, k=5).labels

    changed = tmp_path / "changed.csv"
    changed.write_text("\n".join([HEADER, *synthetic_rows()[:20]]) + "\n", encoding="utf-8")
    third = default_retriever(tmp_path, progress=False, catalogue=changed, threads=1)
    assert calls == [50, 20] and third.nr_labels == 20 and third.model_version != first.model_version


def test_default_retriever_retrains_a_corrupt_cache(monkeypatch, tmp_path, catalogue_file, caplog):
    real = catalogue.train_product_retriever
    monkeypatch.setattr(catalogue, "train_product_retriever",
                        lambda products, **kw: real(products, max_leaf_size=8, **kw))
    first = default_retriever(tmp_path, progress=False, catalogue=catalogue_file, threads=1)
    (default_cache_path(tmp_path) / "xmr-retriever.json").write_text("{broken")
    again = default_retriever(tmp_path, progress=False, catalogue=catalogue_file, threads=1)
    assert "unreadable" in caplog.text and again.model_version != first.model_version
    assert again.nr_labels == 50
    mpath = default_cache_path(tmp_path) / "xmr-retriever.json"
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    manifest["meta"]["catalogue"] = "hand-edited"  # not an object: retrained, not an AttributeError
    mpath.write_text(json.dumps(manifest), encoding="utf-8")
    third = default_retriever(tmp_path, progress=False, catalogue=catalogue_file, threads=1)
    assert third.model_version not in (first.model_version, again.model_version)


def test_default_retriever_refuses_a_foreign_directory(tmp_path, catalogue_file):
    path = default_cache_path(tmp_path)
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="refusing to overwrite"):
        default_retriever(tmp_path, progress=False, catalogue=catalogue_file, threads=1)
    assert (path / "notes.txt").read_text() == "mine"


def test_concurrent_first_uses_train_once(monkeypatch, tmp_path, catalogue_file):
    calls = []
    real = catalogue.train_product_retriever

    def slow(products, **kw):
        calls.append(len(products))
        time.sleep(0.3)  # let the other caller arrive while this one trains
        return real(products, max_leaf_size=8, **kw)

    monkeypatch.setattr(catalogue, "train_product_retriever", slow)
    with ThreadPoolExecutor(2) as pool:
        versions = list(pool.map(
            lambda _: default_retriever(tmp_path, progress=False, catalogue=catalogue_file, threads=1).model_version,
            range(2)))
    assert calls == [50] and versions[0] == versions[1]


def test_quickstart_runs_end_to_end(catalogue_file, tmp_path, monkeypatch, capsys):
    from xmr import quickstart

    monkeypatch.setenv("XMR_HOME", str(tmp_path / "home"))
    rc = quickstart.main(["--catalogue", str(catalogue_file), "-m", str(tmp_path / "m"), "--threads", "1",
                          "--examples", "1", "--query", "hornby coach", "--query", ""])
    out = capsys.readouterr().out
    assert rc == 0
    assert "P@1" in out and "'hornby coach'" in out and "Hornby" in out
    assert "no hits (empty query)" in out
    assert (tmp_path / "home" / "models").is_dir()


def test_quickstart_bad_catalogue_exits_2(tmp_path, capsys):
    from xmr import quickstart

    (tmp_path / "bad.csv").write_text("not;a;catalogue\n")
    assert quickstart.main(["--catalogue", str(tmp_path / "bad.csv"), "-m", str(tmp_path / "m")]) == 2
    assert "cannot read catalogue" in capsys.readouterr().err
