"""Load test of the gRPC service on loopback: servers and the load generator in separate processes.

    .venv/bin/python -m experiments.load_test run [--duration 8]      # everything -> results/load_test.{md,json}
    .venv/bin/python -m experiments.load_test generate --target 127.0.0.1:50051 --rpc retrieve --rate 500 ...
    .venv/bin/python -m experiments.load_test echo-server --port 50060

Servers: ``xmr serve`` (serving.cli) with the aol-q2site text retriever, the bundled catalogue's product retriever
and an AOL completion model, in three configurations: result cache off, the default (result cache on), and
micro-batching with the cache off (``--max-wait-ms 0``: the calls that queue behind a batch being scored form
the next batch); and a no-op echo service on the same framework (grpcio thread-pool server,
same worker count, the same proto; Retrieve returns an empty response). On a machine with two or more CPUs the
server is pinned to CPU 1 and the generator to CPU 0 (``--no-pin`` to let them share): unpinned, the two
processes evict each other's caches and the same server's p99 varies by 2-3x between runs.

Generator (one asyncio process, grpc.aio): open loop at a fixed request rate (requests are sent on schedule
whether or not earlier ones have returned, and latency counts from the scheduled send time, so a stalled server
shows up as latency rather than as a lower offered rate) or closed loop (N calls in flight), over ``--channels``
connections. Bounded by ``--duration`` seconds. Reports throughput, p50/p95/p99/max latency and errors by status
code; the driver adds the server's CPU and memory (psutil) over the run.

What it measures (issue 5): per server, the highest offered rate whose p99 stays under 10 ms (a search from the
rate step nearest the previous answer for that server and model, climbing while rates hold or stepping down while
they miss, a miss confirmed by one retry, then the gap halved twice), as a ratio to the echo service's (measured
before the first xmr server and after each; a server's ratios are to the mean of the echo runs just before and
after it, so a machine drifting during the test shows as differing echo rows, not as a slower service), over
``--rounds`` rounds (default 3) that each start every server config afresh in turn: one run's ratio moved by
+-20% between runs of the same code, so the report gives each config's median and range over the rounds;
BatchRetrieve queries per second at batch sizes 1, 8 and 64 (closed loop); Complete latency at the Retrieve
rate, and Complete's own highest rate on the default server; and the service's added latency over the
in-process single-query call (closed loop, one call in flight). The request streams are 60,000 AOL test
queries in log order (42-49% of a prefix of 8,000-48,000 repeat an earlier one, as real search traffic does),
60,000 synthetic fragments of random catalogue product names, and 60,000 Complete requests (each AOL test pair's
previous query with 1-8 characters of its next one). Every run on a server continues each stream where the last
run on that server stopped (wrapping at its end), as a server's traffic does: runs restarting at the stream's
head would hand the cached server the previous run's answers (before this, the catalogue stream's 8% of
repeats showed as 23% less server CPU per call than with the cache off). The report gives the share of each
cached run that an LRU of the server's cache size answers over the stream as sent since the server started.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "load_test.md"
STREAM = 60_000  # requests per stream file
P99_TARGET_MS = 10.0
RATES = (250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2250, 2500, 2750, 3000, 3500, 4000, 4500, 5000, 6000)
CONFIGS = ("off", "cached", "batched")  # xmr servers (--configs): result cache off, the default, micro-batching
REFINE = 2  # halvings of the gap between the highest rate that held and the first that missed
# The echo baseline is measured before the first xmr server and after each one, and each server's ratios are to the
# mean of the echo runs just before and after it: one echo run first let a machine that slowed mid-test (the same
# code cost 40% more CPU per call in one run than in the one before, echo unchanged) pass as the service being
# slower, and with echo only before and after all servers, a run that sped up by 15% between them still skewed the
# middle server's ratios.


# ----------------------------------------------------------------------------------------------- echo server
def echo_server(port: int, workers: int) -> None:
    """A no-op Retrieval service on grpcio's thread-pool server (the framework's own ceiling)."""
    from concurrent import futures

    import grpc

    from serving.gen import retrieval_pb2 as pb
    from serving.gen import retrieval_pb2_grpc as pb_grpc

    class Echo(pb_grpc.RetrievalServicer):
        def Retrieve(self, request, context):
            return pb.RetrieveResponse(request_id=request.request_id)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    pb_grpc.add_RetrievalServicer_to_server(Echo(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"xmr: serving on 127.0.0.1:{bound}", file=sys.stderr, flush=True)
    server.wait_for_termination()


# -------------------------------------------------------------------------------------------------- generator
async def generate(target: str, rpc: str, model: str, requests: list, rate: float | None, concurrency: int,
                   duration: float, top_k: int, batch: int, channels: int = 1, start: int = 0) -> dict:
    """Open loop at ``rate`` req/s (or closed loop with ``concurrency`` calls in flight) for ``duration`` s,
    round-robin over ``channels`` connections (SO_REUSEPORT spreads connections, not calls, over processes).
    Requests are taken in stream order from position ``start`` on (warm-up calls first); the result's
    ``consumed`` is how many stream positions the run used."""
    import grpc

    from serving.gen import retrieval_pb2 as pb
    from serving.gen import retrieval_pb2_grpc as pb_grpc

    # a local subchannel pool per channel: otherwise channels to one target share one connection
    chans = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
             for _ in range(channels)]
    stubs = [pb_grpc.RetrievalStub(c) for c in chans]
    per_call = batch if rpc == "batch" else 1
    n = len(requests)

    def make(i: int):
        stub = stubs[i % len(stubs)]
        at = start + i * per_call
        if rpc == "retrieve":
            return stub.Retrieve(pb.RetrieveRequest(model=model, query=requests[at % n], top_k=top_k), timeout=5)
        if rpc == "complete":
            prev, prefix = requests[at % n]
            return stub.Complete(pb.CompleteRequest(model=model, prefix=prefix, previous_query=prev, top_k=top_k),
                                 timeout=5)
        qs = [requests[(at + j) % n] for j in range(batch)]
        return stub.BatchRetrieve(pb.BatchRetrieveRequest(model=model, queries=qs, top_k=top_k), timeout=30)

    lat: list[float] = []
    errors: dict[str, int] = {}

    async def one(i: int, t_sched: float) -> None:
        try:
            await make(i)
            lat.append(time.perf_counter() - t_sched)
        except grpc.aio.AioRpcError as e:
            errors[e.code().name] = errors.get(e.code().name, 0) + 1

    warm = 20 * channels
    for i in range(warm):  # warm-up, untimed (every channel connects)
        await one(i, time.perf_counter())
    lat.clear()
    errors.clear()
    # The generator's own stalls would count as the server's latency: a full pass of its cyclic collector
    # (20-27 ms over the calls' objects) fell inside most 8 s windows, and one gather over every call sent
    # (12,000 tasks at 1,500 req/s) held its event loop 30-40 ms while the last calls' answers waited. So the
    # collector is off for the bounded window (reference counting still frees everything acyclic) and only the
    # calls still in flight are awaited at the end.
    gc.collect()
    gc.disable()
    t0 = time.perf_counter()
    sent = 0
    if rate:
        pending: set[asyncio.Task] = set()
        while True:
            t_sched = t0 + sent / rate
            now = time.perf_counter()
            if t_sched - t0 >= duration:
                break
            if t_sched > now:
                await asyncio.sleep(t_sched - now)
            task = asyncio.ensure_future(one(warm + sent, t_sched))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        if pending:
            await asyncio.wait(pending)
    else:
        async def worker(w: int) -> None:
            nonlocal sent
            while time.perf_counter() - t0 < duration:
                i = warm + sent
                sent += 1
                await one(i, time.perf_counter())

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    wall = time.perf_counter() - t0
    gc.enable()
    for c in chans:
        await c.close()
    ms = np.array(lat) * 1e3 if lat else np.zeros(1)
    return {"rpc": rpc, "rate": rate, "concurrency": concurrency if not rate else None, "batch": batch,
            "start": start, "timed_from": start + warm * per_call, "consumed": (warm + sent) * per_call,
            "sent": sent, "ok": len(lat), "errors": errors, "wall_s": wall, "throughput": len(lat) / wall,
            "queries_per_s": len(lat) * per_call / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


# ---------------------------------------------------------------------------------------------------- driver
SERVER_CPU, GENERATOR_CPU = {1}, {0}


def _pin(cpus: set[int] | None):
    """A Popen preexec_fn that pins the child to ``cpus`` (None: no pinning)."""
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


class Server:
    """A server subprocess (xmr serve or the echo service), its psutil handle, the result-cache size it was
    started with, and how far each request stream has been sent to it (``pos``: every run on a server continues
    its stream where the last one stopped, so a result cache never sees a repeat that traffic did not send)."""

    def __init__(self, args: list[str], cpus: set[int] | None = None, cache_size: int = 0) -> None:
        import psutil

        self.cache_size = cache_size
        self.pos: dict[str, int] = {}
        self.proc = subprocess.Popen([sys.executable, "-m", *args], stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_pin(cpus))
        line = ""
        t0 = time.time()
        while "serving on" not in line:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None or time.time() - t0 > 600:
                raise RuntimeError(f"server {args} did not start")
        self.target = line.strip().rsplit(" ", 1)[1]
        self.ps = psutil.Process(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def run_generator(target: str, rpc: str, model: str, reqfile: Path, rate: float | None, concurrency: int,
                  duration: float, top_k: int, batch: int, server: Server, cpus: set[int] | None = None) -> dict:
    """One generator run in its own process; the server's CPU seconds and peak RSS over the run are added."""
    start = server.pos.get(str(reqfile), 0)
    cmd = [sys.executable, "-m", "experiments.load_test", "generate", "--target", target, "--rpc", rpc, "--model",
           model, "--requests", str(reqfile), "--duration", str(duration), "--top-k", str(top_k),
           "--batch", str(batch), "--start", str(start)]
    cmd += ["--rate", str(rate)] if rate else ["--concurrency", str(concurrency)]
    cpu0 = server.ps.cpu_times()
    gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=_pin(cpus))
    rss = 0
    while gen.poll() is None:
        rss = max(rss, server.ps.memory_info().rss)
        time.sleep(0.2)
    out = json.loads(gen.stdout.read())
    cpu1 = server.ps.cpu_times()
    server.pos[str(reqfile)] = start + out["consumed"]
    if server.cache_size and rpc != "batch":  # BatchRetrieve does not use the cache
        out["cache_hits"] = cache_hit_share(reqfile, out["timed_from"], start + out["consumed"], server.cache_size)
    out["server_cpu_s"] = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    out["server_cpu_per_s"] = out["server_cpu_s"] / out["wall_s"]
    out["server_cpu_ms_per_call"] = out["server_cpu_s"] / max(1, out["ok"]) * 1e3
    out["server_rss_mb"] = rss / 2**20
    tag = f"rate {rate}" if rate else f"{concurrency} in flight"
    print(f"[load_test] {rpc} {model} {tag}: {out['throughput']:.0f}/s p50 {out['p50_ms']:.2f} p99 "
          f"{out['p99_ms']:.2f} ms errors {out['errors']} server cpu {out['server_cpu_per_s']:.2f}",
          file=sys.stderr, flush=True)
    return out


