"""A retriever split by top-level subtrees into a router and S shards that together answer exactly as it does.

Beam search over levels 0..D-2 needs only the featurizer and those levels' weights (every level above the
labels); the label level, which holds all the label names and metadata and, with several rows per label, most of
the weights (with few, the upper levels can hold more: see experiments/results/scale_out.md), is cut along the
top-level subtrees. The **router** featurizes a query and runs the upper levels,
leaving a beam of level D-2 nodes; each node belongs to one shard (the one holding its top-level subtree). Each
**shard** continues the search from its part of that beam (``BeamSearchIndex.continue_one_sparse``: the same
arithmetic, so bit-identical scores) and returns its top k; the router merges them. One round trip, and the
merged top k is exactly the unsplit one: the last level's candidates are the children of the beam, partitioned
among the shards, so the global top k is within the union of the per-shard top k. Ties keep the unsplit order
(earlier beam parent first, then child order), because each shard reports the beam rank of every hit's parent.

Top-level subtrees go to shards by label count, largest first to the least loaded shard. A retriever with a
rerank stage cannot be split yet (its candidates would have to be merged before reranking).

On disk: ``OUT/router`` (``xmr-router.json``, ``featurizer/``, ``model/`` = the upper levels, ``owner.npy`` = the
shard of each of its bottom nodes) and ``OUT/shard-<i>`` (``xmr-shard.json``, ``model/`` = a two-level model of
its level D-2 nodes and its labels, ``parents.npy`` and ``label_ids.npy`` = their ids in the whole model,
``labels/``). Every part carries the retriever's model version; a router refuses shards of another version.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from indexing.tree import LabelTree
from xmr.labels import LabelSet
from xmr.model import XLinearModel
from xmr.validation import InputError

ROUTER_MANIFEST = "xmr-router.json"
SHARD_MANIFEST = "xmr-shard.json"
FORMAT_VERSION = 1


def assign_subtrees(tree: LabelTree, shards: int) -> np.ndarray:
    """Shard of each top-level node: subtrees by label count, largest first, each to the least loaded shard."""
    if tree.depth < 2:
        raise InputError("a one-level model (no tree above the labels) cannot be split by subtrees")
    top = tree.level_sizes[0]
    if not 1 <= shards <= top:
        raise InputError(f"shards must be in 1..{top} (the number of top-level subtrees), got {shards}")
    labels_under = np.ones(tree.nr_labels, dtype=np.int64)
    for t in range(tree.depth - 1, 0, -1):
        labels_under = np.bincount(tree.parents(t), weights=labels_under, minlength=tree.level_sizes[t - 1])
    owner = np.empty(top, dtype=np.int32)
    load = np.zeros(shards, dtype=np.int64)
    for node in np.argsort(-labels_under, kind="stable"):
        s = int(np.argmin(load))
        owner[node] = s
        load[s] += int(labels_under[node])
    return owner


def _owner_of_level(tree: LabelTree, top_owner: np.ndarray, level: int) -> np.ndarray:
    """Shard of each node of ``level`` (that of its top-level ancestor)."""
    owner = top_owner
    for t in range(1, level + 1):
        owner = owner[tree.parents(t)]
    return owner


def _manifest(path: Path, fmt: str) -> dict[str, Any]:
    from xmr.model_io import ModelFormatError, read_json_object

    if not path.is_file():
        raise ModelFormatError(f"{path.parent} is not an xmr {fmt[4:]} directory (no {path.name} in it)")
    m = read_json_object(path)
    if m.get("format") != fmt:
        raise ModelFormatError(f"{path}: format is {m.get('format')!r}, expected {fmt!r}")
    if m.get("version") != FORMAT_VERSION:
        raise ModelFormatError(f"{path}: format version {m.get('version')!r}; this xmr reads version {FORMAT_VERSION}")
    return m


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
        f.write("\n")


def _load_ids(path: Path, n: int, bound: int, ascending: bool) -> np.ndarray:
    from xmr.model_io import ModelFormatError

    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"{path}: cannot read ({e})") from None
    if a.shape != (n,) or a.dtype.kind not in "iu" or (n and (a.min() < 0 or a.max() >= bound)):
        raise ModelFormatError(f"{path}: expected {n} ids in [0, {bound}), got {a.dtype}{list(a.shape)}")
    if ascending and (np.diff(a) <= 0).any():
        raise ModelFormatError(f"{path}: ids must be strictly ascending")
    return a.astype(np.int32)


@dataclass
class Router:
    """The featurizer and the levels above the labels of a split retriever, and which shard owns each beam node."""

    featurizer: Any
    upper: XLinearModel
    owner: np.ndarray  # int32: shard of each node of the upper model's bottom level
    model_version: str
    nr_labels: int
    nr_shards: int

    def route_one(self, text: str, beam_size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                          np.ndarray] | None:
        """(feature ids, feature values, beam node ids, beam scores) of one text, the beam best first, or None
        when the text has no known feature (the unsplit retriever's empty result)."""
        if not isinstance(text, str):
            raise InputError(f"text must be a str, got {type(text).__name__}")
        qi, qv = self.featurizer.transform_one(text)
        if qi.size == 0:
            return None
        beam = self.upper.beam_size if beam_size is None else beam_size
        ids, scores = self.upper.predict_one_sparse(qi, qv, beam_size=beam, topk=beam)
        return qi, qv, ids, scores

    def plan(self, beam_ids: np.ndarray) -> dict[int, np.ndarray]:
        """Which shards to ask: {shard: positions in the beam of its nodes}, in beam order."""
        owners = self.owner[beam_ids]
        return {int(s): np.flatnonzero(owners == s) for s in np.unique(owners)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the router directory atomically."""
        from xmr.model_io import save_model, write_dir_atomically

        def fill(tmp: Path) -> None:
            (tmp / "featurizer").mkdir()
            self.featurizer.save(tmp / "featurizer")
            save_model(self.upper, tmp / "model")
            np.save(tmp / "owner.npy", self.owner)
            _write_manifest(tmp / ROUTER_MANIFEST, {
                "format": "xmr-router", "version": FORMAT_VERSION, "model_version": self.model_version,
                "nr_labels": self.nr_labels, "nr_shards": self.nr_shards, "features": self.featurizer.spec})

        return write_dir_atomically(path, fill, lambda p: (p / ROUTER_MANIFEST).is_file(), "xmr router")

    @classmethod
    def load(cls, path: str | os.PathLike, warm: bool = True) -> Router:
        """Load and validate a router directory; ``warm`` builds its search index now, not on the first query."""
        from xmr.model_io import ModelFormatError, load_model
        from xmr.text.featurizer import TextFeaturizer

        root = Path(path)
        m = _manifest(root / ROUTER_MANIFEST, "xmr-router")
        featurizer = TextFeaturizer.load(root / "featurizer")
        upper = load_model(root / "model")
        shards = m.get("nr_shards")
        if not isinstance(shards, int) or shards < 1:
            raise ModelFormatError(f"{root / ROUTER_MANIFEST}: nr_shards must be a positive integer")
        owner = _load_ids(root / "owner.npy", upper.nr_labels, shards, ascending=False)
        if featurizer.nr_features != upper.nr_features:
            raise ModelFormatError(f"{root}: the featurizer makes {featurizer.nr_features} features, the model "
                                   f"expects {upper.nr_features}")
        if warm:
            upper.warm()
            featurizer.transform_one("warm up")
        return cls(featurizer, upper, owner, str(m["model_version"]), int(m["nr_labels"]), shards)


@dataclass
class Shard:
    """The label level under some top-level subtrees: a two-level model (their level D-2 nodes, their labels)."""

    model: XLinearModel
    parents: np.ndarray  # int32, ascending: ids in the whole model of this shard's level D-2 nodes
    label_ids: np.ndarray  # int32, ascending: ids in the whole model of this shard's labels (local order)
    labels: LabelSet
    model_version: str
    shard: int
    nr_shards: int

    def expand(self, qi: np.ndarray, qv: np.ndarray, parents: np.ndarray, parent_scores: np.ndarray, topk: int,
               beam_size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top ``topk`` labels under ``parents`` (this shard's part of the router's beam, in beam order):
        (this shard's label ids: ``label_ids[i]`` in the whole model, scores, index into ``parents`` of each
        hit's parent)."""
        parents = np.asarray(parents, dtype=np.int64)
        local = np.searchsorted(self.parents, parents)
        bad = (local >= self.parents.size) | (self.parents[np.minimum(local, self.parents.size - 1)] != parents)
        if parents.size and bad.any():
            raise InputError(f"node {int(parents[bad][0])} is not on shard {self.shard} of {self.nr_shards}")
        beam = parents.size if beam_size is None else beam_size
        ids, scores = self.model.index.continue_one_sparse(qi, qv, 1, local, parent_scores, beam, topk,
                                                           self.model.post_processor)
        rank = {p: i for i, p in enumerate(local.tolist())}
        parent_of = self.model.tree.parents(1)
        return ids, scores, np.array([rank[int(parent_of[j])] for j in ids.tolist()], dtype=np.int32)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the shard directory atomically."""
        from xmr.model_io import save_model, write_dir_atomically

        def fill(tmp: Path) -> None:
            save_model(self.model, tmp / "model")
            np.save(tmp / "parents.npy", self.parents)
            np.save(tmp / "label_ids.npy", self.label_ids)
            self.labels.save(tmp / "labels")
            _write_manifest(tmp / SHARD_MANIFEST, {
                "format": "xmr-shard", "version": FORMAT_VERSION, "model_version": self.model_version,
                "shard": self.shard, "nr_shards": self.nr_shards, "nr_labels": int(self.label_ids.size)})

        return write_dir_atomically(path, fill, lambda p: (p / SHARD_MANIFEST).is_file(), "xmr shard")

    @classmethod
    def load(cls, path: str | os.PathLike, warm: bool = True) -> Shard:
        """Load and validate a shard directory; ``warm`` builds its search index now, not on the first query."""
        from xmr.model_io import ModelFormatError, load_model

        root = Path(path)
        m = _manifest(root / SHARD_MANIFEST, "xmr-shard")
        model = load_model(root / "model")
        if model.depth != 2:
            raise ModelFormatError(f"{root / 'model'}: a shard's model has two levels, this one {model.depth}")
        parents = _load_ids(root / "parents.npy", model.tree.level_sizes[0], 2**31 - 1, ascending=True)
        label_ids = _load_ids(root / "label_ids.npy", model.nr_labels, 2**31 - 1, ascending=True)
        labels = LabelSet.load(root / "labels")
        if len(labels) != model.nr_labels:
            raise ModelFormatError(f"{root / 'labels'}: {len(labels)} labels, the model has {model.nr_labels}")
        shard, n = m.get("shard"), m.get("nr_shards")
        if not (isinstance(shard, int) and isinstance(n, int) and 0 <= shard < n):
            raise ModelFormatError(f"{root / SHARD_MANIFEST}: shard must be in 0..nr_shards-1")
        if warm:
            model.warm()
        return cls(model, parents, label_ids, labels, str(m["model_version"]), shard, n)


def split(retriever: Any, shards: int) -> tuple[Router, list[Shard]]:
    """Split a :class:`xmr.Retriever` into a router and ``shards`` shards (see the module docstring)."""
    if retriever.reranker is not None:
        raise InputError("this retriever has a rerank stage; splitting one into shards is not supported yet")
    model = retriever.model
    tree = model.tree
    top_owner = assign_subtrees(tree, shards)
    D = tree.depth
    upper_tree = LabelTree([tree.parents(t) for t in range(D - 1)])
    upper = XLinearModel(upper_tree, model.weights[: D - 1], model.bias, model.beam_size, model.beam_size,
                         model.post_processor)
    owner = _owner_of_level(tree, top_owner, D - 2)
    label_parent = tree.parents(D - 1)
    label_owner = owner[label_parent]
    W = model.weights[D - 1]
    version = retriever.model_version
    router = Router(retriever.featurizer, upper, owner, version, model.nr_labels, shards)
    parts = []
    for s in range(shards):
        parents = np.flatnonzero(owner == s).astype(np.int32)
        label_ids = np.flatnonzero(label_owner == s).astype(np.int32)
        local_parent = np.searchsorted(parents, label_parent[label_ids]).astype(np.int32)
        # local label ids ascend with the global ones, so each parent's children keep the unsplit order (the
        # bottom level's siblings need not be contiguous)
        sub_tree = LabelTree([np.zeros(parents.size, dtype=np.int32), local_parent])
        first = sp.csc_matrix((W.shape[0], parents.size), dtype=np.float32)  # never scored: searches start below
        sub = XLinearModel(sub_tree, [first, W[:, label_ids]], model.bias, model.beam_size, model.topk,
                           model.post_processor)
        names, metas = retriever.labels.hydrate(label_ids.tolist())
        parts.append(Shard(sub, parents, label_ids, LabelSet(names, metas if retriever.labels.has_metadata else None),
                           version, s, shards))
    return router, parts


def save_split(router: Router, parts: list[Shard], out: str | os.PathLike) -> list[Path]:
    """Write ``out/router`` and ``out/shard-<i>``; returns their paths."""
    out = Path(out)
    return [router.save(out / "router")] + [p.save(out / f"shard-{p.shard}") for p in parts]


def merge(answers: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]], k: int) -> list[tuple[int, float, int, int]]:
    """Top ``k`` of the shards' answers ``{shard: (label ids, scores, beam rank of each hit's parent)}`` as
    (label id, score, shard, position in its answer), in the unsplit search's order: score, then earlier beam
    parent, then the shard's own order (children of one parent)."""
    rows = [(-sc, rank, i, s, lab) for s, (labs, scores, ranks) in answers.items()
            for i, (lab, sc, rank) in enumerate(zip(labs.tolist(), scores.tolist(), ranks.tolist()))]
    rows.sort()
    return [(lab, -neg, s, i) for neg, _, i, s, lab in rows[:k]]


