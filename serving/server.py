"""The ``xmr.v1.Retrieval`` gRPC server: Retrieve, BatchRetrieve, Complete and ListModels over named models.

grpcio's thread-pool server, not grpc.aio: on this kind of machine a no-op echo service answered about 5,000
req/s with it against 2,000 with grpc.aio (3,000 on uvloop), 16 calls in flight from a Python client (issue 5),
and the single-query kernels are ``nogil``, so worker threads search in parallel. The batch kernels run on
numba's thread pool, which must not be entered by two threads at once, so batch calls take turns. With
``Limits.max_wait_ms`` set (0 or more), concurrent Retrieve calls for one model are micro-batched
(``serving.batching``).

Every call is validated before any work (unknown model NOT_FOUND; wrong model kind, empty or oversized text,
top_k of 0 or above the maximum, too many queries: INVALID_ARGUMENT with a message); a call whose deadline has
already passed is not started; anything unexpected inside a call becomes INTERNAL and a log line, never a dead
server. Retrieve, BatchRetrieve and Complete answers are assembled as wire bytes from per-label pieces prepared
at load (``serving.wire``; a call with a metadata filter goes through protobuf messages, and a single Retrieve goes
from its text to those bytes in one numba call, ``xmr.fused_search``), and repeated Retrieve and Complete calls are
answered from a per-model-version LRU of those bytes (``serving.cache``). A split retriever's router
(``serving.router.RoutedRetriever``) is served as a retrieval model. ReloadModel (or a watched directory) swaps a
model atomically, and Prometheus metrics are served over HTTP on request. The standard ``grpc.health.v1`` health
service and server reflection are served beside it; an optional bearer token is checked on every call but health
checks (UNAUTHENTICATED otherwise), and optional TLS (with optional client-certificate verification) replaces the
plaintext port.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from serving.gen import retrieval_pb2 as pb
from serving.gen import retrieval_pb2_grpc as pb_grpc
from serving.batching import BATCH_LOCK, MicroBatcher
from serving.cache import ResultCache
from serving.heap import freeze_heap
from serving.metrics import Metrics
from serving.router import ShardUnavailable
from serving.models import COMPLETION, RETRIEVAL, LoadedModel, ModelLoadError, ModelRegistry, Watcher
from serving.wire import (bool_field, hit_prefix, length_field, scored_entries, serializer,
                          string_field, wire_metadata)
from xmr.validation import InputError

LOGGER = logging.getLogger("xmr.serving")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Retrieval"].full_name


@dataclass(frozen=True)
class Limits:
    """What one call may ask for."""

    max_top_k: int = 100
    max_query_chars: int = 1024
    max_batch_queries: int = 256
    max_beam_size: int = 200
    max_message_bytes: int = 4 << 20
    filter_candidates: int = 200  # hits searched for matches of a metadata filter
    max_batch: int = 64  # micro-batching: most Retrieve calls scored together
    max_wait_ms: float | None = None  # micro-batching: longest wait for more calls (0: none); None turns it off
    cache_size: int = 10_000  # answers kept per model version (Retrieve and Complete); 0 turns the cache off


@dataclass
class _Version:
    """What the server keeps per served model version: its result cache and micro-batcher (each optional)."""

    model: LoadedModel
    cache: ResultCache | None
    batcher: MicroBatcher | None
    nr_labels: int = 0
    tail: bytes = b""  # the answers' model_version field
    # label name (batch and routed paths) -> the hit's wire bytes before its score (the single-query path reads
    # LoadedModel.hits instead), or, for calls with a metadata filter, label id or name -> a Hit message with its
    # label and wire metadata: converting a product's metadata (json.dumps of each non-string value, then
    # protobuf's map update) cost ~30 us a hit on the catalogue model, more than its search
    prefixes_by_label: dict[str, bytes] = field(default_factory=dict)
    protos_by_id: dict[int, Any] = field(default_factory=dict)
    protos_by_label: dict[str, Any] = field(default_factory=dict)


def _score_one(m: LoadedModel, query: str, k: int, beam: int | None = None) -> tuple[bytes, str]:
    """One Retrieve's hit entries (wire bytes) and reason: from its text in one numba call (xmr.fused_search)."""
    return m.model.rank_one_records(query, m.hits, k, beam)


