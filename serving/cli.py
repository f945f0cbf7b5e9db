"""The ``xmr`` command with the service's ``serve``, ``route`` and ``query`` added (xmr's own commands never
import serving).

``xmr serve [--model NAME=DIR ...] [--host 127.0.0.1] [--port 50051]``: with no ``--model`` it serves the product
retriever of the bundled catalogue as ``products`` (trained and cached on first start, with progress) and, when
``$XMR_HOME/models/qac`` holds a completion model (``xmr qac train ... -m`` there), that model as ``queries``.
``xmr serve --shard DIR`` serves one shard of a retriever split with ``xmr shard``; ``xmr route --router DIR
--shards HOST:PORT,...`` serves the split retriever's Retrieval API through those shard servers.
``xmr query TEXT [--target HOST:PORT] [--model products] [--topk 5]`` calls Retrieve (or Complete with
``--complete``, TEXT being the typed prefix) and prints the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger("xmr.cli.serving")


def _read(path: str | None, what: str) -> bytes | None:
    from xmr.validation import InputError

    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"{what} {path}: {e.strerror}") from None


def _token(path: str | None) -> str | None:
    """The bearer token from a file (first line), else from $XMR_TOKEN, else None."""
    data = _read(path, "--token-file")
    token = data.decode("utf-8", "replace").strip() if data is not None else os.environ.get("XMR_TOKEN") or None
    return token or None


def _server_options(p: argparse.ArgumentParser) -> None:
    """Options every server command shares: address, workers, limits, cache, security, shutdown, metrics."""
    from xmr.cli import positive_int

    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=50051, help="port (default 50051; 0: any free port)")
    p.add_argument("--workers", type=positive_int, default=8, help="RPC worker threads (default 8)")
    p.add_argument("--max-top-k", type=positive_int, default=100, help="largest top_k a call may ask (100)")
    p.add_argument("--max-query-chars", type=positive_int, default=1024, help="longest query text (1024)")
    p.add_argument("--max-batch-queries", type=positive_int, default=256,
                   help="most queries in one BatchRetrieve (256)")
    p.add_argument("--cache-size", type=int, default=10_000, metavar="N",
                   help="answers kept per model version for repeated Retrieve and Complete calls (10000; 0: off)")
    p.add_argument("--token-file", metavar="FILE",
                   help="require 'authorization: Bearer <token>' on every call but health checks; the token "
                        "is the file's first line (or set $XMR_TOKEN)")
    p.add_argument("--tls-cert", metavar="PEM", help="server certificate (with --tls-key: TLS instead of plaintext)")
    p.add_argument("--tls-key", metavar="PEM", help="server private key")
    p.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA")
    p.add_argument("--grace", type=float, default=5.0, help="seconds calls in flight get at shutdown (5)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port)")


def _server_settings(args: argparse.Namespace) -> tuple[Any, Any]:
    """(Limits, Tls or None) from the shared options; UsageError on inconsistent ones."""
    from serving.server import Limits, Tls
    from xmr.cli import UsageError

    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    if args.cache_size < 0:
        raise UsageError(f"--cache-size must be 0 (off) or more, got {args.cache_size}")
    max_wait_ms = getattr(args, "max_wait_ms", None)
    if max_wait_ms is not None and not 0 <= max_wait_ms <= 1000:
        raise UsageError(f"--max-wait-ms must be in 0..1000, got {max_wait_ms}")
    tls = None
    if args.tls_cert:
        tls = Tls(_read(args.tls_cert, "--tls-cert"), _read(args.tls_key, "--tls-key"),
                  _read(args.tls_client_ca, "--tls-client-ca"))
    limits = Limits(max_top_k=args.max_top_k, max_query_chars=args.max_query_chars,
                    max_batch_queries=args.max_batch_queries, max_batch=getattr(args, "max_batch", 64),
                    max_wait_ms=max_wait_ms, cache_size=args.cache_size)
    return limits, tls


def _announce_and_serve(running: Any, host: str, grace: float) -> int:
    from serving.server import serve_forever

    print(f"xmr: serving on {host}:{running.port}", file=sys.stderr, flush=True)
    serve_forever(running, grace)
    return 0


class Serve:
    """``xmr serve``."""

    COMMANDS = ("serve",)

    @staticmethod
    def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
        """Add ``serve`` to the subparsers of ``xmr``."""
        from xmr.cli import positive_int

        p = sub.add_parser("serve", parents=[common], help="serve models over gRPC (xmr.v1.Retrieval)",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                       help="a retriever or completion model directory to serve as NAME (repeatable)")
        p.add_argument("--shard", metavar="DIR",
                       help="serve one shard of a split retriever (xmr.v1.Shard, for `xmr route`) instead of models")
        _server_options(p)
        p.add_argument("--max-batch", type=positive_int, default=64,
                       help="micro-batching: most concurrent Retrieve calls scored in one batch (64)")
        p.add_argument("--max-wait-ms", type=float, default=None, metavar="MS",
                       help="turn on micro-batching: calls that queue behind a batch being scored are scored "
                            "together, and a call that finds the scorer idle waits up to MS for more (0: starts at "
                            "once); off by default")
        p.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                       help="reload a model when its directory is saved again, checking every SECONDS")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Load the models (or the shard), serve until SIGTERM or SIGINT."""
        from serving.models import RETRIEVAL, LoadedModel, ModelRegistry, load_model
        from serving.server import start_server
        from xmr.cli import UsageError

        limits, tls = _server_settings(args)
        if args.watch is not None and not args.watch > 0:
            raise UsageError(f"--watch must be a positive number of seconds, got {args.watch}")
        if args.shard:
            from serving.shard_server import start_shard_server
            from xmr.shards import Shard

            if args.model:
                raise UsageError("--shard serves one shard alone; leave out --model")
            running = start_shard_server(Shard.load(args.shard), args.host, args.port, args.workers, limits,
                                         _token(args.token_file), tls, args.metrics_port)
            return _announce_and_serve(running, args.host, args.grace)
        models = []
        for spec in args.model:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise UsageError(f"--model expects NAME=DIR, got {spec!r}")
            models.append(load_model(name, path))
        if not models:
            from xmr.catalogue import default_cache_path, default_retriever

            r = default_retriever(progress=not args.quiet)
            models.append(LoadedModel("products", RETRIEVAL, r, r.model_version, str(default_cache_path())))
            qac_dir = default_cache_path().parent / "qac"
            if qac_dir.is_dir():
                models.append(load_model("queries", qac_dir))
            else:
                LOGGER.info("no completion model at %s (train one with `xmr qac train --log LOG.tsv -m %s`)",
                            qac_dir, qac_dir)
        running = start_server(ModelRegistry(models), args.host, args.port, args.workers, limits,
                               _token(args.token_file), tls, args.metrics_port, args.watch)
        return _announce_and_serve(running, args.host, args.grace)


