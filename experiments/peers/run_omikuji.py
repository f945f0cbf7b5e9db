"""omikuji (defaults, n_trees=3) on one cached data set (run under the peers' venv python).

omikuji trains from a file in the Extreme Classification Repository format, written (untimed) into the output
folder first; train_s covers ``Model.train_on_data`` (which parses that file, then builds and trains the trees).
Its Python API predicts one example at a time, so the "batch" is a loop over pre-converted test rows.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def write_xc_file(path: Path, X, Y) -> None:
    """XC repository text format: header 'n d L', then 'l1,l2 f:v f:v' (label-less rows start with a space)."""
    with open(path, "w") as f:
        f.write(f"{X.shape[0]} {X.shape[1]} {Y.shape[1]}\n")
        for i in range(X.shape[0]):
            labs = ",".join(map(str, Y.indices[Y.indptr[i]:Y.indptr[i + 1]]))
            lo, hi = X.indptr[i], X.indptr[i + 1]
            feats = " ".join(f"{j}:{v:.8g}" for j, v in zip(X.indices[lo:hi], X.data[lo:hi]))
            f.write(f"{labs} {feats}\n")


def pairs(X, i: int) -> list[tuple[int, float]]:
    """Row i of a CSR matrix as omikuji's (feature, value) list."""
    lo, hi = X.indptr[i], X.indptr[i + 1]
    return list(zip(X.indices[lo:hi].tolist(), X.data[lo:hi].tolist()))


def main(argv: list[str] | None = None) -> int:
    """Train, save, reload, time and write result.json / predictions.npz."""
    a = c.parse_args("omikuji", argv)
    import omikuji

    try:
        from importlib.metadata import version
        omk_version = version("omikuji")
    except Exception:  # noqa: BLE001
        omk_version = "?"
    a.out.mkdir(parents=True, exist_ok=True)
    d = c.load_data(a.data)
    X, Y, Xt = d["X_train"], d["Y_train"], d["X_test"]
    train_file = a.out / "train.xc.txt"
    write_xc_file(train_file, X, Y)
    rss0 = c.rss_mb()
    c.log(f"omikuji: training 3 trees on {X.shape[0]} x {X.shape[1]}, {Y.shape[1]} labels, threads={a.threads}")
    with c.Timer() as t_train:
        hp = omikuji.Model.default_hyper_param()
        hp.n_trees = 3
        model = omikuji.Model.train_on_data(str(train_file), hp, n_threads=a.threads)
    peak = c.peak_rss_mb()
    c.log(f"omikuji: trained in {t_train.s:.2f}s, peak RSS {peak:.0f} MB")
    train_file.unlink()
    mdir = a.out / "model"
    if mdir.exists():
        shutil.rmtree(mdir)
    mdir.mkdir()
    model.save(str(mdir))
    model_mb = c.dir_size_mb(mdir)
    del model
    model = omikuji.Model.load(str(mdir))
    model.init_prediction_thread_pool(a.threads)
    test_pairs = [pairs(Xt, i) for i in range(Xt.shape[0])]

    def predict(p):
        return model.predict(p, beam_size=a.beam_size, top_k=a.topk)

    predict(test_pairs[0])  # warm-up, untimed
    batch_s, out = c.time_batch(lambda: [predict(p) for p in test_pairs])
    c.log(f"omikuji: batch (loop) predict of {Xt.shape[0]} rows in {batch_s:.3f}s")
    P = c.csr_from_ranked([(np.array([l for l, _ in r], np.int64), np.array([s for _, s in r], np.float32))
                           for r in out], Y.shape[1])
    model.init_prediction_thread_pool(1)
    rows = c.single_rows(Xt.shape[0], a.n_single, a.single_seed)
    queries = [test_pairs[int(i)] for i in rows]
    ms = c.time_single(predict, queries, a.warmup)
    c.save_predictions(a.out, P, a.topk)
    if not a.keep_model:
        shutil.rmtree(mdir)
    c.write_result(a.out, {
        "library": "omikuji", "version": omk_version, "train_s": t_train.s, "batch_s": batch_s,
        **c.measured_fields(X, Y, Xt, rows, ms, peak, rss0, model_mb),
        "params": {"n_trees": 3, "defaults": True, "beam_size": a.beam_size, "topk": a.topk,
                   "threads": a.threads, "batch": "python loop of Model.predict"}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
