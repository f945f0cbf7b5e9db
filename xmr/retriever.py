"""Retriever: raw text in, typed hits (label, score, metadata) out; a text featurizer + an XR-Linear model + labels.

    from xmr import Retriever

    r = Retriever.train(texts, label_lists, label_metadata={"B001": {"title": "Wooden train set"}})
    r.save("retriever-dir")                                  # atomic; JSON + .npy + plain bytes only
    r = Retriever.load("retriever-dir")                      # validated, memory-mapped, warmed
    r.retrieve_one("wooden train for a 3 year old", k=5)     # Retrieval(hits=(Hit(label, score, metadata), ...))
    r.retrieve(["hornby coach", ""], k=5)                    # batch path; same results as retrieve_one per text

A query that cannot be scored (empty text, or no term known to the featurizer) gives an empty
:class:`Retrieval` whose ``reason`` says why; it never raises. Wrong types and bad ``k`` raise InputError.

Directory layout (format ``"xmr.retriever"``, version 1)::

    RETRIEVER_DIR/
      xmr-retriever.json    {"format": "xmr.retriever", "version": 1, "model_version": "<utc>-<8 hex>",
                             "created_by", "nr_labels", "nr_features", "features", "meta"}
      featurizer/           xmr.text.TextFeaturizer.save
      model/                xmr.model_io (XLinearModel format)
      labels/               xmr.labels.LabelSet.save (names and metadata, memory-mapped at load)
      rerank/               only when trained with ``rerank=``: xmr.rerank.Reranker.save (label-text features
                            Z as CSR .npy arrays + rerank.json; memory-mapped at load); the manifest then has
                            "rerank": {"candidates", "weight"}. Retrievers without it read as before.

Optional ranking stage (``rerank=RerankConfig(candidates, weight)`` at training, needs ``label_texts``): beam
search fetches ``max(k, candidates)`` labels, each is re-scored as ``(1 - weight) * model score + weight *
cosine(query features, label-text features)``, and the top k of that blend are returned (hit scores are the
blend). ``retrieve(..., rerank=False)`` turns it off per call. See :mod:`xmr.rerank`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from xmr.labels import LabelSet, read_label_metadata
from xmr.rerank import RERANK_DIR, Reranker, RerankConfig
from xmr.validation import InputError, check_positive_int

if TYPE_CHECKING:
    from xmr.model import XLinearModel
    from xmr.records import LabelRecords
    from xmr.text.featurizer import TextFeaturizer

__all__ = ["Hit", "Retrieval", "Retriever", "EMPTY_QUERY", "NO_KNOWN_TERMS", "RETRIEVER_FORMAT",
           "RETRIEVER_VERSION", "MANIFEST_NAME", "is_retriever_dir"]

LOGGER = logging.getLogger(__name__)

RETRIEVER_FORMAT = "xmr.retriever"
RETRIEVER_VERSION = 1
MANIFEST_NAME = "xmr-retriever.json"
EMPTY_QUERY = "empty query"
NO_KNOWN_TERMS = "no known terms in query"


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved label: its name, its score (higher is better) and its metadata (empty when none)."""

    label: str
    score: float
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready {"label", "score", "metadata"}."""
        return {"label": self.label, "score": self.score, "metadata": dict(self.metadata)}


@dataclass(frozen=True, slots=True)
class Retrieval:
    """The hits of one query, best first; ``reason`` is set exactly when the query could not be scored."""

    hits: tuple[Hit, ...] = ()
    reason: str | None = None

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self):
        return iter(self.hits)

    @property
    def labels(self) -> list[str]:
        """Names of the hits, best first."""
        return [h.label for h in self.hits]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready {"hits": [...], "reason"}."""
        return {"hits": [h.to_dict() for h in self.hits], "reason": self.reason}


def no_result_reason(text: str) -> str:
    """Why a text that featurized to nothing has no hits: it holds no words at all, or none the model knows."""
    from xmr.text.normalize import normalize, tokenize

    return NO_KNOWN_TERMS if tokenize(normalize(text)) else EMPTY_QUERY


