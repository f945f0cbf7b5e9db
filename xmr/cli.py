"""The ``xmr`` command line: train, predict, evaluate, convert models from/to libpecos, and text retrieval
(``xmr text train|predict``, in :mod:`xmr.text_cli`) and autocompletion (``xmr qac train|complete``, in
:mod:`xmr.qac_cli`).

Exit codes: 0 on success; 2 on bad input (wrong shapes, non-finite values, empty label rows, missing or corrupt
files, unknown model directories, bad options), reported as one ``xmr: error: ...`` line on stderr; 1 on an
unexpected internal error (with the traceback under ``--debug``). Logging goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["main", "build_parser"]

LOGGER = logging.getLogger("xmr.cli")
_OUR_PACKAGES = ("xmr", "indexing")


class UsageError(ValueError):
    """A combination of options that argparse cannot express."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def threads_arg(text: str) -> int:
    """argparse type: a thread count, -1 (all cores) or >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected -1 (all cores) or a positive integer, got {text!r}") from None
    if v == 0 or v < -1:
        raise argparse.ArgumentTypeError(f"expected -1 (all cores) or a positive integer, got {text!r}")
    return v


def finite_float(text: str) -> float:
    """argparse type: a finite float (no NaN or inf)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def nonneg_float(text: str) -> float:
    """argparse type: a finite float >= 0."""
    v = finite_float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def build_parser(plugins: Sequence[Any] = ()) -> argparse.ArgumentParser:
    """The argparse parser of the ``xmr`` command (one subcommand per task); each plugin (an object with
    ``add_parser(sub, common)`` and ``run(args)``, e.g. ``serving.cli``'s serve and query) adds its own."""
    from xmr import __version__
    from xmr.postprocess import NAMES

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="only log warnings and errors; no progress bars")
    common.add_argument("--debug", action="store_true", help="debug logging, and a traceback on internal errors")
    common.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="log lines as text (default) or as one JSON object each (for log shippers)")

    parser = argparse.ArgumentParser(
        prog="xmr",
        description="XR-Linear extreme multi-label retrieval: train, predict, evaluate, convert libpecos models; "
                    "`xmr text` trains and queries retrievers on raw text.",
    )
    parser.add_argument("--version", action="version", version=f"xmr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    tr = sub.add_parser("train", parents=[common], help="train an XR-Linear model",
                        description="Train an XR-Linear model: PIFA label embeddings -> hierarchical k-means -> "
                                    "per-level linear rankers. Saves the model directory atomically.")
    tr.add_argument("-x", "--features", required=True, metavar="X.npz",
                    help="instance features: CSR .npz (scipy.sparse.save_npz) or dense row-major .npy, N x d")
    tr.add_argument("-y", "--labels", required=True, metavar="Y.npz", help="labels: sparse .npz, N x L, 0/1")
    tr.add_argument("-m", "--model-dir", required=True, metavar="MODEL_DIR", help="output model directory")
    g = tr.add_argument_group("label tree")
    g.add_argument("--nr-splits", type=positive_int, default=16, help="branching factor B (default 16)")
    g.add_argument("--max-leaf-size", type=positive_int, default=100, help="max labels per leaf (default 100)")
    g.add_argument("--kmeans-max-iter", type=positive_int, default=20, help="2-means iterations (default 20)")
    g.add_argument("--seed", type=int, default=0, help="clustering seed (default 0)")
    g.add_argument("--label-features", metavar="LF.npz", help="label features (L x d'), added to PIFA embeddings")
    g.add_argument("--alpha", type=finite_float, default=None,
                   help="with --label-features: alpha*PIFA + (1-alpha)*LF (default: concatenate [PIFA, LF])")
    g = tr.add_argument_group("rankers")
    g.add_argument("--loss", choices=("squared-hinge", "logistic"), default="squared-hinge",
                   help="per-node loss (default squared-hinge)")
    g.add_argument("--negatives", choices=("tfn", "man", "tfn+man"), default="tfn",
                   help="negatives per node: teacher-forced (tfn), matcher-aware (man), or both (default tfn)")
    g.add_argument("--Cp", type=positive_float, default=1.0, help="cost of positives (default 1)")
    g.add_argument("--Cn", type=positive_float, default=1.0, help="cost of negatives (default 1)")
    g.add_argument("--bias", type=finite_float, default=1.0, help="bias feature value; <= 0 for none (default 1)")
    g.add_argument("--threshold", type=nonneg_float, default=0.1,
                   help="drop weights with |w| below this (default 0.1)")
    g.add_argument("--max-nonzeros-per-label", type=positive_int, default=None, metavar="N",
                   help="keep at most N weights per node (default: no cap)")
    g.add_argument("--eps", type=positive_float, default=0.1, help="solver stopping tolerance (default 0.1)")
    g.add_argument("--max-iter", type=positive_int, default=100, help="solver outer iterations (default 100)")
    g.add_argument("--allow-empty-rows", action="store_true",
                   help="accept instances without labels (used only as negatives); by default they are an error")
    g.add_argument("-r", "--relevance", metavar="R.npz", help="relevance N x L (cost-sensitive positives)")
    g = tr.add_argument_group("defaults stored with the model")
    g.add_argument("--beam-size", type=positive_int, default=10, help="beam width (default 10)")
    g.add_argument("--topk", type=positive_int, default=10, help="labels returned per query (default 10)")
    tr.add_argument("--threads", type=threads_arg, default=-1, help="worker threads, -1 = all cores (default)")
    g = tr.add_argument_group("distributed training (needs pip install 'xmr[ray]'; same model as one process)")
    g.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="train the subtrees under the top-level clusters as Ray tasks: a cluster address "
                        "(host:port, ray://host:port or auto) or local:N for a local Ray with N CPUs; needs --negatives tfn")
    g.add_argument("--ray-cpus-per-task", type=positive_int, default=1, metavar="N",
                   help="CPUs (and threads) per Ray task (default 1)")

    pr = sub.add_parser("predict", parents=[common], help="predict top-k labels with a model",
                        description="Beam-search the top-k labels of every row of X; writes an N x L CSR .npz of "
                                    "scores (each row's entries by descending score).")
    pr.add_argument("-x", "--features", required=True, metavar="X.npz", help="features: CSR .npz or dense .npy")
    pr.add_argument("-m", "--model-dir", required=True, metavar="MODEL_DIR", help="model directory (xmr format)")
    pr.add_argument("-o", "--output", required=True, metavar="PRED.npz", help="where to write the scores")
    pr.add_argument("--beam-size", type=positive_int, default=None, help="beam width (default: the model's)")
    pr.add_argument("--topk", type=positive_int, default=None, help="labels per query (default: the model's)")
    pr.add_argument("--post-processor", choices=NAMES, default=None, metavar="NAME",
                    help=f"score transform, one of {', '.join(NAMES)} (default: the model's)")
    pr.add_argument("--threads", type=threads_arg, default=-1, help="worker threads, -1 = all cores (default)")

    ev = sub.add_parser("evaluate", parents=[common], help="ranking metrics of predictions",
                        description="P@k, R@k, nDCG@k (k = 1..K) and MRR@K of predicted scores against true labels.")
    ev.add_argument("-y", "--labels", required=True, metavar="Y.npz", help="true labels, sparse .npz N x L")
    ev.add_argument("-p", "--predictions", required=True, metavar="PRED.npz", help="predicted scores, N x L")
    ev.add_argument("-k", type=positive_int, default=10, help="largest cut-off K (default 10)")
    ev.add_argument("--skip-empty", action="store_true", help="average over rows with at least one true label")
    ev.add_argument("--json", action="store_true", help="print one JSON object of the metrics in percent")

    ip = sub.add_parser("import-pecos", parents=[common], help="convert a libpecos XLinearModel to xmr",
                        description="Convert a libpecos XLinearModel directory (npz format) into an xmr model.")
    ip.add_argument("pecos_dir", metavar="PECOS_DIR", help="libpecos model directory (holds ranker/)")
    ip.add_argument("model_dir", metavar="MODEL_DIR", help="output xmr model directory")

    xp = sub.add_parser("export-pecos", parents=[common], help="convert an xmr model to libpecos",
                        description="Write an xmr model as a libpecos XLinearModel directory "
                                    "(loadable with pecos.xmc.xlinear.XLinearModel.load).")
    xp.add_argument("model_dir", metavar="MODEL_DIR", help="xmr model directory")
    xp.add_argument("pecos_dir", metavar="PECOS_DIR", help="output libpecos model directory")

    sh = sub.add_parser("shard", parents=[common], help="split a retriever into a router and shards",
                        description="Split a text retriever by its top-level subtrees into OUT/router (featurizer + "
                                    "the levels above the labels) and OUT/shard-0..S-1 (the labels of their subtrees), "
                                    "to serve with `xmr serve --shard` and `xmr route`; answers equal the unsplit "
                                    "retriever's.")
    sh.add_argument("retriever_dir", metavar="RETRIEVER_DIR", help="a retriever directory (`xmr text train`)")
    sh.add_argument("--shards", type=positive_int, required=True, metavar="S", help="number of shards")
    sh.add_argument("-o", "--output", required=True, metavar="OUT", help="output directory")

    from xmr.text_cli import add_parser as add_text_parser

    add_text_parser(sub, common)  # `xmr text train|predict`: raw text in, labels with metadata out
    from xmr.qac_cli import add_parser as add_qac_parser

    add_qac_parser(sub, common)  # `xmr qac train|complete`: query log in, completions out
    for plugin in plugins:  # layers above xmr (the service) add their commands without xmr importing them
        plugin.add_parser(sub, common)
    return parser


