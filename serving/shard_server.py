"""The ``xmr.v1.Shard`` gRPC server: one shard of a split retriever (``xmr serve --shard DIR``).

A router (``serving.router``) sends the featurized query and this shard's part of its beam; the shard continues
the beam search below it and returns its top k with label names and metadata. Requests are checked before any
work (wrong model version: FAILED_PRECONDITION; malformed beams, features or sizes: INVALID_ARGUMENT), and the
server shares the retrieval server's framework: thread pool, token check, TLS, health and reflection.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
import numpy as np

from serving.gen import shard_pb2 as spb
from serving.gen import shard_pb2_grpc as spb_grpc
from serving.metrics import Metrics
from serving.server import Limits, Running, Tls, Abort, guarded, bind_and_start, build_server, prepared_hits
from xmr.inference import QueryError
from xmr.shards import Shard

LOGGER = logging.getLogger("xmr.serving")
SHARD_SERVICE = spb.DESCRIPTOR.services_by_name["Shard"].full_name
MAX_QUERY_FEATURES = 100_000


class ShardServicer(spb_grpc.ShardServicer):
    """Expand and Describe over one loaded :class:`xmr.shards.Shard`."""

    def __init__(self, shard: Shard, limits: Limits = Limits(), metrics: Metrics | None = None) -> None:
        """Serve ``shard`` within ``limits``."""
        self.shard = shard
        self.limits = limits
        self.metrics = metrics or Metrics()
        self.name = f"shard-{shard.shard}"
        self._protos: dict[int, Any] = {}

    def metric_model(self, model: str) -> str:
        """Calls are counted under this shard's name."""
        return self.name

    def close(self) -> None:
        """Nothing to stop."""

    @guarded
    def Expand(self, request: Any, context: grpc.ServicerContext) -> Any:
        """This shard's top k under its part of the router's beam."""
        sh = self.shard
        if request.model_version != sh.model_version:
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION, f"{self.name} holds model version {sh.model_version}, "
                                                             f"the router asked for {request.model_version!r}")
        most_k = max(self.limits.max_top_k, self.limits.filter_candidates)
        if not 1 <= request.top_k <= most_k:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"top_k must be in 1..{most_k}, got {request.top_k}")
        if not 1 <= request.beam_size <= self.limits.max_beam_size:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"beam_size must be in 1..{self.limits.max_beam_size}, got {request.beam_size}")
        nf, np_ = len(request.feature_ids), len(request.parents)
        if nf != len(request.feature_values) or not 1 <= nf <= MAX_QUERY_FEATURES:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                       f"feature_ids and feature_values must be 1..{MAX_QUERY_FEATURES} of each, got {nf} and "
                       f"{len(request.feature_values)}")
        if np_ != len(request.parent_scores) or not 1 <= np_ <= request.beam_size:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"parents and parent_scores must be 1..beam_size of each, "
                                                          f"got {np_} and {len(request.parent_scores)}")
        qi = np.array(request.feature_ids, dtype=np.int64)
        if qi.max() > np.iinfo(np.int32).max:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "a feature id is outside the model's features")
        try:
            local, scores, ranks = sh.expand(qi.astype(np.int32), np.array(request.feature_values, np.float32),
                                             np.array(request.parents, np.int64),
                                             np.array(request.parent_scores, np.float32), request.top_k,
                                             request.beam_size)
        except QueryError as e:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        keys = local.tolist()
        protos = prepared_hits(self._protos, keys, sh.labels.hydrate,
                               lambda j, name, meta: spb.ShardHit(label_id=int(sh.label_ids[j]), label=name,
                                                                  metadata=meta))
        resp = spb.ExpandResponse()
        for proto, score, rank in zip(protos, scores.tolist(), ranks.tolist()):
            hit = resp.hits.add()
            hit.CopyFrom(proto)
            hit.score = score
            hit.parent_rank = rank
        return resp

    @guarded
    def Describe(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Which shard this is, of which model version."""
        sh = self.shard
        return spb.DescribeResponse(shard=sh.shard, nr_shards=sh.nr_shards, model_version=sh.model_version,
                                    nr_labels=int(sh.label_ids.size))


def start_shard_server(shard: Shard, host: str = "127.0.0.1", port: int = 0, workers: int = 8,
                       limits: Limits = Limits(), token: str | None = None, tls: Tls | None = None,
                       metrics_port: int | None = None) -> Running:
    """Bind and start a shard server (port 0: any free port; ``metrics_port``: Prometheus /metrics on ``host``)."""
    server, hs = build_server(workers, limits, token)
    servicer = ShardServicer(shard, limits)
    spb_grpc.add_ShardServicer_to_server(servicer, server)
    bound = bind_and_start(server, hs, [SHARD_SERVICE], host, port, tls)
    LOGGER.info("serving shard %d of %d (%d labels, model version %s) on %s:%d", shard.shard, shard.nr_shards,
                shard.label_ids.size, shard.model_version, host, bound,
                extra={"event": "start", "address": f"{host}:{bound}", "shard": shard.shard,
                       "nr_shards": shard.nr_shards, "version": shard.model_version})
    running = Running(server, bound, hs, servicer)
    if metrics_port is not None:
        running.metrics_port = servicer.metrics.expose(metrics_port, host)
    return running
