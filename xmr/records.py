"""Per-label byte records, gathered by label id with each hit's score: the pieces of a served answer.

A server answers a query with each hit's prepared bytes (``serving.wire``: its label and metadata as protobuf)
followed by its float32 score. Keeping every label's record in one byte pool with offsets makes that answer one
kernel call away from the search's label ids and scores (~5 us with cold caches, against ~20 us for looking up
prepared entries in a dict), and lets :mod:`xmr.fused_search` gather them inside its own kernel. xmr does not
know what the records hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

_F4 = np.dtype("<f4")


@njit(cache=True, nogil=True)
def gather_records(pool: np.ndarray, off: np.ndarray, ids: np.ndarray, score_bytes: np.ndarray) -> np.ndarray:
    """pool[off[i]:off[i + 1]] of each id in order, each followed by its four score bytes (ids must be in range:
    they come from the model). O(bytes written)."""
    n = 0
    for j in range(ids.size):
        n += off[ids[j] + 1] - off[ids[j]] + 4
    out = np.empty(n, dtype=np.uint8)
    p = 0
    for j in range(ids.size):
        a = off[ids[j]]
        m = off[ids[j] + 1] - a
        out[p : p + m] = pool[a : a + m]
        out[p + m : p + m + 4] = score_bytes[4 * j : 4 * j + 4]
        p += m + 4
    return out


class LabelRecords:
    """Every label's record in one byte pool (``pool[off[i]:off[i + 1]]`` for label id i)."""

    def __init__(self, records: Sequence[bytes]) -> None:
        """Hold ``records[i]`` for label id i."""
        self.pool = np.frombuffer(b"".join(records), dtype=np.uint8)
        self.off = np.zeros(len(records) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in records], out=self.off[1:])
        self.entries(np.zeros(0, np.int32), np.zeros(0, _F4))  # compile or load the kernel now, not in a call

    def __len__(self) -> int:
        return self.off.size - 1

    def entries(self, ids: np.ndarray, scores: np.ndarray) -> bytes:
        """Each of labels ``ids`` (a contiguous integer array)'s record followed by its score (float32,
        little-endian), joined."""
        if scores.dtype != _F4 or not scores.flags.c_contiguous:
            scores = np.ascontiguousarray(scores, dtype=_F4)
        if ids.dtype != np.int32:  # one kernel specialisation (completion ranks come as int64)
            ids = ids.astype(np.int32)
        return gather_records(self.pool, self.off, ids, scores.view(np.uint8)).tobytes()
