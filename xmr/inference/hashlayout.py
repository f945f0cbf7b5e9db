"""Fast single-query layout: per level, a cache-line hash table keyed on (parent chunk, feature), or a dense block.

For every level t, parent chunk c (the contiguous children of node c of level t-1) and feature f with a stored
weight in that chunk, the "row" (c, f) lists the chunk's weights on feature f as (sibling offset, value). A
query's score block for chunk c is the sum over its nonzeros f of x_f * row(c, f), so a beam of b parents and
a query of q nonzeros costs b*q lookups plus the row lengths.

Hash table: 64-byte buckets of 4 slots, slot = (int64 key c*d+f, int64 payload), fmix64 hash, linear probing
over buckets, load factor <= 1/2 (on aol-q2site, <= 0.7 ran 20-25% slower and <= 0.25 no faster), so nearly
every lookup reads one cache line. Payload (hi:lo 32-bit halves):
  hi < 0   one-entry row stored inline: offset -hi-1, lo = the float32 value's bits
  0 < hi < DENSE_ROW   row of hi entries starting at entry lo of ``ent`` (interleaved int32 offset, float32 value)
  hi >= DENSE_ROW      dense row: the chunk's hi - DENSE_ROW float32 values (zeros included) from entry lo of
                       ``ent`` on, padded to whole entries; stored so when at least half the chunk has a weight
                       on the feature, so it never takes more bytes than the pairs, and it is added as one
                       contiguous vectorised run (adding x * 0.0 leaves a float sum unchanged: the same scores)
(On the catalogue model 77% of the bottom-level entries a query reads lie in such rows: beam 20 / top 100 search
66 -> 61 us median of three interleaved runs, layout 184 -> 176 MB; aol-q2site, whose rows are sparse, unchanged
at 27.5 us. Making every multi-entry row dense, or every row with a third of the chunk, was no faster.)
Empty slots hold key -1. Level t's table starts at slot word ``tab_off[t]``, has ``tab_mask[t]+1`` buckets.

Dense levels: a level dense enough, or with short enough chunks, within a memory budget (``plan_dense``) is
stored instead as a dense
row-major d x K_t float32 block (section ``dense``, level t from element ``dense_off[t]``, -1 for hash levels;
columns in the compact layout's node order, so a parent chunk is a contiguous slice of each row). A chunk's score
block is then the sum over the query's nonzeros f of x_f * W[f, chunk]: no lookups, contiguous, vectorised. It
replaces the level's hash table (which stays empty); the kernels branch once per level, not per lookup.

Everything the sparse kernel reads (this layout plus the compact layout's tree arrays and bias weights) is packed
into one 64-byte aligned int64 ``blob`` with a section table ``meta``: a numba call unboxes each array argument
(~0.1 us each), so the single-query path passes two arrays instead of one per section. A blob of 8 MiB or more
comes from an anonymous mapping advised for 2 MiB pages (fewer TLB misses on random lookups: 3-5% on aol-q2site).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

import numpy as np
from numba import njit

from xmr.inference.layout import CompactLayout

SLOTS = 4  # per 64-byte bucket
WORDS = 2 * SLOTS  # int64 words per bucket


# auto plan, top level first (every query reads it): a level goes dense while all dense blocks stay within
# DENSE_BUDGET bytes and streaming beats hashing: a chunk row of cs floats costs ~cs/16 cache lines, contiguous and
# vectorised, against one random line per lookup plus density*cs entries, so dense pays when the level is dense
# enough or its chunks are short (aol-q2site's 8.6%-dense second level: single p50 -10%, +25 MB net)
DENSE_BUDGET = 64 << 20
DENSE_MIN_DENSITY = 1 / 16
DENSE_MAX_CHUNK = 32
DENSE_ROW = 1 << 30  # a payload hi >= this: a dense row of hi - DENSE_ROW floats (see module docstring)


class LayoutTooLargeError(ValueError):
    """A level has more rows or entries than the 32-bit fields of the hash layout can address."""


# sections of the packed blob: (name, dtype)
SECTIONS = (
    ("node_off", np.int64),
    ("cptr", np.int64),
    ("cptr_off", np.int64),
    ("tab_off", np.int64),
    ("tab_mask", np.int64),
    ("bias_w", np.float32),
    ("label_of", np.int32),
    ("tab", np.int64),
    ("ent", np.int32),
    ("dense_off", np.int64),
    ("dense", np.float32),
)
SEC = {name: i for i, (name, _) in enumerate(SECTIONS)}


@dataclass(frozen=True)
class HashLayout:
    """The packed blob and its section table (see module docstring); ``section(name)`` gives a typed view."""

    blob: np.ndarray  # int64, 64-byte aligned
    meta: np.ndarray  # int64[2 * sections]: (first word, element count) per section
    nr_rows: tuple[int, ...]
    sizes: dict  # bytes per section
    dense_levels: tuple[bool, ...] = ()

    def section(self, name: str) -> np.ndarray:
        """Typed read-only view of one section of the blob."""
        i = SEC[name]
        start, count = int(self.meta[2 * i]), int(self.meta[2 * i + 1])
        dtype = SECTIONS[i][1]
        per_word = 8 // np.dtype(dtype).itemsize
        return self.blob[start : start + -(-count // per_word)].view(dtype)[:count]

    @property
    def nbytes(self) -> int:
        """Memory held by the blob."""
        return self.blob.nbytes + self.meta.nbytes


@njit(cache=True, nogil=True, inline="always")
def fmix64(key):
    """MurmurHash3's 64-bit finaliser: a cheap mixer that spreads (chunk, feature) keys over buckets."""
    k = np.uint64(key)
    k ^= k >> np.uint64(33)
    k *= np.uint64(0xFF51AFD7ED558CCD)
    k ^= k >> np.uint64(33)
    k *= np.uint64(0xC4CEB93FE53BA84F)
    k ^= k >> np.uint64(33)
    return k


