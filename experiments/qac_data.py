"""Session-aware query autocompletion data from the AOL log: sessions, (previous query, next query) pairs, split.

How pairs are made (issue 4; PECOS's recipe in /work/shared/docs/qac-reference.md section 1, with the
differences said here):

- Rows are grouped per user (``AnonID``) and ordered by ``QueryTime`` (ties keep file order).
- Queries are normalised with :func:`normalize_query`: Unicode case-folding and whitespace collapsed, nothing
  else (punctuation, digits and typos stay: they are what users typed). AOL's ``-`` placeholder (an empty
  query) is dropped.
- The log has one row per clicked result, so the same query repeated back to back within a session is one
  query: immediate repeats are merged (non-adjacent repeats stay, as in PECOS).
- A new session starts when the gap to the user's previous query exceeds 30 minutes (1,800 s).
- Pairs: the first query of every session with an empty previous query (PECOS drops these: a session's first
  query gets no suggestions there), then every adjacent (q_t, q_t+1) inside a session.
- Split by the time of the next query: before 2006-05-01 trains, the rest tests (issue 4).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from experiments.datasets import read_aol_log
from experiments.text_data import aol_path

SESSION_GAP_S = 1800
SPLIT = "2006-05-01"
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class QacPair:
    """One autocompletion instance: the previous query of the session ("" for a first query) and the next one."""

    user: str
    time: str
    previous: str
    query: str


def normalize_query(text: str) -> str:
    """Case-folded, whitespace-collapsed query; "" for AOL's ``-`` placeholder and for blank text."""
    q = _SPACES.sub(" ", text.casefold()).strip()
    return "" if q == "-" else q


def _seconds(when: str) -> float:
    return datetime.strptime(when, "%Y-%m-%d %H:%M:%S").timestamp()


def session_pairs(rows: Iterable[tuple[str, str, str]], gap_s: float = SESSION_GAP_S) -> list[QacPair]:
    """Pairs from (user, query, time) rows in any order, by the rules in the module docstring."""
    by_user: dict[str, list[tuple[str, int, str]]] = {}
    for i, (user, query, when) in enumerate(rows):
        by_user.setdefault(user, []).append((when, i, query))
    pairs: list[QacPair] = []
    for user in sorted(by_user):
        prev_q, prev_t = "", None
        for when, _, raw in sorted(by_user[user]):
            q = normalize_query(raw)
            if not q:
                continue
            t = _seconds(when)
            new_session = prev_t is None or t - prev_t > gap_s
            if not new_session and q == prev_q:
                prev_t = t  # another click on the same query: same query, the session goes on
                continue
            pairs.append(QacPair(user, when, "" if new_session else prev_q, q))
            prev_q, prev_t = q, t
    return pairs


def load_pairs(path: str | Path | None = None) -> list[QacPair]:
    """All pairs of the shared AOL log (or ``path``), in user then time order."""
    path = Path(path) if path is not None else aol_path()
    return session_pairs((user, query, when) for user, query, when, _ in read_aol_log(path))


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