def _score_many(m: LoadedModel, queries: list[str], ks: list[int]) -> list[tuple[bytes, str]]:
    """:func:`_score_one` of each (query, k), all in one numba call (xmr.fused_search.search_texts)."""
    return m.model.rank_many_records(queries, m.hits, ks)


HIT_PROTO_CACHE = 100_000  # labels whose prepared Hit a model version keeps (then it starts again)


def prepared_hits(cache: dict, keys: list, decode: Callable[[list], tuple[list, list]],
                  make: Callable[[Any, str, dict[str, str]], Any]) -> list:
    """The prepared hit message of each key: ``cache``'s, else ``make(key, name, wire metadata)`` from the
    (names, metadata) that ``decode(missing keys)`` returns, kept in ``cache`` (up to HIT_PROTO_CACHE entries)."""
    got = [cache.get(key) for key in keys]
    missing = [i for i, p in enumerate(got) if p is None]
    if missing:
        names, metas = decode([keys[i] for i in missing])
        if len(cache) + len(missing) > HIT_PROTO_CACHE:
            cache.clear()
        for i, name, meta in zip(missing, names, metas):
            got[i] = cache[keys[i]] = make(keys[i], name, wire_metadata(meta))
    return got


def _hit_prefix(key: Any, name: str, meta: dict[str, str]) -> bytes:
    return hit_prefix(name, meta)


def _hit_message(key: Any, name: str, meta: dict[str, str]) -> Any:
    return pb.Hit(label=name, metadata=meta)


def _prepared_by_label(cache: dict, hits: list, make: Callable[[Any, str, dict[str, str]], Any]) -> list:
    """:func:`prepared_hits` of a Retrieval's ``hits`` (each with .label and .metadata), keyed by label."""
    meta = {h.label: h.metadata for h in hits}
    return prepared_hits(cache, [h.label for h in hits], lambda labels: (labels, [meta[x] for x in labels]), make)