# ---------------------------------------------------------------------------------------------------- helpers
def _load_features(path: str, name: str):
    from xmr.validation import InputError, file_kind, load_csr_npz

    p = Path(path)
    if p.suffix == ".npy":
        if not p.is_file():
            raise InputError(f"{name}: file {p} does not exist")
        if file_kind(p) != "npy":
            raise InputError(f"{name}: {p} is not a .npy file (write dense features with numpy.save)")
        try:
            return np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"{name}: cannot read {p} as a dense .npy array ({e})") from None
    return load_csr_npz(p, name)


def _save_csr_atomically(path: str, M: sp.csr_matrix) -> None:
    from xmr.model_io import write_file_atomically

    write_file_atomically(path, lambda f: sp.save_npz(f, M, compressed=False))


@contextlib.contextmanager
def _logging_to_stderr(quiet: bool, debug: bool, fmt: str = "text") -> Iterator[None]:
    """Send our packages' log records to stderr for one command, then restore the loggers as they were."""
    from xmr.json_logs import JsonFormatter

    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    saved = []
    for name in _OUR_PACKAGES:
        lg = logging.getLogger(name)
        saved.append((lg, lg.level, lg.propagate))
        lg.addHandler(handler)
        lg.setLevel(level)
        lg.propagate = False  # the command prints its own log lines; no duplicates through the root logger
    try:
        yield
    finally:
        for lg, lvl, prop in saved:
            lg.removeHandler(handler)
            lg.setLevel(lvl)
            lg.propagate = prop


