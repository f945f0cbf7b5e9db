"""The xmr model directory: a versioned, documented on-disk format made only of JSON and ``.npy`` files.

Layout (format ``"xmr.xlinear"``, version 1)::

    MODEL_DIR/
      xmr-model.json                 manifest (below); its presence marks an xmr model directory
      tree/parents_{t}.npy           int32 [K_t]   parent id (in level t-1) of each node of level t;
                                                   parents_0 is all zeros (the implicit root)
      weights/{t}/indptr.npy         int32|int64 [K_t + 1]  CSC column pointers of W_t
      weights/{t}/indices.npy        same dtype as indptr [nnz_t]  row (feature) ids, sorted within each column
      weights/{t}/data.npy           float32 [nnz_t]  weights (never explicit zeros)

``W_t`` is the ``R x K_t`` CSC weight matrix of level ``t`` (``t = 0 .. depth-1``; the last level's columns are
the labels) with ``R = nr_features + 1`` when ``bias > 0`` (the bias weight is row ``nr_features``, multiplied by
``bias`` at inference: ``score = w[:d].x + bias * w[d]``) and ``R = nr_features`` otherwise. Node ids follow the
:class:`indexing.tree.LabelTree` numbering (siblings contiguous above the bottom level).

``xmr-model.json``::

    {
      "format": "xmr.xlinear",         fixed; anything else is not an xmr XR-Linear model
      "version": 1,                     format version; readers refuse versions newer than they know
      "created_by": "xmr 0.1.0",
      "nr_features": d, "nr_labels": L, "depth": D, "level_sizes": [K_0, ..., K_{D-1}],
      "bias": 1.0,
      "pred_params": {"beam_size": 10, "topk": 10, "post_processor": "l3-hinge"},
      "meta": {...},                    free-form JSON (training parameters, timings, data sizes)
      "arrays": {"tree/parents_0.npy": {"shape": [K_0], "dtype": "<i4"}, ...}   every array file
    }

Every array is a plain ``.npy`` file (``numpy.save`` with ``allow_pickle=False``), so a model can be opened with
``numpy.load(..., mmap_mode="r")`` and its pages shared between processes; nothing is ever pickled.

Saving is atomic: the whole directory is written to a temporary sibling ``.NAME.tmp-*``, every file and folder
is fsync'ed, then the new directory is swapped into place with one ``renameat2(RENAME_EXCHANGE)`` (or, where
unavailable, two renames: old -> ``.NAME.old-*``, new -> NAME) and the old one removed. A crash at any point leaves
a loadable old or new model, never a mix: if it struck between the two renames, loading falls back to the old
directory and the next save restores it before writing; stale temporary directories are removed by the next save
to the same path. Writers to one folder take turns (an advisory ``flock`` on the folder).

Loading validates everything it reads and raises :class:`ModelFormatError` naming the file and the problem:
manifest present and parseable, format name and version, every manifested array present with the manifested
shape and dtype and the right file size, CSC structure (monotone ``indptr``, ``indices`` in range and sorted,
finite ``data``), tree invariants, and weight shapes consistent with the level sizes and ``nr_features``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from indexing.tree import LabelTree, LabelTreeError

if TYPE_CHECKING:
    from xmr.model import XLinearModel

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "ModelFormatError",
    "save_model",
    "load_model",
    "read_manifest",
    "is_xmr_model_dir",
    "write_dir_atomically",
    "check_csc_arrays",
]

LOGGER = logging.getLogger(__name__)

FORMAT_NAME = "xmr.xlinear"
FORMAT_VERSION = 1
MANIFEST_NAME = "xmr-model.json"
_CHUNK = 1 << 24  # entries per chunk for O(nnz) checks, to bound temporary memory


class ModelFormatError(ValueError):
    """A model directory (ours or PECOS's) is missing, unreadable, inconsistent or of an unsupported format."""


# ---------------------------------------------------------------------------------------------- atomic writes
def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the data files were synced already
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


_libc: Any = None


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = _libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def _siblings(target: Path, kind: str) -> list[Path]:
    prefix = f".{target.name}.{kind}-"
    try:
        return sorted(
            (p for p in target.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()),
            key=lambda p: p.stat().st_mtime,
        )
    except FileNotFoundError:
        return []


def _recover(target: Path) -> None:
    """Undo what an interrupted save left: restore the old directory if the swap was cut, drop temp dirs."""
    olds = _siblings(target, "old")
    if olds and not target.exists():
        LOGGER.warning("restoring %s from %s left by an interrupted save", target, olds[-1])
        os.rename(olds[-1], target)
        olds = olds[:-1]
    for p in olds + _siblings(target, "tmp"):
        shutil.rmtree(p, ignore_errors=True)


def write_dir_atomically(
    target: str | os.PathLike, fill: Callable[[Path], None], may_replace: Callable[[Path], bool], what: str
) -> Path:
    """Create directory ``target`` by calling ``fill(tmp_dir)`` then swapping it into place atomically.

    An existing non-empty ``target`` is replaced only if ``may_replace(target)`` says it is of the same kind
    (so a typo can never wipe an unrelated folder). ``what`` names the kind in errors.
    """
    target = Path(target).absolute()
    if target.is_symlink():
        raise ModelFormatError(f"{target} is a symbolic link; give the real directory to write the {what} to")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent):  # writers in one folder take turns, so leftovers found below are stale
        _recover(target)
        if target.exists():
            if not target.is_dir():
                raise ModelFormatError(f"{target} exists and is not a directory; cannot write a {what} there")
            if any(target.iterdir()) and not may_replace(target):
                raise ModelFormatError(
                    f"{target} exists and is not a {what} directory; refusing to overwrite it (choose another path)"
                )
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        try:
            fill(tmp)
            _fsync_tree(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _swap_into_place(tmp, target)
    return target


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Exclusive advisory lock on a folder (flock on its descriptor; released even if the process dies)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, one writer per path is then the caller's duty
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # file systems without flock support
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _swap_into_place(tmp: Path, target: Path) -> None:
    parent = target.parent
    if not target.exists():
        os.rename(tmp, target)
    elif _rename_exchange(tmp, target):
        _fsync_path(parent)
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous directory
    else:
        old = parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(target, old)
        os.rename(tmp, target)
        _fsync_path(parent)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_path(parent)


def write_file_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write one file through ``write(binary_file)`` into a temporary sibling, fsync it, then rename it over ``path``.

    InputError when ``path`` is a directory or its directory does not exist; a failure leaves ``path`` untouched.
    """
    from xmr.validation import InputError

    out = Path(path).absolute()
    if out.is_dir():
        raise InputError(f"output {out} is a directory; give a file name")
    if not out.parent.is_dir():
        raise InputError(f"output directory {out.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_path(out.parent)  # the rename itself survives a crash only once the directory entry is synced
    return out


def read_json_object(mpath: Path, missing: str = "") -> dict[str, Any]:
    """The JSON object in ``mpath``; ModelFormatError naming the file when it is missing ("PATH: missing" +
    ``missing``), unreadable or not an object."""
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"{mpath}: missing{missing}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{mpath}: not valid JSON ({e})") from None
    except OSError as e:
        raise ModelFormatError(f"{mpath}: cannot be read ({e})") from None
    if not isinstance(manifest, dict):
        raise ModelFormatError(f"{mpath}: expected a JSON object at top level")
    return manifest


def save_npy(path: Path, arr: np.ndarray) -> dict[str, Any]:
    """Write ``arr`` as a pickle-free .npy file (parents created); returns its manifest entry (shape, dtype)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.ascontiguousarray(arr)
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    return {"shape": list(arr.shape), "dtype": arr.dtype.str}


# ------------------------------------------------------------------------------------------------------- save
def json_default(o: Any) -> Any:
    """``json.dumps`` hook for numpy scalars, arrays and paths; TypeError for anything else."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"model meta holds a value that is not JSON-serialisable: {type(o).__name__}")


def _index_dtype(nnz: int, nrows: int, ncols: int) -> type:
    return np.int32 if max(nnz, nrows, ncols) < 2**31 else np.int64


def is_xmr_model_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds an xmr model manifest (of any version)."""
    return (Path(path) / MANIFEST_NAME).is_file()


def save_model(model: XLinearModel, path: str | os.PathLike) -> Path:
    """Write ``model`` to directory ``path`` atomically (replacing an existing xmr model there)."""
    from xmr import __version__

    tree, weights = model.tree, model.weights
    meta = json.loads(json.dumps(model.meta, default=json_default))  # fail before touching the disk

    def fill(tmp: Path) -> None:
        arrays: dict[str, Any] = {}
        for t in range(tree.depth):
            name = f"tree/parents_{t}.npy"
            arrays[name] = save_npy(tmp / name, np.asarray(tree.parents(t), dtype=np.int32))
        for t, W in enumerate(weights):
            idx = _index_dtype(W.nnz, W.shape[0], W.shape[1])
            for part, arr in (
                ("indptr", np.asarray(W.indptr, dtype=idx)),
                ("indices", np.asarray(W.indices, dtype=idx)),
                ("data", np.asarray(W.data, dtype=np.float32)),
            ):
                name = f"weights/{t}/{part}.npy"
                arrays[name] = save_npy(tmp / name, arr)
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "created_by": f"xmr {__version__}",
            "nr_features": model.nr_features,
            "nr_labels": model.nr_labels,
            "depth": tree.depth,
            "level_sizes": list(tree.level_sizes),
            "bias": float(model.bias),
            "pred_params": {
                "beam_size": int(model.beam_size),
                "topk": int(model.topk),
                "post_processor": model.post_processor,
            },
            "meta": meta,
            "arrays": arrays,
        }
        with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")

    return write_dir_atomically(path, fill, is_xmr_model_dir, "xmr model")


