"""Exact term -> column hash table over a featurizer's vocabularies, and the numba kernel of its single-text path.

``TextFeaturizer.transform_one`` in Python costs a dict lookup per n-gram, string building, Counter/sort/log
arithmetic and lists turned into arrays, each touching interpreter state that a busy server has evicted from the
CPU caches between two requests. For featurizers made only of vocabulary word, char and prefix blocks (the usual
"word+char" specs, and autocompletion's prefix-position weighted "prefix" block) one numba call
(:func:`featurize_row`) does all of it instead. On the AOL retriever
(word1-2:1.5+char, 194,585 terms, 20,000 served queries, one pinned core, per call, p50): 2.9 us warm against
15-16 us for the Python path, and 24-28 us against 70-75 us with L2 evicted before each call (a Python call that
does nothing costs 3.3 us so measured; of the rest, ~19 us is crossing into numba and boxing the two result
arrays, ~3 us the kernel's own work).

The table, one 64-byte aligned int64 ``blob`` (a numba call unboxes each array argument, so one array, not one per
part; 2 MiB pages when large, see ``xmr.inference.hashlayout.aligned_empty``)::

    header    H_* words: block count, slot mask, hash mask, where the slots and the records start
    blocks    8 words per block from word 8: kind, lo, hi, sublinear, first column, end column, weight and prefix
              decay (f8 bits)
    slots     capacity (a power of two, load <= 1/2) uint64: (hash >> 32) << 32 | (record offset + 1); 0 = empty
    records   per term, global column order: [column | length << 32] [idf (f8 bits)] [code points, uint32 x length]

(16.8 MiB for the AOL featurizer: 4 MiB of slots, 12.8 MiB of records; built in ~40 ms.) A term's hash is FNV-1a
over its code points, xor its block index times a golden-ratio constant, through MurmurHash3's 64-bit finaliser.
Lookup probes linearly from ``hash & mask``; a slot whose upper 32 bits match is verified against the record's
code points, length and the block's column range, so lookups are exact: a hash collision costs a compare, never a
wrong column. The record holds the column and idf beside the code points, so a known term costs two cache lines
(slot, record; a record of <= 8 words never straddles a line) and an unknown one usually one; the lookups of a
block's grams run in passes that prefetch those lines for all grams first (see :func:`_find`): with caches
evicted between requests every line is a trip to memory (~0.1-0.4 us on the machine measured).

The kernel computes tokens -> n-grams -> columns -> tf, sublinear tf, idf, per-block L2 norm, block weights and
the final L2 norm with the float64 operations of the Python path in its order (``math.log``/``math.sqrt`` are
libm's in both; without fastmath numba neither reassociates nor fuses), so its (indices, values) are
bit-identical to ``TextFeaturizer._transform_one_py`` (checked on the 60,000 AOL and 60,000 catalogue served
queries, and the prefix block on the 60,000 served AOL Complete prefixes: 11.4 -> 3.3 us warm a prefix, Complete
80 -> 74 us mean on 6,000 of them). It allocates its own scratch, sized by the text, and shares no mutable state:
any number of threads may call it at once (it releases the GIL).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numba import njit, typeof

from xmr.inference.common import prefetch
from xmr.inference.hashlayout import aligned_empty, fmix64
from xmr.text.analyzers import MARKER
from xmr.text.vectorizers import TfidfBlock

__all__ = ["TermTable", "featurize_row", "supports", "HASH_MASK"]

WORD, CHAR, PREFIX = 0, 1, 2
_KIND_CODES = {"word": WORD, "char": CHAR, "prefix": PREFIX}
H_NBLOCKS, H_SLOT_MASK, H_HASH_MASK, H_SLOTS, H_RECORDS = range(5)
HEADER = 8  # words; block b's parameters are words HEADER + 8 * b + B_*
B_KIND, B_LO, B_HI, B_SUBLINEAR, B_FIRST, B_END, B_WEIGHT, B_DECAY = range(8)
HASH_MASK = -1  # all 64 bits; tests narrow it to force collisions
_MARK = np.uint32(ord(MARKER))
_SPACE = np.uint32(32)
_FNV_BASIS = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_LOW32 = np.uint64(0xFFFF_FFFF)
_NONE = np.uint64(1 << 63)  # no candidate slot (slot indices stay far below)
_SHIFT32 = np.uint64(32)


def supports(blocks: Sequence[TfidfBlock]) -> bool:
    """Whether the kernel computes these blocks: all fitted vocabulary word/char/prefix blocks, one accent mode."""
    return (bool(blocks) and all(b.kind in _KIND_CODES and b.hashing is None and b.terms_ is not None
                                 and b.idf_ is not None for b in blocks)
            and len({b.strip_accents for b in blocks}) == 1)


@dataclass(frozen=True)
class TermTable:
    """The blob of a fitted featurizer's word/char/prefix blocks (see module docstring), its accent mode, and
    ``featurize(text_bytes, raw, complete, blob)``: :func:`featurize_row` (its compiled overload, see
    :func:`_overload`)."""

    blob: np.ndarray  # int64, 64-byte aligned
    strip_accents: bool
    featurize: Callable = field(repr=False, compare=False)

    @classmethod
    def build(cls, plan: Sequence[tuple[int, TfidfBlock, float]], hash_mask: int | None = None) -> TermTable:
        """Table of a fitted plan of (first column, block, weight) in column order, for which ``supports`` holds."""
        blocks = [b for _, b, _ in plan]
        if not supports(blocks):
            raise ValueError("TermTable needs fitted vocabulary word/char/prefix blocks sharing one strip_accents mode")
        terms = [t for b in blocks for t in b.terms_]  # type: ignore[union-attr]
        n = len(terms)
        ends = np.array([off + len(b.terms_) for off, b, _ in plan], dtype=np.int64)  # type: ignore[arg-type]
        if plan[0][0] != 0 or ends[-1] != n or any(ends[i] != plan[i + 1][0] for i in range(len(plan) - 1)):
            raise ValueError("plan offsets do not tile the columns of its blocks")
        # one C-level encode for the whole vocabulary; "surrogatepass" keeps a lone surrogate one code unit, as
        # len() counts it
        pool = np.frombuffer("".join(terms).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        starts = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, terms), dtype=np.int64, count=n), out=starts[1:])
        record_at = _pack_records(2 + (np.diff(starts) + 1) // 2)  # words a record: head, idf, code points
        capacity = 1 << max(3, (2 * n - 1).bit_length())
        slots_at = HEADER + 8 * len(plan)
        records_at = slots_at + capacity
        if record_at[-1] >= 1 << 32:
            raise ValueError(f"{n} terms of {pool.size} code points do not fit the table's 32-bit offsets")
        blob = aligned_empty(records_at + int(record_at[-1]), np.int64)
        blob[:] = 0
        blob[:HEADER] = (len(plan), capacity - 1, HASH_MASK if hash_mask is None else hash_mask, slots_at,
                         records_at, 0, 0, 0)
        for i, (off, b, w) in enumerate(plan):
            blob[HEADER + 8 * i : HEADER + 8 * i + 6] = (
                _KIND_CODES[b.kind], *b.ngram_range, b.sublinear_tf, off, ends[i])
            blob[HEADER + 8 * i + B_WEIGHT : HEADER + 8 * i + B_DECAY + 1].view(np.float64)[:] = (w, b.decay)
        idf = np.concatenate([np.asarray(b.idf_, dtype=np.float64) for b in blocks]) if n else np.zeros(0)
        _fill(blob, pool, starts, record_at, idf, ends)
        featurize_row(b"", True, False, blob)  # compile (or load from numba's cache) now, not mid-request
        return cls(blob, blocks[0].strip_accents, _overload(featurize_row, (b"", True, False, blob)))

    @property
    def nbytes(self) -> int:
        """Memory held by the table."""
        return self.blob.nbytes

    @property
    def capacity(self) -> int:
        """Number of hash slots."""
        return int(self.blob[H_SLOT_MASK]) + 1

    def lookup(self, block: int, term: str) -> int:
        """Global column of ``term`` in block ``block`` (plan index), -1 when that block has no such term."""
        codes = np.frombuffer(term.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).copy()  # the kernel's type
        blob, cols = self.blob, np.zeros(1, dtype=np.int64)
        found = _find(blob, blob.view(np.uint32), blob.view(np.float64), block, codes, np.zeros(1, dtype=np.int64),
                      np.full(1, codes.size), np.ones(1), 1, np.zeros(1, dtype=np.uint64), cols, np.zeros(1),
                      np.zeros(1))
        return int(cols[0]) if found else -1


def _overload(dispatcher: Callable, args: tuple) -> Callable:
    """The dispatcher's compiled overload for arguments of these types, or the dispatcher where numba does not
    expose it. Calling the overload skips the dispatcher's type resolution: ~3 us a call with cold caches, ~10%
    of transform_one. The caller must pass arguments of exactly these types (unchecked)."""
    try:
        return dispatcher.overloads[tuple(typeof(a) for a in args)].entry_point  # type: ignore[attr-defined]
    except (AttributeError, KeyError, TypeError):
        return dispatcher


@njit(cache=True, nogil=True)
def _pack_records(words):
    """Word offsets of records of the given sizes (and the total at the end), laid end to end except that a record
    of <= 8 words starts on the next 64-byte line rather than straddle two. O(records)."""
    out = np.empty(words.size + 1, dtype=np.int64)
    at = 0
    for i in range(words.size):
        if words[i] <= 8 and (at & 7) + words[i] > 8:
            at = (at + 7) & ~7
        out[i] = at
        at += words[i]
    out[words.size] = at
    return out


# The hash is built from scalar steps, not a function taking the code array: numba reference-counts every array
# passed to a function, even an inlined one, and two atomic updates per lookup cost more than the lookup.
@njit(cache=True, nogil=True, inline="always")
def _hash_step(h, c):
    """FNV-1a step over one code point. O(1)."""
    return (h ^ np.uint64(c)) * _FNV_PRIME


@njit(cache=True, nogil=True, inline="always")
def _hash_end(h, block, mask):
    """Final hash of a term of block ``block`` from its FNV-1a state. O(1)."""
    return fmix64(h ^ (np.uint64(block) * _GOLDEN)) & mask


@njit(cache=True, nogil=True)
def _fill(blob, pool, starts, record_at, idf, block_ends):
    """Write every term's record and insert its slot by linear probing (terms are distinct within a block).
    O(code points + terms) expected."""
    slots = blob.view(np.uint64)
    fblob = blob.view(np.float64)
    ublob = blob.view(np.uint32)
    slot_mask = np.uint64(blob[H_SLOT_MASK])
    mask = np.uint64(blob[H_HASH_MASK])
    s0, r0 = blob[H_SLOTS], blob[H_RECORDS]
    b = 0
    for c in range(starts.size - 1):
        while c >= block_ends[b]:
            b += 1
        a, z = starts[c], starts[c + 1]
        r = r0 + record_at[c]
        blob[r] = c | ((z - a) << 32)
        fblob[r + 1] = idf[c]
        h = _FNV_BASIS
        for j in range(z - a):
            ublob[2 * (r + 2) + j] = pool[a + j]
            h = _hash_step(h, pool[a + j])
        h = _hash_end(h, b, mask)
        i = h & slot_mask
        while slots[s0 + i] != 0:
            i = (i + np.uint64(1)) & slot_mask
        slots[s0 + i] = ((h >> _SHIFT32) << _SHIFT32) | np.uint64(record_at[c] + 1)


@njit(cache=True, nogil=True)
def _find(blob, ublob, fblob, block, codes, gs, ge, gw, ng, hs, cols, idfs, ws):
    """(global column, idf, weight gw[g]) of each gram codes[gs[g]:ge[g]] (g < ng) of block ``block`` that the table
    holds, into cols/idfs/ws in gram order; returns how many. ublob/fblob view the blob as uint32/float64; hs: ng
    uint64 scratch.

    In three passes, so that the memory reads of all grams overlap instead of queueing (with cold caches each is
    a trip to memory). O(sum of gram lengths) expected: ~1.5 probes a gram at load <= 1/2."""
    _hash_grams(blob, block, codes, gs, ge, ng, hs)
    _first_candidates(blob, ng, hs)
    return _verify(blob, ublob, fblob, block, codes, gs, ge, gw, ng, hs, cols, idfs, ws)


@njit(cache=True, nogil=True)
def _hash_grams(blob, block, codes, gs, ge, ng, hs):
    """hs[g] = hash of gram g; prefetch its home slot. O(sum of gram lengths)."""
    mask = np.uint64(blob[H_HASH_MASK])
    slot_mask = np.uint64(blob[H_SLOT_MASK])
    s0 = blob[H_SLOTS]
    for g in range(ng):
        h = _FNV_BASIS
        for j in range(gs[g], ge[g]):
            h = _hash_step(h, codes[j])
        h = _hash_end(h, block, mask)
        hs[g] = h
        prefetch(blob, s0 + np.int64(h & slot_mask))


@njit(cache=True, nogil=True)
def _first_candidates(blob, ng, hs):
    """hs[g] (a hash) becomes the slot of gram g's first candidate (the first slot of its probe run whose upper 32
    bits match the hash's), or _NONE where the run ends first; prefetch the candidate's record. O(probes)."""
    slot_mask = np.uint64(blob[H_SLOT_MASK])
    s0, r0 = blob[H_SLOTS], blob[H_RECORDS]
    for g in range(ng):
        fp = hs[g] >> _SHIFT32
        i = hs[g] & slot_mask
        hs[g] = _NONE
        while True:
            s = np.uint64(blob[s0 + i])
            if s == 0:
                break
            if s >> _SHIFT32 == fp:
                hs[g] = i
                prefetch(blob, r0 + np.int64(s & _LOW32) - 1)
                break
            i = (i + np.uint64(1)) & slot_mask


@njit(cache=True, nogil=True)
def _verify(blob, ublob, fblob, block, codes, gs, ge, gw, ng, hs, cols, idfs, ws):
    """From each gram's first candidate slot (hs, see :func:`_first_candidates`), compare the records whose
    upper hash bits match with the gram (length, code points, the block's columns) until one is equal (found)
    or an empty slot ends the run; (column, idf, gw[g]) of the found grams into cols/idfs/ws, their count returned.
    O(sum of gram lengths) expected: candidates are nearly always the term itself."""
    p = HEADER + 8 * block
    first, end = blob[p + B_FIRST], blob[p + B_END]
    slot_mask = np.uint64(blob[H_SLOT_MASK])
    s0, r0 = blob[H_SLOTS], blob[H_RECORDS]
    k = 0
    for g in range(ng):
        i = hs[g]
        if i == _NONE:
            continue
        start, stop = gs[g], ge[g]
        fp = np.uint64(blob[s0 + i]) >> _SHIFT32
        while True:
            s = np.uint64(blob[s0 + i])
            if s == 0:
                break
            if s >> _SHIFT32 == fp:
                r = r0 + np.int64(s & _LOW32) - 1
                c = blob[r] & 0xFFFF_FFFF
                if blob[r] >> 32 == stop - start and first <= c < end:
                    u = 2 * (r + 2) - start  # the record's code points, aligned with the gram's
                    j = start
                    while j < stop and ublob[u + j] == codes[j]:
                        j += 1
                    if j == stop:
                        cols[k] = c
                        idfs[k] = fblob[r + 1]
                        ws[k] = gw[g]
                        k += 1
                        break
            i = (i + np.uint64(1)) & slot_mask
    return k


@njit(cache=True, nogil=True)
def _tokens(text, raw, codes, ts, te):
    """Tokens of ``text`` into ``codes`` joined by single spaces; token t is codes[ts[t]:te[t]]; returns the count.
    ``raw``: ``text`` is ASCII bytes, lowercased and split into [A-Za-z0-9_]+ runs (what normalize + \\w+ do to
    ASCII); else it is UTF-32-LE of tokens joined by spaces (a token is any run without a space). O(len(text))."""
    nt = 0
    k = 0
    inside = False
    n = len(text) if raw else len(text) // 4
    for i in range(n):
        if raw:
            c = np.uint32(text[i])
            word = c == 95 or 48 <= c <= 57 or 97 <= c <= 122 or 65 <= c <= 90
            if 65 <= c <= 90:
                c += np.uint32(32)
        else:
            c = (np.uint32(text[4 * i]) | np.uint32(text[4 * i + 1]) << np.uint32(8)
                 | np.uint32(text[4 * i + 2]) << np.uint32(16) | np.uint32(text[4 * i + 3]) << np.uint32(24))
            word = c != _SPACE
        if word:
            if not inside:
                if nt:
                    codes[k] = _SPACE
                    k += 1
                ts[nt] = k
                inside = True
            codes[k] = c
            k += 1
        elif inside:
            te[nt] = k
            nt += 1
            inside = False
    if inside:
        te[nt] = k
        nt += 1
    return nt


@njit(cache=True, nogil=True)
def _mark_tokens(codes, ts, te, nt, at):
    """Append each token t as "#tok#" to ``codes`` from ``at`` on; its marked form starts at ts[nt + t]. O(len)."""
    for t in range(nt):
        ts[nt + t] = at
        codes[at] = _MARK
        for j in range(ts[t], te[t]):
            codes[at + 1 + j - ts[t]] = codes[j]
        at += te[t] - ts[t] + 2
        codes[at - 1] = _MARK


@njit(cache=True, nogil=True)
def _grams(blob, block, ts, te, nt, complete, gs, ge, gw):
    """The (start, stop) in the codes of every n-gram occurrence of one block, into gs/ge, and its tf weight into
    gw; returns the count. Word n-grams span tokens i..i+n-1 (weight 1); char n-grams lie in the marked tokens
    (see :func:`_mark_tokens`), the bare marker 1-gram left out (weight 1); prefix n-grams are char n-grams but
    for the last token's end marker, left off unless ``complete``, and weigh 1 / (1 + p) ** decay for a start p
    inside the marked token (``analyzers.marked_word_weighted_ngrams``). O(count)."""
    p = HEADER + 8 * block
    lo, hi, kind = blob[p + B_LO], blob[p + B_HI], blob[p + B_KIND]
    decay = blob[p + B_DECAY : p + B_DECAY + 1].view(np.float64)[0]
    g = 0
    if kind == WORD:
        for n in range(lo, min(hi, nt) + 1):
            for i in range(nt - n + 1):
                gs[g] = ts[i]
                ge[g] = te[i + n - 1]
                gw[g] = 1.0
                g += 1
        return g
    for t in range(nt):
        at = ts[nt + t]
        closed = kind == CHAR or complete or t < nt - 1
        size = te[t] - ts[t] + (2 if closed else 1)
        for n in range(lo, min(hi, size) + 1):
            for q in range(size - n + 1):
                if n == 1 and (q == 0 or (closed and q == size - 1)):  # the bare marker is never a term
                    continue
                gs[g] = at + q
                ge[g] = at + q + n
                gw[g] = 1.0 if kind == CHAR else 1.0 / (1.0 + q) ** decay
                g += 1
    return g


@njit(cache=True, nogil=True)
def _sort_pairs(cols, idfs, ws, k):
    """Sort cols[:k] ascending, idfs[:k] and ws[:k] along. Shell sort (Knuth's gaps; insertion sort below 5
    items): numpy's sort is not used because numba names its generated sort helpers per process, and a cached
    library can then resolve them to another cached library's different helper of the same name (a crash once seen
    here). O(k^1.5) worst case; a query has ~20 columns a block."""
    gap = 1
    while gap < k // 3:
        gap = 3 * gap + 1
    while gap > 0:
        for i in range(gap, k):
            c, v, w = cols[i], idfs[i], ws[i]
            j = i
            while j >= gap and cols[j - gap] > c:
                cols[j], idfs[j], ws[j] = cols[j - gap], idfs[j - gap], ws[j - gap]
                j -= gap
            cols[j], idfs[j], ws[j] = c, v, w
        gap //= 3


@njit(cache=True, nogil=True)
def _block_values(cols, idfs, ws, k, sublinear):
    """Sort a block's k (column, idf, weight) occurrences and fold them in place into (distinct column, tf-idf);
    returns (count, L2 norm). tf sums a column's occurrence weights in occurrence order (the sort is made stable
    by sorting column * k + occurrence; prefix blocks' weights differ, so the order decides their float sums), 1 +
    ln(tf) when sublinear and tf > 1; squares are summed in column order, as ``TfidfBlock._row_raw`` does (weights
    1: tf counts, exactly). O(k^1.5) worst case; the stable keys cost nothing measurable on word+char blocks."""
    for i in range(k):  # columns < 2**31 and k < 2**32: no overflow
        cols[i] = cols[i] * k + i
    _sort_pairs(cols, idfs, ws, k)
    for i in range(k):
        cols[i] //= k
    m = 0
    sq = 0.0
    i = 0
    while i < k:
        j = i
        t = 0.0
        while j < k and cols[j] == cols[i]:
            t += ws[j]
            j += 1
        if sublinear and t > 1.0:
            t = 1.0 + math.log(t)
        v = t * idfs[i]
        cols[m] = cols[i]
        idfs[m] = v
        sq += v * v
        m += 1
        i = j
    return m, math.sqrt(sq)


@njit(cache=True, nogil=True)
def featurize_row(text, raw, complete, blob):
    """(indices int32 ascending, values float32) of one text given as bytes: ``raw`` ASCII text, or the UTF-32-LE
    of its normalised tokens joined by single spaces (see :func:`_tokens`); ``complete``: the text ends with
    whitespace (prefix blocks then end-mark its last word).

    Per block b: its n-grams' columns, tf-idf values and norm_b; then value = v * (w_b / (norm_b * root)) with
    root = sqrt(sum of w_b**2 over blocks with a column): the operations of the Python path, in its order.
    O(L * H) expected for L code points and H the widest span of n-gram orders, plus the sort of each block's
    columns; O(L * H) scratch."""
    n = len(text) if raw else len(text) // 4
    codes = np.empty(3 * n + 2, dtype=np.uint32)  # tokens joined by spaces (<= n), then the marked tokens
    ts = np.empty(2 * (n // 2 + 1), dtype=np.int64)  # token starts, then marked token starts
    te = np.empty(n // 2 + 1, dtype=np.int64)
    nt = _tokens(text, raw, codes, ts, te)
    chars = 0
    for t in range(nt):
        chars += te[t] - ts[t]
    _mark_tokens(codes, ts, te, nt, chars + nt)
    nb = blob[H_NBLOCKS]
    total = 0
    most = 0
    for b in range(nb):  # n-grams per token (word) or per marked char (char) <= span of orders
        p = HEADER + 8 * b
        size = (blob[p + B_HI] - blob[p + B_LO] + 1) * (nt if blob[p + B_KIND] == WORD else chars + 2 * nt)
        total += size
        most = max(most, size)
    gs = np.empty(2 * most, dtype=np.int64)
    gw = np.empty(most, dtype=np.float64)
    hs = np.empty(most, dtype=np.uint64)
    cols = np.empty(most + total, dtype=np.int64)  # [0, most): one block's occurrences; then the kept pairs
    idfs = np.empty(most + total, dtype=np.float64)
    ws = np.empty(most, dtype=np.float64)
    ends = np.empty(nb, dtype=np.int64)
    norms = np.empty(nb, dtype=np.float64)
    m = most
    for b in range(nb):
        p = HEADER + 8 * b
        k = 0
        if blob[p + B_FIRST] < blob[p + B_END]:
            ng = _grams(blob, b, ts, te, nt, complete, gs[:most], gs[most:], gw)
            k = _find(blob, blob.view(np.uint32), blob.view(np.float64), b, codes, gs[:most], gs[most:], gw, ng, hs,
                      cols, idfs, ws)
        got, norms[b] = _block_values(cols, idfs, ws, k, blob[p + B_SUBLINEAR] != 0)
        cols[m : m + got] = cols[:got]
        idfs[m : m + got] = idfs[:got]
        m += got
        ends[b] = m
    return _combine(blob.view(np.float64), cols, idfs, most, ends, norms)


@njit(cache=True, nogil=True)
def _combine(fblob, cols, idfs, first, ends, norms):
    """The row from each block's kept (column, tf-idf) pairs, block b's at cols/idfs[ends[b-1]:ends[b]] (from
    ``first``), and L2 norm: scaled by w_b / (norm_b * root), root = sqrt(sum of w_b**2 over non-empty blocks), in
    float64, then cast to float32. O(columns)."""
    sq = 0.0
    i = first
    for b in range(ends.size):
        if ends[b] > i:
            w = fblob[HEADER + 8 * b + B_WEIGHT]
            sq += w * w
            i = ends[b]
    root = math.sqrt(sq)
    indices = np.empty(i - first, dtype=np.int32)
    values = np.empty(i - first, dtype=np.float32)
    i = first
    for b in range(ends.size):
        if ends[b] > i:
            f = fblob[HEADER + 8 * b + B_WEIGHT] / (norms[b] * root)
            for j in range(i, ends[b]):
                indices[j - first] = cols[j]
                values[j - first] = np.float32(idfs[j] * f)
            i = ends[b]
    return indices, values
