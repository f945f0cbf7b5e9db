"""TextFeaturizer: block combination, specs, single-query path, save/load and its validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.preprocessing import normalize as l2_normalize

from xmr.model_io import ModelFormatError
from xmr.text.featurizer import TextFeaturizer
from xmr.text.vectorizers import TfidfBlock
from xmr.validation import InputError

TRAIN = [
    "Echo with screen",
    "echo dot 3rd gen",
    "Kindle Paperwhite waterproof",
    "kindle kids edition",
    "fire tv stick 4k",
    "Fire TV stick lite",
    "echo show 5",
    "Échô dot kids",
    "3 year old toys",
    "toys for 3 year old boys",
    "ＦＩＲＥ ｔａｂｌｅｔ",
    "café crème machine",
    "echo dot",
]
QUERIES = ["echo", "ECHO DOT", "kindle fire", "zzqqxj", "", "echo sh", "echo sh ", "café", "3 year",
           "echo", "qq echo dot kids"]


def _bytes_equal(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return (a.shape == b.shape and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
            and a.data.tobytes() == b.data.tobytes())


@pytest.fixture(scope="module")
def feat() -> TextFeaturizer:
    return TextFeaturizer.from_spec("word:0.5+char+prefix:2").fit(TRAIN)


def test_spec_defaults() -> None:
    f = TextFeaturizer.from_spec("word+char+prefix")
    (n1, w, a), (n2, c, b), (n3, p, d) = f.blocks
    assert (n1, n2, n3) == ("word", "char", "prefix") and a == b == d == 1.0
    assert (w.kind, w.ngram_range, w.min_df) == ("word", (1, 3), 1)
    assert (c.kind, c.ngram_range, c.min_df) == ("char", (3, 3), 2)
    assert (p.kind, p.ngram_range) == ("prefix", (1, 3))
    assert f.spec == "word+char+prefix"
    assert TextFeaturizer.from_spec().spec == "word+char"


def test_spec_weights_orders_and_hashing() -> None:
    f = TextFeaturizer.from_spec("word1-2:0.5+char4", hashing=256)
    (n1, w, a), (n2, c, b) = f.blocks
    assert (n1, w.ngram_range, a, w.hashing) == ("word1-2", (1, 2), 0.5, 256)
    assert (n2, c.ngram_range, b, c.hashing) == ("char4-4", (4, 4), 1.0, 256)


@pytest.mark.parametrize("spec", ["", "words", "word+", "word:x", "word:0", "word:-1", "word+word", "char3-2",
                                  "word:inf", None, 3])
def test_bad_spec_raises_input_error(spec: object) -> None:
    with pytest.raises(InputError):
        TextFeaturizer.from_spec(spec)  # type: ignore[arg-type]


def test_transform_combines_normalised_weighted_blocks(feat: TextFeaturizer) -> None:
    parts = []
    for _, block, weight in feat.blocks:
        parts.append(weight * l2_normalize(block.sklearn_vectorizer_.transform(QUERIES)
                                           if block.kind != "prefix" else block.transform(QUERIES)))
    want = l2_normalize(sp.hstack(parts).tocsr())
    got = feat.transform(QUERIES)
    assert got.dtype == np.float32 and got.shape == (len(QUERIES), feat.nr_features)
    np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=1e-6, atol=1e-7)
    assert got.has_sorted_indices
    norms = np.sqrt(np.asarray(got.multiply(got).sum(axis=1)).ravel())
    nonempty = np.diff(got.indptr) > 0
    np.testing.assert_allclose(norms[nonempty], 1.0, rtol=1e-6)
    assert not nonempty[QUERIES.index("")] and not nonempty[QUERIES.index("zzqqxj")]
    assert np.all(np.isfinite(got.data))


def test_block_columns_follow_offsets(feat: TextFeaturizer) -> None:
    offs = feat.offsets
    assert offs[0] == 0 and offs[-1] == feat.nr_features
    x = feat.transform(["echo dot"])
    for b, (_, block, _) in enumerate(feat.blocks):
        cols = x.indices[(x.indices >= offs[b]) & (x.indices < offs[b + 1])] - offs[b]
        np.testing.assert_array_equal(cols, block.transform(["echo dot"]).indices)


def test_transform_one_equals_transform_row(feat: TextFeaturizer) -> None:
    batch = feat.transform(QUERIES)
    for i, q in enumerate(QUERIES):
        idx, val = feat.transform_one(q)
        assert idx.dtype == np.int32 and val.dtype == np.float32
        np.testing.assert_array_equal(idx, batch[i].indices)
        np.testing.assert_allclose(val, batch[i].data, rtol=1e-6)
        single = feat.transform([q])
        np.testing.assert_array_equal(single.indices, idx)


def test_zero_rows_and_bad_input(feat: TextFeaturizer) -> None:
    idx, val = feat.transform_one("   ")
    assert idx.size == 0 and val.size == 0
    assert feat.transform(["", "zzzzqqq"]).nnz == 0
    assert feat.transform([]).shape == (0, feat.nr_features)
    with pytest.raises(InputError):
        feat.transform("echo")
    with pytest.raises(InputError):
        feat.transform_one(None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not fitted"):
        TextFeaturizer.from_spec("word").transform(["a"])
    with pytest.raises(InputError, match="zero texts"):
        TextFeaturizer.from_spec("word").fit([])
    with pytest.raises(InputError, match="no features"):
        TextFeaturizer.from_spec("word").fit(["", "!!"])


def test_tiny_corpus_with_min_df_2_char_block_still_works() -> None:
    f = TextFeaturizer.from_spec("word+char").fit(["alpha", "beta"])
    assert f.blocks[1][1].nr_features == 0 and f.nr_features == 2
    assert f.transform(["alpha"]).nnz == 1


@pytest.mark.parametrize("spec,hashing", [("word:0.5+char+prefix:2", None), ("word+char", 512)])
def test_save_load_round_trip_is_bit_identical(tmp_path: Path, spec: str, hashing: int | None) -> None:
    f = TextFeaturizer.from_spec(spec, hashing=hashing).fit(TRAIN)
    f.save(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    if hashing is None:
        assert "word.vocab.json" in names and "char.vocab.json" in names
    else:
        assert not any(n.endswith(".vocab.json") for n in names)
    manifest = json.loads((tmp_path / "featurizer.json").read_text())
    assert manifest["format"] == "xmr.text" and manifest["version"] == 1
    g = TextFeaturizer.load(tmp_path)
    assert g.spec == f.spec and g.nr_features == f.nr_features
    texts = TRAIN + QUERIES
    assert _bytes_equal(f.transform(texts), g.transform(texts))
    for q in QUERIES:
        a, b = f.transform_one(q), g.transform_one(q)
        assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


def test_unicode_vocabulary_survives_save(tmp_path: Path) -> None:
    f = TextFeaturizer.from_spec("word+char").fit(["東京 タワー", "東京 駅", "Москва сити", "Москва"])
    f.save(tmp_path)
    g = TextFeaturizer.load(tmp_path)
    assert _bytes_equal(f.transform(["東京", "москва"]), g.transform(["東京", "москва"]))
    assert g.transform(["東京"]).nnz > 0


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    TextFeaturizer.from_spec("word+char").fit(TRAIN).save(tmp_path)
    return tmp_path


def _edit_manifest(path: Path, **changes: object) -> None:
    m = json.loads((path / "featurizer.json").read_text())
    m.update(changes)
    (path / "featurizer.json").write_text(json.dumps(m))


def _edit_block(path: Path, key: str, value: object) -> None:
    m = json.loads((path / "featurizer.json").read_text())
    m["blocks"][0][key] = value
    (path / "featurizer.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    ("damage", "file", "message"),
    [
        (lambda p: (p / "featurizer.json").unlink(), "featurizer.json", "missing"),
        (lambda p: (p / "featurizer.json").write_text("{not json"), "featurizer.json", "JSON"),
        (lambda p: _edit_manifest(p, format="pecos"), "featurizer.json", "format"),
        (lambda p: _edit_manifest(p, version=2), "featurizer.json", "version"),
        (lambda p: _edit_manifest(p, blocks=[]), "featurizer.json", "blocks"),
        (lambda p: _edit_manifest(p, nr_features=5), "featurizer.json", "nr_features"),
        (lambda p: _edit_block(p, "config", {"kind": "chars"}), "featurizer.json", "kind"),
        (lambda p: _edit_block(p, "config", {"kind": "word", "hashing": 64}), "featurizer.json", "vocab"),
        (lambda p: _edit_block(p, "vocab", None), "featurizer.json", "vocab"),
        (lambda p: _edit_block(p, "idf", "../word.idf.npy"), "featurizer.json", "plain name"),
        (lambda p: _edit_block(p, "weight", float("nan")), "featurizer.json", "weight"),
        (lambda p: (p / "char.vocab.json").unlink(), "char.vocab.json", "missing"),
        (lambda p: np.save(p / "word.idf.npy", np.zeros(len(json.loads((p / "word.vocab.json").read_text())))),
         "word.idf.npy", "zero"),
        (lambda p: (p / "word.vocab.json").write_text('["a", 1]'), "word.vocab.json", "list of strings"),
        (lambda p: (p / "word.vocab.json").write_text('["a"]'), "word.vocab.json", "terms"),
        (lambda p: (p / "word.idf.npy").unlink(), "word.idf.npy", "missing"),
        (lambda p: (p / "word.idf.npy").write_bytes(b"\x93NUMPY garbage"), "word.idf.npy", "unreadable"),
        (lambda p: np.save(p / "char.idf.npy", np.zeros((2, 2))), "char.idf.npy", "1-D"),
        (lambda p: np.save(p / "char.idf.npy", -np.ones(len(json.loads((p / "char.vocab.json").read_text())))),
         "char.idf.npy", "negative"),
    ],
)
def test_corrupt_or_missing_files_raise_model_format_error(saved: Path, damage, file: str, message: str) -> None:
    damage(saved)
    with pytest.raises(ModelFormatError, match=message) as err:
        TextFeaturizer.load(saved)
    assert file in str(err.value)


def test_load_of_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="not a directory"):
        TextFeaturizer.load(tmp_path / "nope")


def test_constructor_validates_blocks() -> None:
    b = TfidfBlock("word")
    with pytest.raises(InputError, match="duplicate"):
        TextFeaturizer([("a", b, 1.0), ("a", TfidfBlock("char"), 1.0)])
    with pytest.raises(InputError, match="name"):
        TextFeaturizer([("../x", b, 1.0)])
    with pytest.raises(InputError, match="weight"):
        TextFeaturizer([("a", b, 0.0)])
    with pytest.raises(InputError, match="TfidfBlock"):
        TextFeaturizer([("a", object(), 1.0)])  # type: ignore[list-item]
    with pytest.raises(InputError):
        TextFeaturizer([])


def test_real_aol_queries_match_sklearn(shared_data: Path) -> None:
    from experiments.datasets import read_aol_rows

    rows = read_aol_rows(shared_data / "aol-querylog" / "aol_800_users.tsv")
    queries = [q for _, (q, _, _) in zip(range(3000), rows)]
    f = TextFeaturizer.from_spec("word+char").fit(queries[:2000])
    test = queries[2000:]
    for _, block, _ in f.blocks:
        ref = sp.csr_matrix(block.sklearn_vectorizer_.transform(test))
        np.testing.assert_allclose(block.transform(test).toarray(), ref.toarray(), rtol=1e-6, atol=1e-7)
    batch = f.transform(test)
    for i in range(0, len(test), 37):
        idx, val = f.transform_one(test[i])
        np.testing.assert_array_equal(idx, batch[i].indices)
        np.testing.assert_allclose(val, batch[i].data, rtol=1e-6)


def test_transform_one_is_bit_identical_for_word_and_char() -> None:
    f = TextFeaturizer.from_spec("word:0.7+char").fit(TRAIN + ["toys toys toys echo echo"])
    queries = QUERIES + ["toys toys toys echo echo", "echo echo echo dot dot"]
    batch = f.transform(queries)
    for i, q in enumerate(queries):
        idx, val = f.transform_one(q)
        assert idx.tobytes() == batch[i].indices.tobytes()
        assert val.tobytes() == batch[i].data.tobytes()


def test_blocks_with_different_accent_handling() -> None:
    f = TextFeaturizer([("plain", TfidfBlock("word"), 1.0),
                        ("accents", TfidfBlock("word", strip_accents=False), 1.0)]).fit(["café crème", "cafe"])
    plain, accents = f.blocks[0][1], f.blocks[1][1]
    assert set(plain.terms_) == {"cafe", "creme"} and set(accents.terms_) == {"café", "crème", "cafe"}
    idx, val = f.transform_one("CAFÉ")
    assert [f.offsets[0] + plain.vocabulary_["cafe"], f.offsets[1] + accents.vocabulary_["café"]] == idx.tolist()
    np.testing.assert_array_equal(f.transform(["CAFÉ"]).indices, idx)


def test_hashing_featurizer_unknown_text_is_zero() -> None:
    f = TextFeaturizer.from_spec("word+char", hashing=1 << 16).fit(TRAIN)
    assert f.nr_features == 2 << 16
    assert f.transform_one("zzqqxj")[0].size == 0
    assert f.transform(["zzqqxj", ""]).nnz == 0
    assert f.transform_one("echo dot")[0].size > 0


def test_fit_and_transform_with_progress() -> None:
    f = TextFeaturizer.from_spec("word+char").fit(TRAIN, progress=True)
    assert (f.transform(QUERIES, progress=True) != f.transform(QUERIES)).nnz == 0


def test_chunked_transform_equals_one_chunk(monkeypatch: pytest.MonkeyPatch, feat: TextFeaturizer) -> None:
    import xmr.text.vectorizers as vec

    texts = QUERIES + TRAIN + QUERIES
    want = feat.transform(texts)
    block_want = feat.blocks[1][1].transform(texts)
    monkeypatch.setattr(vec, "_CHUNK_TEXTS", 4)
    got = feat.transform(texts, progress=True)
    assert _bytes_equal(got, want) and got.has_sorted_indices
    assert _bytes_equal(feat.blocks[1][1].transform(texts), block_want)


def test_transform_one_from_many_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import xmr.text.vectorizers as vec

    f = TextFeaturizer.from_spec("word+char+prefix").fit(TRAIN)
    queries = (QUERIES + TRAIN) * 20
    want = [f.transform_one(q) for q in queries]
    monkeypatch.setattr(vec, "_CACHE_LIMIT", 5)  # caches reset all the time while threads read them
    for _, block, _ in f.blocks:
        block._cache.clear()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(f.transform_one, queries))
    for (wi, wv), (gi, gv) in zip(want, got):
        assert wi.tobytes() == gi.tobytes() and wv.tobytes() == gv.tobytes()


def test_empty_block_survives_save_and_load(tmp_path: Path) -> None:
    f = TextFeaturizer.from_spec("word+char").fit(["alpha", "beta"])
    f.save(tmp_path)
    g = TextFeaturizer.load(tmp_path)
    assert g.blocks[1][1].nr_features == 0 and g.nr_features == 2
    assert _bytes_equal(f.transform(["alpha", "gamma"]), g.transform(["alpha", "gamma"]))
