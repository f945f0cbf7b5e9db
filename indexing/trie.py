"""Trie label trees: labels (query strings) clustered by shared prefixes, as one :class:`~indexing.tree.LabelTree`.

Level ``t`` (1..D) groups the labels by the first ``t`` characters of their key (the label, casefolded unless told
otherwise). A key shorter than ``t`` keeps its own end-of-string group (it sorts before its longer siblings, as
``"ab" < "abc"``), so every label reaches every level. A node holding at most ``max_leaf_size`` labels, or labels
that all share one key, stops splitting and continues as a single-child chain down to the bottom, so all leaves
have equal depth. ``D`` is the smallest depth at which every node has stopped, capped at ``max_depth``; under the
cap, leaves may hold more than ``max_leaf_size`` labels (PECOS's trie has no leaf cap at all). When the root
already stops (at most ``max_leaf_size`` labels, or a single key), the tree is one-vs-all, with no trie level.

Every node is a contiguous run of the labels sorted by ``(key, label id)``, and node ids follow that order, so
siblings are contiguous and the labels under any typed prefix span one contiguous run of nodes on every trie level
(:meth:`PrefixTree.matching_nodes` finds them by binary search, for inspection). Prefix-constrained beam search
needs no such structure from here: it restricts the beam to nodes holding a label id of the prefix's run of sorted
labels, for any tree (``xmr/inference/constraint.py``).

The levels are built from the sorted key array rather than by walking a ``pygtrie.CharTrie`` (the advice of
``qac-reference.md`` section 6.6). Measured on the 129,497 distinct queries of ``aol_800_users.tsv`` (one run,
shared 2-core machine): the whole depth-5 build takes 0.19 s (depth 16: 0.31 s), while merely inserting the keys
into a ``pygtrie.CharTrie`` takes 5.8 s (0.24 s when cut at 5 characters), before any walk (``traverse`` recurses
once per character). The same sorted layout serves the most-popular-completion table (``xmr/qac/mpc.py``).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .tree import LabelTree

# Adjacent keys that are equal never split, whatever the level: any value above every level index works.
_SAME_KEY = np.iinfo(np.int32).max


class TrieError(ValueError):
    """Bad labels or options for a trie (or trie/k-means hybrid) label tree."""


@dataclass(frozen=True, eq=False)
class PrefixTree:
    """A label tree over strings plus, for every node, the prefix its labels share.

    ``tree.parents(t)`` for ``t < tree.depth - 1`` are the internal levels; ``prefixes[t][j]`` is the longest
    common prefix of the keys of the labels under node ``j`` of level ``t``, and ``exact[t][j]`` is True when
    those keys are all equal to it. ``keys[i]`` is label ``i``'s key, ``order`` the label ids sorted by
    ``(key, id)``, and ``starts[t]`` (``None`` for levels that are not runs of that order, e.g. k-means levels)
    the start of each node's run in ``order`` (one extra entry: the label count).
    """

    tree: LabelTree
    keys: tuple[str, ...]
    order: np.ndarray
    prefixes: tuple[tuple[str, ...], ...]
    exact: tuple[np.ndarray, ...]
    starts: tuple[np.ndarray | None, ...]
    casefold: bool = True
    _sorted_keys: list[str] = field(default_factory=list, repr=False)
    _ancestors: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def fold(self, text: str) -> str:
        """The key of ``text`` as the tree compares it (casefolded when the tree was built so)."""
        return text.casefold() if self.casefold else text

    def label_range(self, typed: str) -> tuple[int, int]:
        """Positions ``[lo, hi)`` in ``order`` of the labels whose key starts with ``fold(typed)``."""
        q = self.fold(typed)
        keys = self._sorted()
        lo = bisect.bisect_left(keys, q)
        if q == "":
            return lo, len(keys)
        # keys starting with q are exactly those in [q, successor(q)) where the last character is bumped
        stem = q.rstrip("\U0010ffff")
        if not stem:
            hi = lo
            while hi < len(keys) and keys[hi].startswith(q):
                hi += 1
            return lo, hi
        succ = stem[:-1] + chr(ord(stem[-1]) + 1)
        return lo, bisect.bisect_left(keys, succ, lo)

    def matching_labels(self, typed: str) -> np.ndarray:
        """Ids of the labels whose key starts with ``fold(typed)`` (in key order)."""
        lo, hi = self.label_range(typed)
        return self.order[lo:hi]

    def matching_nodes(self, level: int, typed: str) -> np.ndarray:
        """Ascending ids of the nodes of internal ``level`` that hold at least one label starting with ``typed``."""
        if not 0 <= level < self.tree.depth - 1:
            raise TrieError(f"level must be an internal level in [0, {self.tree.depth - 1}), got {level}")
        lo, hi = self.label_range(typed)
        if lo == hi:
            return np.zeros(0, dtype=np.int64)
        starts = self.starts[level]
        if starts is not None:
            first = int(np.searchsorted(starts, lo, side="right")) - 1
            stop = int(np.searchsorted(starts, hi, side="left"))
            return np.arange(first, stop, dtype=np.int64)
        return np.unique(self.ancestors(level)[self.order[lo:hi]]).astype(np.int64)

    def consistent(self, level: int, node: int, typed: str) -> bool:
        """Cheap test from the node's prefix alone: False means no label under ``node`` can start with ``typed``.

        True is exact for nodes whose prefix is at least as long as ``fold(typed)``; otherwise it means "maybe".
        """
        q = self.fold(typed)
        p = self.prefixes[level][node]
        if self.exact[level][node]:
            return p.startswith(q)
        return p.startswith(q) or q.startswith(p)

    def ancestors(self, level: int) -> np.ndarray:
        """Node of internal ``level`` above every label (indexed by label id)."""
        if level not in self._ancestors:
            node = np.arange(self.tree.nr_labels)
            for t in range(self.tree.depth - 1, level, -1):
                node = np.asarray(self.tree.parents(t))[node]
            self._ancestors[level] = node
        return self._ancestors[level]

    def _sorted(self) -> list[str]:
        if not self._sorted_keys:
            self._sorted_keys.extend(self.keys[i] for i in self.order)
        return self._sorted_keys


# ------------------------------------------------------------------------------------------------ helpers
def label_keys(labels: Sequence[str], casefold: bool) -> list[str]:
    """Validated keys of ``labels``: non-empty, unique strings (casefolded when asked); TrieError otherwise."""
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TrieError(f"labels must be a sequence of strings, got {type(labels).__name__}")
    if len(labels) == 0:
        raise TrieError("labels is empty: a label tree needs at least one label")
    seen: dict[str, int] = {}
    for i, s in enumerate(labels):
        if not isinstance(s, str):
            raise TrieError(f"label {i} is not a string: {s!r}")
        if s == "":
            raise TrieError(f"label {i} is the empty string")
        j = seen.setdefault(s, i)
        if j != i:
            raise TrieError(f"label {s!r} appears twice (ids {j} and {i})")
    return [s.casefold() for s in labels] if casefold else list(labels)


def check_int(name: str, value, low: int) -> int:
    """``value`` as an int when it is an integer (not a bool) of at least ``low``; TrieError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise TrieError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _adjacent_lcp(sorted_keys: list[str], cap: int) -> np.ndarray:
    """lcp[i] = common prefix length of sorted keys i-1 and i, capped at ``cap``; equal keys get _SAME_KEY."""
    out = np.empty(len(sorted_keys), dtype=np.int32)
    out[0] = 0
    prev = sorted_keys[0]
    for i in range(1, len(sorted_keys)):
        cur = sorted_keys[i]
        if cur == prev:
            out[i] = _SAME_KEY
        else:
            n = 0
            m = min(cap, len(cur), len(prev))
            while n < m and cur[n] == prev[n]:
                n += 1
            out[i] = n
        prev = cur
    return out


