"""napkinXC PLT (defaults) on one cached data set (run under the peers' venv python).

PLT with the library's default hyper-parameters (hierarchical k-means tree, arity 2, max_leaves 100, liblinear
logistic loss, weights_threshold 0.1, beam/exact search as default), threads=--threads for training and batch
prediction, threads=1 for single queries; seed fixed for repeatability. The model lives in its output folder
(written by fit); it is reloaded from there before predicting.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Train, reload, time and write result.json / predictions.npz."""
    a = c.parse_args("napkinXC", argv)
    import napkinxc
    from napkinxc.models import PLT

    try:
        from importlib.metadata import version
        nxc_version = version("napkinxc")
    except Exception:  # noqa: BLE001
        nxc_version = getattr(napkinxc, "__version__", "?")
    a.out.mkdir(parents=True, exist_ok=True)
    d = c.load_data(a.data)
    X, Y, Xt = d["X_train"], d["Y_train"], d["X_test"]
    mdir = a.out / "model"
    if mdir.exists():
        shutil.rmtree(mdir)
    rss0 = c.rss_mb()
    c.log(f"napkinXC: training PLT on {X.shape[0]} x {X.shape[1]}, {Y.shape[1]} labels, threads={a.threads}")
    with c.Timer() as t_train:
        model = PLT(str(mdir), threads=a.threads, seed=a.seed)
        model.fit(X, Y)
    peak = c.peak_rss_mb()
    c.log(f"napkinXC: trained in {t_train.s:.2f}s, peak RSS {peak:.0f} MB")
    del model
    model_mb = c.dir_size_mb(mdir)
    model = PLT(str(mdir), threads=a.threads, seed=a.seed)
    model.load()

    def predict(Q):
        return model.predict_proba(Q, top_k=a.topk)

    predict(Xt[:2])  # warm-up, untimed
    batch_s, out = c.time_batch(lambda: predict(Xt))
    c.log(f"napkinXC: batch predict of {Xt.shape[0]} rows in {batch_s:.3f}s")
    P = c.csr_from_ranked([([l for l, _ in r], [s for _, s in r]) for r in out], Y.shape[1])
    model.set_params(threads=1)
    rows = c.single_rows(Xt.shape[0], a.n_single, a.single_seed)
    queries = [Xt[int(i)] for i in rows]
    ms = c.time_single(predict, queries, a.warmup)
    c.save_predictions(a.out, P, a.topk)
    if not a.keep_model:
        shutil.rmtree(mdir)
    c.write_result(a.out, {
        "library": "napkinXC", "version": nxc_version, "train_s": t_train.s, "batch_s": batch_s,
        **c.measured_fields(X, Y, Xt, rows, ms, peak, rss0, model_mb),
        "params": {"model": "PLT", "defaults": True, "seed": a.seed, "topk": a.topk, "threads": a.threads}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
