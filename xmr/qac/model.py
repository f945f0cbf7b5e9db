"""CompletionModel: session-aware query autocompletion as extreme multi-label ranking (issue 4, PECOS qp2q).

Labels are the distinct next queries of the training pairs, normalised like :func:`casefold_prefix` (case-folded,
whitespace collapsed, stripped) and sorted by code point: label id ``i`` is ``labels[i]``, the same order as the
MPC table, so label trees built over sorted query strings (indexing/trie.py) line up with the ids.

Training instances: for every (previous query, next query) pair, ``prefixes_per_pair`` prefixes of the next
query, drawn with a fixed seed. The first one is 1 to 3 characters long (where MPC is weakest and session context
helps most), the others are uniform over 1..len(next query); repeated lengths are dropped. Instances are NOT
merged per (previous, prefix) as PECOS does, so a frequent next query appears in as many rows as it occurred and
the rankers keep its popularity. Features: :class:`xmr.qac.features.QacFeaturizer`.

Completion (:meth:`CompletionModel.complete`): featurise, beam search for ``candidates`` labels (single-query
path) restricted to the id run of labels that start with the case-folded prefix (the beam enters only nodes
holding one: ``xmr.inference.constraint``), add MPC's top k for the prefix (most frequent training
next-queries) and, when the model was trained with users, the top completions of the co-user prior
(:mod:`xmr.qac.cousers`: what the users who typed the previous query typed), and rank by model score x (1 +
training count) ** ``popularity`` x (1e-5 + co-user prior) ** ``co_user_weight`` (PECOS discards counts and has no
prior; on the AOL validation split the count prior is worth +0.005-0.01 MRR@10 and the co-user prior +0.06 on
requests with a previous query). A session's first query (blank ``previous``) gets MPC alone: with only the
prefix to go on, the counts rank better than the model. The empty prefix takes the same path as any other:
every label matches it, so the model ranks by the previous query and MPC adds the most popular queries overall
(never an empty list while the model has labels). Odd text never raises; wrong types and k < 1 raise InputError.

On disk (``save``, atomic)::

    qac.json        {"format": "xmr.qac", "version": 1, "nr_labels", "candidates", weights, "meta"}
    labels.json     JSON list of the label strings in id order
    features/       prefix/ and previous/ TextFeaturizer directories
    model/          XLinearModel directory
    mpc/            MostPopularCompletion directory (counts of the training next-queries)
    cousers/        CoUserPrior directory (only for a model trained with users)
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from indexing.tree import LabelTree
from xmr.model import XLinearModel
from xmr.model_io import ModelFormatError, read_json_object
from xmr.qac.cousers import CoUserPrior
from xmr.qac.features import QacFeaturizer
from xmr.qac.mpc import MAX_CHAR, MostPopularCompletion, casefold_prefix
from xmr.qac.rank import NO_CANDIDATES, NO_PRIOR, popularity_factors, rank
from xmr.validation import InputError

__all__ = ["CompletionModel", "FORMAT", "VERSION", "normalize_label", "sample_prefix_lengths"]

LOGGER = logging.getLogger(__name__)

FORMAT = "xmr.qac"
VERSION = 1
MANIFEST = "qac.json"
# chosen on a validation split carved from the AOL training period (the last two weeks of April), with the
# prefix-constrained beam and the hybrid tree (experiments/qac_eval.py protocol, 85,429 requests): MRR@10 gain over
# MPC on requests with a previous query +12.1% / +12.2% / +11.5% at exponent 1 / 2 / 3 (1-3 characters: +33.0% /
# +32.5% / +30.4%); previous_weight 3 instead of 2: +0.2 points. Earlier (one prefix per pair, post-filtered
# beam): exponent 6 was worse than 2, and 300 candidates or beam 30 instead of 100 / 10 changed MRR@10 by < 0.0006
DEFAULT_POPULARITY = 2.0
# co-user prior exponent and floor (score x (CO_FLOOR + prior) ** weight), chosen on the same validation split with
# the hybrid tree; MRR@10 gain over MPC on requests with a previous query (1-3 characters): no prior +12.2% (+32.5%);
# exponent 1.5 / 3 / 5: +21.0% / +21.3% / +21.0% (+51.6% / +52.7% / +52.1%); floor 1e-3 instead of 1e-5 at
# exponent 1: +14.8% vs +16.1%; 300 prior candidates instead of 100 and 200 users per query instead of 50 moved
# it by < 0.2 points. A prototype additive mix (model / max + a x prior / max) peaked at +18.2%
DEFAULT_CO_USER_WEIGHT = 3.0
CO_FLOOR = 1e-5
SHORT = 3  # the first prefix of every pair is at most this long


def normalize_label(query: str) -> str:
    """The label form of a query: case-folded, whitespace collapsed, stripped ("" for blank text)."""
    return casefold_prefix(query).rstrip()


def sample_prefix_lengths(n: int, k: int, rng: np.random.Generator) -> list[int]:
    """Up to ``k`` distinct prefix lengths of a query of ``n`` characters: one of 1..3, the rest uniform 1..n."""
    out = [int(rng.integers(1, min(SHORT, n) + 1))]
    for _ in range(k - 1):
        out.append(int(rng.integers(1, n + 1)))
    return sorted(set(out))


def _check_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{name} must be a str, got {type(value).__name__}")
    return value


def _check_exponent(g: Any, name: str = "popularity") -> float:
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= g < 100:
        raise InputError(f"{name} must be a number in [0, 100), got {g!r}")
    return float(g)


def _check_k(k: Any, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"{name} must be a positive int, got {k!r}")
    return int(k)


class CompletionModel:
    """Previous query + typed prefix -> ranked full-query completions that start with the prefix."""

    def __init__(self, features: QacFeaturizer, model: XLinearModel, labels: Sequence[str],
                 mpc: MostPopularCompletion, candidates: int = 100, popularity: float = DEFAULT_POPULARITY,
                 meta: dict[str, Any] | None = None, co_users: CoUserPrior | None = None,
                 co_user_weight: float = DEFAULT_CO_USER_WEIGHT) -> None:
        """Assemble trained parts; ``labels[i]`` names label id ``i`` of ``model``."""
        if model.nr_features != features.nr_features:
            raise InputError(f"model has {model.nr_features} features but the featurizer gives "
                             f"{features.nr_features}")
        if model.nr_labels != len(labels):
            raise InputError(f"model has {model.nr_labels} labels but {len(labels)} label names were given")
        self.features = features
        self.model = model
        self.labels = list(labels)
        self.mpc = mpc
        if list(mpc.queries) != self.labels:
            raise InputError("the MPC table must hold exactly the labels (same sorted list)")
        self.candidates = _check_k(candidates, "candidates")
        self.popularity = _check_exponent(popularity)
        if co_users is not None and co_users.nr_labels != len(labels):
            raise InputError(f"the co-user prior has {co_users.nr_labels} labels, the model {len(labels)}")
        self.co_users = co_users
        self.co_user_weight = _check_exponent(co_user_weight, "co_user_weight")
        self.meta: dict[str, Any] = dict(meta or {})
        self._no_features = (np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32))
        self._pop_factors: dict[float, np.ndarray] = {}

    @property
    def nr_labels(self) -> int:
        """Number of known completions (distinct training next-queries)."""
        return len(self.labels)

    def __repr__(self) -> str:
        return f"CompletionModel(nr_labels={self.nr_labels}, nr_features={self.features.nr_features})"

    # ------------------------------------------------------------------------------------------- training
    @staticmethod
    def label_names(pairs: Sequence[tuple[str, str]]) -> list[str]:
        """The sorted distinct normalised next queries of ``pairs``: label id order (build trees over this)."""
        return sorted({normalize_label(q) for _, q in pairs} - {""})

    @classmethod
    def train(
        cls,
        pairs: Sequence[tuple[str, str]],
        *,
        prefixes_per_pair: int = 3,
        seed: int = 0,
        index: str | LabelTree | Callable[[list[str]], LabelTree] = "kmeans",
        trie_depth: int | None = None,
        max_leaf_size: int = 100,
        candidates: int = 100,
        popularity: float = DEFAULT_POPULARITY,
        prefix_weight: float = 1.0,
        previous_weight: float = 2.0,
        users: Sequence[str] | None = None,
        co_user_weight: float = DEFAULT_CO_USER_WEIGHT,
        threads: int = -1,
        progress: bool = False,
        **xlinear_kwargs: Any,
    ) -> CompletionModel:
        """Train on (previous_query, next_query) pairs ("" previous = first query of a session).

        ``index``: "kmeans" -> hierarchical k-means on [PIFA, label text features] (``XLinearModel.train``; pass
        ``alpha=`` for the convex mix instead); "trie" -> a prefix trie over the labels (``trie_depth`` levels at
        most, default 5); "hybrid" -> trie levels on top (``trie_depth``, default 2) and balanced k-means below on
        the labels' prefix-block features; a LabelTree over the label ids (:meth:`label_names` order); or a
        callable building one from the label names. Leaves hold at most ``max_leaf_size`` labels where the tree
        kind allows. ``xlinear_kwargs`` go to ``XLinearModel.train`` (with the other trees only
        ``train_params``, ``nr_splits`` (hybrid), ``beam_size`` and ``topk`` apply). ``users``: who typed each
        pair's next query (same length as ``pairs``, e.g. AOL's AnonID); with it the model gets the co-user prior
        (``xmr.qac.cousers``) at exponent ``co_user_weight``.
        """
        t_all = time.perf_counter()
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
            raise InputError("pairs must be a sequence of (previous_query, next_query) tuples")
        k = _check_k(prefixes_per_pair, "prefixes_per_pair")
        if users is not None and (isinstance(users, (str, bytes)) or not isinstance(users, Sequence)
                                  or len(users) != len(pairs)):
            raise InputError(f"users must be a sequence of one user per pair ({len(pairs)}), got "
                             f"{type(users).__name__}" + (f" of {len(users)}" if isinstance(users, Sequence) else ""))
        clean: list[tuple[str, str]] = []
        typed_by: list[str] = []
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InputError(f"pairs[{i}] must be a (previous_query, next_query) pair, got {pair!r}")
            prev, nxt = pair
            if not isinstance(prev, str) or not isinstance(nxt, str):
                raise InputError(f"pairs[{i}] must hold two strings, got {pair!r}")
            q = normalize_label(nxt)
            if q:  # a blank next query is nothing to complete to
                clean.append((normalize_label(prev), q))
                if users is not None:
                    typed_by.append(str(users[i]))
        if not clean:
            raise InputError("no training pair has a non-empty next query")
        labels, prevs, prefixes, rows = cls.instances(clean, k, seed)
        n_inst = len(rows)
        LOGGER.info("qac: %d pairs -> %d instances, %d labels", len(clean), n_inst, len(labels))

        t0 = time.perf_counter()
        feats = QacFeaturizer.fit(prefixes, prevs, prefix_weight=prefix_weight, previous_weight=previous_weight,
                                  progress=progress)
        X = feats.transform(prevs, prefixes, progress=progress)
        Y = sp.csr_matrix((np.ones(n_inst, dtype=np.float32), np.array(rows, dtype=np.int32),
                           np.arange(n_inst + 1, dtype=np.int64)), shape=(n_inst, len(labels)))
        featurize_s = time.perf_counter() - t0

        t0 = time.perf_counter()

        def label_text() -> sp.csr_matrix:
            # label text through the prefix block (no end marker: a label looks like its longest prefix); only
            # the k-means and hybrid trees cluster on it
            return feats.transform([""] * len(labels), labels)

        kind = index if isinstance(index, str) else "given"
        if kind == "kmeans":
            model = XLinearModel.train(X, Y, label_features=label_text(), threads=threads, progress=progress,
                                       allow_empty_rows=True, max_leaf_size=max_leaf_size, **xlinear_kwargs)
        else:
            tree = cls._build_tree(index, labels, label_text, trie_depth, max_leaf_size, seed,
                                   xlinear_kwargs.pop("nr_splits", 16))
            model = cls._train_on_tree(X, Y, tree, threads, progress, xlinear_kwargs)
        LOGGER.info("qac: %s tree, level sizes %s", kind, model.tree.level_sizes)
        train_s = time.perf_counter() - t0
        mpc = MostPopularCompletion(Counter(q for _, q in clean))
        co_users = None
        if users is not None:
            label_id = {q: i for i, q in enumerate(labels)}
            co_users = CoUserPrior.fit(typed_by, [label_id[q] for _, q in clean], labels)
            LOGGER.info("qac: co-user prior over %d users", co_users.nr_users)
        meta = {"nr_pairs": len(clean), "nr_instances": n_inst, "prefixes_per_pair": k, "seed": seed,
                "index": kind, "level_sizes": list(model.tree.level_sizes),
                "times": {"featurize_s": round(featurize_s, 3), "xlinear_s": round(train_s, 3),
                          "total_s": round(time.perf_counter() - t_all, 3)}}
        return cls(feats, model, labels, mpc, candidates=candidates, popularity=popularity, meta=meta,
                   co_users=co_users, co_user_weight=co_user_weight)

    @staticmethod
    def instances(pairs: Sequence[tuple[str, str]], prefixes_per_pair: int, seed: int
                  ) -> tuple[list[str], list[str], list[str], list[int]]:
        """Training instances of normalised non-blank pairs: (labels, previous queries, prefixes, label ids)."""
        labels = sorted({q for _, q in pairs})
        label_id = {q: i for i, q in enumerate(labels)}
        rng = np.random.default_rng(seed)
        prevs: list[str] = []
        prefixes: list[str] = []
        rows: list[int] = []
        for prev, q in pairs:
            for n in sample_prefix_lengths(len(q), prefixes_per_pair, rng):
                prevs.append(prev)
                prefixes.append(q[:n])
                rows.append(label_id[q])
        return labels, prevs, prefixes, rows

    @staticmethod
    def _build_tree(index: Any, labels: list[str], label_text: Callable[[], sp.csr_matrix], trie_depth: int | None,
                    max_leaf_size: int, seed: int, nr_splits: int) -> LabelTree:
        from indexing.hybrid import hybrid_tree
        from indexing.trie import TrieError, trie_tree

        try:
            if index == "trie":
                return trie_tree(labels, max_depth=trie_depth or 5, max_leaf_size=max_leaf_size)
            if index == "hybrid":
                return hybrid_tree(labels, label_text(), trie_depth=trie_depth or 2, nr_splits=nr_splits,
                                   max_leaf_size=max_leaf_size, seed=seed)
        except TrieError as e:
            raise InputError(str(e)) from None
        if isinstance(index, str):
            raise InputError(f"index must be 'kmeans', 'trie', 'hybrid', a LabelTree or a callable, got {index!r}")
        return index(labels) if callable(index) and not isinstance(index, LabelTree) else index

    @staticmethod
    def _train_on_tree(X: sp.csr_matrix, Y: sp.csr_matrix, tree: LabelTree, threads: int, progress: bool,
                       kwargs: dict[str, Any]) -> XLinearModel:
        import dataclasses

        from xmr.train import TrainParams, train_levels

        if not isinstance(tree, LabelTree):
            raise InputError(f"tree must be a LabelTree, a callable returning one, or None; got {type(tree).__name__}")
        if tree.nr_labels != Y.shape[1]:
            raise InputError(f"tree has {tree.nr_labels} labels but the pairs have {Y.shape[1]} distinct next "
                             "queries (build it over CompletionModel.label_names(pairs))")
        unknown = set(kwargs) - {"train_params", "beam_size", "topk"}
        if unknown:
            raise InputError(f"with a given tree these options do not apply: {sorted(unknown)}")
        params = kwargs.get("train_params") or TrainParams()
        if threads != -1 and params.threads == -1:
            params = dataclasses.replace(params, threads=threads)
        weights = train_levels(X, Y, tree, params, progress=progress)
        return XLinearModel(tree, weights, bias=params.bias, beam_size=kwargs.get("beam_size", 10),
                            topk=kwargs.get("topk", 10), meta={"indexing": "given tree"})

    # ----------------------------------------------------------------------------------------- completion
    def complete(self, previous: str, prefix: str, k: int = 10, beam_size: int | None = None,
                 popularity: float | None = None, constrained: bool = True,
                 co_user_weight: float | None = None) -> list[tuple[str, float]]:
        """Up to k (completion, score) starting with ``prefix`` (case-insensitive), best first.

        Candidates: the model's top ``candidates`` labels among those that start with the prefix (a beam search
        restricted to the subtrees holding such labels, not a filter of an unrestricted one), plus MPC's top k for the
        prefix; none from the model when ``previous`` is blank (a session's first query: MPC alone). Ranking: see
        :meth:`rank_candidates` (``popularity`` and ``co_user_weight`` override the model's exponents).
        ``constrained=False`` searches the whole tree and filters afterwards, as PECOS does (for comparison).
        """
        return self._named(*self.complete_ids(previous, prefix, k, beam_size, popularity, constrained, co_user_weight))

    def complete_ids(self, previous: str, prefix: str, k: int = 10, beam_size: int | None = None,
                     popularity: float | None = None, constrained: bool = True,
                     co_user_weight: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`complete` before naming the completions: (label ids, scores), best first (what a server turns
        into prepared wire bytes without building strings)."""
        _check_str(previous, "previous")
        k = _check_k(k)
        if beam_size is not None:
            _check_k(beam_size, "beam_size")
        lo, hi = self.prefix_range(prefix)
        if hi == lo:
            return NO_CANDIDATES
        ids = scores = None
        # a session's first query has only the prefix to go on, and for that the training counts (MPC) rank
        # best: the model given the prefix alone was 0.7-2.8% worse in MRR@10 on the AOL validation split
        idx, val = self.features.transform_one(previous, prefix) if previous.strip() else self._no_features
        if idx.size:
            if constrained:  # the beam enters only nodes holding a completion of the prefix
                ids, scores = self.model.predict_one_sparse(idx, val, beam_size=beam_size, label_range=(lo, hi),
                                                            topk=max(self.candidates, k))
            else:
                ids, scores = self.model.predict_one_sparse(idx, val, beam_size=beam_size,
                                                            topk=min(max(self.candidates, k), self.nr_labels))
                keep = (ids >= lo) & (ids < hi)
                ids, scores = ids[keep], scores[keep]
        return self._rank(lo, hi, ids, scores, k, popularity, previous, co_user_weight)

    def prefix_range(self, prefix: str) -> tuple[int, int]:
        """Label ids ``[lo, hi)`` of the completions of ``prefix`` (labels are sorted, so they are one run)."""
        p = casefold_prefix(_check_str(prefix, "prefix"))
        lo = bisect.bisect_left(self.labels, p)
        return lo, bisect.bisect_left(self.labels, p + MAX_CHAR, lo)

    def rank_candidates(self, prefix: str, ids: np.ndarray | None, scores: np.ndarray | None, k: int,
                        popularity: float | None = None, previous: str = "",
                        co_user_weight: float | None = None) -> list[tuple[str, float]]:
        """Merge a model's candidates (label ids within :meth:`prefix_range`, scores best first) with MPC's and the
        co-user prior's, and rank them; the last step of :meth:`complete`.

        Candidates: the model's, MPC's top k for the prefix, and (non-blank ``previous``, a model with a co-user
        prior) the prior's top ``candidates``. A candidate the model did not return gets just under the lowest
        score it did (an upper bound of its own score), in MPC order, then prior order. Score = model score x
        (1 + training count) ** ``popularity`` x (CO_FLOOR + prior) ** ``co_user_weight`` (defaults: the model's
        settings; 0 turns a factor off: with both 0 the model's order is kept and the others only fill the list).
        The merge runs in one numba kernel (:mod:`xmr.qac.rank`).
        """
        return self._named(*self._rank(*self.prefix_range(prefix), ids, scores, k, popularity, previous,
                                       co_user_weight))

    def _named(self, ids: np.ndarray, scores: np.ndarray) -> list[tuple[str, float]]:
        return [(self.labels[i], s) for i, s in zip(ids.tolist(), scores.tolist())]

    def _rank(self, lo: int, hi: int, ids: np.ndarray | None, scores: np.ndarray | None, k: int,
              popularity: float | None, previous: str, co_user_weight: float | None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`rank_candidates` for the prefix's label run ``[lo, hi)``, as (label ids, scores)."""
        gamma = self.popularity if popularity is None else _check_exponent(popularity)
        delta = self.co_user_weight if co_user_weight is None else _check_exponent(co_user_weight, "co_user_weight")
        if scores is None or not scores.size:
            ids, scores = NO_CANDIDATES
        co_ids, co = NO_PRIOR
        if delta and self.co_users is not None and previous.strip():
            prev = normalize_label(previous)
            j = bisect.bisect_left(self.labels, prev)
            co_ids, co = self.co_users.scores(prev, j if j < len(self.labels) and self.labels[j] == prev else None,
                                              lo, hi)
        # the MPC table and the labels are the same sorted list
        return rank(ids, scores, self.mpc.top(lo, hi, k), co_ids, co, self.candidates, CO_FLOOR, delta,
                    self._popularity_factors(gamma), k)

    def _popularity_factors(self, gamma: float) -> np.ndarray:
        """(1 + count) ** gamma per label, kept for the last few exponents asked for (a table is 8 bytes a label)."""
        got = self._pop_factors.get(gamma)
        if got is None:
            if len(self._pop_factors) >= 4:  # exponents come from requests too: bound the memory
                self._pop_factors.clear()
            got = self._pop_factors[gamma] = popularity_factors(self.mpc.counts, gamma)
        return got

    # ---------------------------------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Save atomically to directory ``path`` (replacing a saved CompletionModel there, nothing else)."""
        from xmr import __version__
        from xmr.model_io import json_default, save_model, write_dir_atomically

        try:
            meta = json.loads(json.dumps(self.meta, default=json_default))
        except TypeError as e:
            raise InputError(f"completion model meta: {e}") from None
        manifest = {"format": FORMAT, "version": VERSION, "created_by": f"xmr {__version__}",
                    "nr_labels": self.nr_labels, "nr_features": self.features.nr_features,
                    "candidates": self.candidates, "popularity": self.popularity,
                    "co_users": self.co_users is not None, "co_user_weight": self.co_user_weight,
                    "prefix_weight": self.features.prefix_weight, "previous_weight": self.features.previous_weight,
                    "meta": meta}

        def fill(tmp: Path) -> None:
            (tmp / "features").mkdir()
            self.features.save(tmp / "features")
            save_model(self.model, tmp / "model")
            (tmp / "mpc").mkdir()
            self.mpc.save(tmp / "mpc")
            if self.co_users is not None:
                (tmp / "cousers").mkdir()
                self.co_users.save(tmp / "cousers")
            (tmp / "labels.json").write_text(json.dumps(self.labels, ensure_ascii=False), encoding="utf-8")
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")

        return write_dir_atomically(path, fill, lambda d: (d / MANIFEST).is_file(), "xmr qac model")

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, warm: bool = True) -> CompletionModel:
        """Load and validate a saved model (ModelFormatError naming the file on any problem)."""
        from xmr.model_io import load_model

        root = Path(path)
        mpath = root / MANIFEST
        if not root.is_dir():
            raise ModelFormatError(f"{root}: not a directory (expected a saved xmr qac model)")
        m = read_json_object(mpath)
        if m.get("format") != FORMAT or m.get("version") != VERSION:
            raise ModelFormatError(f"{mpath}: not an {FORMAT} v{VERSION} manifest")
        try:
            feats = QacFeaturizer.load(root / "features", m.get("prefix_weight", 1.0), m.get("previous_weight", 1.0))
        except InputError as e:
            raise ModelFormatError(f"{mpath}: {e}") from None
        model = load_model(root / "model", mmap=mmap)
        mpc = MostPopularCompletion.load(root / "mpc")
        co_users = None
        if m.get("co_users", False):  # models saved before the prior have no such key
            co_users = CoUserPrior.load(root / "cousers", model.nr_labels)
        lpath = root / "labels.json"
        try:
            labels = json.loads(lpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFormatError(f"{lpath}: cannot read the labels ({e})") from None
        if not isinstance(labels, list) or not all(isinstance(q, str) and q for q in labels):
            raise ModelFormatError(f"{lpath}: expected a JSON list of non-empty strings")
        if labels != sorted(set(labels)):
            raise ModelFormatError(f"{lpath}: labels must be distinct and sorted")
        if len(labels) != m.get("nr_labels"):
            raise ModelFormatError(f"{mpath}: nr_labels is {m.get('nr_labels')!r} but {lpath} holds {len(labels)}")
        try:
            out = cls(feats, model, labels, mpc, candidates=m.get("candidates", 100),
                      popularity=m.get("popularity", 0.0), meta=m.get("meta"), co_users=co_users,
                      co_user_weight=m.get("co_user_weight", DEFAULT_CO_USER_WEIGHT))
        except InputError as e:
            raise ModelFormatError(f"{root}: inconsistent qac model ({e})") from None
        return out.warm() if warm else out

    def warm(self) -> CompletionModel:
        """Build the search layouts (the prefix-constraint one included) and run every kernel once; returns self."""
        self.model.warm()
        self.model.index.label_ranges()
        self.complete("warm up", "w")
        return self
