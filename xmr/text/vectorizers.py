"""TfidfBlock: one TF-IDF feature block (word n-grams, marked char n-grams or prefix-weighted char n-grams).

Fitting is scikit-learn's: the vocabulary, df filtering (min_df/max_df/max_features) and the smoothed idf
``ln((1 + N) / (1 + df)) + 1`` come from ``TfidfVectorizer`` with a callable analyzer (in hashing mode: the buckets
of ``HashingVectorizer`` and ``TfidfTransformer``'s idf formula, streamed in chunks), so the block's numbers are
scikit-learn's numbers.

Transforming is our own code, for speed: it caches the feature ids of each distinct token (a char or prefix block
looks a word's n-grams up once, not once per occurrence), skips building n-gram strings for known tokens, and
does the tf / idf / L2 arithmetic on whole arrays. For word and char blocks it returns exactly what the fitted
scikit-learn vectoriser returns (tests/test_text_vectorizers.py checks it). Measured on the aol-q2site queries
(experiments.datasets.aol_instances: 173,486 training queries, 90,508 distinct, 19 chars on average; 65,238 test
queries), CPU seconds of one process, min of 2-3 runs, on a 2-core box shared with 4 other jobs (load ~5, so
absolute figures are pessimistic; the ratios were taken in the same run)::

    spec (fitted on train)     batch transform, 173,486 train queries     transform_one, 3,000 test queries
                               ours warm (cold cache)  scikit-learn       ours warm (cold)     scikit-learn
    word+char                  145k/s (120k/s)         47k/s   x2.5-3.1   17 us (21 us)        1100 us   x65
    word+char, hashing 2**20   166k/s (118k/s)         58k/s   x2.0-2.9   19 us (27 us)        1110 us   x60
    word (1-3 grams)           187k/s                  126k/s  x1.5       10 us                 660 us   x68
    char (3-grams)             350k/s (229k/s)         90k/s   x2.5-3.9   9 us (11 us)          600 us   x69
    prefix (1-3, weighted)     128k/s (88k/s)          33k/s*  x2.6-3.8   20 us (33 us)         680 us*  x34
    word+char+prefix           73k/s (49k/s)           21k/s*  x2.4-3.6   41 us (61 us)        1540 us*  x38

"cold cache" = first transform after fit/load (each distinct token's n-grams looked up once). Part of the batch
gain is that repeated texts are featurised once (the training queries are 52% distinct): on the 90,508 distinct
training queries alone, word+char runs at 74k/s warm, 58k/s cold, vs 39k/s for scikit-learn (x1.5-1.9). The
scikit-learn column is its own ``transform`` (same callable analyzer, same fitted vocabulary) plus the block
combination; ``*`` scikit-learn cannot weigh prefix n-grams, so there it is its plain count transform. Its
single-query figure is ``transform([q])``, dominated by per-call overhead. Reuters-21578 news bodies (835 chars
on average, word+char): ours 1,930 docs/s vs scikit-learn 1,360 docs/s (x1.4): long texts spend their time in
vocabulary lookups, which both do alike (packing word n-grams into integer keys was tried: no faster).

Prefix blocks weigh each n-gram occurrence ``1 / (1 + p) ** decay`` (see :mod:`xmr.text.analyzers`); their
"term frequency" is the sum of those weights. ``sublinear_tf`` maps a term frequency ``tf`` to ``1 + ln(tf)`` when
``tf > 1`` and leaves it unchanged otherwise: identical to scikit-learn's ``1 + ln(tf)`` for integer counts, and
never negative for fractional prefix weights.

Hashing mode (``hashing=n_features``) needs no vocabulary: a term's column is scikit-learn's
``HashingVectorizer`` bucket (``abs(murmurhash3_32(term)) % n_features``), so memory stays bounded however large
the corpus. Buckets never seen in training (or outside the df limits) are treated like unknown terms: dropped,
so unknown text still gives an all-zero row.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmr.text.analyzers import (
    MARKER,
    marked_word_ngrams,
    marked_word_weighted_ngrams,
    prefix_char_ngrams,
    word_ngrams,
)
from xmr.text.normalize import normalize, tokenize
from xmr.validation import InputError

__all__ = ["KINDS", "TfidfBlock", "check_texts"]

KINDS = ("word", "char", "prefix")
_MAX_HASHING = 1 << 26  # the idf array (8 bytes a bucket) and the df count of fit stay below 0.5 GB
# Distinct tokens whose columns a char/prefix block remembers before starting afresh (~150 bytes each: the
# 262,144 cap bounds the cache near 40 MB; the 173k AOL training queries hold 36,658 distinct tokens).
_CACHE_LIMIT = 1 << 18
_CHUNK_TEXTS = 1 << 16  # texts transformed at a time (bounds the temporary per-occurrence lists)


def check_texts(texts: Any, what: str = "texts") -> Sequence[str]:
    """The texts as a sequence of str, or InputError naming the first offending item."""
    if isinstance(texts, (str, bytes)):
        raise InputError(f"{what} must be a sequence of strings, got a single {type(texts).__name__}")
    if not isinstance(texts, Sequence):
        try:
            texts = list(texts)
        except TypeError:
            raise InputError(f"{what} must be a sequence of strings, got {type(texts).__name__}") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"{what}[{i}] is a {type(t).__name__}, expected str")
    return texts


class TfidfBlock:
    """One TF-IDF block: sklearn-fitted vocabulary/idf, fast transform, rows L2-normalised, float32 CSR out.

    ``kind``: "word" (space-joined word n-grams), "char" (n-grams of "#word#"), "prefix" (position-weighted
    n-grams of "#word#", the last word left open unless the text ends with whitespace). ``ngram_range``: (lo, hi)
    n-gram orders. ``min_df``/``max_df``/``max_features``: scikit-learn's df filtering (int = document count,
    float = proportion). ``sublinear_tf``: 1 + ln(tf) for tf > 1. ``hashing``: number of hashed columns instead of
    a vocabulary (max_features must then be None). ``strip_accents``: passed to :func:`normalize`. ``decay``:
    prefix weight exponent (other kinds ignore it). After ``fit``: ``terms_``/``vocabulary_`` (None in hashing
    mode), ``idf_`` (float64), ``n_docs_``, and ``sklearn_vectorizer_`` (the fitted TfidfVectorizer, or the
    HashingVectorizer in hashing mode; not saved, None after ``from_dict``).
    """

    def __init__(
        self,
        kind: str = "word",
        ngram_range: tuple[int, int] = (1, 1),
        min_df: float = 1,
        max_df: float = 1.0,
        max_features: int | None = None,
        sublinear_tf: bool = True,
        hashing: int | None = None,
        strip_accents: bool = True,
        decay: float = 1.0,
    ) -> None:
        if kind not in KINDS:
            raise InputError(f"TfidfBlock kind must be one of {', '.join(KINDS)}; got {kind!r}")
        try:
            lo, hi = (int(v) for v in ngram_range)
        except (TypeError, ValueError):
            raise InputError(f"ngram_range must be a pair of ints (lo, hi); got {ngram_range!r}") from None
        if not 1 <= lo <= hi or (lo, hi) != tuple(ngram_range):
            raise InputError(f"ngram_range must be integers 1 <= lo <= hi; got {ngram_range!r}")
        for name, v in (("min_df", min_df), ("max_df", max_df)):
            if isinstance(v, bool) or not isinstance(v, Real):
                raise InputError(f"{name} must be an int (document count) or a float in [0, 1]; got {v!r}")
            if isinstance(v, Integral) and v < 1:
                raise InputError(f"{name} as a document count must be >= 1; got {v!r}")
            if not isinstance(v, Integral) and not 0.0 <= float(v) <= 1.0:
                raise InputError(f"{name} as a proportion must be in [0, 1]; got {v!r}")
        if max_features is not None and (isinstance(max_features, bool) or not isinstance(max_features, Integral)
                                         or max_features < 1):
            raise InputError(f"max_features must be a positive int or None; got {max_features!r}")
        if hashing is not None:
            if isinstance(hashing, bool) or not isinstance(hashing, Integral) or not 1 <= hashing <= _MAX_HASHING:
                raise InputError(f"hashing must be a number of features in [1, 2**26] or None; got {hashing!r}")
            if max_features is not None:
                raise InputError("max_features has no meaning in hashing mode (the column count is `hashing`)")
        if isinstance(decay, bool) or not isinstance(decay, Real) or not (0.0 <= float(decay) < math.inf):
            raise InputError(f"decay must be a finite number >= 0; got {decay!r}")
        self.kind = kind
        self.ngram_range = (lo, hi)
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = None if max_features is None else int(max_features)
        self.sublinear_tf = bool(sublinear_tf)
        self.hashing = None if hashing is None else int(hashing)
        self.strip_accents = bool(strip_accents)
        self.decay = float(decay)
        # fitted state
        self.terms_: list[str] | None = None  # vocabulary mode: term of each column
        self.vocabulary_: dict[str, int] | None = None
        self.idf_: np.ndarray | None = None  # float64 [nr_features]; 0 marks a dropped hashing bucket
        self.n_docs_: int = 0
        self.sklearn_vectorizer_: Any = None  # the fitted scikit-learn object (kept after fit, never saved)
        self._cache: dict[Any, Any] = {}

    # ------------------------------------------------------------------------------------------ configuration
    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready."""
        return {
            "kind": self.kind,
            "ngram_range": list(self.ngram_range),
            "min_df": self.min_df,
            "max_df": self.max_df,
            "max_features": self.max_features,
            "sublinear_tf": self.sublinear_tf,
            "hashing": self.hashing,
            "strip_accents": self.strip_accents,
            "decay": self.decay,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"TfidfBlock({args})"

    @property
    def fitted(self) -> bool:
        """Whether fit (or from_dict) has run."""
        return self.idf_ is not None

    @property
    def nr_features(self) -> int:
        """Number of columns (vocabulary size, or ``hashing``)."""
        self._check_fitted()
        assert self.idf_ is not None
        return int(self.idf_.shape[0])

    def _check_fitted(self) -> None:
        if self.idf_ is None:
            raise InputError("this TfidfBlock is not fitted yet; call fit(texts) first")

    # ------------------------------------------------------------------------------------------ analysis
    def terms_of_tokens(self, tokens: list[str], complete_last: bool = True) -> list[str]:
        """The terms (n-gram strings, with repeats) this block counts for one token list."""
        lo, hi = self.ngram_range
        if self.kind == "word":
            return word_ngrams(tokens, lo, hi)
        if self.kind == "char":
            out: list[str] = []
            for tok in tokens:
                out.extend(marked_word_ngrams(MARKER + tok + MARKER, lo, hi))
            return out
        return [g for g, _ in prefix_char_ngrams(tokens, lo, hi, complete_last, self.decay)]

    def analyze(self, text: str) -> list[str]:
        """The terms of one raw text: normalise, tokenise, n-grams (the callable analyzer given to scikit-learn)."""
        return self.terms_of_tokens(tokenize(normalize(text, self.strip_accents)), _complete_last(text))

    # ------------------------------------------------------------------------------------------ fitting
    def fit(self, texts: Iterable[str], progress: bool | str = False) -> TfidfBlock:
        """Learn vocabulary (or hashing buckets), df filtering and idf with scikit-learn."""
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer

        texts = check_texts(texts)
        if len(texts) == 0:
            raise InputError("cannot fit a TfidfBlock on zero texts")
        source: Iterable[str] = texts
        if progress:  # scikit-learn reads the texts exactly once, so a progress bar over them tracks the fit
            from tqdm.auto import tqdm

            desc = progress if isinstance(progress, str) else f"fit {self.kind}"
            source = tqdm(texts, desc=desc, unit="text", mininterval=1.0)
        common = dict(analyzer=self.analyze, lowercase=False, token_pattern=None, dtype=np.float64)
        self._cache = {}
        if self.hashing is not None:
            # HashingVectorizer is stateless, so the document frequencies are summed chunk by chunk: fitting needs
            # memory for one chunk and the df array only, however large the corpus.
            hv = HashingVectorizer(n_features=self.hashing, alternate_sign=False, norm=None, **common)
            df = np.zeros(self.hashing, dtype=np.int64)
            n = len(texts)
            chunk: list[str] = []
            for text in source:
                chunk.append(text)
                if len(chunk) == _CHUNK_TEXTS:
                    df += np.bincount(hv.transform(chunk).indices, minlength=self.hashing)  # 1 per (doc, bucket)
                    chunk = []
            if chunk:
                df += np.bincount(hv.transform(chunk).indices, minlength=self.hashing)
            # scikit-learn's smoothed idf, the very operations of TfidfTransformer.fit (tests check the equality)
            idf = np.full(self.hashing, float(n + 1)) / (df + 1.0)
            idf = np.log(idf) + 1.0
            lo_df = self.min_df if isinstance(self.min_df, Integral) else self.min_df * n
            hi_df = self.max_df if isinstance(self.max_df, Integral) else self.max_df * n
            keep = (df >= max(lo_df, 1)) & (df <= hi_df)
            self.idf_ = np.where(keep, idf, 0.0)
            self.terms_ = self.vocabulary_ = None
            self.sklearn_vectorizer_ = hv
            self.n_docs_ = n
            return self
        tv = TfidfVectorizer(
            min_df=self.min_df,
            max_df=self.max_df,
            max_features=self.max_features,
            sublinear_tf=self.sublinear_tf,
            norm="l2",
            use_idf=True,
            smooth_idf=True,
            **common,
        )
        try:
            tv.fit(source)
        except ValueError as exc:
            msg = str(exc)
            if "empty vocabulary" in msg or "no terms remain" in msg or "max_df corresponds" in msg:
                # A block may legitimately learn nothing (tiny corpus, min_df=2): it then yields zero columns.
                self.terms_, self.vocabulary_ = [], {}
                self.idf_ = np.zeros(0, dtype=np.float64)
                self.sklearn_vectorizer_ = None
                self.n_docs_ = len(texts)
                return self
            raise InputError(f"cannot fit {self.kind} TfidfBlock: {msg}") from None
        vocab = tv.vocabulary_
        terms = [""] * len(vocab)
        for term, col in vocab.items():
            terms[col] = term
        self.terms_ = terms
        self.vocabulary_ = vocab  # shared with the scikit-learn object, not copied (vocabularies get large)
        self.idf_ = np.asarray(tv.idf_, dtype=np.float64)
        self.sklearn_vectorizer_ = tv
        self.n_docs_ = len(texts)
        return self

    # ------------------------------------------------------------------------------------------ term lookup
    def _column_of(self, term: str) -> int:
        """Column of one term, -1 when unknown (or a dropped hashing bucket)."""
        if self.hashing is None:
            assert self.vocabulary_ is not None
            return self.vocabulary_.get(term, -1)
        from sklearn.utils import murmurhash3_32

        col = abs(murmurhash3_32(term, positive=False)) % self.hashing  # == sklearn's bucket, -2**31 included
        assert self.idf_ is not None
        return col if self.idf_[col] > 0.0 else -1

    def _word_columns(self, tokens: list[str], out: list[int]) -> None:
        lo, hi = self.ngram_range
        terms = tokens if (lo == 1 and hi == 1) else word_ngrams(tokens, lo, hi)
        if self.hashing is None:  # the vocabulary is the cache
            assert self.vocabulary_ is not None
            out.extend([c for c in map(self.vocabulary_.get, terms) if c is not None])
            return
        # Hashing: word n-grams are too many and too varied to cache; murmurhash costs ~0.1 us a term.
        from sklearn.utils import murmurhash3_32

        n, idf = self.hashing, self._idf_list()
        for term in terms:
            col = abs(murmurhash3_32(term, 0, False)) % n  # == sklearn's bucket, -2**31 included
            if idf[col] > 0.0:
                out.append(col)

    def _token_char_columns(self, tok: str) -> tuple[int, ...]:
        lo, hi = self.ngram_range
        grams = marked_word_ngrams(MARKER + tok + MARKER, lo, hi)
        if self.hashing is None:
            assert self.vocabulary_ is not None
            cols = tuple([c for c in map(self.vocabulary_.get, grams) if c is not None])
        else:
            cols = tuple([c for c in map(self._column_of, grams) if c >= 0])
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[tok] = cols
        return cols

    def _char_columns(self, tokens: list[str], out: list[int]) -> None:
        get = self._cache.get
        for tok in tokens:
            cols = get(tok)
            out.extend(cols if cols is not None else self._token_char_columns(tok))

    def _prefix_columns(self, tokens: list[str], complete_last: bool, out: list[int], weights: list[float]) -> None:
        cache = self._cache
        last = len(tokens) - 1
        for i, tok in enumerate(tokens):
            key = (tok, i < last or complete_last)
            hit = cache.get(key)
            if hit is None:
                lo, hi = self.ngram_range
                marked = MARKER + tok + (MARKER if key[1] else "")
                pairs = [(self._column_of(g), w) for g, w in marked_word_weighted_ngrams(marked, lo, hi, self.decay)]
                hit = (tuple(c for c, _ in pairs if c >= 0), tuple(w for c, w in pairs if c >= 0))
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[key] = hit
            out.extend(hit[0])
            weights.extend(hit[1])

    # ------------------------------------------------------------------------------------------ transforming
    # The single-text path (_row_raw) and the batch path (_raw_rows) do the same float64 operations in the same
    # order (tf summed in occurrence order, math.log for the sublinear tf, squares summed in column order), so
    # transform_one returns the very bits of the transform row (prefix blocks: up to an ulp when a term repeats
    # 8 or more times in one text: numpy sums 8+ values pairwise).
    def _row_raw(self, tokens: list[str], complete_last: bool) -> tuple[list[int], list[float], float]:
        """Sorted columns, unnormalised tf-idf values and their L2 norm for one token list."""
        cols: list[int] = []
        idf = self._idf_list()
        if self.kind == "prefix":
            weights: list[float] = []
            self._prefix_columns(tokens, complete_last, cols, weights)
            acc: dict[int, float] = {}
            for c, w in zip(cols, weights):
                acc[c] = acc.get(c, 0.0) + w
            keys = sorted(acc)
            tfs = [acc[c] for c in keys]
        else:
            if self.kind == "char":
                get = self._cache.get
                for tok in tokens:
                    hit = get(tok)
                    cols.extend(hit if hit is not None else self._token_char_columns(tok))
            else:
                self._word_columns(tokens, cols)
            if not cols:
                return cols, [], 0.0
            if len(set(cols)) == len(cols):  # the usual case for a short query: every tf is 1, tf-idf == idf
                cols.sort()
                vals = [idf[c] for c in cols]
                sq = 0.0
                for v in vals:
                    sq += v * v
                return cols, vals, math.sqrt(sq)
            counts = Counter(cols)
            keys = sorted(counts)
            tfs = [float(counts[c]) for c in keys]
        if self.sublinear_tf:
            vals = [(1.0 + math.log(t) if t > 1.0 else t) * idf[c] for t, c in zip(tfs, keys)]
        else:
            vals = [t * idf[c] for t, c in zip(tfs, keys)]
        sq = 0.0
        for v in vals:
            sq += v * v
        return keys, vals, math.sqrt(sq)

    def _idf_list(self) -> memoryview:
        """idf as a memoryview: indexing it gives Python floats ~1.6x faster than indexing the numpy array, and
        unlike ``tolist()`` it costs no memory (a Python list of 2**20 hashing buckets would take 32 MB)."""
        view = self._idf_view
        if view is None or view.obj is not self.idf_:
            assert self.idf_ is not None
            view = self._idf_view = memoryview(np.ascontiguousarray(self.idf_, dtype=np.float64))
            if view.obj is not self.idf_:
                self.idf_ = view.obj  # type: ignore[assignment]
        return view

    _idf_view: memoryview | None = None

    def transform_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(indices int32 sorted, values float32) of one text: row 0 of ``transform([text])``, but fast."""
        self._check_fitted()
        if not isinstance(text, str):
            raise InputError(f"text is a {type(text).__name__}, expected str")
        cols, vals, norm = self._row_raw(tokenize(normalize(text, self.strip_accents)), _complete_last(text))
        if not cols:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        f = 1.0 / norm
        return np.array(cols, dtype=np.int32), np.array([v * f for v in vals], dtype=np.float32)

    def _raw_rows(self, token_lists: Sequence[list[str]], complete: Sequence[bool]) -> tuple[sp.csr_matrix, np.ndarray]:
        """CSR float64 of unnormalised tf-idf rows (sorted columns) of many token lists, and each row's L2 norm."""
        n = len(token_lists)
        cols: list[int] = []
        ends = np.empty(n, dtype=np.int64)  # end of each row in cols
        weights: list[float] | None = None
        if self.kind == "word":
            word_columns = self._word_columns
            for r, toks in enumerate(token_lists):
                word_columns(toks, cols)
                ends[r] = len(cols)
        elif self.kind == "char":
            get, extend, token_cols = self._cache.get, cols.extend, self._token_char_columns
            for r, toks in enumerate(token_lists):
                for tok in toks:
                    hit = get(tok)
                    extend(hit if hit is not None else token_cols(tok))
                ends[r] = len(cols)
        else:
            weights = []
            for r, toks in enumerate(token_lists):
                self._prefix_columns(toks, complete[r], cols, weights)
                ends[r] = len(cols)
        indptr = np.zeros(n + 1, dtype=np.int64)
        indptr[1:] = ends
        if weights is None:
            # Integer counts: any summation order is exact, so scipy's C++ sort + sum of duplicates will do.
            m = sp.csr_matrix((np.ones(len(cols)), np.array(cols, dtype=np.int32), indptr), shape=(n, self.nr_features))
            m.sum_duplicates()
            tf, col, indptr = m.data, m.indices, m.indptr.astype(np.int64, copy=False)
        else:
            # Fractional prefix weights: sum repeated (row, column) pairs in occurrence order (stable sort), like
            # the single-text path, so that both give the same bits.
            col64 = np.array(cols, dtype=np.int64)
            row = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
            order = np.argsort(row * max(self.nr_features, 1) + col64, kind="stable")
            row, col64 = row[order], col64[order]
            first = np.ones(col64.shape[0], dtype=bool)
            first[1:] = (row[1:] != row[:-1]) | (col64[1:] != col64[:-1])
            starts = np.flatnonzero(first)
            tf = np.add.reduceat(np.array(weights, dtype=np.float64)[order], starts) if starts.size else np.zeros(0)
            col = col64[starts].astype(np.int32)
            np.cumsum(np.bincount(row[starts], minlength=n), out=indptr[1:])
        if self.sublinear_tf:
            big = np.flatnonzero(tf > 1.0)
            # math.log, not np.log: numpy's SIMD log may differ by an ulp, and transform_one uses math.log
            tf[big] = [1.0 + math.log(v) for v in tf[big].tolist()]
        assert self.idf_ is not None
        data = tf * self.idf_[col]
        row_of = np.repeat(np.arange(n), np.diff(indptr))
        norms = np.sqrt(np.bincount(row_of, weights=data * data, minlength=n))  # sequential sums, column order
        return sp.csr_matrix((data, col, indptr), shape=(n, self.nr_features)), norms

    def transform_tokens(self, token_lists: Sequence[list[str]], complete: Sequence[bool]) -> sp.csr_matrix:
        """CSR float64, rows L2-normalised, of already normalised and tokenised texts."""
        self._check_fitted()
        m, norms = self._raw_rows(token_lists, complete)
        factor = np.zeros_like(norms)
        np.divide(1.0, norms, out=factor, where=norms > 0)
        m.data *= np.repeat(factor, np.diff(m.indptr))
        return m

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """CSR float32 (len(texts) x nr_features), rows L2-normalised; empty/unknown text -> all-zero row."""
        self._check_fitted()
        texts = check_texts(texts)
        uniq, inverse = _dedupe(texts)

        def one_chunk(part: list[str]) -> sp.csr_matrix:
            toks = [tokenize(normalize(t, self.strip_accents)) for t in part]
            return self.transform_tokens(toks, [_complete_last(t) for t in part]).astype(np.float32)

        return _expand(_chunked(uniq, one_chunk, None), inverse)

    # ------------------------------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """{"config", "n_docs", "terms" (list or None in hashing mode), "idf" (float64 array)} of a fitted block."""
        self._check_fitted()
        return {"config": self.config(), "n_docs": self.n_docs_, "terms": self.terms_, "idf": self.idf_}

    @classmethod
    def from_config(cls, config: Any) -> TfidfBlock:
        """An unfitted block from config()'s output (InputError on unknown keys or bad values)."""
        if not isinstance(config, dict):
            raise InputError(f"block config must be a dict; got {type(config).__name__}")
        cfg = dict(config)
        unknown = set(cfg) - set(cls().config())
        if unknown:
            raise InputError(f"unknown block config keys {sorted(unknown)}")
        if isinstance(cfg.get("ngram_range"), list):
            cfg["ngram_range"] = tuple(cfg["ngram_range"])
        return cls(**cfg)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TfidfBlock:
        """Rebuild a fitted block from to_dict()'s output, validating it (InputError on inconsistencies)."""
        if not isinstance(d, dict):
            raise InputError("block description must be a dict with 'config', 'terms', 'idf', 'n_docs'")
        block = cls.from_config(d.get("config"))
        idf = d.get("idf")
        if not isinstance(idf, np.ndarray) or idf.ndim != 1 or idf.dtype.kind != "f":
            raise InputError("idf must be a 1-D float array")
        idf = np.ascontiguousarray(idf, dtype=np.float64)
        if not np.all(np.isfinite(idf)) or np.any(idf < 0):
            raise InputError("idf has negative or non-finite values")
        terms = d.get("terms")
        if block.hashing is not None:
            if terms is not None:
                raise InputError("a hashing block has no vocabulary, but terms were given")
            if idf.shape[0] != block.hashing:
                raise InputError(f"idf has {idf.shape[0]} entries, expected hashing={block.hashing}")
        else:
            if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
                raise InputError("terms must be a list of strings")
            if len(terms) != idf.shape[0]:
                raise InputError(f"terms: {len(terms)} of them but {idf.shape[0]} idf values")
            vocab = {t: i for i, t in enumerate(terms)}
            if len(vocab) != len(terms):
                raise InputError("terms contain duplicates")
            if np.any(idf == 0):
                raise InputError("idf has zero entries (a vocabulary term always has idf >= 1)")
            block.terms_, block.vocabulary_ = list(terms), vocab
        n_docs = d.get("n_docs", 0)
        if isinstance(n_docs, bool) or not isinstance(n_docs, Integral) or n_docs < 0:
            raise InputError(f"n_docs must be a non-negative int; got {n_docs!r}")
        block.n_docs_ = int(n_docs)
        block.idf_ = idf
        return block


def _complete_last(text: str) -> bool:
    """Whether the last word of a raw text is finished (the text ends with whitespace)."""
    return text[-1:].isspace()


def _dedupe(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Distinct texts in first-seen order, and each input's position among them (queries repeat a lot)."""
    first: dict[str, int] = {}
    inverse = np.fromiter((first.setdefault(t, len(first)) for t in texts), dtype=np.int64, count=len(texts))
    return list(first), inverse


def _chunked(texts: list[str], transform: Callable[[list[str]], sp.csr_matrix], progress: str | None
             ) -> sp.csr_matrix:
    """``transform`` applied to chunks of ``texts`` and stacked: the per-term Python lists of a chunk stay small
    (~8 bytes an n-gram occurrence) however many texts come in. ``progress``: a tqdm description, or None."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc=progress, unit="text", mininterval=1.0)
    parts = []
    for start in range(0, max(len(texts), 1), _CHUNK_TEXTS):
        part = texts[start : start + _CHUNK_TEXTS]
        parts.append(transform(part))
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    return parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")


def _expand(m: sp.csr_matrix, inverse: np.ndarray) -> sp.csr_matrix:
    """Rows of ``m`` picked by ``inverse`` (identity shortcut when nothing repeated)."""
    if m.shape[0] == inverse.shape[0]:
        return m
    return m[inverse]

