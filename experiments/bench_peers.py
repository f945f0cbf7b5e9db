"""Benchmark xmr against its peers (libpecos, napkinXC, omikuji) on the shared data, following anchors.md.

Every (data set, library) pair runs in its own subprocess (peak memory is per library), all in this one run;
metrics are computed here, with the same code for every library, from the predictions each runner saved.
Writes ONE markdown table (+ the xmr-vs-libpecos targets) to --out and the raw numbers to the matching .json.

    .venv/bin/python -m experiments.bench_peers                       # everything (several minutes)
    .venv/bin/python -m experiments.bench_peers --datasets bibtex --peers xmr,libpecos
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

from experiments import datasets
from experiments.metrics import ranking_metrics
from experiments.peers.launch import (LIBRARIES, MATRIX_LIBRARIES, RunResult, load_previous, parse_libraries, prepare,
                                      run_library)
from experiments.report import log, publish

EXPERIMENTS = Path(__file__).resolve().parent
DEFAULT_OUT = EXPERIMENTS / "results" / "bench_peers.md"
COLUMNS = ["data", "library", "P@1", "P@3", "P@5", "R@10", "MRR@10", "train_s", "batch_s",
           "single p50 / p99 ms", "peak MB", "model MB"]
# (name, row key, target, "ratio" | "delta"): xmr vs libpecos in the same run.
TARGETS = [
    ("P@1 delta", "P@1", -0.3, "delta"),
    ("P@5 delta", "P@5", -0.3, "delta"),
    ("R@10 delta", "R@10", -0.3, "delta"),
    ("train time ratio", "train_s", 1.0, "ratio"),
    ("single p50 ratio", "single_p50_ms", 0.25, "ratio"),
    ("single p99 ratio", "single_p99_ms", 0.35, "ratio"),
    ("batch time ratio", "batch_s", 0.5, "ratio"),
    ("peak memory ratio", "peak_mb", 1.2, "ratio"),
    ("model size ratio", "model_mb", 1.2, "ratio"),
]


def default_runs_dir(out: Path) -> Path:
    """Per-run outputs (models, predictions, logs) live in the git-ignored cache, one folder per report."""
    return EXPERIMENTS / ".cache" / "runs" / f"{out.resolve().parent.name}-{out.stem}"


def row_of(res: RunResult, Y_test) -> dict:
    """Table row (metrics in percent) of one finished run."""
    r = res.result
    row = {"data": res.dataset, "library": res.library, "ok": res.ok}
    if not res.ok:
        row["error"] = res.error
        return row
    metrics, impl = ranking_metrics(Y_test, res.predictions(), k=10)
    row.update({m: 100 * metrics[m] for m in ("P@1", "P@3", "P@5", "R@10", "MRR@10")})
    row.update({"metrics_impl": impl, "version": r.get("version"), "train_s": r["train_s"], "batch_s": r["batch_s"],
                "single_p50_ms": r["single_ms"]["p50"], "single_p99_ms": r["single_ms"]["p99"],
                "peak_mb": r["peak_train_mb"], "rss_before_train_mb": r.get("rss_before_train_mb"),
                "model_mb": r["model_mb"], "single_rows_sha1": r.get("single_rows_sha1"),
                "n_train": r.get("n_train"), "n_test": r.get("n_test"), "n_labels": r.get("n_labels"),
                "wall_s": res.wall_s})
    return row


def top10_agreement(a: RunResult, b: RunResult) -> dict:
    """Fraction of test rows whose ranked top-10 lists (and sets) are identical between two runs."""
    ta, tb = a.topk(), b.topk()
    if ta.shape != tb.shape:
        return {"rows": 0, "identical_lists": float("nan"), "identical_sets": float("nan")}
    same_list = np.all(ta == tb, axis=1)
    same_set = np.all(np.sort(ta, axis=1) == np.sort(tb, axis=1), axis=1)
    top1 = ta[:, 0] == tb[:, 0]
    return {"rows": int(ta.shape[0]), "identical_lists": float(same_list.mean()),
            "identical_sets": float(same_set.mean()), "identical_top1": float(top1.mean())}


def _fmt(v: object, nd: int = 2) -> str:
    return f"{v:.{nd}f}" if isinstance(v, float) else ("" if v is None else str(v))


def _time(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}"


def table_lines(rows: list[dict], label_counts: dict[str, int]) -> list[str]:
    """The markdown results table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    last = None
    for r in rows:
        data = "" if r["data"] == last else f"{r['data']} ({label_counts.get(r['data'], '?'):,} labels)"
        last = r["data"]
        lib = LIBRARIES[r["library"]][2]
        if not r["ok"]:
            lines.append(f"| {data} | {lib} | FAILED (see json) |" + " |" * (len(COLUMNS) - 3))
            continue
        lines.append("| " + " | ".join([
            data, lib, *(f"{r[m]:.2f}" for m in ("P@1", "P@3", "P@5", "R@10", "MRR@10")),
            _time(r["train_s"]), _time(r["batch_s"]), f"{r['single_p50_ms']:.3f} / {r['single_p99_ms']:.3f}",
            f"{r['peak_mb']:.0f}", f"{r['model_mb']:.1f}"]) + " |")
    return lines