@njit(cache=True, nogil=True)
def fill_table(tab, off, mask, keys, payloads):
    """Insert keys (distinct) with payloads by linear probing over 4-slot buckets. O(keys) expected."""
    for r in range(keys.size):
        b = np.int64(fmix64(keys[r]) & np.uint64(mask))
        while True:
            base = off + b * 8
            done = False
            for s in range(4):
                if tab[base + 2 * s] == -1:
                    tab[base + 2 * s] = keys[r]
                    tab[base + 2 * s + 1] = payloads[r]
                    done = True
                    break
            if done:
                break
            b = (b + 1) & mask


def bucket_count(rows: int) -> int:
    """Buckets of a table for ``rows`` keys: a power of two, at most half full."""
    return 1 << max(0, int(np.ceil(np.log2(max(1, rows) / (SLOTS / 2)))))


_HUGE = 2 << 20  # x86-64 transparent huge page


def aligned_empty(n: int, dtype, align: int = 64) -> np.ndarray:
    """An uninitialised 64-byte aligned array of n items; 2 MiB pages (where the kernel allows) from 8 MiB up."""
    itemsize = np.dtype(dtype).itemsize
    if n * itemsize >= 4 * _HUGE and hasattr(mmap, "MADV_HUGEPAGE"):
        # random lookups over a big table miss the TLB on nearly every 4 KiB page; ask for 2 MiB pages (Linux
        # THP in "madvise" mode gives none otherwise)
        buf = mmap.mmap(-1, n * itemsize + _HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            buf.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
        raw = np.frombuffer(buf, dtype=np.uint8)
        shift = -raw.ctypes.data % _HUGE
        return raw[shift : shift + n * itemsize].view(dtype)
    raw = np.empty(n + align // itemsize, dtype=dtype)
    shift = (-raw.ctypes.data % align) // itemsize
    return raw[shift : shift + n]


def plan_dense(c: CompactLayout, dense="auto", budget: int = DENSE_BUDGET) -> tuple[bool, ...]:
    """Which levels to store dense: "auto" (by size, density and chunk size, see DENSE_*), True/"all",
    False/"none", or one bool per level."""
    depth = c.depth
    if isinstance(dense, str):
        if dense not in ("auto", "all", "none"):
            raise ValueError(f"dense must be 'auto', 'all', 'none', a bool or one bool per level, got {dense!r}")
        if dense != "auto":
            return (dense == "all",) * depth
        plan, used = [], 0
        for t in range(depth):
            k = c.level_sizes[t]
            nbytes = 4 * c.nr_features * k
            nnz = int(c.w_indptr[c.node_off[t + 1]] - c.w_indptr[c.node_off[t]])
            chunks = 1 if t == 0 else c.level_sizes[t - 1]
            worth = nnz >= DENSE_MIN_DENSITY * c.nr_features * k or k <= DENSE_MAX_CHUNK * chunks
            plan.append(bool(worth and used + nbytes <= budget))
            used += nbytes if plan[-1] else 0
        return tuple(plan)
    if isinstance(dense, (bool, np.bool_)):
        return (bool(dense),) * depth
    plan = tuple(bool(v) for v in dense)
    if len(plan) != depth:
        raise ValueError(f"dense: got {len(plan)} per-level flags for a tree of depth {depth}")
    return plan


def _fill_dense(out: np.ndarray, c: CompactLayout, t: int) -> None:
    lo, hi = c.node_off[t], c.node_off[t + 1]
    k = hi - lo
    indptr = c.w_indptr[lo : hi + 1]
    col = np.repeat(np.arange(k, dtype=np.int64), np.diff(indptr))
    feat = c.w_indices[indptr[0] : indptr[-1]].astype(np.int64)
    out[:] = 0
    out[feat * k + col] = c.w_data[indptr[0] : indptr[-1]]


def build_hash(c: CompactLayout, dense="auto") -> HashLayout:
    """Build the hash layout from a compact layout (levels chosen by ``plan_dense(c, dense)`` stored dense)."""
    d = c.nr_features
    depth = c.depth
    plan = plan_dense(c, dense)
    dense_off = np.full(depth, -1, dtype=np.int64)
    ndense = 0
    for t in range(depth):
        if plan[t]:
            dense_off[t] = ndense
            ndense += d * c.level_sizes[t]
    level_keys, level_pay, ents, nr_rows = [], [], [], []
    nent = 0
    for t in range(depth):
        if plan[t]:
            level_keys.append(np.zeros(0, dtype=np.int64))
            level_pay.append(np.zeros(0, dtype=np.int64))
            nr_rows.append(0)
            continue
        lo, hi = c.node_off[t], c.node_off[t + 1]
        k = hi - lo
        nparents = 1 if t == 0 else c.level_sizes[t - 1]
        cp = c.cptr[c.cptr_off[t] : c.cptr_off[t] + nparents + 1]
        nchunks = cp.size - 1
        chunk_of = np.repeat(np.arange(nchunks, dtype=np.int64), np.diff(cp))  # local node -> chunk
        indptr = c.w_indptr[lo : hi + 1]
        counts = np.diff(indptr)
        col = np.repeat(np.arange(k, dtype=np.int64), counts)
        feat = c.w_indices[indptr[0] : indptr[-1]].astype(np.int64)
        val = c.w_data[indptr[0] : indptr[-1]]
        chunk = chunk_of[col]
        offset = col - cp[chunk]
        key = chunk * d + feat
        order = np.lexsort((offset, key))
        key, offset, val, chunk = key[order], offset[order], val[order], chunk[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, dtype=np.int64)
        rows_key = key[starts]
        n = np.diff(np.r_[starts, key.size])
        cs = (cp[1:] - cp[:-1])[chunk[starts]]  # each row's chunk size
        if cs.size and cs.max() >= DENSE_ROW:
            raise LayoutTooLargeError(f"a parent has {int(cs.max())} children; the hash layout allows < {DENSE_ROW}")
        inline = n == 1
        dense = ~inline & (2 * n >= cs)  # never more bytes than the row's (offset, value) pairs
        sparse = ~inline & ~dense
        pay = np.zeros(rows_key.size, dtype=np.int64)
        # inline: hi = -(offset+1), lo = value bits
        vbits = val[starts[inline]].view(np.uint32).astype(np.int64)
        pay[inline] = (-(offset[starts[inline]] + 1) << 32) | vbits
        # rows in key order, each from word ``at`` of ``ent``: sparse (offset, value bits) pairs, or a dense run of
        # the chunk's values padded to whole pairs (so every row starts at an entry: lo counts pairs)
        words = np.where(sparse, 2 * n, np.where(dense, cs + (cs & 1), 0))
        at = np.r_[0, np.cumsum(words)[:-1]] if words.size else np.zeros(0, dtype=np.int64)
        pay[sparse] = (n[sparse] << 32) | (nent + at[sparse] // 2)
        pay[dense] = ((cs[dense] + DENSE_ROW) << 32) | (nent + at[dense] // 2)
        row_of_entry = np.repeat(np.arange(rows_key.size), n)
        rank = np.arange(key.size) - starts[row_of_entry]  # entry's position within its row
        words_out = np.zeros(int(words.sum()), dtype=np.int32)
        sel = sparse[row_of_entry]
        pos = at[row_of_entry[sel]] + 2 * rank[sel]
        words_out[pos] = offset[sel]
        words_out[pos + 1] = val[sel].astype(np.float32).view(np.int32)
        sel = dense[row_of_entry]
        words_out[at[row_of_entry[sel]] + offset[sel]] = val[sel].astype(np.float32).view(np.int32)
        ents.append(words_out)
        nent += words_out.size // 2
        if nent >= 2**32:
            raise LayoutTooLargeError("hash layout needs more than 2**32 row entries in all")
        level_keys.append(rows_key)
        level_pay.append(pay)
        nr_rows.append(int(rows_key.size))
    nbuckets = [bucket_count(r) for r in nr_rows]
    tab_off = np.zeros(depth, dtype=np.int64)
    tab_off[1:] = np.cumsum([b * WORDS for b in nbuckets])[:-1]
    counts = {
        "node_off": c.node_off.size, "cptr": c.cptr.size, "cptr_off": c.cptr_off.size, "tab_off": depth,
        "tab_mask": depth, "bias_w": c.bias_w.size, "label_of": c.label_of.size,
        "tab": int(sum(nbuckets)) * WORDS, "ent": 2 * nent, "dense_off": depth, "dense": ndense,
    }
    meta = np.zeros(2 * len(SECTIONS), dtype=np.int64)
    words = 0
    for i, (name, dtype) in enumerate(SECTIONS):
        per_word = 8 // np.dtype(dtype).itemsize
        meta[2 * i], meta[2 * i + 1] = words, counts[name]
        words += -(-(-(-counts[name] // per_word)) // WORDS) * WORDS  # round each section up to a cache line
    layout = HashLayout(blob=aligned_empty(max(words, 1), np.int64), meta=meta, nr_rows=tuple(nr_rows),
                        sizes={name: counts[name] * np.dtype(dt).itemsize for name, dt in SECTIONS},
                        dense_levels=plan)
    layout.blob[:] = 0
    for name in ("node_off", "cptr", "cptr_off", "bias_w", "label_of"):
        layout.section(name)[:] = getattr(c, name)
    layout.section("tab_off")[:] = tab_off
    layout.section("tab_mask")[:] = np.asarray([b - 1 for b in nbuckets], dtype=np.int64)
    tab = layout.section("tab")
    tab[:] = -1
    for t in range(depth):
        fill_table(tab, tab_off[t], nbuckets[t] - 1, level_keys[t], level_pay[t])
    if nent:
        layout.section("ent")[:] = np.concatenate(ents)
    layout.section("dense_off")[:] = dense_off
    dense_arr = layout.section("dense")
    for t in range(depth):
        if plan[t]:
            _fill_dense(dense_arr[dense_off[t] : dense_off[t] + d * c.level_sizes[t]], c, t)
    layout.blob.flags.writeable = False
    return layout
