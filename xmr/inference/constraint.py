"""Label-range constraint for beam search: which tree nodes hold at least one label id in [lo, hi).

Autocompletion labels are sorted strings, so the completions of a typed prefix are one contiguous run of label
ids [lo, hi). A beam restricted to nodes that hold such a label spends every slot on a subtree that can still
yield a completion (PECOS's qp2q only filters the final list, so short prefixes lose most of the beam to
clusters that cannot match). This works for any tree: a trie node's labels are one id run, a k-means node's
are not, so the test is a binary search over the node's labels sorted by id.

Layout (built once per index from the compact layout's tree arrays): bottom positions are the leaf-contiguous
label order (``label_of``); every node of level t < depth-1 covers the position run
``span[span_off[t] + j] : span[span_off[t] + j + 1]``, and ``lab[t*L + a : t*L + b]`` holds that run's label ids
sorted within each node. Memory: (depth-1) * L int32 + one int64 per node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from xmr.inference.layout import CompactLayout


@dataclass(frozen=True)
class LabelRanges:
    """Per-level node spans over the leaf-contiguous label order, and the labels sorted within each node.

    ``packed`` holds all three in one int64 array, ``[depth, S, span_off, span (S words), lab (int32 pairs)]``,
    so the single-query kernel unboxes one more array, not three (each costs ~0.1 us, see ``hashlayout``).
    Unconstrained single queries on aol-q2site, interleaved A/B runs against the kernel before this existed:
    p50 27.7-29.3 us either way (noise), p99 92-97 us.
    """

    span: np.ndarray  # int64: per level t < depth-1, K_t + 1 position bounds, concatenated
    span_off: np.ndarray  # int64[depth]: start of level t in span
    lab: np.ndarray  # int32[(depth-1) * L]
    packed: np.ndarray  # int64: the three above, see the class docstring

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return self.packed.nbytes


# what the kernels get when there is no constraint: depth 0, no spans
NO_RANGES = np.zeros(2, dtype=np.int64)


@njit(cache=True, nogil=True, inline="always")
def unpack_ranges(packed):
    """(span_off, span, lab) views of a ``LabelRanges.packed`` array. O(1)."""
    depth = packed[0]
    n_span = packed[1]
    span_off = packed[2 : 2 + depth]
    span = packed[2 + depth : 2 + depth + n_span]
    lab = packed[2 + depth + n_span :].view(np.int32)
    return span_off, span, lab


def build_label_ranges(c: CompactLayout) -> LabelRanges:
    """Spans and per-node sorted label ids of every level above the labels. O(depth * L log L)."""
    depth, L = c.depth, c.level_sizes[-1]
    spans: list[np.ndarray] = [np.empty(0, np.int64)] * depth
    below = np.arange(L + 1, dtype=np.int64)  # bottom positions: node j covers [j, j+1)
    for t in range(depth - 2, -1, -1):
        cp = c.cptr[c.cptr_off[t + 1]: c.cptr_off[t + 1] + c.level_sizes[t] + 1]
        below = below[cp]  # a node covers the runs of its (contiguous) children
        spans[t] = below
    span_off = np.zeros(depth, dtype=np.int64)
    span_off[1:] = np.cumsum([s.size for s in spans])[:-1]
    lab = np.empty((depth - 1) * L, dtype=np.int32)
    for t in range(depth - 1):
        node = np.repeat(np.arange(c.level_sizes[t]), np.diff(spans[t]))
        order = np.lexsort((c.label_of, node))  # by node (positions are grouped), then by label id
        lab[t * L: (t + 1) * L] = c.label_of[order]
    span = np.concatenate(spans) if depth > 1 else np.zeros(0, np.int64)
    lab_words = np.zeros(-(-lab.size // 2), dtype=np.int64)
    lab_words.view(np.int32)[: lab.size] = lab
    packed = np.concatenate([np.array([depth, span.size], dtype=np.int64), span_off, span, lab_words])
    span_off, span, lab = unpack_ranges(packed)  # views into packed: one copy of the data
    return LabelRanges(span, span_off, lab[: (depth - 1) * L], packed)


@njit(cache=True, nogil=True, inline="always")
def node_in_range(t, j, depth, label_of, span, span_off, lab, lo, hi):
    """Whether node j of level t holds a label id in [lo, hi): a lower-bound binary search, O(log node size)."""
    if t == depth - 1:
        v = label_of[j]
        return lo <= v < hi
    a = span[span_off[t] + j]
    b = span[span_off[t] + j + 1]
    base = np.int64(t) * label_of.size
    r = b
    while a < r:
        m = (a + r) >> 1
        if lab[base + m] < lo:
            a = m + 1
        else:
            r = m
    return a < b and lab[base + a] < hi