def max_rate(server: Server, rpc: str, model: str, reqfile: Path, duration: float, cpus: set[int] | None,
             hint: float = 0.0) -> tuple[float, list[dict]]:
    """Highest rate with p99 under target and no errors. The search starts at the RATES step nearest ``hint`` (an
    earlier round's answer: starting at the bottom spent most of a run on rates far below any answer) and climbs
    while rates hold, or steps down while they miss; a rate misses only after a retry (one noisy run must not end
    the search); then REFINE halvings of the gap between the highest rate that held and the lowest that missed
    (a 250 req/s step is 7-11% of the echo service's rate; two halvings: 2-3%)."""
    runs: list[dict] = []

    def holds(rate: float) -> bool:
        for _ in range(2):
            r = run_generator(server.target, rpc, model, reqfile, rate, 0, duration, 10, 1, server, cpus)
            runs.append(r)
            if r["p99_ms"] < P99_TARGET_MS and not r["errors"] and r["throughput"] > 0.9 * rate:
                return True
        return False

    i = int(np.argmin([abs(r - hint) for r in RATES]))
    if holds(RATES[i]):
        while i + 1 < len(RATES) and holds(RATES[i + 1]):
            i += 1
        best, missed = RATES[i], (RATES[i + 1] if i + 1 < len(RATES) else None)
    else:
        while i > 0 and not holds(RATES[i - 1]):
            i -= 1
        best, missed = (RATES[i - 1] if i else 0), RATES[i]
    for _ in range(REFINE if best and missed else 0):
        mid = round((best + missed) / 2)
        if holds(mid):
            best = mid
        else:
            missed = mid
    return best, runs


