"""xmr's own text pipeline on one raw-text data folder: raw text -> xmr.text features -> XR-Linear -> hits.

Run under the project venv with the repository root importable (``launch.run_library("xmr-text", ...)`` does
both; ``experiments/text_aol.py`` registers the name). The data folder, written by ``experiments/text_aol.py``,
holds ``train.txt`` / ``test.txt`` (``label1,label2<TAB>text``, read with :mod:`xmr.text_io`) and ``labels.txt``
(label names in the id order of ``predictions.npz``, i.e. the order of the matrix data set the peers run on).

Same XR-Linear hyper-parameters as run_xmr.py / run_libpecos.py (PIFA, hierarchical k-means nr_splits=16,
max_leaf_size=100, squared-hinge dual, tfn negatives, threshold=0.1, bias=1, beam_size=10, topk=10). Training
goes through ``xmr.Retriever.train`` (featurizer fitted on the training texts, then ``XLinearModel.train``); the
retriever is saved, reloaded (memory-mapped, warmed) and then:

- batch: ``retriever.retrieve(test_texts)`` in one call, featurisation included (``batch_s``), and its parts
  (``featurize_batch_s`` = ``featurizer.transform``, ``predict_batch_s`` = ``model.predict`` on those rows);
  every measurement starts from a freshly loaded retriever (xmr.text's per-token cache empty);
- single: ``retriever.retrieve_one(text)`` per raw query, featurisation included (``single_ms``), and
  ``featurizer.transform_one(text)`` alone (``featurize_single_us``), threads=1.

Writes result.json / predictions.npz / topk.npy like every runner (see _common.py), with the extra fields
``features``, ``featurize_*`` and ``train_breakdown_s``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent.parent))  # repo root, for xmr / experiments when not installed
import _common as c  # noqa: E402

import numpy as np  # noqa: E402

DEFAULT_FEATURES = "word+char"


def text_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The text-pipeline options; the rest goes to the runners' shared parser (``_common.parse_args``)."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--features", default=DEFAULT_FEATURES,
                    help="xmr.text feature spec, e.g. 'word+char', 'word1-2:1.5+char3' (default: %(default)s); "
                         "experiments.text_aol.build_featurizer also takes its extended forms")
    ap.add_argument("--hashing", type=int, default=None, help="hashing mode with this many features per block")
    ap.add_argument("--label-text", action="store_true",
                    help="label-side text from the data folder's label_texts.txt (label<TAB>text) for the label "
                         "embedding (Retriever.train label_texts; PIFA and label features concatenated)")
    ap.add_argument("--alpha", type=float, default=None,
                    help="with --label-text: alpha*PIFA + (1-alpha)*label features instead of concatenating")
    ours, rest = ap.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__.strip() + "\n\ntext options:\n  --features SPEC   feature spec (default: word+char)\n"
              "  --hashing N       hashing mode with N features per block\n"
              "  --label-text      label-side text from label_texts.txt for the label embedding\n"
              "  --alpha A         with --label-text: convex combination instead of concatenation\n\n"
              "shared runner options:")
    return ours, rest


def read_split(folder: Path, name: str) -> tuple[list[str], list[list[str]]]:
    """(texts, label-name lists) of ``folder/name.txt``."""
    from xmr.text_io import read_labelled_text

    return read_labelled_text(folder / f"{name}.txt")


def main(argv: list[str] | None = None) -> int:
    """Train from raw text, save, reload, time, write result.json / predictions.npz."""
    t_opts, rest = text_args(argv)
    a = c.parse_args("xmr (own text pipeline)", rest)
    import xmr
    from experiments.text_aol import build_featurizer
    from xmr.retriever import Retriever
    from xmr.train import TrainParams

    a.out.mkdir(parents=True, exist_ok=True)
    texts, labels = read_split(a.data, "train")
    test_texts, test_labels = read_split(a.data, "test")
    names = (a.data / "labels.txt").read_text(encoding="utf-8").splitlines()
    ids = {n: i for i, n in enumerate(names)}
    label_texts = None
    if t_opts.label_text:
        from xmr.text_io import read_label_texts

        label_texts = read_label_texts(a.data / "label_texts.txt")
    rss0 = c.rss_mb()
    c.log(f"xmr-text: {len(texts)} training texts, {len(names)} labels, features {t_opts.features!r}, "
          f"label text {'yes' if label_texts else 'no'}, threads={a.threads}")
    params = TrainParams(loss="squared-hinge", threshold=0.1, negatives="tfn", Cp=1.0, Cn=1.0, bias=1.0,
                         threads=a.threads)
    featurizer = build_featurizer(t_opts.features, hashing=t_opts.hashing)
    with c.Timer() as t_train:
        ret = Retriever.train(texts, labels, features=featurizer, label_texts=label_texts, alpha=t_opts.alpha,
                              threads=a.threads, progress=False,
                              nr_splits=16, max_leaf_size=100, seed=a.seed, train_params=params,
                              beam_size=a.beam_size, topk=a.topk, allow_empty_rows=True)
    peak = c.peak_rss_mb()
    times = dict(ret.meta.get("times", {}))
    model_times = dict(ret.model.meta.get("times", {}))
    c.log(f"xmr-text: trained in {t_train.s:.2f}s (featurisation {times.get('featurize_s', float('nan')):.2f}s, "
          f"{ret.featurizer.nr_features} features), peak RSS {peak:.0f} MB")
    # Label ids follow first appearance in the training label lists, as the matrix data set's do; checked, so the
    # predictions below are in the peers' id space.
    trained = ret.labels.names(range(ret.nr_labels))
    if trained != names[: len(trained)]:
        c.log("xmr-text: note: label order differs from labels.txt; predictions are remapped by name")
    mdir, model_mb = c.save_model(a.out, ret.save)
    del ret
    # xmr.text keeps a bounded per-token cache: each measurement starts from a freshly loaded retriever, so no
    # figure profits from the test texts having been featurised by an earlier one.
    with c.Timer() as t_load:
        ret = Retriever.load(mdir)
    rows = c.single_rows(len(test_texts), a.n_single, a.single_seed)
    queries = [test_texts[int(i)] for i in rows]
    ms = c.time_single(lambda q: ret.retrieve_one(q, k=a.topk, beam_size=a.beam_size), queries, a.warmup)
    fz = Retriever.load(mdir).featurizer
    feat_ms = c.time_single(fz.transform_one, queries, a.warmup)
    c.log(f"xmr-text: single retrieve_one p50 {np.percentile(ms, 50):.3f} ms (featurisation p50 "
          f"{1000 * np.percentile(feat_ms, 50):.1f} us)")
    fz = Retriever.load(mdir).featurizer
    with c.Timer() as t_feat:
        Xt = fz.transform(test_texts)
    ret = Retriever.load(mdir)
    model = ret.model
    predict_s, _ = c.time_batch(lambda: model.predict(Xt, beam_size=a.beam_size, topk=a.topk, threads=a.threads))
    ret = Retriever.load(mdir)
    ret.retrieve(test_texts[:2], k=a.topk, beam_size=a.beam_size)  # warm-up, untimed (as the other runners)
    # one call, not time_batch's median of repeats: a repeat would find every test token in the featurizer's cache
    with c.Timer() as t_batch:
        hits = ret.retrieve(test_texts, k=a.topk, beam_size=a.beam_size)
    batch_s = t_batch.s
    c.log(f"xmr-text: batch retrieve of {len(test_texts)} raw texts in {batch_s:.3f}s (featurisation alone "
          f"{t_feat.s:.3f}s, search alone {predict_s:.3f}s)")
    rows_pred = []
    for r in hits:
        lab = np.array([ids[h.label] for h in r.hits], np.int32)
        rows_pred.append((lab, np.array([h.score for h in r.hits], np.float32)))
    P = c.csr_from_ranked(rows_pred, len(names))
    no_hits = sum(1 for r in hits if not r.hits)
    c.save_predictions(a.out, P, a.topk)
    if not a.keep_model:
        shutil.rmtree(mdir)
    shapes = [SimpleNamespace(shape=s) for s in ((len(texts), fz.nr_features), (len(texts), len(names)),
                                                 (len(test_texts), fz.nr_features))]
    c.write_result(a.out, {
        "library": "xmr-text", "version": getattr(xmr, "__version__", "?"), "train_s": t_train.s,
        "train_breakdown_s": {"featurize_fit_transform_s": times.get("featurize_s"), **model_times},
        "load_warm_s": t_load.s, "batch_s": batch_s,
        "featurize_batch_s": t_feat.s, "featurize_texts_per_s": len(test_texts) / t_feat.s,
        "n_test_unique_texts": len(set(test_texts)),
        "predict_batch_s": predict_s, "featurize_single_us": c.percentiles(1000 * feat_ms),
        "test_rows_without_hits": no_hits, "features": fz.spec, "nr_features": fz.nr_features,
        **c.measured_fields(*shapes, rows, ms, peak, rss0, model_mb),
        "params": {"features": fz.spec, "hashing": t_opts.hashing, "label_text": bool(label_texts),
                   "alpha": t_opts.alpha, "embedding": "pifa", "nr_splits": 16,
                   "max_leaf_size": 100, "seed": a.seed, "threshold": 0.1, "loss": "squared-hinge",
                   "negatives": "tfn", "beam_size": a.beam_size, "topk": a.topk, "threads": a.threads,
                   "single": "Retriever.retrieve_one (raw text in, featurisation included)"}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
