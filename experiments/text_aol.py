"""aol-q2site from raw text: xmr's own text pipeline against libpecos on the anchors' scikit-learn features.

Three commands, each writing a markdown table and its .json twin under experiments/results/ (report.publish)::

    .venv/bin/python -m experiments.text_aol tune       # feature choices, VALIDATION split only -> text_aol_validation
    .venv/bin/python -m experiments.text_aol bench      # xmr-text vs libpecos (+ libpecos-text, xmr) -> text_aol
    .venv/bin/python -m experiments.text_aol ablation   # word n-grams / char trigrams / both -> text_aol_ablation

Protocol: /work/shared/docs/anchors.md (aol-q2site rows, split, labels, XR-Linear hyper-parameters, metrics).
``xmr-text`` is xmr's product path: raw query text -> ``xmr.text.TextFeaturizer`` (fitted on the training
queries) -> ``XLinearModel`` through ``xmr.Retriever`` (runner: experiments/peers/run_xmr_text.py); a spec
``SPEC@lt=A`` also gives every label its host name as label text (``Retriever.train(label_texts=...)``, label
embedding A*PIFA + (1-A)*host-name features). libpecos and ``xmr`` run on the cached matrix data set
"aol-q2site" (the anchors' scikit-learn word 1-2 + char_wb 3-gram TF-IDF, PIFA); ``libpecos-text``
(experiments/peers/run_libpecos_text.py) is libpecos on the same features fitted from the raw-text folder with
the same host-name label text, the like-for-like rival of an ``@lt`` run. Every library runs in its own process
(launch.run_library), one after the other, in one run.

Tuning rule: feature choices (n-gram orders, block weights, min_df, tokenisation) are chosen ONLY on the
validation split, carved from the training period: training rows (QueryTime < 2006-05-01) with QueryTime
< VAL_START (2006-04-17) fit, the last two weeks of April validate, with the test split's rules (validation
labels unseen in the fitting rows dropped, then rows left without labels). The test split (May) is used by
``bench`` and ``ablation`` only, with the spec ``tune`` picked.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from experiments import datasets
from experiments.datasets import AOL, AOL_SPLIT, aol_instances, read_aol_rows
from experiments.peers.launch import LIBRARIES, RunResult, load_previous, prepare, run_library
from experiments.report import log, publish
from experiments.text_data import TextSplit, aol_path, aol_q2site_text

EXPERIMENTS = Path(__file__).resolve().parent
RESULTS = EXPERIMENTS / "results"
VAL_START = "2006-04-17"  # validation = the last two weeks of the training period
TEXT_DATA_VERSION = 2
# Chosen on the validation split (results/text_aol_validation.md): the best spec with host names as label text,
# and the best without (PIFA only, the anchors' protocol). bench defaults to both.
CHOSEN_SPEC = "word1-2+char@lt=0.3,word1-2:1.5+char"
# The ablation takes the blocks of the chosen specs at unit weight (one block alone has no weight to speak of).
ABLATION_SPEC = "word1-2+char@lt=0.3,word1-2+char"
XMR_TEXT = "xmr-text"
LP_TEXT = "libpecos-text"
TEXT_LIBS = (XMR_TEXT, LP_TEXT)


# --------------------------------------------------------------------------------------------- data
def validation_split(path: Path | None = None, start: str = VAL_START) -> TextSplit:
    """The training period split at ``start``: earlier rows fit, later rows validate (test rules applied)."""
    path = Path(path) if path is not None else aol_path()
    q_tr, y_tr, _, _, names = aol_instances(path)
    # aol_instances keeps every training row in file order; the times of the same rows, to split them.
    times = [when for _, when, _ in read_aol_rows(path) if when < AOL_SPLIT]
    if len(times) != len(q_tr):
        raise datasets.DatasetError(f"{path}: {len(times)} timed training rows but {len(q_tr)} instances")
    fit_q, fit_y, val_q, val_y = [], [], [], []
    for q, ys, when in zip(q_tr, y_tr, times):
        # hosts in name order within a row, so label ids number them the way aol_instances does
        (fit_q if when < start else val_q).append(q)
        (fit_y if when < start else val_y).append(sorted(names[i] for i in ys))
    known = {lab for labs in fit_y for lab in labs}
    kept_q, kept_y = [], []
    for q, labs in zip(val_q, val_y):
        labs = [lab for lab in labs if lab in known]
        if labs:
            kept_q.append(q)
            kept_y.append(labs)
    split = TextSplit(fit_q, fit_y, kept_q, kept_y)
    split.info = {"source": str(path), "fit": f"QueryTime < {start}", "validate": f"{start} <= QueryTime < "
                  f"{AOL_SPLIT}", "nr_train": len(fit_q), "nr_validation_rows": len(val_q),
                  "nr_test": len(kept_q), "nr_labels": len(known)}
    return split


def text_data_dir(which: str) -> Path:
    """Cache folder of the raw-text data the text runner reads ("test" or "validation")."""
    return datasets.CACHE / (f"{AOL}-text" if which == "test" else f"{AOL}-text-{which}")


def write_text_data(folder: Path, split: TextSplit) -> Path:
    """train.txt / test.txt (xmr.text_io format), labels.txt (id order) and meta.json, written atomically."""
    from xmr.model_io import write_dir_atomically
    from xmr.text_io import write_labelled_text

    names = split.label_names()

    def fill(tmp: Path) -> None:
        write_labelled_text(tmp / "train.txt", split.train_texts, split.train_labels)
        write_labelled_text(tmp / "test.txt", split.test_texts, split.test_labels)
        (tmp / "labels.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
        # label-side text (xmr.text_io.read_label_texts format): a host's own name is its only description
        (tmp / "label_texts.txt").write_text("".join(f"{n}\t{n}\n" for n in names), encoding="utf-8")
        meta = {"version": TEXT_DATA_VERSION, **split.info, "nr_labels": len(names),
                "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")

    return write_dir_atomically(folder, fill, lambda p: (p / "meta.json").is_file(), "text data set")


def build_text_data(which: str, force: bool = False) -> Path:
    """The raw-text folder of the test split (same rows and label ids as the "aol-q2site" cache) or validation."""
    folder = text_data_dir(which)
    try:
        ok = json.loads((folder / "meta.json").read_text()).get("version") == TEXT_DATA_VERSION
    except (OSError, ValueError):
        ok = False
    if ok and not force:
        return folder
    t0 = time.perf_counter()
    split = aol_q2site_text() if which == "test" else validation_split()
    if which == "test":
        cached = (datasets.path_of(AOL) / "labels.txt").read_text(encoding="utf-8").splitlines()
        if split.label_names() != cached:
            raise datasets.DatasetError(f"{AOL}: raw-text label order differs from the matrix cache's labels.txt")
    write_text_data(folder, split)
    log(f"[text_aol] wrote {which} text data ({len(split.train_texts)} / {len(split.test_texts)} rows) in "
        f"{time.perf_counter() - t0:.1f}s -> {folder}")
    return folder


# --------------------------------------------------------------------------------------------- features
def build_featurizer(spec: str, hashing: int | None = None):
    """An unfitted xmr.text.TextFeaturizer from a spec string (xmr.text syntax: "word1-2:1.5+char3")."""
    from xmr.text import TextFeaturizer

    return TextFeaturizer.from_spec(spec, hashing=hashing)


def anchors_features(train_texts: list[str], test_texts: list[str]):
    """The anchors' scikit-learn features (datasets.aol_featurizer), fitted on ``train_texts``: (X, X_test)."""
    import scipy.sparse as sp

    words, chars = datasets.aol_featurizer()
    X = sp.hstack([words.fit_transform(train_texts), chars.fit_transform(train_texts)], format="csr")
    Xt = sp.hstack([words.transform(test_texts), chars.transform(test_texts)], format="csr")
    return datasets.l2_normalize_rows(X), datasets.l2_normalize_rows(Xt)


