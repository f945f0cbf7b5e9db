"""Sharded serving on real data: the aol-q2site text retriever split in 2, against the unsplit one.

    .venv/bin/python -m experiments.sharding [--queries 5000] [--duration 8]   # -> results/sharding_aol.{md,json}

1. Split (``xmr.shards.split``) the load test's aol-q2site retriever (``experiments/.cache/serving``) into a router
   and 2 shards; sizes on disk.
2. In process: every test query through the router and shards (``SplitRetriever``) against the unsplit
   ``Retriever.rank_one``: labels and scores must be identical; p50/p99 of both.
3. Through gRPC on loopback, one call in flight (closed loop, the load test's generator in its own process):
   ``xmr serve`` of the unsplit retriever against ``xmr route`` with two ``xmr serve --shard`` servers, all on
   this 2-core machine. The router's added latency is the difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "sharding_aol.md"


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def in_process(retriever, split_retriever, queries: list[str]) -> dict:
    """Equality and latency of the unsplit and the split retriever, query by query."""
    mismatches, t_whole, t_split = 0, [], []
    for q in queries:
        t0 = time.perf_counter()
        ids, scores, _ = retriever.rank_one(q, k=10)
        t1 = time.perf_counter()
        top, _ = split_retriever.rank_one(q, k=10)
        t2 = time.perf_counter()
        t_whole.append(t1 - t0)
        t_split.append(t2 - t1)
        mismatches += [lab for lab, _ in top] != ids.tolist() or [s for _, s in top] != scores.tolist()
    out = {"queries": len(queries), "mismatches": mismatches}
    for name, t in (("whole", t_whole), ("split", t_split)):
        for p in (50, 99):
            out[f"{name}_p{p}_ms"] = float(np.percentile(np.array(t) * 1e3, p))
    return out


def grpc_latency(whole: Path, paths: list[Path], name: str, reqfile: Path, duration: float) -> dict:
    """One call in flight through gRPC, result cache off: ``xmr serve`` of the unsplit retriever (``grpc_whole``),
    then ``xmr route`` over one ``xmr serve --shard`` per shard (``grpc_routed``, ``shard_rss_mb``)."""
    from experiments.load_test import Server, run_generator

    res = {}
    server = Server(["serving.cli", "serve", "--port", "0", "--cache-size", "0", "-q", "--model", f"{name}={whole}"])
    try:
        res["grpc_whole"] = run_generator(server.target, "retrieve", name, reqfile, None, 1, duration, 10, 1, server)
    finally:
        server.stop()
    shards = [Server(["serving.cli", "serve", "--port", "0", "-q", "--shard", str(p)]) for p in paths[1:]]
    try:
        route = Server(["serving.cli", "route", "--port", "0", "--cache-size", "0", "-q", "--name", name,
                        "--router", str(paths[0]), "--shards", ",".join(s.target for s in shards)])
        try:
            res["grpc_routed"] = run_generator(route.target, "retrieve", name, reqfile, None, 1, duration, 10, 1,
                                               route)
            res["shard_rss_mb"] = [s.ps.memory_info().rss / 2**20 for s in shards]
        finally:
            route.stop()
    finally:
        for s in shards:
            s.stop()
    return res


def main(argv: list[str] | None = None) -> int:
    """Split, compare in process and through gRPC, write the report."""
    ap = argparse.ArgumentParser(prog="python -m experiments.sharding", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=5000, help="test queries compared in process (default 5000)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per gRPC latency run (default 8)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    from experiments.datasets import CACHE
    from experiments.load_test import prepare_models
    from experiments.report import log, publish
    from xmr.retriever import Retriever
    from xmr.shards import Router, Shard, SplitRetriever, save_split, split

    cache = CACHE / "serving"
    dirs = prepare_models(cache)
    retriever = Retriever.load(dirs["aol"])
    t0 = time.perf_counter()
    router, parts = split(retriever, 2)
    paths = save_split(router, parts, cache / "aol-split")
    split_s = time.perf_counter() - t0
    log(f"[sharding] split in {split_s:.1f} s")
    sr = SplitRetriever(Router.load(paths[0]), [Shard.load(p) for p in paths[1:]])
    queries = json.loads((cache / "aol_queries.json").read_text())[: args.queries]
    res = {"split_s": split_s, "model_version": retriever.model_version,
           "sizes_mb": {"whole": dir_bytes(Path(dirs["aol"])) / 2**20,
                        **{p.name: dir_bytes(p) / 2**20 for p in paths}},
           "labels": {p.name: int(s.label_ids.size) for p, s in zip(paths[1:], parts)},
           "in_process": in_process(retriever, sr, queries)}
    reqfile = cache / "aol_queries.json"
    res.update(grpc_latency(Path(dirs["aol"]), paths, "aol", reqfile, args.duration))
    return publish(args.out, render(res), res, [] if res["in_process"]["mismatches"] == 0 else
                   [f"{res['in_process']['mismatches']} queries differ between the split and the whole retriever"],
                   "sharding")


def render(res: dict) -> str:
    """The markdown report."""
    ip, w, r = res["in_process"], res["grpc_whole"], res["grpc_routed"]
    sizes = res["sizes_mb"]
    return "\n".join([
        "# Sharded serving on aol-q2site (real data; 2-core machine, one run)", "",
        "Protocol: experiments/sharding.py docstring. The load test's aol-q2site text retriever "
        f"(model version {res['model_version']}) split into a router and 2 shards in {res['split_s']:.1f} s.", "",
        "| part | size on disk MB | labels |", "|---|---|---|",
        f"| unsplit retriever | {sizes['whole']:.1f} | {sum(res['labels'].values()):,} |",
        f"| router (featurizer + levels above the labels) | {sizes['router']:.1f} | - |",
        *[f"| {name} | {sizes[name]:.1f} | {n:,} |" for name, n in res["labels"].items()], "",
        f"In process, {ip['queries']:,} test queries: **{ip['mismatches']} differ** (labels or scores) between the "
        f"split and the unsplit retriever. Unsplit p50 / p99 {ip['whole_p50_ms']:.3f} / {ip['whole_p99_ms']:.3f} ms; "
        f"router + 2 shards in one process {ip['split_p50_ms']:.3f} / {ip['split_p99_ms']:.3f} ms.", "",
        "Through gRPC on loopback, one call in flight, result cache off:", "",
        "| served as | p50 ms | p99 ms | calls/s |", "|---|---|---|---|",
        f"| `xmr serve` (unsplit) | {w['p50_ms']:.3f} | {w['p99_ms']:.3f} | {w['throughput']:.0f} |",
        f"| `xmr route` + 2 `xmr serve --shard` | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['throughput']:.0f} |",
        "", f"The router adds {r['p50_ms'] - w['p50_ms']:.3f} ms at p50 (one extra gRPC hop to the shards, made in "
        "parallel), with all three servers and the generator sharing 2 cores.", ""])


if __name__ == "__main__":
    sys.exit(main())