class SplitRetriever:
    """A router and its shards in one process: the reference the served router is tested against, and a way to
    check a split before deploying it."""

    def __init__(self, router: Router, shards: list[Shard]) -> None:
        """Pair a router with its shards (all of them, of its model version)."""
        by = {s.shard: s for s in shards}
        if sorted(by) != list(range(router.nr_shards)):
            raise InputError(f"the router needs shards 0..{router.nr_shards - 1}, got {sorted(by)}")
        for s in shards:
            if s.model_version != router.model_version:
                raise InputError(f"shard {s.shard} is of model version {s.model_version}, the router of "
                                 f"{router.model_version}")
        self.router, self.shards = router, by

    def rank_one(self, text: str, k: int = 10, beam_size: int | None = None) -> tuple[list[tuple[int, float]],
                                                                                   list[str]]:
        """(top-k (label id, score), names): what the unsplit retriever's ``rank_one`` gives."""
        routed = self.router.route_one(text, beam_size)
        if routed is None:
            return [], []
        qi, qv, beam_ids, beam_sc = routed
        beam = beam_ids.size if beam_size is None else beam_size
        answers, names = {}, {}
        for s, pos in self.router.plan(beam_ids).items():
            shard = self.shards[s]
            local, scores, ranks = shard.expand(qi, qv, beam_ids[pos], beam_sc[pos], k, beam)
            answers[s] = (shard.label_ids[local], scores, pos[ranks])
            names.update(zip(shard.label_ids[local].tolist(), shard.labels.names(local)))
        top = merge(answers, k)
        return [(lab, sc) for lab, sc, _, _ in top], [names[lab] for lab, _, _, _ in top]
