"""Query logs -> (previous query, next query) pairs: AOL-format reading and session splitting.

Log format: tab-separated with a header naming at least ``AnonID``, ``Query`` and ``QueryTime``
(``YYYY-MM-DD HH:MM:SS``) in any column order; other columns (AOL's ``ItemRank``/``ClickURL``, or an aggregated
``ClickURLs``) are ignored. Both the original AOL release and ``aol_800_users.tsv`` read as they are.

Pairs (issue 4; PECOS's qp2q recipe with the differences said here):

- Rows are grouped per user and ordered by time (ties keep file order).
- Queries are normalised by :func:`normalize_query`: Unicode case-folding and whitespace collapsed, nothing
  else (punctuation, digits and typos stay: they are what users typed). AOL's ``-`` placeholder is dropped.
- The log has one row per clicked result, so the same query repeated back to back within a session is one
  query: immediate repeats are merged (non-adjacent repeats stay, as in PECOS).
- A new session starts when the gap to the user's previous query exceeds 30 minutes (1,800 s).
- Pairs: the first query of every session with an empty previous query (PECOS drops these), then every
  adjacent (q_t, q_t+1) inside a session.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from xmr.validation import InputError

__all__ = ["SESSION_GAP_S", "SessionPair", "normalize_query", "read_query_log", "session_pairs"]

SESSION_GAP_S = 1800
_SPACES = re.compile(r"\s+")
_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
COLUMNS = ("AnonID", "Query", "QueryTime")


@dataclass(frozen=True)
class SessionPair:
    """One autocompletion instance: the previous query of the session ("" for a first query) and the next one."""

    user: str
    time: str
    previous: str
    query: str


def normalize_query(text: str) -> str:
    """Case-folded, whitespace-collapsed query; "" for AOL's ``-`` placeholder and for blank text."""
    q = _SPACES.sub(" ", text.casefold()).strip()
    return "" if q == "-" else q


def read_query_log(path: str | Path) -> Iterator[tuple[str, str, str]]:
    """(user, query, time) of every row of a query log, in file order; InputError naming file:line on bad rows."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"query log {path} does not exist or is not a file")
    with open(path, "rb") as f:
        header = None
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{lineno}: not UTF-8 text ({e.reason})") from None
            parts = line.split("\t")
            if header is None:
                missing = [c for c in COLUMNS if c not in parts]
                if missing:
                    raise InputError(f"{path}:1: header {parts!r} lacks the column(s) {missing} "
                                     f"(an AOL log: {', '.join(COLUMNS)}, ...)")
                header = [parts.index(c) for c in COLUMNS]
                width = len(parts)
                continue
            if not line.strip():
                continue
            if len(parts) < width:
                raise InputError(f"{path}:{lineno}: {len(parts)} tab-separated fields, the header has {width}")
            user, query, when = (parts[i] for i in header)
            if not _TIME.fullmatch(when):
                raise InputError(f"{path}:{lineno}: QueryTime {when!r} is not 'YYYY-MM-DD HH:MM:SS'")
            yield user, query, when
        if header is None:
            raise InputError(f"{path}: empty file (expected a header line and query rows)")


def _seconds(when: str) -> float:
    return datetime.strptime(when, "%Y-%m-%d %H:%M:%S").timestamp()


def session_pairs(rows: Iterable[tuple[str, str, str]], gap_s: float = SESSION_GAP_S) -> list[SessionPair]:
    """Pairs from (user, query, time) rows in any order, by the rules in the module docstring."""
    by_user: dict[str, list[tuple[str, int, str]]] = {}
    for i, (user, query, when) in enumerate(rows):
        by_user.setdefault(user, []).append((when, i, query))
    pairs: list[SessionPair] = []
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
            pairs.append(SessionPair(user, when, "" if new_session else prev_q, q))
            prev_q, prev_t = q, t
    return pairs
