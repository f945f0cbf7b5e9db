"""``xmr qac train`` and ``xmr qac complete``: session-aware autocompletion from a query log, line by line.

``train`` reads an AOL-format log (:mod:`xmr.qac.sessions`), splits each user's stream into sessions at 30-minute
gaps, and trains a :class:`xmr.qac.CompletionModel` on the (previous query, next query) pairs, first queries of
sessions included. ``--before`` keeps only pairs whose next query was typed before a date (to hold out the rest).

``complete`` reads ``previous_query<TAB>prefix`` lines (a line without a tab is a prefix with no previous query;
a trailing space in the prefix is kept: "lego " is a finished word) and writes one line per input line: the
completions, tab-separated, best first (an empty line when there is none). Exit codes follow :mod:`xmr.cli`.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from typing import Any, TextIO

__all__ = ["add_parser", "run"]

LOGGER = logging.getLogger("xmr.cli.qac")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``qac`` command (with ``train`` and ``complete``) to the subparsers of ``xmr``."""
    from xmr.cli import positive_float, positive_int, threads_arg

    qac = sub.add_parser("qac", help="session-aware query autocompletion",
                         description="Train on a query log; complete typed prefixes given the session's previous query.")
    qsub = qac.add_subparsers(dest="qac_command", metavar="COMMAND", required=True)
    tr = qsub.add_parser("train", parents=[common], help="train a completion model on an AOL-format query log",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("--log", required=True, metavar="LOG.tsv",
                    help="query log with a header naming AnonID, Query and QueryTime (AOL format)")
    tr.add_argument("-m", "--model-dir", required=True, metavar="MODEL_DIR", help="output model directory")
    tr.add_argument("--index", choices=("kmeans", "trie", "hybrid"), default="hybrid",
                    help="label tree over the known queries (default: hybrid, trie levels over k-means)")
    tr.add_argument("--trie-depth", type=positive_int, default=None,
                    help="trie levels (default: 5 for trie, 2 for hybrid)")
    tr.add_argument("--max-leaf-size", type=positive_int, default=100, help="max labels per leaf (default 100)")
    tr.add_argument("--before", metavar="YYYY-MM-DD", default=None,
                    help="train only on pairs whose next query was typed before this date")
    tr.add_argument("--prefixes-per-pair", type=positive_int, default=6,
                    help="training prefixes drawn per pair (default 6)")
    tr.add_argument("--previous-weight", type=positive_float, default=2.0,
                    help="weight of the previous-query block against the prefix block (default 2)")
    tr.add_argument("--no-co-users", action="store_true",
                    help="leave out the co-user prior (completions typed by the users who typed the previous "
                         "query); it keeps every training user's query counts in the model, under integer ids")
    tr.add_argument("--seed", type=int, default=0, help="prefix sampling and clustering seed (default 0)")
    tr.add_argument("--threads", type=threads_arg, default=-1, help="worker threads, -1 = all cores (default)")

    co = qsub.add_parser("complete", parents=[common], help="complete 'previous<TAB>prefix' lines",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    co.add_argument("-m", "--model-dir", required=True, metavar="MODEL_DIR", help="model directory (qac train)")
    co.add_argument("--input", default="-", metavar="FILE", help="request lines (default -: stdin)")
    co.add_argument("--topk", type=positive_int, default=10, help="completions per line (default 10)")


def run(args: argparse.Namespace) -> int:
    """Run ``xmr qac train`` or ``xmr qac complete``."""
    return _train(args) if args.qac_command == "train" else _complete(args)


def _train(args: argparse.Namespace) -> int:
    from xmr.cli import UsageError
    from xmr.qac.model import CompletionModel
    from xmr.qac.sessions import read_query_log, session_pairs

    if args.before is not None and not re.fullmatch(r"\d{4}-\d\d-\d\d", args.before):
        raise UsageError(f"--before must be a date YYYY-MM-DD, got {args.before!r}")
    t0 = time.perf_counter()
    pairs = session_pairs(read_query_log(args.log))
    if args.before is not None:
        pairs = [p for p in pairs if p.time < args.before]
    if not pairs:
        raise UsageError(f"{args.log}: no query to train on" + (f" before {args.before}" if args.before else ""))
    LOGGER.info("read %d pairs (%d sessions) from %s in %.2fs", len(pairs), sum(not p.previous for p in pairs),
                args.log, time.perf_counter() - t0)
    model = CompletionModel.train(
        [(p.previous, p.query) for p in pairs], prefixes_per_pair=args.prefixes_per_pair, seed=args.seed,
        index=args.index, trie_depth=args.trie_depth, max_leaf_size=args.max_leaf_size,
        previous_weight=args.previous_weight, users=None if args.no_co_users else [p.user for p in pairs],
        threads=args.threads, progress=not args.quiet)
    t1 = time.perf_counter()
    model.save(args.model_dir)
    LOGGER.info("trained %r (%s tree, level sizes %s); saved to %s in %.2fs", model, args.index,
                model.meta["level_sizes"], args.model_dir, time.perf_counter() - t1)
    return 0


def _complete(args: argparse.Namespace) -> int:
    from xmr.qac.model import CompletionModel
    from xmr.text_cli import check_input, input_lines, reader_gone

    check_input(args.input)
    t0 = time.perf_counter()
    model = CompletionModel.load(args.model_dir)
    LOGGER.info("loaded %r in %.2fs", model, time.perf_counter() - t0)
    interactive = args.input == "-" and sys.stdin.isatty()
    out: TextIO = sys.stdout
    n = 0
    t1 = time.perf_counter()
    try:
        for line in input_lines(args.input):
            previous, _, prefix = line.rpartition("\t")
            # a tab or newline inside a completion would break the output format; labels never hold one
            out.write("\t".join(q for q, _ in model.complete(previous, prefix, args.topk)) + "\n")
            if interactive:
                out.flush()
            n += 1
        out.flush()
    except BrokenPipeError:
        return reader_gone()
    dt = time.perf_counter() - t1
    LOGGER.info("completed %d lines in %.2fs", n, dt)
    return 0