def targets(rows: list[dict]) -> list[dict]:
    """xmr-vs-libpecos target checks per data set (only where both ran)."""
    out = []
    by = {(r["data"], r["library"]): r for r in rows if r["ok"]}
    for data in dict.fromkeys(r["data"] for r in rows):
        x, p = by.get((data, "xmr")), by.get((data, "libpecos"))
        if x is None or p is None:
            continue
        for name, key, target, kind in TARGETS:
            if kind == "delta":
                value = x[key] - p[key]
                met = value >= target
                margin = value - target
                text = f"{value:+.2f} pts (xmr {x[key]:.2f} vs libpecos {p[key]:.2f}; target >= {target:+.1f})"
                how = f"met with {margin:.2f} pts to spare" if met else f"MISSED by {-margin:.2f} pts"
            else:
                value = x[key] / p[key] if p[key] > 0 else float("inf")
                met = value <= target
                text = f"{value:.3f}x (xmr {x[key]:.4g} vs libpecos {p[key]:.4g}; target <= {target}x)"
                how = (f"met ({(1 - value / target) * 100:.0f}% under)" if met
                       else f"MISSED by {value - target:.3f}x ({(value / target - 1) * 100:.0f}% over)")
            out.append({"data": data, "target": name, "value": value, "goal": target, "met": bool(met),
                        "text": text, "verdict": how})
    return out