def prepare_models(cache: Path) -> dict:
    """The served models (trained once, cached) and request files."""
    from experiments.qac_data import load_pairs, split_pairs
    from experiments.text_data import aol_q2site_text
    from xmr.catalogue import default_cache_path, default_retriever, load_catalogue
    from xmr.qac.model import CompletionModel, normalize_label
    from xmr.retriever import Retriever, is_retriever_dir

    cache.mkdir(parents=True, exist_ok=True)
    split = aol_q2site_text()
    aol_dir = cache / "aol-retriever"
    if not is_retriever_dir(aol_dir):
        Retriever.train(split.train_texts, split.train_labels, features="word1-2:1.5+char").save(aol_dir)
    default_retriever(progress=False)
    qac_dir = cache / "aol-qac"
    train, test = split_pairs(load_pairs())
    if not (qac_dir / "cousers").is_dir():  # what `xmr qac train` builds: with the co-user prior
        CompletionModel.train([(p.previous, p.query) for p in train], prefixes_per_pair=6, index="hybrid",
                              trie_depth=2, users=[p.user for p in train]).save(qac_dir)
    rng = np.random.default_rng(0)
    # streams long enough that no rate tried (up to 6,000/s for 8 s) cycles through them: a cycling stream would
    # hand the result cache repeats that real traffic does not have
    (cache / "aol_queries.json").write_text(json.dumps([t for t in split.test_texts[:STREAM] if t.strip()]))
    products = load_catalogue()
    frags = []
    for i in rng.integers(0, len(products), STREAM).tolist():  # synthetic: random name fragments
        words = products[i].name.split()
        n = int(rng.integers(2, 5))
        s = int(rng.integers(0, max(1, len(words) - n + 1)))
        frags.append(" ".join(words[s:s + n]))
    (cache / "catalogue_queries.json").write_text(json.dumps(frags))
    reqs = []
    for p in test[:STREAM]:
        q = normalize_label(p.query)
        if q:  # typed prefixes of 1..8 characters, what a search box sends most
            reqs.append((normalize_label(p.previous), q[:int(rng.integers(1, min(len(q), 8) + 1))]))
    (cache / "complete_requests.json").write_text(json.dumps(reqs))
    return {"aol": aol_dir, "catalogue": default_cache_path(), "qac": qac_dir}


