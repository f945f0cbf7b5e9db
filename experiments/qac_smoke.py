"""Smoke measurement of xmr.qac.CompletionModel (k-means tree) against MPC alone on the AOL session split.

Protocol (issue 4, reduced to a few minutes): pairs from experiments/qac_data.py, train = next query before
2006-05-01; test = pairs whose next query was seen in training, a random subsample of ``--n-test`` (seed 0);
one typed-prefix length per test pair, uniform over 1..len(next query) (numpy seed 0, as in PECOS qp2q).
MRR@10 overall, for prefix lengths 1-3 together and by length bucket; p50/p99 ms per completion, one request at
a time; training time. Writes experiments/results/qac_smoke.md and .json.

    .venv/bin/python -m experiments.qac_smoke [--n-test 5000] [--prefixes-per-pair 3]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from experiments.qac_data import load_pairs, split_pairs
from experiments.report import log, publish
from xmr.qac.model import CompletionModel, normalize_label

RESULTS = Path(__file__).resolve().parent / "results" / "qac_smoke.md"
VAL_START = "2006-04-17"  # the last two weeks of the training period validate (--validate)
GAMMAS = [0.0, 1.0, 2.0, 3.0, 6.0]
BUCKETS = [("1", 1, 1), ("2", 2, 2), ("3", 3, 3), ("4", 4, 4), ("5", 5, 5), ("6-8", 6, 8), ("9+", 9, 10**9)]


def evaluate(name, fn, tests):
    """MRR@10 per request and latency (ms) of ``fn(previous, prefix) -> list[str]``."""
    rr, ms = [], []
    for prev, prefix, target in tests:
        t0 = time.perf_counter()
        got = fn(prev, prefix)
        ms.append((time.perf_counter() - t0) * 1e3)
        rr.append(1.0 / (got.index(target) + 1) if target in got[:10] else 0.0)
    rr, ms = np.array(rr), np.array(ms)
    lens = np.array([len(p) for _, p, _ in tests])
    first = np.array([not prev for prev, _, _ in tests])
    out = {"name": name, "mrr10": float(rr.mean()), "mrr10_len1_3": float(rr[lens <= 3].mean()),
           "success10": float((rr > 0).mean()),
           "mrr10_first": float(rr[first].mean()), "mrr10_with_previous": float(rr[~first].mean()),
           "by_len": {b: float(rr[(lens >= lo) & (lens <= hi)].mean()) for b, lo, hi in BUCKETS},
           "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
           "mean_ms": float(ms.mean())}
    log(f"[qac_smoke] {name}: MRR@10 {out['mrr10']:.4f} (1-3 chars {out['mrr10_len1_3']:.4f}; first "
        f"{out['mrr10_first']:.4f}, with previous {out['mrr10_with_previous']:.4f}), "
        f"p50 {out['p50_ms']:.3f} ms p99 {out['p99_ms']:.3f} ms")
    return out


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate, publish."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-test", type=int, default=5000)
    ap.add_argument("--prefixes-per-pair", type=int, default=6)
    ap.add_argument("--prefix-weight", type=float, default=1.0)
    ap.add_argument("--previous-weight", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=-1)
    ap.add_argument("--popularity", type=float, default=None, help="prior exponent (default: the model's)")
    ap.add_argument("--validate", action="store_true",
                    help="tune on a validation split carved from training (train before VAL_START, validate on "
                         "the rest of the training period) instead of touching the test set")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    train, test = split_pairs(load_pairs())
    if args.validate:
        train, test = split_pairs(train, VAL_START)
    train_pairs = [(p.previous, p.query) for p in train]
    seen = {normalize_label(q) for _, q in train_pairs}
    test_seen = [p for p in test if normalize_label(p.query) in seen]
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(test_seen), size=min(args.n_test, len(test_seen)), replace=False))
    rng = np.random.default_rng(0)
    tests = []
    for i in pick:
        q = normalize_label(test_seen[i].query)
        n = int(rng.integers(1, len(q) + 1))
        tests.append((test_seen[i].previous, q[:n], q))
    log(f"[qac_smoke] {len(train_pairs)} train pairs, {len(test_seen)} seen test pairs, {len(tests)} evaluated")

    t0 = time.perf_counter()
    model = CompletionModel.train(train_pairs, prefixes_per_pair=args.prefixes_per_pair, seed=0,
                                  prefix_weight=args.prefix_weight, previous_weight=args.previous_weight,
                                  threads=args.threads, progress=False)
    train_s = time.perf_counter() - t0
    model.model.warm()
    log(f"[qac_smoke] trained in {train_s:.1f}s: {model.meta}")

    mpc = model.mpc
    if args.validate:
        res = [evaluate("MPC", lambda prev, p: [q for q, _ in mpc.complete(p, 10)], tests)]
        for g in GAMMAS:
            res.append(evaluate(f"popularity={g}", lambda prev, p: [
                q for q, _ in model.complete(prev, p, 10, popularity=g)], tests))
        for cands, beam in [(300, 10), (100, 30), (300, 30)]:
            model.candidates = cands
            res.append(evaluate(f"candidates={cands} beam={beam}", lambda prev, p: [
                q for q, _ in model.complete(prev, p, 10, beam_size=beam)], tests))
        return 0
    res_mpc = evaluate("MPC", lambda prev, p: [q for q, _ in mpc.complete(p, 10)], tests)
    res_xmr = evaluate("xmr k-means + MPC", lambda prev, p: [
        q for q, _ in model.complete(prev, p, 10, popularity=args.popularity)], tests)
    res_raw = evaluate("xmr k-means, no popularity prior (ablation)",
                       lambda prev, p: [q for q, _ in model.complete(prev, p, 10, popularity=0.0)], tests)
    res_mpc["train_s"] = None
    res_xmr["train_s"] = res_raw["train_s"] = train_s
    gamma = model.popularity if args.popularity is None else args.popularity
    res_xmr["name"] = f"xmr k-means + MPC (popularity {gamma:g})"
    rows = [res_mpc, res_xmr, res_raw]

    head = ("| method | MRR@10 | MRR@10 1-3 chars | first query | with previous | "
            + " | ".join(b for b, _, _ in BUCKETS) + " | success@10 | p50 ms | p99 ms | train s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['name']} | {r['mrr10']:.4f} | {r['mrr10_len1_3']:.4f} | {r['mrr10_first']:.4f} | "
                     f"{r['mrr10_with_previous']:.4f} | "
                     + " | ".join(f"{r['by_len'][b]:.3f}" for b, _, _ in BUCKETS)
                     + f" | {r['success10']:.4f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                     + (f"{r['train_s']:.1f}" if r["train_s"] else "-") + " |")
    gain = res_xmr["mrr10"] / res_mpc["mrr10"] - 1
    gain13 = res_xmr["mrr10_len1_3"] / res_mpc["mrr10_len1_3"] - 1
    report = "\n".join([
        "# QAC smoke run: CompletionModel (k-means tree) vs MPC on AOL (aol_800_users)", "",
        f"Train: {len(train_pairs):,} pairs before 2006-05-01 ({model.nr_labels:,} labels, "
        f"{model.meta['nr_instances']:,} instances, {args.prefixes_per_pair} prefixes per pair, previous-query "
        f"weight {args.previous_weight:g}; settings chosen with --validate on the last two weeks of April). "
        f"Test: {len(tests):,} of the {len(test_seen):,} test pairs whose next query was seen in training "
        "(random subsample, seed 0), one prefix length per pair uniform over 1..len (seed 0). "
        "Latency: one request at a time, whole `complete` call incl. featurisation; 2-core shared box.", "",
        *lines, "",
        f"Gain over MPC: {gain:+.1%} overall, {gain13:+.1%} on prefixes of 1-3 characters.", ""])
    payload = {"rows": rows, "n_test": len(tests), "n_test_seen": len(test_seen), "train_pairs": len(train_pairs),
               "meta": model.meta, "gain_overall": gain, "gain_len1_3": gain13}
    return publish(args.out, report, payload, [], "qac_smoke")


if __name__ == "__main__":
    sys.exit(main())
