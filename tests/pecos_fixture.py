"""Writes model directories in libpecos's documented XLinearModel format, using only numpy and scipy.

Independent of ``xmr.pecos_io`` on purpose (it follows xr-linear-reference.md section 4, and writes npz files with
``scipy.sparse.save_npz`` rather than the exporter's own writer), so import tests are not circular::

    DIR/param.json                    {"__meta__": {"class_fullname": "pecos.xmc.xlinear.model###XLinearModel"}}
    DIR/ranker/param.json             {"model": "HierarchicalMLModel", "depth": D, ...}
    DIR/ranker/{t}.model/param.json   {"model": "MLModel", "bias": b, "pred_kwargs": {"only_topk": k, ...}, ...}
    DIR/ranker/{t}.model/W.npz        (d+1) x K_t CSC float32 (d x K_t when bias <= 0)
    DIR/ranker/{t}.model/C.npz        K_t x K_{t-1} CSC of ones (layer 0: K_0 x 1)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from indexing.tree import LabelTree


def random_tree(rng: np.random.Generator, level_sizes: list[int], nr_labels: int) -> LabelTree:
    """A random LabelTree with the given internal level sizes over ``nr_labels`` (labels interleaved)."""
    parents = [np.zeros(level_sizes[0], dtype=np.int32)] if level_sizes else []
    sizes = list(level_sizes) + [nr_labels]
    for t in range(1, len(sizes)):
        above, n = sizes[t - 1], sizes[t]
        p = np.concatenate([np.arange(above), rng.integers(0, above, n - above)]).astype(np.int32)
        if t < len(sizes) - 1:
            p.sort()  # siblings contiguous above the bottom level
        else:
            rng.shuffle(p)  # labels may interleave
        parents.append(p)
    if not level_sizes:
        parents = [np.zeros(nr_labels, dtype=np.int32)]
    return LabelTree(parents)


def random_weights(
    rng: np.random.Generator, tree: LabelTree, nr_features: int, bias: float, density: float = 0.3
) -> list[sp.csc_matrix]:
    """Random sparse float32 CSC weights following the weights convention (bias row d when bias > 0)."""
    rows = nr_features + 1 if bias > 0 else nr_features
    out = []
    for K in tree.level_sizes:
        W = sp.random(rows, K, density=density, format="csc", dtype=np.float64, random_state=rng)
        W.data = (W.data * 2 - 1).astype(np.float64)
        W = sp.csc_matrix(W, dtype=np.float32)
        W.eliminate_zeros()
        W.sort_indices()
        out.append(W)
    return out


def scramble_chain(
    rng: np.random.Generator, tree: LabelTree, weights: list[sp.csc_matrix]
) -> tuple[list[sp.csc_matrix], list[sp.csc_matrix]]:
    """The tree as a PECOS chain whose internal nodes are randomly renumbered (siblings non-contiguous).

    Returns ``(chain, weights)`` with weight columns permuted to the scrambled numbering; the labels (bottom
    level) keep their ids, so predictions are unchanged.
    """
    depth = tree.depth
    new_of_old = [rng.permutation(K) if t < depth - 1 else np.arange(K) for t, K in enumerate(tree.level_sizes)]
    chain, out_w = [], []
    above_map = np.zeros(1, dtype=np.int64)
    for t in range(depth):
        K = tree.level_sizes[t]
        p_old = tree.parents(t).astype(np.int64)
        rows = new_of_old[t]
        cols = above_map[p_old]
        C = sp.csc_matrix((np.ones(K, dtype=np.float32), (rows, cols)), shape=(K, above_map.size))
        C.sort_indices()
        chain.append(C)
        old_of_new = np.argsort(new_of_old[t])
        W = sp.csc_matrix(weights[t][:, old_of_new])
        W.sort_indices()
        out_w.append(W)
        above_map = new_of_old[t]
    return chain, out_w


def write_pecos_model(
    path: str | Path,
    chain: list[sp.spmatrix],
    weights: list[sp.spmatrix],
    bias: float = 1.0,
    beam_size: int = 10,
    topk: int = 20,
    post_processor: str = "l3-hinge",
    omit_c0: bool = False,
    with_meta: bool = True,
    compressed: bool = False,
    w_format: str = "csc",
    is_mmap: bool = False,
) -> Path:
    """Write a libpecos XLinearModel directory from a cluster chain and per-level weights (chain numbering)."""
    path = Path(path)
    ranker = path / "ranker"
    ranker.mkdir(parents=True, exist_ok=True)
    depth = len(chain)

    def meta(name: str) -> dict:
        return {"__meta__": {"class_fullname": name}} if with_meta else {}

    top = meta("pecos.xmc.xlinear.model###XLinearModel")
    (path / "param.json").write_text(json.dumps(top, indent=True))
    d = weights[0].shape[0] - (1 if bias > 0 else 0)
    rparam = {
        **meta("pecos.xmc.base###HierarchicalMLModel"),
        "model": "HierarchicalMLModel",
        "depth": depth,
        "nr_features": d,
        "nr_codes": chain[-1].shape[1],
        "nr_labels": chain[-1].shape[0],
    }
    if is_mmap:  # libpecos's compile_mmap_model marks the ranker this way (and writes *.mmap_store files)
        rparam["is_mmap"] = True
    (ranker / "param.json").write_text(json.dumps(rparam, indent=True))
    for t in range(depth):
        layer = ranker / f"{t}.model"
        layer.mkdir(exist_ok=True)
        lparam = {
            **meta("pecos.xmc.base###MLModel"),
            "model": "MLModel",
            "nr_labels": chain[t].shape[0],
            "nr_features": d,
            "nr_codes": chain[t].shape[1],
            "bias": bias,
            "pred_kwargs": {
                **meta("pecos.xmc.base###MLModel.PredParams"),
                "only_topk": beam_size if t < depth - 1 else topk,
                "post_processor": post_processor,
            },
        }
        (layer / "param.json").write_text(json.dumps(lparam, indent=True))
        W = sp.csc_matrix(weights[t], dtype=np.float32) if w_format == "csc" else sp.csr_matrix(weights[t],
                                                                                                dtype=np.float32)
        sp.save_npz(layer / "W.npz", W, compressed=compressed)
        if not (omit_c0 and t == 0):
            sp.save_npz(layer / "C.npz", sp.csc_matrix(chain[t], dtype=np.float32), compressed=compressed)
    return path
