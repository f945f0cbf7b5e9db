"""Analyzers: pure functions turning the tokens of one normalised text into the terms a vectoriser counts.

Three kinds of terms:

* word n-grams, space-joined ("red shoes");
* character n-grams of each word wrapped in markers ("#echo#" -> "#ec", "ech", "cho", "ho#"). Unlike PECOS's
  char_wb at predict time, the markers of the first and the last word are kept for queries too, so a query and a
  training text of the same words get the same terms;
* prefix-weighted character n-grams for typed prefixes: like the marked char n-grams, but each n-gram weighs
  ``1 / (1 + p) ** decay`` where ``p`` is its start offset inside the marked word (so the beginning of each word,
  which a user has surely typed, counts most), and the last word gets no end marker unless it is complete.

An n-gram made of the marker alone (the 1-gram "#") carries no information and is never produced. A word
shorter than n produces no n-gram of that order (no padding).
"""

from __future__ import annotations

__all__ = ["MARKER", "word_ngrams", "char_ngrams", "prefix_char_ngrams", "marked_word_ngrams"]

MARKER = "#"  # never inside a token: tokens are \w+ runs


def word_ngrams(tokens: list[str], lo: int, hi: int) -> list[str]:
    """Word n-grams of orders lo..hi, space-joined."""
    if lo == 1 and hi == 1:
        return list(tokens)
    n_tok = len(tokens)
    out: list[str] = []
    for n in range(lo, min(hi, n_tok) + 1):
        if n == 1:
            out.extend(tokens)
        else:
            out.extend(" ".join(tokens[i : i + n]) for i in range(n_tok - n + 1))
    return out


def marked_word_ngrams(marked: str, lo: int, hi: int, marker: str = MARKER) -> list[str]:
    """Char n-grams of orders lo..hi of one already-marked word (the bare marker 1-gram left out)."""
    out: list[str] = []
    size = len(marked)
    for n in range(lo, min(hi, size) + 1):
        if n == 1:
            out.extend(c for c in marked if c != marker)
        else:
            out.extend(marked[i : i + n] for i in range(size - n + 1))
    return out


def char_ngrams(tokens: list[str], lo: int, hi: int, marker: str = "#") -> list[str]:
    """Per word, the char n-grams (orders lo..hi) of marker+word+marker, first and last word included."""
    out: list[str] = []
    for tok in tokens:
        out.extend(marked_word_ngrams(marker + tok + marker, lo, hi, marker))
    return out


def marked_word_weighted_ngrams(
    marked: str, lo: int, hi: int, decay: float, marker: str = MARKER
) -> list[tuple[str, float]]:
    """(n-gram, 1/(1+p)**decay) for the char n-grams of one marked word, p = start offset inside it."""
    out: list[tuple[str, float]] = []
    size = len(marked)
    for n in range(lo, min(hi, size) + 1):
        for p in range(size - n + 1):
            gram = marked[p : p + n]
            if gram != marker:
                out.append((gram, 1.0 / (1.0 + p) ** decay))
    return out


def prefix_char_ngrams(
    tokens: list[str], lo: int, hi: int, complete_last: bool, decay: float, marker: str = "#"
) -> list[tuple[str, float]]:
    """Marked char n-grams weighted by 1/(1+p)**decay; the last word is end-marked only if ``complete_last``."""
    out: list[tuple[str, float]] = []
    last = len(tokens) - 1
    for i, tok in enumerate(tokens):
        marked = marker + tok + (marker if (i < last or complete_last) else "")
        out.extend(marked_word_weighted_ngrams(marked, lo, hi, decay, marker))
    return out