def _is_input_error(e: BaseException) -> bool:
    """Errors that describe bad user input (our ValueError subclasses, file-system problems)."""
    from xmr.validation import InputError

    if isinstance(e, (OSError, InputError)):  # InputError subclasses of other layers (e.g. the service) too
        return True
    if isinstance(e, ValueError) and type(e) is not ValueError:
        return type(e).__module__.split(".")[0] in _OUR_PACKAGES
    return False


# --------------------------------------------------------------------------------------------------- commands
def _cmd_train(args: argparse.Namespace) -> int:
    from xmr.model import XLinearModel
    from xmr.train import TrainParams
    from xmr.validation import load_csr_npz

    if args.alpha is not None and args.label_features is None:
        raise UsageError("--alpha needs --label-features")
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha must lie in [0, 1], got {args.alpha}")
    if args.ray is not None and args.negatives != "tfn":
        raise UsageError(f"--ray needs --negatives tfn (subtrees must be independent), got {args.negatives}")
    t0 = time.perf_counter()
    X = _load_features(args.features, "X")
    Y = load_csr_npz(args.labels, "Y")
    LF = _load_features(args.label_features, "label features") if args.label_features else None
    R = load_csr_npz(args.relevance, "relevance") if args.relevance else None
    LOGGER.info("loaded X %s, Y %s in %.2fs", X.shape, Y.shape, time.perf_counter() - t0)
    params = TrainParams(loss=args.loss, Cp=args.Cp, Cn=args.Cn, bias=args.bias, threshold=args.threshold,
                         max_nonzeros_per_label=args.max_nonzeros_per_label, negatives=args.negatives,
                         eps=args.eps, max_iter=args.max_iter, threads=args.threads,
                         man_beam_size=args.beam_size)
    model = XLinearModel.train(
        X, Y, label_features=LF, alpha=args.alpha, nr_splits=args.nr_splits, max_leaf_size=args.max_leaf_size,
        seed=args.seed, kmeans_max_iter=args.kmeans_max_iter, train_params=params, relevance=R,
        beam_size=args.beam_size, topk=args.topk, threads=args.threads, progress=not args.quiet,
        allow_empty_rows=args.allow_empty_rows, ray_address=args.ray, ray_cpus_per_task=args.ray_cpus_per_task,
    )
    t1 = time.perf_counter()
    model.save(args.model_dir)
    LOGGER.info("saved %r to %s in %.2fs", model, args.model_dir, time.perf_counter() - t1)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from xmr.model import XLinearModel

    model = XLinearModel.load(args.model_dir)
    X = _load_features(args.features, "X")
    t0 = time.perf_counter()
    P = model.predict(X, beam_size=args.beam_size, topk=args.topk, post_processor=args.post_processor,
                      threads=args.threads)
    LOGGER.info("predicted %d rows in %.2fs", X.shape[0], time.perf_counter() - t0)
    _save_csr_atomically(args.output, P)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from xmr.metrics import format_metrics_table, ranking_metrics
    from xmr.validation import InputError, load_csr_npz

    Y = load_csr_npz(args.labels, "Y")
    P = load_csr_npz(args.predictions, "predictions")
    if Y.shape != P.shape:
        raise InputError(f"Y has shape {Y.shape} but the predictions have shape {P.shape}; they must match")
    metrics = ranking_metrics(Y, P, k=args.k, skip_empty=args.skip_empty)
    if args.json:
        print(json.dumps({key: round(100.0 * v, 4) for key, v in metrics.items()}))
    else:
        print(format_metrics_table(metrics, args.k))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from xmr.pecos_io import import_pecos

    model = import_pecos(args.pecos_dir)
    model.save(args.model_dir)
    LOGGER.info("imported %r from %s into %s", model, args.pecos_dir, args.model_dir)
    return 0


