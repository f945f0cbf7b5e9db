"""The label tree (PECOS's "cluster chain"): a hierarchy of clusters whose bottom level is the labels.

Level ``t`` has ``K_t`` nodes; ``parents[t][j]`` is the node of level ``t-1`` that node ``j`` of level ``t``
hangs under (level 0 hangs under a single implicit root, so ``parents[0]`` is all zeros). The last level's
nodes are the labels themselves, in the caller's label numbering.

Invariants (checked on construction):
- every label is in exactly one leaf (implied by the parent-array form);
- no empty cluster: every node of level ``t-1`` has at least one child at level ``t``;
- siblings are contiguous above the bottom level: ``parents[t]`` is non-decreasing for ``t < depth-1``.
  Labels keep the caller's ids, so the bottom level may interleave; inference permutes them at load time.

The trie and trie/k-means hybrid indexers build the same type, so training and inference never care
which indexer produced a tree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp


class LabelTreeError(ValueError):
    """A label tree, or the arrays it was built from, breaks one of the tree invariants."""


class LabelTree:
    """A hierarchy of clusters over labels, stored as one parent array per level."""

    __slots__ = ("_parents", "_children")

    def __init__(self, parents: Sequence[np.ndarray]) -> None:
        """Build and validate a tree from per-level parent arrays (``parents[0]`` all zeros)."""
        if len(parents) == 0:
            raise LabelTreeError("a label tree needs at least one level")
        arrays: list[np.ndarray] = []
        above = 1
        for t, p in enumerate(parents):
            p = np.asarray(p)
            if p.ndim != 1 or p.size == 0:
                raise LabelTreeError(f"level {t}: parent array must be 1-D and non-empty, got shape {p.shape}")
            if not np.issubdtype(p.dtype, np.integer):
                raise LabelTreeError(f"level {t}: parent array must hold integers, got {p.dtype}")
            if p.min() < 0 or p.max() >= above:
                raise LabelTreeError(f"level {t}: parent ids must lie in [0, {above}), got [{p.min()}, {p.max()}]")
            counts = np.bincount(p.astype(np.int64, copy=False), minlength=above)  # bincount rejects uint64
            if (counts == 0).any():
                empty = int(np.flatnonzero(counts == 0)[0])
                raise LabelTreeError(f"level {t - 1}: cluster {empty} has no children (empty cluster)")
            if t < len(parents) - 1 and (np.diff(p) < 0).any():
                raise LabelTreeError(f"level {t}: siblings must be contiguous (parent ids non-decreasing)")
            arr = np.ascontiguousarray(p, dtype=np.int32)
            arr.flags.writeable = False
            arrays.append(arr)
            above = p.size
        self._parents = tuple(arrays)
        self._children: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ shape
    @property
    def depth(self) -> int:
        """Number of levels, the label level included."""
        return len(self._parents)

    @property
    def level_sizes(self) -> tuple[int, ...]:
        """Number of nodes on each level, top first; the last entry is the number of labels."""
        return tuple(p.size for p in self._parents)

    @property
    def nr_labels(self) -> int:
        """Number of labels (nodes of the bottom level)."""
        return self._parents[-1].size

    def parents(self, level: int) -> np.ndarray:
        """Read-only parent ids of the nodes of ``level`` (in level ``level-1``)."""
        return self._parents[level]

    def children(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """CSR-style ``(indptr, indices)`` listing the children at ``level`` of each node of ``level-1``."""
        if level not in self._children:
            p = self._parents[level]
            order = np.argsort(p, kind="stable").astype(np.int32)
            indptr = np.zeros((1 if level == 0 else self._parents[level - 1].size) + 1, dtype=np.int64)
            np.cumsum(np.bincount(p, minlength=indptr.size - 1), out=indptr[1:])
            self._children[level] = (indptr, order)
        return self._children[level]

    def label_order(self) -> np.ndarray:
        """Label ids sorted by leaf (stable), so that the labels of each leaf become contiguous."""
        return self.children(self.depth - 1)[1]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelTree) or other.depth != self.depth:
            return False
        return all(np.array_equal(a, b) for a, b in zip(self._parents, other._parents))

    def __repr__(self) -> str:
        return f"LabelTree(level_sizes={self.level_sizes})"

    # ------------------------------------------------------------- builders
    @classmethod
    def one_vs_all(cls, nr_labels: int) -> LabelTree:
        """The flat tree: every label hangs under the root."""
        return cls([np.zeros(nr_labels, dtype=np.int32)])

    @classmethod
    def from_leaf_assignment(cls, leaf_of_label: np.ndarray, nr_splits: int) -> LabelTree:
        """Group consecutive leaves ``B`` at a time (parent ``k // B``) until at most ``B`` remain, as PECOS does."""
        leaf_of_label = np.asarray(leaf_of_label, dtype=np.int64)
        if leaf_of_label.ndim != 1 or leaf_of_label.size == 0:
            raise LabelTreeError(f"leaf_of_label must be a non-empty 1-D array, got shape {leaf_of_label.shape}")
        if nr_splits < 2:
            raise LabelTreeError(f"nr_splits must be at least 2, got {nr_splits}")
        nr_leaves = int(leaf_of_label.max()) + 1
        parents = [leaf_of_label.astype(np.int32)]
        size = nr_leaves
        while size > nr_splits:
            parents.append(np.arange(size, dtype=np.int32) // nr_splits)
            size = -(-size // nr_splits)
        if size > 1 or len(parents) == 1:
            parents.append(np.zeros(size, dtype=np.int32))
        return cls(parents[::-1])

    # ------------------------------------------------------- PECOS chain form
    def to_chain(self) -> list[sp.csc_matrix]:
        """PECOS cluster chain: one ``K_t x K_{t-1}`` CSC float32 matrix of ones per level."""
        chain = []
        above = 1
        for p in self._parents:
            n = p.size
            chain.append(
                sp.csc_matrix(
                    (np.ones(n, dtype=np.float32), (np.arange(n), p.astype(np.int64))), shape=(n, above)
                )
            )
            above = n
        return chain

    @classmethod
    def from_chain(cls, chain: Sequence[sp.spmatrix]) -> tuple[LabelTree, list[np.ndarray]]:
        """Tree from a PECOS chain, renumbering internal nodes so siblings are contiguous.

        Returns ``(tree, perms)`` where ``perms[t][new] = old`` maps the tree's node ids of level ``t`` back to
        the chain's; the bottom level is never renumbered. Apply ``W[:, perms[t]]`` to matching weight columns.
        """
        old_parents = []
        above = 1
        for t, c in enumerate(chain):
            c = sp.csr_matrix(c)
            if c.shape[1] != above:
                raise LabelTreeError(f"chain level {t}: has {c.shape[1]} columns, level above has {above} nodes")
            if (np.diff(c.indptr) != 1).any():
                raise LabelTreeError(f"chain level {t}: every row must have exactly one nonzero")
            old_parents.append(c.indices.astype(np.int64))
            above = c.shape[0]
        depth = len(old_parents)
        perms: list[np.ndarray] = []
        new_of_old_above = np.zeros(1, dtype=np.int64)
        parents = []
        for t, p_old in enumerate(old_parents):
            p_new = new_of_old_above[p_old]
            if t < depth - 1:
                perm = np.argsort(p_new, kind="stable")
            else:
                perm = np.arange(p_old.size)
            perms.append(perm)
            parents.append(p_new[perm])
            new_of_old_above = np.empty(p_old.size, dtype=np.int64)
            new_of_old_above[perm] = np.arange(p_old.size)
        return cls(parents), perms

    # ---------------------------------------------------------- persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for saving: ``parents_{t}`` per level."""
        return {f"parents_{t}": np.asarray(p) for t, p in enumerate(self._parents)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], depth: int) -> LabelTree:
        """Inverse of :meth:`to_arrays`; raises :class:`LabelTreeError` on missing or inconsistent arrays."""
        try:
            parents = [arrays[f"parents_{t}"] for t in range(depth)]
        except KeyError as e:
            raise LabelTreeError(f"label tree is missing array {e.args[0]}") from None
        return cls(parents)