def in_process_latency(dirs: dict, cache: Path) -> dict:
    """p50/p99 ms of the in-process single-query calls the service wraps (one thread)."""
    from xmr.qac.model import CompletionModel
    from xmr.retriever import Retriever

    out = {}
    for name, loader, reqfile, fn in [
        ("aol", Retriever.load, "aol_queries.json", lambda m, q: m.retrieve_one(q, k=10)),
        ("catalogue", Retriever.load, "catalogue_queries.json", lambda m, q: m.retrieve_one(q, k=10)),
        ("qac", CompletionModel.load, "complete_requests.json", lambda m, q: m.complete(q[0], q[1], 10)),
    ]:
        m = loader(dirs[name])
        reqs = json.loads((cache / reqfile).read_text())[:3000]
        ms = []
        for q in reqs:
            t0 = time.perf_counter()
            fn(m, q)
            ms.append((time.perf_counter() - t0) * 1e3)
        out[name] = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
    return out


def cache_hit_share(reqfile: Path, lo: int, hi: int, size: int) -> float:
    """Share of stream positions [lo, hi) that an LRU of ``size`` answers, fed the stream from position 0 (what
    the server's result cache was sent since it started; every call asks top_k 10, so a request is its key)."""
    reqs = json.loads(reqfile.read_text())
    lru: OrderedDict[str, None] = OrderedDict()
    hits = 0
    for i in range(hi):
        key = json.dumps(reqs[i % len(reqs)])
        if key in lru:
            lru.move_to_end(key)
            hits += i >= lo
        else:
            lru[key] = None
            if len(lru) > size:
                lru.popitem(last=False)
    return hits / max(1, hi - lo)


