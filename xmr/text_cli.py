"""``xmr text train`` and ``xmr text predict``: train a text retriever from labelled lines, query it line by line.

Input of ``train``: one instance per line, ``label1,label2<TAB>text`` (see :mod:`xmr.text_io`); optional label
metadata (JSONL or CSV, label id -> attributes) stored with the model and returned with every hit, and optional
label-side text (``label<TAB>text`` lines, or metadata fields) used as label features.

Output of ``predict``: per input line, ``> query`` then one ``rank. score  label  {metadata}`` line per hit (or the
reason there is none) and a blank line; ``--json`` prints one object per input line,
``{"query", "hits": [{"label", "score", "metadata"}], "reason"}``, where ``reason`` says why a query got no hits
("empty query", "no known terms in query"). Exit codes and error lines follow :mod:`xmr.cli`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = ["add_parser", "check_input", "input_lines", "reader_gone", "run"]

LOGGER = logging.getLogger("xmr.cli.text")
_BATCH = 256  # lines per batch when input is not interactive


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``text`` command (with ``train`` and ``predict``) to the subparsers of ``xmr``."""
    from xmr.cli import finite_float, positive_int, threads_arg

    text = sub.add_parser("text", help="train and query a retriever on raw text",
                          description="Raw text in, labels with their metadata out: "
                                      "`xmr text train` then `xmr text predict`.")
    tsub = text.add_subparsers(dest="text_command", metavar="TEXT_COMMAND", required=True)

    tr = tsub.add_parser("train", parents=[common], help="train a text retriever from labelled lines",
                         description="Train a retriever: text features (fitted on the training text) -> XR-Linear "
                                     "model -> labels with metadata. FILE holds one instance per line, "
                                     "'label1,label2<TAB>text'. Saves MODEL_DIR atomically.")
    tr.add_argument("--train", required=True, metavar="FILE", help="labelled lines, 'label1,label2<TAB>text' "
                    "(- for stdin)")
    tr.add_argument("-m", "--model-dir", required=True, metavar="MODEL_DIR", help="output retriever directory")
    tr.add_argument("--label-sep", default=",", metavar="SEP",
                    help="separator between the labels of a line (default ','; use another when labels hold commas)")
    g = tr.add_argument_group("features")
    g.add_argument("--features", default="word+char", metavar="SPEC",
                   help="feature blocks: word, char, prefix joined by '+', optionally weighted, e.g. "
                        "'word:0.5+char' (default word+char)")
    g.add_argument("--hashing", type=positive_int, default=None, metavar="N",
                   help="hash terms into N columns per block instead of keeping a vocabulary (bounded memory)")
    g = tr.add_argument_group("labels")
    g.add_argument("--label-meta", metavar="META",
                   help="label metadata, JSONL (objects with an 'id' or 'label' key) or CSV (header; 'id'/'label' "
                        "column, else the first); stored with the model and returned with hits")
    lt = g.add_mutually_exclusive_group()
    lt.add_argument("--label-text", metavar="FILE",
                    help="label-side text, 'label<TAB>text' per line: label features from the same featurizer")
    lt.add_argument("--label-text-fields", metavar="FIELDS",
                    help="label-side text made of these comma-separated --label-meta fields (e.g. title,brand)")
    g.add_argument("--alpha", type=finite_float, default=None,
                   help="with label text: alpha*PIFA + (1-alpha)*label features (default: concatenate both)")
    g.add_argument("--rerank-candidates", type=positive_int, default=None, metavar="N",
                   help="with label text: re-score the beam's top N labels by the blend below (default: no "
                        "re-ranking stage)")
    g.add_argument("--rerank-weight", type=finite_float, default=None, metavar="W",
                   help="cosine share of the re-ranking blend (1-W)*model + W*cosine(query, label text), in [0, 1] "
                        "(default 0.5)")
    g = tr.add_argument_group("label tree and search")
    g.add_argument("--nr-splits", type=positive_int, default=16, help="branching factor B (default 16)")
    g.add_argument("--max-leaf-size", type=positive_int, default=100, help="max labels per leaf (default 100)")
    g.add_argument("--seed", type=int, default=0, help="clustering seed (default 0)")
    g.add_argument("--beam-size", type=positive_int, default=10, help="beam width stored with the model "
                   "(default 10)")
    g.add_argument("--topk", type=positive_int, default=10, help="hits per query stored with the model "
                   "(default 10)")
    tr.add_argument("--threads", type=threads_arg, default=-1, help="worker threads, -1 = all cores (default)")

    pr = tsub.add_parser("predict", parents=[common], help="retrieve labels for lines of text",
                         description="Print the top-k labels, scores and metadata of every input line (one query "
                                     "per line; blank lines get an empty result with a reason).")
    pr.add_argument("-m", "--model-dir", required=True, metavar="MODEL_DIR", help="retriever directory "
                    "(from `xmr text train`)")
    pr.add_argument("--input", default="-", metavar="FILE", help="queries, one per line (default -: stdin)")
    pr.add_argument("--topk", type=positive_int, default=None, help="hits per query (default: the model's, 10 "
                    "unless set at training)")
    pr.add_argument("--beam-size", type=positive_int, default=None, help="beam width (default: the model's)")
    pr.add_argument("--json", action="store_true", help='one JSON object per line: {"query", "hits", "reason"}')


def run(args: argparse.Namespace) -> int:
    """Run ``xmr text train`` or ``xmr text predict``."""
    return _train(args) if args.text_command == "train" else _predict(args)