def _cmd_shard(args: argparse.Namespace) -> int:
    from xmr.retriever import Retriever
    from xmr.shards import save_split, split

    router, parts = split(Retriever.load(args.retriever_dir, warm=False), args.shards)
    paths = save_split(router, parts, args.output)
    LOGGER.info("wrote %s (%d beam nodes)", paths[0], router.upper.nr_labels)
    for p, part in zip(paths[1:], parts):
        LOGGER.info("wrote %s (%d labels)", p, part.label_ids.size)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from xmr.model import XLinearModel
    from xmr.pecos_io import export_pecos

    model = XLinearModel.load(args.model_dir, warm=False)
    export_pecos(model, args.pecos_dir)
    LOGGER.info("exported %r to %s", model, args.pecos_dir)
    return 0


def _cmd_text(args: argparse.Namespace) -> int:
    from xmr.text_cli import run

    return run(args)


def _cmd_qac(args: argparse.Namespace) -> int:
    from xmr.qac_cli import run

    return run(args)


_COMMANDS = {
    "text": _cmd_text,
    "qac": _cmd_qac,
    "train": _cmd_train,
    "predict": _cmd_predict,
    "evaluate": _cmd_evaluate,
    "import-pecos": _cmd_import,
    "export-pecos": _cmd_export,
    "shard": _cmd_shard,
}


def main(argv: Sequence[str] | None = None, plugins: Sequence[Any] = ()) -> int:
    """Run the ``xmr`` command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code.
    ``plugins``: see :func:`build_parser`; a plugin's command runs its ``run(args)``."""
    parser = build_parser(plugins)
    commands = dict(_COMMANDS)
    for plugin in plugins:
        commands.update({name: plugin.run for name in plugin.COMMANDS})
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (argparse already printed it)
        return int(e.code) if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        with _logging_to_stderr(args.quiet, args.debug, args.log_format):
            return commands[args.command](args)
    except KeyboardInterrupt:
        print("xmr: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI's job is to turn every failure into a message and a code
        if args.debug:
            traceback.print_exc()
        if _is_input_error(e):
            msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror}"
            print(f"xmr: error: {msg}", file=sys.stderr)
            return 2
        print(f"xmr: internal error: {type(e).__name__}: {e}"
              + ("" if args.debug else " (rerun with --debug for the traceback)"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
