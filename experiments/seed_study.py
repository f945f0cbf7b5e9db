"""Seed study: is the xmr - libpecos accuracy gap systematic, or the noise of one clustering seed?

Both libraries run the same algorithm but draw different random numbers (k-means initial directions), so one
seed cannot tell a real gap from luck. This trains and predicts each library once per seed, with the runner
subprocesses of bench_peers (same protocol, same hyper-parameters; the seed goes to hierarchical k-means in
both: xmr's ``hierarchical_kmeans(seed=)``, libpecos's ``HierarchicalKMeans`` ``seed``; neither solver has a
seed of its own: both reshuffle with a fixed per-node stream), computes P@1/3/5, R@10, MRR@10 from the saved
top-10 predictions (xmr.metrics, ``skip_empty=True``, cross-checked as in bench_peers), and reports per data set
and library the mean, sample std, min and max over seeds, then the xmr - libpecos difference of the means with
a 95% Welch t interval and a verdict against the target (difference of means >= -0.3 points).

Only accuracy is used: timings are not recorded in the report (the single-query timing is cut to --n-single
rows to save time).

    .venv/bin/python -m experiments.seed_study                           # 3 data sets x 5 seeds x 2 libraries
    .venv/bin/python -m experiments.seed_study --datasets bibtex --seeds 0,1 --out /tmp/seeds.md
    .venv/bin/python -m experiments.seed_study --reuse                   # re-render from the saved runs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from experiments import datasets
from experiments.metrics import REPORTED, ranking_metrics
from experiments.peers.launch import (LIBRARIES, MATRIX_LIBRARIES, REPO, RunResult, child_env, load_previous,
                                      parse_libraries, prepare, run_library)
from experiments.report import log, publish

EXPERIMENTS = Path(__file__).resolve().parent
DEFAULT_OUT = EXPERIMENTS / "results" / "seed_study.md"
TARGET_METRICS = ("P@1", "P@5", "R@10")
TARGET = -0.3  # points: xmr may be at most this much below libpecos
LEVEL = 0.95
SOURCE_DIRS = ("xmr", "indexing")  # code whose edits during a run would matter for xmr's accuracy


def utc_now() -> str:
    """Current UTC time, seconds resolution."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