class Route:
    """``xmr route``."""

    COMMANDS = ("route",)

    @staticmethod
    def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
        """Add ``route`` to the subparsers of ``xmr``."""
        p = sub.add_parser("route", parents=[common], help="serve a split retriever through its shard servers",
                           description="Serve the Retrieval API for a retriever split with `xmr shard`: run its "
                                       "upper levels here and ask the shard servers (`xmr serve --shard DIR`) "
                                       "that own each query's beam; answers equal the unsplit retriever's.")
        p.add_argument("--router", required=True, metavar="DIR", help="the router directory `xmr shard` wrote")
        p.add_argument("--shards", required=True, metavar="HOST:PORT,...",
                       help="the shard servers, comma-separated, in any order (every shard exactly once)")
        p.add_argument("--name", default="products", help="model name to serve the split retriever as (products)")
        p.add_argument("--shard-timeout", type=float, default=1.0,
                       help="seconds a shard may take when the call has no deadline (default 1)")
        p.add_argument("--health-interval", type=float, default=2.0,
                       help="seconds between checks of the shards; any down turns health NOT_SERVING (2)")
        _server_options(p)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Connect to the shards, serve until SIGTERM or SIGINT."""
        from grpc_health.v1 import health_pb2

        from serving.models import RETRIEVAL, LoadedModel, ModelRegistry
        from serving.router import RoutedRetriever
        from serving.server import SERVICE_NAME, start_server
        from xmr.cli import UsageError
        from xmr.shards import Router

        limits, tls = _server_settings(args)
        targets = [t.strip() for t in args.shards.split(",") if t.strip()]
        if not targets:
            raise UsageError("--shards needs at least one HOST:PORT")
        if not args.shard_timeout > 0 or not args.health_interval > 0:
            raise UsageError("--shard-timeout and --health-interval must be positive")
        routed = RoutedRetriever(Router.load(args.router), targets, args.shard_timeout)
        model = LoadedModel(args.name, RETRIEVAL, routed, routed.model_version, args.router)
        running = start_server(ModelRegistry([model]), args.host, args.port, args.workers, limits,
                               _token(args.token_file), tls, args.metrics_port)

        def on_change(up: bool) -> None:
            status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", SERVICE_NAME):
                running.health.set(name, status)

        routed.watch(on_change, args.health_interval)
        try:
            return _announce_and_serve(running, args.host, args.grace)
        finally:
            routed.close()


class Query:
    """``xmr query``."""

    COMMANDS = ("query",)

    @staticmethod
    def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
        """Add ``query`` to the subparsers of ``xmr``."""
        from xmr.cli import positive_int

        p = sub.add_parser("query", parents=[common], help="ask a running xmr server",
                           description="Call Retrieve (or Complete) on a running `xmr serve` and print the result.")
        p.add_argument("text", help="query text (with --complete: the typed prefix)")
        p.add_argument("--target", default="127.0.0.1:50051", help="server host:port (default 127.0.0.1:50051)")
        p.add_argument("--model", default=None, help="model name (default: products, or queries with --complete)")
        p.add_argument("--topk", type=positive_int, default=5, help="results (default 5)")
        p.add_argument("--complete", action="store_true", help="autocomplete TEXT instead of retrieving")
        p.add_argument("--previous", default="", help="with --complete: the session's previous query")
        p.add_argument("--json", action="store_true", help="print the response as JSON")
        p.add_argument("--token-file", metavar="FILE", help="bearer token file (or $XMR_TOKEN)")
        p.add_argument("--tls-ca", metavar="PEM", help="CA of the server's certificate (TLS)")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """One call, printed."""
        import grpc
        from google.protobuf.json_format import MessageToDict

        from serving.client import Client

        async def call() -> Any:
            async with Client(args.target, _token(args.token_file), _read(args.tls_ca, "--tls-ca"),
                              args.timeout) as c:
                if args.complete:
                    return await c.complete(args.model or "queries", args.text, args.previous, args.topk)
                return await c.retrieve(args.model or "products", args.text, args.topk)

        try:
            resp = asyncio.run(call())
        except grpc.aio.AioRpcError as e:
            print(f"xmr: error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 2 if e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND) else 1
        if args.json:
            print(json.dumps(MessageToDict(resp, preserving_proto_field_name=True), ensure_ascii=False))
        elif args.complete:
            for i, c in enumerate(resp.completions, 1):
                print(f"{i:>2}. {c.score:.4f}  {c.text}")
        else:
            if resp.reason:
                print(f"(no hits: {resp.reason})")
            for i, h in enumerate(resp.hits, 1):
                meta = f"  {json.dumps(dict(h.metadata), ensure_ascii=False)}" if h.metadata else ""
                print(f"{i:>2}. {h.score:.4f}  {h.label}{meta}")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``xmr`` console script: xmr's commands plus ``serve``, ``route`` and ``query``."""
    from xmr.cli import main as xmr_main

    return xmr_main(argv, plugins=(Serve, Route, Query))


if __name__ == "__main__":
    sys.exit(main())