# ------------------------------------------------------------------------------------------------------- load
def _looks_like_pecos(path: Path) -> bool:
    for candidate in (path / "param.json", path / "ranker" / "param.json"):
        try:
            text = candidate.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "pecos" in text or "HierarchicalMLModel" in text or '"MLModel"' in text:
            return True
    return (path / "ranker").is_dir() and any((path / "ranker").glob("*.model"))


def resolve_model_dir(path: Path) -> Path:
    """The directory to read at ``path``, falling back to the backup an interrupted atomic save left behind."""
    if path.is_dir():
        return path
    if path.exists():
        raise ModelFormatError(f"{path} is a file, not a model directory")
    olds = _siblings(path, "old")
    if olds:  # an interrupted save swapped the old model aside; it is complete
        LOGGER.warning("model %s was being replaced when a save was interrupted; loading the previous one", path)
        return olds[-1]
    raise ModelFormatError(f"model directory {path} does not exist")


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check the manifest of an xmr model directory (format name, version, required fields)."""
    path = resolve_model_dir(Path(path))
    mpath = path / MANIFEST_NAME
    if not mpath.is_file():
        if _looks_like_pecos(path):
            raise ModelFormatError(
                f"{path} looks like a libpecos model, not an xmr one; convert it with "
                f"`xmr import-pecos {path} NEW_MODEL_DIR` (or xmr.pecos_io.import_pecos)"
            )
        raise ModelFormatError(f"{path} is not an xmr model directory (no {MANIFEST_NAME} in it)")
    manifest = read_json_object(mpath)
    fmt = manifest.get("format")
    if fmt != FORMAT_NAME:
        raise ModelFormatError(f"{mpath}: format is {fmt!r}, expected {FORMAT_NAME!r}; not an xmr XR-Linear model")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"{mpath}: invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{mpath}: format version {version} was written by a newer xmr "
            f"({manifest.get('created_by', 'unknown')}); this xmr reads versions up to {FORMAT_VERSION}: upgrade xmr"
        )
    _check_manifest_fields(manifest, mpath)
    manifest["_dir"] = str(path)
    return manifest


def _req(manifest: dict, key: str, kind: type | tuple, mpath: Path) -> Any:
    if key not in manifest:
        raise ModelFormatError(f"{mpath}: missing field {key!r}")
    v = manifest[key]
    if isinstance(v, bool) or not isinstance(v, kind):
        raise ModelFormatError(f"{mpath}: field {key!r} has the wrong type ({type(v).__name__})")
    return v


def _check_manifest_fields(m: dict, mpath: Path) -> None:
    d = _req(m, "nr_features", int, mpath)
    _req(m, "nr_labels", int, mpath)
    depth = _req(m, "depth", int, mpath)
    sizes = _req(m, "level_sizes", list, mpath)
    bias = _req(m, "bias", (int, float), mpath)
    pred = _req(m, "pred_params", dict, mpath)
    _req(m, "arrays", dict, mpath)
    if "meta" in m and not isinstance(m["meta"], dict):
        raise ModelFormatError(f"{mpath}: field 'meta' must be an object")
    if d < 1 or depth < 1:
        raise ModelFormatError(f"{mpath}: nr_features and depth must be >= 1 (got {d}, {depth})")
    if len(sizes) != depth or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in sizes):
        raise ModelFormatError(f"{mpath}: level_sizes must list {depth} positive integers, got {sizes}")
    if sizes[-1] != m["nr_labels"]:
        raise ModelFormatError(f"{mpath}: nr_labels {m['nr_labels']} differs from the last level size {sizes[-1]}")
    if not math.isfinite(bias):
        raise ModelFormatError(f"{mpath}: bias must be finite, got {bias}")
    for key, kind in (("beam_size", int), ("topk", int), ("post_processor", str)):
        if not isinstance(pred.get(key), kind) or isinstance(pred.get(key), bool):
            raise ModelFormatError(f"{mpath}: pred_params.{key} is missing or has the wrong type")


def _expected_arrays(depth: int) -> list[str]:
    names = [f"tree/parents_{t}.npy" for t in range(depth)]
    for t in range(depth):
        names += [f"weights/{t}/{part}.npy" for part in ("indptr", "indices", "data")]
    return names


def read_npy_header(fpath: Path, rel: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a .npy file, refusing object dtypes; ModelFormatError names ``rel``."""
    try:
        with open(fpath, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except FileNotFoundError:
        raise ModelFormatError(f"{rel}: array file is missing") from None
    except (ValueError, OSError, SyntaxError) as e:
        raise ModelFormatError(f"{rel}: not a valid .npy file ({e})") from None
    if dtype.hasobject:
        raise ModelFormatError(f"{rel}: holds Python objects; refusing to load (model files never need pickle)")
    if fortran and len(shape) > 1:
        raise ModelFormatError(f"{rel}: Fortran-ordered arrays are not part of the format")
    return shape, dtype, offset


def load_array(root: Path, rel: str, spec: Any, mmap: bool) -> np.ndarray:
    """The .npy file ``root/rel`` checked against its manifest entry ``spec`` (shape, dtype); memory-mapped if asked."""
    fpath = root / rel
    if not isinstance(spec, dict) or not isinstance(spec.get("shape"), list) or not isinstance(spec.get("dtype"), str):
        raise ModelFormatError(f"{MANIFEST_NAME}: bad manifest entry for {rel}: {spec!r}")
    shape, dtype, offset = read_npy_header(fpath, rel)
    if list(shape) != spec["shape"] or dtype.str != spec["dtype"]:
        raise ModelFormatError(
            f"{rel}: holds {dtype.str}{list(shape)} but the manifest says {spec['dtype']}{spec['shape']}"
        )
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = fpath.stat().st_size
    if size != expected:
        raise ModelFormatError(f"{rel}: file is {size} bytes, expected {expected} (truncated or corrupt)")
    use_mmap = mmap and expected > offset  # numpy cannot map an empty data region
    try:
        return np.load(fpath, mmap_mode="r" if use_mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ModelFormatError(f"{rel}: cannot be read ({e})") from None


def check_csc_arrays(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int], where: str,
    full: bool = True,
) -> None:
    """Validate CSC arrays (monotone indptr, in-range sorted unique indices, finite data); O(nnz) when full."""
    nrows, ncols = shape
    if indptr.ndim != 1 or indptr.size != ncols + 1:
        raise ModelFormatError(f"{where}: indptr has {indptr.size} entries, expected {ncols + 1} (columns + 1)")
    if indices.ndim != 1 or data.ndim != 1 or indices.size != data.size:
        raise ModelFormatError(f"{where}: indices ({indices.size}) and data ({data.size}) must be 1-D of equal length")
    if int(indptr[0]) != 0 or int(indptr[-1]) != indices.size:
        raise ModelFormatError(f"{where}: indptr must start at 0 and end at nnz={indices.size}")
    if (np.diff(indptr) < 0).any():
        raise ModelFormatError(f"{where}: indptr is not monotone (non-decreasing)")
    if not full or indices.size == 0:
        return
    boundaries = np.asarray(indptr[1:-1], dtype=np.int64)
    for a in range(0, indices.size, _CHUNK):
        b = min(indices.size, a + _CHUNK)
        chunk = np.asarray(indices[a:b])
        if chunk.min() < 0 or chunk.max() >= nrows:
            raise ModelFormatError(f"{where}: row indices out of range [0, {nrows})")
        if not np.isfinite(np.asarray(data[a:b])).all():
            raise ModelFormatError(f"{where}: weights hold non-finite values (NaN or inf)")
        # strictly increasing within each column: compare entry i with i+1 unless a column starts at i+1
        nxt = np.asarray(indices[a + 1 : min(indices.size, b + 1)])
        ok = nxt.astype(np.int64) > chunk[: nxt.size].astype(np.int64)
        starts = boundaries[(boundaries > a) & (boundaries <= a + nxt.size)] - a - 1
        ok[starts] = True
        if not ok.all():
            raise ModelFormatError(f"{where}: row indices are not sorted and unique within a column")


def load_model(path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> XLinearModel:
    """Load an xmr model directory, validating it; arrays are memory-mapped read-only when ``mmap``.

    ``verify=False`` skips the O(nnz) content checks (indices range/order, finite weights) for huge trusted
    models; headers, sizes, shapes, indptr and the tree are always checked.
    """
    from xmr.model import XLinearModel

    manifest = read_manifest(path)
    root = Path(manifest.pop("_dir"))
    depth, d, sizes = manifest["depth"], manifest["nr_features"], manifest["level_sizes"]
    bias = float(manifest["bias"])
    specs = manifest["arrays"]
    arrays: dict[str, np.ndarray] = {}
    for rel in _expected_arrays(depth):
        if rel not in specs:
            raise ModelFormatError(f"{MANIFEST_NAME}: lists no entry for required array {rel}")
        arrays[rel] = load_array(root, rel, specs[rel], mmap)
    for t in range(depth):
        p = arrays[f"tree/parents_{t}.npy"]
        if p.dtype != np.int32 or p.ndim != 1:
            raise ModelFormatError(f"tree/parents_{t}.npy: expected a 1-D int32 array, got {p.dtype}{list(p.shape)}")
    try:
        tree = LabelTree([arrays[f"tree/parents_{t}.npy"] for t in range(depth)])
    except LabelTreeError as e:
        raise ModelFormatError(f"tree/: invalid label tree ({e})") from None
    if list(tree.level_sizes) != sizes:
        raise ModelFormatError(f"tree/: level sizes {list(tree.level_sizes)} differ from the manifest's {sizes}")
    nrows = d + 1 if bias > 0 else d
    weights = []
    for t in range(depth):
        where = f"weights/{t}/"
        indptr, indices, data = (arrays[f"{where}{part}.npy"] for part in ("indptr", "indices", "data"))
        if indptr.dtype != indices.dtype or indptr.dtype not in (np.int32, np.int64):
            raise ModelFormatError(f"{where}: indptr and indices must share one dtype, int32 or int64")
        if data.dtype != np.float32:
            raise ModelFormatError(f"{where}data.npy: expected float32 weights, got {data.dtype}")
        check_csc_arrays(indptr, indices, data, (nrows, sizes[t]), where, full=verify)
        W = sp.csc_matrix((data, indices, indptr), shape=(nrows, sizes[t]), copy=False)
        W.has_sorted_indices = True  # checked above (or trusted); spares scipy a pass over mmapped pages
        weights.append(W)
    pred = manifest["pred_params"]
    try:
        return XLinearModel(
            tree, weights, bias=bias, beam_size=pred["beam_size"], topk=pred["topk"],
            post_processor=pred["post_processor"], meta=manifest.get("meta") or {},
        )
    except ValueError as e:
        raise ModelFormatError(f"{root}: inconsistent model ({e})") from None


def array_files(path: str | os.PathLike) -> Iterable[Path]:
    """Paths of every array file of a saved model (for tools that copy or checksum models)."""
    manifest = read_manifest(path)
    root = Path(manifest["_dir"])
    return [root / rel for rel in manifest["arrays"]]
