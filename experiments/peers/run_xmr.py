"""xmr XR-Linear on one cached data set (run under the project venv python, with the repo root importable).

Same hyper-parameters as run_libpecos.py: PIFA, hierarchical k-means (nr_splits=16, max_leaf_size=100, seed),
squared-hinge dual solver, tfn negatives, threshold=0.1, bias=1; saved, reloaded (memory-mapped) and warmed,
predicted with beam_size=10, topk=10 (l3-hinge). Single queries go through ``predict_one`` (one thread).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent.parent))  # repo root, for xmr / indexing when not installed
import _common as c  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Train, save, reload, time and write result.json / predictions.npz."""
    a = c.parse_args("xmr", argv)
    import xmr
    from xmr.model import XLinearModel
    from xmr.train import TrainParams

    a.out.mkdir(parents=True, exist_ok=True)
    d = c.load_data(a.data)
    X, Y, Xt = d["X_train"], d["Y_train"], d["X_test"]
    rss0 = c.rss_mb()
    c.log(f"xmr: training on {X.shape[0]} x {X.shape[1]}, {Y.shape[1]} labels, threads={a.threads}")
    params = TrainParams(loss="squared-hinge", threshold=0.1, negatives="tfn", Cp=1.0, Cn=1.0, bias=1.0,
                         threads=a.threads)
    # Label-less training rows stay in, as negatives of the top level, exactly as libpecos uses them.
    with c.Timer() as t_train:
        model = XLinearModel.train(X, Y, nr_splits=16, max_leaf_size=100, seed=a.seed, train_params=params,
                                   beam_size=a.beam_size, topk=a.topk, threads=a.threads, allow_empty_rows=True)
    peak = c.peak_rss_mb()
    c.log(f"xmr: trained in {t_train.s:.2f}s, peak RSS {peak:.0f} MB")
    times = dict(getattr(model, "meta", {}).get("times", {}))
    mdir, model_mb = c.save_model(a.out, model.save)
    del model
    with c.Timer() as t_load:
        model = XLinearModel.load(mdir)

    def predict(Q, threads):
        return model.predict(Q, beam_size=a.beam_size, topk=a.topk, threads=threads)

    predict(Xt[:2], a.threads)  # warm-up, untimed
    batch_s, P = c.time_batch(lambda: predict(Xt, a.threads))
    c.log(f"xmr: batch predict of {Xt.shape[0]} rows in {batch_s:.3f}s")
    rows = c.single_rows(Xt.shape[0], a.n_single, a.single_seed)
    queries = [Xt[int(i)] for i in rows]
    ms = c.time_single(lambda q: model.predict_one(q, beam_size=a.beam_size, topk=a.topk), queries, a.warmup)
    c.save_predictions(a.out, P, a.topk)
    if not a.keep_model:
        shutil.rmtree(mdir)
    c.write_result(a.out, {
        "library": "xmr", "version": getattr(xmr, "__version__", "?"), "train_s": t_train.s,
        "train_breakdown_s": times, "load_warm_s": t_load.s,
        "batch_s": batch_s, **c.measured_fields(X, Y, Xt, rows, ms, peak, rss0, model_mb),
        "params": {"embedding": "pifa", "nr_splits": 16, "max_leaf_size": 100, "seed": a.seed, "threshold": 0.1,
                   "loss": "squared-hinge", "negatives": "tfn", "beam_size": a.beam_size, "topk": a.topk,
                   "threads": a.threads, "single": "predict_one"}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
