"""Keeping the cyclic garbage collector's full passes short in a long-lived server.

A server that has loaded its models holds ~200,000 objects that the collector tracks (modules, classes,
functions, label tables), and every full pass walks all of them: 100-135 ms on this machine with the
aol-q2site, catalogue and AOL completion models loaded, with the GIL held, so every call in flight stalls that
long. In a probe under load with the result cache on such passes came every few seconds (40-153 ms each), enough
alone to put an 8 s window's p99 over 10 ms; with the cache off none fell inside a window (gc_pauses.md). ``gc.freeze`` moves what is alive into a permanent generation
that passes skip (a full pass then takes about 1 ms). Frozen objects are still freed by reference counting when
their last reference goes (a replaced model is: it holds no reference cycles, tests/test_heap.py); only cyclic
garbage among them stays, such as the state of calls in flight at the moment of freezing, until the next freeze,
which first thaws everything and collects it (a reload pays that one full pass).
"""

from __future__ import annotations

import gc


def freeze_heap() -> int:
    """Thaw, collect everything once, then exempt every object alive now from later collections; returns how many."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
