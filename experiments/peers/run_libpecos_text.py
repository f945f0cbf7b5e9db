"""libpecos XR-Linear from raw text: the anchors' scikit-learn featurisation fitted here, optional label text.

The libpecos counterpart of run_xmr_text.py, run under the peers' venv (``launch.run_library("libpecos-text",
...)``; experiments/text_aol.py registers the name). Reads the same data folder (``train.txt`` / ``test.txt`` as
``label1,label2<TAB>text``, ``labels.txt``, ``label_texts.txt``), fits ``experiments.datasets.aol_featurizer``
(word 1-2 + char_wb 3-gram sublinear TF-IDF, rows L2-normalised) on the training texts (plus the label texts
with ``--label-text``, as xmr.Retriever does), then trains exactly as run_libpecos.py (PIFA, hierarchical
k-means 16/100, squared-hinge dual, tfn, threshold 0.1, bias 1), except that with ``--label-text`` the label
embedding is ``pifa_lf_concat`` (or ``pifa_lf_convex_combine`` with ``--alpha``) of the label texts' features.
Saved, reloaded with is_predict_only=True; single queries are timed from raw text (featurisation included).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent.parent))  # repo root, for experiments.datasets (numpy / scipy / sklearn only)
import _common as c  # noqa: E402
from _libpecos import train_xlinear  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def text_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The text options; the rest goes to the runners' shared parser (``_common.parse_args``)."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--label-text", action="store_true", help="label features from label_texts.txt")
    ap.add_argument("--alpha", type=float, default=None, help="with --label-text: convex combination weight")
    ours, rest = ap.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__.strip() + "\n\ntext options:\n  --label-text   label features from label_texts.txt\n"
              "  --alpha A      with --label-text: A*PIFA + (1-A)*label features\n\nshared runner options:")
    return ours, rest


def read_lines(path: Path) -> list[tuple[str, str]]:
    """(left, right) of each ``left<TAB>right`` line. xmr.text_io cannot be imported in the peers' venv (numpy<2);
    the files were written by xmr.text_io.write_labelled_text, so a plain split is exact."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            left, tab, right = line.rstrip("\n").partition("\t")
            if not tab:
                raise SystemExit(f"{path}:{lineno}: no TAB")
            out.append((left, right))
    return out


def main(argv: list[str] | None = None) -> int:
    """Featurise, train, save, reload, time and write result.json / predictions.npz."""
    t_opts, rest = text_args(argv)
    a = c.parse_args("libpecos (anchors' featurisation from raw text)", rest)
    import pecos
    from pecos.xmc import LabelEmbeddingFactory
    from pecos.xmc.xlinear.model import XLinearModel

    from experiments.datasets import aol_featurizer, l2_normalize_rows

    a.out.mkdir(parents=True, exist_ok=True)
    names = (a.data / "labels.txt").read_text(encoding="utf-8").splitlines()
    ids = {n: i for i, n in enumerate(names)}
    train = read_lines(a.data / "train.txt")
    test = read_lines(a.data / "test.txt")
    texts, test_texts = [t for _, t in train], [t for _, t in test]

    def label_rows(rows):
        lists = [[ids[x] for x in labs.split(",") if x in ids] for labs, _ in rows]
        indptr = np.cumsum([0] + [len(r) for r in lists])
        ind = np.array([i for r in lists for i in r], np.int32)
        return sp.csr_matrix((np.ones(len(ind), np.float32), ind, indptr), shape=(len(rows), len(names)))

    Y = label_rows(train)
    side = None
    if t_opts.label_text:
        lt = dict(read_lines(a.data / "label_texts.txt"))
        side = [lt.get(n, "") for n in names]
    words, chars = aol_featurizer()

    def featurize(batch):
        return l2_normalize_rows(sp.hstack([words.transform(batch), chars.transform(batch)], format="csr"))

    rss0 = c.rss_mb()
    with c.Timer() as t_feat:
        fit_texts = texts + [t for t in (side or []) if t]
        words.fit(fit_texts)
        chars.fit(fit_texts)
        X = featurize(texts)
        LF = featurize(side) if side is not None else None
    c.log(f"libpecos-text: featurised {X.shape[0]} texts into {X.shape[1]} features in {t_feat.s:.2f}s; "
          f"label text {'yes' if side else 'no'}")
    with c.Timer() as t_train:
        if LF is None:
            emb = LabelEmbeddingFactory.create(Y, X, method="pifa", threads=a.threads)
        elif t_opts.alpha is None:
            emb = LabelEmbeddingFactory.create(Y, X, Z=LF, method="pifa_lf_concat", threads=a.threads)
        else:
            emb = LabelEmbeddingFactory.create(Y, X, Z=LF, method="pifa_lf_convex_combine", alpha=t_opts.alpha,
                                               threads=a.threads)
        model = train_xlinear(X, Y, emb, a.seed, a.threads)
    peak = c.peak_rss_mb()
    c.log(f"libpecos-text: trained in {t_train.s:.2f}s, peak RSS {peak:.0f} MB")
    mdir, model_mb = c.save_model(a.out, lambda d: model.save(str(d)))
    del model, emb
    model = XLinearModel.load(str(mdir), is_predict_only=True)

    with c.Timer() as t_tf:
        Xt = featurize(test_texts)
    model.predict(Xt[:2], beam_size=a.beam_size, only_topk=a.topk, threads=a.threads)  # warm-up, untimed
    predict_s, P = c.time_batch(lambda: model.predict(Xt, beam_size=a.beam_size, only_topk=a.topk,
                                                      threads=a.threads))
    rows = c.single_rows(len(test_texts), a.n_single, a.single_seed)
    queries = [test_texts[int(i)] for i in rows]
    ms = c.time_single(lambda q: model.predict(featurize([q]), beam_size=a.beam_size, only_topk=a.topk, threads=1),
                       queries, a.warmup)
    feat_ms = c.time_single(lambda q: featurize([q]), queries, a.warmup)
    c.log(f"libpecos-text: batch {t_tf.s + predict_s:.3f}s, single p50 {np.percentile(ms, 50):.3f} ms")
    c.save_predictions(a.out, P, a.topk)
    if not a.keep_model:
        shutil.rmtree(mdir)
    c.write_result(a.out, {
        "library": "libpecos-text", "version": getattr(pecos, "__version__", "?"),
        "train_s": t_feat.s + t_train.s,
        "train_breakdown_s": {"featurize_fit_transform_s": t_feat.s, "total_s": t_train.s},
        "batch_s": t_tf.s + predict_s, "featurize_batch_s": t_tf.s,
        "featurize_texts_per_s": len(test_texts) / t_tf.s, "n_test_unique_texts": len(set(test_texts)),
        "predict_batch_s": predict_s, "featurize_single_us": c.percentiles(1000 * feat_ms),
        "features": "anchors-sklearn", "nr_features": X.shape[1],
        **c.measured_fields(X, Y, Xt, rows, ms, peak, rss0, model_mb),
        "params": {"features": "anchors-sklearn", "label_text": side is not None, "alpha": t_opts.alpha,
                   "embedding": "pifa" if side is None else ("pifa_lf_concat" if t_opts.alpha is None
                                                            else "pifa_lf_convex_combine"),
                   "indexer": "hierarchicalkmeans", "nr_splits": 16, "max_leaf_size": 100, "seed": a.seed,
                   "threshold": 0.1, "solver": "L2R_L2LOSS_SVC_DUAL", "negatives": "tfn",
                   "beam_size": a.beam_size, "topk": a.topk, "threads": a.threads, "is_predict_only": True,
                   "single": "featurise([q]) + predict, raw text in"}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
