"""Session-aware query autocompletion data from the AOL log: pairs (``xmr.qac.sessions``) and the time split.

Pairs follow ``xmr.qac.sessions`` (30-minute sessions, merged click repeats, first queries with an empty
previous query). Split by the time of the next query: before 2006-05-01 trains, the rest tests (issue 4).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from experiments.text_data import aol_path
from xmr.qac.sessions import SessionPair as QacPair
from xmr.qac.sessions import normalize_query, read_query_log, session_pairs

__all__ = ["QacPair", "SPLIT", "load_pairs", "normalize_query", "session_pairs", "split_pairs", "summary"]

SPLIT = "2006-05-01"


def load_pairs(path: str | Path | None = None) -> list[QacPair]:
    """All pairs of the shared AOL log (or ``path``), in user then time order."""
    path = Path(path) if path is not None else aol_path()
    return session_pairs(read_query_log(path))


def split_pairs(pairs: Sequence[QacPair], split: str = SPLIT) -> tuple[list[QacPair], list[QacPair]]:
    """(train, test): pairs whose next query was typed before ``split``, and the rest."""
    train = [p for p in pairs if p.time < split]
    test = [p for p in pairs if p.time >= split]
    return train, test


def summary(train: Sequence[QacPair], test: Sequence[QacPair]) -> dict:
    """Counts that describe a split: pairs, first queries, distinct labels, test pairs whose query was seen."""
    labels = Counter(p.query for p in train)
    seen = sum(p.query in labels for p in test)
    return {"train_pairs": len(train), "test_pairs": len(test),
            "train_first_queries": sum(not p.previous for p in train),
            "test_first_queries": sum(not p.previous for p in test),
            "labels": len(labels), "test_seen": seen, "test_seen_share": seen / max(len(test), 1)}


def main(argv: list[str] | None = None) -> int:
    """CLI: print the split's counts."""
    ap = argparse.ArgumentParser(prog="python -m experiments.qac_data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", type=Path, default=None, help="AOL tsv (default: the shared aol_800_users.tsv)")
    args = ap.parse_args(argv)
    train, test = split_pairs(load_pairs(args.log))
    for key, value in summary(train, test).items():
        print(f"{key}: {value:,.3f}" if isinstance(value, float) else f"{key}: {value:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
