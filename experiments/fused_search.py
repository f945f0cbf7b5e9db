"""What serving a query in one numba call (xmr.fused_search) saves over the composed path it replaces.

    .venv/bin/python -m experiments.fused_search [--rounds 4] [--duration 8]   # -> results/fused_search.{md,json}

The served single-query path was ``Retriever.rank_one`` (featurise, beam search, rerank: three crossings from
Python into numba) followed by ``LabelRecords.entries`` (a fourth); ``Retriever.rank_one_records`` now does all
of it in one kernel, with byte-identical answers (checked here on every query, and in tests/test_fused_search.py).

1. In process, per query, on the load test's aol-q2site and catalogue retrievers and request streams (the first
   3,000 of each), the two paths interleaved query by query on one pinned core: with warm caches, and with 4 MB and
   16 MB of other memory written before each call (a loaded server's caches hold little of the model between two
   calls: its handler's search cost 84 us of thread CPU under load against 28 us warm in process).
2. Under load: ``xmr serve`` with the result cache off, once with ``rank_one_records`` as it is and once with it
   composed from ``rank_one`` (what the server did before), in interleaved rounds, one open-loop window per model at
   a fixed rate below both paths' ceilings (the load test's protocol: server pinned to CPU 1, generator to CPU 0);
   the table gives the server's CPU per call, the quantity the load test's ratio to the echo service turns on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "fused_search.md"
RATES = {"aol": 1500, "catalogue": 1250}
TOUCH_MB = (0, 4, 16)


def serve(argv: list[str]) -> int:
    """``xmr serve``; with $XMR_COMPOSED=1 its Retrieve goes through rank_one and LabelRecords.entries instead."""
    if os.environ.get("XMR_COMPOSED") == "1":
        from xmr.retriever import Retriever

        def composed(self, text, records, k=10, beam_size=None):  # noqa: ANN001, ANN202 - the replaced path
            ids, scores, reason = self.rank_one(text, k, beam_size)
            return records.entries(ids, scores), reason

        Retriever.rank_one_records = composed
    from serving.cli import main as cli_main

    return cli_main(argv)


def in_process(dirs: dict, cache: Path) -> list[dict]:
    """Per model and memory touched between calls: mean us per query of each path, and the answers compared."""
    from serving.models import load_model

    rows = []
    for name in ("aol", "catalogue"):
        m = load_model(name, dirs[name])
        r, hits = m.model, m.hits
        queries = json.loads((cache / f"{name}_queries.json").read_text())[:3000]
        same = 0
        for q in queries:
            ids, scores, reason = r.rank_one(q, 10)
            same += r.rank_one_records(q, hits, 10) == (hits.entries(ids, scores), reason)
        for mb in TOUCH_MB:
            buf = np.zeros(max(1, mb << 17), np.int64)  # mb MiB of int64
            ns = [0, 0]
            for q in queries:
                for path in (0, 1):
                    if mb:
                        buf[::8] += 1  # one write per 64-byte line
                    t0 = time.perf_counter_ns()
                    if path == 0:
                        ids, scores, _ = r.rank_one(q, 10)
                        hits.entries(ids, scores)
                    else:
                        r.rank_one_records(q, hits, 10)
                    ns[path] += time.perf_counter_ns() - t0
            rows.append({"model": name, "touched_mb": mb, "queries": len(queries), "identical": same,
                         "composed_us": ns[0] / len(queries) / 1e3, "fused_us": ns[1] / len(queries) / 1e3})
            print(f"[fused_search] {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def under_load(dirs: dict, cache: Path, rounds: int, duration: float, pinned: bool) -> list[dict]:
    """Interleaved rounds of (fused, composed) servers, one open-loop window per model each."""
    from experiments.load_test import GENERATOR_CPU, SERVER_CPU, Server, run_generator

    scpu, gcpu = (SERVER_CPU, GENERATOR_CPU) if pinned else (None, None)
    models = [a for name in RATES for a in ("--model", f"{name}={dirs[name]}")]
    rows = []
    for rnd in range(rounds):
        for composed in (False, True):
            os.environ["XMR_COMPOSED"] = "1" if composed else "0"
            srv = Server(["experiments.fused_search", "serve", "serve", "--port", "0", "-q", "--cache-size", "0",
                          *models], scpu)
            try:
                for model, rate in RATES.items():
                    r = run_generator(srv.target, "retrieve", model, cache / f"{model}_queries.json", rate, 0,
                                      duration, 10, 1, srv, gcpu)
                    rows.append({"round": rnd, "path": "composed" if composed else "fused", "model": model,
                                 "rate": rate, "cpu_ms_per_call": r["server_cpu_ms_per_call"], "p50_ms": r["p50_ms"],
                                 "p99_ms": r["p99_ms"], "errors": r["errors"]})
            finally:
                srv.stop()
    return rows


def render(res: dict) -> str:
    """The markdown report."""
    lines = ["# One numba call per served query (xmr.fused_search) against the composed path", "",
             "Protocol: experiments/fused_search.py docstring; one run, 2-core machine, "
             f"{'server and in-process runs pinned to CPU 1, generator to CPU 0' if res['pinned'] else 'no pinning'}.",
             "", "## In process (us per query, the two paths interleaved)", "",
             "| model | memory touched before each call | composed (rank_one + entries) | fused (rank_one_records) "
             "| saved | identical answers |", "|---|---|---|---|---|---|"]
    for r in res["in_process"]:
        lines.append(f"| {r['model']} | {r['touched_mb']} MB | {r['composed_us']:.1f} | {r['fused_us']:.1f} | "
                     f"{r['composed_us'] - r['fused_us']:.1f} | {r['identical']:,} of {r['queries']:,} |")
    lines += ["", f"## Under load (xmr serve, cache off, {res['duration']:g} s open-loop windows, interleaved rounds)",
              "", "| round | path | model | rate req/s | server CPU ms per call | p50 / p99 ms | errors |",
              "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['round']} | {r['path']} | {r['model']} | {r['rate']} | {r['cpu_ms_per_call']:.3f} | "
                     f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['errors'] or 'none'} |")
    lines += ["", "| model | composed: median CPU ms per call | fused | saved per call (median of the rounds' "
              "differences) |", "|---|---|---|---|"]
    for model in RATES:
        by = {p: [r["cpu_ms_per_call"] for r in res["rows"] if r["model"] == model and r["path"] == p]
              for p in ("composed", "fused")}
        diffs = [c - f for c, f in zip(by["composed"], by["fused"])]
        lines.append(f"| {model} | {np.median(by['composed']):.3f} | {np.median(by['fused']):.3f} | "
                     f"{np.median(diffs) * 1e3:.0f} us ({', '.join(f'{d * 1e3:.0f}' for d in diffs)}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI: run (default) | serve (the server the run starts)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m experiments.fused_search", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4, help="interleaved (fused, composed) rounds (default 4)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per window (default 8)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the processes")
    args = ap.parse_args(argv)
    from experiments.datasets import CACHE
    from experiments.load_test import SERVER_CPU, prepare_models
    from experiments.report import publish

    cache = CACHE / "serving"
    dirs = {k: str(v) for k, v in prepare_models(cache).items()}
    pinned = args.pin and len(os.sched_getaffinity(0)) >= 2
    res: dict = {"duration": args.duration, "pinned": pinned}
    if pinned:
        os.sched_setaffinity(0, SERVER_CPU)
    res["in_process"] = in_process(dirs, cache)
    if pinned:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    res["rows"] = under_load(dirs, cache, args.rounds, args.duration, pinned)
    failures = [f"{r['model']}: {r['queries'] - r['identical']} answers differ" for r in res["in_process"]
                if r["identical"] != r["queries"]]
    return publish(args.out, render(res), res, failures, "fused_search")


if __name__ == "__main__":
    sys.exit(main())