class Abort(Exception):
    """End an RPC with ``code`` and a message for the caller (raised inside a :func:`guarded` body)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        """Carry the status code and the message."""
        super().__init__(message)
        self.code = code


def guarded(method: Callable) -> Callable:
    """Run an RPC body: validation failures end as their status, anything else as INTERNAL plus a log line."""

    name = method.__name__

    def call(self: RetrievalServicer, request: Any, context: grpc.ServicerContext) -> Any:
        t0 = time.perf_counter()
        code = None  # OK
        try:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the call started")
            return method(self, request, context)
        except Abort as e:
            code, message = e.code, str(e)
        except ShardUnavailable as e:
            code, message = grpc.StatusCode.UNAVAILABLE, str(e)
        except Exception as e:  # noqa: BLE001 - a bad call must never take the server down
            if isinstance(e, InputError):
                code, message = grpc.StatusCode.INVALID_ARGUMENT, str(e)
            else:
                LOGGER.exception("%s failed (request_id=%r)", name, getattr(request, "request_id", ""),
                                 extra={"rpc": name, "request_id": getattr(request, "request_id", "")})
                code, message = grpc.StatusCode.INTERNAL, f"{name} failed: {type(e).__name__}"
        finally:
            dt = time.perf_counter() - t0
            model = getattr(request, "model", "")
            status = "OK" if code is None else code.name
            self.metrics.observe(name, self.metric_model(model), status, dt)
            if LOGGER.isEnabledFor(logging.DEBUG):  # one access line per call with --debug (costly at full rate)
                rid = getattr(request, "request_id", "")
                LOGGER.debug("%s request_id=%r model=%r code=%s %.3f ms", name, rid, model, status, dt * 1e3,
                             extra={"rpc": name, "request_id": rid, "model": model, "code": status,
                                    "ms": round(dt * 1e3, 3)})
        context.abort(code, message)

    call.__name__ = name
    return call


class RetrievalServicer(pb_grpc.RetrievalServicer):
    """The Retrieval service's RPCs over a :class:`ModelRegistry`."""

    def __init__(self, registry: ModelRegistry, limits: Limits = Limits(), metrics: Metrics | None = None) -> None:
        """Serve the models of ``registry`` within ``limits``, counting into ``metrics``."""
        self.registry = registry
        self.limits = limits
        self.metrics = metrics or Metrics()
        self.metrics.serving(registry.all())
        self._versions: dict[str, _Version] = {}
        self._versions_lock = threading.Lock()
        if limits.max_wait_ms is not None:  # the batch kernel compiles now, not in the first batch
            for m in registry.all():
                if m.kind == RETRIEVAL and not m.routed:
                    m.model.warm_batch()  # once a process per argument types: ~ms for the other models

    def metric_model(self, model: str) -> str:
        """The model label of a call's metrics: its name if served, else "" (so the label set stays bounded)."""
        return model if self.registry.get(model) else ""

    def _version(self, m: LoadedModel) -> _Version:
        """The cache and micro-batcher of this version of the model (a reloaded model gets new ones)."""
        got = self._versions.get(m.name)
        if got is not None and got.model is m:
            return got
        with self._versions_lock:
            got = self._versions.get(m.name)
            if got is None or got.model is not m:
                limits = self.limits
                batcher = None
                if m.kind == RETRIEVAL and limits.max_wait_ms is not None and not m.routed:
                    size = self.metrics.batch_size.labels(m.name)
                    batcher = MicroBatcher(functools.partial(_score_one, m), functools.partial(_score_many, m),
                                           limits.max_batch, limits.max_wait_ms / 1e3, size.observe)
                new = self._versions[m.name] = _Version(m, ResultCache(limits.cache_size) if limits.cache_size
                                                        else None, batcher, m.nr_labels, string_field(2, m.version))
                return new
            return got

    def _cached(self, v: _Version, key: tuple) -> bytes | None:
        """The stored answer to ``key`` (wire bytes without a request id), or None."""
        if v.cache is None:
            return None
        blob = v.cache.get(key)
        self.metrics.cache_lookup(v.model.name, blob is not None)
        return blob

    # ------------------------------------------------------------------------------------------ checks
    def _model(self, name: str, kind: str | None = None) -> LoadedModel:
        m = self.registry.get(name)
        if m is None:
            known = ", ".join(x.name for x in self.registry.all()) or "none"
            raise Abort(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r} (this server has: {known})")
        if kind is not None and m.kind != kind:
            rpc = "Complete" if kind == COMPLETION else "Retrieve"
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"model {name!r} is a {m.kind} model; {rpc} needs a "
                                                          f"{kind} model")
        return m

    def _text(self, text: str, what: str, allow_empty: bool = False) -> str:
        if not allow_empty and not text.strip():
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what} is empty")
        if len(text) > self.limits.max_query_chars:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"{what} has {len(text)} characters; the limit is {self.limits.max_query_chars}")
        return text

    def _top_k(self, k: int) -> int:
        if not 1 <= k <= self.limits.max_top_k:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"top_k must be in 1..{self.limits.max_top_k}, got {k}")
        return k

    def _beam(self, b: int) -> int | None:
        if b > self.limits.max_beam_size:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"beam_size must be at most {self.limits.max_beam_size} (0: the model's), got {b}")
        return b or None

    @staticmethod
    def _add(hits: Any, protos: list, scores: list, k: int, wanted: Mapping[str, str]) -> None:
        """Append to the repeated Hit field ``hits`` the first ``k`` prepared hits whose metadata matches ``wanted``."""
        n = 0
        for proto, score in zip(protos, scores):
            if wanted and any(proto.metadata.get(f) != value for f, value in wanted.items()):
                continue
            out = hits.add()
            out.CopyFrom(proto)
            out.score = score
            n += 1
            if n == k:
                return

    def _fill_ids(self, v: _Version, hits: Any, ids: np.ndarray, scores: np.ndarray, k: int,
                  wanted: Mapping[str, str]) -> None:
        """:meth:`_add` for label ids (the single-query path)."""
        protos = prepared_hits(v.protos_by_id, ids.tolist(), v.model.model.labels.hydrate, _hit_message)
        self._add(hits, protos, scores.tolist(), k, wanted)

    def _fill(self, v: _Version, hits: Any, retrieval: Any, k: int, wanted: Mapping[str, str]) -> None:
        """:meth:`_add` for a Retrieval's hits (the batch paths)."""
        protos = _prepared_by_label(v.protos_by_label, retrieval.hits, _hit_message)
        self._add(hits, protos, [h.score for h in retrieval.hits], k, wanted)

    def _fetch(self, k: int, v: _Version, wanted: Mapping[str, str]) -> int:
        return min(v.nr_labels, max(k, self.limits.filter_candidates) if wanted else k)

    # -------------------------------------------------------------------------------------------- RPCs
    @guarded
    def Retrieve(self, request: Any, context: grpc.ServicerContext) -> bytes:
        """Top-k hits of one query."""
        m = self._model(request.model, RETRIEVAL)
        query = self._text(request.query, "query")
        k = self._top_k(request.top_k)
        beam = self._beam(request.beam_size)
        wanted = request.metadata_filter
        v = self._version(m)
        key = (query, k, beam, tuple(sorted(wanted.items())) if wanted else ())
        body = self._cached(v, key)
        if body is None:
            body, partial = self._retrieve(m, v, query, k, beam, dict(wanted) if wanted else {}, request.allow_partial,
                                           context)
            if v.cache is not None and not partial:  # a shard may answer next time
                v.cache.put(key, body)
        return body + string_field(3, request.request_id)

    def _retrieve(self, m: LoadedModel, v: _Version, query: str, k: int, beam: int | None,
                  wanted: Mapping[str, str], allow_partial: bool, context: grpc.ServicerContext
                  ) -> tuple[bytes, bool]:
        """The answer (wire bytes without a request id) to a Retrieve call the cache could not answer, and
        whether it is partial: through the shards of a split model, through the micro-batcher, or by the
        single-query path."""
        if m.routed:
            res = m.model.retrieve_one(query, k=self._fetch(k, v, wanted), beam_size=beam,
                                       allow_partial=allow_partial, timeout=context.time_remaining())
            resp = pb.RetrieveResponse(model_version=m.version, reason=res.reason or "", partial=res.partial)
            self._fill(v, resp.hits, res, k, wanted)
            return resp.SerializeToString(), res.partial
        if wanted:
            ids, scores, reason = m.model.rank_one(query, k=self._fetch(k, v, wanted), beam_size=beam)
            resp = pb.RetrieveResponse(model_version=m.version, reason=reason or "")
            self._fill_ids(v, resp.hits, ids, scores, k, wanted)
            return resp.SerializeToString(), False
        if v.batcher is not None and beam is None:
            try:
                left = context.time_remaining()  # a call without a deadline reports a huge number
                body, reason = v.batcher.run(query, k, timeout=3600.0 if left is None else min(left, 3600.0))
            except TimeoutError:
                raise Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed waiting for a batch") from None
        else:
            body, reason = _score_one(m, query, k, beam)
        return body + v.tail + string_field(4, reason or ""), False

    def _entries(self, v: _Version, hits: list) -> bytes:
        """The wire bytes of a Retrieval's ``hits`` (each with .label, .score and .metadata)."""
        return scored_entries(_prepared_by_label(v.prefixes_by_label, hits, _hit_prefix), [h.score for h in hits])

    @guarded
    def BatchRetrieve(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Top-k hits of each query, in order (the batch path)."""
        m = self._model(request.model, RETRIEVAL)
        n = len(request.queries)
        if not 1 <= n <= self.limits.max_batch_queries:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"queries must hold 1..{self.limits.max_batch_queries} texts, got {n}")
        queries = [self._text(q, f"queries[{i}]") for i, q in enumerate(request.queries)]
        k = self._top_k(request.top_k)
        beam = self._beam(request.beam_size)
        wanted = dict(request.metadata_filter)
        self.metrics.batch_size.labels(m.name).observe(n)
        v = self._version(m)
        if m.routed:
            results = m.model.retrieve(queries, k=self._fetch(k, v, wanted), beam_size=beam,
                                       allow_partial=request.allow_partial, timeout=context.time_remaining())
        else:  # label ids, not decoded Retrievals: the hits come from the hit table (or prepared messages)
            with BATCH_LOCK:
                ranked = m.model.rank_many(queries, k=self._fetch(k, v, wanted), beam_size=beam, threads=-1)
        if wanted:
            resp = pb.BatchRetrieveResponse(model_version=m.version, request_id=request.request_id)
            if m.routed:
                for r in results:
                    self._fill(v, resp.results.add(reason=r.reason or "", partial=r.partial).hits, r, k, wanted)
            else:
                for ids, scores, reason in ranked:
                    self._fill_ids(v, resp.results.add(reason=reason or "").hits, ids, scores, k, wanted)
            return resp
        # each HitList: hits (field 1, the same entries as a RetrieveResponse's), reason, partial
        if m.routed:
            lists = [(self._entries(v, r.hits[:k]), r.reason, r.partial) for r in results]
        else:
            lists = [(m.hits.entries(ids[:k], scores[:k]), reason, False) for ids, scores, reason in ranked]
        return b"".join(length_field(1, hits + string_field(2, reason or "") + bool_field(3, partial))
                        for hits, reason, partial in lists) + v.tail + string_field(3, request.request_id)

    @guarded
    def Complete(self, request: Any, context: grpc.ServicerContext) -> bytes:
        """Completions of a typed prefix given the session's previous query."""
        m = self._model(request.model, COMPLETION)
        prefix = self._text(request.prefix, "prefix", allow_empty=True)
        previous = self._text(request.previous_query, "previous_query", allow_empty=True)
        k = self._top_k(request.top_k)
        v = self._version(m)
        key = (previous, prefix, k)
        body = self._cached(v, key)
        if body is None:
            ids, scores = m.model.complete_ids(previous, prefix, k)
            body = m.hits.entries(ids, scores) + v.tail
            if v.cache is not None:
                v.cache.put(key, body)
        return body + string_field(3, request.request_id)

    @guarded
    def ListModels(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Name, kind, version and size of every model."""
        return pb.ListModelsResponse(models=[_info(m) for m in self.registry.all()])

    @guarded
    def ReloadModel(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Load a model again from its directory and swap it in (the old one serves on if that fails)."""
        self._model(request.model)
        try:
            new, old = self.registry.reload(request.model)
        except ModelLoadError as e:
            LOGGER.warning("reload of %s failed, the old version keeps serving: %s", request.model, e,
                           extra={"event": "reload_failed", "model": request.model})
            self.reloaded(request.model, False)
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION, f"{e}; version {self.registry.get(request.model).version}"
                                                             " keeps serving") from None
        self.reloaded(request.model, True)
        LOGGER.info("reloaded %s: version %s -> %s", new.name, old.version, new.version,
                    extra={"event": "reload", "model": new.name, "old_version": old.version,
                           "version": new.version})
        return pb.ReloadModelResponse(model=_info(new), previous_version=old.version)

    def reloaded(self, name: str, ok: bool) -> None:
        """Count a reload attempt and refresh the model-version gauge."""
        self.metrics.reloads.labels(name, "ok" if ok else "failed").inc()
        self.metrics.serving(self.registry.all())
        if ok:
            freeze_heap()  # the new version's objects, as at start (serving.heap)


def _info(m: LoadedModel) -> Any:
    return pb.ModelInfo(name=m.name, kind=m.kind, version=m.version, nr_labels=m.nr_labels)


class _TokenCheck(grpc.ServerInterceptor):
    """UNAUTHENTICATED unless the call carries ``authorization: Bearer <token>`` (health checks exempt)."""

    def __init__(self, token: str) -> None:
        import hmac

        self._ok = lambda got: hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        if details.method.startswith("/grpc.health.v1.Health/"):
            return continuation(details)
        got = dict(details.invocation_metadata or ()).get("authorization", "")
        return continuation(details) if self._ok(got) else self._deny


@dataclass(frozen=True)
class Tls:
    """Server certificate and key (PEM bytes), and optionally the CA that client certificates must chain to."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None


@dataclass
class Running:
    """A started server: the grpc server, the bound port, the health servicer, the servicer, the metrics port
    and the directory watcher (when asked for)."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    servicer: RetrievalServicer
    metrics_port: int | None = None
    watcher: Watcher | None = None

    def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, refuse new calls, let calls in flight finish for up to ``grace`` seconds."""
        if self.watcher is not None:
            self.watcher.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def add_servicer(servicer: RetrievalServicer, server: grpc.Server) -> None:
    """Register the Retrieval RPCs of ``servicer``, whose answers may be prepared wire bytes (``serving.wire``)."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["Retrieval"].methods:
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name), request_deserializer=getattr(pb, method.input_type.name).FromString,
            response_serializer=serializer(getattr(pb, method.output_type.name)))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def build_server(workers: int, limits: Limits, token: str | None) -> tuple[grpc.Server, health.HealthServicer]:
    """A thread-pool gRPC server with the message-size limits, the optional token check and a health service."""
    interceptors = [_TokenCheck(token)] if token else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xmr-rpc"),
                         interceptors=interceptors,
                         options=[("grpc.max_receive_message_length", limits.max_message_bytes),
                                  ("grpc.max_send_message_length", limits.max_message_bytes)])
    hs = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    return server, hs