@dataclass
class _TrieLevels:
    """Internal levels of a trie over the sorted keys: per level the start of each node's run."""

    sorted_keys: list[str]
    order: np.ndarray
    starts: list[np.ndarray]  # per level, node run starts + final L
    parents: list[np.ndarray]  # per level, parent of each node in the level above (zeros for level 0)
    frozen: list[np.ndarray]  # per level, node has stopped splitting


def build_trie_levels(keys: list[str], max_depth: int, max_leaf_size: int) -> _TrieLevels:
    """Trie levels (up to ``max_depth``) of the keys; stops at the first level where every node has stopped."""
    L = len(keys)
    order = np.array(sorted(range(L), key=keys.__getitem__), dtype=np.int64)  # stable: ties keep id order
    sorted_keys = [keys[i] for i in order]
    lcp = _adjacent_lcp(sorted_keys, max_depth)
    same = np.zeros(L + 1, dtype=bool)  # same[i]: keys i-1 and i are equal
    same[1:L] = lcp[1:] == _SAME_KEY
    levels = _TrieLevels(sorted_keys, order, [], [], [])
    # the root: stops at once when small, or when every key is equal
    root_frozen = L <= max_leaf_size or sorted_keys[0] == sorted_keys[-1]
    if root_frozen:
        return levels
    boundary = np.zeros(L, dtype=bool)
    boundary[0] = True
    node_frozen_of_pos = np.zeros(L, dtype=bool)  # whether the parent node of each position has stopped
    prev_node_of_pos = np.zeros(L, dtype=np.int64)
    for t in range(1, max_depth + 1):
        boundary = boundary | ((lcp < t) & ~node_frozen_of_pos)
        starts = np.flatnonzero(boundary)
        node_of_pos = np.cumsum(boundary) - 1
        sizes = np.diff(np.append(starts, L))
        ends = starts + sizes - 1
        # a run of equal keys cannot split again: it is equal iff every adjacent pair inside it is equal
        csum = np.concatenate(([0], np.cumsum(same[1:L])))  # csum[i] = equal pairs among positions 1..i
        all_equal = (csum[ends] - csum[starts]) == (sizes - 1)
        frozen = (sizes <= max_leaf_size) | all_equal
        levels.starts.append(np.append(starts, L).astype(np.int64))
        levels.parents.append(prev_node_of_pos[starts].astype(np.int32))
        levels.frozen.append(frozen)
        if frozen.all():
            break
        node_frozen_of_pos = frozen[node_of_pos]
        prev_node_of_pos = node_of_pos
    return levels


