"""libpecos XR-Linear on one cached data set (run under the peers' venv python).

PIFA label embedding, hierarchical k-means (nr_splits=16, max_leaf_size=100, seed), squared-hinge dual solver
(L2R_L2LOSS_SVC_DUAL), tfn negatives, threshold=0.1, Cp=Cn=1, bias=1; saved, reloaded with is_predict_only=True,
predicted with beam_size=10, only_topk=10 (post-processor: libpecos default, l3-hinge).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
from _libpecos import train_xlinear  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Train, save, reload, time and write result.json / predictions.npz."""
    a = c.parse_args("libpecos", argv)
    import pecos
    from pecos.xmc import LabelEmbeddingFactory
    from pecos.xmc.xlinear.model import XLinearModel

    a.out.mkdir(parents=True, exist_ok=True)
    d = c.load_data(a.data)
    X, Y, Xt = d["X_train"], d["Y_train"], d["X_test"]
    rss0 = c.rss_mb()
    c.log(f"libpecos: training on {X.shape[0]} x {X.shape[1]}, {Y.shape[1]} labels, threads={a.threads}")
    with c.Timer() as t_train:
        emb = LabelEmbeddingFactory.create(Y, X, method="pifa", threads=a.threads)
        model = train_xlinear(X, Y, emb, a.seed, a.threads)
    peak = c.peak_rss_mb()
    c.log(f"libpecos: trained in {t_train.s:.2f}s, peak RSS {peak:.0f} MB")
    mdir, model_mb = c.save_model(a.out, lambda d: model.save(str(d)))
    del model, emb
    model = XLinearModel.load(str(mdir), is_predict_only=True)

    def predict(Q, threads):
        return model.predict(Q, beam_size=a.beam_size, only_topk=a.topk, threads=threads)

    predict(Xt[:2], a.threads)  # warm-up, untimed
    batch_s, P = c.time_batch(lambda: predict(Xt, a.threads))
    c.log(f"libpecos: batch predict of {Xt.shape[0]} rows in {batch_s:.3f}s")
    rows = c.single_rows(Xt.shape[0], a.n_single, a.single_seed)
    queries = [Xt[int(i)] for i in rows]
    ms = c.time_single(lambda q: predict(q, 1), queries, a.warmup)
    c.save_predictions(a.out, P, a.topk)
    if not a.keep_model:
        shutil.rmtree(mdir)
    c.write_result(a.out, {
        "library": "libpecos", "version": getattr(pecos, "__version__", "?"), "train_s": t_train.s,
        "batch_s": batch_s, **c.measured_fields(X, Y, Xt, rows, ms, peak, rss0, model_mb),
        "params": {"embedding": "pifa", "indexer": "hierarchicalkmeans", "nr_splits": 16, "max_leaf_size": 100,
                   "seed": a.seed, "threshold": 0.1, "solver": "L2R_L2LOSS_SVC_DUAL", "negatives": "tfn",
                   "beam_size": a.beam_size, "topk": a.topk, "threads": a.threads, "is_predict_only": True}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