# ---------------------------------------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    from xmr.cli import UsageError
    from xmr.labels import read_label_metadata
    from xmr.retriever import Retriever
    from xmr.text_io import label_texts_from_metadata, read_label_texts, read_labelled_text

    if args.label_text_fields and not args.label_meta:
        raise UsageError("--label-text-fields needs --label-meta")
    if args.alpha is not None and not (args.label_text or args.label_text_fields):
        raise UsageError("--alpha needs --label-text or --label-text-fields")
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha must lie in [0, 1], got {args.alpha}")
    if args.rerank_candidates is not None and not (args.label_text or args.label_text_fields):
        raise UsageError("--rerank-candidates needs --label-text or --label-text-fields")
    if args.rerank_weight is not None and args.rerank_candidates is None:
        raise UsageError("--rerank-weight needs --rerank-candidates")
    rerank = None
    if args.rerank_candidates is not None:
        weight = 0.5 if args.rerank_weight is None else args.rerank_weight
        rerank = {"candidates": args.rerank_candidates, "weight": weight}
    t0 = time.perf_counter()
    texts, label_lists = read_labelled_text(sys.stdin if args.train == "-" else args.train, args.label_sep)
    meta = read_label_metadata(args.label_meta) if args.label_meta else None
    label_texts = None
    if args.label_text:
        label_texts = read_label_texts(args.label_text)
    elif args.label_text_fields:
        fields = [f.strip() for f in args.label_text_fields.split(",") if f.strip()]
        if not fields:
            raise UsageError("--label-text-fields names no field")
        label_texts = label_texts_from_metadata(meta or {}, fields)
    LOGGER.info("read %d instances%s%s in %.2fs", len(texts),
                f", metadata of {len(meta)} labels" if meta is not None else "",
                f", texts of {len(label_texts)} labels" if label_texts is not None else "", time.perf_counter() - t0)
    retriever = Retriever.train(
        texts, label_lists, features=args.features, hashing=args.hashing, label_texts=label_texts, alpha=args.alpha,
        label_metadata=meta, threads=args.threads, progress=not args.quiet, nr_splits=args.nr_splits,
        max_leaf_size=args.max_leaf_size, seed=args.seed, beam_size=args.beam_size, topk=args.topk, rerank=rerank,
    )
    t1 = time.perf_counter()
    retriever.save(args.model_dir)
    LOGGER.info("saved %r to %s in %.2fs", retriever, args.model_dir, time.perf_counter() - t1)
    return 0


# -------------------------------------------------------------------------------------------------- predict
def check_input(source: str) -> None:
    """InputError unless ``source`` is '-' (stdin) or an existing file."""
    from xmr.validation import InputError

    if source != "-":
        if not os.path.exists(source):
            raise InputError(f"input file {source} does not exist")
        if os.path.isdir(source):
            raise InputError(f"input {source} is a directory, expected a text file")


def input_lines(source: str) -> Iterator[str]:
    """Query lines (line breaks removed) of a UTF-8 file or of stdin; InputError naming the line if not UTF-8."""
    from xmr.validation import InputError

    if source == "-":
        name, stream = "<stdin>", getattr(sys.stdin, "buffer", sys.stdin)
    else:
        name, stream = source, open(source, "rb")  # noqa: SIM115 - closed below
    try:
        for lineno, raw in enumerate(stream, 1):
            if isinstance(raw, bytes):
                try:
                    raw = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(f"{name}:{lineno}: not UTF-8 text ({e.reason})") from None
            yield raw.rstrip("\r\n")
    finally:
        if source != "-":
            stream.close()


def reader_gone() -> int:
    """Exit code 0 after a BrokenPipeError: the reader went away (e.g. ``| head``), so stop quietly like other
    filters; stdout goes to /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


def _batches(lines: Iterator[str], interactive: bool) -> Iterator[list[str]]:
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if interactive or len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _format_plain(query: str, result: Any) -> str:
    out = [f"> {query}"]
    if result.reason is not None:
        out.append(f"  (no hits: {result.reason})")
    for rank, hit in enumerate(result.hits, 1):
        meta = f"  {json.dumps(dict(hit.metadata), ensure_ascii=False)}" if hit.metadata else ""
        out.append(f"  {rank:>2}. {hit.score:.4f}  {hit.label}{meta}")
    return "\n".join(out) + "\n\n"


def _format_json(query: str, result: Any) -> str:
    return json.dumps({"query": query, **result.to_dict()}, ensure_ascii=False) + "\n"


def _predict(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from xmr.retriever import Retriever

    check_input(args.input)
    t0 = time.perf_counter()
    retriever = Retriever.load(args.model_dir)
    LOGGER.info("loaded %r in %.2fs", retriever, time.perf_counter() - t0)
    k = args.topk if args.topk is not None else retriever.model.topk
    interactive = args.input == "-" and sys.stdin.isatty()
    fmt = _format_json if args.json else _format_plain
    out: TextIO = sys.stdout
    n = 0
    t1 = time.perf_counter()
    bar = tqdm(desc="queries", unit="q", disable=True if (args.quiet or interactive) else None, file=sys.stderr,
               mininterval=1.0)
    try:
        for batch in _batches(input_lines(args.input), interactive):
            if interactive:
                results = [retriever.retrieve_one(batch[0], k=k, beam_size=args.beam_size)]
            else:
                results = retriever.retrieve(batch, k=k, beam_size=args.beam_size)
            out.write("".join(fmt(q, r) for q, r in zip(batch, results)))
            if interactive:
                out.flush()
            n += len(batch)
            bar.update(len(batch))
        out.flush()
    except BrokenPipeError:
        return reader_gone()
    finally:
        bar.close()
    dt = time.perf_counter() - t1
    LOGGER.info("answered %d queries in %.2fs (%.0f queries/s)", n, dt, n / dt if dt > 0 else 0.0)
    return 0