def is_retriever_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a retriever manifest."""
    return (Path(path) / MANIFEST_NAME).is_file()


def _new_model_version() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def _check_k(k: object, nr_labels: int) -> int:
    """k as a positive int, clamped to the number of labels (asking for more than exist is not an error)."""
    return min(check_positive_int(k, "k"), nr_labels)


def _check_label_lists(label_lists: object, n: int) -> list[list[str]]:
    if isinstance(label_lists, (str, bytes)) or not isinstance(label_lists, Sequence):
        raise InputError(f"label_lists must be a sequence (one list of label names per text), "
                         f"got {type(label_lists).__name__}")
    if len(label_lists) != n:
        raise InputError(f"got {n} texts but {len(label_lists)} label lists; they must describe the same instances")
    out = []
    for i, labels in enumerate(label_lists):
        if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
            raise InputError(f"label_lists[{i}] must be a list of label names, got {type(labels).__name__} "
                             f"({labels!r})")
        for lab in labels:
            if not isinstance(lab, str) or not lab:
                raise InputError(f"label_lists[{i}] holds {lab!r}; labels are non-empty strings")
        out.append(list(dict.fromkeys(labels)))
    return out


def _check_mapping(value: object, name: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise InputError(f"{name} must be a mapping (label -> ...), got {type(value).__name__}")
    return value


class Retriever:
    """Text -> labels: a fitted :class:`TextFeaturizer`, an :class:`XLinearModel` and the :class:`LabelSet`."""

    def __init__(self, featurizer: TextFeaturizer, model: XLinearModel, labels: LabelSet,
                 meta: dict[str, Any] | None = None, reranker: Reranker | None = None) -> None:
        """Assemble trained parts; their sizes must agree (features of featurizer and model, labels, reranker)."""
        if featurizer.nr_features != model.nr_features:
            raise InputError(f"the featurizer makes {featurizer.nr_features} features but the model expects "
                             f"{model.nr_features}")
        if len(labels) != model.nr_labels:
            raise InputError(f"the label set has {len(labels)} labels but the model has {model.nr_labels}")
        if reranker is not None and reranker.shape != (model.nr_labels, model.nr_features):
            raise InputError(f"the reranker's label features are {reranker.shape[0]} x {reranker.shape[1]} but the "
                             f"model has {model.nr_labels} labels x {model.nr_features} features")
        self.featurizer = featurizer
        self.model = model
        if reranker is not None:  # candidates come from a few leaves: score them leaf by leaf
            reranker.group_by(model.tree.parents(model.tree.depth - 1))
        self.reranker = reranker
        self.labels = labels
        self._nr_labels = model.nr_labels  # read on every query: one attribute, not three properties deep
        self.meta: dict[str, Any] = dict(meta or {})
        self.meta.setdefault("model_version", _new_model_version())

    @property
    def model_version(self) -> str:
        """Identifier of this trained model: "<UTC time of training>-<8 hex>", kept through save and load."""
        return str(self.meta["model_version"])

    @property
    def nr_labels(self) -> int:
        """Number of labels the retriever can return."""
        return self._nr_labels

    def __repr__(self) -> str:
        return (f"Retriever(model_version={self.model_version!r}, features={self.featurizer.spec!r}, "
                f"nr_features={self.model.nr_features}, nr_labels={self.nr_labels})")

    def info(self) -> dict[str, Any]:
        """JSON-ready description: version, sizes, feature spec, tree shape, training summary."""
        return {
            "format": RETRIEVER_FORMAT,
            "model_version": self.model_version,
            "features": self.featurizer.spec,
            "nr_features": self.model.nr_features,
            "nr_labels": self.nr_labels,
            "has_metadata": self.labels.has_metadata,
            "depth": self.model.depth,
            "level_sizes": list(self.model.tree.level_sizes),
            "beam_size": self.model.beam_size,
            "topk": self.model.topk,
            "rerank": None if self.reranker is None else {**self.reranker.config.to_dict(), "nnz": self.reranker.nnz},
            "meta": json.loads(json.dumps(self.meta, default=str)),
        }

    # ------------------------------------------------------------------------------------------- training
    @classmethod
    def train(
        cls,
        texts: Sequence[str],
        label_lists: Sequence[Sequence[str]],
        *,
        features: str | TextFeaturizer = "word+char",
        hashing: int | None = None,
        label_texts: Mapping[str, str] | None = None,
        alpha: float | None = None,
        label_metadata: Mapping[str, Mapping[str, Any]] | str | os.PathLike | None = None,
        rerank: RerankConfig | Mapping[str, Any] | None = None,
        threads: int = -1,
        progress: bool = False,
        **xlinear_kwargs: Any,
    ) -> Retriever:
        """Fit the featurizer (train texts + label texts) and train XR-Linear on the texts' labels.

        Label ids follow the order of first appearance in ``label_lists``. ``label_texts`` (label -> text) gives
        label-side features through the same featurizer (labels without one get a zero row), combined with PIFA
        as ``XLinearModel.train`` does (``alpha``). ``label_metadata`` (label -> attributes, or a JSONL/CSV path)
        is stored for hydration. ``rerank`` (a :class:`~xmr.rerank.RerankConfig` or a dict {"candidates",
        "weight"}; needs ``label_texts``) keeps the label texts' features to re-score beam-search candidates by
        cosine at retrieval (see the module docstring). A given, already fitted :class:`TextFeaturizer` is used
        as is. Other keyword arguments go to :meth:`XLinearModel.train` (nr_splits, max_leaf_size, seed,
        train_params, beam_size...).
        """
        from xmr.model import XLinearModel
        from xmr.text.featurizer import TextFeaturizer
        from xmr.text.vectorizers import check_texts

        t_all = time.perf_counter()
        texts = list(check_texts(texts, "texts"))
        if not texts:
            raise InputError("texts is empty: nothing to train on")
        label_lists = _check_label_lists(label_lists, len(texts))
        for key in ("label_features", "X", "Y"):
            if key in xlinear_kwargs:
                raise InputError(f"{key} is made by the retriever; pass label_texts instead" if key ==
                                 "label_features" else f"{key} is made by the retriever from texts and label_lists")
        if rerank is not None:
            rerank = RerankConfig.coerce(rerank)
            if label_texts is None:
                raise InputError("rerank needs label_texts (it scores candidates by cosine to their label text)")
        if alpha is not None and label_texts is None:
            raise InputError("alpha needs label_texts (it weighs PIFA against the label-text features)")
        if isinstance(label_metadata, (str, os.PathLike)):
            label_metadata = read_label_metadata(label_metadata)
        if label_metadata is not None:
            _check_mapping(label_metadata, "label_metadata")
        if label_texts is not None:
            _check_mapping(label_texts, "label_texts")

        ids: dict[str, int] = {}
        indices: list[int] = []
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        for i, labels in enumerate(label_lists):
            indices.extend(ids.setdefault(lab, len(ids)) for lab in labels)
            indptr[i + 1] = len(indices)
        names = list(ids)
        L = len(names)
        if not xlinear_kwargs.get("allow_empty_rows"):
            bare = next((i for i, labels in enumerate(label_lists) if not labels), None)
            if bare is not None:  # named here: the engine's message speaks of rows of a Y matrix the caller never saw
                raise InputError(f"label_lists[{bare}] is empty: every text needs a label (or pass "
                                 "allow_empty_rows=True to use such texts only as negatives)")
        Y = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), np.asarray(indices, dtype=np.int32), indptr),
                          shape=(len(texts), L))

        side: list[str] | None = None
        if label_texts is not None:
            unknown = [lab for lab in label_texts if lab not in ids]
            if unknown:
                LOGGER.warning("ignoring the texts of %d labels that no training instance has (e.g. %r)",
                               len(unknown), unknown[0])
            side = [label_texts.get(lab, "") for lab in names]
            for lab, t in zip(names, side):
                if not isinstance(t, str):
                    raise InputError(f"label_texts[{lab!r}] is a {type(t).__name__}, expected str")
            missing = sum(1 for lab in names if lab not in label_texts)
            if missing:
                LOGGER.info("%d of %d labels have no label text (zero label-feature rows)", missing, L)

        if isinstance(features, str):
            featurizer = TextFeaturizer.from_spec(features, hashing=hashing)
        elif isinstance(features, TextFeaturizer):
            featurizer = features
            if hashing is not None:
                raise InputError("hashing applies to a feature spec string; the given TextFeaturizer is configured")
        else:
            raise InputError(f"features must be a spec string such as 'word+char' or a TextFeaturizer, "
                             f"got {type(features).__name__}")
        t0 = time.perf_counter()
        if not _is_fitted(featurizer):
            featurizer.fit(texts + [t for t in (side or []) if t], progress=progress)
        X = featurizer.transform(texts, progress=progress)
        LF = featurizer.transform(side, progress=progress) if side is not None else None
        fit_s = time.perf_counter() - t0
        empty = int(np.count_nonzero(np.diff(X.indptr) == 0))
        if empty:
            LOGGER.warning("%d of %d training texts have no features (empty text)", empty, len(texts))
        LOGGER.info("featurised %d texts into %d features (%s) in %.2fs", len(texts), featurizer.nr_features,
                    featurizer.spec, fit_s)

        # copied: the label features are the reranker's Z and must not share memory with what training touches
        reranker = Reranker(LF.copy(), rerank) if rerank is not None else None
        model = XLinearModel.train(X, Y, label_features=LF, alpha=alpha, threads=threads, progress=progress,
                                   **xlinear_kwargs)

        metadata = None
        nr_meta = 0
        if label_metadata is not None:
            metadata = [label_metadata.get(lab) for lab in names]
            nr_meta = sum(m is not None for m in metadata)
            if nr_meta == 0 and label_metadata:
                LOGGER.warning("label metadata: none of its %d ids names a trained label (wrong id column?)",
                               len(label_metadata))
            elif nr_meta < len(label_metadata):
                LOGGER.info("label metadata: %d entries name no trained label and are not stored",
                            len(label_metadata) - nr_meta)
            if nr_meta < L:
                LOGGER.info("label metadata: %d of %d labels have none", L - nr_meta, L)
        labels = LabelSet(names, metadata)
        meta = {
            "model_version": _new_model_version(),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "features": featurizer.spec,
            "hashing": hashing,
            "nr_instances": len(texts),
            "nr_empty_instances": empty,
            "nr_label_texts": 0 if side is None else L - sum(1 for t in side if not t),
            "nr_label_metadata": nr_meta,
            "alpha": alpha,
            "rerank": None if rerank is None else rerank.to_dict(),
            "times": {"featurize_s": round(fit_s, 4), "total_s": round(time.perf_counter() - t_all, 4)},
        }
        return cls(featurizer, model, labels, meta, reranker)

    # ------------------------------------------------------------------------------------------ retrieval
    def _hits(self, ids: np.ndarray, scores: np.ndarray) -> tuple[Hit, ...]:
        """Hits of one result row (names and metadata decoded for these ids only)."""
        names, metas = self.labels.hydrate(ids.tolist())  # ids come from the model: in range
        return tuple(map(Hit, names, scores.tolist(), metas))

    def _reason(self, text: str) -> str:
        return no_result_reason(text)

    def _use_rerank(self, rerank: bool | None) -> Reranker | None:
        """The reranker to apply: the retriever's unless ``rerank`` is False (True without one is an error)."""
        if rerank is None:
            return self.reranker
        if not isinstance(rerank, (bool, np.bool_)):
            raise InputError(f"rerank must be True, False or None, got {type(rerank).__name__}")
        if rerank and self.reranker is None:
            raise InputError("this retriever has no rerank stage (train it with label_texts and rerank=...)")
        return self.reranker if rerank else None

    def retrieve(self, texts: Sequence[str], k: int = 10, beam_size: int | None = None,
                 rerank: bool | None = None) -> list[Retrieval]:
        """Top-k hits of each text (batch path: one featurisation and one beam search for all texts).

        ``k`` above the number of labels is clamped to it; ``beam_size`` defaults to the model's. With a rerank
        stage (unless ``rerank=False``) beam search fetches ``max(k, candidates)`` labels and the top k of their
        blended scores are returned.
        """
        from xmr.text.vectorizers import check_texts

        texts = check_texts(texts, "texts")
        k = _check_k(k, self.nr_labels)
        reranker = self._use_rerank(rerank)
        if beam_size is not None:
            beam_size = check_positive_int(beam_size, "beam_size")
        if not texts:
            return []
        X = self.featurizer.transform(texts)
        nnz = np.diff(X.indptr)
        scored = np.flatnonzero(nnz > 0)
        out: list[Retrieval] = [None] * len(texts)  # type: ignore[list-item]
        for i in np.flatnonzero(nnz == 0).tolist():
            out[i] = Retrieval((), self._reason(texts[i]))
        if scored.size:
            Xs = X[scored] if scored.size < len(texts) else X
            P = self.model.predict(Xs, beam_size=beam_size, topk=self._fetch(k, reranker))
            if reranker is not None:
                P = reranker.rerank_batch(Xs, P, k)
            # each distinct hit label is decoded once per batch; hits get shallow copies of its metadata
            uniq = np.unique(P.indices).tolist()
            table = dict(zip(uniq, zip(*self.labels.hydrate(uniq))))
            indptr, ids, scores = P.indptr.tolist(), P.indices.tolist(), P.data.tolist()
            for r, i in enumerate(scored.tolist()):
                a, b = indptr[r], indptr[r + 1]
                out[i] = Retrieval(tuple(Hit(table[j][0], s, dict(table[j][1])) for j, s in
                                         zip(ids[a:b], scores[a:b])))
        return out

    def retrieve_one(self, text: str, k: int = 10, beam_size: int | None = None,
                     rerank: bool | None = None) -> Retrieval:
        """Top-k hits of one text (single-query path: featurize one text, one beam search, the rerank stage if
        any and not ``rerank=False``); k is clamped too. Same results as :meth:`retrieve`."""
        ids, scores, reason = self.rank_one(text, k, beam_size, rerank)
        return Retrieval((), reason) if reason else Retrieval(self._hits(ids, scores))

    def rank_one(self, text: str, k: int = 10, beam_size: int | None = None, rerank: bool | None = None
                 ) -> tuple[np.ndarray, np.ndarray, str | None]:
        """:meth:`retrieve_one` before decoding labels: (label ids int32, scores float32, reason), best first;
        ``reason`` is set, and the arrays empty, exactly when the text could not be scored."""
        if not isinstance(text, str):
            raise InputError(f"text must be a str, got {type(text).__name__}")
        k = _check_k(k, self.nr_labels)
        reranker = self._use_rerank(rerank)
        if beam_size is not None:  # checked before featurising, so an empty query rejects it like retrieve() does
            beam_size = check_positive_int(beam_size, "beam_size")
        idx, vals = self.featurizer.transform_one(text)
        if idx.size == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.float32), self._reason(text)
        ids, scores = self.model.predict_one_sparse(idx, vals, beam_size=beam_size, topk=self._fetch(k, reranker))
        if reranker is not None:
            ids, scores = reranker.rerank_one(idx, vals, ids, scores, k)
        return ids, scores, None

    def rank_one_records(self, text: str, records: LabelRecords, k: int = 10, beam_size: int | None = None
                         ) -> tuple[bytes, str | None]:
        """:meth:`rank_one`'s hits as ``records.entries(ids, scores)`` joins them, and its reason: featurising,
        beam search, the rerank stage and the gathering in one numba call (:mod:`xmr.fused_search`) where the
        featurizer and the rerank stage allow, else composed from rank_one; the same bytes either way."""
        fused = self._fused
        if fused is None:
            fused = self._prepare_fused()
        if fused and isinstance(text, str):
            k = _check_k(k, self.nr_labels)
            search = self.model.single_query_args(beam_size, self._fetch(k, self.reranker))
            table, data, raw, complete = self.featurizer.kernel_input(text)  # type: ignore[misc]
            out, status = fused[0](data, raw, complete, table.blob, search, fused[1], k, records.pool, records.off)
            if status == fused[2]:
                return out.tobytes(), None
            if status == fused[3]:
                return b"", self._reason(text)
        ids, scores, reason = self.rank_one(text, k, beam_size)
        return records.entries(ids, scores), reason

    def rank_many_records(self, texts: Sequence[str], records: LabelRecords, ks: Sequence[int]
                          ) -> list[tuple[bytes, str | None]]:
        """:meth:`rank_one_records` of each (text, k) at the model's beam size, the same bytes, in one numba call
        for all of them (:func:`xmr.fused_search.search_texts`; the serving micro-batcher's path) where the
        featurizer and the rerank stage allow; a text the kernel hands back takes the single-query path."""
        if len(texts) != len(ks):
            raise InputError(f"texts and ks must have the same length, got {len(texts)} and {len(ks)}")
        ks = [_check_k(k, self.nr_labels) for k in ks]
        if not texts:
            return []
        fused = self._fused
        if fused is None:
            fused = self._prepare_fused()
        inputs = [self.featurizer.kernel_input(t) for t in texts] if fused and all(
            isinstance(t, str) for t in texts) else None
        # a text's first k hits at a larger top k are its top k, unless the larger k fetches more rerank candidates
        groups: dict[int, list[int]] = {}
        for i, kk in enumerate(ks):
            groups.setdefault(self._fetch(kk, self.reranker) if self.reranker is not None else 0, []).append(i)
        got: list[tuple[bytes, str | None]] = [(b"", None)] * len(texts)
        for at in groups.values():
            k = max(ks[i] for i in at)
            if inputs is None:  # one beam search for the group, then each text's records
                for i, (ids, scores, reason) in zip(at, self.rank_many([texts[i] for i in at], k=k)):
                    got[i] = (records.entries(ids[:ks[i]], scores[:ks[i]]), reason)
                continue
            search = self.model.single_query_args(None, self._fetch(k, self.reranker))
            text_off = np.zeros(len(at) + 1, np.int64)
            np.cumsum([len(inputs[i][1]) for i in at], out=text_off[1:])
            joined = np.frombuffer(b"".join(inputs[i][1] for i in at), np.uint8)
            raw = np.array([inputs[i][2] for i in at], np.bool_)
            complete = np.array([inputs[i][3] for i in at], np.bool_)
            out, rec_off, status = fused[4](joined, text_off, raw, complete, inputs[at[0]][0].blob, search, fused[1], k,
                                            np.array([ks[i] for i in at], np.int64), records.pool, records.off)
            for j, (i, st) in enumerate(zip(at, status.tolist())):
                if st == fused[2]:
                    got[i] = (out[rec_off[j]:rec_off[j + 1]].tobytes(), None)
                elif st == fused[3]:
                    got[i] = (b"", self._reason(texts[i]))
                else:
                    got[i] = self.rank_one_records(texts[i], records, ks[i])
        return got

    _fused: tuple | bool | None = None  # rank_one_records' kernel and rerank arguments, False: composed path only

    def _prepare_fused(self) -> tuple | bool:
        from xmr import fused_search as fs

        stage = fs.rerank_args(self.reranker)
        got = self.featurizer.kernel_input("") if stage is not None else None
        if got is None:
            self._fused = False
            return False
        # compile (or load from numba's cache) now, not in a call; an empty text returns before any gathering
        fs.call(got[1], True, False, got[0].blob, self.model.single_query_args(None, self._fetch(1, self.reranker)),
                stage, 1, np.frombuffer(b"", np.uint8), np.zeros(1, np.int64))
        self._fused = (fs.call, stage, fs.OK, fs.NO_FEATURES, fs.call_many)
        return self._fused

    def warm_batch(self) -> Retriever:
        """Compile (or load from numba's cache) :meth:`rank_many_records`' kernel now, not in its first call (about
        5 s from scratch on 2 cores, so only a server that micro-batches pays it); returns self."""
        from xmr.records import LabelRecords

        self.rank_many_records([""], LabelRecords([]), [1])  # an empty text returns before any gathering
        return self

    def _fetch(self, k: int, reranker: Reranker | None) -> int:
        """Labels the beam search fetches for a top k: k, or the rerank stage's candidates when there is one."""
        return k if reranker is None else min(max(k, reranker.candidates), self.nr_labels)

    def rank_many(self, texts: Sequence[str], k: int = 10, beam_size: int | None = None, threads: int = 1
                  ) -> list[tuple[np.ndarray, np.ndarray, str | None]]:
        """:meth:`rank_one` of each text, with one beam-search call for all of them (no scipy matrices, labels not
        decoded); each result equals rank_one's. ``threads=1`` searches on the calling thread (rank_many_records'
        path where the featurizer has no kernel); more enter numba's thread pool (-1: all)."""
        from xmr.text.vectorizers import check_texts

        texts = check_texts(texts, "texts")
        k = _check_k(k, self.nr_labels)
        if beam_size is not None:
            beam_size = check_positive_int(beam_size, "beam_size")
        reranker = self.reranker
        rows = [self.featurizer.transform_one(t) for t in texts]
        out: list[tuple[np.ndarray, np.ndarray, str | None]] = []
        scored = [i for i, (idx, _) in enumerate(rows) if idx.size]
        if scored:
            sizes = np.array([rows[i][0].size for i in scored], dtype=np.int64)
            indptr = np.zeros(len(scored) + 1, dtype=np.int64)
            np.cumsum(sizes, out=indptr[1:])
            ids, scores, counts = self.model.predict_rows(indptr, np.concatenate([rows[i][0] for i in scored]),
                                                          np.concatenate([rows[i][1] for i in scored]),
                                                          beam_size=beam_size, topk=self._fetch(k, reranker),
                                                          threads=threads)
        at = 0
        for i, text in enumerate(texts):
            idx, vals = rows[i]
            if not idx.size:
                out.append((np.zeros(0, np.int32), np.zeros(0, np.float32), self._reason(text)))
                continue
            got_ids, got_sc = ids[at, : counts[at]], scores[at, : counts[at]]
            at += 1
            if reranker is not None:
                got_ids, got_sc = reranker.rerank_one(idx, vals, got_ids, got_sc, k)
            out.append((got_ids, got_sc, None))
        return out

    # ---------------------------------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Save atomically to directory ``path`` (replacing a retriever there; refusing other directories)."""
        from xmr import __version__
        from xmr.model_io import json_default, save_model, write_dir_atomically

        try:
            meta = json.loads(json.dumps(self.meta, default=json_default))  # fail before touching the disk
        except TypeError as e:
            raise InputError(f"retriever meta: {e}") from None
        manifest = {
            "format": RETRIEVER_FORMAT,
            "version": RETRIEVER_VERSION,
            "model_version": self.model_version,
            "created_by": f"xmr {__version__}",
            "nr_labels": self.nr_labels,
            "nr_features": self.model.nr_features,
            "features": self.featurizer.spec,
            "meta": meta,
        }
        if self.reranker is not None:
            manifest["rerank"] = self.reranker.config.to_dict()

        def fill(tmp: Path) -> None:
            (tmp / "featurizer").mkdir()
            self.featurizer.save(tmp / "featurizer")
            save_model(self.model, tmp / "model")
            self.labels.save(tmp / "labels")
            if self.reranker is not None:
                self.reranker.save(tmp / RERANK_DIR)
            with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=1, ensure_ascii=False)
                f.write("\n")

        return write_dir_atomically(path, fill, is_retriever_dir, "xmr retriever")

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, warm: bool = True) -> Retriever:
        """Load and validate a saved retriever (ModelFormatError naming the file on any problem).

        ``mmap`` maps the model's arrays and the label files read-only; ``warm`` builds the search index and
        runs the query path once, so the first real query is as fast as the rest.
        """
        from xmr.model_io import ModelFormatError, resolve_model_dir, is_xmr_model_dir, load_model
        from xmr.text.featurizer import TextFeaturizer

        root = resolve_model_dir(Path(path))
        manifest = _read_manifest(root)
        parts = {}
        for name in ("featurizer", "model", "labels"):
            sub = root / name
            if not sub.is_dir():
                raise ModelFormatError(f"{sub}: missing; {root} is an incomplete retriever")
        try:
            parts["featurizer"] = TextFeaturizer.load(root / "featurizer")
        except (ModelFormatError, InputError) as e:
            raise _inside(e, root / "featurizer") from None
        if not is_xmr_model_dir(root / "model"):
            raise ModelFormatError(f"{root / 'model'}: not an xmr model directory (no xmr-model.json in it)")
        try:
            parts["model"] = load_model(root / "model", mmap=mmap)
        except ModelFormatError as e:
            raise _inside(e, root / "model") from None
        parts["labels"] = LabelSet.load(root / "labels", mmap=mmap)
        reranker = None
        if manifest.get("rerank") is not None:
            if not isinstance(manifest["rerank"], dict):
                raise ModelFormatError(f"{root / MANIFEST_NAME}: field 'rerank' must be an object or null")
            if not (root / RERANK_DIR).is_dir():
                raise ModelFormatError(f"{root / RERANK_DIR}: missing; the manifest names a rerank stage")
            reranker = Reranker.load(root / RERANK_DIR, mmap=mmap,
                                     shape=(parts["model"].nr_labels, parts["model"].nr_features))
        for key, value in (("nr_labels", parts["model"].nr_labels), ("nr_features", parts["model"].nr_features)):
            if manifest[key] != value:
                raise ModelFormatError(f"{root / MANIFEST_NAME}: {key} is {manifest[key]} but the model has {value}")
        try:
            retriever = cls(parts["featurizer"], parts["model"], parts["labels"], manifest["meta"], reranker)
        except InputError as e:
            raise ModelFormatError(f"{root}: inconsistent retriever ({e})") from None
        retriever.meta["model_version"] = manifest["model_version"]
        if warm:
            retriever.warm()
        return retriever

    def warm(self) -> Retriever:
        """Build the search index and run the single and batch query paths once; returns self."""
        self.model.warm()
        self.featurizer.transform_one("warm up")
        self.featurizer.transform_one("wärm up")  # non-ASCII text: normalisation builds its mark table (~6 ms) once
        self.featurizer.transform(["warm up"])
        if self.reranker is not None:
            self.reranker.warm()
        self._prepare_fused()
        return self


