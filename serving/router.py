"""A split retriever served from several machines: the router's side (``xmr route``).

:class:`RoutedRetriever` featurizes a query and runs the levels above the labels itself (``xmr.shards.Router``),
then asks only the shards that own its beam, all at once, for their top k (``xmr.v1.Shard/Expand``) and merges
them (``xmr.shards.merge``): the unsplit retriever's exact answer in one parallel round trip. It is served by the
ordinary Retrieval server as a retrieval model.

At start every shard address is asked which shard it is and of which model version: the set must be exactly the
router's shards of its version. A watcher asks again every few seconds, so the router's health turns
NOT_SERVING while any shard is down or slow. A call that needs a shard that fails or misses the deadline ends in
UNAVAILABLE naming the shard, or, when the request allows partial answers, is answered from the shards that did
answer, marked ``partial`` (such answers are not cached).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from serving.gen import shard_pb2 as spb
from serving.gen import shard_pb2_grpc as spb_grpc
from xmr.retriever import no_result_reason
from xmr.shards import Router, merge
from xmr.validation import InputError

LOGGER = logging.getLogger("xmr.serving")


class ShardUnavailable(Exception):
    """A shard a call needed did not answer (down, overloaded or past the deadline)."""


@dataclass(frozen=True)
class Routed:
    """A routed answer: hits (each with ``label``, ``score``, ``metadata``), a reason when the query could not be
    scored, and whether some shard's part is missing."""

    hits: tuple = ()
    reason: str | None = None
    partial: bool = False


