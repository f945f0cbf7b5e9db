"""Import and export of libpecos XLinearModel directories (the regular npz format, not the mmap one).

libpecos layout (xr-linear-reference.md section 4)::

    DIR/param.json                   {"__meta__": {"class_fullname": "pecos.xmc.xlinear.model###XLinearModel"}}
    DIR/ranker/param.json            {"model": "HierarchicalMLModel", "depth": D, "nr_features": d, ...}
    DIR/ranker/{t}.model/param.json  {"model": "MLModel", "bias": b,
                                      "pred_kwargs": {"only_topk": k_t, "post_processor": "l3-hinge"}, ...}
    DIR/ranker/{t}.model/W.npz       (d+1) x K_t CSC (bias weight in row d; d x K_t when bias <= 0)
    DIR/ranker/{t}.model/C.npz       K_t x K_{t-1} CSC of ones (layer 0: K_0 x 1, may be absent -> ones)

Import reads the npz archives with ``numpy.load(allow_pickle=False)`` and rebuilds the matrices itself (never
unpickling), converts the chain with :meth:`LabelTree.from_chain` (which renumbers internal nodes so siblings are
contiguous; weight columns are permuted to match) and takes ``bias``, ``post_processor``, ``beam_size`` (the
intermediate layers' ``only_topk``) and ``topk`` (the last layer's ``only_topk``) from the layer parameters.

Export writes what libpecos's loaders need: uncompressed npz (the C++ loader rejects compressed archives), CSC
with sorted row indices, the required keys, and ``__meta__`` entries as libpecos writes them; atomically.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from indexing.tree import LabelTree, LabelTreeError
from xmr.model import XLinearModel
from xmr.model_io import ModelFormatError, check_csc_arrays, write_dir_atomically
from xmr.validation import file_kind

__all__ = ["import_pecos", "export_pecos", "read_pecos_npz", "is_pecos_model_dir"]

LOGGER = logging.getLogger(__name__)

_META_XLINEAR = "pecos.xmc.xlinear.model###XLinearModel"
_META_HLM = "pecos.xmc.base###HierarchicalMLModel"
_META_ML = "pecos.xmc.base###MLModel"
_META_PRED = "pecos.xmc.base###MLModel.PredParams"
_NPZ_KEYS = ("data", "format", "indices", "indptr", "shape")


# ----------------------------------------------------------------------------------------------------- reading
def _read_json(path: Path, root: Path) -> dict[str, Any]:
    rel = path.relative_to(root) if path.is_relative_to(root) else path
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"{root}: missing {rel} (not a libpecos XLinearModel directory?)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{root}: {rel} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{root}: {rel} must hold a JSON object")
    if obj.get("is_mmap"):
        raise ModelFormatError(
            f"{root}: {rel} says is_mmap=true: this is a libpecos memory-mapped (compiled) model, which xmr cannot "
            "read; import the regular npz model directory it was compiled from instead"
        )
    return obj


def read_pecos_npz(path: Path, name: str) -> sp.csc_matrix:
    """A scipy ``save_npz`` CSC/CSR archive as canonical CSC float32 (sorted, no duplicates or stored zeros)."""
    if not path.is_file():
        raise ModelFormatError(f"{name}: file is missing")
    if file_kind(path) != "zip":
        raise ModelFormatError(f"{name}: not an npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ModelFormatError(f"{name}: expected an .npz archive, found a plain .npy array")
            if "format" not in npz.files:
                raise ModelFormatError(f"{name}: not a scipy sparse archive (no 'format' entry)")
            fmt = npz["format"]
            fmt = fmt.item() if fmt.shape == () else None
            if isinstance(fmt, str):
                fmt = fmt.encode()
            if fmt not in (b"csc", b"csr"):
                raise ModelFormatError(f"{name}: sparse format {fmt!r} is not supported (expected b'csc' or b'csr')")
            missing = [k for k in _NPZ_KEYS if k not in npz.files]
            if missing:
                raise ModelFormatError(f"{name}: not a scipy sparse archive (missing {', '.join(missing)})")
            arrays = {k: npz[k] for k in _NPZ_KEYS}
    except ModelFormatError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ModelFormatError(f"{name}: cannot read the npz archive ({type(e).__name__}: {e})") from None
    shape = arrays["shape"]
    if shape.shape != (2,) or not np.issubdtype(shape.dtype, np.integer) or (shape < 0).any():
        raise ModelFormatError(f"{name}: bad shape entry {shape!r}")
    nrows, ncols = int(shape[0]), int(shape[1])
    indptr, indices, data = arrays["indptr"], arrays["indices"], arrays["data"]
    for key, arr in (("indptr", indptr), ("indices", indices)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ModelFormatError(f"{name}: {key} must hold integers, got {arr.dtype}")
    if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        raise ModelFormatError(f"{name}: data must hold real numbers, got {data.dtype}")
    indptr, indices = indptr.astype(np.int64), indices.astype(np.int64)
    major = (nrows, ncols) if fmt == b"csc" else (ncols, nrows)  # (minor dim, major dim) for the checker
    # structure checks; unsorted indices are accepted (and sorted below) as PECOS's Python loader does
    check_csc_arrays(indptr, indices, data, major, name, full=False)
    if indices.size and (indices.min() < 0 or indices.max() >= major[0]):
        raise ModelFormatError(f"{name}: indices out of range [0, {major[0]})")
    if data.size and not np.isfinite(data).all():
        raise ModelFormatError(f"{name}: holds non-finite values (NaN or inf)")
    cls = sp.csc_matrix if fmt == b"csc" else sp.csr_matrix
    M = sp.csc_matrix(cls((data.astype(np.float32), indices, indptr), shape=(nrows, ncols)))
    M.sum_duplicates()
    M.eliminate_zeros()
    if M.nnz < 2**31 and max(M.shape) < 2**31:
        M = sp.csc_matrix((M.data, M.indices.astype(np.int32), M.indptr.astype(np.int32)), shape=M.shape)
    M.has_sorted_indices = True
    return M


def is_pecos_model_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` looks like a libpecos XLinearModel directory (has ranker/param.json)."""
    return (Path(path) / "ranker" / "param.json").is_file()


