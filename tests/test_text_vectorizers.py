"""TfidfBlock: our transform against scikit-learn's, hashing mode, prefix weights, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

from xmr.text.analyzers import prefix_char_ngrams
from xmr.text.normalize import normalize, tokenize
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
    "toys for 3 year old boys boys",
    "ＦＩＲＥ ｔａｂｌｅｔ",
    "café crème machine",
]
QUERIES = ["echo", "ECHO DOT", "kindle fire", "unknownword", "", "  ", "toys toys toys", "fire tv stic",
           "café", "cafe", "3", "!!!", "echo show ", "kids echo dot kids"]


def _assert_same(ours: sp.csr_matrix, ref: sp.spmatrix) -> None:
    ref = sp.csr_matrix(ref)
    assert ours.shape == ref.shape
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours.toarray(), ref.toarray(), rtol=1e-6, atol=1e-7)
    assert np.array_equal(np.diff(ours.indptr), np.diff(ref.indptr))  # same sparsity, no explicit zeros


@pytest.mark.parametrize(
    ("kind", "ngram", "min_df", "sublinear"),
    [("word", (1, 1), 1, True), ("word", (1, 3), 1, True), ("word", (1, 2), 2, False), ("char", (3, 3), 1, True),
     ("char", (3, 3), 2, True), ("char", (2, 4), 1, False)],
)
def test_transform_equals_sklearn(kind: str, ngram: tuple[int, int], min_df: int, sublinear: bool) -> None:
    block = TfidfBlock(kind, ngram, min_df=min_df, sublinear_tf=sublinear).fit(TRAIN)
    tv = block.sklearn_vectorizer_
    assert block.nr_features == len(tv.vocabulary_) > 0
    np.testing.assert_array_equal(block.idf_, tv.idf_)
    for texts in (TRAIN, QUERIES, TRAIN + QUERIES + TRAIN):
        _assert_same(block.transform(texts), tv.transform(texts))


def test_max_df_and_max_features_follow_sklearn() -> None:
    block = TfidfBlock("word", (1, 2), max_df=0.2, max_features=7).fit(TRAIN)
    tv = block.sklearn_vectorizer_
    assert block.nr_features == 7
    assert block.terms_ == sorted(tv.vocabulary_, key=tv.vocabulary_.get)
    _assert_same(block.transform(QUERIES), tv.transform(QUERIES))


@pytest.mark.parametrize("kind", ["word", "char", "prefix"])
def test_transform_one_equals_transform_row(kind: str) -> None:
    block = TfidfBlock(kind, (1, 3)).fit(TRAIN)
    batch = block.transform(QUERIES)
    for i, q in enumerate(QUERIES):
        idx, val = block.transform_one(q)
        assert idx.dtype == np.int32 and val.dtype == np.float32
        row = batch[i]
        np.testing.assert_array_equal(idx, row.indices)
        np.testing.assert_allclose(val, row.data, rtol=1e-6)
        assert np.all(np.diff(idx) > 0)


@pytest.mark.parametrize("kind", ["word", "char", "prefix"])
def test_empty_and_unknown_text_give_zero_rows(kind: str) -> None:
    block = TfidfBlock(kind, (1, 2) if kind == "word" else (3, 3)).fit(TRAIN)
    m = block.transform(["", "   ", "qqqq zzzz", "!!!"])
    assert m.shape == (4, block.nr_features) and m.nnz == 0
    idx, val = block.transform_one("qqqq")
    assert idx.size == 0 and val.size == 0
    assert np.all(np.isfinite(block.transform(["echo", ""]).data))


def test_markers_reach_the_first_and_last_word_of_a_query() -> None:
    block = TfidfBlock("char", (3, 3)).fit(["echo with screen"])
    idx, _ = block.transform_one("Echo with screen")
    terms = {block.terms_[i] for i in idx}
    assert {"#ec", "ech", "cho", "ho#", "#wi", "th#", "#sc", "en#"} <= terms
    assert len(terms) == 14


def _plain_prefix_row(block: TfidfBlock, text: str) -> dict[str, float]:
    """Reference prefix row: sum weights per term, sublinear above 1, times idf, L2-normalised."""
    toks = tokenize(normalize(text))
    tf: dict[str, float] = {}
    for g, w in prefix_char_ngrams(toks, *block.ngram_range, text[-1:].isspace(), block.decay):
        if g in block.vocabulary_:
            tf[g] = tf.get(g, 0.0) + w
    vals = {g: (1 + math.log(v) if v > 1 else v) * block.idf_[block.vocabulary_[g]] for g, v in tf.items()}
    norm = math.sqrt(sum(v * v for v in vals.values()))
    return {g: v / norm for g, v in vals.items()}


@pytest.mark.parametrize("text", ["echo sh", "echo sh ", "kindle kindle kin", "toys", "e"])
@pytest.mark.parametrize("decay", [0.0, 1.0, 2.0])
def test_prefix_block_matches_plain_reference(text: str, decay: float) -> None:
    block = TfidfBlock("prefix", (1, 3), decay=decay).fit(TRAIN)
    want = _plain_prefix_row(block, text)
    idx, val = block.transform_one(text)
    got = {block.terms_[i]: float(v) for i, v in zip(idx, val)}
    assert got.keys() == want.keys()
    for g in want:
        assert got[g] == pytest.approx(want[g], rel=1e-6)
    row = block.transform([text])
    np.testing.assert_allclose(row.toarray()[0, idx], val, rtol=1e-6)


def test_prefix_unfinished_word_has_no_end_marker() -> None:
    block = TfidfBlock("prefix", (3, 3)).fit(["echo show", "echo sh "])
    open_terms = {block.terms_[i] for i in block.transform_one("echo sh")[0]}
    closed_terms = {block.terms_[i] for i in block.transform_one("echo sh ")[0]}
    assert "sh#" not in open_terms and "sh#" in closed_terms
    assert "ho#" in open_terms  # "echo" is finished in both


@pytest.mark.parametrize("kind", ["word", "char", "prefix"])
@pytest.mark.parametrize("sublinear", [True, False])
def test_hashing_equals_sklearn_hashing_plus_idf(kind: str, sublinear: bool) -> None:
    block = TfidfBlock(kind, (1, 2) if kind == "word" else (3, 3), hashing=64, sublinear_tf=sublinear).fit(TRAIN)
    assert block.nr_features == 64 and block.terms_ is None
    hv = HashingVectorizer(analyzer=block.analyze, n_features=64, alternate_sign=False, norm=None,
                           token_pattern=None, lowercase=False)
    tt = TfidfTransformer(sublinear_tf=sublinear).fit(hv.transform(TRAIN))
    if kind != "prefix":  # prefix rows weigh n-grams by position, which plain hashing counts cannot express
        _assert_same(block.transform(TRAIN), tt.transform(hv.transform(TRAIN)))
    seen = np.bincount(hv.transform(TRAIN).indices, minlength=64) > 0
    np.testing.assert_array_equal(block.idf_[seen], tt.idf_[seen])
    assert np.all(block.idf_[~seen] == 0)
    for q in QUERIES:
        idx, val = block.transform_one(q)
        row = block.transform([q])
        np.testing.assert_array_equal(idx, row.indices)
        np.testing.assert_allclose(val, row.data, rtol=1e-6)
        assert np.all(seen[idx])  # buckets never seen in training are dropped like unknown terms


def test_hashing_bucket_of_minimum_int32_hash() -> None:
    from sklearn.utils import murmurhash3_32

    block = TfidfBlock("word", hashing=1000).fit(["a b"])
    for term in ("a", "b", "zz"):
        h = murmurhash3_32(term, positive=False)
        assert block._column_of(term) in (abs(h) % 1000, -1)


def test_tiny_corpus_block_learns_nothing_without_crashing() -> None:
    block = TfidfBlock("char", (3, 3), min_df=2).fit(["solo"])
    assert block.nr_features == 0
    assert block.transform(["solo", ""]).shape == (2, 0)
    assert block.transform_one("solo")[0].size == 0


@pytest.mark.parametrize(
    "kwargs",
    [dict(kind="words"), dict(ngram_range=(0, 1)), dict(ngram_range=(3, 2)), dict(ngram_range="ab"),
     dict(min_df=0), dict(min_df=1.5), dict(max_df=-0.1), dict(hashing=0), dict(hashing=2.5),
     dict(hashing=2**31), dict(hashing=True), dict(hashing=16, max_features=10), dict(decay=-1.0),
     dict(decay=float("nan")), dict(max_features=0)],
)
def test_bad_parameters_raise_input_error(kwargs: dict) -> None:
    with pytest.raises(InputError):
        TfidfBlock(**kwargs)


def test_bad_texts_raise_input_error() -> None:
    block = TfidfBlock("word")
    with pytest.raises(InputError, match="not fitted"):
        block.transform(["a"])
    with pytest.raises(InputError, match="single str"):
        block.fit("echo dot")
    with pytest.raises(InputError, match=r"texts\[1\]"):
        block.fit(["a", None])
    with pytest.raises(InputError, match="zero texts"):
        block.fit([])
    block.fit(TRAIN)
    with pytest.raises(InputError, match="expected str"):
        block.transform_one(b"echo")
    with pytest.raises(InputError, match=r"texts\[0\]"):
        block.transform([3])


def test_to_dict_from_dict_round_trip() -> None:
    for hashing in (None, 128):
        block = TfidfBlock("char", (2, 3), hashing=hashing, decay=0.5).fit(TRAIN)
        clone = TfidfBlock.from_dict(block.to_dict())
        assert clone.config() == block.config()
        a, b = block.transform(QUERIES), clone.transform(QUERIES)
        assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
        assert a.data.tobytes() == b.data.tobytes()


def test_from_dict_rejects_inconsistent_state() -> None:
    d = TfidfBlock("word").fit(TRAIN).to_dict()
    with pytest.raises(InputError, match="of them but"):
        TfidfBlock.from_dict({**d, "terms": d["terms"][:-1]})
    with pytest.raises(InputError, match="duplicates"):
        TfidfBlock.from_dict({**d, "terms": [d["terms"][0]] * len(d["terms"])})
    with pytest.raises(InputError, match="non-finite"):
        TfidfBlock.from_dict({**d, "idf": np.full(len(d["terms"]), np.nan)})


def test_one_char_tokens_are_terms() -> None:
    block = TfidfBlock("word", (1, 2)).fit(TRAIN)
    assert {"3", "3 year", "5", "4k"} <= set(block.terms_)


def test_small_cache_gives_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import xmr.text.vectorizers as vec

    blocks = {k: TfidfBlock(k, (2, 3), hashing=h).fit(TRAIN) for k in ("char", "prefix") for h in (None, 97)}
    want = {k: b.transform(QUERIES * 2) for k, b in blocks.items()}
    monkeypatch.setattr(vec, "_CACHE_LIMIT", 3)
    for k, b in blocks.items():
        b._cache.clear()
        got = b.transform(QUERIES * 2)
        assert (got != want[k]).nnz == 0
        assert len(b._cache) <= 3
        for i, q in enumerate(QUERIES):
            np.testing.assert_array_equal(b.transform_one(q)[0], want[k][i].indices)


def test_fit_with_progress_bar() -> None:
    block = TfidfBlock("char", (3, 3)).fit(TRAIN, progress=True)
    assert block.nr_features == len(block.sklearn_vectorizer_.vocabulary_)
    block = TfidfBlock("word", hashing=32).fit(TRAIN, progress="words")
    assert block.nr_features == 32


def test_refit_forgets_the_previous_vocabulary() -> None:
    block = TfidfBlock("char", (3, 3)).fit(["echo dot"])
    block.transform_one("echo")
    block.fit(["kindle"])
    assert block.transform_one("echo")[0].size == 0
    assert block.transform_one("kindle")[0].size == 6


def test_hashing_fit_in_chunks_gives_the_same_idf(monkeypatch: pytest.MonkeyPatch) -> None:
    import xmr.text.vectorizers as vec

    want = TfidfBlock("char", (2, 3), hashing=101, min_df=2, max_df=0.5).fit(TRAIN).idf_
    monkeypatch.setattr(vec, "_CHUNK_TEXTS", 5)
    got = TfidfBlock("char", (2, 3), hashing=101, min_df=2, max_df=0.5).fit(TRAIN, progress=True).idf_
    assert got.tobytes() == want.tobytes()
    assert np.any(want == 0) and np.any(want > 0)
