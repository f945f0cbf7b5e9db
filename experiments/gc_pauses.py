"""Garbage-collector pauses in the loaded server, with and without freezing the heap (serving.heap).

    .venv/bin/python -m experiments.gc_pauses [--rounds 2] [--duration 8]   # -> results/gc_pauses.{md,json}

1. In process: the load test's three served models (aol-q2site retriever, the bundled catalogue retriever, the AOL
   completion model) are loaded as ``xmr serve`` loads them; the report gives the objects the collector tracks
   and the time of a full collection pass, before and after ``serving.heap.freeze_heap``.
2. Under load: ``xmr serve`` with those models and the result cache off, once as it is (the heap frozen before it
   serves) and once with freezing turned off, in interleaved rounds (the same hour, the same request streams as
   experiments/load_test.py; server pinned to CPU 1, generator to CPU 0 where there are two). Each server logs
   every collection of the oldest generation, with its duration, through ``gc.callbacks``; per 8 s open-loop window
   the report gives p50/p99/max latency and the full passes that fell inside it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "gc_pauses.md"
RATES = {"aol": 1250, "catalogue": 1000}  # below the slowest load-test run's ceilings, so queueing is not the tail


def serve(argv: list[str]) -> int:
    """``xmr serve`` that appends each full collection (end time, ms) to $XMR_GC_LOG; $XMR_GC_FREEZE=0: no freeze."""
    log = open(os.environ["XMR_GC_LOG"], "a", buffering=1)  # noqa: SIM115 - open for the process's life
    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif info["generation"] == 2:
            log.write(json.dumps({"t": time.time(), "ms": (time.perf_counter() - started[0]) * 1e3}) + "\n")

    gc.callbacks.append(on_gc)
    if os.environ.get("XMR_GC_FREEZE") == "0":
        import serving.server

        serving.server.freeze_heap = lambda: 0
    from serving.cli import main as cli_main

    return cli_main(argv)


def in_process(dirs: dict) -> dict:
    """Tracked objects and full-pass times with the served models loaded, before and after freezing."""
    from serving.heap import freeze_heap
    from serving.models import load_model

    models = [load_model(name, path) for name, path in dirs.items()]

    def passes() -> list[float]:
        out = []
        for _ in range(3):
            t0 = time.perf_counter()
            gc.collect()
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    res = {"tracked": len(gc.get_objects()), "full_pass_ms": passes()}
    res["frozen"] = freeze_heap()
    res["full_pass_frozen_ms"] = passes()
    gc.unfreeze()
    del models
    return res


def under_load(dirs: dict, cache: Path, rounds: int, duration: float, pinned: bool) -> list[dict]:
    """Interleaved rounds of (frozen, not frozen) servers, one open-loop window per model each."""
    from experiments.load_test import GENERATOR_CPU, SERVER_CPU, Server, run_generator

    scpu, gcpu = (SERVER_CPU, GENERATOR_CPU) if pinned else (None, None)
    models = [a for name, path in dirs.items() for a in ("--model", f"{name}={path}")]
    rows = []
    for rnd in range(rounds):
        for freeze in (True, False):
            log = cache / f"gc_log_{rnd}_{int(freeze)}.jsonl"
            log.unlink(missing_ok=True)
            os.environ.update(XMR_GC_LOG=str(log), XMR_GC_FREEZE="1" if freeze else "0")
            srv = Server(["experiments.gc_pauses", "serve", "serve", "--port", "0", "-q", "--cache-size", "0",
                          *models], scpu)
            try:
                for model, rate in RATES.items():
                    t0 = time.time()
                    r = run_generator(srv.target, "retrieve", model, cache / f"{model}_queries.json", rate, 0,
                                      duration, 10, 1, srv, gcpu)
                    t1 = time.time()
                    pauses = [e["ms"] for e in map(json.loads, log.read_text().splitlines()) if t0 <= e["t"] <= t1]
                    rows.append({"round": rnd, "frozen": freeze, "model": model, "rate": rate,
                                 "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "max_ms": r["max_ms"],
                                 "errors": r["errors"], "full_passes": len(pauses), "pause_ms": pauses})
            finally:
                srv.stop()
    return rows


def render(res: dict) -> str:
    """The markdown report."""
    ip = res["in_process"]
    lines = ["# Garbage-collector pauses in the loaded server", "",
             "Protocol: experiments/gc_pauses.py docstring; one run, 2-core machine, "
             f"{'server pinned to CPU 1 and generator to CPU 0' if res['pinned'] else 'no CPU pinning'}, "
             f"result cache off, {res['duration']:g} s open-loop windows.", "",
             "## In process (the load test's three models loaded)", "",
             f"- Objects the collector tracks: {ip['tracked']:,}; a full pass: "
             f"{', '.join(f'{x:.1f}' for x in ip['full_pass_ms'])} ms (three passes).",
             f"- After freeze_heap ({ip['frozen']:,} objects frozen): "
             f"{', '.join(f'{x:.2f}' for x in ip['full_pass_frozen_ms'])} ms.", "",
             "## Under load (interleaved rounds)", "",
             "| round | heap | model | rate req/s | p50 / p99 / max ms | full passes in the window (ms each) |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        pauses = ", ".join(f"{x:.0f}" for x in r["pause_ms"]) or "-"
        lines.append(f"| {r['round']} | {'frozen' if r['frozen'] else 'not frozen'} | {r['model']} | {r['rate']} | "
                     f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} / {r['max_ms']:.1f} | {r['full_passes']} ({pauses}) |")
    lines += ["", "| heap | windows | median p99 ms | worst p99 ms | windows with p99 >= 10 ms | full passes |",
              "|---|---|---|---|---|---|"]
    for freeze in (True, False):
        rs = [r for r in res["rows"] if r["frozen"] == freeze]
        p99 = [r["p99_ms"] for r in rs]
        lines.append(f"| {'frozen' if freeze else 'not frozen'} | {len(rs)} | {np.median(p99):.2f} | {max(p99):.2f} | "
                     f"{sum(p >= 10 for p in p99)} | {sum(r['full_passes'] for r in rs)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI: run (default) | serve (the instrumented server the run starts)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m experiments.gc_pauses", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved (frozen, not frozen) rounds (default 2)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per window (default 8)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server and generator")
    args = ap.parse_args(argv)
    from experiments.datasets import CACHE
    from experiments.load_test import prepare_models
    from experiments.report import publish

    cache = CACHE / "serving"
    dirs = {k: str(v) for k, v in prepare_models(cache).items()}
    pinned = args.pin and len(os.sched_getaffinity(0)) >= 2
    res = {"duration": args.duration, "pinned": pinned, "in_process": in_process(dirs)}
    res["rows"] = under_load(dirs, cache, args.rounds, args.duration, pinned)
    return publish(args.out, render(res), res, [], "gc_pauses")


if __name__ == "__main__":
    sys.exit(main())