def xlinear_params(threads: int, seed: int) -> dict:
    """XLinearModel.train keyword arguments of the anchors' protocol (as experiments/peers/run_xmr.py)."""
    from xmr.train import TrainParams

    params = TrainParams(loss="squared-hinge", threshold=0.1, negatives="tfn", Cp=1.0, Cn=1.0, bias=1.0,
                         threads=threads)
    return {"nr_splits": 16, "max_leaf_size": 100, "seed": seed, "train_params": params, "beam_size": 10,
            "topk": 10, "threads": threads, "allow_empty_rows": True}


# --------------------------------------------------------------------------------------------- tune
def parse_variant(spec: str) -> tuple[str, bool, float | None]:
    """"SPEC", "SPEC@lt" (host names as label text, concatenated with PIFA) or "SPEC@lt=A" (alpha A)."""
    base, _, opt = spec.partition("@")
    if not opt:
        return base, False, None
    if opt == "lt":
        return base, True, None
    if opt.startswith("lt="):
        return base, True, float(opt[3:])
    raise ValueError(f"bad variant {spec!r}: expected SPEC, SPEC@lt or SPEC@lt=ALPHA")


def tune_one(spec: str, split: TextSplit, seed: int, threads: int) -> dict:
    """Fit features on the split's training texts, train XR-Linear, score the held-out rows (in this process).

    xmr.text specs go through ``Retriever.train`` exactly as the product does (``@lt``: every host name is its
    own label text); ``anchors`` trains XLinearModel on the anchors' scikit-learn features.
    """
    from experiments.metrics import ranking_metrics
    from xmr.model import XLinearModel
    from xmr.retriever import Retriever

    names, Y, Yv = split.label_matrices()
    kw = xlinear_params(threads, seed)
    t0 = time.perf_counter()
    if spec.startswith(f"{LP_TEXT}:"):
        return tune_libpecos(spec, split, Yv, seed, threads)
    if spec == "anchors":
        X, Xv = anchors_features(split.train_texts, split.test_texts)
        feat_s = time.perf_counter() - t0
        model = XLinearModel.train(X, Y, **kw)
        nr_features = X.shape[1]
    else:
        base, label_text, alpha = parse_variant(spec)
        kw.pop("threads")
        ret = Retriever.train(split.train_texts, split.train_labels, features=build_featurizer(base),
                              label_texts={n: n for n in names} if label_text else None, alpha=alpha,
                              threads=threads, **kw)
        if ret.labels.names(range(ret.nr_labels)) != names:
            raise AssertionError("Retriever label ids differ from the split's label order")
        model, feat_s = ret.model, ret.meta["times"]["featurize_s"]
        Xv = ret.featurizer.transform(split.test_texts)
        nr_features = ret.featurizer.nr_features
    train_s = time.perf_counter() - t0 - feat_s
    P = model.predict(Xv, beam_size=10, topk=10, threads=threads)
    m, _ = ranking_metrics(Yv, P, k=10)
    return {"spec": spec, "seed": seed, "nr_features": int(nr_features), "P@1": 100 * m["P@1"],
            "R@10": 100 * m["R@10"], "MRR@10": 100 * m["MRR@10"], "featurize_s": feat_s, "train_s": train_s}