def _ranker_dir(root: Path) -> Path:
    if not root.is_dir():
        raise ModelFormatError(f"libpecos model directory {root} does not exist")
    if (root / "ranker").is_dir():
        top = root / "param.json"
        if top.is_file():
            meta = _read_json(top, root).get("__meta__", {})
            name = meta.get("class_fullname", "") if isinstance(meta, dict) else ""
            if name and "XLinearModel" not in name:
                raise ModelFormatError(f"{root}: param.json describes a {name!r}, not a libpecos XLinearModel")
        return root / "ranker"
    param = root / "param.json"
    if param.is_file() and _read_json(param, root).get("model") == "HierarchicalMLModel":
        return root  # the ranker folder itself was given
    if (root / "xmr-model.json").is_file():
        raise ModelFormatError(f"{root} is an xmr model, not a libpecos one (load it with XLinearModel.load)")
    raise ModelFormatError(f"{root} is not a libpecos XLinearModel directory (no ranker/param.json)")


def _layer_pred(lparam: dict, rel: str, root: Path) -> tuple[int, str]:
    pred = lparam.get("pred_kwargs")
    if not isinstance(pred, dict):
        raise ModelFormatError(f"{root}: {rel} lacks pred_kwargs")
    k, pp = pred.get("only_topk"), pred.get("post_processor")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ModelFormatError(f"{root}: {rel} pred_kwargs.only_topk must be a positive integer, got {k!r}")
    if pp is True:  # PECOS's backward-compatible spellings
        pp = "l3-hinge"
    elif pp in (False, None):
        pp = "noop"
    if not isinstance(pp, str):
        raise ModelFormatError(f"{root}: {rel} pred_kwargs.post_processor must be a string, got {pp!r}")
    return k, pp


