"""How training time and single-query latency grow with the number of labels: xmr vs libpecos.

aol-q2site restricted to its 1k, 4k, 16k most frequent labels and the full 68k (rows left without labels
dropped; features unchanged), each library in its own subprocess with the bench's runners and protocol.
Writes experiments/results/cost_growth.md (+ .json) and a PNG plot.

    .venv/bin/python -m experiments.cost_growth
    .venv/bin/python -m experiments.cost_growth --sizes 1k,4k --peers xmr
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from experiments import datasets
from experiments.bench_peers import default_runs_dir
from experiments.metrics import ranking_metrics
from experiments.peers.launch import MATRIX_LIBRARIES, load_previous, run_library
from experiments.report import log, publish

EXPERIMENTS = Path(__file__).resolve().parent
DEFAULT_OUT = EXPERIMENTS / "results" / "cost_growth.md"


def dataset_for(size: str) -> str:
    """Data set name of a size token: '1k' -> aol-q2site-1k, 'full' -> aol-q2site."""
    return datasets.AOL if size in ("full", "all") else datasets.canonical_name(f"{datasets.AOL}-{size}")


def plot(rows: list[dict], path: Path) -> None:
    """Two panels (training seconds; single-query p50/p99 ms) against the number of labels, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for lib, color in (("xmr", "tab:blue"), ("libpecos", "tab:orange")):
        rs = sorted((r for r in rows if r["library"] == lib and r["ok"]), key=lambda r: r["n_labels"])
        if not rs:
            continue
        n = [r["n_labels"] for r in rs]
        ax1.plot(n, [r["train_s"] for r in rs], "o-", color=color, label=lib)
        ax2.plot(n, [r["single_p50_ms"] for r in rs], "o-", color=color, label=f"{lib} p50")
        ax2.plot(n, [r["single_p99_ms"] for r in rs], "s--", color=color, alpha=0.7, label=f"{lib} p99")
    for ax, title, unit in ((ax1, "training time", "seconds"), (ax2, "single-query latency", "ms")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("number of labels (aol-q2site, most frequent)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(rows: list[dict], started: str, threads: int, n_single: int = 500) -> str:
    """Markdown table of the run."""
    lines = ["# Cost growth with the number of labels (aol-q2site)", "",
             f"Run started {started} UTC, threads={threads} for training, single queries one at a time (threads=1), "
             f"{n_single} random test rows. Same runners and protocol as bench_peers.py. One run each: noisy.", "",
             "| labels | train rows | test rows | library | train_s | single p50 ms | single p99 ms | P@1 | "
             "batch_s | model MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["ok"]:
            lines.append(f"| {r.get('n_labels', '?')} | | | {r['library']} | FAILED | | | | | |")
            continue
        lines.append(f"| {r['n_labels']:,} | {r['n_train']:,} | {r['n_test']:,} | {r['library']} | {r['train_s']:.2f} | "
                     f"{r['single_p50_ms']:.3f} | {r['single_p99_ms']:.3f} | {r['P@1']:.2f} | {r['batch_s']:.3f} | "
                     f"{r['model_mb']:.1f} |")
    by = {(r["dataset"], r["library"]): r for r in rows if r["ok"]}
    ratio_lines = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        x, p = by.get((ds, "xmr")), by.get((ds, "libpecos"))
        if x and p:
            ratio_lines.append(f"| {x['n_labels']:,} | {x['train_s'] / p['train_s']:.2f} | "
                               f"{x['single_p50_ms'] / p['single_p50_ms']:.2f} | "
                               f"{x['single_p99_ms'] / p['single_p99_ms']:.2f} |")
    if ratio_lines:
        lines += ["", "xmr / libpecos ratios:", "", "| labels | train | single p50 | single p99 |",
                  "|---|---|---|---|", *ratio_lines]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run xmr and libpecos on each restriction; exit code 1 if any run failed (partial outputs still written)."""
    ap = argparse.ArgumentParser(prog="python -m experiments.cost_growth", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1k,4k,16k,full", help="label counts (default: %(default)s)")
    ap.add_argument("--peers", default="xmr,libpecos", help="libraries (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-single", type=int, default=500)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown output; .json and .png beside it")
    ap.add_argument("--runs-dir", type=Path, default=None, help="default: experiments/.cache/runs/<out folder>-<out stem>")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--reuse", action="store_true", help="rebuild the outputs from an earlier run's folders")
    args = ap.parse_args(argv)
    libs = [p.strip().lower() for p in args.peers.split(",") if p.strip()]
    if any(p not in MATRIX_LIBRARIES for p in libs):
        print(f"error: libraries must be among {list(MATRIX_LIBRARIES)}", file=sys.stderr)
        return 2
    try:
        names = [dataset_for(s.strip()) for s in args.sizes.split(",") if s.strip()]
    except datasets.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    runs_dir = args.runs_dir or default_runs_dir(args.out)
    rows, failures = [], []
    for n in names:
        if not args.reuse:
            datasets.build(n, log=log)
        Y_test = datasets.load(n, build_missing=False)[3]
        for lib in libs:
            out = runs_dir / n / lib
            res = (load_previous(lib, n, out) if args.reuse else
                   run_library(lib, n, datasets.path_of(n), out, threads=args.threads, n_single=args.n_single,
                               timeout=args.timeout, log=log))
            row = {"dataset": n, "library": lib, "ok": res.ok, "n_labels": Y_test.shape[1]}
            if res.ok:
                r = res.result
                metrics, _ = ranking_metrics(Y_test, res.predictions(), k=10)
                row.update({"n_train": r["n_train"], "n_test": r["n_test"], "train_s": r["train_s"],
                            "batch_s": r["batch_s"], "single_p50_ms": r["single_ms"]["p50"],
                            "single_p99_ms": r["single_ms"]["p99"], "model_mb": r["model_mb"],
                            "peak_mb": r["peak_train_mb"], "P@1": 100 * metrics["P@1"]})
            else:
                failures.append(res.error)
                row["error"] = res.error
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out.with_suffix(".png"))
    report = render(rows, started, args.threads, args.n_single)
    return publish(args.out, report, {"started_utc": started, "rows": rows, "failures": failures}, failures,
                   "cost_growth")


if __name__ == "__main__":
    raise SystemExit(main())
