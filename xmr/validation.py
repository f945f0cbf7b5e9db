"""Checks of user-supplied matrices (features, labels, npz files) and text files, raising :class:`InputError`.

Every public entry point of the engine (the CLI, ``XLinearModel.train``/``predict``) passes user input through
these functions, so that bad input fails early with a message naming the matrix and the problem instead of
crashing deep inside a numba kernel.
"""

from __future__ import annotations

import gzip
import os
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = ["InputError", "decode_text", "file_kind", "load_csr_npz", "check_features", "check_labels",
           "check_positive_int"]

_SPARSE_FORMATS = (b"csr", b"csc", b"coo", b"bsr", b"dia")
_F32_MAX = float(np.finfo(np.float32).max)


class InputError(ValueError):
    """User input (a matrix, a file, a parameter) is unusable; the message says which and why."""


def decode_text(raw: bytes, source: str) -> str:
    """The text of a file's bytes (gunzipped if gzip, UTF-8 with an optional BOM); InputError naming ``source``."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise InputError(f"{source}: corrupt gzip data ({e})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(f"{source}:{line}: not valid UTF-8 (byte offset {e.start})") from None


def _first(ids: np.ndarray, n: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:n])
    return shown + (", ..." if ids.size > n else "")


def _rows_of(indptr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sorted unique row ids of the stored entries selected by ``mask``."""
    return np.unique(np.searchsorted(indptr, np.flatnonzero(mask), side="right") - 1)


