"""Cost growth to millions of labels on SYNTHETIC data: one process vs Ray, unsplit vs routed serving.

    .venv/bin/python -m experiments.scale_out                      # 100k, 1M and 4M labels
    .venv/bin/python -m experiments.scale_out --sizes 100k         # -> results/scale_out.{md,json,png}

The data is synthetic, made to look like the AOL query -> site task, and is used for cost only, never for
accuracy: L labels with power-law frequencies (every label once, then 2L more rows drawn with p ~ 1/rank: 3L
rows); each label has 3 signature words drawn from a Zipf vocabulary of max(20k, L/2) words; a query is 1-4
words (mean 2.6), each its label's signature word with probability 0.8, else a Zipf vocabulary word. Features are
binary word unigrams, L2-normalised, in the column order of an ``xmr`` word featurizer fitted on the vocabulary,
so the trained model also serves text queries.

Per size, on this 2-core machine, every step alone:
1. ``xmr train`` in one process (--threads 2) and ``xmr train --ray local:2`` (Ray started by the command, its
   start-up counted; 2 workers of one CPU), each a subprocess reporting its own peak RSS; Ray tasks report
   their workers' peak RSS. The two models must be identical (tree and every weight).
2. Model size on disk; a text retriever around the model, split in 2 (``xmr.shards``).
3. Single-query latency through gRPC on loopback, one call in flight, result cache off: ``xmr serve`` of the
   unsplit retriever against ``xmr route`` + 2 ``xmr serve --shard`` (the sharding experiment's protocol), and
   the server's resident memory after the run. In process, the split retriever must answer every test query
   exactly as the unsplit one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

RESULTS = Path(__file__).resolve().parent / "results" / "scale_out.md"
SIZES = {"100k": 100_000, "1m": 1_000_000, "4m": 4_000_000}
TEST_QUERIES = 2000


# ------------------------------------------------------------------------------------------------- data
def synthetic(L: int, seed: int = 0) -> dict:
    """Synthetic AOL-like rows: word ids per query (CSR pattern), one label per row, and test query word ids."""
    rng = np.random.default_rng(seed)
    V = max(20_000, L // 2)
    pw = 1.0 / (np.arange(V) + 10.0)
    pw /= pw.sum()
    signature = rng.choice(V, size=(L, 3), p=pw).astype(np.int32)
    pl = 1.0 / np.arange(1, L + 1)
    pl /= pl.sum()
    by_rank = rng.permutation(L).astype(np.int32)

    def rows(n_extra: int, every_label: bool) -> tuple[np.ndarray, sp.csr_matrix]:
        labels = by_rank[rng.choice(L, size=n_extra, p=pl)]
        if every_label:
            labels = rng.permutation(np.concatenate([np.arange(L, dtype=np.int32), labels]))
        n = labels.size
        k = rng.choice(np.arange(1, 5), size=n, p=[0.15, 0.35, 0.3, 0.2])
        row = np.repeat(np.arange(n), k)
        own = rng.random(row.size) < 0.8
        words = np.where(own, signature[labels[row], rng.integers(0, 3, row.size)],
                         rng.choice(V, size=row.size, p=pw)).astype(np.int32)
        W = sp.csr_matrix((np.ones(row.size, np.float32), (row, words)), shape=(n, V))
        W.sum_duplicates()
        W.data[:] = 1.0
        return labels, W

    labels, W = rows(2 * L, True)
    test_labels, W_test = rows(TEST_QUERIES, False)
    return {"V": V, "labels": labels, "W": W, "W_test": W_test}


def test_texts(data: dict) -> list[str]:
    """The held-out queries as text ("w12 w7")."""
    Wt = data["W_test"]
    return [" ".join(f"w{i}" for i in Wt.indices[Wt.indptr[r]:Wt.indptr[r + 1]]) for r in range(Wt.shape[0])]


def featurize(data: dict, out: Path) -> tuple[Path, Path]:
    """Save X (word columns in the featurizer's order, L2 rows), Y and the featurizer; return the paths of X and Y."""
    from xmr.text.featurizer import TextFeaturizer

    V = data["V"]
    feat = TextFeaturizer.from_spec("word1").fit([f"w{i}" for i in range(V)])
    vocab = feat.blocks[0][1].vocabulary_
    col = np.array([vocab[f"w{i}"] for i in range(V)], dtype=np.int32)
    W = data["W"]
    X = sp.csr_matrix((W.data / np.sqrt(np.repeat(np.diff(W.indptr), np.diff(W.indptr))).astype(np.float32),
                       col[W.indices], W.indptr), shape=W.shape)
    X.sort_indices()
    labels = data["labels"]
    n, L = labels.size, int(labels.max()) + 1
    Y = sp.csr_matrix((np.ones(n, np.float32), labels, np.arange(n + 1)), shape=(n, L))
    out.mkdir(parents=True, exist_ok=True)
    sp.save_npz(out / "X.npz", X, compressed=False)
    sp.save_npz(out / "Y.npz", Y, compressed=False)
    feat.save(out / "featurizer")
    return out / "X.npz", out / "Y.npz"


# ---------------------------------------------------------------------------------------------- training
def train_child(argv: list[str]) -> int:
    """``xmr train`` in this process, then one JSON line with this process's peak RSS (the driver's, with Ray)."""
    from xmr.cli import main as xmr_main

    rc = xmr_main(["train", *argv])
    print(json.dumps({"rc": rc, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    return rc


def train(x: Path, y: Path, model_dir: Path, extra: list[str]) -> dict:
    """One training subprocess: wall seconds, the model's stage times, peak RSS of the driver and the Ray workers."""
    from experiments.report import log
    from xmr.model import XLinearModel

    shutil.rmtree(model_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "experiments.scale_out", "train-child", "-x", str(x), "-y", str(y), "-m",
           str(model_dir), "--threads", "2", "-q", *extra]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    wall = time.perf_counter() - t0
    res = json.loads(out.stdout.strip().splitlines()[-1])
    meta = XLinearModel.load(model_dir).meta
    res.update(wall_s=wall, **meta["times"])
    tasks = meta.get("distributed", {}).get("tasks", [])
    workers: dict[int, float] = {}
    for t in tasks:
        workers[t["pid"]] = max(workers.get(t["pid"], 0.0), t["peak_rss_mb"])
    res["worker_peak_rss_mb"] = sorted(workers.values(), reverse=True)
    res["tasks"] = len(tasks)
    log(f"[scale_out] trained {model_dir.name} {' '.join(extra)}: {res['total_s']:.1f} s, driver peak "
        f"{res['peak_rss_mb']:.0f} MB, workers {res['worker_peak_rss_mb']}")
    return res


def same_model(a: Path, b: Path) -> bool:
    """Tree and every weight array identical."""
    from xmr.model import XLinearModel

    ma, mb = XLinearModel.load(a), XLinearModel.load(b)
    return ma.tree == mb.tree and all(
        np.array_equal(Wa.indptr, Wb.indptr) and np.array_equal(Wa.indices, Wb.indices)
        and np.array_equal(Wa.data, Wb.data) for Wa, Wb in zip(ma.weights, mb.weights))


# ----------------------------------------------------------------------------------------------- serving
def serve(work: Path, model_dir: Path, texts: list[str], duration: float) -> dict:
    """Retriever + split in 2; in-process equality; gRPC single-query latency unsplit vs routed; server RSS."""
    from experiments.sharding import dir_bytes, grpc_latency, in_process
    from xmr.labels import LabelSet
    from xmr.model import XLinearModel
    from xmr.retriever import Retriever
    from xmr.shards import Router, Shard, SplitRetriever, save_split, split
    from xmr.text.featurizer import TextFeaturizer

    model = XLinearModel.load(model_dir)
    retriever = Retriever(TextFeaturizer.load(work / "featurizer"), model,
                          LabelSet([f"site-{i}" for i in range(model.nr_labels)]))
    whole = retriever.save(work / "retriever")
    router, parts = split(retriever, 2)
    paths = save_split(router, parts, work / "split")
    res = {"sizes_mb": {"retriever": dir_bytes(whole) / 2**20, **{p.name: dir_bytes(p) / 2**20 for p in paths}}}
    sr = SplitRetriever(Router.load(paths[0]), [Shard.load(p) for p in paths[1:]])
    res["in_process"] = in_process(retriever, sr, texts)
    del retriever, router, parts, sr, model
    reqfile = work / "queries.json"
    reqfile.write_text(json.dumps(texts))
    res.update(grpc_latency(whole, paths, "m", reqfile, duration))
    return res


# -------------------------------------------------------------------------------------------------- report
def plot(rows: list[dict], path: Path) -> None:
    """Training time, peak memory and single-query latency against the number of labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["labels"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(n, [r["one"]["total_s"] for r in rows], "o-", label="1 process, 2 threads")
    axes[0].plot(n, [r["ray"]["total_s"] for r in rows], "s-", label="Ray, 2 workers (start-up included)")
    axes[1].plot(n, [r["one"]["peak_rss_mb"] for r in rows], "o-", label="1 process")
    axes[1].plot(n, [r["ray"]["peak_rss_mb"] for r in rows], "s-", label="Ray driver")
    axes[1].plot(n, [max(r["ray"]["worker_peak_rss_mb"]) for r in rows], "^-", label="Ray worker (largest)")
    axes[1].plot(n, [r["model_mb"] for r in rows], "x--", label="model on disk")
    for key, name, color in (("grpc_whole", "unsplit", "tab:blue"), ("grpc_routed", "router + 2 shards", "tab:orange")):
        axes[2].plot(n, [r["serve"][key]["p50_ms"] for r in rows], "o-", color=color, label=f"{name} p50")
        axes[2].plot(n, [r["serve"][key]["p99_ms"] for r in rows], "s--", color=color, alpha=0.6, label=f"{name} p99")
    for ax, title, unit in zip(axes, ("training time", "peak memory", "single-query latency (gRPC)"),
                               ("seconds", "MB", "ms")):
        ax.set_xscale("log")
        ax.set_yscale("log" if ax is not axes[2] else "linear")
        ax.set_xlabel("labels (SYNTHETIC, 3 rows per label)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(rows: list[dict], started: str) -> str:
    """The markdown report."""
    out = ["# Cost growth to millions of labels (SYNTHETIC data, cost only; 2-core machine, one run)", "",
           f"Run started {started} UTC. Protocol and data: experiments/scale_out.py docstring. The synthetic "
           "data imitates AOL query -> site (power-law label frequencies, 1-4 word queries, 3 rows per label); "
           "it measures cost, never accuracy.", "",
           "## Training: one process (2 threads) vs Ray (2 workers of 1 CPU, `--ray local:2`)", "",
           "| labels | rows | nnz(X) | 1 process s | Ray s | Ray / 1 process | identical model | "
           "1 process peak MB | Ray driver peak MB | Ray worker peaks MB | model MB |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, y = r["one"], r["ray"]
        out.append(f"| {r['labels']:,} | {r['rows']:,} | {r['nnz']:,} | {o['total_s']:.1f} | {y['total_s']:.1f} | "
                   f"{y['total_s'] / o['total_s']:.2f} | {'yes' if r['identical'] else '**NO**'} | "
                   f"{o['peak_rss_mb']:.0f} | {y['peak_rss_mb']:.0f} | "
                   f"{', '.join(f'{m:.0f}' for m in y['worker_peak_rss_mb'])} | {r['model_mb']:.0f} |")
    out += ["", "Stage seconds (embeddings / clustering / rankers), 1 process vs Ray:", "",
            "| labels | 1 process | Ray |", "|---|---|---|"]
    for r in rows:
        o, y = r["one"], r["ray"]
        out.append(f"| {r['labels']:,} | {o['label_embeddings_s']:.1f} / {o['clustering_s']:.1f} / "
                   f"{o['rankers_s']:.1f} | {y['label_embeddings_s']:.1f} / {y['clustering_s']:.1f} / "
                   f"{y['rankers_s']:.1f} |")
    out += ["", "## Serving: one call in flight through gRPC on loopback, result cache off", "",
            "| labels | split answers differ | unsplit p50 / p99 ms | routed p50 / p99 ms | router adds p50 ms | "
            "unsplit server RSS MB | router RSS MB | shard server RSS MB | retriever MB | router MB | shard MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["serve"]
        w, t, mb = s["grpc_whole"], s["grpc_routed"], s["sizes_mb"]
        out.append(f"| {r['labels']:,} | {s['in_process']['mismatches']} of {s['in_process']['queries']:,} | "
                   f"{w['p50_ms']:.3f} / {w['p99_ms']:.3f} | {t['p50_ms']:.3f} / {t['p99_ms']:.3f} | "
                   f"{t['p50_ms'] - w['p50_ms']:.3f} | {w['server_rss_mb']:.0f} | {t['server_rss_mb']:.0f} | "
                   f"{', '.join(f'{m:.0f}' for m in s['shard_rss_mb'])} | {mb['retriever']:.0f} | "
                   f"{mb['router']:.0f} | {', '.join(f'{v:.0f}' for k, v in mb.items() if k.startswith('shard'))} |")
    big = rows[-1]
    mb = big["serve"]["sizes_mb"]
    out += ["", f"At {big['labels']:,} labels the router (featurizer and every level above the labels) is "
            f"{mb['router'] / mb['retriever']:.0%} of the retriever on disk: on this data (3 short queries per label) "
            "the upper levels hold most of the weights, and the router needs them all to keep the answers exact. "
            "Servers hold 4-6x the model's size on disk: the search layouts (hash tables at load <= 1/2) trade "
            "memory for speed."]
    out += ["", "Peak memory is each process's own maximum resident set (Ray workers: the largest over their "
            "tasks, zero-copy object-store pages they read included); Ray's own raylet and GCS processes are not "
            "counted. Models are memory-mapped when served, so a server's RSS counts only the pages its queries "
            "touched; the model size on disk is what a server needs resident for steady latency.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run every size and write the report."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train-child"]:
        return train_child(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m experiments.scale_out", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100k,1m,4m", help="comma-separated sizes of 100k, 1m, 4m (default all)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per gRPC latency run (default 8)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--serve-only", action="store_true",
                    help="keep the training rows of the last report (same data, same models) and measure serving again")
    args = ap.parse_args(argv)
    from experiments.datasets import CACHE
    from experiments.report import log, publish

    sizes = [s.strip().lower() for s in args.sizes.split(",")]
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        ap.error(f"unknown size(s) {bad}; choose from {list(SIZES)}")
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    previous: dict[str, dict] = {}
    if args.serve_only:
        last = json.loads(args.out.with_suffix(".json").read_text())
        previous = {r["size"]: r for r in last["rows"]}
        started = f"{last['started']} (training), serving measured again {started}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows, failures = [], []
    for size in sizes:
        L = SIZES[size]
        work = CACHE / "scale_out" / size
        t0 = time.perf_counter()
        data = synthetic(L)
        texts = test_texts(data)
        if args.serve_only:
            row = {k: v for k, v in previous[size].items() if k != "serve"}
        else:
            x, y = featurize(data, work)
            row = {"size": size, "labels": L, "rows": int(data["labels"].size), "nnz": int(data["W"].nnz),
                   "vocabulary": data["V"], "data_s": time.perf_counter() - t0}
            log(f"[scale_out] {size}: {row['rows']:,} rows, {row['nnz']:,} nonzeros in {row['data_s']:.0f} s")
            row["one"] = train(x, y, work / "model-one", [])
            row["ray"] = train(x, y, work / "model-ray", ["--ray", "local:2"])
            row["identical"] = same_model(work / "model-one", work / "model-ray")
        del data
        if not row["identical"]:
            failures.append(f"{size}: Ray and one-process models differ")
        from experiments.sharding import dir_bytes

        row["model_mb"] = dir_bytes(work / "model-one") / 2**20
        row["serve"] = serve(work, work / "model-one", texts, args.duration)
        if row["serve"]["in_process"]["mismatches"]:
            failures.append(f"{size}: split retriever differs on {row['serve']['in_process']['mismatches']} queries")
        rows.append(row)
        for d in ("model-ray", "retriever", "split"):
            shutil.rmtree(work / d, ignore_errors=True)
        plot(rows, args.out.with_suffix(".png"))
        publish(args.out, render(rows, started), {"started": started, "rows": rows}, [], "scale_out")
    return publish(args.out, render(rows, started), {"started": started, "rows": rows}, failures, "scale_out")


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    sys.exit(main())
