"""Normalisation, tokenisation and the three analyzers of xmr.text."""

from __future__ import annotations

import pytest

from xmr.text.analyzers import char_ngrams, prefix_char_ngrams, word_ngrams
from xmr.text.normalize import normalize, tokenize


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("  Echo   Dot ", "echo dot"),
        ("ＥＣＨＯ　ｄｏｔ", "echo dot"),  # full-width letters and ideographic space (NFKC)
        ("Straße", "strasse"),  # casefold, not lower
        ("Café Crème", "cafe creme"),  # accents stripped
        ("ﬁre\tTV\nstick\x00x", "fire tv stick x"),  # ligature, control chars -> space
        ("zero\u200bwidth soft\u00adhyphen", "zerowidth softhyphen"),  # format chars dropped
        ("Ǆemal", "dzemal"),
        ("", ""),
        (" \t\n ", ""),
    ],
)
def test_normalize(raw: str, want: str) -> None:
    assert normalize(raw) == want
    assert normalize(want) == want  # idempotent


def test_normalize_keeps_accents_when_asked() -> None:
    assert normalize("Café", strip_accents=False) == "café"
    assert normalize("CAFE\u0301", strip_accents=False) == "café"  # NFKC composes the combining accent


def test_normalize_non_latin_scripts_survive() -> None:
    assert normalize("Москва ΣΟΦΙΑ 東京") == "москва σοφια 東京"


def test_tokenize_keeps_one_char_tokens_and_splits_punctuation() -> None:
    assert tokenize(normalize("3 Year-Old's toy, 2-in-1!")) == ["3", "year", "old", "s", "toy", "2", "in", "1"]
    assert tokenize("") == []


def test_word_ngrams() -> None:
    toks = ["a", "b", "c"]
    assert word_ngrams(toks, 1, 1) == ["a", "b", "c"]
    assert word_ngrams(toks, 1, 3) == ["a", "b", "c", "a b", "b c", "a b c"]
    assert word_ngrams(toks, 2, 2) == ["a b", "b c"]
    assert word_ngrams(["a"], 2, 3) == []
    assert word_ngrams([], 1, 3) == []


def test_char_ngrams_keep_markers_of_first_and_last_word() -> None:
    grams = char_ngrams(tokenize(normalize("Echo with screen")), 3, 3)
    assert grams == ["#ec", "ech", "cho", "ho#", "#wi", "wit", "ith", "th#",
                     "#sc", "scr", "cre", "ree", "een", "en#"]


def test_char_ngrams_short_words_and_orders() -> None:
    assert char_ngrams(["a"], 3, 3) == ["#a#"]
    assert char_ngrams(["a"], 4, 5) == []  # no padding beyond the markers
    assert char_ngrams(["ab"], 1, 2) == ["a", "b", "#a", "ab", "b#"]  # the bare marker 1-gram is left out
    assert char_ngrams([], 3, 3) == []


def _plain_prefix(tokens: list[str], lo: int, hi: int, complete_last: bool, decay: float) -> list[tuple[str, float]]:
    """Straightforward reference of the prefix weighting, written independently of the implementation."""
    out = []
    for i, tok in enumerate(tokens):
        word = "#" + tok + ("#" if i < len(tokens) - 1 or complete_last else "")
        for n in range(lo, hi + 1):
            for p in range(len(word) - n + 1):
                if word[p : p + n] != "#":
                    out.append((word[p : p + n], (1 + p) ** -decay))
    return out


@pytest.mark.parametrize("complete_last", [False, True])
@pytest.mark.parametrize("decay", [0.0, 0.5, 1.0, 2.0])
def test_prefix_weights_match_plain_reference(complete_last: bool, decay: float) -> None:
    toks = ["echo", "sh"]
    got = prefix_char_ngrams(toks, 1, 3, complete_last, decay)
    want = _plain_prefix(toks, 1, 3, complete_last, decay)
    assert [g for g, _ in got] == [g for g, _ in want]
    assert [w for _, w in got] == pytest.approx([w for _, w in want], rel=1e-12)


def test_prefix_last_word_end_marker_only_when_complete() -> None:
    open_grams = {g for g, _ in prefix_char_ngrams(["echo", "sh"], 3, 3, False, 1.0)}
    closed_grams = {g for g, _ in prefix_char_ngrams(["echo", "sh"], 3, 3, True, 1.0)}
    assert "ho#" in open_grams and "ho#" in closed_grams  # inner words are always closed
    assert "sh#" not in open_grams and "sh#" in closed_grams
    weights = dict(prefix_char_ngrams(["echo"], 3, 3, False, 1.0))
    assert weights == {"#ec": 1.0, "ech": 0.5, "cho": pytest.approx(1 / 3)}


def test_normalize_is_idempotent_on_random_unicode() -> None:
    import random
    import unicodedata

    rng = random.Random(7)
    blocks = [(0x0, 0x20), (0x20, 0x7F), (0x80, 0x250), (0x300, 0x370), (0x370, 0x530), (0x600, 0x700),
              (0x900, 0x980), (0x1100, 0x1200), (0x1E00, 0x1F00), (0x2000, 0x2200), (0x3000, 0x3100),
              (0xAC00, 0xAC40), (0xD800, 0xD810), (0xE000, 0xE010), (0xFB00, 0xFB50), (0xFF00, 0xFFF0),
              (0x1D400, 0x1D500), (0x1F100, 0x1F200)]
    for _ in range(5000):
        s = "".join(chr(rng.randrange(*rng.choice(blocks))) for _ in range(rng.randrange(1, 8)))
        for strip in (True, False):
            a = normalize(s, strip)
            assert normalize(a, strip) == a, (s, a)
            assert a == " ".join(a.split())
            assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in a), (s, a)
            assert not strip or not any(unicodedata.combining(c) for c in a), (s, a)
            a.encode("utf-8")  # no lone surrogates left


def test_format_char_between_letter_and_accent() -> None:
    assert normalize("e\u200b\u0301", strip_accents=False) == "é"
    assert normalize("e\u200b\u0301") == "e"


def test_marks_table_covers_every_combining_character() -> None:
    import sys
    import unicodedata

    from xmr.text.normalize import _MARKS_BELOW, _marks

    assert all(not unicodedata.combining(chr(c)) for c in range(_MARKS_BELOW, sys.maxunicode + 1))
    assert len(_marks()) == sum(1 for c in range(_MARKS_BELOW) if unicodedata.combining(chr(c)))
