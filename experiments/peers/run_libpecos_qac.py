"""libpecos XR-Linear for autocompletion, as PECOS's qp2q example searches (run under the peers' venv python).

Input folder (written by experiments/qac_eval.py): ``X_train.npz`` / ``Y_train.npz`` (xmr's QacFeaturizer rows
and their next-query labels), ``C0.npz``, ``C1.npz``, ... (the label tree as PECOS cluster-chain matrices, so both
libraries train over the same tree) and ``Xq.npz`` (one feature row per request). Training: the anchors'
solver settings (squared-hinge dual, tfn negatives, threshold 0.1, Cp=Cn=1, bias 1); saved and reloaded with
``is_predict_only=True``. Search: one request at a time on one thread, ``beam_size`` 10 and the top
``--candidates`` labels of the whole tree (libpecos has no way to restrict the beam to a prefix: the example
filters afterwards). Writes ``result.json`` and ``ranked.npz`` (ids int32 / scores float32, n x candidates,
-1 padded; ms float64 per request).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Train over the given tree, reload, search every request; write result.json and ranked.npz."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--beam-size", type=int, default=10)
    a = ap.parse_args(argv)
    import pecos
    from pecos.utils.cluster_util import ClusterChain
    from pecos.xmc.xlinear.model import XLinearModel

    a.out.mkdir(parents=True, exist_ok=True)
    X = sp.csr_matrix(sp.load_npz(a.data / "X_train.npz"), dtype=np.float32)
    Y = sp.csr_matrix(sp.load_npz(a.data / "Y_train.npz"), dtype=np.float32)
    Xq = sp.csr_matrix(sp.load_npz(a.data / "Xq.npz"), dtype=np.float32)
    depth = len(list(a.data.glob("C*.npz")))
    chain = ClusterChain([sp.csc_matrix(sp.load_npz(a.data / f"C{t}.npz"), dtype=np.float32) for t in range(depth)])
    rss0 = c.rss_mb()
    c.log(f"libpecos qac: training on {X.shape[0]} x {X.shape[1]}, {Y.shape[1]} labels over the given tree")
    with c.Timer() as t_train:
        model = XLinearModel.train(X, Y, C=chain, threshold=0.1, solver_type="L2R_L2LOSS_SVC_DUAL",
                                   negative_sampling_scheme="tfn", Cp=1.0, Cn=1.0, bias=1.0, threads=a.threads)
    peak = c.peak_rss_mb()
    c.log(f"libpecos qac: trained in {t_train.s:.2f}s, peak RSS {peak:.0f} MB")
    mdir, model_mb = c.save_model(a.out, lambda d: model.save(str(d)))
    del model
    model = XLinearModel.load(str(mdir), is_predict_only=True)
    n, k = Xq.shape[0], a.candidates
    ids = np.full((n, k), -1, dtype=np.int32)
    scores = np.zeros((n, k), dtype=np.float32)
    ms = np.zeros(n)
    rows = [Xq[i] for i in range(n)]
    for q in rows[:10]:  # warm-up, untimed
        model.predict(q, beam_size=a.beam_size, only_topk=k, threads=1)
    for i, q in enumerate(rows):
        t0 = time.perf_counter_ns()
        P = model.predict(q, beam_size=a.beam_size, only_topk=k, threads=1)
        ms[i] = (time.perf_counter_ns() - t0) / 1e6
        P = sp.csr_matrix(P)
        order = np.lexsort((P.indices, -P.data))  # by score, ties by label id
        m = order.size
        ids[i, :m] = P.indices[order]
        scores[i, :m] = P.data[order]
    np.savez(a.out / "ranked.npz", ids=ids, scores=scores, ms=ms)
    shutil.rmtree(mdir)
    c.write_result(a.out, {
        "library": "libpecos", "version": getattr(pecos, "__version__", "?"), "train_s": t_train.s,
        "peak_train_mb": peak, "rss_before_train_mb": rss0, "model_mb": model_mb, "requests": n,
        "single_ms": c.percentiles(ms),
        "params": {"tree": "given (xmr's)", "threshold": 0.1, "solver": "L2R_L2LOSS_SVC_DUAL", "negatives": "tfn",
                   "beam_size": a.beam_size, "only_topk": k, "threads": a.threads, "is_predict_only": True}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