def tune_libpecos(spec: str, split: TextSplit, Yv, seed: int, threads: int) -> dict:
    """A "libpecos-text:anchors[@lt[=A]]" reference row: the libpecos text runner on the validation folder."""
    from experiments.metrics import ranking_metrics

    folder = build_text_data("validation")
    if (folder / "labels.txt").read_text(encoding="utf-8").splitlines() != split.label_names():
        raise datasets.DatasetError(f"{folder}: label order differs from the validation split's")
    _, label_text, alpha = parse_variant(spec.partition(":")[2])
    extra = (["--label-text"] if label_text else []) + (["--alpha", str(alpha)] if alpha is not None else [])
    out = datasets.CACHE / "runs" / "text_aol_tune" / f"{_slug(spec)}-seed{seed}"
    res = run_library(LP_TEXT, "validation", folder, out, threads=threads, n_single=10, seed=seed, extra=extra,
                      log=log)
    if not res.ok:
        raise RuntimeError(res.error)
    m, _ = ranking_metrics(Yv, res.predictions(), k=10)
    r = res.result
    return {"spec": spec, "seed": seed, "nr_features": int(r["nr_features"]), "P@1": 100 * m["P@1"],
            "R@10": 100 * m["R@10"], "MRR@10": 100 * m["MRR@10"],
            "featurize_s": r["train_breakdown_s"]["featurize_fit_transform_s"],
            "train_s": r["train_breakdown_s"]["total_s"]}