def import_pecos(pecos_dir: str | os.PathLike) -> XLinearModel:
    """Read a libpecos XLinearModel directory (regular npz format) into an :class:`XLinearModel`."""
    root = Path(pecos_dir).absolute()
    ranker = _ranker_dir(root)
    rparam = _read_json(ranker / "param.json", root)
    if rparam.get("model") != "HierarchicalMLModel":
        raise ModelFormatError(f"{root}: ranker/param.json model is {rparam.get('model')!r}, "
                               "expected 'HierarchicalMLModel'")
    if any(ranker.rglob("*.mmap_store")):
        raise ModelFormatError(f"{root}: holds .mmap_store files: a libpecos memory-mapped model, which xmr cannot "
                               "read; import the regular npz model directory it was compiled from instead")
    depth = rparam.get("depth", len(list(ranker.glob("*.model"))))
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ModelFormatError(f"{root}: ranker/param.json depth must be a positive integer, got {depth!r}")
    weights, chain, biases, topks, pps = [], [], [], [], []
    for t in range(depth):
        rel = f"ranker/{t}.model"
        layer = ranker / f"{t}.model"
        if not layer.is_dir():
            raise ModelFormatError(f"{root}: missing layer folder {rel} (depth is {depth})")
        lparam = _read_json(layer / "param.json", root)
        if lparam.get("model", "MLModel") != "MLModel":
            raise ModelFormatError(f"{root}: {rel}/param.json model is {lparam.get('model')!r}, expected 'MLModel'")
        b = lparam.get("bias", 1.0)
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not np.isfinite(b):
            raise ModelFormatError(f"{root}: {rel}/param.json bias must be a finite number, got {b!r}")
        biases.append(float(b))
        k, pp = _layer_pred(lparam, f"{rel}/param.json", root)
        topks.append(k)
        pps.append(pp)
        W = read_pecos_npz(layer / "W.npz", f"{root}/{rel}/W.npz")
        if (layer / "C.npz").exists() or t > 0:
            C = read_pecos_npz(layer / "C.npz", f"{root}/{rel}/C.npz")
        else:
            C = sp.csc_matrix(np.ones((W.shape[1], 1), dtype=np.float32))
        if C.shape[0] != W.shape[1]:
            raise ModelFormatError(f"{root}: {rel}: C has {C.shape[0]} rows but W has {W.shape[1]} columns")
        weights.append(W)
        chain.append(C)
    if len(set(biases)) != 1:
        raise ModelFormatError(f"{root}: layers use different bias values {biases}; xmr needs one bias per model")
    bias = biases[0]
    rows = weights[0].shape[0]
    for t, W in enumerate(weights):
        if W.shape[0] != rows:
            raise ModelFormatError(f"{root}: ranker/{t}.model/W.npz has {W.shape[0]} rows, layer 0 has {rows}")
    d = rows - 1 if bias > 0 else rows
    nf = rparam.get("nr_features")
    if isinstance(nf, int) and nf != d:
        raise ModelFormatError(f"{root}: ranker/param.json says nr_features={nf} but W has {rows} rows with "
                               f"bias={bias} (expected {nf + 1 if bias > 0 else nf})")
    try:
        tree, perms = LabelTree.from_chain(chain)
    except LabelTreeError as e:
        raise ModelFormatError(f"{root}: invalid cluster chain (C.npz files): {e}") from None
    for t, perm in enumerate(perms):
        if not np.array_equal(perm, np.arange(perm.size)):
            W = weights[t][:, perm]
            W.sort_indices()
            weights[t] = sp.csc_matrix(W)
    if len(set(pps)) != 1:
        LOGGER.warning("layers use different post-processors %s; using the last layer's (%s)", pps, pps[-1])
    inner = topks[:-1]
    if inner and len(set(inner)) != 1:
        LOGGER.warning("intermediate layers use different beam sizes %s; using the largest", inner)
    beam_size = max(inner) if inner else 10
    meta = {
        "imported_from": {"format": "libpecos", "path": str(root), "only_topk": topks, "post_processors": pps,
                          "renumbered_levels": [t for t, p in enumerate(perms) if not np.array_equal(p, np.arange(p.size))]},
    }
    try:
        return XLinearModel(tree, weights, bias=bias, beam_size=beam_size, topk=topks[-1], post_processor=pps[-1],
                            meta=meta)
    except ValueError as e:
        raise ModelFormatError(f"{root}: inconsistent libpecos model ({e})") from None


# ----------------------------------------------------------------------------------------------------- writing
def _write_npz(path: Path, M: sp.csc_matrix) -> None:
    """Uncompressed scipy-compatible CSC archive with exactly the keys scipy.sparse.save_npz writes."""
    M = sp.csc_matrix(M, dtype=np.float32)
    if not M.has_sorted_indices:
        M = M.copy()
        M.sort_indices()
    idx = np.int32 if max(M.nnz, *M.shape) < 2**31 else np.int64
    with open(path, "wb") as f:
        np.savez(
            f,
            indices=np.asarray(M.indices, dtype=idx),
            indptr=np.asarray(M.indptr, dtype=idx),
            format=np.array(b"csc"),
            shape=np.array(M.shape, dtype=np.int64),
            data=np.asarray(M.data, dtype=np.float32),
        )


def _dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=True), encoding="utf-8")


def export_pecos(model: XLinearModel, pecos_dir: str | os.PathLike) -> Path:
    """Write ``model`` as a libpecos XLinearModel directory (loadable by ``XLinearModel.load`` there), atomically."""
    tree, weights = model.tree, model.weights
    depth, sizes, d = tree.depth, tree.level_sizes, model.nr_features
    chain = tree.to_chain()

    def fill(tmp: Path) -> None:
        _dump(tmp / "param.json", {"__meta__": {"class_fullname": _META_XLINEAR}})
        ranker = tmp / "ranker"
        _dump(ranker / "param.json", {
            "__meta__": {"class_fullname": _META_HLM},
            "model": "HierarchicalMLModel",
            "depth": depth,
            "nr_features": d,
            "nr_codes": sizes[-2] if depth > 1 else 1,
            "nr_labels": sizes[-1],
        })
        for t in range(depth):
            layer = ranker / f"{t}.model"
            _dump(layer / "param.json", {
                "__meta__": {"class_fullname": _META_ML},
                "model": "MLModel",
                "nr_labels": sizes[t],
                "nr_features": d,
                "nr_codes": sizes[t - 1] if t > 0 else 1,
                "bias": float(model.bias),
                "pred_kwargs": {
                    "__meta__": {"class_fullname": _META_PRED},
                    "only_topk": int(model.beam_size if t < depth - 1 else model.topk),
                    "post_processor": model.post_processor,
                },
            })
            _write_npz(layer / "W.npz", weights[t])
            _write_npz(layer / "C.npz", chain[t])

    return write_dir_atomically(pecos_dir, fill, is_pecos_model_dir, "libpecos model")
