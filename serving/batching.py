"""Dynamic micro-batching: concurrent Retrieve calls for one model, scored together by one beam-search call.

There is no batching thread. A call that finds no batch being scored leads: it gathers the calls queued behind it
(waiting up to ``max_wait_s`` for more, or until ``max_batch``; see below), scores them, hands each follower its
answer, scores up to ``DRAIN`` more batches of the calls that queued meanwhile, passes the lead to the oldest call
still queued and returns its own answer. A call that finds a batch
being scored queues and waits for its answer or for the lead. So batches form from the calls that arrive while
the previous batch is scored, as in continuous batching, and a call that arrives at an idle scorer with
``max_wait_s`` 0 is scored at once on its own thread by ``score_one``, with no handoff at all.

Why no gathering wait by default: on one server core the wait is what batching costs. With a worker thread that
always gathered for up to 1 ms (stopping at a lull of an eighth of that), aol-q2site reached 0.45-0.75x of the
echo service's rate at p99 < 10 ms against 0.57-0.86x without batching (load-test runs 9-14), and a
leader/follower variant with the same wait measured p50 2.6 against 2.1 ms at 1,500 calls/s with the same server
CPU per call: scoring two calls together saves little next to gRPC's own ~0.2 ms per call. ``max_wait_s`` > 0 is
for machines where a batch's kernels run on several cores.

``score_one(text, k)`` answers one call; ``score_many(texts, ks)`` answers a batch in order (the server's: one
numba call for the whole batch, ``Retriever.rank_many_records``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

BATCH_LOCK = threading.Lock()  # BatchRetrieve's calls into numba's thread pool: two threads must not enter it at once
_LEAD = object()  # a follower's future is set to this when it is handed the lead
# Batches a leader scores after its own before it passes the lead on: passing it wakes a sleeping thread, and at
# saturation a slow wake-up stalls every queued call (aol-q2site, one server core, 3,000-3,500 calls/s, 8 s runs in
# interleaved pairs: p99 46 / 10 / 648 ms passing at once, 5.7 / 7.0 / 33 ms with 4 batches; no batching 6.0 / 3.1
# / 8.5). The leader's own answer waits for them, so they are bounded.
DRAIN = 4


class MicroBatcher:
    """Scores concurrent calls for one model in batches (see the module docstring)."""

    def __init__(self, score_one: Callable[[str, int], Any], score_many: Callable[[list[str], list[int]], Sequence],
                 max_batch: int = 64, max_wait_s: float = 0.0, on_batch: Callable[[int], None] | None = None
                 ) -> None:
        """Batch calls of ``score_one`` into ``score_many``; ``on_batch(n)`` is told each batch's size."""
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_s >= 0, got {max_batch} and {max_wait_s}")
        self.score_one = score_one
        self.score_many = score_many
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch or (lambda n: None)
        self._queue: deque[tuple[str, int, Future]] = deque()
        self._arrived = threading.Condition(threading.Lock())
        self._busy = False  # a leader is gathering or scoring

    def run(self, text: str, k: int, timeout: float | None = None) -> Any:
        """The answer to (``text``, ``k``), scored alone or in a batch; TimeoutError if ``timeout`` s pass while the
        call is still queued (a call already being scored finishes)."""
        with self._arrived:
            if not self._busy:
                self._busy = True
                mine = None
            else:
                mine = (text, k, Future())
                self._queue.append(mine)
                self._arrived.notify()
        if mine is None:
            return self._lead(text, k, gather=self.max_wait_s > 0)
        fut = mine[2]
        try:
            got = fut.result(timeout)
        except FutureTimeout:
            if fut.cancel():  # still queued: the leader will skip it
                raise TimeoutError("deadline passed waiting for a batch") from None
            got = fut.result()  # being scored, or just handed the lead
        return self._lead(text, k, gather=False) if got is _LEAD else got

    def _lead(self, text: str, k: int, gather: bool) -> Any:
        """Score this call with the calls queued behind it, then up to DRAIN more batches of calls that queued
        meanwhile, answer them, pass the lead on; this call's answer."""
        if gather:
            self._gather()
        try:
            mine = self._score([(text, k, None)] + self._take(self.max_batch - 1))
            for _ in range(DRAIN):
                batch = self._take(self.max_batch)
                if not batch:
                    break
                self._score(batch)
            return mine
        finally:
            self._pass_lead()

    def _take(self, n: int) -> list[tuple[str, int, Future]]:
        """Up to ``n`` queued calls, oldest first, each marked running (calls that timed out are dropped)."""
        with self._arrived:
            calls = [self._queue.popleft() for _ in range(min(len(self._queue), n))]
        return [c for c in calls if c[2].set_running_or_notify_cancel()]

    def _score(self, calls: list[tuple[str, int, Future | None]]) -> Any:
        """Score ``calls`` (alone or as one batch) and answer each one's future; the answer of the call without
        one (the leader's), if any. An error goes to every call, and is raised where the leader's call is in."""
        self.on_batch(len(calls))
        try:
            answers = ([self.score_one(calls[0][0], calls[0][1])] if len(calls) == 1
                       else self.score_many([c[0] for c in calls], [c[1] for c in calls]))
        except BaseException as e:
            for c in calls:
                if c[2] is not None:
                    c[2].set_exception(e)
            if calls[0][2] is None:
                raise
            return None
        for c, answer in zip(calls, answers):
            if c[2] is not None:
                c[2].set_result(answer)
        return answers[0]

    def _gather(self) -> None:
        """Wait until ``max_batch`` calls are queued, ``max_wait_s`` has passed, or no call came for an eighth of
        it (on a busy core, waiting past a lull adds latency and no calls)."""
        deadline = time.perf_counter() + self.max_wait_s
        with self._arrived:
            while len(self._queue) < self.max_batch - 1:
                left = deadline - time.perf_counter()
                if left <= 0 or not self._arrived.wait(min(left, self.max_wait_s / 8)):
                    return

    def _pass_lead(self) -> None:
        """Hand the lead to the oldest queued call that is still waiting, or mark the scorer idle."""
        while True:
            with self._arrived:
                if not self._queue:
                    self._busy = False
                    return
                nxt = self._queue.popleft()
            if nxt[2].set_running_or_notify_cancel():
                nxt[2].set_result(_LEAD)
                return
