"""One numba call from a query's text to its hits' records: featurise, beam search, rerank, gather.

``Retriever.rank_one`` crosses from Python into numba three times (featurize, search, rerank) and a server a fourth
(gathering the hits' records), and each crossing unboxes the kernel's arrays and boxes the ones it returns; with
the CPU caches evicted between calls, as in a loaded server, that costs about as much as the search itself. This
kernel runs the same numba functions in one call, so its records are byte-identical to the composed path's.
experiments/results/fused_search.md (3,000 queries of each served stream, one pinned core, the paths interleaved,
us per query, composed -> fused): aol-q2site 56 -> 40 warm, 131 -> 99 with 16 MB touched between calls; the
catalogue (with its rerank stage) 160 -> 102 and 232 -> 176; in the loaded server (6 interleaved rounds) the
catalogue's CPU per call 27 us less (every round less), aol-q2site's 3 us less, within that run's noise.
:func:`search_texts` runs it over a batch of texts in one call (the serving micro-batcher's path).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from xmr.inference.constraint import NO_RANGES
from xmr.inference.kernels_hash import _unpack_32, search_packed
from xmr.records import gather_records
from xmr.rerank import rerank_grouped
from xmr.text.term_table import featurize_row

OK, NO_FEATURES, FALLBACK = 0, 1, 2  # statuses of :func:`search_text`
_NO_IDS, _NO_SCORES = np.zeros(0, np.int32), np.zeros(0, np.float32)


@njit(cache=True, nogil=True)
def _hits(text, raw, complete, terms, d, blob, meta, scratch, smeta, cap, beam, fetch, code, root, rerank, r_tab,
          r_mask, r_ent, r_groups, r_offset, r_gsize, r_d, r_weight, k, ranges, no_ids, no_sc):
    """(label ids, scores, status) of one text: :func:`search_text` before the gathering (the ids and scores are
    views of the thread's scratch or of new arrays; empty unless the status is OK)."""
    idx, vals = featurize_row(text, raw, complete, terms)
    if idx.size == 0:
        return no_ids, no_sc, NO_FEATURES
    if idx.size > cap:
        return no_ids, no_sc, FALLBACK
    n = search_packed(idx, vals, d, blob, meta, scratch, smeta, beam, fetch, code, root, ranges, 0, -1, 0, no_ids,
                      no_sc)
    if n < 0:
        return no_ids, no_sc, FALLBACK
    ids = _unpack_32(scratch, smeta, 6, np.int32)[:n]
    sc = _unpack_32(scratch, smeta, 7, np.float32)[:n]
    if rerank:
        m = min(k, n)
        out_ids = np.empty(m, dtype=np.int32)
        out_sc = np.empty(m, dtype=np.float32)
        m = rerank_grouped(r_tab, r_mask, r_ent, r_groups, r_offset, r_gsize, r_d, idx, vals, ids, sc, r_weight, k,
                           out_ids, out_sc)
        return out_ids[:m], out_sc[:m], OK
    return ids, sc, OK


@njit(cache=True, nogil=True)
def search_text(text, raw, complete, terms, d, blob, meta, scratch, smeta, cap, beam, fetch, code, root, rerank,
                r_tab, r_mask, r_ent, r_groups, r_offset, r_gsize, r_d, r_weight, k, pool, off, ranges, no_ids,
                no_sc):
    """(records, status) of one text: ``featurize_row(text, raw, complete, terms)``, ``search_packed`` on the
    model ``blob``/``meta`` with the thread's ``scratch``/``smeta`` (room for ``cap`` query features) for the top
    ``fetch`` at beam ``beam``, then with ``rerank`` the grouped rerank stage (``r_*``) down to ``k``, then
    ``gather_records(pool, off, ...)`` of the hits. Status NO_FEATURES: the text has no known feature; FALLBACK:
    the scratch is too small or the search refused the query (the caller takes the composed path, which
    grows the scratch or raises). O(featurize + search + rerank + gathered bytes)."""
    ids, sc, st = _hits(text, raw, complete, terms, d, blob, meta, scratch, smeta, cap, beam, fetch, code, root,
                        rerank, r_tab, r_mask, r_ent, r_groups, r_offset, r_gsize, r_d, r_weight, k, ranges, no_ids,
                        no_sc)
    if st != OK:
        return np.empty(0, np.uint8), st
    return gather_records(pool, off, ids, sc.view(np.uint8)), OK


@njit(cache=True, nogil=True)
def search_texts(texts, text_off, raw, complete, terms, d, blob, meta, scratch, smeta, cap, beam, fetch, code, root,
                 rerank, r_tab, r_mask, r_ent, r_groups, r_offset, r_gsize, r_d, r_weight, k, ks, pool, off, ranges,
                 no_ids, no_sc):
    """:func:`search_text` of each text ``texts[text_off[i]:text_off[i + 1]]`` (flags ``raw[i]``,
    ``complete[i]``) at top ``k``, keeping its first ``ks[i]`` (<= k) hits: (every text's records joined, their
    offsets int64[n + 1], statuses int8[n]). A top k only sizes the search's last level and the rerank's output,
    so a text's first ``ks[i]`` hits at ``k`` are its top ``ks[i]``. O(sum of search_text's costs)."""
    n = text_off.size - 1
    status = np.empty(n, np.int8)
    rec_off = np.zeros(n + 1, np.int64)
    parts = []
    for i in range(n):
        ids, sc, st = _hits(texts[text_off[i]:text_off[i + 1]], raw[i], complete[i], terms, d, blob, meta, scratch,
                            smeta, cap, beam, fetch, code, root, rerank, r_tab, r_mask, r_ent, r_groups, r_offset,
                            r_gsize, r_d, r_weight, k, ranges, no_ids, no_sc)
        status[i] = st
        m = min(ks[i], ids.size)
        rec = gather_records(pool, off, ids[:m], sc[:m].view(np.uint8))  # before the next search reuses scratch
        parts.append(rec)
        rec_off[i + 1] = rec_off[i] + rec.size
    out = np.empty(rec_off[n], np.uint8)
    for i in range(n):
        out[rec_off[i]:rec_off[i + 1]] = parts[i]
    return out, rec_off, status


def call(text: bytes, raw: bool, complete: bool, terms: np.ndarray, search: tuple, rerank: tuple, k: int,
         pool: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, int]:
    """:func:`search_text` with the beam-search arguments ``search`` (``BeamSearchIndex.single_query_args``) and
    the rerank stage's ``rerank`` (:func:`rerank_args`)."""
    return search_text(text, raw, complete, terms, *search, *rerank, k, pool, off, NO_RANGES, _NO_IDS, _NO_SCORES)


def call_many(texts: np.ndarray, text_off: np.ndarray, raw: np.ndarray, complete: np.ndarray, terms: np.ndarray,
              search: tuple, rerank: tuple, k: int, ks: np.ndarray, pool: np.ndarray, off: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`search_texts` with the beam-search arguments ``search`` and the rerank stage's ``rerank``."""
    return search_texts(texts, text_off, raw, complete, terms, *search, *rerank, k, ks, pool, off, NO_RANGES,
                        _NO_IDS, _NO_SCORES)


_NO_RERANK = (False, np.zeros(8, np.int64), 0, np.zeros(2, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64),
              np.zeros(0, np.int64), 0, 0.0)


def rerank_args(reranker) -> tuple | None:
    """The rerank-stage arguments of :func:`search_text` for ``reranker`` (None: no stage), or None when the
    stage has no grouped table (its row scan then takes the composed path)."""
    if reranker is None:
        return _NO_RERANK
    g = reranker.grouped
    if g is None:
        return None
    return (True, g.tab, int(g.mask), g.ent, g.groups, g.offset, g.gsize, int(reranker.shape[1]),
            float(reranker.config.weight))
