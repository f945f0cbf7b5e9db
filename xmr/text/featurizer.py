"""TextFeaturizer: raw text -> one sparse TF-IDF feature row, from several weighted blocks.

Each block (:class:`xmr.text.vectorizers.TfidfBlock`) gives an L2-normalised row; the rows are scaled by the
block weights, stacked side by side (block ``b`` owns columns ``offset_b .. offset_b + nr_features_b - 1``, in
block order) and the whole row is L2-normalised again, like PECOS's multi-vectoriser (``norm_p = 2``). A text
with no known term in any block gives an all-zero row (never NaN). ``transform_one`` runs one numba kernel over a
hash table of all the blocks' terms (:mod:`xmr.text.term_table`, built on first use) when every block is a
vocabulary word or char block and all share one accent mode; other featurizers take the Python path
(``_transform_one_py``), which is also the kernel's bit-for-bit reference.

Spec strings name the blocks: ``"word"`` (word 1-3 grams, min_df=1), ``"char"`` (marked char 3-grams,
min_df=2), ``"prefix"`` (prefix-weighted char 1-3 grams, min_df=2), joined by ``"+"``, each optionally weighted
(``"word:0.5+char"``, default 1.0) and with its own n-gram orders (``"word1-2"``, ``"char2-4"``, ``"char4"``).

On disk (``save(dir)`` writes into ``dir``; the caller makes the whole model directory atomic)::

    featurizer.json        {"format": "xmr.text", "version": 1, "spec", "nr_features",
                            "blocks": [{"name", "weight", "config", "n_docs", "nr_features",
                                        "vocab": "{name}.vocab.json" | null, "idf": "{name}.idf.npy"}]}
    {name}.vocab.json      JSON list of the block's terms in column order (absent in hashing mode)
    {name}.idf.npy         float64 [nr_features] idf of each column (0 = dropped hashing bucket)

Only JSON and ``.npy`` (``allow_pickle=False``): nothing is pickled. ``load`` validates every file and raises
:class:`xmr.model_io.ModelFormatError` naming the file and the problem.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from xmr.model_io import ModelFormatError
from xmr.text.normalize import _TOKEN, normalize
from xmr.text.vectorizers import TfidfBlock, _chunked, _complete_last, _dedupe, _expand, check_texts
from xmr.validation import InputError

if TYPE_CHECKING:
    from xmr.text.term_table import TermTable

__all__ = ["TextFeaturizer", "FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_NAME", "SPEC_DEFAULTS"]

LOGGER = logging.getLogger(__name__)

FORMAT_NAME = "xmr.text"
FORMAT_VERSION = 1
MANIFEST_NAME = "featurizer.json"

# kind -> (default n-gram orders, min_df) of a spec name without explicit orders
SPEC_DEFAULTS: dict[str, tuple[tuple[int, int], int]] = {
    "word": ((1, 3), 1),
    "char": ((3, 3), 2),
    "prefix": ((1, 3), 2),
}
_SPEC_PART = re.compile(r"^(word|char|prefix)(?:(\d+)(?:-(\d+))?)?(?::(.+))?$")
_TOKEN_FINDALL = _TOKEN.findall  # tokenize() without the call layer
_BLOCK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_PYTHON_PATH = "python"  # TextFeaturizer._fast when some block needs the Python transform_one


def _parse_spec(spec: str, hashing: int | None) -> list[tuple[str, TfidfBlock, float]]:
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"feature spec must be a non-empty string like 'word+char'; got {spec!r}")
    blocks: list[tuple[str, TfidfBlock, float]] = []
    for part in spec.replace(" ", "").split("+"):
        m = _SPEC_PART.match(part)
        if m is None:
            raise InputError(
                f"bad feature spec part {part!r} in {spec!r}: expected word|char|prefix, optionally with n-gram "
                "orders and a weight, e.g. 'word', 'char3-5', 'word:0.5'"
            )
        kind, lo, hi, weight_text = m.groups()
        (dlo, dhi), min_df = SPEC_DEFAULTS[kind]
        ngram = (dlo, dhi) if lo is None else (int(lo), int(hi if hi is not None else lo))
        name = kind if lo is None else f"{kind}{ngram[0]}-{ngram[1]}"
        try:
            weight = 1.0 if weight_text is None else float(weight_text)
        except ValueError:
            raise InputError(f"bad weight {weight_text!r} in feature spec {spec!r}") from None
        block = TfidfBlock(kind, ngram, min_df=min_df, hashing=hashing)
        blocks.append((name, block, weight))
    return blocks


class TextFeaturizer:
    """Several weighted TF-IDF blocks -> one L2-normalised float32 CSR row per text."""

    def __init__(self, blocks: list[tuple[str, TfidfBlock, float]], spec: str | None = None) -> None:
        if not isinstance(blocks, (list, tuple)) or not blocks:
            raise InputError("TextFeaturizer needs a non-empty list of (name, TfidfBlock, weight)")
        seen: set[str] = set()
        clean: list[tuple[str, TfidfBlock, float]] = []
        for item in blocks:
            if not isinstance(item, (list, tuple)) or len(item) != 3:
                raise InputError(f"each block must be a (name, TfidfBlock, weight) triple; got {item!r}")
            name, block, weight = item
            if not isinstance(name, str) or not _BLOCK_NAME.match(name):
                raise InputError(f"block name {name!r} must be 1-64 chars of letters, digits, '_', '.', '-'")
            if name in seen:
                raise InputError(f"duplicate block name {name!r}")
            if not isinstance(block, TfidfBlock):
                raise InputError(f"block {name!r} is a {type(block).__name__}, expected TfidfBlock")
            if isinstance(weight, bool) or not isinstance(weight, Real) or not 0 < float(weight) < math.inf:
                raise InputError(f"block {name!r} weight must be a finite number > 0; got {weight!r}")
            seen.add(name)
            clean.append((name, block, float(weight)))
        self.blocks = clean
        self._plan_cache: list[tuple[int, TfidfBlock, float]] | None = None  # (offset, block, weight), once fitted
        self._fast: TermTable | str | None = None  # transform_one's table, _PYTHON_PATH, or None: not decided yet
        self._spec = spec if spec is not None else "+".join(
            n if w == 1.0 else f"{n}:{w:g}" for n, _, w in clean
        )

    @classmethod
    def from_spec(cls, spec: str = "word+char", hashing: int | None = None) -> TextFeaturizer:
        """Featurizer from a spec string ("word", "char", "prefix" joined by "+", "name:weight" to weigh)."""
        return cls(_parse_spec(spec, hashing), spec=spec)

    # ------------------------------------------------------------------------------------------ properties
    @property
    def spec(self) -> str:
        """The spec string this featurizer was built from (or one describing its blocks)."""
        return self._spec

    @property
    def fitted(self) -> bool:
        """Whether every block is fitted."""
        return all(b.fitted for _, b, _ in self.blocks)

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise InputError("this TextFeaturizer is not fitted yet; call fit(texts) first")

    @property
    def offsets(self) -> list[int]:
        """First column of each block (plus the total at the end)."""
        self._check_fitted()
        out = [0]
        for _, b, _ in self.blocks:
            out.append(out[-1] + b.nr_features)
        return out

    @property
    def nr_features(self) -> int:
        """Total number of columns."""
        return self.offsets[-1]

    def __repr__(self) -> str:
        state = f"nr_features={self.nr_features}" if self.fitted else "unfitted"
        return f"TextFeaturizer(spec={self.spec!r}, {state})"

    # ------------------------------------------------------------------------------------------ fit / transform
    def fit(self, texts: Iterable[str], progress: bool = False) -> TextFeaturizer:
        """Fit every block on the texts (scikit-learn vocabulary, df filtering, idf)."""
        texts = check_texts(texts)
        if len(texts) == 0:
            raise InputError("cannot fit a TextFeaturizer on zero texts")
        for name, block, _ in self.blocks:
            LOGGER.info("fitting text block %s (%s) on %d texts", name, block.kind, len(texts))
            block.fit(texts, progress=f"fit {name}" if progress else False)
            if block.nr_features == 0:
                LOGGER.warning("text block %s learned no terms (corpus too small for min_df=%s?)", name,
                               block.min_df)
        self._plan_cache = None
        self._fast = None
        if self.nr_features == 0:
            raise InputError("the training texts produced no features in any block (all empty?)")
        return self

    def _plan(self) -> list[tuple[int, TfidfBlock, float]]:
        plan = self._plan_cache
        if plan is None:
            offs = self.offsets
            if offs[-1] > np.iinfo(np.int32).max:
                raise InputError(f"{offs[-1]} features do not fit int32 column ids; use fewer or smaller blocks")
            plan = self._plan_cache = [(offs[i], b, w) for i, (_, b, w) in enumerate(self.blocks)]
        return plan

    # transform_one and transform do the same float64 operations in the same order (see vectorizers.py), so the
    # single-query row is bit-identical to the batch row for word and char blocks.
    def transform_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(indices int32 sorted, values float32) of one text: row 0 of ``transform([text])``, fast path."""
        if not isinstance(text, str):
            raise InputError(f"text is a {type(text).__name__}, expected str")
        got = self.kernel_input(text)
        if got is None:
            return self._transform_one_py(text)
        table, data, raw, complete = got
        return table.featurize(data, raw, complete, table.blob)

    def kernel_input(self, text: str) -> tuple[TermTable, bytes, bool, bool] | None:
        """What transform_one hands the term-table kernel for a str ``text``: (table, text bytes, raw, complete),
        or None where the featurizer takes its Python path (blocks the kernel does not compute)."""
        fast = self._fast
        if fast is None:
            fast = self._prepare_fast()
        if fast is _PYTHON_PATH:
            return None
        # Vocabulary word/char/prefix blocks: one numba call (xmr.text.term_table), bit-identical to
        # _transform_one_py. ASCII text goes raw (the kernel lowercases and tokenises it as normalize + \w+ would);
        # other text is normalised and tokenised here.
        table: TermTable = fast  # type: ignore[assignment]
        complete = text[-1:].isspace()  # == _complete_last(text)
        if text.isascii():
            return table, text.encode(), True, complete
        joined = " ".join(_TOKEN_FINDALL(normalize(text, table.strip_accents)))
        return table, joined.encode("utf-32-le", "surrogatepass"), False, complete

    def _prepare_fast(self) -> TermTable | str:
        """Build transform_one's term table, or choose the Python path for blocks the kernel does not compute."""
        from xmr.text.term_table import TermTable, supports  # numba: imported by the first transform_one only

        plan = self._plan()  # raises when unfitted or too wide
        # built whole, then published by one assignment: threads racing here each build one, and all are equal
        fast: TermTable | str = TermTable.build(plan) if supports([b for _, b, _ in plan]) else _PYTHON_PATH
        self._fast = fast
        return fast

    def _transform_one_py(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """transform_one in Python, block by block: any blocks, and the reference of the numba path."""
        plan = self._plan_cache or self._plan()
        complete = text[-1:].isspace()  # == _complete_last(text), inlined on this hot path
        toks_by_mode: dict[bool, list[str]] = {}
        parts = []
        sq = 0.0
        for off, block, w in plan:
            mode = block.strip_accents
            toks = toks_by_mode.get(mode)
            if toks is None:
                toks = toks_by_mode[mode] = _TOKEN_FINDALL(normalize(text, mode))
            cols, vals, norm = block._row_raw(toks, complete)
            if cols:
                sq += w * w
                parts.append((off, w, cols, vals, norm))
        if not parts:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        root = math.sqrt(sq)
        indices: list[int] = []
        values: list[float] = []
        for off, w, cols, vals, norm in parts:
            f = w / (norm * root)
            indices.extend([c + off for c in cols] if off else cols)
            values.extend([v * f for v in vals])
        return np.array(indices, dtype=np.int32), np.array(values, dtype=np.float32)

    def transform(self, texts: Sequence[str], progress: bool = False) -> sp.csr_matrix:
        """CSR float32 (len(texts) x nr_features), rows L2-normalised; empty/unknown text -> all-zero row."""
        self._check_fitted()
        texts = check_texts(texts)
        uniq, inverse = _dedupe(texts)  # queries repeat a lot: featurise each distinct text once
        return _expand(_chunked(uniq, self._transform_distinct, "featurize" if progress else None), inverse)

    def _transform_distinct(self, texts: list[str]) -> sp.csr_matrix:
        """transform() of one chunk of texts, without the dedupe."""
        complete = [_complete_last(t) for t in texts]
        toks_by_mode: dict[bool, list[list[str]]] = {}
        n = len(texts)
        sq = np.zeros(n)
        raw = []
        for _off, block, w in self._plan():
            mode = block.strip_accents
            toks = toks_by_mode.get(mode)
            if toks is None:
                toks = toks_by_mode[mode] = [_TOKEN_FINDALL(normalize(t, mode)) for t in texts]
            m, norms = block._raw_rows(toks, complete)
            sq += (w * w) * (norms > 0)
            raw.append((w, m, norms))
        root = np.sqrt(sq)
        parts = []
        for w, m, norms in raw:
            factor = np.zeros(n)
            nz = norms > 0
            factor[nz] = w / (norms[nz] * root[nz])
            m.data *= np.repeat(factor, np.diff(m.indptr))
            parts.append(m)
        out = parts[0] if len(parts) == 1 else sp.hstack(parts, format="csr")
        out = sp.csr_matrix(out, shape=(n, self.nr_features), dtype=np.float32)
        out.has_sorted_indices = True  # each block's columns are sorted and blocks are stacked in column order
        return out

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write featurizer.json + per-block vocab/idf files into directory ``path`` (created if missing)."""
        from xmr import __version__

        self._check_fitted()
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"{path} exists and is not a directory; cannot save a TextFeaturizer there")
        path.mkdir(parents=True, exist_ok=True)
        blocks_meta = []
        for name, block, weight in self.blocks:
            d = block.to_dict()
            vocab_file = None
            if d["terms"] is not None:
                vocab_file = f"{name}.vocab.json"
                with open(path / vocab_file, "w", encoding="utf-8") as f:
                    json.dump(d["terms"], f, ensure_ascii=False, separators=(",\n", ": "))
            idf_file = f"{name}.idf.npy"
            np.save(path / idf_file, np.ascontiguousarray(d["idf"], dtype="<f8"), allow_pickle=False)
            blocks_meta.append({
                "name": name,
                "weight": weight,
                "config": d["config"],
                "n_docs": d["n_docs"],
                "nr_features": block.nr_features,
                "vocab": vocab_file,
                "idf": idf_file,
            })
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "created_by": f"xmr {__version__}",
            "spec": self.spec,
            "nr_features": self.nr_features,
            "blocks": blocks_meta,
        }
        with open(path / MANIFEST_NAME, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")

    @classmethod
    def load(cls, path: str | Path) -> TextFeaturizer:
        """Load a saved featurizer, validating every file (ModelFormatError naming the file on any problem)."""
        path = Path(path)
        mpath = path / MANIFEST_NAME
        if not path.is_dir():
            raise ModelFormatError(f"{path}: not a directory (expected a saved TextFeaturizer)")
        manifest = _read_json(mpath)
        if not isinstance(manifest, dict):
            raise ModelFormatError(f"{mpath}: expected a JSON object")
        if manifest.get("format") != FORMAT_NAME:
            raise ModelFormatError(f"{mpath}: format is {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
        version = manifest.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise ModelFormatError(f"{mpath}: unsupported version {version!r} (this xmr reads {FORMAT_VERSION})")
        blocks_meta = manifest.get("blocks")
        if not isinstance(blocks_meta, list) or not blocks_meta:
            raise ModelFormatError(f"{mpath}: 'blocks' must be a non-empty list")
        blocks = []
        for i, bm in enumerate(blocks_meta):
            if not isinstance(bm, dict):
                raise ModelFormatError(f"{mpath}: blocks[{i}] is not an object")
            name = bm.get("name")
            if not isinstance(name, str) or not _BLOCK_NAME.match(name):
                raise ModelFormatError(f"{mpath}: blocks[{i}] has a bad name {name!r}")
            vocab_file, idf_file = bm.get("vocab"), bm.get("idf")
            for key, fname in (("vocab", vocab_file), ("idf", idf_file)):
                if fname is not None and (not isinstance(fname, str) or Path(fname).name != fname):
                    raise ModelFormatError(f"{mpath}: block {name!r} {key} file {fname!r} must be a plain name")
            if not isinstance(idf_file, str):
                raise ModelFormatError(f"{mpath}: block {name!r} names no idf file")
            try:  # the configuration alone first, so that its errors name the manifest
                hashing = TfidfBlock.from_config(bm.get("config")).hashing
            except InputError as exc:
                raise ModelFormatError(f"{mpath}: block {name!r}: {exc}") from None
            if (hashing is None) != (vocab_file is not None):
                want = "no vocab file (hashing mode)" if hashing is not None else "a vocab file"
                raise ModelFormatError(f"{mpath}: block {name!r} must name {want}; vocab is {vocab_file!r}")
            idf = _read_npy(path / idf_file)
            terms = None
            if vocab_file is not None:
                terms = _read_json(path / vocab_file)
                if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
                    raise ModelFormatError(f"{path / vocab_file}: expected a JSON list of strings")
            try:
                block = TfidfBlock.from_dict(
                    {"config": bm.get("config"), "n_docs": bm.get("n_docs", 0), "terms": terms, "idf": idf}
                )
            except InputError as exc:
                msg = str(exc)
                where = (mpath if msg.startswith("n_docs") else
                         path / idf_file if msg.startswith("idf") or vocab_file is None else path / vocab_file)
                raise ModelFormatError(f"{where}: block {name!r}: {msg}") from None
            if bm.get("nr_features") != block.nr_features:
                raise ModelFormatError(
                    f"{mpath}: block {name!r} declares nr_features={bm.get('nr_features')!r} but "
                    f"{path / idf_file} has {block.nr_features}"
                )
            blocks.append((name, block, bm.get("weight")))
        spec = manifest.get("spec")
        try:
            feat = cls(blocks, spec=spec if isinstance(spec, str) else None)
        except InputError as exc:
            raise ModelFormatError(f"{mpath}: {exc}") from None
        if manifest.get("nr_features") != feat.nr_features:
            raise ModelFormatError(
                f"{mpath}: nr_features={manifest.get('nr_features')!r} but the blocks hold {feat.nr_features}"
            )
        return feat


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: file is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: unreadable or not valid JSON ({exc})") from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: file is missing") from None
    except (OSError, ValueError, EOFError) as exc:
        raise ModelFormatError(f"{path}: unreadable or not a .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.dtype.kind != "f":
        raise ModelFormatError(f"{path}: expected a 1-D float array, got {getattr(arr, 'dtype', '?')} "
                               f"{getattr(arr, 'shape', '?')}")
    return arr