def file_kind(path: str | os.PathLike) -> str:
    """"zip" (.npz), "npy" or "other", from the file's first bytes (never guessing pickle like numpy does)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return "other"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    return "npy" if head == b"\x93NUMPY" else "other"


def load_csr_npz(path: str | os.PathLike, name: str) -> sp.csr_matrix:
    """Read a ``scipy.sparse.save_npz`` file (never unpickling) as CSR; ``name`` labels the errors."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{name}: file {path} does not exist")
    if path.is_dir():
        raise InputError(f"{name}: {path} is a directory, expected a .npz file written by scipy.sparse.save_npz")
    kind = file_kind(path)
    if kind != "zip":
        what = "a plain .npy array" if kind == "npy" else "not a zip archive"
        raise InputError(f"{name}: {path} is not a valid .npz file ({what}); write it with scipy.sparse.save_npz")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise InputError(
                    f"{name}: {path} is a plain .npy array, expected a sparse .npz file written by scipy.sparse.save_npz"
                )
            keys = set(npz.files)
            if "format" not in keys:
                raise InputError(
                    f"{name}: {path} is an .npz archive without a sparse matrix in it "
                    f"(no 'format' entry; found {sorted(keys)}); write it with scipy.sparse.save_npz"
                )
            fmt = npz["format"].item()
            fmt = fmt if isinstance(fmt, bytes) else str(fmt).encode()
            if fmt not in _SPARSE_FORMATS:
                raise InputError(f"{name}: {path} holds an unsupported sparse format {fmt.decode(errors='replace')!r}")
        mat = sp.load_npz(path)
    except InputError:
        raise
    except (zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{name}: {path} is not a valid .npz archive ({e})") from None
    except (ValueError, KeyError, OSError) as e:
        raise InputError(f"{name}: cannot read {path} as a sparse matrix ({type(e).__name__}: {e})") from None
    if mat.ndim != 2:
        raise InputError(f"{name}: {path} holds a {mat.ndim}-D array, expected a 2-D matrix")
    try:
        return sp.csr_matrix(mat)
    except (ValueError, TypeError) as e:
        raise InputError(f"{name}: {path} holds a malformed sparse matrix ({e})") from None


def _check_csr_structure(m: sp.csr_matrix, name: str) -> None:
    n, d = m.shape
    indptr, indices = m.indptr, m.indices
    if indptr.size != n + 1 or indptr[0] != 0 or (np.diff(indptr) < 0).any() or indptr[-1] != indices.size:
        raise InputError(f"{name}: malformed sparse matrix (bad indptr)")
    if indices.size and (indices.min() < 0 or indices.max() >= d):
        raise InputError(f"{name}: malformed sparse matrix (column index out of range [0, {d}))")
    if m.data.size != indices.size:
        raise InputError(f"{name}: malformed sparse matrix (data and indices lengths differ)")


def check_features(
    X: object, nr_features: int | None = None, name: str = "X"
) -> sp.csr_matrix | np.ndarray:
    """Validate a feature matrix and return it as CSR float32 (canonical) or C-contiguous dense float32."""
    if sp.issparse(X):
        if X.ndim != 2:
            raise InputError(f"{name}: expected a 2-D matrix, got {X.ndim}-D")
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_) or np.iscomplexobj(X.data):
            raise InputError(f"{name}: expected real numbers, got dtype {X.dtype}")
        m = sp.csr_matrix(X)
        _check_csr_structure(m, name)
        if not np.isfinite(m.data).all():
            rows = _rows_of(m.indptr, ~np.isfinite(m.data))
            raise InputError(f"{name}: has non-finite values (NaN or inf) in {rows.size} rows (first: {_first(rows)})")
        if m.data.size and np.abs(m.data).max() > _F32_MAX:
            raise InputError(f"{name}: has values beyond the float32 range (|x| > {_F32_MAX:.3g})")
        if m.dtype != np.float32:
            m = m.astype(np.float32)
        if not m.has_canonical_format:
            m = m.copy()  # never reorder the caller's arrays in place
            m.sum_duplicates()  # also sorts indices
        if m.indptr.dtype != np.int32 and m.nnz < 2**31 and m.shape[1] < 2**31:
            m = sp.csr_matrix((m.data, m.indices.astype(np.int32), m.indptr.astype(np.int32)), shape=m.shape)
    else:
        try:
            arr = np.asarray(X)
        except Exception as e:  # noqa: BLE001 - arbitrary objects: report, don't crash
            raise InputError(f"{name}: cannot be read as a matrix ({e})") from None
        if arr.ndim != 2:
            raise InputError(f"{name}: expected a 2-D matrix (rows = instances), got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
            raise InputError(f"{name}: expected real numbers, got dtype {arr.dtype}")
        if not np.isfinite(arr).all():
            rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
            raise InputError(f"{name}: has non-finite values (NaN or inf) in {rows.size} rows (first: {_first(rows)})")
        if arr.size and np.abs(arr).max() > _F32_MAX:
            raise InputError(f"{name}: has values beyond the float32 range (|x| > {_F32_MAX:.3g})")
        m = np.ascontiguousarray(arr, dtype=np.float32)
    if nr_features is not None and m.shape[1] != nr_features:
        raise InputError(f"{name}: has {m.shape[1]} feature columns but the model expects {nr_features}")
    return m


def check_labels(
    Y: object, nr_rows: int | None = None, *, allow_empty_rows: bool = False, nr_labels: int | None = None,
    name: str = "Y",
) -> sp.csr_matrix:
    """Validate a label (or relevance) matrix: shape, finite non-negative values; optionally no empty rows.

    Returns canonical CSR float32 without stored zeros. With ``allow_empty_rows=False`` (training), rows with no
    label are rejected, naming how many and the first few.
    """
    if not sp.issparse(Y):
        arr = np.asarray(Y)
        if arr.ndim != 2:
            raise InputError(f"{name}: expected a 2-D matrix (rows = instances, columns = labels), got shape {arr.shape}")
        Y = arr
    if Y.ndim != 2:
        raise InputError(f"{name}: expected a 2-D matrix, got {Y.ndim}-D")
    dtype = Y.dtype
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_) or np.issubdtype(dtype, np.complexfloating):
        raise InputError(f"{name}: expected real numbers, got dtype {dtype}")
    m = sp.csr_matrix(Y)
    _check_csr_structure(m, name)
    if nr_rows is not None and m.shape[0] != nr_rows:
        raise InputError(f"{name}: has {m.shape[0]} rows but X has {nr_rows}; they must describe the same instances")
    if nr_labels is not None and m.shape[1] != nr_labels:
        raise InputError(f"{name}: has {m.shape[1]} label columns, expected {nr_labels}")
    if m.shape[1] == 0:
        raise InputError(f"{name}: has no label columns")
    data = m.data
    if not np.isfinite(data).all():
        raise InputError(f"{name}: has non-finite values (NaN or inf)")
    if (data < 0).any():
        rows = _rows_of(m.indptr, data < 0)
        raise InputError(
            f"{name}: has negative values in {rows.size} rows (first: {_first(rows)}); "
            "labels must be 0/1 (or non-negative relevances)"
        )
    m = m.astype(np.float32, copy=True)  # copy: the clean-up below works in place
    m.sum_duplicates()
    m.eliminate_zeros()
    if not allow_empty_rows:
        empty = np.flatnonzero(np.diff(m.indptr) == 0)
        if empty.size:
            raise InputError(
                f"{name}: {empty.size} of {m.shape[0]} rows have no label (first: {_first(empty)}); "
                "drop those rows, or allow them (allow_empty_rows=True, CLI --allow-empty-rows) to use them "
                "only as negatives"
            )
    return m


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int >= 1, or raise :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