def bind_and_start(server: grpc.Server, hs: health.HealthServicer, services: list[str], host: str, port: int,
                   tls: Tls | None) -> int:
    """Enable reflection of ``services`` (and health), bind ``host:port`` (TLS if given), start, report SERVING;
    returns the bound port."""
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection((*services, health_name, reflection.SERVICE_NAME), server)
    address = f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        creds = grpc.ssl_server_credentials([(tls.key, tls.cert)], root_certificates=tls.client_ca,
                                            require_client_auth=tls.client_ca is not None)
        bound = server.add_secure_port(address, creds)
    if bound == 0:
        raise OSError(f"cannot bind {address}")
    frozen = freeze_heap()  # what is loaded by now lives as long as the server (serving.heap)
    LOGGER.debug("%d objects exempt from garbage collection", frozen)
    server.start()
    for name in ("", *services):
        hs.set(name, health_pb2.HealthCheckResponse.SERVING)
    return bound


def start_server(registry: ModelRegistry, host: str = "127.0.0.1", port: int = 50051, workers: int = 8,
                 limits: Limits = Limits(), token: str | None = None, tls: Tls | None = None,
                 metrics_port: int | None = None, watch_s: float | None = None) -> Running:
    """Bind and start a server (port 0: any free port, see ``Running.port``); ``metrics_port``: Prometheus
    /metrics over HTTP on ``host`` (0: any free port); ``watch_s``: reload a model whose directory is saved
    again, polling every so many seconds."""
    server, hs = build_server(workers, limits, token)
    servicer = RetrievalServicer(registry, limits)
    add_servicer(servicer, server)
    bound = bind_and_start(server, hs, [SERVICE_NAME], host, port, tls)
    running = Running(server, bound, hs, servicer)
    if metrics_port is not None:
        running.metrics_port = servicer.metrics.expose(metrics_port, host)
        LOGGER.info("metrics on http://%s:%d/metrics", host, running.metrics_port)
    if watch_s:
        running.watcher = Watcher(registry, watch_s, servicer.reloaded).start()
    LOGGER.info("serving %s on %s:%d (%s)", ", ".join(f"{m.name} ({m.kind}, {m.nr_labels:,} labels)"
                                                      for m in registry.all()) or "no models", host, bound,
                "TLS" if tls else "plaintext",
                extra={"event": "start", "address": f"{host}:{bound}", "tls": tls is not None,
                       "models": [{"name": m.name, "kind": m.kind, "version": m.version, "labels": m.nr_labels}
                                  for m in registry.all()]})
    return running


def serve_forever(running: Running, grace: float = 5.0) -> None:
    """Block until SIGTERM or SIGINT, then shut down gracefully (calls in flight finish)."""
    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        LOGGER.info("signal %d: finishing calls in flight (up to %.0f s), then exiting", signum, grace)
        done.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    done.wait()
    running.stop(grace)
    LOGGER.info("stopped")
