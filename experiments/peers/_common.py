"""Shared helpers of the runner scripts: arguments, data loading, timing, memory, result files.

Imported by the run_*.py scripts as a sibling module (``import _common``) so it must run under BOTH the
project venv and the peers' venv: numpy / scipy / stdlib only, no imports from xmr or experiments.

Every runner writes into its ``--out`` folder:
- ``result.json``: library, version, params, train_s, batch_s, single_ms (p50, p99, mean), peak_train_mb,
  rss_before_train_mb, model_mb, shapes, and the sha1 of the single-query row ids;
- ``predictions.npz``: test predictions (N x L CSR float32, top-k scores) from the one batch call;
- ``topk.npy``: (N, k) int32 label ids ranked by descending score (ties: smaller label id), -1 padded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

MATRICES = ("X_train", "Y_train", "X_test", "Y_test")


def parse_args(library: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Command line shared by all runners."""
    ap = argparse.ArgumentParser(description=f"Train, save, reload and time {library} on one cached data set.")
    ap.add_argument("--data", type=Path, required=True, help="data set cache folder (X_train.npz, ...)")
    ap.add_argument("--out", type=Path, required=True, help="output folder (result.json, predictions.npz, model/)")
    ap.add_argument("--threads", type=int, default=2, help="threads for training and batch prediction")
    ap.add_argument("--beam-size", type=int, default=10)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="seed for clustering / training where the library has one")
    ap.add_argument("--n-single", type=int, default=500, help="number of single-query timings")
    ap.add_argument("--single-seed", type=int, default=0, help="seed choosing the single-query rows")
    ap.add_argument("--warmup", type=int, default=10, help="untimed single queries before the timed ones")
    ap.add_argument("--keep-model", action="store_true", help="keep the saved model folder")
    return ap.parse_args(argv)


def load_data(folder: Path) -> dict[str, sp.csr_matrix]:
    """The 4 cached matrices as CSR float32 with sorted int32 indices."""
    out = {}
    for key in MATRICES:
        m = sp.csr_matrix(sp.load_npz(folder / f"{key}.npz"), dtype=np.float32)
        m.sort_indices()
        out[key] = m
    return out


def log(msg: str) -> None:
    """Progress line on stderr (the bench shows it)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Current resident set size in MB."""
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else float("nan")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (VmHWM, else ru_maxrss) in MB."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def dir_size_mb(path: Path) -> float:
    """Total size of the files under ``path`` (or of the file itself) in MB."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def save_model(out: Path, save: Callable[[Path], object]) -> tuple[Path, float]:
    """Save a model with ``save(folder)`` into a fresh ``out/model``; returns the folder and its size in MB."""
    import shutil

    mdir = out / "model"
    if mdir.exists():
        shutil.rmtree(mdir)
    save(mdir)
    return mdir, dir_size_mb(mdir)


def single_rows(n: int, count: int, seed: int) -> np.ndarray:
    """Row ids of the single-query timing: ``RandomState(seed)`` (stable across numpy versions), no repeats."""
    return np.random.RandomState(seed).permutation(n)[: min(count, n)].astype(np.int64)


def time_batch(predict: Callable[[], object], quick_s: float = 2.0, repeats: int = 3) -> tuple[float, object]:
    """Wall seconds of ``predict()`` and its result: the median of ``repeats`` calls when one call takes under
    ``quick_s`` (short calls are at the mercy of a single scheduler hiccup), otherwise the one call."""
    times = []
    while True:
        t0 = time.perf_counter()
        out = predict()
        times.append(time.perf_counter() - t0)
        if times[0] >= quick_s or len(times) >= repeats:
            return float(np.median(times)), out


def time_single(predict_one: Callable[[object], object], queries: list, warmup: int) -> np.ndarray:
    """Milliseconds of ``predict_one(q)`` for each query, timed around the call only, after untimed warm-ups."""
    for q in queries[:warmup]:
        predict_one(q)
    out = np.empty(len(queries), np.float64)
    for i, q in enumerate(queries):
        t0 = time.perf_counter_ns()
        predict_one(q)
        out[i] = (time.perf_counter_ns() - t0) / 1e6
    return out


def csr_from_ranked(rows: list[tuple[np.ndarray, np.ndarray]], nr_labels: int) -> sp.csr_matrix:
    """N x L CSR float32 from per-row (labels, scores)."""
    indptr = np.zeros(len(rows) + 1, np.int64)
    indptr[1:] = np.cumsum([len(r[0]) for r in rows])
    ind = np.concatenate([np.asarray(r[0], np.int32) for r in rows]) if rows else np.zeros(0, np.int32)
    val = np.concatenate([np.asarray(r[1], np.float32) for r in rows]) if rows else np.zeros(0, np.float32)
    return sp.csr_matrix((val, ind, indptr), shape=(len(rows), nr_labels))


def ranked_topk(P: sp.csr_matrix, k: int) -> np.ndarray:
    """(N, k) int32 label ids by descending score (ties: smaller id), -1 padded."""
    P = sp.csr_matrix(P)
    out = np.full((P.shape[0], k), -1, np.int32)
    for i in range(P.shape[0]):
        lo, hi = P.indptr[i], P.indptr[i + 1]
        lab, sc = P.indices[lo:hi], P.data[lo:hi]
        order = np.lexsort((lab, -sc))[:k]
        out[i, : len(order)] = lab[order]
    return out


def save_predictions(out: Path, P: sp.csr_matrix, k: int) -> None:
    """predictions.npz (CSR, each row cut to its top k) and topk.npy."""
    top = ranked_topk(P, k)
    P = sp.csr_matrix(P, dtype=np.float32)
    rows = []
    for i in range(P.shape[0]):
        lo, hi = P.indptr[i], P.indptr[i + 1]
        keep = np.isin(P.indices[lo:hi], top[i][top[i] >= 0])
        rows.append((P.indices[lo:hi][keep], P.data[lo:hi][keep]))
    sp.save_npz(out / "predictions.npz", csr_from_ranked(rows, P.shape[1]), compressed=False)
    np.save(out / "topk.npy", top)


def measured_fields(X, Y, Xt, rows: np.ndarray, ms: np.ndarray, peak: float, rss0: float, model_mb: float) -> dict:
    """The result.json fields every runner reports the same way: single-query timings, memory, size, shapes."""
    return {"single_ms": percentiles(ms), "single_rows_sha1": rows_sha1(rows), "peak_train_mb": peak,
            "rss_before_train_mb": rss0, "model_mb": model_mb, "n_train": X.shape[0], "n_test": Xt.shape[0],
            "n_features": X.shape[1], "n_labels": Y.shape[1]}


def percentiles(ms: np.ndarray) -> dict:
    """p50 / p99 / mean / max of a list of milliseconds."""
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "mean": float(ms.mean()), "max": float(ms.max())}


def write_result(out: Path, result: dict) -> None:
    """result.json with machine info added."""
    result = dict(result)
    result.setdefault("python", platform.python_version())
    result.setdefault("numpy", np.__version__)
    result.setdefault("cpu_count", os.cpu_count())
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")


def rows_sha1(rows: np.ndarray) -> str:
    """Fingerprint of the single-query row ids (the bench checks all runners used the same rows)."""
    return hashlib.sha1(np.asarray(rows, np.int64).tobytes()).hexdigest()


class Timer:
    """``with Timer() as t: ...; t.s`` wall-clock seconds."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