def source_fingerprint() -> str:
    """sha1 over the xmr / indexing python sources (detects edits made by others while the study runs)."""
    h = hashlib.sha1()
    for d in SOURCE_DIRS:
        for p in sorted((REPO / d).rglob("*.py")):
            h.update(str(p.relative_to(REPO)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def git_head() -> str:
    """Commit of the working tree (uncommitted edits are covered by source_fingerprint)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def head_snapshot(dest_root: Path) -> tuple[Path, str]:
    """Extract the committed xmr / indexing / runner sources of HEAD into a private folder (kept between runs).

    Others edit the working tree while the study runs, and a half-edited file can break xmr for a moment (a
    seed-study trial run read P@1 0.9 from a transient inference edit), so by default xmr runs from HEAD.
    """
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    root = dest_root / commit[:12]
    if not (root / ".complete").is_file():
        tmp = dest_root / f".{commit[:12]}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", commit, *SOURCE_DIRS, "experiments/peers"], cwd=REPO,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        (tmp / ".complete").write_text(commit + "\n")
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    return root, commit


def run_xmr_from(root: Path, dataset: str, data_dir: Path, out: Path, threads: int, n_single: int, seed: int,
                 timeout: float | None) -> RunResult:
    """run_library for xmr, but with the runner and the xmr / indexing packages of the snapshot ``root``."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "predictions.npz", "topk.npy"):
        (out / stale).unlink(missing_ok=True)
    out, data_dir = out.resolve(), data_dir.resolve()  # the runner's working directory is the snapshot
    cmd = [sys.executable, str(root / "experiments" / "peers" / LIBRARIES["xmr"][0]), "--data", str(data_dir),
           "--out", str(out), "--threads", str(threads), "--n-single", str(n_single), "--seed", str(seed)]
    env = child_env(threads)
    env["PYTHONPATH"] = str(root) + os.pathsep + str(REPO)  # snapshot first; REPO only for anything it lacks
    log(f"[seeds] {dataset} / xmr: running from {root} (log: {out / 'run.log'})")
    t0 = time.perf_counter()
    with open(out / "run.log", "w") as logf:
        try:
            rc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=root,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = None
    res = load_previous("xmr", dataset, out)
    res.wall_s = time.perf_counter() - t0
    if rc != 0 and res.ok:
        res.error = f"xmr on {dataset}: exit code {rc}"
    if not res.ok:
        tail = (out / "run.log").read_text(errors="replace").splitlines()[-15:]
        res.error = f"{res.error} ({'timed out' if rc is None else f'exit code {rc}'}); last log lines:\n" + \
            "\n".join(tail)
    else:
        log(f"[seeds] {dataset} / xmr: done in {res.wall_s:.0f}s")
    return res


# --------------------------------------------------------------------------------------------- statistics
def summary(values: list[float]) -> dict:
    """Mean, sample std (ddof=1), min, max and count of per-seed values."""
    v = np.asarray(values, np.float64)
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
            "min": float(v.min()), "max": float(v.max())}


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t (scipy)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def welch_interval(a: list[float], b: list[float], level: float = LEVEL) -> dict:
    """Difference of means mean(a) - mean(b) with a Welch t interval (unequal variances, Welch-Satterthwaite df)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return {"diff": diff, "lo": float("nan"), "hi": float("nan"), "df": float("nan"), "se": float("nan")}
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return {"diff": diff, "lo": diff, "hi": diff, "df": float("inf"), "se": 0.0}
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    return {"diff": diff, "lo": diff - half, "hi": diff + half, "df": float(df), "se": float(se)}


def paired_interval(a: list[float], b: list[float], level: float = LEVEL) -> dict:
    """Mean of the per-seed differences a_i - b_i with a one-sample t interval (n - 1 df); JSON only."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.size < 2:
        return {"diff": float(d.mean()), "lo": float("nan"), "hi": float("nan"), "df": float("nan")}
    se = float(d.std(ddof=1) / math.sqrt(d.size))
    half = t_quantile(0.5 + level / 2, d.size - 1) * se if se > 0 else 0.0
    return {"diff": float(d.mean()), "lo": float(d.mean() - half), "hi": float(d.mean() + half),
            "df": float(d.size - 1), "se": se}


def verdict(ci: dict, target: float = TARGET) -> str:
    """Target verdict from the difference of means, qualified by where the interval lies."""
    met = ci["diff"] >= target
    if math.isnan(ci["lo"]):
        return "met" if met else "MISSED"
    if met:
        how = "interval above the target" if ci["lo"] >= target else "interval reaches below the target"
    else:
        how = "interval entirely below the target" if ci["hi"] < target else "interval reaches above the target"
    zero = "excludes 0" if ci["lo"] > 0 or ci["hi"] < 0 else "includes 0"
    return f"{'met' if met else 'MISSED'} ({how}; {zero})"


# --------------------------------------------------------------------------------------------- running
def run_dir(runs_dir: Path, dataset: str, library: str, seed: int) -> Path:
    """Folder of one (data set, library, seed) run."""
    return runs_dir / dataset / library / f"seed{seed}"


def metrics_of(res, Y_test) -> dict:
    """P@1/3/5, R@10, MRR@10 in percent of one finished run."""
    m, impl = ranking_metrics(Y_test, res.predictions(), k=10)
    out = {k: 100 * m[k] for k in REPORTED}
    out["metrics_impl"] = impl
    return out


def top1_agreement(a, b) -> float:
    """Fraction of test rows with the same top-1 label in two runs."""
    ta, tb = a.topk(), b.topk()
    return float(np.mean(ta[:, 0] == tb[:, 0])) if ta.shape == tb.shape else float("nan")


def study(args, names: list[str], libs: list[str], seeds: list[int], runs_dir: Path) -> tuple[list[dict], list[str]]:
    """Run (or reload) every (data set, seed, library); one record per run."""
    records, failures = [], []
    total = len(names) * len(seeds) * len(libs)
    done = 0
    for n in names:
        Y_test = datasets.load(n, build_missing=False)[3]
        for seed in seeds:
            for lib in libs:
                done += 1
                out = run_dir(runs_dir, n, lib, seed)
                rec = {"data": n, "library": lib, "seed": seed}
                if args.reuse:
                    res = load_previous(lib, n, out)
                    prev = out / "seed_study.json"
                    if prev.is_file():
                        rec.update({k: v for k, v in json.loads(prev.read_text()).items()
                                    if k in ("started_utc", "finished_utc", "source_sha1", "source_sha1_after",
                                             "git_head", "xmr_code")})
                else:
                    log(f"[seeds] {done}/{total}: {n} / {lib} / seed {seed}")
                    rec.update(started_utc=utc_now(), git_head=git_head())
                    if lib == "xmr" and args.snapshot is not None:
                        rec.update(xmr_code=f"HEAD snapshot {args.snapshot_commit[:12]}")
                        res = run_xmr_from(args.snapshot, n, datasets.path_of(n), out, args.threads,
                                           args.n_single, seed, args.timeout)
                    else:
                        rec.update(xmr_code="working tree", source_sha1=source_fingerprint())
                        res = run_library(lib, n, datasets.path_of(n), out, threads=args.threads,
                                          n_single=args.n_single, seed=seed, timeout=args.timeout, log=log)
                        rec["source_sha1_after"] = source_fingerprint()
                    rec["finished_utc"] = utc_now()
                    (out / "seed_study.json").write_text(json.dumps(rec, indent=1) + "\n")
                rec["ok"] = res.ok
                if not res.ok:
                    rec["error"] = res.error
                    failures.append(res.error)
                    records.append(rec)
                    continue
                if res.result.get("params", {}).get("seed") != seed:
                    failures.append(f"{lib} on {n}: runner recorded seed {res.result.get('params', {}).get('seed')}"
                                    f" instead of {seed}")
                try:
                    rec.update(metrics_of(res, Y_test))
                except Exception as exc:  # noqa: BLE001 - one broken prediction file must not lose the study
                    rec.update(ok=False, error=f"metrics failed: {exc!r}")
                    failures.append(f"{lib} on {n} seed {seed}: metrics failed: {exc!r}")
                    records.append(rec)
                    continue
                rec["train_s"] = res.result.get("train_s")
                rec["dropped_empty_train_rows"] = res.result.get("dropped_empty_train_rows", 0)
                rec["_res"] = res
                records.append(rec)
                log(f"[seeds] {n} / {lib} / seed {seed}: " + " ".join(f"{k} {rec[k]:.2f}" for k in REPORTED))
            by_lib = {r["library"]: r for r in records if r["data"] == n and r["seed"] == seed and r.get("_res")}
            if "xmr" in by_lib and "libpecos" in by_lib:
                by_lib["xmr"]["top1_same_as_libpecos"] = top1_agreement(by_lib["xmr"]["_res"],
                                                                        by_lib["libpecos"]["_res"])
    for r in records:
        r.pop("_res", None)
    return records, failures


# --------------------------------------------------------------------------------------------- report
def aggregate(records: list[dict], names: list[str], libs: list[str]) -> tuple[dict, list[dict]]:
    """Per (data set, library, metric) summaries and per (data set, target metric) xmr - libpecos comparisons."""
    stats, comps = {}, []
    for n in names:
        for lib in libs:
            ok = [r for r in records if r["data"] == n and r["library"] == lib and r["ok"]]
            if ok:
                stats[(n, lib)] = {m: summary([r[m] for r in ok]) for m in REPORTED}
                stats[(n, lib)]["seeds"] = [r["seed"] for r in ok]
        if (n, "xmr") not in stats or (n, "libpecos") not in stats:
            continue
        x = {r["seed"]: r for r in records if r["data"] == n and r["library"] == "xmr" and r["ok"]}
        p = {r["seed"]: r for r in records if r["data"] == n and r["library"] == "libpecos" and r["ok"]}
        common = sorted(set(x) & set(p))
        for m in REPORTED:
            ci = welch_interval([r[m] for r in x.values()], [r[m] for r in p.values()])
            pi = paired_interval([x[s][m] for s in common], [p[s][m] for s in common])
            comp = {"data": n, "metric": m, "xmr_mean": stats[(n, "xmr")][m]["mean"],
                    "libpecos_mean": stats[(n, "libpecos")][m]["mean"], "welch": ci, "paired_by_seed": pi,
                    "target": m in TARGET_METRICS}
            if comp["target"]:
                comp["goal"] = TARGET
                comp["met"] = bool(ci["diff"] >= TARGET)
                comp["verdict"] = verdict(ci)
            comps.append(comp)
    return stats, comps


def xmr_code_text(records: list[dict], sha1s: list[str]) -> str:
    """Which xmr code the runs used (HEAD snapshot, or the working tree with its fingerprints)."""
    kinds = sorted({r.get("xmr_code", "?") for r in records if r["library"] == "xmr"})
    text = "; ".join(kinds) or "n/a"
    if any(k == "working tree" for k in kinds):
        changed = [r for r in records if r["library"] == "xmr" and r.get("source_sha1") != r.get("source_sha1_after")]
        text += (f" (xmr/indexing source fingerprints seen: {', '.join(sha1s)}; "
                 f"{len(changed)} run(s) saw the sources change while running)")
    elif kinds and kinds != ["?"]:
        text += " (`git archive` of xmr/, indexing/, experiments/peers/: edits others make meanwhile are not used)"
    return text


def _pm(s: dict) -> str:
    return f"{s['mean']:.2f} ± {s['std']:.2f}" if not math.isnan(s["std"]) else f"{s['mean']:.2f}"


def render(records: list[dict], stats: dict, comps: list[dict], names: list[str], libs: list[str],
           seeds: list[int], meta: dict, failures: list[str]) -> str:
    """The markdown report."""
    lines = [
        "# Seed study: xmr vs libpecos accuracy over clustering seeds",
        "",
        "**Accuracy only: no timings are reported or valid here** (the machine was shared with people "
        "optimising code while this ran).",
        "",
        f"Run {meta['window']} UTC on {meta['host']} (python {platform.python_version()}), threads={meta['threads']}, "
        f"seeds {', '.join(map(str, seeds))}, git HEAD {meta['git_head']}; xmr code: {meta['xmr_code']}. "
        "Protocol: experiments/README.md "
        "(the bench_peers runners, one subprocess per run); the seed goes to hierarchical k-means in both "
        "libraries (neither solver has a seed: both reshuffle with a fixed per-node stream). Metrics in percent "
        "over test rows with >= 1 label, computed by xmr.metrics.ranking_metrics(skip_empty=True) from each "
        "run's top-10 predictions.",
        "",
        "## Per library: mean ± sample std (ddof=1), [min, max] over seeds",
        "",
        "| data | library | n | " + " | ".join(REPORTED) + " |",
        "|---|---|---|" + "---|" * len(REPORTED),
    ]
    for n in names:
        first = True
        for lib in libs:
            s = stats.get((n, lib))
            if s is None:
                continue
            cells = [f"{_pm(s[m])} [{s[m]['min']:.2f}, {s[m]['max']:.2f}]" for m in REPORTED]
            lines.append(f"| {n if first else ''} | {LIBRARIES[lib][2]} | {s['P@1']['n']} | " + " | ".join(cells)
                         + " |")
            first = False
    if comps:
        lines += [
            "",
            f"## xmr - libpecos: difference of the means, {int(LEVEL * 100)}% Welch t interval",
            "",
            "Welch (unequal variances, Welch-Satterthwaite df) because the two libraries' seeds are unrelated "
            "random streams: seed k of xmr and seed k of libpecos build different trees, so pairing by seed "
            "carries no information (the paired-by-seed interval is in the .json for reference). Target: "
            f"difference of the means >= {TARGET:+.1f} points on P@1, P@5 and R@10. The interval covers "
            "clustering-seed noise on this fixed test set only.",
            "",
            "| data | metric | xmr mean | libpecos mean | delta | 95% interval | df | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        last = None
        for c in comps:
            ci = c["welch"]
            lines.append(f"| {c['data'] if c['data'] != last else ''} | {c['metric']} | {c['xmr_mean']:.2f} | "
                         f"{c['libpecos_mean']:.2f} | {ci['diff']:+.2f} | [{ci['lo']:+.2f}, {ci['hi']:+.2f}] | "
                         f"{ci['df']:.1f} | {c.get('verdict', '(not a target)')} |")
            last = c["data"]
        tgt = [c for c in comps if c["target"]]
        lines += ["", f"{sum(c['met'] for c in tgt)} of {len(tgt)} targets met on the difference of the means."]
    lines += ["", "## Per seed", "", "| data | seed | library | " + " | ".join(REPORTED) + " | same top-1 as libpecos |",
              "|---|---|---|" + "---|" * (len(REPORTED) + 1)]
    for n in names:
        for seed in seeds:
            for lib in libs:
                r = next((r for r in records if (r["data"], r["library"], r["seed"]) == (n, lib, seed)), None)
                if r is None:
                    continue
                if not r["ok"]:
                    lines.append(f"| {n} | {seed} | {LIBRARIES[lib][2]} | FAILED |" + " |" * len(REPORTED))
                    continue
                agree = r.get("top1_same_as_libpecos")
                lines.append(f"| {n} | {seed} | {LIBRARIES[lib][2]} | " + " | ".join(f"{r[m]:.2f}" for m in REPORTED)
                             + f" | {'' if agree is None else f'{100 * agree:.2f}%'} |")
    if failures:
        lines += ["", "## Failed runs", ""] + [f"- {f.splitlines()[0]}" for f in failures]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    ap = argparse.ArgumentParser(prog="python -m experiments.seed_study", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="bibtex,delicious,aol-q2site",
                    help="comma-separated data sets (default: %(default)s)")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated clustering seeds (default: %(default)s)")
    ap.add_argument("--peers", default="xmr,libpecos",
                    help=f"comma-separated libraries among {','.join(MATRIX_LIBRARIES)} (default: %(default)s); the "
                         "deltas need xmr and libpecos")
    ap.add_argument("--threads", type=int, default=2, help="threads for training and batch prediction")
    ap.add_argument("--n-single", type=int, default=20,
                    help="single-query timings each runner still takes (unused here; default: %(default)s)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report (a .json is written beside)")
    ap.add_argument("--runs-dir", type=Path, default=None,
                    help="per-run folders <runs-dir>/<dataset>/<library>/seed<k> (default: "
                         "experiments/.cache/runs/seed_study-<out stem>, git-ignored)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run before it is killed")
    ap.add_argument("--xmr-code", choices=("head", "tree"), default="head",
                    help="run xmr from a snapshot of the committed HEAD (default; immune to edits made by others "
                         "during the study) or from the live working tree (fingerprinted before/after each run)")
    ap.add_argument("--reuse", action="store_true", help="do not run; rebuild the report from an earlier run")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the study; exit code 1 when any run failed (the partial report is still written), 2 on bad arguments."""
    args = parse_args(argv)
    try:
        libs = parse_libraries(args.peers)
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        names = [datasets.canonical_name(d.strip()) for d in args.datasets.split(",") if d.strip()]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        print(f"error: --seeds must list distinct non-negative integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    # Absolute: the xmr runner of a HEAD snapshot runs with the snapshot as its working directory.
    runs_dir = (args.runs_dir or EXPERIMENTS / ".cache" / "runs" / f"seed_study-{args.out.stem}").resolve()
    started = utc_now()
    args.snapshot = args.snapshot_commit = None
    if not args.reuse and "xmr" in libs and args.xmr_code == "head":
        args.snapshot, args.snapshot_commit = head_snapshot(EXPERIMENTS / ".cache" / "seed_study-src")
        log(f"[seeds] xmr runs from the HEAD snapshot {args.snapshot}")
    if not args.reuse:
        prepare(names, libs, log, "seeds")
    records, failures = study(args, names, libs, seeds, runs_dir)
    stats, comps = aggregate(records, names, libs)
    starts = sorted(r["started_utc"] for r in records if r.get("started_utc"))
    ends = sorted(r["finished_utc"] for r in records if r.get("finished_utc"))
    sha1s = sorted({s for r in records if r["library"] == "xmr"
                    for s in (r.get("source_sha1"), r.get("source_sha1_after")) if s})
    meta = {"window": f"{starts[0]} to {ends[-1]}" if starts and ends else f"started {started}",
            "host": platform.node(), "threads": args.threads, "source_sha1s": sha1s,
            "xmr_code": xmr_code_text(records, sha1s),
            "git_head": next((r["git_head"] for r in records if r.get("git_head")), git_head())}
    report = render(records, stats, comps, names, libs, seeds, meta, failures)
    payload = {"meta": meta, "args": {k: str(v) for k, v in vars(args).items()}, "seeds": seeds,
               "target_points": TARGET, "interval": f"{int(LEVEL * 100)}% Welch t on the difference of the means",
               "runs": records,
               "summary": [{"data": n, "library": lib, **{m: s[m] for m in REPORTED}} for (n, lib), s in stats.items()],
               "comparisons": comps, "failures": failures}
    return publish(args.out, report, payload, failures, "seeds")


if __name__ == "__main__":
    raise SystemExit(main())