def _is_fitted(featurizer: Any) -> bool:
    fitted = getattr(featurizer, "fitted", None)
    if fitted is not None:
        return bool(fitted)
    try:
        featurizer.nr_features
    except (InputError, AttributeError, ValueError):
        return False
    return True


def _inside(e: Exception, where: Path) -> Exception:
    """The error of a part's loader, naming the part's directory when its message names only a relative file."""
    from xmr.model_io import ModelFormatError

    msg = str(e)
    if str(where) in msg:
        return ModelFormatError(msg)
    head, sep, _ = msg.partition(": ")
    if sep and " " not in head and not os.path.isabs(head):  # "weights/0/data.npy: ..." -> "<where>/weights/..."
        return ModelFormatError(f"{where}/{msg}")
    return ModelFormatError(f"{where}: {msg}")


def _read_manifest(root: Path) -> dict[str, Any]:
    from xmr.model_io import MANIFEST_NAME as MODEL_MANIFEST
    from xmr.model_io import ModelFormatError, read_json_object

    mpath = root / MANIFEST_NAME
    if not mpath.is_file():
        if (root / MODEL_MANIFEST).is_file():
            raise ModelFormatError(f"{root} is an xmr XR-Linear model (features in, label ids out), not a text "
                                   "retriever; train one from text with `xmr text train` or Retriever.train")
        raise ModelFormatError(f"{root} is not an xmr retriever directory (no {MANIFEST_NAME} in it)")
    manifest = read_json_object(mpath)
    if manifest.get("format") != RETRIEVER_FORMAT:
        raise ModelFormatError(f"{mpath}: format is {manifest.get('format')!r}, expected {RETRIEVER_FORMAT!r}")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"{mpath}: invalid format version {version!r}")
    if version > RETRIEVER_VERSION:
        raise ModelFormatError(f"{mpath}: format version {version} was written by a newer xmr "
                               f"({manifest.get('created_by', 'unknown')}); this xmr reads versions up to "
                               f"{RETRIEVER_VERSION}: upgrade xmr")
    for key, kind in (("model_version", str), ("nr_labels", int), ("nr_features", int), ("meta", dict)):
        v = manifest.get(key)
        if isinstance(v, bool) or not isinstance(v, kind):
            raise ModelFormatError(f"{mpath}: field {key!r} is missing or has the wrong type")
    return manifest
