"""Launch one runner script (one library on one data set) in its own subprocess and collect its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from experiments.peers.venv import ensure_peers_venv

PEERS_DIR = Path(__file__).resolve().parent
REPO = PEERS_DIR.parent.parent
LIBRARIES = {  # name -> (runner script, needs the peers' venv, display name)
    "xmr": ("run_xmr.py", False, "xmr"),
    "libpecos": ("run_libpecos.py", True, "libpecos"),
    "napkinxc": ("run_napkinxc.py", True, "napkinXC"),
    "omikuji": ("run_omikuji.py", True, "omikuji (3 trees)"),
    # raw-text runners (experiments/text_aol.py): a data folder of texts and label names instead of matrices
    "xmr-text": ("run_xmr_text.py", False, "xmr (own text pipeline)"),
    "libpecos-text": ("run_libpecos_text.py", True, "libpecos (anchors' featurisation, from raw text)"),
    # autocompletion (experiments/qac_eval.py): xmr's features and tree, libpecos's rankers and beam search
    "libpecos-qac": ("run_libpecos_qac.py", True, "libpecos (PECOS qp2q-style search)"),
}


MATRIX_LIBRARIES = ("xmr", "libpecos", "napkinxc", "omikuji")  # runners that read cached feature matrices


def parse_libraries(text: str, allowed: tuple[str, ...] = MATRIX_LIBRARIES) -> list[str]:
    """Library names from a comma-separated list; ValueError naming any not in ``allowed``."""
    libs = [p.strip().lower() for p in text.split(",") if p.strip()]
    unknown = [p for p in libs if p not in allowed]
    if unknown:
        raise ValueError(f"unknown libraries {unknown}; expected among {list(allowed)}")
    return libs


def prepare(names: list[str], libs: list[str], log, tag: str) -> None:
    """Build the data-set caches and, when a peer library is among ``libs``, make sure the peers' venv exists."""
    from experiments import datasets

    for n in names:
        datasets.build(n, log=log)
    if any(LIBRARIES[p][1] for p in libs):
        log(f"[{tag}] checking the peers' venv")
        ensure_peers_venv(quiet=True)


class RunError(RuntimeError):
    """A runner subprocess failed or left no result."""


@dataclass
class RunResult:
    """What one runner produced: its result.json, the path of its predictions, and its log."""

    library: str
    dataset: str
    out: Path
    result: dict = field(default_factory=dict)
    error: str | None = None
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the runner finished and wrote result.json."""
        return self.error is None

    def predictions(self) -> sp.csr_matrix:
        """The saved test predictions (N x L CSR)."""
        return sp.csr_matrix(sp.load_npz(self.out / "predictions.npz"))

    def topk(self) -> np.ndarray:
        """(N, k) ranked label ids, -1 padded."""
        return np.load(self.out / "topk.npy")


def python_for(library: str) -> str:
    """Interpreter of a library's runner: the peers' venv for peers, this interpreter for xmr."""
    if library not in LIBRARIES:
        raise ValueError(f"unknown library {library!r}: expected one of {', '.join(LIBRARIES)}")
    return str(ensure_peers_venv(quiet=True)) if LIBRARIES[library][1] else sys.executable


def child_env(threads: int) -> dict[str, str]:
    """Environment of a runner: BLAS/OpenMP pools capped to ``threads`` so no library gets hidden extra cores."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONHOME", None)
    return env


def run_library(library: str, dataset: str, data_dir: Path, out: Path, threads: int = 2, n_single: int = 500,
                seed: int = 0, timeout: float | None = None, extra: list[str] | None = None,
                log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> RunResult:
    """Run ``library`` on the cached data in ``data_dir``; output (and run.log) in ``out``. Never raises on failure."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "predictions.npz", "topk.npy"):
        (out / stale).unlink(missing_ok=True)
    res = RunResult(library, dataset, out)
    try:
        cmd = [python_for(library), str(PEERS_DIR / LIBRARIES[library][0]), "--data", str(data_dir),
               "--out", str(out), "--threads", str(threads), "--n-single", str(n_single), "--seed", str(seed),
               *(extra or [])]
    except Exception as exc:  # noqa: BLE001 - reported in the table, the bench goes on
        res.error = f"cannot prepare {library}: {exc}"
        return res
    log(f"[bench] {dataset} / {library}: running (log: {out / 'run.log'})")
    t0 = time.perf_counter()
    with open(out / "run.log", "w") as logf:
        try:
            proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=child_env(threads), cwd=REPO,
                                  timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    res.wall_s = time.perf_counter() - t0
    if rc != 0 or not (out / "result.json").is_file():
        # Progress bars (omikuji) put whole screens on one line: keep the end of each line.
        tail = [ln.split("\r")[-1][-300:] for ln in (out / "run.log").read_text(errors="replace").splitlines()[-15:]]
        why = "timed out" if rc is None else f"exit code {rc}"
        res.error = f"{library} on {dataset}: {why}; last log lines:\n" + "\n".join(tail)
        log(f"[bench] {dataset} / {library}: FAILED ({why}) after {res.wall_s:.0f}s")
        return res
    res.result = json.loads((out / "result.json").read_text())
    r = res.result
    log(f"[bench] {dataset} / {library}: done in {res.wall_s:.0f}s (train {r['train_s']:.2f}s, batch "
        f"{r['batch_s']:.3f}s, single p50 {r['single_ms']['p50']:.3f} ms)")
    return res


def load_previous(library: str, dataset: str, out: Path) -> RunResult:
    """A RunResult from an earlier run's folder (for --reuse), with an error if it is incomplete."""
    res = RunResult(library, dataset, out)
    if not all((out / f).is_file() for f in ("result.json", "predictions.npz", "topk.npy")):
        res.error = f"{library} on {dataset}: no complete earlier result in {out}"
    else:
        res.result = json.loads((out / "result.json").read_text())
    return res