def render(rows: list[dict], checks: list[dict], agreement: dict, label_counts: dict[str, int], args,
           started: str, failures: list[str]) -> str:
    """The whole markdown report."""
    impls = sorted({r.get("metrics_impl") for r in rows if r.get("metrics_impl")})
    lines = [
        "# xmr vs peers",
        "",
        f"Run started {started} UTC on {platform.node()} ({platform.machine()}, python {platform.python_version()}), "
        f"threads={args.threads}, {args.n_single} single queries. Protocol: experiments/README.md and "
        "/work/shared/docs/anchors.md. Metrics in percent (rows with >= 1 true label), computed by "
        f"{', '.join(impls) or 'n/a'} for every library. train_s = label embedding + clustering + training; "
        "batch_s = whole test set in one predict call (median of 3 calls when a call takes under 2 s); "
        "single = 1 x d CSR rows one at a time, threads=1; "
        "peak MB = peak RSS of the runner process at the end of training (data loaded included); "
        "model MB = saved model folder. One run each: timings are noisy, compare ratios within this run.",
        "",
        *table_lines(rows, label_counts),
        "",
    ]
    if agreement:
        lines += ["## xmr vs libpecos top-10 agreement", "",
                  "| data | rows | identical top-10 lists | identical top-10 sets | identical top-1 |",
                  "|---|---|---|---|---|"]
        for data, a in agreement.items():
            lines.append(f"| {data} | {a['rows']:,} | {100 * a['identical_lists']:.2f}% | "
                         f"{100 * a['identical_sets']:.2f}% | {100 * a['identical_top1']:.2f}% |")
        lines += ["", "Different training code (k-means initialisation, solver order, float summation) can "
                      "legitimately change some rankings; accuracy deltas below are what the targets judge.", ""]
    if checks:
        lines += ["## Targets: xmr vs libpecos (same run)", "", "| data | target | value | verdict |",
                  "|---|---|---|---|"]
        for c in checks:
            lines.append(f"| {c['data']} | {c['target']} | {c['text']} | {c['verdict']} |")
        met = sum(c["met"] for c in checks)
        lines += ["", f"{met} of {len(checks)} targets met.", "",
                  "Accuracy deltas here come from one clustering seed per library, and the two libraries draw "
                  "different random streams; `experiments/seed_study.py` compares the means over several seeds "
                  "(results in experiments/results/seed_study*.md).", ""]
    if failures:
        lines += ["## Failed runs", ""] + [f"- {f.splitlines()[0]}" for f in failures] + [""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_peers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="bibtex,delicious,aol-q2site",
                    help="comma-separated data sets (default: %(default)s)")
    ap.add_argument("--peers", default="xmr,libpecos,napkinxc,omikuji",
                    help=f"comma-separated libraries among {','.join(MATRIX_LIBRARIES)} (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="threads for training and batch prediction")
    ap.add_argument("--n-single", type=int, default=500, help="single queries timed (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="training / clustering seed")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report (a .json is written beside)")
    ap.add_argument("--runs-dir", type=Path, default=None,
                    help="per-run folders <runs-dir>/<dataset>/<library> (default: "
                         "experiments/.cache/runs/<out folder>-<out stem>, git-ignored)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run before it is killed")
    ap.add_argument("--reuse", action="store_true",
                    help="do not run; rebuild the report from the runs folder of an earlier run")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit code 1 when any run failed (the partial report is still written)."""
    args = parse_args(argv)
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    try:
        libs = parse_libraries(args.peers)
        names = [datasets.canonical_name(n) for n in names]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    runs_dir = args.runs_dir or default_runs_dir(args.out)
    if not args.reuse:
        prepare(names, libs, log, "bench")
    rows, failures, agreement, label_counts, meta = [], [], {}, {}, {}
    for n in names:
        Y_test = datasets.load(n, build_missing=False)[3]
        label_counts[n] = Y_test.shape[1]
        results = {}
        for lib in libs:
            out = runs_dir / n / lib
            if args.reuse:
                res = load_previous(lib, n, out)
            else:
                res = run_library(lib, n, datasets.path_of(n), out, threads=args.threads, n_single=args.n_single,
                                  seed=args.seed, timeout=args.timeout, log=log)
            results[lib] = res
            if not res.ok:
                failures.append(res.error)
            try:
                rows.append(row_of(res, Y_test))
            except Exception as exc:  # noqa: BLE001 - a broken prediction file must not lose the other rows
                failures.append(f"{lib} on {n}: metrics failed: {exc!r}")
                rows.append({"data": n, "library": lib, "ok": False, "error": repr(exc)})
        shas = {r.get("single_rows_sha1") for r in rows if r["data"] == n and r["ok"]}
        if len(shas) > 1:
            failures.append(f"{n}: runners timed different single-query rows ({shas})")
        if results.get("xmr") and results.get("libpecos") and results["xmr"].ok and results["libpecos"].ok:
            agreement[n] = top10_agreement(results["xmr"], results["libpecos"])
        meta[n] = {"labels": label_counts[n]}
        for r in rows:
            if r["data"] == n and r["ok"]:
                log(f"[bench] {n} / {r['library']}: P@1 {r['P@1']:.2f} P@5 {r['P@5']:.2f} R@10 {r['R@10']:.2f}")
    checks = targets(rows)
    report = render(rows, checks, agreement, label_counts, args, started, failures)
    payload = {"started_utc": started, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
               "targets": checks, "top10_agreement": agreement, "failures": failures, "datasets": meta,
               "host": platform.node()}
    return publish(args.out, report, payload, failures, "bench")


if __name__ == "__main__":
    raise SystemExit(main())