def _lcp(a: str, b: str) -> str:
    return os.path.commonprefix([a, b])


def level_prefixes(sorted_keys: list[str], lo: np.ndarray, hi: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Per node: the common prefix of sorted keys ``lo..hi`` (inclusive) and whether they are all equal."""
    pre = []
    ex = np.empty(lo.size, dtype=bool)
    for j, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
        ka, kb = sorted_keys[a], sorted_keys[b]
        if ka == kb:
            pre.append(ka)
            ex[j] = True
        else:
            pre.append(_lcp(ka, kb))
            ex[j] = False
    return tuple(pre), ex


def trie_index(
    labels: Sequence[str], max_depth: int = 5, max_leaf_size: int = 100, casefold: bool = True
) -> PrefixTree:
    """Trie label tree over ``labels`` with each node's shared prefix (see the module docstring for the rules)."""
    max_depth = check_int("max_depth", max_depth, 1)
    max_leaf_size = check_int("max_leaf_size", max_leaf_size, 1)
    keys = label_keys(labels, casefold)
    lv = build_trie_levels(keys, max_depth, max_leaf_size)
    L = len(keys)
    if not lv.starts:
        tree = LabelTree.one_vs_all(L)
        return PrefixTree(tree, tuple(keys), lv.order, (), (), (), casefold)
    leaf_of_pos = np.repeat(np.arange(lv.starts[-1].size - 1), np.diff(lv.starts[-1]))
    bottom = np.empty(L, dtype=np.int32)
    bottom[lv.order] = leaf_of_pos
    tree = LabelTree([*lv.parents, bottom])
    prefixes, exact = [], []
    for t, st in enumerate(lv.starts):
        if t > 0 and st.size == lv.starts[t - 1].size:  # a level of chains only: same runs as above
            prefixes.append(prefixes[-1])
            exact.append(exact[-1])
            continue
        p, e = level_prefixes(lv.sorted_keys, st[:-1], st[1:] - 1)
        prefixes.append(p)
        exact.append(e)
    return PrefixTree(tree, tuple(keys), lv.order, tuple(prefixes), tuple(exact), tuple(lv.starts), casefold)


def trie_tree(
    labels: Sequence[str], max_depth: int = 5, max_leaf_size: int = 100, casefold: bool = True
) -> LabelTree:
    """Trie label tree over label strings: level t groups labels by their first t characters (casefolded).

    Leaves hold at most ``max_leaf_size`` labels unless the ``max_depth`` cap (or labels sharing one key) stops
    the splitting first; all leaves have equal depth. ``trie_index`` also returns each node's prefix.
    """
    return trie_index(labels, max_depth, max_leaf_size, casefold).tree