def baseline(res: dict, row: dict) -> float:
    """The echo rate a row is compared with: the mean of the echo runs it names (``echo``: the runs just before and
    after its server), or of every echo run (echo rows themselves, and results from before the bracketing)."""
    keys = row.get("echo") or [k for k, r in res["max_rate"].items() if r["model"] == "-"]
    return sum(res["max_rate"][k]["rate"] for k in keys) / len(keys)


def _at(row: dict) -> dict | None:
    """The last generator run of a search at the rate it found."""
    return next((x for x in reversed(row["runs"]) if x["rate"] == row["rate"]), None)


def render(res: dict) -> str:
    """The markdown report."""
    pin = ("server pinned to CPU 1 and generator to CPU 0 (each its own core: no cache or scheduler interference "
           "between them)" if res["pinned"] else "no CPU pinning")
    rounds = res.get("rounds", 1)
    lines = ["# Load test of the gRPC service (loopback, 2-core machine)", "",
             f"Protocol: experiments/load_test.py docstring; open loop, {res['duration']:g} s per rate, p99 target "
             f"{P99_TARGET_MS:g} ms, rates from the steps {', '.join(map(str, RATES))} req/s, starting at the "
             f"step nearest the previous answer for the same server and model (a missed rate is retried once), "
             f"then the gap between the highest rate that held and the lowest that missed halved {REFINE} times; "
             f"servers with {res['workers']} worker threads, one process; generator in its own process; {pin}. "
             f"{rounds} round(s), each starting every server config afresh in turn; each xmr row's ratio is to the "
             f"mean of the echo service's runs just before and after its server (so a machine that drifts during "
             f"the test shows as differing echo rows); echo rows: to the mean of all echo runs.",
             "",
             "## Highest Retrieve rate with p99 < 10 ms, over the rounds", "",
             "| server | model | ratio to echo: median (range) | max rate req/s per round | "
             "server CPU ms per call at that rate, median |", "|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in res["max_rate"].values():
        groups.setdefault((r["server"], r["model"]), []).append(r)
    for (server, model), rs in groups.items():
        ratios = [r["rate"] / baseline(res, r) for r in rs]
        cpu = [at["server_cpu_ms_per_call"] for r in rs if (at := _at(r))]
        rates = " / ".join(format(r["rate"], "g") for r in rs)
        lines.append(f"| {server} | {model} | {np.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | "
                     f"{rates} | {np.median(cpu) if cpu else float('nan'):.3f} |")
    lines += ["", "### Every search", "",
              "| round | server | model | max rate req/s | ratio to echo | p50 / p99 ms at that rate | server CPU ms "
              "per call | result-cache hits | server RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["max_rate"].values():
        at = _at(r)
        hits = f"{at['cache_hits']:.0%}" if at and "cache_hits" in at else "-"
        cells = (f"{at['p50_ms']:.2f} / {at['p99_ms']:.2f} | {at['server_cpu_ms_per_call']:.3f} | {hits} | "
                 f"{at['server_rss_mb']:.0f}") if at else "- | - | - | -"
        lines.append(f"| {r.get('round', 1)} | {r['server']} | {r['model']} | {r['rate']:g} | "
                     f"{r['rate'] / baseline(res, r):.2f}x | {cells} |")
    lines += ["", "## BatchRetrieve (closed loop, 4 calls in flight, cache off)", "",
              "| model | batch size | queries/s | calls/s | p50 / p99 ms per call |", "|---|---|---|---|---|"]
    for r in res["batch"]:
        lines.append(f"| {r['model']} | {r['batch']} | {r['queries_per_s']:.0f} | {r['throughput']:.0f} | "
                     f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} |")
    lines += ["", "## Complete at the Retrieve rate (aol, cache off)", "",
              "| server | rate req/s | p50 / p95 / p99 ms | errors |", "|---|---|---|---|"]
    for label, c in res["complete"].items():
        lines.append(f"| {label} | {c['rate']:g} | {c['p50_ms']:.2f} / {c['p95_ms']:.2f} / {c['p99_ms']:.2f} | "
                     f"{c['errors'] or 'none'} |")
    for label, c in res.get("complete_max_rate", {}).items():
        lines += ["", f"Highest Complete rate with p99 < {P99_TARGET_MS:g} ms ({label}, the same request stream): "
                      f"{c['rate']:g} req/s ({c['rate'] / baseline(res, c):.2f}x the echo service's Retrieve)."]
    lines += ["", "## Service overhead over the in-process call (one call in flight, cache off)", "",
              "| model | in-process p50 / p99 ms | through gRPC p50 / p99 ms | added p50 ms |", "|---|---|---|---|"]
    for name, o in res.get("overhead", {}).items():
        ip = res["in_process"][name]
        lines.append(f"| {name} | {ip['p50_ms']:.3f} / {ip['p99_ms']:.3f} | {o['p50_ms']:.3f} / {o['p99_ms']:.3f} | "
                     f"{o['p50_ms'] - ip['p50_ms']:.3f} |")
    return "\n".join(lines) + "\n"


def run_all(args: argparse.Namespace) -> int:
    """Every measurement; writes the report."""
    from experiments.datasets import CACHE
    from experiments.report import publish
    from serving.server import Limits

    cache = CACHE / "serving"
    dirs = prepare_models(cache)
    pinned = args.pin and len(os.sched_getaffinity(0)) >= 2
    scpu, gcpu = (SERVER_CPU, GENERATOR_CPU) if pinned else (None, None)
    res: dict = {"duration": args.duration, "workers": args.workers, "pinned": pinned, "rounds": args.rounds,
                 "max_rate": {}, "batch": [], "complete": {}, "complete_max_rate": {}}
    res["in_process"] = in_process_latency(dirs, cache)
    reqfiles = {"aol": cache / "aol_queries.json", "catalogue": cache / "catalogue_queries.json",
                "qac": cache / "complete_requests.json"}
    models = ["--model", f"aol={dirs['aol']}", "--model", f"catalogue={dirs['catalogue']}", "--model",
              f"qac={dirs['qac']}"]
    hints: dict[str, float] = {"echo": 2500.0}  # each search starts at the last answer for its server and model

    def echo_run(rnd: int, when: str) -> str:
        key = f"echo, round {rnd}, {when}"
        echo = Server(["experiments.load_test", "echo-server", "--workers", str(args.workers)], scpu)
        try:
            rate, runs = max_rate(echo, "retrieve", "echo", reqfiles["aol"], args.duration, gcpu, hints["echo"])
        finally:
            echo.stop()
        hints["echo"] = rate or hints["echo"]
        res["max_rate"][key] = {"server": "no-op echo (grpcio thread pool)", "model": "-", "round": rnd,
                                "rate": rate, "runs": runs}
        return key

    configs = {"off": ("xmr serve, cache off", ["--cache-size", "0"], 0),
               "cached": (f"xmr serve (default: result cache of {Limits.cache_size:,})", [], Limits.cache_size),
               "batched": (f"xmr serve, micro-batching (wait {args.max_wait_ms:g} ms, up to {Limits.max_batch}), "
                           "cache off", ["--cache-size", "0", "--max-wait-ms", str(args.max_wait_ms)], 0)}
    before = echo_run(1, "first")
    for rnd in range(1, args.rounds + 1):
        for name in (c for c in CONFIGS if c in args.configs):
            label, extra, cache_size = configs[name]
            srv = Server(["serving.cli", "serve", "--port", "0", "--workers", str(args.workers), "-q", *models,
                          *extra], scpu, cache_size)
            rows = []  # this server's highest rates, compared with the echo runs before and after it
            try:
                for model in ("aol", "catalogue"):
                    hint = hints.get(f"{label} / {model}", 0.6 * hints["echo"])
                    rate, runs = max_rate(srv, "retrieve", model, reqfiles[model], args.duration, gcpu, hint)
                    hints[f"{label} / {model}"] = rate or hint
                    rows.append({"server": label, "model": model, "round": rnd, "rate": rate, "runs": runs})
                    res["max_rate"][f"{label} / {model} / round {rnd}"] = rows[-1]
                if rnd == 1:
                    once(res, name, label, srv, reqfiles, args, gcpu, rows, configs["off"][0])
            finally:
                srv.stop()
            after = echo_run(rnd, f"after {label}")
            for row in rows:
                row["echo"] = [before, after]
            before = after
    return publish(args.out, render(res), res, [], "load_test")


def once(res: dict, name: str, label: str, srv: Server, reqfiles: dict, args: argparse.Namespace,
         gcpu: set[int] | None, rows: list[dict], off_label: str) -> None:
    """The measurements taken in the first round only, on server config ``name``: Complete at the cache-off aol
    Retrieve rate (off and cached; Complete is not micro-batched), Complete's own ceiling on the default server
    (what the search box can send), and BatchRetrieve and the service's overhead with the cache off."""
    off = res["max_rate"].get(f"{off_label} / aol / round 1")  # None when --configs leaves "off" out
    if name != "batched" and off:
        res["complete"][label] = run_generator(srv.target, "complete", "qac", reqfiles["qac"],
                                               off["rate"] or RATES[0], 0, args.duration, 10, 1, srv, gcpu)
    if name == "cached":
        rate, runs = max_rate(srv, "complete", "qac", reqfiles["qac"], args.duration, gcpu, 2000)
        rows.append({"rate": rate, "runs": runs})
        res["complete_max_rate"][label] = rows[-1]
    if name == "off":
        for b in (1, 8, 64):
            r = run_generator(srv.target, "batch", "aol", reqfiles["aol"], None, 4, args.duration, 10, b, srv, gcpu)
            r["model"] = "aol"
            res["batch"].append(r)
        res["overhead"] = {}
        for model, rpc in [("aol", "retrieve"), ("catalogue", "retrieve"), ("qac", "complete")]:
            res["overhead"][model] = run_generator(srv.target, rpc, model, reqfiles[model], None, 1,
                                                   args.duration, 10, 1, srv, gcpu)


def main(argv: list[str] | None = None) -> int:
    """CLI: run | generate | echo-server."""
    ap = argparse.ArgumentParser(prog="python -m experiments.load_test", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="all measurements -> results/load_test.md")
    r.add_argument("--duration", type=float, default=8.0, help="seconds per generator run (default 8)")
    r.add_argument("--workers", type=int, default=8)
    r.add_argument("--rounds", type=int, default=3, help="rounds of every server config, interleaved (default 3)")
    r.add_argument("--configs", type=lambda v: v.split(","), default=list(CONFIGS),
                   help=f"server configs to run, comma-separated (default: all of {','.join(CONFIGS)})")
    r.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="the micro-batching config's --max-wait-ms (default 0: batch the calls that queue)")
    r.add_argument("--out", type=Path, default=RESULTS)
    r.add_argument("--no-pin", dest="pin", action="store_false",
                   help="do not pin the server and the generator to different CPUs")
    g = sub.add_parser("generate", help="one generator run; prints JSON")
    g.add_argument("--target", required=True)
    g.add_argument("--rpc", choices=("retrieve", "complete", "batch"), default="retrieve")
    g.add_argument("--model", required=True)
    g.add_argument("--requests", type=Path, required=True, help="JSON list of queries or [previous, prefix]")
    g.add_argument("--rate", type=float, default=None, help="open loop at this many requests/s")
    g.add_argument("--concurrency", type=int, default=1, help="closed loop with this many calls in flight")
    g.add_argument("--duration", type=float, default=8.0)
    g.add_argument("--top-k", type=int, default=10)
    g.add_argument("--batch", type=int, default=1)
    g.add_argument("--channels", type=int, default=1, help="connections to spread calls over (default 1)")
    g.add_argument("--start", type=int, default=0, help="stream position of the first request (default 0)")
    e = sub.add_parser("echo-server", help="the no-op echo service")
    e.add_argument("--port", type=int, default=0)
    e.add_argument("--workers", type=int, default=8)
    args = ap.parse_args(argv)
    if args.cmd == "echo-server":
        echo_server(args.port, args.workers)
        return 0
    if args.cmd == "run" and not set(args.configs) <= set(CONFIGS):
        ap.error(f"--configs: unknown {sorted(set(args.configs) - set(CONFIGS))}; choose from {','.join(CONFIGS)}")
    if args.cmd == "generate":
        reqs = json.loads(args.requests.read_text())
        out = asyncio.run(generate(args.target, args.rpc, args.model, reqs, args.rate, args.concurrency,
                                   args.duration, args.top_k, args.batch, args.channels, args.start))
        print(json.dumps(out))
        return 0
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