class RoutedRetriever:
    """The router of a split retriever plus channels to its shards (see the module docstring)."""

    routed = True

    def __init__(self, router: Router, targets: Sequence[str], timeout_s: float = 1.0,
                 channel: Callable[[str], grpc.Channel] = grpc.insecure_channel) -> None:
        """Connect to the shard servers at ``targets`` (host:port, any order) and check they are exactly the
        router's shards of its model version; ``timeout_s`` bounds a call to a shard when the caller set none."""
        self.router = router
        self.timeout_s = timeout_s
        self._connect_args = (list(targets), channel)
        self._watching: tuple[Callable[[bool], None], float] | None = None
        self._down: set[int] = set()
        self._watch_stop = threading.Event()
        self._channels = [channel(t) for t in targets]
        self._stubs: dict[int, Any] = {}
        self._targets: dict[int, str] = {}
        try:
            for target, ch in zip(targets, self._channels):
                self._connect(target, spb_grpc.ShardStub(ch))
            missing = sorted(set(range(router.nr_shards)) - set(self._stubs))
            if missing:
                raise InputError(f"no server for shard(s) {missing} of {router.nr_shards}")
        except InputError:
            self.close()
            raise

    def _connect(self, target: str, stub: Any) -> None:
        """Ask the server at ``target`` which shard it is and take it as that shard (InputError if it does not fit)."""
        router = self.router
        try:
            d = stub.Describe(spb.DescribeRequest(), timeout=10)
        except grpc.RpcError as e:
            raise InputError(f"shard server {target}: {e.code().name} ({e.details()})") from None
        if d.model_version != router.model_version:
            raise InputError(f"shard server {target} holds model version {d.model_version}, the router "
                             f"{router.model_version}")
        if d.nr_shards != router.nr_shards:
            raise InputError(f"shard server {target} is one of {d.nr_shards} shards, the router has "
                             f"{router.nr_shards}")
        if d.shard in self._stubs:
            raise InputError(f"shard server {target} is shard {d.shard} again (also at {self._targets[d.shard]})")
        self._stubs[d.shard], self._targets[d.shard] = stub, target

    @property
    def nr_labels(self) -> int:
        """Labels of the whole split model."""
        return self.router.nr_labels

    @property
    def model_version(self) -> str:
        """The split retriever's model version."""
        return self.router.model_version

    # --------------------------------------------------------------------------------------------- calls
    def retrieve_one(self, text: str, k: int = 10, beam_size: int | None = None, allow_partial: bool = False,
                     timeout: float | None = None) -> Routed:
        """Top-k hits of one text through the shards."""
        return self.retrieve([text], k, beam_size, allow_partial, timeout)[0]

    def retrieve(self, texts: Sequence[str], k: int = 10, beam_size: int | None = None, allow_partial: bool = False,
                 timeout: float | None = None) -> list[Routed]:
        """Top-k hits of each text: every text's shard calls are in flight at once."""
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        beam = self.router.upper.beam_size if beam_size is None else beam_size
        deadline = time.monotonic() + (self.timeout_s if timeout is None else min(timeout, 3600.0))
        pending = []
        for text in texts:
            routed = self.router.route_one(text, beam)
            if routed is None:
                pending.append(None)
                continue
            qi, qv, ids, scores = routed
            calls = {}
            for s, pos in self.router.plan(ids).items():
                req = spb.ExpandRequest(feature_ids=qi.tolist(), feature_values=qv.tolist(),
                                        parents=ids[pos].tolist(), parent_scores=scores[pos].tolist(),
                                        top_k=min(k, self.nr_labels), beam_size=beam,
                                        model_version=self.router.model_version)
                calls[s] = (pos, self._stubs[s].Expand.future(req, timeout=max(0.0, deadline - time.monotonic())))
            pending.append(calls)
        return [Routed((), no_result_reason(text)) if calls is None else self._gather(calls, k, allow_partial)
                for text, calls in zip(texts, pending)]

    def _gather(self, calls: dict[int, tuple[np.ndarray, Any]], k: int, allow_partial: bool) -> Routed:
        answers, hits, failed = {}, {}, []
        for s, (pos, fut) in calls.items():
            try:
                resp = fut.result()
            except grpc.RpcError as e:
                failed.append((s, e))
                continue
            hits[s] = list(resp.hits)
            answers[s] = (np.array([h.label_id for h in hits[s]], np.int64),
                          np.array([h.score for h in hits[s]], np.float32),
                          pos[np.array([h.parent_rank for h in hits[s]], np.int64)])
        if failed and not allow_partial:
            for _, fut in calls.values():
                fut.cancel()
            s, e = failed[0]
            raise ShardUnavailable(f"shard {s} ({self._targets[s]}) did not answer: {e.code().name} "
                                   f"({e.details()})")
        top = merge(answers, k)
        return Routed(tuple(hits[s][i] for _, _, s, i in top), None, bool(failed))

    # -------------------------------------------------------------------------------------------- health
    def check(self, timeout: float = 2.0) -> set[int]:
        """Ask every shard who it is; returns (and remembers) the shards that did not answer correctly."""
        down = set()
        for s, stub in self._stubs.items():
            try:
                d = stub.Describe(spb.DescribeRequest(), timeout=timeout)
                if d.shard != s or d.model_version != self.router.model_version:
                    down.add(s)
            except (grpc.RpcError, ValueError):  # ValueError: the channel was closed meanwhile (close())
                down.add(s)
        if down != self._down:
            LOGGER.warning("shards down: %s", sorted(down) or "none",
                           extra={"event": "shards", "down": sorted(down)})
        self._down = down
        return down

    def watch(self, on_change: Callable[[bool], None], interval_s: float = 2.0) -> None:
        """Check the shards every ``interval_s`` seconds in a daemon thread; ``on_change(all_up)`` is told the
        first result and every change."""
        self._watching = (on_change, interval_s)

        def run() -> None:
            last = None
            while True:
                up = not self.check(timeout=min(interval_s, 2.0))
                if self._watch_stop.is_set():  # closed while checking: the answer is about closed channels
                    return
                if up != last:
                    on_change(up)
                    last = up
                if self._watch_stop.wait(interval_s):
                    return

        threading.Thread(target=run, name="xmr-shard-watch", daemon=True).start()

    def reopen(self, router_dir: str | Path) -> RoutedRetriever:
        """A router loaded again from ``router_dir`` over the same shard servers, watched like this one (reload:
        restart the shards on the new split first); InputError or ModelFormatError if it does not fit them."""
        targets, channel = self._connect_args
        new = RoutedRetriever(Router.load(router_dir), targets, self.timeout_s, channel)
        if self._watching is not None:
            new.watch(*self._watching)
        return new

    def close(self) -> None:
        """Stop watching and close the channels."""
        self._watch_stop.set()
        for c in self._channels:
            c.close()
