"""transform_one's numba path (xmr.text.term_table): bit-identical to the Python path, exact table lookups."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import xmr.text.term_table as term_table
from tests.test_text_vectorizers import TRAIN as VECTORIZER_TRAIN
from xmr.text.featurizer import _PYTHON_PATH, TextFeaturizer
from xmr.text.term_table import TermTable
from xmr.text.vectorizers import TfidfBlock

TRAIN = VECTORIZER_TRAIN + [  # plus scripts, emoji, repeats and underscores
    "東京 タワー 東京 駅",
    "Москва сити",
    "pizza 🍕 party 🍕🍕",
    "a b c d e a b",
    "snake_case words_with_underscores 42",
    "echo echo echo dot dot",
]
QUERIES = [
    "echo", "ECHO DOT", "kindle fire", "zzqqxj", "", "   ", "\t\n", "echo sh", "echo sh ", "café", "CAFÉ crème",
    "cafe creme", "3 year", "3", "a", "a b", "x y z", "toys toys toys toys", "echo echo echo dot dot kids",
    "東京", "東京タワー", "москва", "МОСКВА СИТИ", "🍕", "pizza🍕party", "ＥＣＨＯ ｄｏｔ", "Échô—dot…kids!",
    "snake_case", "words_with_underscores 42 42", "echo\x00dot\x07kids", "echo-dot, kids; (fire) [tv]",
    "e\u0301cho", "ß straße", "ǅ ǆ Ǆ", "ﬁre ﬂy", "x" * 300, "echo " * 60, " ".join(TRAIN) * 3,
]
SPECS = ["word", "char", "word1-2:1.5+char", "char2-4", "word+char:0.5", "char1-2", "word1-3+char1-4:2", "prefix",
         "prefix2-4", "word+prefix:0.7", "char+prefix1-2"]


def _fuzz_texts(n: int, seed: int = 0) -> list[str]:
    """Random texts from training words, pieces of them, punctuation, case changes, accents, CJK and emoji."""
    rng = np.random.default_rng(seed)
    words = " ".join(TRAIN).split() + ["ÉCHO", "Dot", "x", "qq", "ñ", "é", "_", "9", "🍕", "東", "!", "--", "\u0301"]
    out = []
    for _ in range(n):
        parts = [str(rng.choice(words)) for _ in range(rng.integers(0, 9))]
        parts = [p[: rng.integers(1, len(p) + 1)] if rng.random() < 0.2 else p for p in parts]
        seps = [str(rng.choice([" ", "  ", "-", ",", "\t", ""])) for _ in parts]
        text = "".join(p + s for p, s in zip(parts, seps))
        out.append(text.upper() if rng.random() < 0.1 else text)
    return out


def _same_bits(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return (a[0].dtype == b[0].dtype == np.int32 and a[1].dtype == b[1].dtype == np.float32
            and np.array_equal(a[0], b[0]) and a[1].tobytes() == b[1].tobytes())


@pytest.fixture(scope="module", params=SPECS)
def feat(request: pytest.FixtureRequest) -> TextFeaturizer:
    return TextFeaturizer.from_spec(request.param).fit(TRAIN)


def test_numba_path_is_bit_identical_to_python_path(feat: TextFeaturizer) -> None:
    texts = QUERIES + TRAIN + _fuzz_texts(400)
    got = [feat.transform_one(t) for t in texts]
    assert isinstance(feat._fast, TermTable)
    for text, row in zip(texts, got):
        assert _same_bits(row, feat._transform_one_py(text)), text
    assert sum(row[0].size == 0 for row in got) > 0 and sum(row[0].size > 32 for row in got) > 0
    batch = feat.transform(texts)  # and the batch path still agrees on the columns
    for i in range(len(texts)):
        np.testing.assert_array_equal(got[i][0], batch[i].indices)


def test_repeated_terms_use_sublinear_tf() -> None:
    f = TextFeaturizer.from_spec("word1-1").fit(TRAIN)
    vocab, idf = f.blocks[0][1].vocabulary_, f.blocks[0][1].idf_
    idx, val = f.transform_one("Echo dot ECHO echo zzz")
    assert _same_bits((idx, val), f._transform_one_py("Echo dot ECHO echo zzz"))
    raw = {vocab["echo"]: (1 + np.log(3)) * idf[vocab["echo"]], vocab["dot"]: idf[vocab["dot"]]}
    norm = np.sqrt(sum(v * v for v in raw.values()))
    assert idx.tolist() == sorted(raw)
    np.testing.assert_allclose(val, [raw[c] / norm for c in sorted(raw)], rtol=1e-6)


@pytest.mark.parametrize("decay", [0.0, 0.5, 1.0, 2.5])
def test_prefix_blocks_weigh_positions_as_the_python_path(decay: float) -> None:
    # the typed prefix's last word stays open unless the text ends in whitespace: "ech" is a start of "echo"
    f = TextFeaturizer([("prefix", TfidfBlock("prefix", (1, 3), min_df=1, decay=decay), 1.0)]).fit(TRAIN)
    typed = ["e", "ec", "ech", "ech ", "echo\t", "echo d", "echo dot\n", "aaaaaaaa", "ab ab ab ab ab ab ab ab ab"]
    for q in QUERIES + typed + _fuzz_texts(300, seed=4):
        assert _same_bits(f.transform_one(q), f._transform_one_py(q)), q
    assert isinstance(f._fast, TermTable)
    assert f.transform_one("ech")[0].tolist() != f.transform_one("ech ")[0].tolist()


@pytest.mark.parametrize("blocks", [
    [("word", TfidfBlock("word", hashing=256), 1.0)],
    [("prefix", TfidfBlock("prefix", hashing=512), 1.0)],
    [("plain", TfidfBlock("word"), 1.0), ("accents", TfidfBlock("char", (3, 3), strip_accents=False), 1.0)],
])
def test_other_blocks_fall_back_to_python(blocks: list) -> None:
    f = TextFeaturizer(blocks).fit(TRAIN)
    batch = f.transform(QUERIES)
    for i, q in enumerate(QUERIES):
        idx, val = f.transform_one(q)
        np.testing.assert_array_equal(idx, batch[i].indices)
        np.testing.assert_allclose(val, batch[i].data, rtol=1e-6)
    assert f._fast is _PYTHON_PATH


def test_accents_kept_in_every_block_use_numba() -> None:
    f = TextFeaturizer([("w", TfidfBlock("word", strip_accents=False), 1.0),
                        ("c", TfidfBlock("char", (2, 3), strip_accents=False), 0.5)]).fit(TRAIN)
    for q in QUERIES + _fuzz_texts(200, seed=1):
        assert _same_bits(f.transform_one(q), f._transform_one_py(q)), q
    assert isinstance(f._fast, TermTable) and not f._fast.strip_accents
    assert f.transform_one("café")[0].tolist() != f.transform_one("cafe")[0].tolist()


def test_empty_block_and_empty_text() -> None:
    f = TextFeaturizer.from_spec("word+char").fit(["alpha", "beta"])  # the char block learns nothing (min_df=2)
    assert f.blocks[1][1].nr_features == 0
    for q in ["alpha", "gamma", "", "alpha beta alpha"]:
        assert _same_bits(f.transform_one(q), f._transform_one_py(q))
    idx, val = f.transform_one("")
    assert idx.dtype == np.int32 and val.dtype == np.float32 and idx.size == val.size == 0


def _table(f: TextFeaturizer, hash_mask: int | None = None) -> TermTable:
    return TermTable.build(f._plan(), hash_mask=hash_mask)


@pytest.mark.parametrize("hash_mask", [None, 0b11, 0])  # 2 bits and 0: every term collides with many others
def test_lookup_is_exact(hash_mask: int | None) -> None:
    f = TextFeaturizer.from_spec("word1-2+char2-4").fit(TRAIN)
    table = _table(f, hash_mask)
    assert table.capacity >= 2 * f.nr_features and table.nbytes == table.blob.nbytes
    known = set()
    for b, (off, block, _) in enumerate(f._plan()):
        for col, term in enumerate(block.terms_):
            assert table.lookup(b, term) == off + col
            known.add((b, term))
    words = f.blocks[0][1].terms_
    chars = f.blocks[1][1].terms_
    absent = [w + "x" for w in words] + [w[:-1] for w in words] + [w + " " for w in words] + [
        "", "zzz", "ech", "echo dot kids", "#", "##", "东京", "Echo", "echo\x00"]
    for term in absent:
        assert (0, term) in known or table.lookup(0, term) == -1, term
    char_offset, char_vocab = f._plan()[1][0], f.blocks[1][1].vocabulary_
    for term in chars:  # a term of one block is not another block's unless that block has it too
        assert table.lookup(0, term) == f.blocks[0][1].vocabulary_.get(term, -1)
    for term in words:
        assert table.lookup(1, term) == (char_offset + char_vocab[term] if term in char_vocab else -1)


def test_forced_collisions_keep_the_featurizer_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(term_table, "HASH_MASK", 0b111)
    f = TextFeaturizer.from_spec("word1-2:1.5+char").fit(TRAIN)
    for q in QUERIES + _fuzz_texts(200, seed=2):
        assert _same_bits(f.transform_one(q), f._transform_one_py(q)), q
    assert int(f._fast.blob[term_table.H_HASH_MASK]) == 0b111


def test_refit_and_load_rebuild_the_table(tmp_path: Path) -> None:
    f = TextFeaturizer.from_spec("word+char").fit(TRAIN)
    before = f.transform_one("echo dot")
    first = f._fast
    f.fit(TRAIN[:6])
    assert f._fast is None
    after = f.transform_one("echo dot")
    assert f._fast is not first and _same_bits(after, f._transform_one_py("echo dot"))
    assert not _same_bits(before, after)
    f.save(tmp_path)
    g = TextFeaturizer.load(tmp_path)
    assert _same_bits(g.transform_one("echo dot"), after)


def test_many_threads_share_one_featurizer() -> None:
    f = TextFeaturizer.from_spec("word1-2:1.5+char").fit(TRAIN)
    texts = (QUERIES + _fuzz_texts(300, seed=3)) * 4
    want = [f._transform_one_py(t) for t in texts]
    with ThreadPoolExecutor(8) as pool:  # the first calls race to build the table
        got = list(pool.map(f.transform_one, texts))
    assert all(_same_bits(g, w) for g, w in zip(got, want))
