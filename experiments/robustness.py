"""Robustness run against a real ``xmr serve`` process: hostile requests, then normal calls, then reload under load.

    .venv/bin/python -m experiments.robustness [--n 10000]     # -> results/robustness.{md,json}

1. ``--n`` random and malformed requests over every RPC, 8 in flight, from a seeded generator: fuzzed Unicode
   (controls, surrogates-free random code points, emoji, RTL), texts up to 1 MB (over the 4 MB message limit too),
   unknown and empty model names, top_k of 0, 1 and 2**32-1, beam sizes up to 2**32-1, batches of 0 to 1,000
   queries, metadata filters, cancelled calls and 1 us deadlines. Every call must end with an expected status
   (OK, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, CANCELLED, DEADLINE_EXCEEDED); INTERNAL, UNKNOWN or
   UNAVAILABLE count as failures.
2. Normal calls afterwards must all succeed with the same answers as before the run, and the process must be
   alive and healthy.
3. Reload under load: the retriever's directory is saved again (a retrained model) while a closed loop of
   Retrieve calls runs; ReloadModel swaps it; zero calls may fail, and the version must change.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "robustness.md"
EXPECTED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "CANCELLED", "DEADLINE_EXCEEDED"}


def fuzz_text(rng: random.Random) -> str:
    """A random hostile string."""
    kind = rng.randrange(8)
    if kind == 0:
        return ""
    if kind == 1:
        return "".join(chr(rng.randrange(0, 32)) for _ in range(rng.randrange(1, 50)))
    if kind == 2:  # random code points outside the surrogate range
        return "".join(chr(rng.choice([rng.randrange(0xD800), rng.randrange(0xE000, 0x110000)]))
                       for _ in range(rng.randrange(1, 200)))
    if kind == 3:
        return "🧸🚂" * rng.randrange(1, 300) + "\u202e" + "lego"
    if kind == 4:
        return "x" * rng.choice([1025, 10_000, 1_000_000, 5_000_000])
    if kind == 5:
        return " ".join(rng.choice(["lego", "train", "wooden", "doll", "%s", "{}", "\\", "'", '"'])
                        for _ in range(rng.randrange(1, 30)))
    if kind == 6:
        return "\t\n\r " * rng.randrange(1, 20)
    return rng.choice(["wooden train set", "harry potter", "ho", "h", "lego star wars"])


async def hostile(target: str, n: int, models: list[str], seed: int) -> Counter:
    """n hostile calls, 8 in flight; status names counted."""
    import grpc

    from serving.gen import retrieval_pb2 as pb
    from serving.gen import retrieval_pb2_grpc as pb_grpc

    rng = random.Random(seed)
    codes: Counter = Counter()
    channel = grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = pb_grpc.RetrievalStub(channel)
    big = [0, 1, 5, 10, 100, 101, 2**31 - 1, 2**32 - 1]

    def one_call():
        model = rng.choice(models + ["", "nope", "../etc", fuzz_text(rng)[:50]])
        rpc = rng.randrange(5)
        if rpc == 0:
            req = pb.RetrieveRequest(model=model, query=fuzz_text(rng), top_k=rng.choice(big),
                                     beam_size=rng.choice(big), request_id=fuzz_text(rng)[:100],
                                     metadata_filter={fuzz_text(rng)[:20]: fuzz_text(rng)[:20]}
                                     if rng.random() < 0.2 else {})
            return stub.Retrieve(req, timeout=rng.choice([1e-6, 0.001, 5, 5, 5]))
        if rpc == 1:
            req = pb.BatchRetrieveRequest(model=model, queries=[fuzz_text(rng)[:2000] for _ in range(
                rng.choice([0, 1, 8, 300, 1000]))], top_k=rng.choice(big))
            return stub.BatchRetrieve(req, timeout=rng.choice([1e-6, 5, 10]))
        if rpc == 2:
            req = pb.CompleteRequest(model=model, prefix=fuzz_text(rng), previous_query=fuzz_text(rng),
                                     top_k=rng.choice(big))
            return stub.Complete(req, timeout=rng.choice([1e-6, 0.001, 5, 5]))
        if rpc == 3:
            return stub.ListModels(pb.ListModelsRequest(), timeout=5)
        return stub.Retrieve(pb.RetrieveRequest(model=model, query="lego", top_k=5), timeout=5)

    async def worker(count: int) -> None:
        for _ in range(count):
            call = one_call()
            try:
                if rng.random() < 0.05:
                    call.cancel()
                await call
                codes["OK"] += 1
            except asyncio.CancelledError:
                codes["CANCELLED"] += 1
            except grpc.aio.AioRpcError as e:
                codes[e.code().name] += 1

    await asyncio.gather(*(worker(n // 8 + (i < n % 8)) for i in range(8)))
    await channel.close()
    return codes


async def answers(target: str) -> list:
    """A fixed set of normal calls and their answers."""
    from serving.client import Client

    async with Client(target) as c:
        out = []
        for q in ["wooden train set", "hornby", "lego star wars"]:
            out.append([h.label for h in (await c.retrieve("catalogue", q, top_k=5)).hits])
        for prev, p in [("", "ho"), ("harry potter", "h"), ("google", "ya")]:
            out.append([x.text for x in (await c.complete("qac", p, previous_query=prev, top_k=5)).completions])
        out.append([len(r.hits) for r in (await c.batch_retrieve("catalogue", ["doll", "kite"], top_k=3)).results])
        return out


async def reload_under_load(target: str, seconds: float) -> dict:
    """A closed loop of Retrieve calls (4 in flight) around one ReloadModel; every call must succeed."""
    import grpc

    from serving.client import Client

    stop = time.perf_counter() + seconds
    codes: Counter = Counter()
    versions: set = set()

    async with Client(target) as c:
        async def loop() -> None:
            while time.perf_counter() < stop:
                try:
                    r = await c.retrieve("reloadable", "wooden train set", top_k=5)
                    codes["OK"] += 1
                    versions.add(r.model_version)
                except grpc.aio.AioRpcError as e:
                    codes[e.code().name] += 1

        async def reload() -> dict:
            await asyncio.sleep(seconds / 3)
            from serving.gen import retrieval_pb2 as pb

            r = await c._stub.ReloadModel(pb.ReloadModelRequest(model="reloadable"), timeout=120)
            return {"previous_version": r.previous_version, "version": r.model.version}

        res = await asyncio.gather(*(loop() for _ in range(4)), reload())
    return {"codes": dict(codes), "versions_seen": sorted(versions), **res[-1]}


def main(argv: list[str] | None = None) -> int:
    """Run the three parts; exit 1 if any check fails."""
    ap = argparse.ArgumentParser(prog="python -m experiments.robustness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--max-wait-ms", type=float, default=None, metavar="MS",
                    help="serve with micro-batching on (xmr serve --max-wait-ms MS); off by default")
    args = ap.parse_args(argv)

    from experiments.datasets import CACHE
    from experiments.load_test import Server, prepare_models
    from experiments.report import publish
    from xmr.catalogue import default_retriever

    cache = CACHE / "serving"
    dirs = prepare_models(cache)
    reloadable = cache / "reloadable"
    shutil.rmtree(reloadable, ignore_errors=True)
    shutil.copytree(dirs["catalogue"], reloadable)
    srv = Server(["serving.cli", "serve", "--port", "0", "-q", "--model", f"catalogue={dirs['catalogue']}",
                  "--model", f"qac={dirs['qac']}", "--model", f"reloadable={reloadable}",
                  *([] if args.max_wait_ms is None else ["--max-wait-ms", str(args.max_wait_ms)])])
    failures = []
    try:
        before = asyncio.run(answers(srv.target))
        t0 = time.perf_counter()
        codes = asyncio.run(hostile(srv.target, args.n, ["catalogue", "qac", "reloadable"], args.seed))
        hostile_s = time.perf_counter() - t0
        bad = {k: v for k, v in codes.items() if k not in EXPECTED}
        if bad:
            failures.append(f"unexpected statuses in the hostile run: {bad}")
        after = asyncio.run(answers(srv.target))
        if after != before or srv.proc.poll() is not None:
            failures.append("normal calls after the hostile run differ from before (or the server died)")
        # a retrained model saved over the reloadable directory, then swapped in under load
        default_retriever(cache_dir=cache / "retrain", progress=False, threads=1).save(reloadable)
        rl = asyncio.run(reload_under_load(srv.target, 12.0))
        if set(rl["codes"]) != {"OK"} or rl["version"] == rl["previous_version"]:
            failures.append(f"reload under load: {rl}")
        rss_mb = srv.ps.memory_info().rss / 2**20
        alive = srv.proc.poll() is None
    finally:
        srv.stop()
    report = "\n".join([
        "# Robustness run against `xmr serve`", "",
        "Protocol: experiments/robustness.py docstring. One run, 2-core machine; micro-batching "
        + ("off." if args.max_wait_ms is None else f"on (--max-wait-ms {args.max_wait_ms:g})."), "",
        f"1. {args.n:,} hostile calls in {hostile_s:.1f} s; statuses: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(codes.items())) + ".",
        f"2. Normal calls before and after give identical answers: {after == before}; server alive: {alive}; "
        f"RSS after the run {rss_mb:.0f} MB.",
        f"3. Reload under load: {sum(rl['codes'].values()):,} Retrieve calls during the reload, statuses "
        f"{rl['codes']}; version {rl['previous_version']} -> {rl['version']}; versions answered: "
        f"{len(rl['versions_seen'])}.", "",
        "Result: " + ("all checks passed." if not failures else "FAILED: " + "; ".join(failures)), ""])
    payload = {"codes": dict(codes), "hostile_s": hostile_s, "answers_equal": after == before, "alive": alive,
               "rss_mb": rss_mb, "reload": rl, "failures": failures}
    return publish(args.out, report, payload, failures, "robustness")


if __name__ == "__main__":
    sys.exit(main())