def summarize(runs: list[dict]) -> list[dict]:
    """Mean (and spread over seeds) of each spec's validation metrics, best MRR@10 first."""
    out = []
    for spec in dict.fromkeys(r["spec"] for r in runs):
        rs = [r for r in runs if r["spec"] == spec]
        row = {"spec": spec, "seeds": [r["seed"] for r in rs], "nr_features": rs[0]["nr_features"]}
        for m in ("P@1", "R@10", "MRR@10"):
            v = np.array([r[m] for r in rs])
            row[m], row[f"{m} sd"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        row["train_s"] = float(np.mean([r["train_s"] for r in rs]))
        out.append(row)
    return sorted(out, key=lambda r: -(r["R@10"] + r["MRR@10"]))


def render_tune(rows: list[dict], split: TextSplit, args, started: str) -> str:
    """Markdown of the validation sweep."""
    ref = next((r for r in rows if r["spec"] == "anchors"), None)
    lines = [
        "# aol-q2site text features: validation sweep (training period only)", "",
        f"Run started {started} UTC on {platform.node()}, threads={args.threads}, clustering seeds "
        f"{', '.join(map(str, sorted({x for r in rows for x in r['seeds']})))}"
        f"{' (merged with ' + str(args.merge) + ')' if args.merge else ''}. Fit: "
        f"{split.info['fit']} ({split.info['nr_train']:,} rows); validate: {split.info['validate']} "
        f"({split.info['nr_test']:,} rows with a label seen in the fit rows, of {split.info['nr_validation_rows']:,}; "
        f"{split.info['nr_labels']:,} labels). The test split (May 2006) is not read. Same XR-Linear protocol as "
        "anchors.md (PIFA, k-means 16/100, squared hinge, tfn, threshold 0.1, beam 10). Every spec is an xmr.text "
        "spec trained through `xmr.Retriever.train` (word = word n-grams of unicode `\\w+` tokens, default 1-3; "
        "char = marked char n-grams per token, default 3, min_df 2; `:w` = block weight), except `anchors` (the "
        "anchors' scikit-learn word 1-2 + char_wb 3-gram TF-IDF on XLinearModel, the features libpecos gets in "
        "the benchmark). `@lt`: every host name is also given as its own label text (`label_texts`), so the "
        "label embedding that builds the tree is [PIFA, features of the host name]; `@lt=A`: alpha*PIFA + "
        "(1-alpha)*label features. `libpecos-text:anchors@lt=A`: libpecos itself (experiments/peers/"
        "run_libpecos_text.py, its own process) on the anchors' features with the same host-name label text. "
        "Metrics are means over the seeds (± sample sd), sorted by R@10 + MRR@10; "
        f"**bold** = the spec(s) bench and ablation use by default (`{CHOSEN_SPEC}`). train_s excludes "
        "featurisation; timings are noisy (shared machine).", "",
        "| spec | features | P@1 | R@10 | MRR@10 | R@10 vs anchors | MRR@10 vs anchors | train_s |",
        "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sd = "" if np.isnan(r["R@10 sd"]) else f" ± {r['R@10 sd']:.2f}"
        sdm = "" if np.isnan(r["MRR@10 sd"]) else f" ± {r['MRR@10 sd']:.2f}"
        dr = f"{r['R@10'] - ref['R@10']:+.2f}" if ref else ""
        dm = f"{r['MRR@10'] - ref['MRR@10']:+.2f}" if ref else ""
        chosen = r["spec"] in CHOSEN_SPEC.split(",")
        name = f"**`{r['spec']}`**" if chosen else f"`{r['spec']}`"
        lines.append(f"| {name} | {r['nr_features']:,} | {r['P@1']:.2f} | {r['R@10']:.2f}{sd} | "
                     f"{r['MRR@10']:.2f}{sdm} | {dr} | {dm} | {r['train_s']:.1f} |")
    return "\n".join(lines + [""] + choice_lines(rows, ref))


def choice_lines(rows: list[dict], ref: dict | None) -> list[str]:
    """The reading of the sweep behind CHOSEN_SPEC (best plain xmr.text spec, best with label text, libpecos)."""
    if ref is None:
        return []

    def delta(r: dict) -> str:
        return (f"`{r['spec']}` ({r['R@10'] - ref['R@10']:+.2f} R@10, {r['MRR@10'] - ref['MRR@10']:+.2f} MRR@10 "
                "vs anchors)")

    ours = [r for r in rows if r["spec"] != "anchors" and not r["spec"].startswith(LP_TEXT)]
    plain = [r for r in ours if "@" not in r["spec"]]
    with_lt = [r for r in ours if "@" in r["spec"]]
    lp = [r for r in rows if r["spec"].startswith(LP_TEXT) and "@" in r["spec"]]
    out = ["## Reading", ""]
    if plain:
        out.append(f"- Without label text (the anchors' protocol, PIFA only) the best xmr.text spec is "
                   f"{delta(plain[0])}; the spread between specs is about one seed sd, so xmr.text's featurisation "
                   "is on a par with the anchors' scikit-learn features, not better. Word 1-2 grams instead of "
                   "1-3 give the same accuracy with ~40% fewer features (smaller model, faster training).")
    if with_lt:
        out.append(f"- With every host name as its own label text the best is {delta(with_lt[0])}: the label "
                   "embedding that builds the tree then also groups hosts by their names (queries, rankers and beam "
                   "search are unchanged).")
    if lp:
        out.append(f"- libpecos given the same host-name label text: {delta(lp[0])}. Most of the label-text gain "
                   "is the label text's, available to libpecos too (`pifa_lf_convex_combine`).")
    out += [f"- bench therefore runs `{CHOSEN_SPEC}` (best with label text, best without); the ablation takes "
            f"their blocks at unit weight (`{ABLATION_SPEC}`).", ""]
    return out


def cmd_tune(args) -> int:
    """Validation sweep over --specs -> text_aol_validation.md/.json."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    split = validation_split(start=args.val_start)
    log(f"[tune] fit {len(split.train_texts):,} rows, validate {len(split.test_texts):,} rows")
    specs = [s.strip() for s in args.specs.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    from tqdm.auto import tqdm

    for spec in tqdm(specs, desc="specs", unit="spec"):
        for seed in seeds:
            r = tune_one(spec, split, seed, args.threads)
            log(f"[tune] {spec} seed {seed}: P@1 {r['P@1']:.2f} R@10 {r['R@10']:.2f} MRR@10 {r['MRR@10']:.2f} "
                f"({r['nr_features']:,} features, train {r['train_s']:.1f}s)")
            runs.append(r)
    if args.merge:
        done = {(r["spec"], r["seed"]) for r in runs}
        old = json.loads(Path(args.merge).read_text())
        if old.get("split") != split.info:
            raise SystemExit(f"error: {args.merge} was run on another validation split: {old.get('split')}")
        runs = [r for r in old["runs"] if (r["spec"], r["seed"]) not in done] + runs
        log(f"[tune] merged {len(old['runs'])} earlier runs from {args.merge}")
    rows = summarize(runs)
    report = render_tune(rows, split, args, started)
    payload = {"started_utc": started, "split": split.info, "args": {k: str(v) for k, v in vars(args).items()
                                                                    if k != "func"}, "runs": runs, "rows": rows}
    return publish(args.out or RESULTS / "text_aol_validation.md", report, payload, [], "tune")


# --------------------------------------------------------------------------------------------- bench
def sklearn_featurization_cost(split: TextSplit, rows: np.ndarray, warmup: int = 10) -> dict:
    """What the anchors' scikit-learn featurisation costs (fit, batch texts/s, one query in us), in this process.

    libpecos and ``xmr`` consume pre-featurised matrices; a service built on them would pay this per query on
    top of their single-query latency.
    """
    import scipy.sparse as sp

    from experiments.peers import _common as c

    words, chars = datasets.aol_featurizer()
    t0 = time.perf_counter()
    datasets.l2_normalize_rows(sp.hstack([words.fit_transform(split.train_texts),
                                          chars.fit_transform(split.train_texts)], format="csr"))
    fit_s = time.perf_counter() - t0

    def transform(texts):
        return datasets.l2_normalize_rows(sp.hstack([words.transform(texts), chars.transform(texts)], format="csr"))

    batch_s, _ = c.time_batch(lambda: transform(split.test_texts))
    queries = [split.test_texts[int(i)] for i in rows]
    us = 1000 * c.time_single(lambda q: transform([q]), queries, warmup)
    return {"fit_transform_s": fit_s, "batch_s": batch_s, "texts_per_s": len(split.test_texts) / batch_s,
            "single_us": c.percentiles(us)}


def bench_row(res: RunResult, Y_test, sk: dict | None) -> dict:
    """bench_peers.row_of plus the featurisation columns (the anchors' sklearn cost for matrix-fed libraries)."""
    from experiments.bench_peers import row_of

    row = row_of(res, Y_test)
    if not row["ok"]:
        return row
    r = res.result
    if res.library in TEXT_LIBS:
        feat = r["train_breakdown_s"].get("featurize_fit_transform_s") or 0.0
        p = r["params"]
        spec = r["features"] + ("@lt" if p.get("label_text") else "") + (
            f"={p['alpha']:g}" if p.get("alpha") is not None else "")
        lt = (" + host names as label text" + (f" (alpha {p['alpha']:g})" if p.get("alpha") is not None else "")
              if p.get("label_text") else "")
        what = f"xmr.text `{r['features']}`" if res.library == XMR_TEXT else "anchors' sklearn, fitted in the runner"
        row.update({"spec": spec, "features": what + lt, "nr_features": r["nr_features"],
                    "train_model_s": r["train_s"] - feat, "featurize_fit_s": feat,
                    "batch_incl_s": r["batch_s"], "single_incl_p50_ms": r["single_ms"]["p50"],
                    "single_incl_p99_ms": r["single_ms"]["p99"], "single_incl_exact": True,
                    "featurize_texts_per_s": r["featurize_texts_per_s"],
                    "featurize_single_us": r["featurize_single_us"], "predict_batch_s": r["predict_batch_s"]})
    elif sk is not None:
        row.update({"features": "anchors' sklearn (cached matrices)", "nr_features": r.get("n_features"),
                    "train_model_s": r["train_s"], "featurize_fit_s": sk["fit_transform_s"],
                    "batch_incl_s": r["batch_s"] + sk["batch_s"],
                    "single_incl_p50_ms": r["single_ms"]["p50"] + sk["single_us"]["p50"] / 1000,
                    "single_incl_p99_ms": r["single_ms"]["p99"] + sk["single_us"]["p99"] / 1000,
                    "single_incl_exact": False, "featurize_texts_per_s": sk["texts_per_s"],
                    "featurize_single_us": sk["single_us"], "predict_batch_s": r["batch_s"]})
    return row


def bench_table(rows: list[dict]) -> list[str]:
    """The main markdown table of ``bench`` (and ``ablation``)."""
    cols = ["library", "features", "P@1", "R@10", "MRR@10", "train_s model", "featurise fit s",
            "batch s (incl. featurisation)", "single p50 / p99 ms (incl. featurisation)", "featurise texts/s",
            "featurise 1 query p50 / p99 us", "model MB"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        name = LIBRARIES[r["library"]][2]
        if not r["ok"]:
            lines.append(f"| {name} | FAILED (see json) |" + " |" * (len(cols) - 2))
            continue
        approx = "" if r.get("single_incl_exact") else "≈ "
        fs = r["featurize_single_us"]
        lines.append("| " + " | ".join([
            name, r["features"], f"{r['P@1']:.2f}", f"{r['R@10']:.2f}", f"{r['MRR@10']:.2f}",
            f"{r['train_model_s']:.2f}", f"{r['featurize_fit_s']:.2f}", f"{r['batch_incl_s']:.2f}",
            f"{approx}{r['single_incl_p50_ms']:.3f} / {r['single_incl_p99_ms']:.3f}",
            f"{r['featurize_texts_per_s']:,.0f}", f"{fs['p50']:.1f} / {fs['p99']:.1f}", f"{r['model_mb']:.1f}"])
            + " |")
    return lines


def text_targets(rows: list[dict], how: str = "same run") -> list[dict]:
    """Each xmr-text variant vs libpecos as in anchors.md, and vs libpecos-text given the same label text."""
    ok = [r for r in rows if r["ok"]]
    out = []
    for x in (r for r in ok if r["library"] == XMR_TEXT):
        suffix = x["spec"].partition("@")[2]
        rivals = [(r, "libpecos (anchors.md)") for r in ok if r["library"] == "libpecos"]
        rivals += [(r, f"libpecos-text `{r['spec']}`") for r in ok
                   if r["library"] == LP_TEXT and r["spec"].partition("@")[2] == suffix]
        for p, pname in rivals:
            for m in ("R@10", "MRR@10"):
                d = x[m] - p[m]
                out.append({"target": f"{m}: xmr-text `{x['spec']}` >= {pname} ({how})", "spec": x["spec"],
                            "rival": p.get("spec") or p["library"], "value": d, "met": bool(d >= 0),
                            "text": f"{d:+.2f} pts ({x[m]:.2f} vs {p[m]:.2f})"})
    return out


def seed_means(rows: list[dict]) -> list[dict]:
    """Per library: mean and sample sd of P@1, R@10, MRR@10 over the seeds it ran with."""
    out = []
    for lib, spec in dict.fromkeys((r["library"], r.get("spec")) for r in rows):
        rs = [r for r in rows if r["library"] == lib and r.get("spec") == spec and r["ok"]]
        if not rs:
            continue
        row = {"library": lib, "spec": spec, "features": rs[0]["features"], "ok": True,
               "seeds": [r["seed"] for r in rs]}
        for m in ("P@1", "R@10", "MRR@10"):
            v = np.array([r[m] for r in rs])
            row[m], row[f"{m} sd"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        out.append(row)
    return out


def run_all(libs: list[tuple[str, str | None]], args, runs_dir: Path, text_dir: Path) -> list[RunResult]:
    """Each (library, spec) in its own subprocess, one after the other (``args.reuse``: read earlier runs)."""
    results = []
    for lib, spec in libs:
        if getattr(args, "reuse", False):
            out = runs_dir / (f"{lib}-{_slug(spec)}" if lib in TEXT_LIBS else lib)
            results.append(load_previous(lib, AOL, out))
            continue
        if lib in TEXT_LIBS:
            base, label_text, alpha = parse_variant(spec)
            extra = [] if lib == LP_TEXT else ["--features", base] + (
                ["--hashing", str(args.hashing)] if args.hashing else [])
            extra += (["--label-text"] if label_text else []) + (["--alpha", str(alpha)] if alpha is not None else [])
            out = runs_dir / f"{lib}-{_slug(spec)}"
            res = run_library(lib, AOL, text_dir, out, threads=args.threads, n_single=args.n_single,
                              seed=args.seed, timeout=args.timeout, extra=extra, log=log)
        else:
            res = run_library(lib, AOL, datasets.path_of(AOL), runs_dir / lib, threads=args.threads,
                              n_single=args.n_single, seed=args.seed, timeout=args.timeout, log=log)
        results.append(res)
    return results


def _slug(spec: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in spec)


def _prepare(args, libs: list[str]) -> tuple[Path, TextSplit]:
    prepare([AOL], libs, log, "text_aol")
    text_dir = build_text_data("test", force=args.rebuild)
    split = aol_q2site_text()
    return text_dir, split


def cmd_bench(args) -> int:
    """xmr-text vs libpecos (and xmr on the same matrices as libpecos) -> text_aol.md/.json."""
    from experiments.peers import _common as c

    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
    variants = [v.strip() for v in args.features.split(",") if v.strip()]
    # libpecos from raw text gets the label text of each xmr-text variant that has some (same alpha)
    lp_variants = list(dict.fromkeys("anchors@" + v.partition("@")[2] for v in variants if "@" in v))
    text_dir, split = _prepare(args, [p for p in peers if p != XMR_TEXT])
    if LP_TEXT in peers and not any("@" in v for v in args.features.split(",")):
        peers.remove(LP_TEXT)  # without label text it would repeat the libpecos row
    Y_test = datasets.load(AOL, build_missing=False)[3]
    rows_single = c.single_rows(len(split.test_texts), args.n_single, 0)
    out_md = args.out or RESULTS / "text_aol.md"
    if args.reuse:
        sk = json.loads(out_md.with_suffix(".json").read_text())["sklearn_featurization"]
    else:
        log("[bench] timing the anchors' scikit-learn featurisation (this process)")
        sk = sklearn_featurization_cost(split, rows_single)
    runs_dir = args.runs_dir or datasets.CACHE / "runs" / "text_aol"
    rows, failures = [], []
    for seed in seeds:
        args.seed = seed
        plan = [(p, v) for p in peers
                for v in (variants if p == XMR_TEXT else lp_variants if p == LP_TEXT else [None])]
        results = run_all(plan, args, runs_dir / f"seed{seed}", text_dir)
        rows += [dict(bench_row(r, Y_test, sk), seed=seed) for r in results]
        failures += [r.error for r in results if not r.ok]
    first = [r for r in rows if r["seed"] == seeds[0]]
    checks = text_targets(first, f"seed {seeds[0]}, same run")
    means = seed_means(rows) if len(seeds) > 1 else []
    if means:
        checks += text_targets(means, f"mean over seeds {','.join(map(str, seeds))}")
    lines = [
        "# aol-q2site from raw text: xmr's own text pipeline vs libpecos", "",
        f"{'Report rebuilt (--reuse) ' if args.reuse else 'Run started '}{started} UTC on {platform.node()} "
        f"({platform.machine()}, python {platform.python_version()}), "
        f"threads={args.threads}, {args.n_single} single queries, clustering seed(s) {', '.join(map(str, seeds))}. "
        "Each library in its own process, one after the other. Protocol: /work/shared/docs/anchors.md; metrics "
        f"in percent over the {Y_test.shape[0]:,} test rows (May 2006), computed by experiments.metrics for "
        "every library.", "",
        f"- **xmr-text**: raw query text -> `xmr.text.TextFeaturizer` (spec(s) {', '.join(f'`{v}`' for v in variants)}, "
        "chosen on the validation split, see text_aol_validation.md) fitted on the training queries -> XR-Linear, "
        "trained, saved, reloaded and queried through `xmr.Retriever` (experiments/peers/run_xmr_text.py). Its "
        "batch and single timings include featurisation (raw text in, ranked hits out). `@lt`: each label's host "
        "name is given as its label text (`Retriever.train(label_texts=...)`, the product's `xmr text train "
        "--label-text`): the label embedding that builds the tree combines PIFA with the features of the host "
        "name (`@lt`: concatenated; `@lt=A`: A*PIFA + (1-A)*host-name features); queries, rankers and beam "
        "search are unchanged.",
        "- **libpecos-text** (experiments/peers/run_libpecos_text.py): the same raw-text folder, the anchors' "
        "scikit-learn featurisation fitted inside the runner (on the training texts plus the label texts, as "
        "xmr.Retriever does), libpecos with the SAME host-name label text (`pifa_lf_convex_combine`, same alpha): "
        "the like-for-like rival of an `@lt` row, since the anchors' protocol gives libpecos PIFA only.",
        "- **libpecos** and **xmr**: the cached matrix data set `aol-q2site` (the anchors' scikit-learn word 1-2 "
        "+ char_wb 3-gram TF-IDF). Their featurisation is not in their runners: its cost, measured in the bench "
        "process on the same texts, is added to their batch time and (≈, sum of medians) single latency.",
        "- train_s model = label embedding + clustering + rankers; featurise fit s = fitting the vectorisers and "
        "transforming the training texts. featurise texts/s = one batch transform of all test queries (xmr.text: "
        "first call on a freshly loaded featurizer, its per-token cache empty; it transforms each distinct text "
        f"once, and the test set has {len(set(split.test_texts)):,} distinct queries of {len(split.test_texts):,}). "
        "featurise 1 query = one text -> feature row (xmr.text `transform_one`; sklearn: both vectorisers' "
        "`transform([q])`, hstack, L2).", "",
        f"## Seed {seeds[0]}", "", *bench_table(first), "",
    ]
    if means:
        lines += [f"## Accuracy over clustering seeds {', '.join(map(str, seeds))} (mean ± sd)", "",
                  "| library | features | P@1 | R@10 | MRR@10 |", "|---|---|---|---|---|"]
        for m in means:
            lines.append(f"| {LIBRARIES[m['library']][2]} | {m['features']} | " + " | ".join(
                f"{m[k]:.2f} ± {m[k + ' sd']:.2f}" for k in ("P@1", "R@10", "MRR@10")) + " |")
        lines.append("")
    if checks:
        lines += ["## Target: xmr-text >= libpecos on R@10 and MRR@10", "",
                  "| target | value | verdict |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['text']} | {'met' if t['met'] else 'MISSED'} |" for t in checks]
        lines.append("")
    lines += ["Seed noise on this data (experiments/results/seed_study_10seeds.md): sd ≈ 0.1-0.15 pts on R@10 and "
              "≈ 0.08 on MRR@10 per library; differences of that size are not meaningful.", ""]
    lines += bench_reading(checks)
    if failures:
        lines += ["## Failed runs", ""] + [f"- {f.splitlines()[0]}" for f in failures] + [""]
    payload = {"started_utc": started, "args": {k: str(v) for k, v in vars(args).items() if k != "func"},
               "rows": rows, "seed_means": means, "targets": checks, "sklearn_featurization": sk,
               "failures": failures, "host": platform.node()}
    return publish(out_md, "\n".join(lines), payload, failures, "bench")


def bench_reading(checks: list[dict]) -> list[str]:
    """Plain-language verdicts from the seed-mean targets (or the single run's when only one seed ran)."""
    means = [t for t in checks if "mean over" in t["target"]] or checks
    out = []
    for spec in dict.fromkeys(t["spec"] for t in means):
        for rival in dict.fromkeys(t["rival"] for t in means if t["spec"] == spec):
            ts = [t for t in means if t["spec"] == spec and t["rival"] == rival]
            lo = min(t["value"] for t in ts)
            if lo >= 0.3:
                verdict = "above, by more than the seed noise"
            elif lo >= 0:
                verdict = "at or above, within the seed noise"
            elif lo >= -0.3:
                verdict = "level within the seed noise (slightly below on at least one metric)"
            else:
                verdict = "below"
            what = "libpecos as in anchors.md" if rival == "libpecos" else f"libpecos-text `{rival}`"
            vals = ", ".join(f"{t['target'].split(':')[0]} {t['value']:+.2f}" for t in ts)
            out.append(f"- xmr-text `{spec}` vs {what}: {verdict} ({vals} pts).")
    return (["## Reading", ""] + out + [""]) if out else []


def ablation_specs(spec: str) -> list[tuple[str, str]]:
    """(role, spec) of the ablation, for each variant in ``spec``: its word block alone, its char block alone, both."""
    out = []
    for variant in (v.strip() for v in spec.split(",") if v.strip()):
        base, _, opt = variant.partition("@")
        suffix = f"@{opt}" if opt else ""
        parts = base.replace(" ", "").split("+")
        word = next((p.split(":")[0] for p in parts if p.startswith("word")), "word")
        char = next((p.split(":")[0] for p in parts if p.startswith("char")), "char")
        out += [("word n-grams alone", word + suffix), ("char n-grams alone", char + suffix), ("both", variant)]
    return out


def cmd_ablation(args) -> int:
    """word alone / char alone / both, each through xmr-text -> text_aol_ablation.md/.json."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    text_dir, split = _prepare(args, [])
    Y_test = datasets.load(AOL, build_missing=False)[3]
    specs = ablation_specs(args.features)
    results = run_all([(XMR_TEXT, s) for _, s in specs], args,
                      args.runs_dir or datasets.CACHE / "runs" / "text_aol_ablation", text_dir)
    rows = []
    for (role, spec), res in zip(specs, results):
        row = bench_row(res, Y_test, None)
        row.update({"role": role, "spec": spec})
        rows.append(row)
    failures = [r.error for r in results if not r.ok]
    cols = ["features", "spec", "nr features", "P@1", "R@10", "MRR@10", "single p50 / p99 ms (incl. featurisation)",
            "featurise 1 query p50 us", "featurise texts/s", "train_s model", "model MB"]
    lines = ["# aol-q2site feature ablation (xmr's own text pipeline)", "",
             f"{'Report rebuilt (--reuse) ' if args.reuse else 'Run started '}{started} UTC on {platform.node()}, "
             f"threads={args.threads}, {args.n_single} single "
             f"queries, seed {args.seed}; each configuration in its own process through experiments/peers/"
             "run_xmr_text.py (xmr.Retriever, raw text in), test split of anchors.md. Latency includes "
             "featurisation. `@lt=A`: host names as label text, label embedding A*PIFA + (1-A)*host-name "
             "features (see text_aol.md); without it, PIFA only as in anchors.md. word = word n-grams of `\\w+` "
             "tokens; char = marked char 3-grams per token (min_df 2).", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if not r["ok"]:
            lines.append(f"| {r['role']} | `{r['spec']}` | FAILED |" + " |" * (len(cols) - 3))
            continue
        lines.append("| " + " | ".join([
            r["role"], f"`{r['spec']}`", f"{r['nr_features']:,}", f"{r['P@1']:.2f}", f"{r['R@10']:.2f}",
            f"{r['MRR@10']:.2f}", f"{r['single_incl_p50_ms']:.3f} / {r['single_incl_p99_ms']:.3f}",
            f"{r['featurize_single_us']['p50']:.1f}", f"{r['featurize_texts_per_s']:,.0f}",
            f"{r['train_model_s']:.2f}", f"{r['model_mb']:.1f}"]) + " |")
    lines.append("")
    if failures:
        lines += ["## Failed runs", ""] + [f"- {f.splitlines()[0]}" for f in failures] + [""]
    payload = {"started_utc": started, "args": {k: str(v) for k, v in vars(args).items() if k != "func"},
               "rows": rows, "failures": failures}
    return publish(args.out or RESULTS / "text_aol_ablation.md", "\n".join(lines), payload, failures, "ablation")


# --------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line: tune | bench | ablation."""
    ap = argparse.ArgumentParser(prog="python -m experiments.text_aol", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=2, help="threads for training and batch prediction")
    common.add_argument("--seed", type=int, default=0, help="clustering seed")
    common.add_argument("--out", type=Path, default=None, help="markdown report (a .json is written beside)")
    t = sub.add_parser("tune", parents=[common], help="feature sweep on the validation split (training period)")
    t.add_argument("--specs", default="anchors,word+char", help="comma-separated xmr.text specs ('SPEC@lt': host "
                   "names as label text, '@lt=A': with alpha A); 'anchors' = the anchors' scikit-learn features "
                   "(default: %(default)s)")
    t.add_argument("--seeds", default="0", help="comma-separated clustering seeds, metrics averaged")
    t.add_argument("--val-start", default=VAL_START, help="first QueryTime of the validation rows")
    t.add_argument("--merge", type=Path, default=None,
                   help="a .json of an earlier tune run on the same split: its runs join the table (a spec and "
                        "seed run again here replaces the earlier one)")
    t.set_defaults(func=cmd_tune)
    for name, func, helptext in (("bench", cmd_bench, "xmr-text vs libpecos on the test split"),
                                 ("ablation", cmd_ablation, "word alone / char alone / both on the test split")):
        p = sub.add_parser(name, parents=[common], help=helptext)
        p.add_argument("--features", default=CHOSEN_SPEC if name == "bench" else ABLATION_SPEC,
                       help="xmr.text spec of xmr-text, 'SPEC@lt' to add host names as label text; bench takes a "
                            "comma-separated list, one xmr-text run each (default: %(default)s)")
        p.add_argument("--hashing", type=int, default=None, help="hashing mode for xmr-text (features per block)")
        p.add_argument("--n-single", type=int, default=500, help="single queries timed")
        p.add_argument("--timeout", type=float, default=3600, help="seconds per run before it is killed")
        p.add_argument("--runs-dir", type=Path, default=None, help="per-run folders (default: experiments/.cache/"
                       "runs/text_aol[_ablation], git-ignored)")
        p.add_argument("--rebuild", action="store_true", help="rewrite the raw-text data folder")
        p.add_argument("--reuse", action="store_true", help="run nothing: rebuild the report from the runs folder "
                       "of an earlier run with the same options (and, for bench, its .json's sklearn timings)")
        if name == "bench":
            p.add_argument("--peers", default=f"{XMR_TEXT},{LP_TEXT},libpecos,xmr",
                           help="libraries, in run order (default: %(default)s)")
            p.add_argument("--seeds", default=None, help="comma-separated clustering seeds: every library runs "
                           "once per seed and the accuracy means are compared too (default: --seed alone)")
        p.set_defaults(func=func)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
